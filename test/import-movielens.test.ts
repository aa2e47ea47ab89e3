import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportError, type ImportProgress, importMovieLens } from '../ingest/movielens.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const MOVIELENS_SMALL = '/work/shared/data/movielens-small';

const RATINGS = [
  'userId,movieId,rating,timestamp',
  '1,10,4.0,964982703',
  '1,20,3.5,964981247',
  '2,10,0.5,0',
  '',
].join('\n');

const MOVIES = [
  'movieId,title,genres',
  '10,"American President, The (1995)",Comedy|Drama|Romance',
  '20,Unknown Film (2017),(no genres listed)',
  '',
].join('\n');

let db: TestDatabase;
let tmp: string;

beforeAll(async () => {
  db = await createTestDatabase('import-movielens');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pops-movielens-'));
});

afterAll(async () => {
  await db.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Writes the files into a new directory named `name` under the test's temp folder. */
async function fixture(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(tmp, name);
  await fs.mkdir(dir);
  for (const [file, text] of Object.entries(files)) await fs.writeFile(path.join(dir, file), text);
  return dir;
}

async function tableCounts(): Promise<{ events: number; items: number }> {
  const { rows } = await db.pool.query<{ events: number; items: number }>(
    `select (select count(*) from events)::int as events,
            (select count(*) from items)::int as items`,
  );
  const counts = rows[0];
  if (!counts) throw new Error('count query returned no row');
  return counts;
}

/** Runs the import and returns the ImportError it must throw. */
async function importError(dir: string, source: string): Promise<ImportError> {
  const error = await importMovieLens(db.pool, dir, { source }).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ImportError);
  return error as ImportError;
}

describe('importing a MovieLens directory', () => {
  it('turns each rating into a rated event and each movie into an item', async () => {
    const dir = await fixture('tiny-lens', { 'ratings.csv': RATINGS, 'movies.csv': MOVIES });

    const result = await importMovieLens(db.pool, dir);

    expect(result.source).toBe('tiny-lens');
    expect(result.ratings).toEqual({ read: 3, inserted: 3, dropped: 0 });
    expect(result.movies).toEqual({ read: 2, inserted: 2 });
    const events = await db.pool.query(
      `select message_id, source, type, event, person_id, user_id, anonymous_id, previous_id,
              item_id, ts, properties, traits, context
         from events where source = 'tiny-lens' order by message_id`,
    );
    const rated = { source: 'tiny-lens', type: 'track', event: 'rated', anonymous_id: null };
    const empty = { previous_id: null, traits: null, context: null };
    expect(events.rows).toEqual([
      {
        ...rated,
        ...empty,
        message_id: 'tiny-lens:rating:1:10',
        person_id: '1',
        user_id: '1',
        item_id: '10',
        ts: new Date('2000-07-30T18:45:03Z'),
        properties: { rating: 4 },
      },
      {
        ...rated,
        ...empty,
        message_id: 'tiny-lens:rating:1:20',
        person_id: '1',
        user_id: '1',
        item_id: '20',
        ts: new Date('2000-07-30T18:20:47Z'),
        properties: { rating: 3.5 },
      },
      {
        ...rated,
        ...empty,
        message_id: 'tiny-lens:rating:2:10',
        person_id: '2',
        user_id: '2',
        item_id: '10',
        ts: new Date('1970-01-01T00:00:00Z'),
        properties: { rating: 0.5 },
      },
    ]);
    const items = await db.pool.query(
      `select source, item_id, title, genres
         from items where source = 'tiny-lens' order by item_id`,
    );
    expect(items.rows).toEqual([
      {
        source: 'tiny-lens',
        item_id: '10',
        title: 'American President, The (1995)',
        genres: ['Comedy', 'Drama', 'Romance'],
      },
      { source: 'tiny-lens', item_id: '20', title: 'Unknown Film (2017)', genres: [] },
    ]);
  });

  it('adds nothing when the same directory is imported again', async () => {
    const dir = await fixture('again', { 'ratings.csv': RATINGS, 'movies.csv': MOVIES });
    await importMovieLens(db.pool, dir);
    const before = await tableCounts();

    const again = await importMovieLens(db.pool, dir);

    expect(again.ratings).toEqual({ read: 3, inserted: 0, dropped: 0 });
    expect(again.movies).toEqual({ read: 2, inserted: 0 });
    expect(await tableCounts()).toEqual(before);
  });

  it('imports ratings alone when movies.csv is absent, under the given source', async () => {
    const dir = await fixture('ratings-only', { 'ratings.csv': RATINGS });

    const result = await importMovieLens(db.pool, dir, { source: 'only' });

    expect(result.ratings).toEqual({ read: 3, inserted: 3, dropped: 0 });
    expect(result.movies).toEqual({ read: 0, inserted: 0 });
  });

  it('reports progress with the final row count and every byte read', async () => {
    const dir = await fixture('progress', { 'ratings.csv': RATINGS, 'movies.csv': MOVIES });
    const reports: ImportProgress[] = [];

    await importMovieLens(db.pool, dir, { onProgress: (p) => reports.push(p) });

    const size = Buffer.byteLength(RATINGS) + Buffer.byteLength(MOVIES);
    expect(reports.at(-1)).toEqual({ rows: 5, bytes: size, totalBytes: size });
  });
});

describe('a malformed MovieLens directory', () => {
  it('names file, line and field of a bad rating after good rows, and keeps nothing', async () => {
    const ratings = `${RATINGS}3,10,abc,964982703\n`;
    const dir = await fixture('bad-rating', { 'ratings.csv': ratings, 'movies.csv': MOVIES });
    const before = await tableCounts();

    const error = await importError(dir, 'bad-rating');

    expect(error.message).toBe(
      'ratings.csv line 5: field "rating": "abc" is not a number between 0.5 and 5',
    );
    const file = path.join(dir, 'ratings.csv');
    expect(error).toMatchObject({ file, line: 5, field: 'rating', value: 'abc' });
    expect(await tableCounts()).toEqual(before);
  });

  it('rejects a rating outside 0.5 to 5', async () => {
    const dir = await fixture('high-rating', { 'ratings.csv': `${RATINGS}3,10,5.5,964982703\n` });

    const error = await importError(dir, 'high-rating');

    expect(error).toMatchObject({ line: 5, field: 'rating', value: '5.5' });
  });

  it('names a timestamp that is not unix seconds', async () => {
    const ratings = RATINGS.replace('1,20,3.5,964981247', '1,20,3.5,2000-07-30');
    const dir = await fixture('bad-timestamp', { 'ratings.csv': ratings });
    const before = await tableCounts();

    const error = await importError(dir, 'bad-timestamp');

    expect(error.message).toBe(
      'ratings.csv line 3: field "timestamp": "2000-07-30" is not a whole number of unix seconds',
    );
    expect(await tableCounts()).toEqual(before);
  });

  it('names a column missing from the header', async () => {
    const ratings = 'userId,movieId,timestamp\n1,10,964982703\n';
    const dir = await fixture('no-rating-column', { 'ratings.csv': ratings });

    const error = await importError(dir, 'no-rating-column');

    expect(error).toMatchObject({ line: 1, field: 'rating' });
    expect(error.message).toMatch(/^ratings\.csv line 1: field "rating" is missing from the/);
  });

  it('ignores extra columns in the header but rejects a row with an extra field', async () => {
    const ratings = 'userId,movieId,rating,timestamp,note\n1,10,4.0,964982703,x\n1,20,3.5,1,y,z\n';
    const dir = await fixture('extra-columns', { 'ratings.csv': ratings });

    const error = await importError(dir, 'extra-columns');

    expect(error).toMatchObject({ line: 3, field: 'column 6', value: 'z' });
  });

  it('counts the lines of a quoted title that spans two, and keeps no movie', async () => {
    const movies = [
      'movieId,title,genres',
      '30,"A Title',
      'On Two Lines (1999)",Drama',
      '0,Zero (2000),Drama',
    ].join('\n');
    const dir = await fixture('bad-movie', { 'ratings.csv': RATINGS, 'movies.csv': movies });
    const before = await tableCounts();

    const error = await importError(dir, 'bad-movie');

    expect(error.message).toBe('movies.csv line 4: field "movieId": "0" is not a positive integer');
    expect(await tableCounts()).toEqual(before);
  });

  it('keeps the movies of an import whose ratings fail out of items', async () => {
    const dir = await fixture('movies-then-bad', {
      'movies.csv': MOVIES,
      'ratings.csv': `${RATINGS}x,10,4,1\n`,
    });

    const error = await importError(dir, 'movies-then-bad');

    expect(error).toMatchObject({ line: 5, field: 'userId', value: 'x' });
    const kept = await db.pool.query(
      `select count(*)::int as n from items where source = $1::text`,
      ['movies-then-bad'],
    );
    expect(kept.rows[0]).toEqual({ n: 0 });
  });

  it('says which path is missing when there is no ratings.csv', async () => {
    const dir = await fixture('empty-dir', {});

    await expect(importMovieLens(db.pool, dir)).rejects.toThrow(path.join(dir, 'ratings.csv'));
  });

  it('turns a CSV syntax error into an ImportError with its line', async () => {
    const dir = await fixture('open-quote', { 'ratings.csv': `${RATINGS}4,"10,4.0,1\n` });

    const error = await importError(dir, 'open-quote');

    expect(error.line).toBeGreaterThanOrEqual(5);
    expect(error.message).toMatch(/^ratings\.csv line \d+: .*not valid CSV/);
  });
});

describe('the MovieLens latest-small data set', () => {
  it('imports all 100,836 ratings and 9,742 movies', async () => {
    const result = await importMovieLens(db.pool, MOVIELENS_SMALL);

    expect(result.source).toBe('movielens-small');
    expect(result.ratings).toEqual({ read: 100_836, inserted: 100_836, dropped: 0 });
    expect(result.movies).toEqual({ read: 9_742, inserted: 9_742 });
    const { rows } = await db.pool.query(
      `select (select count(*) from events
                 where source = 'movielens-small' and event = 'rated')::int as events,
              (select count(*) from items where source = 'movielens-small')::int as items`,
    );
    expect(rows[0]).toEqual({ events: 100_836, items: 9_742 });
  });
});
