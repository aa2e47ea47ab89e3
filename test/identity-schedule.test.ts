import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import {
  ensureMergeSchedule,
  setMergeSchedulePaused,
  startMergeIdentities,
  waitForMerge,
} from '../client/identity.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { lockGraph, readWatermark } from '../domain/identity/store.js';
import {
  importMessages,
  inTimeOrder,
  peopleStream,
  resetGraph,
  storedConflicts,
  storedPartition,
} from './identity-support.js';
import { type Harness, startHarness } from './harness.js';
import { testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;
let client: Client;
let h: Harness;
const prefix = testQueuePrefix('identity-schedule');
// The shared test server runs other files' workflows too: ids here carry this file's prefix.
const workflowId = `identity-merge/${prefix}`;

beforeAll(async () => {
  h = await startHarness('identity-schedule', { prefix });
  ({ db, client } = h);
});

afterAll(async () => {
  await h.close();
});

async function count(sql: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(sql);
  return rows[0]?.n ?? -1;
}

describe('two mergeIdentities runs at once', () => {
  it('both finish, each chunk is resolved, counted and audited once, by one of them', async () => {
    await resetGraph(db.pool);
    const stream = peopleStream(31, 30, 6);
    const messages = inTimeOrder(stream.messages);
    await importMessages(db.pool, messages);
    const input = { requestedBy: 'tester', chunkSize: 25, chunksPerRun: 4 };

    // Both runs read the watermark and wait on the graph lock for their first chunk, so one of them
    // surely finds that chunk resolved by the other; they race for every chunk after it too, the
    // way a scheduled run and an on-demand one do.
    const holder = await db.pool.connect();
    await holder.query('begin');
    await lockGraph(holder);
    const runs = [
      await startMergeIdentities(client, prefix, input, `${workflowId}/scheduled`),
      await startMergeIdentities(client, prefix, input, `${workflowId}/on-demand`),
    ];
    await waitForChunkCallers(2);
    await holder.query('commit');
    holder.release();

    const results = await Promise.all(runs.map((run) => waitForMerge(client, run)));
    const lastEvent = await count('select max(id)::int as n from events');
    const ledger = await db.pool.query<{ after: number; through: number; workflow_id: string }>(
      `select after_event_id as after, through_event_id as through, workflow_id
         from identity_chunks order by after_event_id`,
    );
    let after = 0;
    for (const chunk of ledger.rows) {
      expect(chunk.after).toBe(after);
      after = chunk.through;
    }
    expect(after).toBe(lastEvent);
    for (const [i, result] of results.entries()) {
      const own = ledger.rows.filter((c) => c.workflow_id === runs[i]?.workflowId);
      expect(result.watermark).toBe(lastEvent);
      expect(result.chunks).toBe(own.length);
      const trail = await auditTrail(db.pool, { workflowId: runs[i]?.workflowId ?? '' });
      expect(trail.map((r) => r.inputs['after'])).toEqual(own.map((c) => c.after));
      expect(trail.every((r) => r.outputs['replayed'] === false && !('outcome' in r.outputs))).toBe(
        true,
      );
    }
    expect(results.reduce((n, r) => n + r.events, 0)).toBe(messages.length);
    expect(results.reduce((n, r) => n + r.merges, 0)).toBe(
      await count('select count(*)::int as n from identity_merges'),
    );
    expect(await readWatermark(db.pool)).toBe(lastEvent);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });
  });

  it('stops with a ConflictFailure when the watermark was moved back behind a resolved chunk', async () => {
    const rewound = await count('select min(after_event_id)::int as n from identity_chunks');
    await db.pool.query('update identity_watermarks set last_event_id = $1', [rewound]);

    const run = await startMergeIdentities(client, prefix, {}, `${workflowId}/rewound`);

    await expect(waitForMerge(client, run)).rejects.toMatchObject({
      cause: {
        cause: {
          type: 'ConflictFailure',
          message: expect.stringContaining(
            `yet the watermark is at event ${rewound}: it was moved`,
          ),
        },
      },
    });
  });
});

describe('the identity merge schedule', () => {
  const scheduleId = `identity-merge/${prefix}`;
  const base = `${workflowId}/scheduled`;

  afterAll(async () => {
    await client.schedule
      .getHandle(scheduleId)
      .delete()
      .catch(() => undefined);
  });

  it('is created with SKIP and a one-minute catch-up, fires on trigger and resolves the backlog', async () => {
    await resetGraph(db.pool);
    const stream = peopleStream(32, 20, 4);
    await importMessages(db.pool, inTimeOrder(stream.messages));
    const lastEvent = await count('select max(id)::int as n from events');

    // An hourly interval keeps the schedule from firing on its own while the test runs.
    const created = await ensureMergeSchedule(client, prefix, {
      every: '1h',
      scheduleId,
      workflowId: base,
    });
    expect(created).toMatchObject({
      scheduleId,
      every: '1h',
      paused: false,
      overlap: 'SKIP',
      catchupWindow: '1m',
      taskQueue: `${prefix}-orchestration`,
    });
    await client.schedule.getHandle(scheduleId).trigger();

    const deadline = Date.now() + 60_000;
    while ((await readWatermark(db.pool)) < lastEvent) {
      if (Date.now() > deadline) throw new Error('the triggered merge never got to the end');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const state = await ensureMergeSchedule(client, prefix, { scheduleId, workflowId: base });
    const fired = state.recentRuns[0];
    expect(fired?.workflowId.startsWith(`${base}-`)).toBe(true);
    const runId = (await client.workflow.getHandle(fired?.workflowId ?? '').describe()).runId;
    const result = await waitForMerge(client, { workflowId: fired?.workflowId ?? '', runId });
    expect(result).toMatchObject({ watermark: lastEvent, events: stream.messages.length });
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    const trail = await auditTrail(db.pool, { workflowId: fired?.workflowId ?? '' });
    expect(trail.length).toBeGreaterThan(0);
    expect(trail.every((r) => r.actor === `schedule/${scheduleId}`)).toBe(true);
    expect(state).toMatchObject({ every: '1h', paused: false });
  });

  it('keeps its interval unless told, and keeps a pause across updates', async () => {
    await setMergeSchedulePaused(client, true, 'paused by the test', scheduleId);
    const updated = await ensureMergeSchedule(client, prefix, {
      every: '5m',
      scheduleId,
      workflowId: base,
    });
    expect(updated).toMatchObject({ every: '5m', paused: true, note: 'paused by the test' });
    const again = await ensureMergeSchedule(client, prefix, { scheduleId, workflowId: base });
    expect(again).toMatchObject({ every: '5m', paused: true, overlap: 'SKIP' });
    await setMergeSchedulePaused(client, false, 'unpaused by the test', scheduleId);
    expect(
      await ensureMergeSchedule(client, prefix, { scheduleId, workflowId: base }),
    ).toMatchObject({ every: '5m', paused: false });
  });
});

/** Waits until `n` sessions wait for the identity advisory lock (chunks blocked at their start). */
async function waitForChunkCallers(n: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (
    (await count(
      `select count(*)::int as n from pg_locks
        where locktype = 'advisory' and not granted and database = (
          select oid from pg_database where datname = current_database())`,
    )) < n
  ) {
    if (Date.now() > deadline) throw new Error(`fewer than ${n} chunks waited for the graph lock`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
