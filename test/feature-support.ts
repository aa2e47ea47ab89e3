/**
 * Feature-store test support: generated `rated` events, and an oracle that computes every feature's
 * value at a day's end straight from those events in plain TypeScript (no tiles, no SQL), to check
 * the store against.
 */
import type { Pool } from '../common/db.js';
import {
  featureDefinitionSchema,
  type FeatureDefinition,
  type FeatureDefinitionInput,
} from '../domain/features/definition.js';

export interface RatedEvent {
  messageId: string;
  person: string;
  item: string;
  ts: Date;
  /** A number, or (rarely) a string the numeric aggregations must leave out. */
  rating: number | string;
  genre: string;
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DAY = 86_400_000;
export const GENRES = ['drama', 'comedy', 'action', 'horror'];

/**
 * `n` events over `days` days from `start` (UTC midnight), by `persons` people on `items` items,
 * bursty (people have active days), with a few equal timestamps, a few events exactly at midnight,
 * and about one in fifty ratings a string.
 */
export function generateEvents(
  seed: number,
  n: number,
  opts: { start: string; days: number; persons: number; items: number },
): RatedEvent[] {
  const rnd = prng(seed);
  const start = Date.parse(`${opts.start}T00:00:00Z`);
  const out: RatedEvent[] = [];
  for (let i = 0; i < n; i++) {
    const person = `u${Math.floor(rnd() ** 1.5 * opts.persons)}`;
    const day = Math.floor(rnd() * opts.days);
    const r = rnd();
    const offset = r < 0.05 ? 0 : r < 0.1 ? 12 * 3600_000 : Math.floor(rnd() * DAY);
    const ts = new Date(start + day * DAY + offset);
    const rating = rnd() < 0.02 ? '4' : Math.ceil(rnd() * 10) / 2;
    out.push({
      messageId: `m${seed}-${i}`,
      person,
      item: `i${Math.floor(rnd() * opts.items)}`,
      ts,
      rating,
      genre: GENRES[Math.floor(rnd() * GENRES.length)] as string,
    });
  }
  return out;
}

/** Inserts the events (source `test`, track `rated`); `receivedAt` defaults to now. */
export async function insertEvents(pool: Pool, events: RatedEvent[], receivedAt?: Date) {
  const chunk = 2000;
  for (let i = 0; i < events.length; i += chunk) {
    const part = events.slice(i, i + chunk);
    await pool.query(
      `insert into events (message_id, source, type, event, person_id, item_id, ts, properties,
                           received_at)
       select m, 'test', 'track', 'rated', p, it, ts, props, coalesce($7, now())
         from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])
              as u(m, p, it, ts, props)
        cross join (select $6::int) _`,
      [
        part.map((e) => e.messageId),
        part.map((e) => e.person),
        part.map((e) => e.item),
        part.map((e) => e.ts.toISOString()),
        part.map((e) => JSON.stringify({ rating: e.rating, genre: e.genre })),
        0,
        receivedAt ?? null,
      ],
    );
  }
}

const base = {
  source: { events: { event: 'rated' } },
  owner: 'tests',
  description: 'a test feature',
  freshnessSla: '1d',
};

/** One feature of each aggregation, over several windows, on all three entities. */
export const TEST_FEATURES: FeatureDefinitionInput[] = [
  {
    ...base,
    name: 'p_count',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'count' },
    windows: ['1d', '7d', 'lifetime'],
    type: 'int',
    default: 0,
  },
  {
    ...base,
    name: 'p_sum',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'sum', of: 'rating' },
    windows: ['7d'],
    type: 'float',
  },
  {
    ...base,
    name: 'p_mean',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'mean', of: 'rating' },
    windows: ['3d', 'lifetime'],
    type: 'float',
  },
  {
    ...base,
    name: 'p_genres',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'distinct_count', of: 'genre' },
    windows: ['7d', 'lifetime'],
    type: 'int',
  },
  {
    ...base,
    name: 'p_last',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'last', of: 'rating' },
    windows: ['2d', 'lifetime'],
    type: 'float',
  },
  {
    ...base,
    name: 'p_positive',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'ratio', where: { of: 'rating', op: 'gte', value: 4 } },
    windows: ['7d'],
    type: 'float',
  },
  {
    ...base,
    name: 'p_since',
    version: 1,
    entity: 'person',
    aggregation: { fn: 'days_since_last' },
    windows: ['5d', 'lifetime'],
    type: 'float',
  },
  {
    ...base,
    name: 'i_count',
    version: 1,
    entity: 'item',
    aggregation: { fn: 'count' },
    windows: ['7d'],
    type: 'int',
  },
  {
    ...base,
    name: 'pi_count',
    version: 1,
    entity: 'person_item',
    aggregation: { fn: 'count' },
    windows: ['lifetime'],
    type: 'int',
  },
];

export function testDefinitions(): FeatureDefinition[] {
  return TEST_FEATURES.map((f) => featureDefinitionSchema.parse(f));
}

/** The entity key of an event, as the store spells it (no identity merges in these tests). */
export function keyOf(f: FeatureDefinition, e: RatedEvent): string {
  const person = `unresolved:${e.person}`;
  return f.entity === 'person' ? person : f.entity === 'item' ? e.item : `${person}|${e.item}`;
}

/**
 * The value of f's window at the end of `day` for `key`, from the events themselves: the events
 * with ts in [end - w days, end), end = the next midnight. null when the window has no rows.
 */
export function expectedValue(
  f: FeatureDefinition,
  windowIndex: number,
  events: RatedEvent[],
  key: string,
  day: string,
): number | null {
  const end = Date.parse(`${day}T00:00:00Z`) + DAY;
  const w = f.windows[windowIndex] as string;
  const begin = w === 'lifetime' ? -Infinity : end - Number(w.slice(0, -1)) * DAY;
  let rows = events.filter(
    (e) => keyOf(f, e) === key && e.ts.getTime() >= begin && e.ts.getTime() < end,
  );
  const agg = f.aggregation;
  const numeric = (e: RatedEvent) => (typeof e.rating === 'number' ? e.rating : null);
  if (agg.fn === 'sum' || agg.fn === 'mean' || agg.fn === 'last') {
    rows = rows.filter((e) => numeric(e) !== null);
  }
  if (rows.length === 0) return null;
  switch (agg.fn) {
    case 'count':
      return rows.length;
    case 'sum':
      return rows.reduce((s, e) => s + (numeric(e) as number), 0);
    case 'mean':
      return rows.reduce((s, e) => s + (numeric(e) as number), 0) / rows.length;
    case 'distinct_count':
      return new Set(rows.map((e) => e.genre)).size;
    case 'last': {
      // The latest event; equal times: the later message id inserted (the higher event id).
      const last = rows.reduce((a, b) => (b.ts.getTime() >= a.ts.getTime() ? b : a));
      return numeric(last);
    }
    case 'ratio':
      return rows.filter((e) => typeof e.rating === 'number' && e.rating >= 4).length / rows.length;
    case 'days_since_last':
      return (end - Math.max(...rows.map((e) => e.ts.getTime()))) / DAY;
  }
}

/** The days from `from` to `to`, inclusive. */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += DAY) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

/** Every stored value row of a feature version, as `ts|entity → vals`. */
export async function storedValues(pool: Pool, f: { name: string; version: number }) {
  const { rows } = await pool.query<{ ts: Date; entity_id: string; vals: Array<number | null> }>(
    `select ts, entity_id, vals from feature_values where name = $1 and version = $2
      order by entity_id, ts`,
    [f.name, f.version],
  );
  return rows;
}

/** The whole feature store, ordered, for comparing two runs. */
export async function storeTables(pool: Pool) {
  const q = async (sql: string): Promise<Array<Record<string, unknown>>> =>
    (await pool.query<Record<string, unknown>>(sql)).rows;
  return {
    tiles: await q(
      `select name, version, day::text, entity_id, n, total, hits, last_ts, last_value,
              distinct_values from feature_tiles order by 1, 2, 3, 4`,
    ),
    values: await q(
      'select name, version, ts, entity_id, vals from feature_values order by 1, 2, 3, 4',
    ),
    online: await q(
      'select name, version, entity_id, ts, vals from feature_online order by 1, 2, 3',
    ),
    partitions: await q(
      `select name, version, day::text, tile_rows, value_rows, quality_status
         from feature_partitions order by 1, 2, 3`,
    ),
  };
}
