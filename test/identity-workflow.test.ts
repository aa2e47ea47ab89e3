import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { startMergeIdentities, waitForMerge } from '../client/identity.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { IDENTITY_AUDIT_SUBJECT } from '../domain/identity/merge.js';
import { lockGraph, readWatermark } from '../domain/identity/store.js';
import {
  importMessages,
  inTimeOrder,
  peopleStream,
  resetGraph,
  storedConflicts,
  storedPartition,
  failFirstLedgerWrite,
} from './identity-support.js';
import { type Harness, startHarness } from './harness.js';
import { testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;
let client: Client;
let h: Harness;
const prefix = testQueuePrefix('identity-workflow');
// The shared test server runs other files' workflows too: this file's merge gets its own id.
const workflowId = `identity-merge/${prefix}`;

beforeAll(async () => {
  h = await startHarness('identity-workflow', { prefix });
  ({ db, client } = h);
});

afterAll(async () => {
  await h.close();
});

async function count(sql: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(sql);
  return rows[0]?.n ?? -1;
}

describe('mergeIdentities', () => {
  it('resolves chunk by chunk, audits each, continues as new, and a second start attaches', async () => {
    const stream = peopleStream(21, 30, 6);
    const messages = inTimeOrder(stream.messages);
    await importMessages(db.pool, messages);
    const chunkSize = 40;
    const full = Math.floor(messages.length / chunkSize);
    const chunks = full + (messages.length % chunkSize > 0 ? 1 : 0);
    const input = { requestedBy: 'tester', chunkSize, chunksPerRun: 3 };

    // Holding the graph lock keeps the first chunk waiting: the second start finds it running.
    const holder = await db.pool.connect();
    await holder.query('begin');
    await lockGraph(holder);
    const first = await startMergeIdentities(client, prefix, input, workflowId);
    const second = await startMergeIdentities(client, prefix, { chunkSize: 7 }, workflowId);
    await holder.query('commit');
    holder.release();

    expect(second).toEqual(first);
    const result = await waitForMerge(client, first);

    const lastEvent = await count('select max(id)::int as n from events');
    expect(result).toEqual({
      watermark: lastEvent,
      runs: Math.ceil((full + 1) / 3),
      chunks,
      events: messages.length,
      personsCreated: await count('select count(*)::int as n from persons'),
      identifiersAdded: await count('select count(*)::int as n from identifiers'),
      merges: await count('select count(*)::int as n from identity_merges'),
      conflicts: stream.expectedConflicts.length,
    });
    expect(await readWatermark(db.pool)).toBe(lastEvent);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);

    const trail = await auditTrail(db.pool, { workflowId });
    expect(trail).toHaveLength(chunks);
    let after = 0;
    for (const row of trail) {
      expect(row).toMatchObject({
        actor: 'tester',
        action: 'identity.chunk-resolved',
        subject: IDENTITY_AUDIT_SUBJECT,
        inputs: { after, chunkSize },
      });
      after = row.outputs['through'] as number;
    }
    expect(after).toBe(lastEvent);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });
    expect(await count('select count(distinct run_id)::int as n from identity_chunks')).toBe(
      result.runs,
    );
  });

  it('retries a chunk whose transaction failed before commit and applies it once', async () => {
    await resetGraph(db.pool);
    const stream = peopleStream(22, 30, 6);
    await importMessages(db.pool, inTimeOrder(stream.messages));
    await failFirstLedgerWrite(db.pool);

    const run = await startMergeIdentities(client, prefix, { chunkSize: 10_000 }, workflowId);
    const result = await waitForMerge(client, run);

    expect(await count('select last_value::int as n from fail_once')).toBe(2);
    expect(result).toMatchObject({ chunks: 1, events: stream.messages.length });
    expect(await count('select count(*)::int as n from identity_chunks')).toBe(1);
    expect(await count('select count(*)::int as n from identity_merges')).toBe(result.merges);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
  });

  it('rejects a bad input inside the workflow, naming the field', async () => {
    const run = await startMergeIdentities(
      client,
      prefix,
      { chunkSize: 0, rules: { email: { priority: -1 } } },
      `${workflowId}/bad`,
    );

    await expect(waitForMerge(client, run)).rejects.toMatchObject({
      cause: {
        message: expect.stringMatching(/rules\.email\.priority: .*chunkSize: /s),
        type: 'ValidationFailure',
      },
    });
  });
});
