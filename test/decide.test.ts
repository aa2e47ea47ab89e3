/**
 * Decision serving end to end on MovieLens (users 1..150): a real version trained on ratings
 * before 2005 and promoted through retrainModel (whose backfill fills the online store with the
 * snapshots of 2004), served by the HTTP API with its
 * routing poller and exposure buffer, checked against the events, the online store, the model's
 * own scores (fromArtifact) and the exposure table. Real Temporal, real PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArtifact } from '../activities/training.js';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { BUCKETS, bucketOf, routeOf } from '../domain/decide/bucket.js';
import { type Route } from '../domain/decide/routing.js';
import { getSurface, routingChanges, setMode, setRoutes } from '../domain/decide/surfaces.js';
import { lookupOnline } from '../domain/features/online.js';
import { splitFeature } from '../domain/drift/store.js';
import { loadTensorflow } from '../domain/ml/backend.js';
import { fromArtifact } from '../domain/ml/model.js';
import { getAliases, getVersion } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { movieLensSlice, prepareModel } from './retrain-support.js';

let h: Harness;
const slice = movieLensSlice(150);
const suffix = Math.random().toString(36).slice(2, 8);
const model = `decide-${suffix}`;
const source = `ml-decide-${suffix}`;

interface DecisionBody {
  decisionId: string;
  surface: string;
  version: number | null;
  arm: string;
  items: Array<{ itemId: string; score: number }>;
  reason: string;
  fallback: string | null;
  unknownCandidates?: string[];
}

interface ExposureRow {
  decision_id: string;
  surface: string;
  person_id: string;
  version: number | null;
  arm: string;
  generation: number;
  items: string[];
  scores: number[];
  fallback: string | null;
  error: boolean;
  at: Date;
}

async function call(method: string, path: string, body?: unknown) {
  const response = await h.fetch(`${h.base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

function messageOf(answer: { body: Record<string, unknown> }): string {
  return (answer.body['error'] as { message?: string } | undefined)?.message ?? '';
}

async function decide(body: Record<string, unknown>): Promise<DecisionBody> {
  const { status, body: answer } = await call('POST', '/v1/decide', body);
  if (status !== 200) throw new Error(`decide answered ${status}: ${JSON.stringify(answer)}`);
  return answer as unknown as DecisionBody;
}

/** The exposure of a decision, once the buffer has written it (it is written behind the reply). */
async function exposure(decisionId: string): Promise<ExposureRow> {
  for (let i = 0; i < 100; i++) {
    const { rows } = await h.db.pool.query<ExposureRow>(
      'select * from exposures where decision_id = $1',
      [decisionId],
    );
    if (rows[0]) return rows[0];
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no exposure row for decision ${decisionId}`);
}

/** Waits until the API process routes the surface under `generation` (its poller reloaded it). */
async function served(surface: string, generation: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const { body } = await call('GET', `/v1/surfaces/${surface}`);
    if (Number(body['servedGeneration'] ?? 0) >= generation) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`surface ${surface} is not served under generation ${generation}`);
}

/** Routes a surface and waits until the API serves the change. */
async function route(surface: string, routes: Route[], reason = 'test'): Promise<number> {
  const result = await setRoutes(h.db.pool, { surface, routes, actor: 'tester', reason });
  await served(surface, result.surface.generation);
  return result.surface.generation;
}

async function createSurface(name: string): Promise<void> {
  const created = await call('POST', '/v1/surfaces', { name, model });
  expect(created.status).toBe(201);
  await decide({ surface: name, userId: '1', k: 1 }); // the API process now serves it
}

/** What the person rated, from the events. */
async function rated(userId: string): Promise<Set<string>> {
  const { rows } = await h.db.pool.query<{ item_id: string }>(
    `select distinct item_id from events
      where source = $1 and event = 'rated' and person_id = $2 and item_id is not null`,
    [source, userId],
  );
  return new Set(rows.map((r) => r.item_id));
}

/** The model's own scores for a person and items, on their online features, through tfjs. */
async function modelScores(version: number, personKey: string, items: string[]) {
  const v = await getVersion(h.db.pool, model, version);
  if (!v) throw new Error(`no version ${version}`);
  const { tf } = await loadTensorflow('cpu');
  const scorer = await fromArtifact(tf, await readArtifact(h.db.pool, v.artifactSha256));
  const parts = v.features.map(splitFeature);
  const refs = (entity: string) =>
    [...new Map(parts.map((p) => [`${p.name}@${p.version}`, p])).values()].filter((p) =>
      entity === 'item' ? p.name.startsWith('item_') : p.name.startsWith('person_'),
    );
  const person = await lookupOnline(h.db.pool, 'person', personKey, refs('person'));
  const x = new Float32Array(items.length * parts.length);
  for (const [i, item] of items.entries()) {
    const features = [...person, ...(await lookupOnline(h.db.pool, 'item', item, refs('item')))];
    parts.forEach((p, j) => {
      const f = features.find((o) => o.name === p.name && o.version === p.version);
      const value = f?.windows[p.window] ?? null;
      x[i * parts.length + j] = value === true ? 1 : typeof value === 'number' ? value : 0;
    });
  }
  const scores = scorer.predict(x, items.length);
  scorer.dispose();
  return new Map(items.map((item, i) => [item, scores[i] ?? NaN]));
}

beforeAll(async () => {
  h = await startHarness('decide', { api: true });
  await prepareModel(h.db.pool, slice.dir, source, model);
  const run = await startRetrain(
    h.client,
    h.prefix,
    retrainInputSchema.parse({
      model,
      reason: 'first version',
      requestedBy: 'tester',
      trainUntil: '2004-01-01T00:00:00Z',
      validateUntil: '2005-01-01T00:00:00Z',
      training: { epochs: 3 },
    }),
  );
  await h.client.workflow
    .getHandle(run.workflowId, run.runId)
    .signal('approvePromotion', { by: 'lead', reason: 'first model' });
  const result = await waitForRetrain(h.client, run.workflowId, run.runId);
  expect(result.promotion.outcome).toBe('promoted');
  expect(await getAliases(h.db.pool, model)).toMatchObject({ production: 1 });

  // Version 2: the same artifact under another version number, a canary to route traffic to.
  // Version 3: an artifact whose content does not match its hash (it cannot load).
  // Version 4: version 1 reading a feature version that was never computed.
  const copy = (version: number, over: string) =>
    h.db.pool.query(
      `insert into model_versions
       select (jsonb_populate_record(null::model_versions,
                 to_jsonb(v) || jsonb_build_object('version', $2::int, 'run_key', $3::text) || $4::jsonb)).*
         from model_versions v where model = $1 and version = 1`,
      [model, version, `copy-${version}-${suffix}`, over],
    );
  await copy(2, '{}');
  await h.db.pool.query(
    `insert into model_artifacts (sha256, topology, weight_specs, weights, preprocessing)
     select 'broken-' || sha256, topology, weight_specs, weights, preprocessing
       from model_artifacts where sha256 = $1`,
    [result.artifactSha256],
  );
  await copy(3, JSON.stringify({ artifact_sha256: `broken-${result.artifactSha256}` }));
  await h.db.pool.query(
    `insert into feature_versions
     select (jsonb_populate_record(null::feature_versions, to_jsonb(f)
               || jsonb_build_object('version', 2, 'definition', f.definition || '{"version": 2}'))).*
       from feature_versions f where name = 'item_mean_rating' and version = 1`,
  );
  const v1 = await getVersion(h.db.pool, model, 1);
  const features = v1?.features.map((f) => f.replace('item_mean_rating@1:', 'item_mean_rating@2:'));
  await copy(4, JSON.stringify({ features }));
}, 600_000);

afterAll(async () => {
  await h?.close();
});

describe('bucketing', () => {
  it('is sticky across 1% -> 5% -> 25% -> 50%, and splits 100,000 ids within 4 sd', () => {
    const salt = 'a-salt';
    const weights = [100, 500, 2500, 5000];
    const n = 100_000;
    const buckets = Array.from({ length: n }, (_, i) => bucketOf(salt, `unresolved:${i}`));
    const arms = weights.map((w) =>
      buckets.map(
        (b) =>
          routeOf(
            [
              { version: 1, role: 'stable', weightBp: BUCKETS - w },
              { version: 2, role: 'canary', weightBp: w },
            ],
            b,
          )?.role,
      ),
    );
    for (const [i, w] of weights.entries()) {
      const canary = arms[i]?.filter((a) => a === 'canary').length ?? 0;
      const p = w / BUCKETS;
      const sd = Math.sqrt(n * p * (1 - p));
      expect(Math.abs(canary - n * p)).toBeLessThanOrEqual(4 * sd);
      // Sticky: everyone in the canary at this weight is in it at every larger weight.
      for (let j = i + 1; j < weights.length; j++) {
        const later = arms[j] ?? [];
        expect(arms[i]?.every((a, id) => a !== 'canary' || later[id] === 'canary')).toBe(true);
      }
    }
    expect(bucketOf('another-salt', 'unresolved:1')).not.toBe(bucketOf(salt, 'unresolved:1'));
  });

  it('serves each person the arm of their bucket, sticky as the canary grows', async () => {
    const surface = `sticky-${suffix}`;
    await createSurface(surface);
    const salt = (await getSurface(h.db.pool, surface))?.salt ?? '';
    const people = [
      ...Array.from({ length: 100 }, (_, i) => ({ userId: String(i + 1) })),
      ...Array.from({ length: 100 }, (_, i) => ({ anonymousId: `anon-${suffix}-${i}` })),
    ];
    const inCanary = new Set<number>();
    for (const w of [100, 500, 2500, 5000]) {
      await route(surface, [
        { version: 1, role: 'stable', weightBp: BUCKETS - w },
        { version: 2, role: 'canary', weightBp: w },
      ]);
      for (const [i, p] of people.entries()) {
        const d = await decide({ surface, ...p, k: 3 });
        const key = 'userId' in p ? `unresolved:${p.userId}` : `unresolved:${p.anonymousId}`;
        const canary = bucketOf(salt, key) < w;
        expect(d).toMatchObject({ arm: canary ? 'canary' : 'stable', version: canary ? 2 : 1 });
        if (inCanary.has(i)) expect(d.arm).toBe('canary');
        if (canary) inCanary.add(i);
      }
    }
    expect(inCanary.size).toBeGreaterThan(50);
  }, 120_000);
});

describe('POST /v1/decide', () => {
  it('ranks unrated items by the model on the online features and logs the exposure', async () => {
    const surface = `home-${suffix}`;
    await createSurface(surface);
    const userId = '7';
    const seen = await rated(userId);
    expect(seen.size).toBeGreaterThan(10);

    // Default candidates: the catalog's 100 most popular items, minus what the person rated.
    const d = await decide({ surface, userId, k: 10 });
    expect(d).toMatchObject({ surface, version: 1, arm: 'stable', fallback: null });
    expect(d.items).toHaveLength(10);
    expect(d.items.some((i) => seen.has(i.itemId))).toBe(false);
    expect(d.reason).toMatch(/^model v1 \(stable\) ranked 100 popular catalog items, \d+ already/);

    // Given candidates: half rated, half not; every unrated one is scored, the best k returned.
    const ratedOnes = [...seen].slice(0, 10);
    const { rows } = await h.db.pool.query<{ item_id: string }>(
      `select item_id from items where source = $1 and not (item_id = any($2::text[]))
        order by item_id limit 30`,
      [source, [...seen]],
    );
    const unrated = rows.map((r) => r.item_id);
    const given = await decide({ surface, userId, candidates: [...ratedOnes, ...unrated], k: 5 });
    expect(given.items).toHaveLength(5);
    expect(given.items.every((i) => unrated.includes(i.itemId))).toBe(true);
    expect(given.reason).toContain('40 given candidates, 10 already rated excluded');

    const own = await modelScores(1, `unresolved:${userId}`, unrated);
    for (const item of given.items) {
      expect(item.score).toBeCloseTo(own.get(item.itemId) ?? NaN, 5);
    }
    const best = [...own.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
    expect(given.items.map((i) => i.itemId)).toEqual(best.map(([item]) => item));

    const row = await exposure(given.decisionId);
    expect(row).toMatchObject({
      surface,
      person_id: `unresolved:${userId}`,
      version: 1,
      arm: 'stable',
      fallback: null,
      error: false,
      items: given.items.map((i) => i.itemId),
    });
    row.scores.forEach((s, i) => expect(s).toBeCloseTo(given.items[i]?.score ?? NaN, 5));
    expect(row.generation).toBe((await getSurface(h.db.pool, surface))?.generation);

    // Candidates that are not items of the model's source are dropped and named, never scored.
    const strangers = ['no-such-item', 'nor-this'];
    const mixed = await decide({ surface, userId, candidates: [...strangers, ...unrated], k: 40 });
    expect(mixed.unknownCandidates).toEqual(strangers);
    expect(mixed.items.map((i) => i.itemId).sort()).toEqual([...unrated].sort());
    expect(mixed.reason).toContain('30 given candidates, 0 already rated excluded');
    expect(mixed.reason).toContain('2 unknown candidates dropped');
    expect((await exposure(mixed.decisionId)).items).not.toContain('no-such-item');
  }, 60_000);

  it("applies the surface's business filters to the model's answer and to the rules'", async () => {
    const surface = `filters-${suffix}`;
    await createSurface(surface);
    const userId = '11';
    const seen = await rated(userId);
    const { rows } = await h.db.pool.query<{ item_id: string; genres: string[] }>(
      `select item_id, genres from items where source = $1 and not (item_id = any($2::text[]))
        order by item_id limit 40`,
      [source, [...seen]],
    );
    const candidates = rows.map((r) => r.item_id);
    // The most common genre among the candidates, and one item outside it, are filtered.
    const counts = new Map<string, number>();
    for (const r of rows) for (const g of r.genres) counts.set(g, (counts.get(g) ?? 0) + 1);
    const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const genre = ranked[0]?.[0] ?? '';
    const item = rows.find((r) => !r.genres.includes(genre))?.item_id ?? '';
    expect(genre).not.toBe('');
    expect(item).not.toBe('');
    const expected = rows
      .filter((r) => !r.genres.includes(genre) && r.item_id !== item)
      .map((r) => r.item_id);
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThan(candidates.length - 1);

    const set = await call('PUT', `/v1/surfaces/${surface}/filters`, {
      filters: { excludeGenres: [genre], excludeItems: [item] },
      reason: 'no such items here',
    });
    expect(set.status).toBe(200);
    const generation = (set.body as { generation: number }).generation;
    await served(surface, generation);
    const d = await decide({ surface, userId, candidates, k: 40 });
    expect(d.fallback).toBeNull();
    expect(d.items.map((i) => i.itemId).sort()).toEqual([...expected].sort());
    expect(d.reason).toContain(`${candidates.length - expected.length} filtered out`);

    const rules = await call('PUT', `/v1/surfaces/${surface}/mode`, {
      mode: 'rules-only',
      reason: 'the rules filter too',
    });
    await served(surface, (rules.body as { generation: number }).generation);
    const r = await decide({ surface, userId, candidates, k: 40 });
    expect(r.fallback).toBe('mode-rules-only');
    expect(r.items.map((i) => i.itemId).sort()).toEqual([...expected].sort());

    const bad = await call('PUT', `/v1/surfaces/${surface}/filters`, {
      filters: { excludeGenres: 'Horror' },
      reason: 'x',
    });
    expect(bad.status).toBe(400);
    expect(messageOf(bad)).toContain('filters.excludeGenres');
    const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: h.prefix }));
    const shown = await pops(['surfaces', 'show', surface]);
    expect(shown.stdout).toContain(`never shows genres ${genre}`);
  }, 60_000);

  it('resolves a user id through the identity graph to the person and what they rated', async () => {
    const surface = `home-${suffix}`;
    // A person of the graph holding user 9's events, with user 9's online values under its key.
    await h.db.pool.query(
      `insert into persons (id, canonical_id, first_seen_at, first_event_id)
       values (900001, 900001, now(), 0)`,
    );
    await h.db.pool.query(
      `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
       values ('user_id', 'account-9', 900001, now(), 0)`,
    );
    await h.db.pool.query(
      `insert into event_persons (event_id, person_id)
       select id, 900001 from events where source = $1 and person_id = '9'`,
      [source],
    );
    await h.db.pool.query(
      `insert into feature_online (name, version, entity_id, ts, vals)
       select name, version, '900001', ts, vals from feature_online
        where entity_id = 'unresolved:9'`,
    );
    const seen = await rated('9');
    const d = await decide({ surface, userId: 'account-9', k: 20 });
    expect(d.items).toHaveLength(20);
    expect(d.items.some((i) => seen.has(i.itemId))).toBe(false);
    const own = await modelScores(
      1,
      '900001',
      d.items.map((i) => i.itemId),
    );
    for (const item of d.items) expect(item.score).toBeCloseTo(own.get(item.itemId) ?? NaN, 5);
    expect((await exposure(d.decisionId)).person_id).toBe('900001');

    // An id nobody has seen gets the feature store's unresolved key and the features' defaults.
    const stranger = await decide({ surface, anonymousId: `nobody-${suffix}`, k: 3 });
    expect(stranger.items).toHaveLength(3);
    expect((await exposure(stranger.decisionId)).person_id).toBe(`unresolved:nobody-${suffix}`);
  }, 60_000);

  it('falls back to the rules in rules-only mode, for a model that cannot load, and records why', async () => {
    const surface = `fallback-${suffix}`;
    await createSurface(surface);
    const seen = await rated('3');
    const popular = await h.db.pool.query<{ item_id: string; n: number }>(
      `select o.entity_id as item_id, o.vals[2] as n from feature_online o
        join feature_versions f on f.name = o.name and f.version = o.version
        join items i on i.item_id = o.entity_id and i.source = $1
       where o.name = 'item_popularity' and o.version = 1
       order by o.vals[2] desc, o.entity_id limit 100`,
      [source],
    );
    expect((await getVersion(h.db.pool, model, 1))?.features).toContain(
      'item_popularity@1:lifetime',
    );
    const expected = popular.rows.filter((r) => !seen.has(r.item_id)).slice(0, 5);

    const changed = await setMode(h.db.pool, {
      surface,
      mode: 'rules-only',
      actor: 'tester',
      reason: 'incident 12',
    });
    await served(surface, changed.surface.generation);
    const rules = await decide({ surface, userId: '3', k: 5 });
    expect(rules).toMatchObject({ version: null, arm: 'rules', fallback: 'mode-rules-only' });
    expect(rules.items.map((i) => i.itemId)).toEqual(expected.map((r) => r.item_id));
    expect(rules.items.map((i) => i.score)).toEqual(expected.map((r) => r.n));
    expect(rules.reason).toContain('rules-only mode');
    expect(await exposure(rules.decisionId)).toMatchObject({
      version: null,
      arm: 'rules',
      fallback: 'mode-rules-only',
      error: false,
    });

    const back = await call('PUT', `/v1/surfaces/${surface}/mode`, {
      mode: 'normal',
      reason: 'incident 12 over',
    });
    expect(back.status).toBe(200);
    await served(surface, Number(back.body['generation']));

    // Version 3's artifact does not match its hash: the assignment stays, the rules answer.
    await route(surface, [{ version: 3, role: 'stable', weightBp: BUCKETS }]);
    const broken = await decide({ surface, userId: '3', k: 5 });
    expect(broken).toMatchObject({ version: 3, arm: 'stable', fallback: 'model-unavailable' });
    expect(broken.items.map((i) => i.itemId)).toEqual(expected.map((r) => r.item_id));
    expect(await exposure(broken.decisionId)).toMatchObject({
      version: 3,
      arm: 'stable',
      fallback: 'model-unavailable',
    });

    // Version 4 reads item_mean_rating@2, which has no online value anywhere.
    await route(surface, [{ version: 4, role: 'stable', weightBp: BUCKETS }]);
    const blind = await decide({ surface, userId: '3', k: 5 });
    expect(blind).toMatchObject({ version: 4, fallback: 'features-unavailable' });
    expect((await exposure(blind.decisionId)).fallback).toBe('features-unavailable');

    await route(surface, [{ version: 1, role: 'stable', weightBp: BUCKETS }]);
    expect((await decide({ surface, userId: '3', k: 5 })).fallback).toBeNull();
    const history = await routingChanges(h.db.pool, surface);
    expect(history.map((c) => [c.mode, c.routes[0]?.version, c.actor])).toEqual([
      ['normal', 1, 'tester'],
      ['normal', 4, 'tester'],
      ['normal', 3, 'tester'],
      ['normal', 1, 'api-test'],
      ['rules-only', 1, 'tester'],
      ['normal', 1, 'api-test'],
    ]);
  }, 60_000);

  it('answers with the rules, history left out, to a person without personalization consent', async () => {
    const surface = `consent-${suffix}`;
    await createSurface(surface);
    const userId = '5';
    const seen = await rated(userId);
    const popular = await h.db.pool.query<{ item_id: string; n: number }>(
      `select o.entity_id as item_id, o.vals[2] as n from feature_online o
        join items i on i.item_id = o.entity_id and i.source = $1
       where o.name = 'item_popularity' and o.version = 1
       order by o.vals[2] desc, o.entity_id limit 100`,
      [source],
    );
    // The 5 most popular of the catalog, the ones this person rated included.
    const expected = popular.rows.slice(0, 5);
    expect(expected.some((r) => seen.has(r.item_id))).toBe(true);

    const before = await decide({ surface, userId, k: 5 });
    expect(before).toMatchObject({ version: 1, arm: 'stable', fallback: null });

    const withdrawn = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: userId },
      purposes: { personalization: false },
    });
    expect(withdrawn.status).toBe(200);
    const after = await decide({ surface, userId, k: 5 });
    expect(after).toMatchObject({ version: null, arm: 'rules', fallback: 'no-consent' });
    expect(after.items.map((i) => i.itemId)).toEqual(expected.map((r) => r.item_id));
    expect(after.items.map((i) => i.score)).toEqual(expected.map((r) => r.n));
    expect(after.reason).toBe(
      'rules: most popular of 100 popular catalog items, because the person has not consented' +
        ' to personalization',
    );
    expect(await exposure(after.decisionId)).toMatchObject({
      arm: 'rules',
      fallback: 'no-consent',
    });

    // Granted again: the model answers at once (consent is read with the person, not cached).
    await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: userId },
      purposes: { personalization: true },
    });
    expect(await decide({ surface, userId, k: 5 })).toMatchObject({ version: 1, fallback: null });
  }, 60_000);

  it('logs no exposure of a removed version once the change is served, within 1 s of its commit', async () => {
    const surface = `rollback-${suffix}`;
    await createSurface(surface);
    await route(surface, [
      { version: 1, role: 'stable', weightBp: 5000 },
      { version: 2, role: 'canary', weightBp: 5000 },
    ]);
    let running = true;
    let sent = 0;
    const traffic = (async () => {
      while (running) {
        await decide({ surface, userId: String(1 + (sent % 100)), k: 3 });
        sent += 1;
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const change = await setRoutes(h.db.pool, {
      surface,
      routes: [{ version: 1, role: 'stable', weightBp: BUCKETS }],
      actor: 'tester',
      reason: 'roll back the canary',
      workflowId: `rollout/${surface}`,
      changeKey: `rollback-${suffix}`,
    });
    const committed = Date.now();
    await served(surface, change.surface.generation);
    const propagation = Date.now() - committed;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    running = false;
    await traffic;
    await new Promise((resolve) => setTimeout(resolve, 300)); // the buffer's last batch

    expect(propagation).toBeLessThan(1000);
    const { rows } = await h.db.pool.query<{ version: number; at: Date; generation: number }>(
      'select version, at, generation from exposures where surface = $1 order by at',
      [surface],
    );
    const before = rows.filter((r) => r.at.getTime() < committed);
    const after = rows.filter((r) => r.at.getTime() >= committed + 1000);
    expect(before.filter((r) => r.version === 2).length).toBeGreaterThan(5);
    expect(after.length).toBeGreaterThan(20);
    expect(after.filter((r) => r.version === 2)).toEqual([]);
    expect(after.every((r) => r.generation === change.surface.generation)).toBe(true);
    const served2 = rows.filter((r) => r.at.getTime() >= committed + propagation);
    expect(served2.filter((r) => r.version === 2)).toEqual([]);

    // The same change retried (an activity's retry) records nothing twice.
    const again = await setRoutes(h.db.pool, {
      surface,
      routes: [{ version: 1, role: 'stable', weightBp: BUCKETS }],
      actor: 'tester',
      reason: 'roll back the canary',
      changeKey: `rollback-${suffix}`,
    });
    expect(again).toMatchObject({
      changed: false,
      change: { generation: change.surface.generation },
    });
    expect((await getSurface(h.db.pool, surface))?.generation).toBe(change.surface.generation);
  }, 60_000);

  it('refuses bad input naming the field, and an unknown surface with 404', async () => {
    const surface = `home-${suffix}`;
    const missing = await call('POST', '/v1/decide', { surface, k: 3 });
    expect(missing.status).toBe(400);
    expect(JSON.stringify(missing.body)).toContain('userId');
    const k = await call('POST', '/v1/decide', { surface, userId: '1', k: 0 });
    expect(k.status).toBe(400);
    expect(messageOf(k)).toMatch(/k: .*got 0/);
    const repeated = await call('POST', '/v1/decide', {
      surface,
      userId: '1',
      candidates: ['1', '1'],
    });
    expect(repeated.status).toBe(400);
    expect(JSON.stringify(repeated.body)).toContain('candidates');
    const unknown = await call('POST', '/v1/decide', { surface: `nowhere-${suffix}`, userId: '1' });
    expect(unknown.status).toBe(404);

    const bad = await call('POST', '/v1/surfaces', { name: 'Bad Name', model });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain('name');
    const noModel = await call('POST', '/v1/surfaces', { name: `x-${suffix}`, model: 'nope' });
    expect(noModel.status).toBe(404);
    const mode = await call('PUT', `/v1/surfaces/${surface}/mode`, { mode: 'off', reason: 'r' });
    expect(mode.status).toBe(400);
    expect(messageOf(mode)).toMatch(/mode: .*"off"/);
  });
});

describe('POST /v1/outcomes', () => {
  it('accepts an outcome at once (202), once, and refuses unknown decisions and bad input', async () => {
    const surface = `home-${suffix}`;
    const d = await decide({ surface, userId: '11', k: 3 });
    const item = d.items[0]?.itemId ?? '';
    // Sent before the exposure's batch is written: the buffer is flushed first, never a 404.
    const first = await call('POST', '/v1/outcomes', {
      decisionId: d.decisionId,
      itemId: item,
      type: 'click',
    });
    expect(first).toMatchObject({ status: 202, body: { recorded: true } });
    const again = await call('POST', '/v1/outcomes', {
      decisionId: d.decisionId,
      itemId: item,
      type: 'click',
    });
    expect(again).toMatchObject({ status: 202, body: { recorded: false } });
    const convert = await call('POST', '/v1/outcomes', {
      decisionId: d.decisionId,
      itemId: item,
      type: 'convert',
    });
    expect(convert.status).toBe(202);
    const { rows } = await h.db.pool.query<{ type: string }>(
      'select type from outcomes where decision_id = $1 order by id',
      [d.decisionId],
    );
    expect(rows.map((r) => r.type)).toEqual(['click', 'convert']);

    const unknown = await call('POST', '/v1/outcomes', {
      decisionId: '00000000-0000-4000-8000-000000000000',
      itemId: item,
      type: 'click',
    });
    expect(unknown.status).toBe(404);
    const notShown = await call('POST', '/v1/outcomes', {
      decisionId: d.decisionId,
      itemId: 'not-an-item',
      type: 'click',
    });
    expect(notShown.status).toBe(400);
    expect(JSON.stringify(notShown.body)).toContain('itemId');
    const badType = await call('POST', '/v1/outcomes', {
      decisionId: d.decisionId,
      itemId: item,
      type: 'like',
    });
    expect(badType.status).toBe(400);
    expect(messageOf(badType)).toMatch(/type: .*"like"/);
    const badId = await call('POST', '/v1/outcomes', {
      decisionId: 'd-1',
      itemId: item,
      type: 'click',
    });
    expect(badId.status).toBe(400);
    expect(messageOf(badId)).toMatch(/decisionId: .*"d-1"/);
  });
});

/** The k most popular items of the catalog and their popularity: the rules' answer. */
async function mostPopular(k: number) {
  const { rows } = await h.db.pool.query<{ item_id: string; n: number }>(
    `select o.entity_id as item_id, o.vals[2] as n from feature_online o
      join items i on i.item_id = o.entity_id and i.source = $1
     where o.name = 'item_popularity' and o.version = 1
     order by o.vals[2] desc, o.entity_id limit $2`,
    [source, k],
  );
  return rows.map((r) => ({ itemId: r.item_id, score: r.n }));
}

describe('a deleted identifier', () => {
  it('gets the rules, logs no exposure naming it, and stores no outcome or consent', async () => {
    const surface = `deleted-${suffix}`;
    await createSurface(surface);
    const userId = '140';
    const before = await decide({ surface, userId, k: 5 });
    expect(before).toMatchObject({ version: 1, arm: 'stable', fallback: null });
    // Written before the deletion starts, so that the deletion finds it.
    const key = (await exposure(before.decisionId)).person_id;

    const asked = await call('POST', '/v1/privacy/deletions', {
      identifier: { type: 'user_id', value: userId },
      reason: 'regression: routes after a deletion',
    });
    expect(asked.status).toBe(202);
    await h.client.workflow.getHandle(String(asked.body['workflowId'])).result();

    const expected = await mostPopular(5);
    // The deleted user id alone, padded beside a new cookie, and sent as an anonymous id.
    const bodies = [
      { userId },
      { userId: ` ${userId} `, anonymousId: `fresh-${suffix}` },
      { anonymousId: userId },
    ];
    for (const body of bodies) {
      const after = await decide({ surface, ...body, k: 5 });
      expect(after).toMatchObject({ version: null, arm: 'rules', fallback: 'identifier-deleted' });
      expect(after.items).toEqual(expected);
      expect(after.reason).toBe(
        "rules: most popular of 100 popular catalog items, because the person's data was deleted",
      );
      expect(await exposure(after.decisionId)).toMatchObject({
        person_id: 'deleted',
        arm: 'rules',
        version: null,
        fallback: 'identifier-deleted',
      });
      const outcome = await call('POST', '/v1/outcomes', {
        decisionId: after.decisionId,
        itemId: expected[0]?.itemId,
        type: 'click',
      });
      expect(outcome).toMatchObject({ status: 202, body: { recorded: false, dropped: 'deleted' } });
      const outcomes = await h.db.pool.query(
        'select count(*)::int as n from outcomes where decision_id = $1',
        [after.decisionId],
      );
      expect(outcomes.rows[0]).toEqual({ n: 0 });
    }
    const named = await h.db.pool.query(
      'select count(*)::int as n from exposures where person_id = $1',
      [key],
    );
    expect(named.rows[0]).toEqual({ n: 0 });

    const consent = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: ` ${userId}` },
      purposes: { marketing: true, personalization: false },
      source: 'x',
    });
    expect(consent).toEqual({
      status: 200,
      body: { changed: { personalization: false, marketing: false }, dropped: 'deleted' },
    });
    const events = await h.db.pool.query(
      `select count(*)::int as n from consent_events
        where identifier_type = 'user_id' and identifier_value = $1`,
      [userId],
    );
    expect(events.rows[0]).toEqual({ n: 0 });
    // Another user's consent is written as before.
    const other = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: `other-${suffix}` },
      purposes: { marketing: true },
    });
    expect(other).toEqual({ status: 200, body: { changed: { marketing: true } } });
  }, 120_000);
});

describe('consent over the ids of one request', () => {
  it('counts a withdrawal on the anonymous id sent with a user id not merged yet', async () => {
    const surface = `both-ids-${suffix}`;
    await createSurface(surface);
    const anonymousId = `cookie-zz9-${suffix}`;
    const userId = `newuser-zz9-${suffix}`;
    const withdrawn = await call('PUT', '/v1/consent', {
      identifier: { type: 'anonymous_id', value: anonymousId },
      purposes: { personalization: false },
      source: 'banner',
    });
    // `changed` says the withdrawal was written (a change).
    expect(withdrawn).toEqual({ status: 200, body: { changed: { personalization: true } } });
    const rules = { version: null, arm: 'rules', fallback: 'no-consent' };
    expect(await decide({ surface, anonymousId, k: 5 })).toMatchObject(rules);
    const both = await decide({ surface, userId, anonymousId, k: 5 });
    expect(both).toMatchObject(rules);
    expect(both.items).toEqual(await mostPopular(5));
    // The user id alone carries no withdrawal: the model answers.
    expect(await decide({ surface, userId, k: 5 })).toMatchObject({ version: 1, fallback: null });

    // The latest choice over both ids counts: a grant on the user id after the withdrawal.
    const granted = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: userId },
      purposes: { personalization: true },
    });
    expect(granted).toEqual({ status: 200, body: { changed: { personalization: true } } });
    expect(await decide({ surface, userId, anonymousId, k: 5 })).toMatchObject({
      version: 1,
      fallback: null,
    });
  }, 60_000);
});

describe('pops surfaces', () => {
  it('creates, shows and sets the mode; bad input exits 2 naming the field and value', async () => {
    const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: h.prefix }));
    const surface = `cli-${suffix}`;
    const created = await pops(['surfaces', 'create', surface, '--model', model]);
    expect(created.code).toBe(0);
    expect(created.stdout).toContain(`created surface ${surface} serving ${model}`);
    const mode = await pops(['surfaces', 'mode', surface, 'conservative', '--reason', 'drill']);
    expect(mode.code).toBe(0);
    expect(mode.stdout).toContain('mode conservative (generation 2)');
    const shown = await pops(['surfaces', 'show', surface]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('mode conservative, generation 2');
    expect(shown.stdout).toMatch(/1\s+stable\s+100\.00%/);
    expect(shown.stdout).toContain('drill');
    const json = JSON.parse((await pops(['surfaces', 'show', surface, '--json'])).stdout) as {
      salt?: string;
      changes: unknown[];
    };
    expect(json.salt).toBeUndefined();
    expect(json.changes).toHaveLength(2);

    const badMode = await pops(['surfaces', 'mode', surface, 'off', '--reason', 'x']);
    expect(badMode.code).toBe(2);
    expect(badMode.stderr).toMatch(/mode: .*"off"/);
    const badName = await pops(['surfaces', 'create', 'Bad Name', '--model', model]);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/name: .*"Bad Name"/);
    const unknown = await pops(['surfaces', 'show', `none-${suffix}`]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(`surface "none-${suffix}" does not exist`);
  }, 60_000);
});
