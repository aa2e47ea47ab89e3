import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simulateMovieLens } from '../domain/simulator.js';
import { importMovieLens } from '../ingest/movielens.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const SMALL = { users: 40, items: 60, ratingsPerUser: [5, 20] as const };

let db: TestDatabase;
let tmp: string;

beforeAll(async () => {
  db = await createTestDatabase('simulator');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pops-simulator-'));
});

afterAll(async () => {
  await db.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function files(dir: string): Promise<{ ratings: string; movies: string }> {
  return {
    ratings: await fs.readFile(path.join(dir, 'ratings.csv'), 'utf8'),
    movies: await fs.readFile(path.join(dir, 'movies.csv'), 'utf8'),
  };
}

/** Data rows of a CSV text (the header and the final newline left out). */
function dataRows(text: string): string[] {
  return text.trimEnd().split('\n').slice(1);
}

describe('the MovieLens simulator', () => {
  it('writes the same bytes for the same seed and different bytes for another', async () => {
    const first = path.join(tmp, 'seed-7-a');
    const second = path.join(tmp, 'seed-7-b');
    const other = path.join(tmp, 'seed-8');

    await simulateMovieLens(first, { ...SMALL, seed: 7 });
    await simulateMovieLens(second, { ...SMALL, seed: 7 });
    await simulateMovieLens(other, { ...SMALL, seed: 8 });

    expect(await files(second)).toEqual(await files(first));
    expect((await files(other)).ratings).not.toBe((await files(first)).ratings);
  });

  it('returns the row counts it wrote, within the requested ranges', async () => {
    const dir = path.join(tmp, 'counts');
    const start = new Date('2020-01-01T00:00:00Z');
    const end = new Date('2021-01-01T00:00:00Z');

    const result = await simulateMovieLens(dir, { ...SMALL, seed: 3, start, end });

    const { ratings, movies } = await files(dir);
    expect(dataRows(movies)).toHaveLength(result.movies);
    expect(dataRows(ratings)).toHaveLength(result.ratings);
    expect(result.movies).toBe(SMALL.items);
    const perUser = new Map<string, number>();
    for (const row of dataRows(ratings)) {
      const [user = '', , rating = '', ts = ''] = row.split(',');
      perUser.set(user, (perUser.get(user) ?? 0) + 1);
      expect(Number(rating)).toBeGreaterThanOrEqual(0.5);
      expect(Number(rating)).toBeLessThanOrEqual(5);
      expect(Number(ts) * 1000).toBeGreaterThanOrEqual(start.getTime());
      expect(Number(ts) * 1000).toBeLessThan(end.getTime());
    }
    expect(perUser.size).toBe(SMALL.users);
    for (const count of perUser.values()) {
      expect(count).toBeGreaterThanOrEqual(5);
      expect(count).toBeLessThanOrEqual(20);
    }
  });

  it('rejects options that make no sense, naming the option', async () => {
    const dir = path.join(tmp, 'invalid');

    const backwards = { ratingsPerUser: [10, 5] } as const;

    await expect(simulateMovieLens(dir, backwards)).rejects.toThrow(/ratingsPerUser/);
    await expect(simulateMovieLens(dir, { users: 0 })).rejects.toThrow(/users/);
  });

  it('writes files that importMovieLens accepts, with every row new', async () => {
    const dir = path.join(tmp, 'simulated');
    const written = await simulateMovieLens(dir);

    const imported = await importMovieLens(db.pool, dir);

    expect(imported.source).toBe('simulated');
    // Nobody was deleted: no rating is dropped.
    expect(imported.ratings).toEqual({
      read: written.ratings,
      inserted: written.ratings,
      dropped: 0,
    });
    expect(imported.movies).toEqual({ read: written.movies, inserted: written.movies });
    const { rows } = await db.pool.query<{ users: number; items: number }>(
      `select count(distinct person_id)::int as users, count(distinct item_id)::int as items
         from events where source = 'simulated'`,
    );
    expect(rows[0]?.users).toBe(300);
    expect(rows[0]?.items).toBeGreaterThan(200);
  });
});
