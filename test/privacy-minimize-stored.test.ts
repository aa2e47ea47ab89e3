/**
 * Upgrading a database written before PII minimization (domain/privacy/minimize-stored.ts): rows
 * seeded with plain SQL as earlier versions wrote them, emails in clear, are rewritten to the
 * stored form (hashed; the address to send to sealed), idempotently; a new message with the same
 * email then joins the old person; a clear identifier whose hashed form exists already is left and
 * counted, with a warning naming person ids only. The CLI command (through the start-up pass) is
 * run once, and audited.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pool } from '../common/db.js';
import type { Logger } from '../common/logger.js';
import { emailAddresses } from '../domain/privacy/contacts.js';
import { emptyResult, minimizeStoredPii } from '../domain/privacy/minimize-stored.js';
import { popsRunner } from './cli-support.js';
import { importMessages, message, personOf, resolveAll } from './identity-support.js';
import { scanEveryTable } from './privacy-support.js';
import {
  createTestDatabase,
  hashedValueOf,
  testQueuePrefix,
  type TestDatabase,
} from './support.js';

const ANN = 'ann.old@example.com';
const LATER = 'ann.later@example.com';
const CONTACT = 'ann.contact@example.com';
const EXPLICIT = 'anon.explicit@example.com';
const STALE = 'ann.stale@example.com';
const CLEAR = [ANN, LATER, CONTACT, EXPLICIT, STALE, '415 555 0100', '4155550100'];

/**
 * What an earlier version left: person 1 (user old-user-1, anonymous old-anon-1, two emails) and
 * person 2; events with emails in clear as sent (mixed case) and a phone; a conflict, a consent
 * and a quarantined message by email; plain contacts, one set after the events were received
 * (kept) and one before (replaced by the events' address). Returns the events' ids.
 */
async function seedOldRows(pool: Pool): Promise<number[]> {
  await pool.query(
    `insert into persons (id, canonical_id, first_seen_at, first_event_id)
     values (1, 1, '2025-01-01', 1), (2, 2, '2025-01-01', 4)`,
  );
  const at = '2025-01-01T00:00:00Z';
  const { rows } = await pool.query<{ id: number }>(
    `insert into events (message_id, source, type, event, person_id, user_id, anonymous_id, ts,
                         received_at, traits, context)
     values ('old-1', 'web', 'identify', null, 'old-user-1', 'old-user-1', null, $1, $1,
             '{"email": "Ann.Old@Example.com", "phone": "+1 415 555 0100", "name": "Ann",
               "n": 12345678901234567890}', null),
            ('old-2', 'web', 'track', 'Viewed', 'old-anon-1', null, 'old-anon-1', $1, $1, null,
             '{"ip": "203.0.113.9", "traits": {"email": " ANN.OLD@example.COM "}}'),
            ('old-3', 'web', 'identify', null, 'old-user-1', 'old-user-1', null, $1, $1,
             '{"email": "Ann.Later@Example.com"}', '{"traits": {"email": "x"}}'),
            ('old-4', 'web', 'track', 'Viewed', 'other-user', 'other-user', null, $1, $1,
             '{"plan": "pro"}', '{"traits": {"plan": "pro"}}')
     returning id`,
    [at],
  );
  const ids = rows.map((r) => r.id);
  await pool.query(
    `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
     values ('user_id', 'old-user-1', 1, $1, $2), ('email', $3, 1, $1, $2),
            ('anonymous_id', 'old-anon-1', 1, $1, $2), ('email', $4, 1, $1, $2),
            ('user_id', 'other-user', 2, $1, $2)`,
    [at, ids[0], ANN, LATER],
  );
  await pool.query(`update identity_watermarks set last_event_id = $1`, [Math.max(...ids)]);
  await pool.query(
    `insert into identity_conflicts (event_id, message_id, identifier_type, identifier_value,
         identifier_person_id, attributed_person_id, reason, rule, workflow_id, run_id,
         chunk_after)
     values ($1, 'old-4', 'email', $2, 1, 2, 'limit', '{}', 'w', 'r', 0)`,
    [ids[3], ANN],
  );
  await pool.query(
    `insert into consent_events (identifier_type, identifier_value, purpose, granted, source,
                                 actor, effective_at)
     values ('email', $1, 'marketing', true, 'api', 'tester', $2)`,
    [ANN, at],
  );
  const contract = await pool.query<{ id: number }>(
    `insert into event_contracts (event, source, version, schema, schema_sha256, owner,
                                  registered_by)
     values ('Viewed', 'web', 1, '{"additionalProperties": true, "properties": {}}',
             repeat('0', 64), 'team', 'tester')
     returning id`,
  );
  await pool.query(
    `insert into quarantined_events (message_id, source, event, contract_id, message, reasons)
     values ('old-q', 'web', 'Viewed', $1,
             '{"type": "track", "event": "Viewed", "userId": "old-user-1",
               "traits": {"email": "Ann.Old@Example.com", "name": "Ann"},
               "context": {"traits": {"email": "ANN.LATER@example.com"}, "locale": "en"}}',
             '[{"path": "x", "rule": "required", "expected": "x", "got": "missing"}]')`,
    [contract.rows[0]?.id],
  );
  await pool.query(
    `insert into contacts (person_key, email, source, updated_at)
     values ('crm:77', $1, 'api', '2024-01-01'),
            ('unresolved:old-anon-1', $2, 'api', '2025-06-01'),
            ('unresolved:old-user-1', $3, 'api', '2024-01-01')`,
    [CONTACT, EXPLICIT, STALE],
  );
  return ids;
}

/** A logger whose lines are kept. */
function capturingLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  return { log, lines };
}

let db: TestDatabase;
let cliDb: TestDatabase | undefined;
let ids: number[];

beforeAll(async () => {
  db = await createTestDatabase('privacy-minimize-stored');
  ids = await seedOldRows(db.pool);
}, 120_000);

afterAll(async () => {
  await db?.close();
  await cliDb?.close();
});

/** What one pass over the rows of seedOldRows does, counted by hand. */
const OLD_ROWS_MINIMIZED = {
  rewritten: {
    events: 3,
    quarantined_events: 1,
    identifiers: 2,
    identity_conflicts: 1,
    consent_events: 1,
    contacts: 3,
  },
  // old-1 and old-3 (old-user-1: the stale contact is older); old-2's key was set later.
  sealed: 2,
  conflicts: 0,
  skipped: 0,
};

describe('minimizing what earlier versions stored in clear', () => {
  it('rewrites every table to the stored form and seals the addresses', async () => {
    const { log, lines } = capturingLog();
    const result = await minimizeStoredPii(db.pool, { batchSize: 2, log });
    expect(result).toEqual(OLD_ROWS_MINIMIZED);
    expect(lines).toEqual([]);
    expect(await scanEveryTable(db.pool, CLEAR, [])).toEqual([]);

    const identifiers = await db.pool.query<{ type: string; value: string }>(
      `select type, value from identifiers where person_id = 1 order by type, value`,
    );
    expect(identifiers.rows).toEqual(
      [
        { type: 'anonymous_id', value: 'old-anon-1' },
        { type: 'email', value: hashedValueOf('email', ANN) },
        { type: 'email', value: hashedValueOf('email', LATER) },
        { type: 'user_id', value: 'old-user-1' },
      ].sort((a, b) => `${a.type} ${a.value}`.localeCompare(`${b.type} ${b.value}`)),
    );

    const events = await db.pool.query<{ traits: unknown; context: unknown; big: string }>(
      `select traits, context, traits ->> 'n' as big from events order by id`,
    );
    expect(events.rows.map(({ traits, context }) => ({ traits, context }))).toEqual([
      {
        traits: {
          email: hashedValueOf('email', ANN),
          phone: hashedValueOf('phone', '+14155550100'),
          name: 'Ann',
          n: expect.any(Number),
        },
        context: null,
      },
      {
        traits: null,
        context: { ip: '203.0.113.9', traits: { email: hashedValueOf('email', ANN) } },
      },
      {
        traits: { email: hashedValueOf('email', LATER) },
        context: { traits: { email: '[invalid]' } },
      },
      { traits: { plan: 'pro' }, context: { traits: { plan: 'pro' } } },
    ]);
    // Only the email and phone keys were replaced: a number JavaScript cannot hold is intact.
    expect(events.rows[0]?.big).toBe('12345678901234567890');

    const quarantined = await db.pool.query<{ message: unknown }>(
      `select message from quarantined_events`,
    );
    expect(quarantined.rows[0]?.message).toEqual({
      type: 'track',
      event: 'Viewed',
      userId: 'old-user-1',
      traits: { email: hashedValueOf('email', ANN), name: 'Ann' },
      context: { traits: { email: hashedValueOf('email', LATER) }, locale: 'en' },
    });
    const conflict = await db.pool.query(
      `select identifier_type, identifier_value from identity_conflicts`,
    );
    expect(conflict.rows).toEqual([
      { identifier_type: 'email', identifier_value: hashedValueOf('email', ANN) },
    ]);
    const consent = await db.pool.query(
      `select identifier_type, identifier_value, purpose, granted from consent_events`,
    );
    expect(consent.rows).toEqual([
      {
        identifier_type: 'email',
        identifier_value: hashedValueOf('email', ANN),
        purpose: 'marketing',
        granted: true,
      },
    ]);

    const keys = ['crm:77', 'unresolved:old-anon-1', 'unresolved:old-user-1'];
    expect(await emailAddresses(db.pool, keys)).toEqual(
      new Map([
        ['crm:77', CONTACT],
        ['unresolved:old-anon-1', EXPLICIT],
        ['unresolved:old-user-1', LATER],
      ]),
    );
    const plain = await db.pool.query(`select person_key from contacts where email is not null`);
    expect(plain.rows).toEqual([]);
  });

  it('changes nothing when run again', async () => {
    expect(await minimizeStoredPii(db.pool, { batchSize: 2 })).toEqual(emptyResult());
  });

  it('lets a new message with the same email join the person of the old clear row', async () => {
    expect(await personOf(db.pool, 'user_id', 'old-user-1')).toBe(1);
    await importMessages(db.pool, [
      message({
        id: 'new-1',
        anonymousId: 'new-anon-9',
        email: ' Ann.OLD@example.com',
        at: '2025-02-01T00:00:00Z',
      }),
    ]);
    await resolveAll(db.pool);
    expect(await personOf(db.pool, 'anonymous_id', 'new-anon-9')).toBe(1);
    expect(await personOf(db.pool, 'email', ANN)).toBe(1);
    const { rows } = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from identifiers where type = 'email'`,
    );
    expect(rows[0]?.n).toBe(2);
    expect(await emailAddresses(db.pool, ['unresolved:new-anon-9'])).toEqual(
      new Map([['unresolved:new-anon-9', ANN]]),
    );
    expect(await scanEveryTable(db.pool, CLEAR, [])).toEqual([]);
    expect(await minimizeStoredPii(db.pool)).toEqual(emptyResult());
  });

  it('leaves a clear row whose hashed form exists, counts it, names person ids only', async () => {
    const dup = 'dup.person@example.com';
    await db.pool.query(
      `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
       values ('email', $1, 2, now(), $3), ('email', $2, 1, now(), $3)`,
      [dup, hashedValueOf('email', dup), ids[0]],
    );
    await db.pool.query(
      `insert into identity_conflicts (event_id, message_id, identifier_type, identifier_value,
           identifier_person_id, attributed_person_id, reason, rule, workflow_id, run_id,
           chunk_after)
       select $1, 'old-4', 'email', v, 1, 2, 'limit', '{}', 'w', 'r', 0
         from unnest($2::text[]) as v`,
      [ids[3], [dup, hashedValueOf('email', dup)]],
    );
    for (let run = 0; run < 2; run++) {
      const { log, lines } = capturingLog();
      const result = await minimizeStoredPii(db.pool, { log });
      expect(result).toEqual({ ...emptyResult(), conflicts: 2 });
      const { rows } = await db.pool.query<{ value: string; person_id: number }>(
        `select value, person_id from identifiers where type = 'email' and value in ($1, $2)
          order by person_id`,
        [dup, hashedValueOf('email', dup)],
      );
      expect(rows).toEqual([
        { value: hashedValueOf('email', dup), person_id: 1 },
        { value: dup, person_id: 2 },
      ]);
      const warnings = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(warnings).toEqual([
        expect.objectContaining({
          level: 40,
          table: 'identifiers',
          conflicts: [{ type: 'email', clearPersonId: 2, hashedPersonId: 1 }],
        }),
        expect.objectContaining({
          level: 40,
          table: 'identity_conflicts',
          conflicts: [{ eventId: ids[3], identifierPersonId: 1 }],
        }),
      ]);
      expect(lines.join('\n')).not.toContain('dup.person');
      expect(lines.join('\n')).not.toContain('h1:');
    }
  });

  it('runs at the start of the CLI; `pops privacy minimize` reports it (audited)', async () => {
    cliDb = await createTestDatabase('privacy-minimize-stored-cli');
    const target = cliDb;
    await seedOldRows(target.pool);
    const pops = popsRunner(() => ({
      DATABASE_URL: target.url,
      POPS_TASK_QUEUE_PREFIX: testQueuePrefix('privacy-minimize-stored'),
      POPS_ACTOR: 'cli-tester',
    }));
    const out = await pops(['privacy', 'minimize', '--json']);
    expect(out.stderr).not.toContain('@example.');
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(OLD_ROWS_MINIMIZED);
    expect(await scanEveryTable(target.pool, CLEAR, [])).toEqual([]);
    const audit = await target.pool.query<{ actor: string; outputs: { sealed: number } }>(
      `select actor, outputs from audit_log where action = 'privacy.stored-pii-minimized'
        order by seq`,
    );
    // The start-up pass did the work; the command's own pass found nothing left.
    expect(audit.rows.map((r) => [r.actor, r.outputs.sealed])).toEqual([
      ['pops', 2],
      ['cli-tester', 0],
    ]);

    // Later starts skip the pass (it ran to its end once); the command still runs all of it.
    const marker = await target.pool.query('select 1 from stored_pii_minimized');
    expect(marker.rows).toHaveLength(1);
    await target.pool.query(
      `insert into consent_events (identifier_type, identifier_value, purpose, granted, source,
                                   actor, effective_at)
       values ('email', 'late.clear@example.org', 'analytics', true, 'api', 'tester', now())`,
    );
    const again = await pops(['privacy', 'minimize', '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ rewritten: { consent_events: 1 } });
    const actors = await target.pool.query<{ actor: string }>(
      `select actor from audit_log where action = 'privacy.stored-pii-minimized' order by seq`,
    );
    expect(actors.rows.map((r) => r.actor)).toEqual(['pops', 'cli-tester', 'cli-tester']);
    expect(await scanEveryTable(target.pool, ['late.clear@example.org'], [])).toEqual([]);
  }, 120_000);
});
