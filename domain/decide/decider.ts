/**
 * The decision server of one process: routing tables kept fresh, models cached per version, the
 * one read per request, scoring, the rules, and the exposure buffer.
 *
 * A decision: resolve the person and read what the routed versions need (domain/decide/reads.ts),
 * bucket the person on the surface (domain/decide/bucket.ts) to pick the stable or canary
 * version, drop candidates the person already consumed, score the rest on the person's online
 * features with that version, and answer the top k; the exposure is buffered, not awaited
 * (domain/decide/exposures.ts). Candidates are the request's, or else the CATALOG_TOP (100) most
 * popular items of the model's source (items, by the online `item_popularity:lifetime`).
 *
 * Rules: the popular unconsumed candidates answer, with the cause recorded in the exposure's
 * fallback, when the surface is not in normal mode, when this server's routing table is too old to
 * trust, when the routed version cannot be loaded (model-unavailable) or its features cannot be
 * read (features-unavailable), or when scoring fails (scoring-error, error = true). A person
 * without `personalization` consent (their latest consent event, read in the same statement, or
 * the default, cached for CONSENT_DEFAULT_MS) gets the rules' answer (rules arm), with their
 * history left out too (no-consent): the same answer as anyone's. A request whose userId or
 * anonymousId is tombstoned (its person was deleted; checked in the same statement) gets that
 * answer too (identifier-deleted), and its exposure is logged under DELETED_PERSON, not the id:
 * the rollout still counts the decision, and nothing stored names the deleted person (an outcome
 * of it stores nothing).
 *
 * Propagation: every POLL_MS (200 ms) the server reads every surface's generation and reloads a
 * surface whose generation moved. A routing table is trusted for MAX_ROUTING_AGE_MS (1 s) after the
 * poll that confirmed it began: an older one is reloaded before deciding, and if that fails the
 * rules answer. So a change committed at time c routes every decision that starts after c + 1 s,
 * on every server (normally after c + POLL_MS and one short query).
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Pool } from '../../common/db.js';
import type { Logger } from '../../common/logger.js';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../../common/text.js';
import type { FeatureDefinition } from '../features/definition.js';
import { type FeatureValue, type Snapshot, valuesAt } from '../features/online.js';
import type { BackendPreference } from '../ml/backend.js';
import { bucketOf, routeOf } from './bucket.js';
import { type Arm, DELETED_CAUSE, DELETED_PERSON, ExposureBuffer } from './exposures.js';
import { type LoadedModel, ModelCache, ServingUnavailable } from './models.js';
import {
  CATALOG_CACHE_MS,
  catalogTop,
  ItemFeatureCache,
  type PersonRead,
  type PopularItem,
  POPULARITY,
  popularityFeature,
  readPerson,
  versionKey,
} from './reads.js';
import { surfaceNameSchema, type Route } from './routing.js';
import { getSurface, type Surface, surfaceGenerations, SurfaceRefusal } from './surfaces.js';

/** How often the server polls surface generations. */
export const POLL_MS = 200;
/** A routing table older than this (since the poll that confirmed it began) is not trusted. */
export const MAX_ROUTING_AGE_MS = 1000;
/** How long the personalization consent default is served from memory (a change applies after). */
export const CONSENT_DEFAULT_MS = 1000;

/** Why the rules answered. */
export const FALLBACK_CAUSES = [
  'mode-conservative',
  'mode-rules-only',
  'routing-stale',
  'model-unavailable',
  'features-unavailable',
  'scoring-error',
  'no-consent',
  DELETED_CAUSE,
] as const;
export type FallbackCause = (typeof FALLBACK_CAUSES)[number];

const itemIdSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(512)
  .refine((v) => !UNSTORABLE_TEXT.test(v), UNSTORABLE_PROBLEM);
const personIdSchema = itemIdSchema;

export const decideRequestSchema = z
  .strictObject({
    surface: surfaceNameSchema,
    userId: personIdSchema.optional(),
    anonymousId: personIdSchema.optional(),
    candidates: z
      .array(itemIdSchema)
      .min(1)
      .max(1000)
      .refine((c) => new Set(c).size === c.length, 'must not repeat an item')
      .optional(),
    k: z.number().int().min(1).max(100).default(10),
  })
  .refine((r) => r.userId !== undefined || r.anonymousId !== undefined, {
    message: 'userId or anonymousId is required',
    path: ['userId'],
  });
export type DecideRequest = z.input<typeof decideRequestSchema>;

/** What a decision answers. */
export interface Decision {
  decisionId: string;
  surface: string;
  /** The version routed (null: none, the surface's mode or an untrusted routing table). */
  version: number | null;
  arm: Arm;
  items: Array<{ itemId: string; score: number }>;
  reason: string;
  /** Why the rules answered; null when the model did. */
  fallback: FallbackCause | null;
  /** Given candidates that are not items of the model's source: dropped, never scored. */
  unknownCandidates?: string[];
}

interface SurfaceState {
  surface: Surface;
  /** When (epoch ms) the poll or load that confirmed this table began. */
  checkedAt: number;
}

interface Expiring<T> {
  at: number;
  value: Promise<T>;
}

export interface DeciderOptions {
  pool: Pool;
  log?: Logger | undefined;
  /** The TensorFlow.js backend for artifacts the plain-JS pass does not compile. */
  backend?: BackendPreference | undefined;
  pollMs?: number;
}

/** One process's decision server; see the module comment. `close` flushes the exposures. */
export class Decider {
  readonly exposures: ExposureBuffer;
  private readonly pool: Pool;
  private readonly log: Logger | undefined;
  private readonly models: ModelCache;
  private readonly items: ItemFeatureCache;
  private readonly surfaces = new Map<string, SurfaceState>();
  private readonly loadingSurfaces = new Map<string, Promise<SurfaceState | undefined>>();
  private readonly sources = new Map<string, Promise<string>>();
  private readonly catalogs = new Map<string, Expiring<PopularItem[]>>();
  private readonly knownItems = new Map<string, Expiring<Map<string, string[]>>>();
  private popularity: Expiring<FeatureDefinition | undefined> | undefined;
  private readonly timeless = new WeakMap<Snapshot, FeatureValue[]>();
  private readonly defaults = new Map<string, FeatureValue[]>();
  private readonly poller: NodeJS.Timeout;
  private polling = false;
  private consentDefault: { at: number; value: Promise<boolean> } | undefined;

  constructor(options: DeciderOptions) {
    this.pool = options.pool;
    this.log = options.log;
    this.models = new ModelCache(options.pool, options.backend ?? 'auto');
    this.items = new ItemFeatureCache(options.pool);
    this.exposures = new ExposureBuffer(options.pool, options.log);
    this.poller = setInterval(() => void this.poll(), options.pollMs ?? POLL_MS);
    this.poller.unref();
  }

  /** Decides for one request (parsed by decideRequestSchema). Thrown: SurfaceRefusal not_found. */
  async decide(raw: z.output<typeof decideRequestSchema>): Promise<Decision> {
    const started = performance.now();
    const at = new Date();
    const state = await this.surfaceState(raw.surface);
    const { surface } = state;
    const trusted = Date.now() - state.checkedAt <= MAX_ROUTING_AGE_MS;
    const source = await this.sourceOf(surface.model);
    const catalog = raw.candidates ? undefined : await this.catalog(source);
    const { excludeItems, excludeGenres } = surface.filters;
    const filtering = excludeItems.length > 0 || excludeGenres.length > 0;
    const known = raw.candidates || filtering ? await this.itemsOf(source) : undefined;
    const unknown = raw.candidates && known ? raw.candidates.filter((c) => !known.has(c)) : [];
    const asked = raw.candidates
      ? raw.candidates.filter((c) => known?.has(c))
      : (catalog ?? []).map((i) => i.itemId);
    const items = new Set(excludeItems);
    const genres = new Set(excludeGenres);
    const shown = (item: string) =>
      !items.has(item) && !(known?.get(item) ?? []).some((g) => genres.has(g));
    const candidates = filtering ? asked.filter(shown) : asked;
    const filtered = asked.length - candidates.length;

    const routed = surface.mode === 'normal' && trusted;
    const loaded = routed ? await this.loadRoutes(surface) : new Map<number, Loaded>();
    const columns = [...loaded.values()].flatMap((l) => ('model' in l ? l.model.columns : []));
    const read = await readPerson(this.pool, {
      userId: raw.userId,
      anonymousId: raw.anonymousId,
      source,
      personFeatures: featuresOf(columns, 'person'),
      personItemFeatures: featuresOf(columns, 'person_item'),
      candidates,
    });
    // A deleted id personalizes nothing, whatever its consent said.
    const consented =
      !read.deleted && (read.personalization ?? (await this.personalizationDefault()));
    // Without consent the person's history does not shape the answer either.
    const remaining = consented ? candidates.filter((c) => !read.consumed.has(c)) : candidates;
    const excluded = candidates.length - remaining.length;

    const bucketed = routed && consented;
    const route = bucketed ? routeOf(surface.routes, bucketOf(surface.salt, read.key)) : undefined;
    let cause: FallbackCause | null = read.deleted
      ? DELETED_CAUSE
      : consented
        ? modeCause(surface, trusted)
        : 'no-consent';
    let error = false;
    let answer: Array<{ itemId: string; score: number }> = [];
    const slot = route ? loaded.get(route.version) : undefined;
    if (slot && 'model' in slot) {
      try {
        answer = await this.score(slot.model, read, remaining, raw.k, at);
      } catch (err) {
        this.log?.warn(
          { err, surface: surface.name, version: slot.model.version },
          'scoring failed',
        );
        cause = 'scoring-error';
        error = true;
      }
    } else if (slot) {
      cause = slot.unavailable;
    }
    if (cause) answer = await this.rules(remaining, catalog, raw.k);

    const decision: Decision = {
      decisionId: randomUUID(),
      surface: surface.name,
      version: route?.version ?? null,
      arm: route?.role ?? 'rules',
      items: answer,
      reason:
        reasonOf(route, cause, candidates.length, excluded, raw.candidates !== undefined) +
        (unknown.length > 0 ? `; ${unknown.length} unknown candidates dropped` : '') +
        (filtered > 0 ? `; ${filtered} filtered out by the surface's rules` : ''),
      fallback: cause,
      ...(unknown.length > 0 ? { unknownCandidates: unknown } : {}),
    };
    this.exposures.add({
      decisionId: decision.decisionId,
      surface: surface.name,
      personId: read.deleted ? DELETED_PERSON : read.key,
      version: decision.version,
      arm: decision.arm,
      generation: surface.generation,
      items: answer.map((i) => i.itemId),
      scores: answer.map((i) => i.score),
      latencyMs: performance.now() - started,
      fallback: cause,
      error,
      at,
    });
    return decision;
  }

  /** The personalization default (consent_defaults), read at most every CONSENT_DEFAULT_MS. */
  private personalizationDefault(): Promise<boolean> {
    const cached = this.consentDefault;
    if (cached && Date.now() - cached.at < CONSENT_DEFAULT_MS) return cached.value;
    const value = this.pool
      .query<{
        granted: boolean;
      }>(`select granted from consent_defaults where purpose = 'personalization'`)
      .then((r) => r.rows[0]?.granted ?? false);
    value.catch(() => (this.consentDefault = undefined));
    this.consentDefault = { at: Date.now(), value };
    return value;
  }

  /** The generation this server routes the surface under (undefined: not loaded here). */
  servedGeneration(surface: string): number | undefined {
    return this.surfaces.get(surface)?.surface.generation;
  }

  /** Resolves true once this server routes the surface under `generation` or later. */
  async waitForGeneration(surface: string, generation: number, timeoutMs = 5000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if ((this.servedGeneration(surface) ?? Infinity) >= generation) return true;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return false;
  }

  /** Stops polling, writes the buffered exposures and frees the models. */
  async close(): Promise<void> {
    clearInterval(this.poller);
    try {
      await this.exposures.close();
    } finally {
      await this.models.close();
    }
  }

  private async score(
    model: LoadedModel,
    read: PersonRead,
    items: readonly string[],
    k: number,
    now: Date,
  ): Promise<Array<{ itemId: string; score: number }>> {
    if (items.length === 0) return [];
    const itemDefs = featuresOf(model.columns, 'item');
    const itemSnaps = itemDefs.length > 0 ? await this.items.read(itemDefs, items) : undefined;
    // Each feature version's values, once per entity: one row for a person feature, one per item
    // for item and person_item features (every window of a version comes from the same row).
    const rowsOf = new Map<string, FeatureValue[][]>();
    const valuesOf = (f: FeatureDefinition): FeatureValue[][] => {
      const feature = versionKey(f);
      let rows = rowsOf.get(feature);
      if (rows) return rows;
      if (f.entity === 'person') {
        rows = [valuesAt(f, read.person.get(feature), now).values];
      } else if (f.entity === 'item') {
        const snaps = itemSnaps?.get(feature);
        rows = items.map((_, i) => this.itemValues(f, snaps?.[i], now));
      } else {
        rows = items.map(
          (item) => valuesAt(f, read.personItem.get(`${feature}|${item}`), now).values,
        );
      }
      rowsOf.set(feature, rows);
      return rows;
    };
    const d = model.columns.length;
    const x = new Float32Array(items.length * d);
    model.columns.forEach(({ definition: f, window }, j) => {
      const rows = valuesOf(f);
      const single = f.entity === 'person';
      for (let i = 0; i < items.length; i++) {
        const v = rows[single ? 0 : i]?.[window] ?? null;
        x[i * d + j] = v === true ? 1 : typeof v === 'number' ? v : 0;
      }
    });
    const scores = model.scorer.predict(x, items.length);
    const order = items.map((itemId, i) => ({ itemId, score: scores[i] ?? NaN }));
    if (order.some((o) => !Number.isFinite(o.score))) {
      throw new Error(`${model.model} v${model.version} produced a score that is not finite`);
    }
    return order.sort((a, b) => b.score - a.score).slice(0, k);
  }

  /**
   * An item's values of a feature. Without a TTL or aging (days_since_last) they depend on the
   * cached snapshot alone, so they are computed once per snapshot (or once per feature when there
   * is none: the defaults), not once per request.
   */
  private itemValues(f: FeatureDefinition, snapshot: Snapshot | undefined, now: Date) {
    if (f.ttl !== undefined || f.aggregation.fn === 'days_since_last') {
      return valuesAt(f, snapshot, now).values;
    }
    const memo = snapshot ? this.timeless.get(snapshot) : this.defaults.get(versionKey(f));
    if (memo) return memo;
    const values = valuesAt(f, snapshot, now).values;
    if (snapshot) this.timeless.set(snapshot, values);
    else this.defaults.set(versionKey(f), values);
    return values;
  }

  /** The rules' answer: the most popular of the candidates left, ties in candidate order. */
  private async rules(
    items: readonly string[],
    catalog: PopularItem[] | undefined,
    k: number,
  ): Promise<Array<{ itemId: string; score: number }>> {
    let popularity: Map<string, number>;
    if (catalog) {
      popularity = new Map(catalog.map((i) => [i.itemId, i.popularity]));
    } else {
      const f = await this.popularityDefinition();
      const window = f?.windows.indexOf(POPULARITY.window) ?? -1;
      const snaps = f ? (await this.items.read([f], items)).get(versionKey(f)) : undefined;
      popularity = new Map(items.map((item, i) => [item, snaps?.[i]?.vals[window] ?? 0]));
    }
    return items
      .map((itemId) => ({ itemId, score: popularity.get(itemId) ?? 0 }))
      .sort((a, b) => b.score - a.score)
      .slice(0, k);
  }

  /** Each route's loaded model, or why it is unavailable. */
  private async loadRoutes(surface: Surface): Promise<Map<number, Loaded>> {
    const loaded = new Map<number, Loaded>();
    await Promise.all(
      surface.routes.map(async (r) => {
        try {
          loaded.set(r.version, { model: await this.models.get(surface.model, r.version) });
        } catch (err) {
          const unavailable = err instanceof ServingUnavailable ? err.cause : 'model-unavailable';
          loaded.set(r.version, { unavailable });
        }
      }),
    );
    return loaded;
  }

  private async surfaceState(name: string): Promise<SurfaceState> {
    const state = this.surfaces.get(name);
    if (state && Date.now() - state.checkedAt <= MAX_ROUTING_AGE_MS) return state;
    const fresh = await this.loadSurface(name).catch((err: unknown) => {
      if (!state) throw err;
      this.log?.warn({ err, surface: name }, 'routing table not refreshed');
      return state;
    });
    if (!fresh) throw new SurfaceRefusal('not_found', `surface "${name}" does not exist`);
    return fresh;
  }

  /** Loads the surface (one load at a time per surface) and keeps it. */
  private loadSurface(name: string): Promise<SurfaceState | undefined> {
    let loading = this.loadingSurfaces.get(name);
    if (!loading) {
      const checkedAt = Date.now();
      loading = getSurface(this.pool, name)
        .then((surface) => {
          if (!surface) {
            this.surfaces.delete(name);
            return undefined;
          }
          const state = { surface, checkedAt };
          this.surfaces.set(name, state);
          this.preload(surface);
          return state;
        })
        .finally(() => this.loadingSurfaces.delete(name));
      this.loadingSurfaces.set(name, loading);
    }
    return loading;
  }

  private preload(surface: Surface): void {
    for (const r of surface.routes) void this.models.get(surface.model, r.version).catch(() => 0);
  }

  /** One poll: reload the surfaces whose generation moved, confirm the others. */
  private async poll(): Promise<void> {
    if (this.polling || this.surfaces.size === 0) return;
    this.polling = true;
    const startedAt = Date.now();
    try {
      const generations = await surfaceGenerations(this.pool);
      for (const [name, state] of this.surfaces) {
        const generation = generations.get(name);
        if (generation === undefined) this.surfaces.delete(name);
        else if (generation !== state.surface.generation) await this.loadSurface(name);
        else state.checkedAt = startedAt;
      }
    } catch (err) {
      this.log?.warn({ err }, 'surface generations not polled');
    } finally {
      this.polling = false;
    }
  }

  /** The model's event source (fixed when the model is declared). */
  private sourceOf(model: string): Promise<string> {
    let source = this.sources.get(model);
    if (!source) {
      source = this.pool
        .query<{ source: string }>('select source from models where name = $1', [model])
        .then(({ rows }) => {
          const found = rows[0]?.source;
          if (found === undefined) throw new Error(`model ${model} of a surface is not declared`);
          return found;
        });
      source.catch(() => this.sources.delete(model));
      this.sources.set(model, source);
    }
    return source;
  }

  private async popularityDefinition(): Promise<FeatureDefinition | undefined> {
    if (!this.popularity || Date.now() - this.popularity.at > CATALOG_CACHE_MS) {
      const value = popularityFeature(this.pool);
      value.catch(() => (this.popularity = undefined));
      this.popularity = { at: Date.now(), value };
    }
    return this.popularity.value;
  }

  /** A source's items and their genres (cached like the catalog: a new item is known in 30 s). */
  private async itemsOf(source: string): Promise<Map<string, string[]>> {
    const cached = this.knownItems.get(source);
    if (cached && Date.now() - cached.at <= CATALOG_CACHE_MS) return cached.value;
    const value = this.pool
      .query<{
        item_id: string;
        genres: string[];
      }>('select item_id, genres from items where source = $1', [source])
      .then((r) => new Map(r.rows.map((row) => [row.item_id, row.genres])));
    value.catch(() => this.knownItems.delete(source));
    this.knownItems.set(source, { at: Date.now(), value });
    return cached ? cached.value : value;
  }

  private async catalog(source: string): Promise<PopularItem[]> {
    const cached = this.catalogs.get(source);
    if (cached && Date.now() - cached.at <= CATALOG_CACHE_MS) return cached.value;
    const value = this.popularityDefinition().then((f) => catalogTop(this.pool, source, f));
    value.catch(() => this.catalogs.delete(source));
    this.catalogs.set(source, { at: Date.now(), value });
    // While a reload runs, the previous list still answers.
    return cached ? cached.value : value;
  }
}

type Loaded = { model: LoadedModel } | { unavailable: ServingUnavailable['cause'] };

function modeCause(surface: Surface, trusted: boolean): FallbackCause | null {
  if (surface.mode === 'conservative') return 'mode-conservative';
  if (surface.mode === 'rules-only') return 'mode-rules-only';
  return trusted ? null : 'routing-stale';
}

/** The distinct feature versions of one entity kind among the columns. */
function featuresOf(
  columns: ReadonlyArray<{ definition: FeatureDefinition }>,
  entity: FeatureDefinition['entity'],
): FeatureDefinition[] {
  const found = new Map<string, FeatureDefinition>();
  for (const { definition: f } of columns) if (f.entity === entity) found.set(versionKey(f), f);
  return [...found.values()];
}

const CAUSE_TEXT: Record<FallbackCause, string> = {
  'mode-conservative': 'the surface is in conservative mode',
  'mode-rules-only': 'the surface is in rules-only mode',
  'routing-stale': 'the routing table could not be refreshed',
  'model-unavailable': 'the routed model could not be loaded',
  'features-unavailable': "the routed model's features are not available",
  'scoring-error': 'the routed model failed to score',
  'no-consent': 'the person has not consented to personalization',
  [DELETED_CAUSE]: "the person's data was deleted",
};

function reasonOf(
  route: Route | undefined,
  cause: FallbackCause | null,
  candidates: number,
  excluded: number,
  given: boolean,
): string {
  const pool = `${candidates} ${given ? 'given candidates' : 'popular catalog items'}`;
  const without = `${excluded} already rated excluded`;
  // The person's history was not read into the answer: nothing was excluded.
  if (cause === 'no-consent' || cause === DELETED_CAUSE) {
    return `rules: most popular of ${pool}, because ${CAUSE_TEXT[cause]}`;
  }
  if (cause) return `rules: most popular of ${pool}, ${without}, because ${CAUSE_TEXT[cause]}`;
  return `model v${route?.version} (${route?.role}) ranked ${pool}, ${without}`;
}
