import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransaction } from '../common/db.js';
import {
  FEATURES,
  loadExamples,
  materializeExamples,
  type TimeRange,
} from '../domain/training-set.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;

interface Rating {
  id: number;
  person: string;
  item: string;
  ts: number; // unix seconds
  rating: number;
}

const GENRES: Record<string, string[]> = {
  i1: ['Action', 'Comedy'],
  i2: ['Comedy'],
  i3: ['Drama'],
  i4: [],
  i5: ['Action', 'Drama', 'Comedy'],
};

async function seed(source: string, ratings: Rating[]): Promise<void> {
  for (const [item, genres] of Object.entries(GENRES)) {
    await db.pool.query('insert into items (source, item_id, genres) values ($1, $2, $3)', [
      source,
      item,
      genres,
    ]);
  }
  for (const r of ratings) {
    await db.pool.query(
      `insert into events (id, message_id, source, type, event, person_id, user_id, item_id, ts, properties)
       values ($1, $2, $3, 'track', 'rated', $4, $4, $5, to_timestamp($6), jsonb_build_object('rating', $7::real))`,
      [r.id, `${source}:${r.id}`, source, r.person, r.item, r.ts, r.rating],
    );
  }
  // A later event of another type and another source must never count.
  await db.pool.query(
    `insert into events (message_id, source, type, event, person_id, item_id, ts, properties)
     values ($1, $2, 'track', 'viewed', 'u1', 'i1', to_timestamp(1), '{}'),
            ($3, 'elsewhere', 'track', 'rated', 'u1', 'i1', to_timestamp(1), '{"rating": 5}')`,
    [`${source}:view`, source, `${source}:other`],
  );
}

/** The features of one rating from the ratings strictly before it: an independent reference. */
function reference(all: Rating[], r: Rating): number[] {
  const before = all.filter((o) => o.ts < r.ts);
  const mine = before.filter((o) => o.person === r.person);
  const theirs = before.filter((o) => o.item === r.item);
  const smooth = (sum: number, n: number, prior: number) => (sum + 5 * prior) / (n + 5);
  const sum = (xs: Rating[]) => xs.reduce((s, o) => s + o.rating, 0);
  const positives = (xs: Rating[]) => xs.filter((o) => o.rating >= 4).length;
  const lastTs = Math.max(...mine.map((o) => o.ts));
  const firstTs = Math.min(...theirs.map((o) => o.ts));
  const genres = GENRES[r.item] ?? [];
  let genreN = 0;
  let genreSum = 0;
  for (const o of mine) {
    const shared = (GENRES[o.item] ?? []).filter((g) => genres.includes(g)).length;
    genreN += shared;
    genreSum += shared * o.rating;
  }
  return [
    Math.log(1 + mine.length),
    smooth(sum(mine), mine.length, 3.5),
    smooth(positives(mine), mine.length, 0.5),
    mine.length > 0 ? Math.log(1 + (r.ts - lastTs) / 86400) : 0,
    Math.log(1 + theirs.length),
    smooth(sum(theirs), theirs.length, 3.5),
    smooth(positives(theirs), theirs.length, 0.5),
    theirs.length > 0 ? Math.log(1 + (r.ts - firstTs) / 86400) : 0,
    smooth(genreSum, genreN, 3.5),
    Math.log(1 + genreN),
  ];
}

async function build(setKey: string, source: string, range: TimeRange) {
  await db.pool.query(
    `insert into models (name, source, created_by) values ($1, $2, 'test') on conflict do nothing`,
    [source, source],
  );
  await db.pool.query(
    `insert into training_sets (set_key, model, source, train_from, train_until, validate_until, features,
       train_rows, validate_rows) values ($1, $2, $2, $3, $4, $5, $6, 0, 0)`,
    [setKey, source, range.trainFrom, range.trainUntil, range.validateUntil, FEATURES],
  );
  return withTransaction(db.pool, (client) => materializeExamples(client, setKey, source, range));
}

beforeAll(async () => {
  db = await createTestDatabase('training_set');
});
afterAll(async () => {
  await db.close();
});

describe('point-in-time training sets', () => {
  it('gives each rating only what was known strictly before it, ties included', async () => {
    const day = 86400;
    // u1 rates i1 and i2 at the same instant: neither may see the other.
    const ratings: Rating[] = [
      { id: 101, person: 'u1', item: 'i1', ts: 10 * day, rating: 5 },
      { id: 102, person: 'u1', item: 'i2', ts: 10 * day, rating: 2 },
      { id: 103, person: 'u2', item: 'i1', ts: 11 * day, rating: 4 },
      { id: 104, person: 'u1', item: 'i5', ts: 12 * day, rating: 3.5 },
      { id: 105, person: 'u2', item: 'i2', ts: 13 * day, rating: 1 },
      { id: 106, person: 'u1', item: 'i1', ts: 14 * day, rating: 4.5 },
    ];
    await seed('tiny', ratings);
    const counts = await build('tiny-set', 'tiny', {
      trainFrom: new Date(10 * day * 1000),
      trainUntil: new Date(13 * day * 1000),
      validateUntil: new Date(14 * day * 1000),
    });
    expect(counts).toEqual({ train: 4, validate: 2 });
    const train = await loadExamples(db.pool, 'tiny-set', 'train');
    // Rating 1 and 2 (tied, first for u1): no history at all.
    expect(Array.from(train.x.subarray(0, 4))).toEqual([0, 3.5, 0.5, 0]);
    // Rating 4 (u1, i5 at day 12): u1 had 2 ratings (5 and 2), the last 2 days before.
    const row4 = Array.from(train.x.subarray(3 * FEATURES.length, 4 * FEATURES.length));
    expect(row4[0]).toBeCloseTo(Math.log(3), 6);
    expect(row4[1]).toBeCloseTo((7 + 17.5) / 7, 6);
    expect(row4[2]).toBeCloseTo((1 + 2.5) / 7, 6);
    expect(row4[3]).toBeCloseTo(Math.log(3), 6);
    // i5 is Action|Drama|Comedy: u1's i1 (Action, Comedy: 2 shared) and i2 (Comedy: 1 shared).
    expect(row4[8]).toBeCloseTo((2 * 5 + 1 * 2 + 17.5) / (3 + 5), 5);
    expect(row4[9]).toBeCloseTo(Math.log(4), 6);
    expect(Array.from(train.y)).toEqual([1, 0, 1, 0]);
  });

  it('equals a row-by-row reference on random data with many ties', async () => {
    let state = 12345;
    const rand = () => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state / 2 ** 31;
    };
    const persons = ['a', 'b', 'c', 'd', 'e', 'f'];
    const items = Object.keys(GENRES);
    const ratings: Rating[] = Array.from({ length: 400 }, (_, i) => ({
      id: 1000 + i,
      person: persons[Math.floor(rand() * persons.length)] ?? 'a',
      item: items[Math.floor(rand() * items.length)] ?? 'i1',
      ts: 86400 * 100 + Math.floor(rand() * 60) * 3600, // 60 distinct instants: ties everywhere
      rating: 0.5 + Math.floor(rand() * 10) / 2,
    }));
    await seed('random', ratings);
    const tsSorted = ratings.map((r) => r.ts).sort((a, b) => a - b);
    const range = {
      trainFrom: new Date((tsSorted[0] ?? 0) * 1000),
      trainUntil: new Date((86400 * 100 + 40 * 3600) * 1000),
      validateUntil: new Date((tsSorted.at(-1) ?? 0) * 1000),
    };
    const counts = await build('random-set', 'random', range);
    expect(counts.train + counts.validate).toBe(ratings.length);
    const rows = await db.pool.query<{ event_id: number; features: number[]; split: string }>(
      `select event_id, features, split from training_examples where set_key = 'random-set'`,
    );
    expect(rows.rows).toHaveLength(ratings.length);
    const byId = new Map(ratings.map((r) => [r.id, r]));
    for (const row of rows.rows) {
      const r = byId.get(row.event_id);
      if (!r) throw new Error(`unexpected event ${row.event_id}`);
      expect(row.split).toBe(r.ts * 1000 < range.trainUntil.getTime() ? 'train' : 'validate');
      const want = reference(ratings, r);
      row.features.forEach((v, j) =>
        expect(v, `event ${r.id} feature ${FEATURES[j]}`).toBeCloseTo(want[j] ?? NaN, 4),
      );
    }
  });
});
