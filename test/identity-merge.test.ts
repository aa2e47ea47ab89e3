import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Pool } from '../common/db.js';
import { resolveNextChunk, WatermarkMovedError } from '../domain/identity/chunk.js';
import { identityRulesSchema } from '../domain/identity/rules.js';
import { readWatermark } from '../domain/identity/store.js';
import {
  DEFAULT_RULES,
  importMessages,
  inTimeOrder,
  message,
  normalizePartition,
  peopleStream,
  personOf,
  resetGraph,
  resolveAll,
  storedConflicts,
  storedPartition,
  failFirstLedgerWrite,
} from './identity-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('identity-merge');
});

afterAll(async () => {
  await db.close();
});

beforeEach(async () => {
  await resetGraph(db.pool);
});

/** The canonical person each message's event is attributed to, by messageId. */
async function attributions(pool: Pool): Promise<Record<string, number | null>> {
  const { rows } = await pool.query<{ message_id: string; person: number | null }>(
    `select e.message_id, p.canonical_id as person
       from events e
       left join event_persons ep on ep.event_id = e.id
       left join persons p on p.id = ep.person_id`,
  );
  return Object.fromEntries(rows.map((r) => [r.message_id, r.person]));
}

/** Every identity table, in a stable order, for before/after comparisons. */
async function snapshot(pool: Pool): Promise<Record<string, unknown[]>> {
  const tables = {
    persons: 'select * from persons order by id',
    identifiers: 'select * from identifiers order by type, value',
    eventPersons: 'select * from event_persons order by event_id',
    merges: 'select * from identity_merges order by id',
    conflicts: 'select * from identity_conflicts order by id',
  };
  const out: Record<string, unknown[]> = {};
  for (const [name, sql] of Object.entries(tables)) out[name] = (await pool.query(sql)).rows;
  return out;
}

describe('resolving identities', () => {
  it('joins a transitive chain A–B, B–C into one person, across chunks, recording the merge', async () => {
    await importMessages(db.pool, [
      message({ id: 'c1', at: 0, anonymousId: 'A' }),
      message({ id: 'c2', at: 1, type: 'identify', userId: 'C', email: 'c@x.io' }),
      message({ id: 'c3', at: 2, anonymousId: 'A', deviceId: 'B' }),
      message({ id: 'c4', at: 3, deviceId: 'B', anonymousId: 'A2', email: 'c@x.io' }),
    ]);

    const chunks = await resolveAll(db.pool, DEFAULT_RULES, 1);

    expect(chunks.map((c) => c.events)).toEqual([1, 1, 1, 1, 0]);
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:A', 'anonymous_id:A2', 'device_id:B', 'email:c@x.io', 'user_id:C'],
    ]);
    const first = await personOf(db.pool, 'anonymous_id', 'A');
    const second = await personOf(db.pool, 'user_id', 'C');
    expect(first).toBe(second);
    expect(Object.values(await attributions(db.pool))).toEqual([first, first, first, first]);

    const { rows: merges } = await db.pool.query(
      'select merged_from, merged_into, message_id, decisions from identity_merges',
    );
    expect(merges).toEqual([
      {
        merged_from: 2, // the person c2 created (C, c@x.io), one minute younger than A's
        merged_into: 1,
        message_id: 'c4',
        decisions: expect.objectContaining({
          survivorRule: 'earliest first_seen_at, then lowest id',
          kept: ['email', 'anonymous_id', 'device_id'],
          dropped: [],
          counts: { user_id: 1, email: 1, phone: 0, anonymous_id: 2, device_id: 1 },
        }),
      },
    ]);
  });

  it('keeps two user ids that share a device apart and records the conflict', async () => {
    await importMessages(db.pool, [
      message({ id: 's1', at: 0, userId: 'u1', deviceId: 'tablet' }),
      message({ id: 's2', at: 5, userId: 'u2', deviceId: 'tablet', anonymousId: 'x2' }),
      message({ id: 's3', at: 6, anonymousId: 'x1', deviceId: 'tablet' }),
    ]);

    const [chunk] = await resolveAll(db.pool);

    expect(chunk).toMatchObject({ events: 3, attributed: 3, merges: 0, conflicts: 1 });
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:x1', 'device_id:tablet', 'user_id:u1'],
      ['anonymous_id:x2', 'user_id:u2'],
    ]);
    const u1 = await personOf(db.pool, 'user_id', 'u1');
    const u2 = await personOf(db.pool, 'user_id', 'u2');
    expect(await attributions(db.pool)).toEqual({ s1: u1, s2: u2, s3: u1 });
    const { rows } = await db.pool.query(
      `select message_id, identifier_type, identifier_value, identifier_person_id,
              attributed_person_id, reason, rule
         from identity_conflicts`,
    );
    expect(rows).toEqual([
      {
        message_id: 's2',
        identifier_type: 'device_id',
        identifier_value: 'tablet',
        identifier_person_id: u1,
        attributed_person_id: u2,
        reason: 'user_id limit of 1 would be exceeded (2 values)',
        rule: {
          breaches: [
            { kind: 'limit', type: 'user_id', maxValues: 1, windowDays: null, wouldHold: 2 },
          ],
        },
      },
    ]);
  });

  it('links nothing through junk or blocked values and attributes junk-only events to nobody', async () => {
    const rules = identityRulesSchema.parse({ blockList: ['KIOSK-1', 'shared-browser'] });
    await importMessages(db.pool, [
      message({ id: 'j1', at: 0, userId: 'ua', anonymousId: 'guest' }),
      message({ id: 'j2', at: 1, userId: 'ub', anonymousId: 'GUEST' }),
      message({
        id: 'j3',
        at: 2,
        anonymousId: 'null',
        deviceId: '00000000-0000-0000-0000-000000000000',
      }),
      message({ id: 'j4', at: 3, anonymousId: 'a1', deviceId: 0 }),
      message({ id: 'j5', at: 4, anonymousId: 'a2', deviceId: '0', email: 'undefined' }),
      message({ id: 'j6', at: 5, anonymousId: 'Shared-Browser' }),
      message({ id: 'j7', at: 6, anonymousId: 'a3', deviceId: 'Kiosk-1' }),
      message({ id: 'j8', at: 7, anonymousId: 'a4', deviceId: 'kiosk-1 ' }),
      message({ id: 'j9', at: 8, userId: -1, anonymousId: '[object Object]' }),
    ]);

    const [chunk] = await resolveAll(db.pool, rules);

    expect(chunk).toMatchObject({
      events: 9,
      attributed: 6,
      unattributed: 3,
      rejectedValues: 12,
      merges: 0,
    });
    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([
        ['user_id:ua'],
        ['user_id:ub'],
        ['anonymous_id:a1'],
        ['anonymous_id:a2'],
        ['anonymous_id:a3'],
        ['anonymous_id:a4'],
      ]),
    );
    const attributed = await attributions(db.pool);
    expect([attributed['j3'], attributed['j6'], attributed['j9']]).toEqual([null, null, null]);
  });

  it('normalizes emails before linking; an invalid email links nothing', async () => {
    await importMessages(db.pool, [
      message({ id: 'e1', at: 0, type: 'identify', userId: 'u1', email: '  Alice@Example.COM ' }),
      message({ id: 'e2', at: 1, anonymousId: 'x', contextEmail: 'alice@example.com' }),
      message({ id: 'e3', at: 2, anonymousId: 'y', email: 'alice@example' }),
      message({ id: 'e4', at: 3, anonymousId: 'z', contextEmail: 'ALICE@EXAMPLE' }),
    ]);

    await resolveAll(db.pool);

    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([
        ['user_id:u1', 'email:alice@example.com', 'anonymous_id:x'],
        ['anonymous_id:y'],
        ['anonymous_id:z'],
      ]),
    );
  });

  it('merges the person of an alias previousId with the user, the older one surviving', async () => {
    await importMessages(db.pool, [
      message({ id: 'al1', at: 0, type: 'page', anonymousId: 'visitor' }),
      message({ id: 'al2', at: 1, anonymousId: 'visitor', deviceId: 'phone' }),
      message({ id: 'al3', at: 2, type: 'identify', userId: 'u9', email: 'nine@x.io' }),
      message({ id: 'al4', at: 3, type: 'alias', userId: 'u9', previousId: 'visitor' }),
    ]);

    await resolveAll(db.pool);

    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:visitor', 'device_id:phone', 'email:nine@x.io', 'user_id:u9'],
    ]);
    const { rows } = await db.pool.query(
      'select merged_from, merged_into, message_id from identity_merges',
    );
    expect(rows).toEqual([{ merged_from: 2, merged_into: 1, message_id: 'al4' }]);
  });

  it('keeps the person first seen earliest as survivor even when it was created later', async () => {
    // Chunks of one event: 'late' is resolved first (person 1) though its event is younger.
    await importMessages(db.pool, [
      message({ id: 'o1', at: 100, anonymousId: 'late' }),
      message({ id: 'o2', at: 0, anonymousId: 'early', deviceId: 'dev' }),
      message({ id: 'o3', at: 200, anonymousId: 'late', deviceId: 'dev' }),
      message({ id: 'o4', at: 300, anonymousId: 'third', deviceId: 'dev' }),
    ]);

    await resolveAll(db.pool, DEFAULT_RULES, 1);

    const { rows: persons } = await db.pool.query(
      'select id, canonical_id, merged_into from persons order by id',
    );
    expect(persons).toEqual([
      { id: 1, canonical_id: 2, merged_into: 2 },
      { id: 2, canonical_id: 2, merged_into: null },
    ]);
    expect(Object.values(await attributions(db.pool))).toEqual([2, 2, 2, 2]);
  });

  it('counts values against a limit only within its window', async () => {
    const day = 24 * 60;
    const week = [1, 2, 3, 4, 5, 6].map((k) =>
      message({ id: `w${k}`, at: k * 60, userId: 'u1', anonymousId: `a${k}` }),
    );
    await importMessages(db.pool, [
      ...week,
      // Nine days on, a1..a5 were first seen more than 7 days ago and no longer count.
      message({ id: 'w7', at: 10 * day, userId: 'u1', anonymousId: 'a7' }),
    ]);

    await resolveAll(db.pool);

    // a6 would have been the sixth anonymous id within 7 days: it founds a person of its own.
    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([
        ['user_id:u1', ...[1, 2, 3, 4, 5, 7].map((k) => `anonymous_id:a${k}`)],
        ['anonymous_id:a6'],
      ]),
    );
    const { rows } = await db.pool.query('select message_id, rule from identity_conflicts');
    expect(rows).toEqual([
      {
        message_id: 'w6',
        rule: {
          breaches: [
            { kind: 'limit', type: 'anonymous_id', maxValues: 5, windowDays: 7, wouldHold: 6 },
          ],
        },
      },
    ]);
  });
});

describe('exactly-once chunks', () => {
  it('returns the ledger summary for a retried chunk and changes nothing', async () => {
    const stream = peopleStream(7, 20, 4);
    // In time order, so that chunks of 50 apply messages in the order the expectation assumes.
    await importMessages(db.pool, inTimeOrder(stream.messages));
    const chunks = await resolveAll(db.pool, DEFAULT_RULES, 50);
    const before = await snapshot(db.pool);

    const again = await resolveNextChunk(db.pool, {
      after: 0,
      limit: 50,
      rules: DEFAULT_RULES,
      workflowId: 'retry',
      runId: 'retry',
    });

    expect(again).toEqual({ ...chunks[0], replayed: true });
    expect(await snapshot(db.pool)).toEqual(before);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
  });

  it('changes nothing when the same events are resolved again from a rewound watermark', async () => {
    const stream = peopleStream(8, 20, 4);
    await importMessages(db.pool, stream.messages);
    await resolveAll(db.pool, DEFAULT_RULES, 50);
    const before = await snapshot(db.pool);
    await db.pool.query('truncate identity_chunks');
    await db.pool.query('update identity_watermarks set last_event_id = 0');

    const rerun = await resolveAll(db.pool, DEFAULT_RULES, 50);

    expect(rerun.reduce((n, c) => n + c.merges + c.personsCreated + c.identifiersAdded, 0)).toBe(0);
    expect(await snapshot(db.pool)).toEqual(before);
  });

  it('leaves no trace of a chunk whose commit fails, and applies it once on retry', async () => {
    const stream = peopleStream(9, 20, 4);
    await importMessages(db.pool, stream.messages);
    await failFirstLedgerWrite(db.pool);
    const request = { after: 0, limit: 10_000, rules: DEFAULT_RULES, workflowId: 'w', runId: 'r' };

    try {
      await expect(resolveNextChunk(db.pool, request)).rejects.toThrow(/simulated crash/);
      expect(await snapshot(db.pool)).toEqual({
        persons: [],
        identifiers: [],
        eventPersons: [],
        merges: [],
        conflicts: [],
      });
      expect(await readWatermark(db.pool)).toBe(0);

      const chunk = await resolveNextChunk(db.pool, request);

      expect(chunk.events).toBe(stream.messages.length);
      expect(await readWatermark(db.pool)).toBe(chunk.through);
      expect(await storedPartition(db.pool)).toEqual(stream.expected);
      expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
    } finally {
      await db.pool.query(`drop trigger fail_first on identity_chunks;
        drop function fail_first_ledger_write(); drop sequence fail_once;`);
    }
  });

  it('does not pass over an event whose insert is still in flight', async () => {
    // The writer takes an id first and commits last; the import after it takes and commits a higher
    // id.
    const writer = await db.pool.connect();
    try {
      await writer.query('begin');
      await writer.query(
        `insert into events (message_id, source, type, event, person_id, anonymous_id, ts)
         values ('slow', 'test', 'track', 'Viewed', 'slow-anon', 'slow-anon', now())`,
      );
      await importMessages(db.pool, [message({ id: 'fast', at: 0, anonymousId: 'fast-anon' })]);

      const early = resolveNextChunk(db.pool, {
        after: 0,
        limit: 10,
        rules: DEFAULT_RULES,
        workflowId: 'w',
        runId: 'r',
      });

      await expect(early).rejects.toThrow(/events are being written/);
      expect(await readWatermark(db.pool)).toBe(0);
      await writer.query('commit');
    } finally {
      writer.release();
    }
    const [chunk] = await resolveAll(db.pool);
    expect(chunk).toMatchObject({ events: 2, attributed: 2 });
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:fast-anon'],
      ['anonymous_id:slow-anon'],
    ]);
  });

  it('refuses to resolve after a watermark that is not the current one', async () => {
    await importMessages(db.pool, [message({ id: 'x1', at: 0, anonymousId: 'x' })]);
    await resolveAll(db.pool);

    const stale = resolveNextChunk(db.pool, {
      after: 5,
      limit: 10,
      rules: DEFAULT_RULES,
      workflowId: 'w',
      runId: 'r',
    });

    await expect(stale).rejects.toBeInstanceOf(WatermarkMovedError);
    await expect(stale).rejects.toThrow(/watermark is at event 1, not 5/);
  });
});
