import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  consistencyCheckWorkflowId,
  startConsistencyCheck,
  waitForConsistencyCheck,
} from '../client/features.js';
import { withTransaction } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import {
  checkMismatches,
  closeCheck,
  compareSample,
  openCheck,
  sameValue,
} from '../domain/features/consistency-store.js';
import {
  type FeatureDefinition,
  type FeatureDefinitionInput,
  featureDefinitionSchema,
} from '../domain/features/definition.js';
import {
  lookupOnline,
  offlineAt,
  type OnlineFeature,
  publishOnline,
} from '../domain/features/online.js';
import { registerFeatures } from '../domain/features/registry.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { hashedValueOf, testQueuePrefix } from './support.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
/** The UTC midnight that began today: every snapshot of this file is at or before it. */
const M = Math.floor(Date.now() / DAY) * DAY;
const at = (ms: number) => new Date(ms);

const prefix = testQueuePrefix('feature-online');
let h: Harness;

function def(input: Partial<FeatureDefinitionInput> & { name: string }): FeatureDefinition {
  return featureDefinitionSchema.parse({
    version: 1,
    entity: 'person',
    source: { events: { event: 'rated' } },
    aggregation: { fn: 'count' },
    windows: ['lifetime'],
    type: 'int',
    default: 0,
    owner: 'ml',
    description: 'test feature',
    freshnessSla: '1d',
    ...input,
  });
}

const count1 = def({ name: 'person_count', windows: ['7d', 'lifetime'] });
const count2 = def({ name: 'person_count', version: 2 });
const mean = def({
  name: 'person_mean',
  aggregation: { fn: 'mean', of: 'rating' },
  windows: ['30d'],
  type: 'float',
  default: 3,
  ttl: '10d',
});
const dsl = def({
  name: 'person_dsl',
  aggregation: { fn: 'days_since_last' },
  windows: ['lifetime', '30d'],
  type: 'float',
  default: null,
});
const flag = def({
  name: 'person_flag',
  aggregation: { fn: 'last', of: 'premium' },
  type: 'bool',
  default: false,
});
const itemPop = def({ name: 'item_pop', entity: 'item', windows: ['7d'] });
const pairCount = def({ name: 'pair_count', entity: 'person_item' });
const ALL = [count1, count2, mean, dsl, flag, itemPop, pairCount];

async function putValues(
  f: FeatureDefinition,
  ts: number,
  entity: string,
  vals: Array<number | null>,
) {
  await h.db.pool.query(
    `insert into feature_values (name, version, ts, entity_id, vals) values ($1, $2, $3, $4, $5)
     on conflict (name, version, ts, entity_id) do update set vals = excluded.vals`,
    [f.name, f.version, at(ts), entity, vals],
  );
}

async function publish(f: FeatureDefinition, fromTs: number, untilTs: number): Promise<number> {
  return withTransaction(h.db.pool, (client) =>
    publishOnline(client, f, { fromTs: at(fromTs), untilTs: at(untilTs) }),
  );
}

async function online(f: FeatureDefinition, entity: string) {
  const { rows } = await h.db.pool.query<{ ts: Date; vals: number[] }>(
    'select ts, vals from feature_online where name = $1 and version = $2 and entity_id = $3',
    [f.name, f.version, entity],
  );
  return rows[0];
}

async function get(path: string) {
  const response = await h.fetch(`${h.base}${path}`);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

function byName(features: OnlineFeature[], name: string): OnlineFeature {
  const found = features.find((f) => f.name === name);
  if (!found) throw new Error(`no feature ${name} in ${JSON.stringify(features)}`);
  return found;
}

beforeAll(async () => {
  h = await startHarness('feature-online', { api: true, prefix });
  const pool = h.db.pool;
  await registerFeatures(pool, ALL, 'tester');
  // Person 1 (user_id:42), person 2 merged into it (email ann@…), person 3 with no features.
  await pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (1, 1, null, now(), 1, null), (3, 3, null, now(), 3, null)`,
  );
  await pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (2, 1, 1, now(), 2, now())`,
  );
  await pool.query(
    `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
     values ('user_id', '42', 1, now(), 1), ('email', $1, 2, now(), 2)`,
    [hashedValueOf('email', 'ann@example.com')],
  );
  await pool.query(`insert into items (source, item_id) values ('t', 'i1'), ('t', 'i-empty')`);
  await pool.query(
    `insert into events (message_id, source, type, event, person_id, ts)
     values ('m-anon', 't', 'track', 'rated', 'anon-7', now())`,
  );
});

afterAll(async () => {
  await h.close();
});

describe('publishOnline', () => {
  it('never lets an older backfill overwrite a newer online value', async () => {
    await putValues(count1, M - 5 * DAY, 'p-old', [5, 8]);
    await putValues(count1, M - DAY, 'p-old', [2, 10]);

    expect(await publish(count1, M - DAY, M - DAY)).toBe(1);
    expect(await online(count1, 'p-old')).toEqual({ ts: at(M - DAY), vals: [2, 10] });

    // The older partition (a backfill of earlier days, run later) writes nothing.
    expect(await publish(count1, M - 10 * DAY, M - 5 * DAY)).toBe(0);
    expect(await online(count1, 'p-old')).toEqual({ ts: at(M - DAY), vals: [2, 10] });
  });

  it('replaces a value of the same time (a recomputed day wins)', async () => {
    await putValues(count1, M - DAY, 'p-old', [3, 11]);
    expect(await publish(count1, M - DAY, M - DAY)).toBe(1);
    expect(await online(count1, 'p-old')).toEqual({ ts: at(M - DAY), vals: [3, 11] });
  });

  it('takes each entity latest snapshot within the range, both ends inclusive', async () => {
    await putValues(count1, M - 9 * DAY, 'p-range', [1, 1]);
    await putValues(count1, M - 7 * DAY, 'p-range', [2, 2]);
    await putValues(count1, M - 3 * DAY, 'p-range', [0, 3]);
    expect(await publish(count1, M - 9 * DAY, M - 7 * DAY)).toBe(1);
    expect(await online(count1, 'p-range')).toEqual({ ts: at(M - 7 * DAY), vals: [2, 2] });
    await publish(count1, M - 3 * DAY, M - 3 * DAY);
    expect(await online(count1, 'p-range')).toEqual({ ts: at(M - 3 * DAY), vals: [0, 3] });
  });
});

/**
 * The online store's rows for the lookups and checks below, written through the offline store;
 * once, for whichever describe runs first (so a filtered run seeds too).
 */
let seeding: Promise<void> | undefined;
const seeded = () => (seeding ??= seedLookups());

async function seedLookups() {
  await putValues(count2, M, '1', [12]);
  await putValues(count1, M - DAY, '1', [3, 11]);
  await putValues(mean, M - 20 * DAY, '1', [4.5]); // past its 10-day TTL
  await putValues(mean, M - 2 * DAY, 'unresolved:anon-7', [2.25]);
  await putValues(dsl, M - 2 * DAY, '1', [1.5, null]);
  await putValues(flag, M - 30 * DAY, '1', [1]);
  await putValues(itemPop, M - 2 * DAY, 'i1', [7]);
  await putValues(pairCount, M, '1|i1', [2]);
  for (let i = 0; i < 20; i += 1) await putValues(count2, M - (i % 3) * DAY, `p${i}`, [i]);
  for (const f of ALL) await publish(f, M - 60 * DAY, M);
  // item_pop is computed through yesterday (snapshot M), though i1's value last changed at M-2d.
  await h.db.pool.query(
    `insert into feature_partitions (name, version, day, backfill_id, tile_rows, value_rows)
     values ('item_pop', 1, $1::date, 'test', 1, 1)`,
    [new Date(M - DAY).toISOString().slice(0, 10)],
  );
}

describe('lookupOnline', () => {
  beforeAll(seeded);

  it('serves the values with their time, age, freshness, TTL, defaults and aging', async () => {
    const now = at(M + 4 * HOUR);
    const features = await lookupOnline(h.db.pool, 'person', '1', undefined, now);

    expect(features.map((f) => `${f.name}@${f.version}`)).toEqual([
      'person_count@2',
      'person_dsl@1',
      'person_flag@1',
      'person_mean@1',
    ]);
    expect(byName(features, 'person_count')).toEqual({
      name: 'person_count',
      version: 2,
      type: 'int',
      windows: { lifetime: 12 },
      ts: at(M).toISOString(),
      ageSeconds: 4 * 3600,
      computedThrough: null,
      freshness: 'fresh',
    });
    // 1.5 days at M-2d, read 2 days and 4 hours later; its 30d window is missing, default null.
    expect(byName(features, 'person_dsl')).toMatchObject({
      windows: { lifetime: expect.closeTo(1.5 + 2 + 4 / 24, 12), '30d': null },
      ts: at(M - 2 * DAY).toISOString(),
      ageSeconds: 52 * 3600,
      freshness: 'stale',
    });
    expect(byName(features, 'person_flag')).toMatchObject({
      type: 'bool',
      windows: { lifetime: true },
      freshness: 'stale',
    });
    // 20 days old with a 10-day TTL: missing, so the default, with no time.
    expect(byName(features, 'person_mean')).toMatchObject({
      windows: { '30d': 3 },
      ts: null,
      ageSeconds: null,
      freshness: 'stale',
    });
  });

  it('serves the versions asked for, in order, and defaults for an entity without values', async () => {
    const now = at(M + 4 * HOUR);
    const asked = [{ name: 'person_count', version: 1 }, { name: 'person_mean' }];
    const features = await lookupOnline(h.db.pool, 'person', '1', asked, now);
    expect(features.map((f) => [f.version, f.windows, f.freshness])).toEqual([
      [1, { '7d': 3, lifetime: 11 }, 'stale'],
      [1, { '30d': 3 }, 'stale'],
    ]);
    const none = await lookupOnline(h.db.pool, 'person', 'nobody', asked, now);
    expect(none.map((f) => [f.windows, f.ts])).toEqual([
      [{ '7d': 0, lifetime: 0 }, null],
      [{ '30d': 3 }, null],
    ]);
  });

  it('is fresh when the feature was computed recently, though the value is older', async () => {
    const now = at(M + 4 * HOUR);
    const [pop] = await lookupOnline(h.db.pool, 'item', 'i1', undefined, now);
    expect(pop).toMatchObject({
      windows: { '7d': 7 },
      ts: at(M - 2 * DAY).toISOString(),
      computedThrough: at(M).toISOString(),
      freshness: 'fresh',
    });
    const late = await lookupOnline(h.db.pool, 'item', 'i1', undefined, at(M + 25 * HOUR));
    expect(late[0]?.freshness).toBe('stale');
  });

  it('reads offline at an instant with the same semantics', async () => {
    const t = at(M - DAY + HOUR);
    const values = await offlineAt(h.db.pool, dsl, ['1', 'nobody'], t);
    expect(values.get('1')).toEqual({
      ts: at(M - 2 * DAY),
      values: [expect.closeTo(1.5 + 1 + 1 / 24, 12), null],
    });
    expect(values.get('nobody')).toEqual({ ts: null, values: [null, null] });
    const counts = await offlineAt(h.db.pool, count1, ['p-range'], at(M - 4 * DAY));
    expect(counts.get('p-range')).toEqual({ ts: at(M - 7 * DAY), values: [2, 2] });
    // At M-11d the mean of M-20d is 9 days old: within its TTL; at M it is not.
    expect((await offlineAt(h.db.pool, mean, ['1'], at(M - 11 * DAY))).get('1')?.values).toEqual([
      4.5,
    ]);
    expect((await offlineAt(h.db.pool, mean, ['1'], at(M))).get('1')?.values).toEqual([3]);
  });
});

describe('GET /v1/features/:entity/:id', () => {
  beforeAll(seeded);
  it('answers a person by id, merged id or identifier, with values aged to now', async () => {
    const before = Date.now();
    const direct = await get('/v1/features/person/1');
    const after = Date.now();
    expect(direct.status).toBe(200);
    expect(direct.body).toMatchObject({ entity: 'person', id: '1', entityKey: '1' });
    const features = direct.body['features'] as OnlineFeature[];
    expect(features.map((f) => f.name)).toEqual([
      'person_count',
      'person_dsl',
      'person_flag',
      'person_mean',
    ]);
    expect(byName(features, 'person_count')).toMatchObject({
      version: 2,
      windows: { lifetime: 12 },
      ts: at(M).toISOString(),
      freshness: 'fresh',
    });
    const days = byName(features, 'person_dsl').windows['lifetime'] as number;
    expect(days).toBeGreaterThanOrEqual(1.5 + (before - (M - 2 * DAY)) / DAY);
    expect(days).toBeLessThanOrEqual(1.5 + (after - (M - 2 * DAY)) / DAY);
    const age = byName(features, 'person_dsl').ageSeconds ?? 0;
    expect(age).toBeGreaterThanOrEqual((before - (M - 2 * DAY)) / 1000);
    expect(age).toBeLessThanOrEqual((after - (M - 2 * DAY)) / 1000);
    expect(byName(features, 'person_mean')).toMatchObject({ windows: { '30d': 3 }, ts: null });

    for (const id of ['2', 'user_id:42', 'email:%20Ann@Example.COM']) {
      const other = await get(`/v1/features/person/${id}?features=person_count`);
      expect(other.status).toBe(200);
      expect(other.body['entityKey']).toBe('1');
      expect(other.body['features']).toMatchObject([{ windows: { lifetime: 12 } }]);
    }
  });

  it('answers the features asked for, persons without values, unresolved persons and items', async () => {
    const asked = await get('/v1/features/person/1?features=person_count@1,person_dsl');
    expect((asked.body['features'] as OnlineFeature[]).map((f) => [f.name, f.version])).toEqual([
      ['person_count', 1],
      ['person_dsl', 1],
    ]);
    const empty = await get('/v1/features/person/3?features=person_count,person_mean');
    expect(empty).toMatchObject({
      status: 200,
      body: {
        entityKey: '3',
        features: [
          { windows: { lifetime: 0 }, ts: null, ageSeconds: null, freshness: 'stale' },
          { windows: { '30d': 3 }, ts: null },
        ],
      },
    });
    const anon = await get('/v1/features/person/unresolved:anon-7?features=person_mean');
    expect(anon.body).toMatchObject({
      entityKey: 'unresolved:anon-7',
      features: [{ windows: { '30d': 2.25 }, ts: at(M - 2 * DAY).toISOString() }],
    });
    const item = await get('/v1/features/item/i1');
    expect(item.body).toMatchObject({
      entityKey: 'i1',
      features: [{ name: 'item_pop', windows: { '7d': 7 }, computedThrough: at(M).toISOString() }],
    });
    const catalogued = await get('/v1/features/item/i-empty');
    expect(catalogued).toMatchObject({
      status: 200,
      body: { features: [{ windows: { '7d': 0 } }] },
    });
    for (const id of ['1|i1', 'email:ann@example.com|i1']) {
      const pair = await get(`/v1/features/person_item/${encodeURIComponent(id)}`);
      expect(pair.body).toMatchObject({
        entityKey: '1|i1',
        features: [{ name: 'pair_count', windows: { lifetime: 2 }, ts: at(M).toISOString() }],
      });
    }
  });

  it('serves a feature registered a moment ago', async () => {
    const fresh = def({ name: 'person_new', default: 5 });
    await get('/v1/features/person/1'); // the definitions are cached now
    await registerFeatures(h.db.pool, [fresh], 'tester');
    const response = await get('/v1/features/person/1?features=person_new');
    expect(response).toMatchObject({
      status: 200,
      body: { features: [{ name: 'person_new', windows: { lifetime: 5 } }] },
    });
  });

  it('answers bad input with 400 naming the field and the value', async () => {
    const cases: Array<[string, string[]]> = [
      ['/v1/features/place/1', ['entity', '"place"']],
      ['/v1/features/person/abc', ['id', '"abc"']],
      ['/v1/features/person/fax:123', ['id', '"fax:123"', 'email']],
      ['/v1/features/person_item/1', ['id', '"1"', '<person>|<item>']],
      ['/v1/features/person/1?features=Bad!', ['features', '"Bad!"']],
      ['/v1/features/person/1?features=person_count,,x', ['features']],
      ['/v1/features/person/1?features=item_pop', ['features', 'item_pop@1', 'item feature']],
      ['/v1/features/person/1?feature=person_count', ['feature']],
    ];
    for (const [path, words] of cases) {
      const response = await get(path);
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      const message = (response.body['error'] as { message: string }).message;
      for (const word of words) expect(message).toContain(word);
    }
  });

  it('answers 404 naming what is unknown', async () => {
    const cases: Array<[string, string]> = [
      ['/v1/features/person/999', 'person "999" is not in the identity graph'],
      ['/v1/features/person/email:nobody@example.com', '"email:nobody@example.com"'],
      ['/v1/features/person/unresolved:ghost', '"unresolved:ghost"'],
      ['/v1/features/item/nope', 'item "nope" has no feature values'],
      ['/v1/features/person_item/999%7Ci1', '"999|i1"'],
      ['/v1/features/person_item/1%7Cnope', '"1|nope"'],
      ['/v1/features/person/1?features=nope,person_count@9', 'feature "nope", "person_count@9"'],
    ];
    for (const [path, words] of cases) {
      const response = await get(path);
      expect({ path, status: response.status }).toEqual({ path, status: 404 });
      expect((response.body['error'] as { message: string }).message).toContain(words);
    }
  });
});

describe('checkFeatureConsistency', () => {
  beforeAll(seeded);
  let n = 0;
  const run = async (features: string[], sample?: number) => {
    n += 1;
    const started = await startConsistencyCheck(
      h.client,
      h.prefix,
      { features, requestedBy: 'tester', reason: 'test', ...(sample ? { sample } : {}) },
      `feature-check/${prefix}/${n}`,
    );
    return { started, result: await waitForConsistencyCheck(h.client, started) };
  };

  it('finds nothing when the stores agree', async () => {
    const { result } = await run([]);
    expect(result.mismatches).toBe(0);
    expect(result.byFeature).toMatchObject({
      'person_count@2': { checked: 21, mismatches: 0 },
      'person_dsl@1': { checked: 1, mismatches: 0 },
      'person_mean@1': { checked: 2, mismatches: 0 },
      'item_pop@1': { checked: 1, mismatches: 0 },
    });
    expect(Object.keys(result.byFeature)).not.toContain('person_count@1'); // not the latest
    const sampled = await run(['person_count@2', 'person_count@1'], 5);
    expect(sampled.result).toMatchObject({
      checked: 8,
      byFeature: { 'person_count@2': { checked: 5 }, 'person_count@1': { checked: 3 } },
    });
  });

  it('finds exactly the mismatches planted in the online store, and audits them', async () => {
    const pool = h.db.pool;
    const tamper = (f: FeatureDefinition, entity: string, set: string) =>
      pool.query(
        `update feature_online set ${set} where name = $1 and version = $2 and entity_id = $3`,
        [f.name, f.version, entity],
      );
    await tamper(count2, 'p7', `vals = '{99}'`);
    await tamper(count1, '1', `vals = '{3,12}'`); // lifetime only
    await tamper(dsl, '1', `ts = ts + interval '1 day'`); // one day younger: lifetime only
    await tamper(mean, '1', `vals = '{1}'`); // past its TTL either way: served the same

    const { started, result } = await run([
      'person_count@1',
      'person_count',
      'person_dsl',
      'person_mean',
    ]);

    expect(result).toMatchObject({
      checked: 21 + 3 + 1 + 2,
      mismatches: 3,
      byFeature: {
        'person_count@1': { mismatches: 1, mismatchedEntities: 1 },
        'person_count@2': { mismatches: 1 },
        'person_dsl@1': { mismatches: 1 },
        'person_mean@1': { mismatches: 0 },
      },
    });
    const { total, mismatches } = await checkMismatches(pool, started);
    expect(total).toBe(3);
    expect(mismatches.map((m) => [m.feature, m.entityId, m.window, m.online, m.offline])).toEqual([
      ['person_count@1', '1', 'lifetime', 12, 11],
      ['person_count@2', 'p7', 'lifetime', 99, 7],
      ['person_dsl@1', '1', 'lifetime', expect.any(Number), expect.any(Number)],
    ]);
    const days = mismatches[2];
    expect((days?.offline as number) - (days?.online as number)).toBeCloseTo(1, 9);
    expect(days?.onlineTs).toBe(at(M - DAY).toISOString());
    expect(days?.offlineTs).toBe(at(M - 2 * DAY).toISOString());

    const trail = await auditTrail(pool, { workflowId: started.workflowId });
    expect(trail).toHaveLength(1);
    expect(trail[0]).toMatchObject({
      actor: 'tester',
      action: 'feature.consistency-checked',
      runId: started.runId,
      inputs: { sample: 1000, reason: 'test' },
      outputs: { checked: 27, mismatches: 3 },
    });
    expect(await verifyAudit(pool)).toMatchObject({ ok: true });
    const { rows } = await pool.query<{ status: string; mismatches: number }>(
      'select status, mismatches from feature_consistency_checks where workflow_id = $1',
      [started.workflowId],
    );
    expect(rows).toEqual([{ status: 'completed', mismatches: 3 }]);
  });

  it('repeats nothing when a step is retried', async () => {
    const pool = h.db.pool;
    const check = {
      workflowId: 'feature-check/retry',
      runId: 'run-1',
      features: [{ name: 'person_count', version: 2 }],
      sample: 1000,
      requestedBy: 'tester',
      reason: 'retry',
    };
    await openCheck(pool, check);
    await openCheck(pool, check);
    const first = await compareSample(pool, count2, check);
    await tamper2();
    const again = await compareSample(pool, count2, check);
    expect(again).toEqual(first);
    const closed = await closeCheck(pool, check, new Date());
    expect(await closeCheck(pool, check, new Date())).toEqual(closed);
    expect(closed).toMatchObject({ checked: 21, mismatches: 1 });
    expect((await checkMismatches(pool, check)).total).toBe(1);
    expect(await auditTrail(pool, { workflowId: check.workflowId })).toHaveLength(1);

    async function tamper2() {
      await pool.query(
        `update feature_online set vals = '{98}' where name = 'person_count' and entity_id = 'p8'`,
      );
    }
  });

  it('refuses unknown and malformed features', async () => {
    await expect(run(['ghost'])).rejects.toMatchObject({
      cause: { cause: { type: 'NotFoundFailure', message: expect.stringContaining('"ghost"') } },
    });
    await expect(
      startConsistencyCheck(h.client, h.prefix, {
        features: ['Bad!'],
        requestedBy: 't',
        reason: 'r',
      }),
    ).rejects.toBeInstanceOf(InputError);
    await expect(
      startConsistencyCheck(h.client, h.prefix, { sample: 0, requestedBy: 't', reason: 'r' }),
    ).rejects.toThrow(/sample: .*\(got 0\)/);
  });

  it('names its workflow after the features, in any order', () => {
    expect(consistencyCheckWorkflowId([])).toBe('feature-check/all');
    expect(consistencyCheckWorkflowId(['b', 'a@2', 'b'])).toBe('feature-check/a@2,b');
    expect(sameValue(1, 1 + 1e-12)).toBe(true);
    expect(sameValue(1, 1.001)).toBe(false);
    expect(sameValue(0, null)).toBe(false);
  });
});

describe('pops features check', () => {
  beforeAll(seeded);
  const pops = popsRunner(() => ({
    DATABASE_URL: h.db.url,
    POPS_TASK_QUEUE_PREFIX: prefix,
    POPS_ACTOR: 'cli-tester',
  }));

  it('--wait prints the mismatches and exits 1 when there are some', async () => {
    const args = ['features', 'check', '--features', 'person_count', '--sample', '100', '--wait'];
    const json = await pops([...args, '--json']);
    expect(json.code).toBe(1);
    const out = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      workflowId: 'feature-check/person_count',
      result: { checked: 21, mismatches: 2 },
      mismatches: [
        { feature: 'person_count@2', entityId: 'p7', window: 'lifetime', online: 99, offline: 7 },
        { feature: 'person_count@2', entityId: 'p8', window: 'lifetime', online: 98, offline: 8 },
      ],
    });

    const human = await pops(args);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(
      'checked 21 entities of 1 feature version: 2 mismatching values',
    );
    expect(human.stdout).toMatch(/person_count@2 +p8 +lifetime +98 +8 /);
  });

  it('refuses a malformed feature or sample with exit 2, naming it', async () => {
    const bad = await pops(['features', 'check', '--features', 'ok,Bad!']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"Bad!"');
    const sample = await pops(['features', 'check', '--sample', 'many']);
    expect(sample.code).toBe(2);
    expect(sample.stderr).toContain(
      'sample: is not a sample size (a positive whole number) (got "many")',
    );
  });
});
