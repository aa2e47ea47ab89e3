import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordConsent, setConsentDefault } from '../domain/privacy/consent.js';
import { ratedLabelsSql } from '../domain/training-set.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;
const FROM = new Date('2026-01-01T00:00:00Z');
const TO = new Date('2026-02-01T00:00:00Z');

/** Rated events, ids 1..6: ua rates twice, ub once, graph person 7 (u7, and a8 merged in) twice. */
async function seed() {
  const rows: Array<[number, string, string | null, string | null, string, number]> = [
    [1, 'ua', 'ua', null, 'i1', 5],
    [2, 'ua', 'ua', null, 'i2', 3],
    [3, 'ub', 'ub', null, 'i1', 4],
    [4, 'u7', 'u7', null, 'i2', 5],
    [5, 'a8', null, 'a8', 'i3', 2],
    [6, 'uc', 'uc', null, 'i3', 4],
  ];
  for (const [id, person, user, anon, item, rating] of rows) {
    await db.pool.query(
      `insert into events (id, message_id, source, type, event, person_id, user_id, anonymous_id,
                           item_id, ts, properties)
       values ($1, $2, 'ml', 'track', 'rated', $3, $4, $5, $6, $7, $8)`,
      [
        id,
        `m${id}`,
        person,
        user,
        anon,
        item,
        new Date(FROM.getTime() + id * 3600_000),
        { rating },
      ],
    );
  }
  await db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (7, 7, null, $1, 4, null)`,
    [FROM],
  );
  await db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (8, 7, 7, $1, 5, $1)`,
    [FROM],
  );
  await db.pool.query(
    `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
     values ('user_id', 'u7', 7, $1, 4), ('anonymous_id', 'a8', 8, $1, 5)`,
    [FROM],
  );
  await db.pool.query(`insert into event_persons (event_id, person_id) values (4, 7), (5, 8)`);
}

async function labelRows(): Promise<Array<{ row_id: number; person_key: string }>> {
  const { rows } = await db.pool.query<{ row_id: number; person_key: string }>(
    `select row_id, person_key from (${ratedLabelsSql('ml', FROM, TO, 'exclusive')}) l
      order by row_id`,
  );
  return rows;
}

const at = (day: number) => new Date(Date.UTC(2026, 0, day));
const analytics = (type: string, value: string, granted: boolean, day: number) =>
  recordConsent(db.pool, {
    identifier: { type, value },
    purpose: 'analytics',
    granted,
    source: 'test',
    actor: 't',
    at: at(day),
  });

beforeAll(async () => {
  db = await createTestDatabase('privacy-training');
  await seed();
});

afterAll(async () => {
  await db.close();
});

describe('training and drift label rows honour analytics consent', () => {
  it('keeps everyone by default (analytics is granted by default)', async () => {
    expect((await labelRows()).map((r) => r.row_id)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('leaves out a person who withdrew, over every identifier merged into them', async () => {
    await analytics('user_id', 'ub', false, 2);
    // a8 belongs to person 8, merged into 7: both of person 7's events go.
    await analytics('anonymous_id', 'a8', false, 2);
    expect(await labelRows()).toEqual([
      { row_id: 1, person_key: 'unresolved:ua' },
      { row_id: 2, person_key: 'unresolved:ua' },
      { row_id: 6, person_key: 'unresolved:uc' },
    ]);
  });

  it('the latest choice wins, and with a default of denied only those who granted count', async () => {
    // u7 grants after a8 withdrew: person 7 is back.
    await analytics('user_id', 'u7', true, 3);
    expect((await labelRows()).map((r) => r.row_id)).toEqual([1, 2, 4, 5, 6]);
    await setConsentDefault(db.pool, 'analytics', false, 't');
    // ua and uc have no event: the default now keeps them out; ub withdrew; 7 granted.
    expect((await labelRows()).map((r) => r.row_id)).toEqual([4, 5]);
    await analytics('user_id', 'uc', true, 4);
    expect((await labelRows()).map((r) => r.row_id)).toEqual([4, 5, 6]);
    await setConsentDefault(db.pool, 'analytics', true, 't');
  });
});
