import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Client } from '@temporalio/client';
import { startMergeIdentities, waitForMerge } from '../client/identity.js';
import type { Pool } from '../common/db.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { readWatermark } from '../domain/identity/store.js';
import { spawnWorker } from './fixtures/spawn-worker.js';
import {
  importMessages,
  inTimeOrder,
  peopleStream,
  resolveAll,
  storedConflicts,
  storedPartition,
  DEFAULT_RULES,
} from './identity-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
/** The same events resolved in the same chunks without a crash, to compare every table with. */
let reference: TestDatabase;
let client: Client;
const prefix = testQueuePrefix('identity-crash');
const workflowId = `identity-merge/${prefix}`;
const CHUNK = 100;

beforeAll(async () => {
  db = await createTestDatabase('identity-crash');
  reference = await createTestDatabase('identity-crash-ref');
  client = await testTemporalClient();
});

afterAll(async () => {
  await client.connection.close();
  await db.close();
  await reference.close();
});

async function count(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(sql, params);
  return rows[0]?.n ?? -1;
}

/** Polls `probe` until it returns a value, or fails with `what` after `ms`. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

/** The session whose chunk transaction waits to write its ledger row, with its state. */
async function blockedChunk(): Promise<{ pid: number; wrote: boolean; graphLocked: boolean }> {
  return until('a chunk waits on identity_chunks', async () => {
    const { rows } = await db.pool.query<{ pid: number; wrote: boolean; graphLocked: boolean }>(
      `select l.pid, a.backend_xid is not null as wrote,
              exists (select 1 from pg_locks g
                       where g.pid = l.pid and g.locktype = 'advisory' and g.granted
                         and g.objid = $1) as "graphLocked"
         from pg_locks l
         join pg_class c on c.oid = l.relation
         join pg_stat_activity a on a.pid = l.pid
        where c.relname = 'identity_chunks' and not l.granted`,
      [0x69646e74],
    );
    return rows[0];
  });
}

/** Every identity table in a stable order, without the columns that name runs or wall times. */
async function graphTables(pool: Pool): Promise<Record<string, unknown[]>> {
  const tables: Record<string, string> = {
    events: 'select id, message_id from events order by id',
    persons: `select id, canonical_id, merged_into, first_seen_at, first_event_id
                from persons order by id`,
    identifiers: `select type, value, person_id, first_seen_at, first_event_id
                    from identifiers order by type, value`,
    eventPersons: 'select event_id, person_id from event_persons order by event_id',
    merges: `select merged_from, merged_into, event_id, message_id, decisions, chunk_after
               from identity_merges order by id`,
    conflicts: `select event_id, identifier_type, identifier_value, identifier_person_id,
                       attributed_person_id, reason, rule, chunk_after
                  from identity_conflicts order by id`,
    chunks: `select after_event_id, through_event_id, summary, rules_sha256
               from identity_chunks order by after_event_id`,
    watermark: 'select last_event_id from identity_watermarks',
  };
  const out: Record<string, unknown[]> = {};
  for (const [name, sql] of Object.entries(tables)) out[name] = (await pool.query(sql)).rows;
  return out;
}

describe('a worker crash during an identity chunk', () => {
  it('leaves the graph as if the chunk ran once', async () => {
    const stream = peopleStream(51, 40, 8);
    const messages = inTimeOrder(stream.messages);
    const half = Math.floor(messages.length / 2);
    const [earlier, later] = [messages.slice(0, half), messages.slice(half)];

    // The reference: the same imports, resolved in the same chunks, with nothing killed.
    for (const batch of [earlier, later]) {
      await importMessages(reference.pool, batch);
      await resolveAll(reference.pool, DEFAULT_RULES, CHUNK);
    }

    const doomed = await spawnWorker(db.url, prefix);
    onTestFinished(() => doomed.stop());
    await importMessages(db.pool, earlier);
    const first = await startMergeIdentities(client, prefix, { chunkSize: CHUNK }, workflowId);
    await waitForMerge(client, first);
    const before = await readWatermark(db.pool);
    const ledgerBefore = await count(db.pool, 'select count(*)::int as n from identity_chunks');
    await importMessages(db.pool, later);

    // An exclusive lock on the ledger lets the chunk read, resolve and write the graph, then
    // holds it at its ledger insert: in flight, with its writes not yet committed.
    const holder = await db.pool.connect();
    await holder.query('begin');
    await holder.query('lock table identity_chunks in exclusive mode');
    const input = { requestedBy: 'crash-test', chunkSize: CHUNK, chunksPerRun: 2 };
    const run = await startMergeIdentities(client, prefix, input, workflowId);
    const inFlight = await blockedChunk();
    expect(inFlight).toMatchObject({ wrote: true, graphLocked: true });

    await doomed.stop();
    await holder.query('commit');
    holder.release();
    // Its session learns the client is gone once the lock is granted, and rolls back.
    await until('the killed chunk session ends', async () => {
      const alive = await count(
        db.pool,
        'select count(*)::int as n from pg_stat_activity where pid = $1',
        [inFlight.pid],
      );
      return alive === 0 ? true : undefined;
    });
    expect(await readWatermark(db.pool)).toBe(before);
    expect(await count(db.pool, 'select count(*)::int as n from identity_chunks')).toBe(
      ledgerBefore,
    );

    const survivor = await spawnWorker(db.url, prefix);
    onTestFinished(() => survivor.stop());
    const result = await waitForMerge(client, run);

    const lastEvent = await count(db.pool, 'select max(id)::int as n from events');
    expect(result).toMatchObject({ watermark: lastEvent, events: later.length });
    expect(await readWatermark(db.pool)).toBe(lastEvent);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
    expect(await graphTables(db.pool)).toEqual(await graphTables(reference.pool));
    await expectNoDuplicates(db.pool, lastEvent);

    const trail = await auditTrail(db.pool, { workflowId });
    const chunkRows = trail.filter((r) => r.action === 'identity.chunk-resolved');
    const ledger = await db.pool.query<{ after: number }>(
      'select after_event_id as after from identity_chunks order by after_event_id',
    );
    expect(chunkRows.map((r) => r.inputs['after'])).toEqual(ledger.rows.map((r) => r.after));
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });

    const history = await client.workflow.getHandle(workflowId, run.runId).fetchHistory();
    const attempts = (history.events ?? [])
      .map((e) => e.activityTaskStartedEventAttributes?.attempt)
      .filter((a): a is number => typeof a === 'number');
    expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
  });
});

/** No merge, conflict or chunk recorded twice, and the ledger is one unbroken chain to the end. */
async function expectNoDuplicates(pool: Pool, lastEvent: number): Promise<void> {
  const twice = (sql: string) => count(pool, `select count(*)::int as n from (${sql}) d`);
  expect(
    await twice('select merged_from from identity_merges group by merged_from having count(*) > 1'),
  ).toBe(0);
  expect(
    await twice(
      `select event_id, identifier_type, identifier_value from identity_conflicts
        group by 1, 2, 3 having count(*) > 1`,
    ),
  ).toBe(0);
  expect(await count(pool, 'select count(*)::int as n from identity_merges')).toBe(
    await count(pool, 'select count(*)::int as n from persons where merged_into is not null'),
  );
  const { rows } = await pool.query<{ after: number; through: number }>(
    `select after_event_id as after, through_event_id as through
       from identity_chunks order by after_event_id`,
  );
  let at = 0;
  for (const chunk of rows) {
    expect(chunk.after).toBe(at);
    at = chunk.through;
  }
  expect(at).toBe(lastEvent);
}
