import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransaction } from '../common/db.js';
import { mulberry32 } from '../common/random.js';
import {
  type FeatureDefinition,
  featureDefinitionSchema,
  type FeatureDefinitionInput,
} from '../domain/features/definition.js';
import {
  buildPointInTimeSet,
  type PointInTimeFeature,
  type PointInTimeInput,
} from '../domain/features/point-in-time.js';
import { registerFeatures } from '../domain/features/registry.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const ORACLE = path.join(import.meta.dirname, 'fixtures/asof_oracle.py');
const DAY_US = 86_400 * 1e6;
const BASE_US = Date.UTC(2024, 0, 1) * 1000;
const LABELS = 'select row_id, ts, person_key, item_key, label from labels_src';

let db: TestDatabase;

const common = {
  version: 1,
  source: { events: { event: 'rated' } },
  owner: 'ml',
  description: 'point-in-time test feature',
  freshnessSla: '1d',
} as const;

function define(input: Omit<FeatureDefinitionInput, keyof typeof common>): FeatureDefinition {
  return featureDefinitionSchema.parse({ ...common, ...input });
}

const personCount = define({
  name: 'person_count',
  entity: 'person',
  aggregation: { fn: 'count' },
  windows: ['7d', 'lifetime'],
  type: 'int',
  default: 0,
  ttl: '3d',
});
const personMean = define({
  name: 'person_mean',
  entity: 'person',
  aggregation: { fn: 'mean', of: 'rating' },
  windows: ['30d'],
  type: 'float',
});
const itemPopularity = define({
  name: 'item_popularity',
  entity: 'item',
  aggregation: { fn: 'count' },
  windows: ['lifetime'],
  type: 'int',
  default: 0,
  ttl: '2d',
});
const pairLast = define({
  name: 'pair_last',
  entity: 'person_item',
  aggregation: { fn: 'last', of: 'rating' },
  windows: ['lifetime'],
  type: 'float',
  ttl: '36h',
});
const personDays = define({
  name: 'person_days',
  entity: 'person',
  aggregation: { fn: 'days_since_last' },
  windows: ['lifetime'],
  type: 'float',
  ttl: '10d',
});
const itemFlag = define({
  name: 'item_flag',
  entity: 'item',
  aggregation: { fn: 'last', of: 'flag' },
  windows: ['1d'],
  type: 'bool',
  default: true,
});
const DEFINITIONS = [personCount, personMean, itemPopularity, pairLast, personDays, itemFlag];

const REQUESTED: PointInTimeFeature[] = [
  { definition: personCount, window: '7d' },
  { definition: personMean, window: '30d' },
  { definition: itemPopularity, window: 'lifetime' },
  { definition: pairLast, window: 'lifetime' },
  { definition: personDays, window: 'lifetime' },
  { definition: personCount, window: 'lifetime' },
  { definition: itemFlag, window: '1d' },
];

interface Snapshot {
  name: string;
  version: number;
  entity_id: string;
  us: number;
  vals: Array<number | null>;
}

interface Label {
  row_id: number;
  us: number;
  person_key: string | null;
  item_key: string | null;
  label: number | null;
}

const PERSONS = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'];
const ITEMS = ['i0', 'i1', 'i2', 'i3'];

function entitiesOf(f: FeatureDefinition): string[] {
  if (f.entity === 'person') return PERSONS;
  if (f.entity === 'item') return ITEMS;
  return PERSONS.flatMap((p) => ITEMS.map((i) => `${p}|${i}`));
}

/** Snapshots on some days (mostly midnights, some at odd instants), some values null. */
function generateSnapshots(random: () => number): Snapshot[] {
  const out: Snapshot[] = [];
  for (const f of DEFINITIONS) {
    for (const entity of entitiesOf(f)) {
      for (let day = 0; day < 20; day += 1) {
        if (random() > 0.35) continue;
        const odd = random() < 0.15 ? Math.floor(random() * DAY_US) : 0;
        const vals = f.windows.map(() => {
          if (random() < 0.1) return null;
          if (f.type === 'bool') return random() < 0.5 ? 1 : 0;
          return f.type === 'int' ? Math.floor(random() * 50) : Math.round(random() * 1e6) / 1e3;
        });
        out.push({
          name: f.name,
          version: f.version,
          entity_id: entity,
          us: BASE_US + day * DAY_US + odd,
          vals,
        });
      }
    }
  }
  return out;
}

/**
 * Random label rows, plus rows at the edges: exactly at a snapshot, exactly at its TTL and one
 * microsecond past it, before any snapshot, repeated rows (same entities, same instant), and
 * entities the store has never seen or not at all.
 */
function generateLabels(random: () => number, snapshots: readonly Snapshot[]): Label[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const persons = [...PERSONS, 'p_unknown', null];
  const items = [...ITEMS, 'i_unknown', null];
  const out: Label[] = [];
  const add = (us: number, person: string | null, item: string | null) =>
    out.push({
      row_id: 1000 + out.length * 7,
      us,
      person_key: person,
      item_key: item,
      label: random() < 0.2 ? null : Math.floor(random() * 2),
    });
  for (let i = 0; i < 500; i += 1) {
    add(BASE_US - DAY_US + Math.floor(random() * 23 * DAY_US), pick(persons), pick(items));
  }
  for (let i = 0; i < 120; i += 1) {
    const s = pick(snapshots);
    const f = DEFINITIONS.find((d) => d.name === s.name) as FeatureDefinition;
    const [person, item] = s.entity_id.split('|');
    const keys: [string | null, string | null] =
      f.entity === 'person_item'
        ? [person ?? null, item ?? null]
        : f.entity === 'person'
          ? [s.entity_id, pick(items)]
          : [pick(persons), s.entity_id];
    const ttl = (f.ttl ?? 86_400) * 1e6;
    for (const us of [s.us, s.us - 1, s.us + ttl, s.us + ttl + 1]) add(us, ...keys);
  }
  const repeated = out.slice(0, 40);
  for (const r of repeated) add(r.us, r.person_key, r.item_key);
  add(BASE_US - 5 * DAY_US, 'p0', 'i0');
  return out;
}

async function insertSnapshots(snapshots: readonly Snapshot[]): Promise<void> {
  await db.pool.query(
    `insert into feature_values (name, version, ts, entity_id, vals)
     select name, version, timestamptz 'epoch' + us * interval '1 microsecond', entity_id, vals
       from jsonb_to_recordset($1::jsonb)
            as r(name text, version int, us bigint, entity_id text, vals float8[])`,
    [JSON.stringify(snapshots)],
  );
}

async function insertLabels(labels: readonly Label[]): Promise<void> {
  await db.pool.query(
    `insert into labels_src (row_id, ts, person_key, item_key, label)
     select row_id, timestamptz 'epoch' + us * interval '1 microsecond', person_key, item_key, label
       from jsonb_to_recordset($1::jsonb)
            as r(row_id bigint, us bigint, person_key text, item_key text, label float8)`,
    [JSON.stringify(labels)],
  );
}

/** What DuckDB's ASOF JOIN gives for every label row, read back from the database. */
async function oracle(features: readonly PointInTimeFeature[], asOf?: Date) {
  const labels = await db.pool.query(
    `select row_id, (extract(epoch from ts) * 1000000)::bigint as us, person_key, item_key
       from labels_src`,
  );
  const snapshots = await db.pool.query(
    `select name, version, entity_id, (extract(epoch from ts) * 1000000)::bigint as us, vals
       from feature_values`,
  );
  const input = {
    labels: labels.rows,
    snapshots: snapshots.rows,
    features: features.map(({ definition: f, window }) => ({
      name: f.name,
      version: f.version,
      entity: f.entity,
      index: f.windows.indexOf(window) + 1,
      ttl: f.ttl ?? null,
      default: f.default === null ? null : Number(f.default),
      aging: f.aggregation.fn === 'days_since_last',
    })),
    as_of_us: asOf ? asOf.getTime() * 1000 : null,
  };
  const out = execFileSync('python3', [ORACLE], {
    input: JSON.stringify(input),
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out.toString()) as Record<string, Array<number | null>>;
}

async function build(input: Omit<PointInTimeInput, 'labels'> & { labels?: string }) {
  return withTransaction(db.pool, (client) =>
    buildPointInTimeSet(client, { labels: LABELS, ...input }),
  );
}

interface SetRow {
  row_id: number;
  ts: Date;
  person_key: string | null;
  item_key: string | null;
  label: number | null;
  vals: Array<number | null>;
}

async function setRows(setKey: string): Promise<SetRow[]> {
  const { rows } = await db.pool.query<SetRow>(
    `select row_id, ts, person_key, item_key, label, vals from pit_set_rows
      where set_key = $1 order by row_id`,
    [setKey],
  );
  return rows;
}

/** Every row and value that differs from the oracle (values to 1e-9, relative). */
function differences(rows: readonly SetRow[], expected: Record<string, Array<number | null>>) {
  const out: string[] = [];
  for (const row of rows) {
    const want = expected[String(row.row_id)];
    if (!want) out.push(`row ${row.row_id}: not in the oracle`);
    want?.forEach((w, i) => {
      const got = row.vals[i] ?? null;
      const same =
        got === null || w === null
          ? got === w
          : Math.abs(got - w) <= 1e-9 * Math.max(1, Math.abs(w));
      if (!same) out.push(`row ${row.row_id} feature ${i}: got ${got}, DuckDB ${w}`);
    });
  }
  return out;
}

beforeAll(async () => {
  db = await createTestDatabase('point-in-time');
  await registerFeatures(db.pool, DEFINITIONS, 'pit-tester');
  await db.pool.query(
    `create table labels_src (row_id bigint, ts timestamptz, person_key text, item_key text,
                              label double precision)`,
  );
  const random = mulberry32(20240101);
  const snapshots = generateSnapshots(random);
  await insertSnapshots(snapshots);
  await insertLabels(generateLabels(random, snapshots));
});
afterAll(async () => {
  await db.close();
});

describe('point-in-time sets', () => {
  it('match DuckDB ASOF JOIN on every row: ties, gaps, TTL edges, exact instants, unknown entities, defaults, aging', async () => {
    const { rows } = await build({ setKey: 'all', features: REQUESTED });
    const labels = await db.pool.query<{ row_id: number; ts: Date; label: number | null }>(
      'select row_id, ts, label from labels_src order by row_id',
    );
    expect(rows).toBe(labels.rowCount);
    expect(rows).toBeGreaterThan(1000);
    const written = await setRows('all');
    expect(written.map((r) => [r.row_id, r.ts, r.label])).toEqual(
      labels.rows.map((r) => [r.row_id, r.ts, r.label]),
    );
    expect(written.every((r) => r.vals.length === REQUESTED.length)).toBe(true);
    expect(differences(written, await oracle(REQUESTED))).toEqual([]);
    // The data reach every case: defaults, expiry, aged values and real values all occur.
    const flat = written.flatMap((r) => r.vals);
    expect(flat.filter((v) => v === null).length).toBeGreaterThan(50);
    expect(written.filter((r) => r.vals[0] === 0).length).toBeGreaterThan(50);
  });

  it('cap every read at asOf, and match DuckDB there too', async () => {
    const asOf = new Date(BASE_US / 1000 + 9.5 * 86_400_000);
    await build({ setKey: 'as-of', features: REQUESTED, asOf });
    const written = await setRows('as-of');
    expect(differences(written, await oracle(REQUESTED, asOf))).toEqual([]);
    await build({ setKey: 'not-capped', features: REQUESTED });
    const uncapped = await setRows('not-capped');
    const changed = written.filter(
      (r, i) => JSON.stringify(r.vals) !== JSON.stringify(uncapped[i]?.vals),
    );
    expect(changed.length).toBeGreaterThan(100);
    // Rows at or before asOf read as they would without it (compared in the database: to the
    // microsecond, which JavaScript dates do not hold).
    const capped = await db.pool.query<{ row_id: number }>(
      'select row_id from labels_src where ts > $1',
      [asOf],
    );
    const cappedIds = new Set(capped.rows.map((r) => r.row_id));
    expect(changed.filter((r) => !cappedIds.has(r.row_id))).toEqual([]);
  });

  it('work out a small case by hand: inclusive instants, TTL to the microsecond, aging, defaults', async () => {
    await db.pool.query(
      `insert into feature_values (name, version, ts, entity_id, vals) values
         ('person_days', 1, '2024-03-03T00:00:00Z', 'w0', '{2}'),
         ('person_count', 1, '2024-03-03T00:00:00Z', 'w0', '{5,9}'),
         ('person_count', 1, '2024-03-05T00:00:00Z', 'w0', '{null,11}')`,
    );
    const labels = `select * from (values
        (1::bigint, timestamptz '2024-03-02T23:59:59.999999Z', 'w0'),
        (2, '2024-03-03T00:00:00Z', 'w0'),
        (3, '2024-03-04T12:00:00Z', 'w0'),
        (4, '2024-03-04T12:00:00Z', 'w0'),
        (5, '2024-03-05T00:00:00Z', 'w0'),
        (6, '2024-03-08T00:00:00Z', 'w0'),
        (7, '2024-03-08T00:00:00.000001Z', 'w0'),
        (8, '2024-03-13T00:00:00Z', 'w0'),
        (9, '2024-03-13T00:00:00.000001Z', 'w0'),
        (10, '2024-03-04T00:00:00Z', 'nobody')) as l(row_id, ts, person_key)`;
    const features = [
      { definition: personDays, window: 'lifetime' },
      { definition: personCount, window: '7d' },
      { definition: personCount, window: 'lifetime' },
    ];
    expect(await build({ setKey: 'by-hand', labels, features })).toEqual({ rows: 10 });
    const written = await setRows('by-hand');
    expect(written.map((r) => [r.row_id, ...r.vals])).toEqual([
      [1, null, 0, 0],
      [2, 2, 5, 9],
      [3, 3.5, 5, 9],
      [4, 3.5, 5, 9],
      [5, 4, 0, 11],
      [6, 7, 0, 11],
      [7, 2 + 432_000.000001 / 86_400, 0, 0],
      [8, 12, 0, 0],
      [9, null, 0, 0],
      [10, null, 0, 0],
    ]);
  });

  it('keep a snapshot exactly one TTL before the earliest label (it is still fresh there)', async () => {
    const labels = `select 1::bigint as row_id, timestamptz '2024-03-08T00:00:00Z' as ts,
                           'w0' as person_key`;
    const features = [{ definition: personCount, window: 'lifetime' }];
    await build({ setKey: 'earliest', labels, features });
    expect((await setRows('earliest')).map((r) => r.vals)).toEqual([[11]]);
  });

  it('refuse a labels query whose ts has no time zone, naming the column', async () => {
    const naive = `select row_id, ts::timestamp as ts, person_key, item_key from labels_src`;
    await expect(build({ setKey: 'naive', labels: naive, features: REQUESTED })).rejects.toThrow(
      "labels column ts is timestamp without time zone, not timestamp with time zone (say its zone: ts at time zone 'UTC')",
    );
    const textIds = 'select row_id::text as row_id, ts, person_key, item_key from labels_src';
    await expect(
      build({ setKey: 'text-ids', labels: textIds, features: REQUESTED }),
    ).rejects.toThrow('labels column row_id is text, not an integer');
    const missing = 'select row_id, ts, item_key from labels_src';
    await expect(
      build({ setKey: 'no-person', labels: missing, features: REQUESTED }),
    ).rejects.toThrow('labels query has no person_key column');
    expect(await setRows('naive')).toEqual([]);
  });

  it('refuse a window the definition does not have, naming it and the windows it has', async () => {
    const features = [{ definition: personCount, window: '30d' }];
    await expect(build({ setKey: 'bad-window', features })).rejects.toThrow(
      'feature person_count@1 has no window "30d" (its windows: 7d, lifetime)',
    );
  });

  it('refuse a set written before, and a labels query that repeats a row_id', async () => {
    await expect(build({ setKey: 'all', features: REQUESTED })).rejects.toThrow(
      'point-in-time set "all" is already written',
    );
    const twice = `${LABELS} union all (select row_id, ts, person_key, item_key, label from labels_src limit 1)`;
    await expect(build({ setKey: 'twice', features: REQUESTED, labels: twice })).rejects.toThrow(
      'labels query returns a row_id twice',
    );
    expect(await setRows('twice')).toEqual([]);
  });
});
