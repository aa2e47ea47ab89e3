/**
 * Tombstones at every door: after a real deletion, the MovieLens import drops the deleted user's
 * ratings (and a re-import adds nothing), and the Segment API drops messages that carry any
 * identifier the identity rules extract (a device id, a raw id sent under the other type, an
 * address with invisible characters). Real PostgreSQL and Temporal.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deletePersonData, waitForRequest } from '../client/privacy.js';
import { normalizeEmail, storedValue } from '../domain/identity/identifiers.js';
import { identityRulesSchema } from '../domain/identity/rules.js';
import { messageHashes } from '../domain/privacy/tombstones.js';
import { importMovieLens } from '../ingest/movielens.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { type Harness, startHarness } from './harness.js';
import { resolveAll } from './identity-support.js';
import { postBatch } from './privacy-support.js';
import { hashedValueOf } from './support.js';

let h: Harness;
let writeKey: string;
let tmp: string;

beforeAll(async () => {
  h = await startHarness('privacy-tombstones', { api: true });
  writeKey = (await createWriteKey(h.db.pool, 'web', 'tester')).key;
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pops-tombstones-'));
}, 120_000);

afterAll(async () => {
  await h?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function deleteBy(type: string, value: string): Promise<void> {
  const started = await deletePersonData(h.client, h.db.pool, h.prefix, {
    identifier: { type, value },
    reason: 'erasure',
    requestedBy: 'dpo',
  });
  const request = await waitForRequest(h.client, h.db.pool, started);
  expect(request).toMatchObject({ status: 'done', foundNothing: false });
}

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await h.db.pool.query<{ n: number }>(sql, params);
  return rows[0]?.n ?? 0;
}

const droppedOf = (source: string) =>
  count(
    'select coalesce(sum(messages), 0)::int as n from privacy_dropped_messages where source = $1',
    [source],
  );

describe('the MovieLens import of a deleted user', () => {
  it('drops their ratings, counts them, and a re-import adds nothing', async () => {
    const dir = path.join(tmp, 'ml-tomb');
    await fs.mkdir(dir);
    // User 7701: three ratings; user 7702: one.
    const ratings = [
      'userId,movieId,rating,timestamp',
      '7701,10,4.0,964982703',
      '7701,20,3.5,964981247',
      '7701,30,5.0,964981248',
      '7702,10,0.5,964981249',
      '',
    ].join('\n');
    await fs.writeFile(path.join(dir, 'ratings.csv'), ratings);
    const first = await importMovieLens(h.db.pool, dir);
    expect(first.ratings).toEqual({ read: 4, inserted: 4, dropped: 0 });
    await resolveAll(h.db.pool);
    await deleteBy('user_id', '7701');
    expect(await count(`select count(*)::int as n from events where user_id = '7701'`)).toBe(0);

    // The repro: importing the directory again brought the deleted person back.
    const again = await importMovieLens(h.db.pool, dir);
    expect(again.ratings).toEqual({ read: 4, inserted: 0, dropped: 3 });
    expect(await droppedOf('ml-tomb')).toBe(3);
    expect(await count(`select count(*)::int as n from events where user_id = '7701'`)).toBe(0);
    const third = await importMovieLens(h.db.pool, dir);
    expect(third.ratings).toEqual({ read: 4, inserted: 0, dropped: 3 });
    await resolveAll(h.db.pool);
    const ids = `select count(*)::int as n from identifiers where type = 'user_id' and value = $1`;
    expect(await count(ids, ['7701'])).toBe(0);
    expect(await count(ids, ['7702'])).toBe(1);
  }, 180_000);
});

describe('the Segment API after a deletion', () => {
  it('drops a deleted device id, a raw id of the other type, an email with a ZWSP', async () => {
    const email = 'alice.smith@example.com';
    await postBatch(h.base, writeKey, [
      {
        type: 'identify',
        messageId: 'r1',
        userId: 'alice',
        anonymousId: 'anon-alice',
        traits: { email },
        context: { device: { id: 'dev-alice' } },
      },
      { type: 'alias', messageId: 'r2', userId: 'alice', previousId: 'alice-old' },
    ]);
    await resolveAll(h.db.pool);
    await deleteBy('user_id', 'alice');
    const before = await droppedOf('web');

    await postBatch(h.base, writeKey, [
      // The testers' repro: the device id of a new anonymous id, and the alias's previous id
      // (typed anonymous_id by the rules) sent as a user id.
      {
        type: 'track',
        anonymousId: 'anon-new-4',
        event: 'x',
        context: { device: { id: 'dev-alice' } },
        messageId: 'r5',
      },
      { type: 'track', userId: 'alice-old', event: 'x', messageId: 'r6' },
      // The deleted user id sent as an anonymous id, and the address with invisible characters.
      { type: 'track', anonymousId: 'alice', event: 'x', messageId: 'r7' },
      {
        type: 'identify',
        anonymousId: 'anon-new-8',
        traits: { email: `\u200balice.smith@exam\u00adple.com\u200b\ufeff` },
        messageId: 'r8',
      },
      // Someone else: stored.
      { type: 'track', anonymousId: 'anon-bob', event: 'x', messageId: 'r9' },
    ]);
    expect(await droppedOf('web')).toBe(before + 4);
    const stored = await h.db.pool.query<{ message_id: string }>(
      `select message_id from events where message_id in ('r5', 'r6', 'r7', 'r8', 'r9')`,
    );
    expect(stored.rows.map((r) => r.message_id)).toEqual(['r9']);
    await resolveAll(h.db.pool);
    expect(
      await count(`select count(*)::int as n from identifiers where value like '%alice%'`),
    ).toBe(0);
  }, 180_000);
});

describe('messageHashes', () => {
  it('covers custom identifier types of the rules', () => {
    const rules = identityRulesSchema.parse({
      custom: {
        crm_id: { from: 'traits', path: 'crm.id', priority: 5, maxValues: 3, windowDays: null },
      },
    });
    const message = {
      row: { user_id: null, anonymous_id: null, previous_id: null },
      fields: { traits: { crm: { id: ' C-77 ' } } },
    };
    const crm = hashedValueOf('crm_id', 'C-77').slice(3);
    expect(messageHashes(message, rules)).toEqual([crm]);
    // Without the custom type, the value is no identifier at all.
    expect(messageHashes(message)).toEqual([]);
  });

  it('checks a raw id as both user_id and anonymous_id', () => {
    const message = {
      row: { user_id: 'u-1', anonymous_id: null, previous_id: null },
      fields: {},
    };
    expect(messageHashes(message).sort()).toEqual(
      [hashedValueOf('user_id', 'u-1'), hashedValueOf('anonymous_id', 'u-1')]
        .map((v) => v.slice(3))
        .sort(),
    );
  });
});

describe('emails with format characters', () => {
  it('are normalized without them, so they hash as the address', () => {
    const clean = 'alice.smith@example.com';
    for (const raw of [
      `${clean}\u200b`,
      `\ufeff${clean}`,
      'alice.smith\u200d@example\u00ad.com',
      `\u200e${clean}\u200f`,
    ]) {
      expect(normalizeEmail(raw)).toBe(clean);
      expect(storedValue('email', raw)).toBe(hashedValueOf('email', clean));
    }
    // Nothing left once they are gone: not an email.
    expect(normalizeEmail('\u200b@\u200b')).toBeNull();
  });
});
