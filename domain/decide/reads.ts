/**
 * What a decision reads, kept to one statement per request in the common case:
 * - the person: a userId or anonymousId resolved through the identity graph (identifiers ->
 *   persons.canonical_id; a user id wins over an anonymous id), else the feature store's key for
 *   events no merge has resolved, `unresolved:<userId ?? anonymousId>` (domain/features/source.ts);
 * - that person's online values of the person and person_item features asked for;
 * - which of the candidates the person already consumed: `rated` events of the model's source
 *   attributed to the person (through event_persons for a graph person; by events.person_id, not
 *   yet attributed, for an unresolved one);
 * - the person's latest `personalization` consent event over their identifiers (as
 *   domain/privacy/consent.ts reads it), and over the request's ids the graph does not know (the
 *   next merge joins them to the person: a withdrawal on an anonymous id sent with a user id not
 *   merged yet counts), or none (the default then applies);
 * - whether a request id is tombstoned (its person was deleted: privacy_tombstones), so that the
 *   decision stores and uses nothing of it.
 * Item features change once a day and are shared by every request, so they are cached per
 * process for ITEM_CACHE_MS; the catalog's popular items (the default candidates and the rules'
 * answer) for CATALOG_CACHE_MS.
 */
import type { Queryable } from '../../common/db.js';
import type { FeatureDefinition } from '../features/definition.js';
import type { Snapshot } from '../features/online.js';
import { identifierHashes } from '../privacy/tombstones.js';

const RAW_ID_TYPES = ['user_id', 'anonymous_id'] as const;

/**
 * How long an item's online values are served from memory. Item snapshots are daily (and
 * materialized every 15 minutes by default), so a minute behind the store costs nothing.
 */
export const ITEM_CACHE_MS = 60_000;
/** How long the catalog's popular items are served from memory. */
export const CATALOG_CACHE_MS = 30_000;
/** How many popular items the catalog offers as default candidates. */
export const CATALOG_TOP = 100;
/** Popularity, for the catalog and the rules: this feature's latest version, this window. */
export const POPULARITY = { name: 'item_popularity', window: 'lifetime' } as const;

const MAX_ITEM_CACHE_ENTRIES = 500_000;

/** A feature version, as `name@version`. */
export function versionKey(f: { name: string; version: number }): string {
  return `${f.name}@${f.version}`;
}

export interface PersonRead {
  /** The person key features and exposures use. */
  key: string;
  /** Online snapshots of person features by `name@version`. */
  person: Map<string, Snapshot>;
  /** Online snapshots of person_item features by `name@version|item`. */
  personItem: Map<string, Snapshot>;
  /** Candidates the person already consumed. */
  consumed: Set<string>;
  /** The latest personalization consent event's choice; null when there is none. */
  personalization: boolean | null;
  /** A request id is tombstoned: its person was deleted. */
  deleted: boolean;
}

interface PersonRow {
  kind: 'k' | 'p' | 'x' | 'c' | 'g' | 't';
  id: string;
  name: string | null;
  version: number | null;
  ts_ms: number | null;
  vals: Array<number | null> | null;
}

/** Reads the person, their features and what they consumed, in one statement; see the module. */
export async function readPerson(
  db: Queryable,
  input: {
    userId?: string | undefined;
    anonymousId?: string | undefined;
    source: string;
    personFeatures: ReadonlyArray<{ name: string; version: number }>;
    personItemFeatures: ReadonlyArray<{ name: string; version: number }>;
    candidates: readonly string[];
  },
): Promise<PersonRead> {
  const raw = input.userId ?? input.anonymousId ?? '';
  // Each id under both raw types, as ingestion checks tombstones: a sender may put a user id in
  // anonymousId, and an alias's previous id is tombstoned as the type the graph gave it.
  const ids = [input.userId, input.anonymousId]
    .filter((value) => value !== undefined)
    .flatMap((value) => RAW_ID_TYPES.map((type) => ({ type, value })));
  const { rows } = await db.query<PersonRow>({
    name: 'pops-decide-person',
    text: `with r as (
       select p.canonical_id
         from identifiers i join persons p on p.id = i.person_id
        where (i.type = 'user_id' and i.value = $1) or (i.type = 'anonymous_id' and i.value = $2)
        order by (i.type = 'user_id') desc limit 1),
     k as (select coalesce((select canonical_id::text from r), 'unresolved:' || $3) as key),
     -- What the person did, each planned on its own (materialized) so that it starts from the
     -- person, whatever the statistics say of events (source, event): a graph person's events
     -- through event_persons, or else the events carrying the raw id and attributed to nobody.
     mine as materialized (
       select e.item_id, e.type, e.event, e.source
         from r join persons p on p.canonical_id = r.canonical_id
         join event_persons ep on ep.person_id = p.id
         join events e on e.id = ep.event_id),
     own as materialized (
       select e.id, e.item_id, e.type, e.event, e.source from events e where e.person_id = $3)
     select 'k' as kind, k.key as id, null::text as name, null::int as version,
            null::float8 as ts_ms, null::float8[] as vals
       from k
     union all
     select 'g', coalesce((
       select c.granted::text
         from (select i.type, i.value
                 from r join persons p on p.canonical_id = r.canonical_id
                 join identifiers i on i.person_id = p.id
               union all
               -- A request id the graph does not know counts as a user and an anonymous id (as
               -- an unresolved key's raw id does): all of them when none resolved.
               select t.type, v.value
                 from (values ($3::text), ($1::text), ($2::text)) as v(value)
                 cross join (values ('user_id'), ('anonymous_id')) as t(type)
                where v.value is not null
                  and (not exists (select 1 from r)
                       or not exists (select 1 from identifiers u
                                       where u.value = v.value
                                         and u.type in ('user_id', 'anonymous_id')))) ids
         join consent_events c on c.identifier_type = ids.type and c.identifier_value = ids.value
        where c.purpose = 'personalization' and c.effective_at <= now()
        order by c.effective_at desc, c.id desc limit 1), 'none'), null, null, null, null
     union all
     select 't', null, null, null, null, null
      where exists (select 1 from privacy_tombstones where identifier_hash = any($10::text[]))
     union all
     select 'p', o.entity_id, o.name, o.version, (extract(epoch from o.ts) * 1000)::float8, o.vals
       from unnest($4::text[], $5::int[]) as f(name, version)
       join feature_online o
         on o.name = f.name and o.version = f.version and o.entity_id = (select key from k)
     union all
     select 'x', o.entity_id, o.name, o.version, (extract(epoch from o.ts) * 1000)::float8, o.vals
       from unnest($6::text[], $7::int[]) as f(name, version)
       cross join unnest($8::text[]) as c(item)
       join feature_online o
         on o.name = f.name and o.version = f.version
        and o.entity_id = (select key from k) || '|' || c.item
     union all
     select 'c', e.item_id, null, null, null, null
       from mine e
      where e.type = 'track' and e.event = 'rated' and e.source = $9
        and e.item_id = any($8::text[])
     union all
     select 'c', e.item_id, null, null, null, null
       from own e
      where not exists (select 1 from r)
        and e.type = 'track' and e.event = 'rated' and e.source = $9
        and e.item_id = any($8::text[])
        and not exists (select 1 from event_persons ep where ep.event_id = e.id)`,
    values: [
      input.userId?.trim() ?? null,
      input.anonymousId?.trim() ?? null,
      raw,
      input.personFeatures.map((f) => f.name),
      input.personFeatures.map((f) => f.version),
      input.personItemFeatures.map((f) => f.name),
      input.personItemFeatures.map((f) => f.version),
      input.candidates,
      input.source,
      identifierHashes(ids),
    ],
  });
  const read: PersonRead = {
    key: `unresolved:${raw}`,
    person: new Map(),
    personItem: new Map(),
    consumed: new Set(),
    personalization: null,
    deleted: false,
  };
  for (const row of rows) {
    if (row.kind === 'k') read.key = row.id;
    if (row.kind === 't') read.deleted = true;
  }
  for (const row of rows) {
    if (row.kind === 'g' && row.id !== 'none') read.personalization = row.id === 'true';
  }
  for (const row of rows) {
    if (row.kind === 'c') read.consumed.add(row.id);
    if (row.kind === 'k' || row.kind === 'c' || row.kind === 'g' || row.kind === 't') continue;
    if (row.ts_ms === null || !row.vals || row.name === null || row.version === null) continue;
    const snapshot = { ts: new Date(row.ts_ms), vals: row.vals };
    const feature = `${row.name}@${row.version}`;
    if (row.kind === 'p') read.person.set(feature, snapshot);
    // A person_item key is `<person key>|<item>`.
    else read.personItem.set(`${feature}|${row.id.slice(read.key.length + 1)}`, snapshot);
  }
  return read;
}

interface Cached {
  at: number;
  snapshot: Snapshot | undefined;
}

/** Online values of item features, cached per process; see the module comment. */
export class ItemFeatureCache {
  /** `name@version` → item → its snapshot (undefined: none online) and when it was read. */
  private readonly entries = new Map<string, Map<string, Cached>>();
  private size = 0;

  constructor(private readonly db: Queryable) {}

  /**
   * Per feature (`name@version`), the items' snapshots in the items' order (undefined: no online
   * value), reading only what the cache does not hold fresh, in one statement.
   */
  async read(
    features: ReadonlyArray<{ name: string; version: number }>,
    items: readonly string[],
  ): Promise<Map<string, Array<Snapshot | undefined>>> {
    const now = Date.now();
    const first = this.lookup(features, items, now);
    if (first.missing.size === 0) return first.out;
    await this.fetch(features, [...first.missing], now);
    return this.lookup(features, items, now).out;
  }

  private lookup(
    features: ReadonlyArray<{ name: string; version: number }>,
    items: readonly string[],
    now: number,
  ) {
    const out = new Map<string, Array<Snapshot | undefined>>();
    const missing = new Set<string>();
    for (const f of features) {
      const feature = versionKey(f);
      const cached = this.entries.get(feature);
      const snaps = new Array<Snapshot | undefined>(items.length);
      for (let i = 0; i < items.length; i++) {
        const item = items[i] as string;
        const hit = cached?.get(item);
        if (!hit || now - hit.at >= ITEM_CACHE_MS) missing.add(item);
        snaps[i] = hit?.snapshot;
      }
      out.set(feature, snaps);
    }
    return { out, missing };
  }

  private async fetch(
    features: ReadonlyArray<{ name: string; version: number }>,
    items: string[],
    now: number,
  ): Promise<void> {
    const unique = [...new Map(features.map((f) => [versionKey(f), f])).values()];
    const { rows } = await this.db.query<{
      name: string;
      version: number;
      entity_id: string;
      ts_ms: number;
      vals: Array<number | null>;
    }>({
      name: 'pops-decide-items',
      text: `select o.name, o.version, o.entity_id,
                    (extract(epoch from o.ts) * 1000)::float8 as ts_ms, o.vals
               from unnest($1::text[], $2::int[]) as f(name, version)
               join feature_online o
                 on o.name = f.name and o.version = f.version and o.entity_id = any($3::text[])`,
      values: [unique.map((f) => f.name), unique.map((f) => f.version), items],
    });
    if (this.size > MAX_ITEM_CACHE_ENTRIES) {
      this.entries.clear();
      this.size = 0;
    }
    const found = new Map(rows.map((r) => [`${r.name}@${r.version}|${r.entity_id}`, r]));
    for (const f of unique) {
      const feature = versionKey(f);
      let cached = this.entries.get(feature);
      if (!cached) {
        cached = new Map();
        this.entries.set(feature, cached);
      }
      for (const item of items) {
        const r = found.get(`${feature}|${item}`);
        if (!cached.has(item)) this.size += 1;
        cached.set(item, {
          at: now,
          snapshot: r ? { ts: new Date(r.ts_ms), vals: r.vals } : undefined,
        });
      }
    }
  }
}

/** A catalog item and its popularity (the raw online value; 0 when it has none). */
export interface PopularItem {
  itemId: string;
  popularity: number;
}

/** The popularity feature in force: the latest registered version of POPULARITY.name. */
export async function popularityFeature(db: Queryable): Promise<FeatureDefinition | undefined> {
  const { rows } = await db.query<{ definition: FeatureDefinition }>(
    `select definition from feature_versions where name = $1 order by version desc limit 1`,
    [POPULARITY.name],
  );
  const f = rows[0]?.definition;
  return f && f.entity === 'item' && f.windows.includes(POPULARITY.window) ? f : undefined;
}

/**
 * The source's catalog (items) ordered by popularity, most popular first, ties by item id: the
 * first CATALOG_TOP. Without a popularity feature every item counts 0.
 */
export async function catalogTop(
  db: Queryable,
  source: string,
  popularity: FeatureDefinition | undefined,
): Promise<PopularItem[]> {
  const { rows } = await db.query<{ item_id: string; popularity: number }>(
    `select i.item_id, coalesce(o.vals[$3::int], 0)::float8 as popularity
       from items i
       left join feature_online o on o.name = $1 and o.version = $2 and o.entity_id = i.item_id
      where i.source = $4
      order by popularity desc, i.item_id
      limit $5`,
    [
      popularity?.name ?? POPULARITY.name,
      popularity?.version ?? 0,
      (popularity?.windows.indexOf(POPULARITY.window) ?? 0) + 1,
      source,
      CATALOG_TOP,
    ],
  );
  return rows.map((r) => ({ itemId: r.item_id, popularity: r.popularity }));
}
