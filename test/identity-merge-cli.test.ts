import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { buildApi } from '../api/server.js';
import { apiToken, withToken } from './auth-support.js';
import { describeMergeSchedule, MERGE_SCHEDULE_ID, waitForMerge } from '../client/identity.js';
import { logger } from '../common/logger.js';
import { auditTrail } from '../domain/audit.js';
import { MERGE_IDENTITIES_WORKFLOW_ID } from '../domain/identity/merge.js';
import { lockGraph, readWatermark } from '../domain/identity/store.js';
import {
  importMessages,
  inTimeOrder,
  peopleStream,
  resetGraph,
  storedPartition,
} from './identity-support.js';
import { popsRunner } from './cli-support.js';
import { startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

// This file uses pops's own ids (`identity-merge` for the workflow and the schedule): no other test
// file does, so it may, on its own task queues.
const CLI = path.join(import.meta.dirname, '../cli/main.ts');
const prefix = testQueuePrefix('identity-merge-cli');
let db: TestDatabase;
let client: Client;

const pops = popsRunner(() => ({
  DATABASE_URL: db.url,
  POPS_TASK_QUEUE_PREFIX: prefix,
  POPS_ACTOR: 'cli-tester',
}));

beforeAll(async () => {
  db = await createTestDatabase('identity-merge-cli');
  client = await testTemporalClient();
});

afterAll(async () => {
  await client.schedule
    .getHandle(MERGE_SCHEDULE_ID)
    .delete()
    .catch(() => undefined);
  await client.connection.close();
  await db.close();
});

describe('pops identity merge', () => {
  it('--wait runs workers in-process, resolves the backlog and prints the totals', async () => {
    const stream = peopleStream(41, 15, 3);
    await importMessages(db.pool, inTimeOrder(stream.messages));

    const result = await pops(['identity', 'merge', '--wait', '--json']);

    expect(result.code).toBe(0);
    const lastEvent = await readWatermark(db.pool);
    expect(JSON.parse(result.stdout)).toMatchObject({
      workflowId: MERGE_IDENTITIES_WORKFLOW_ID,
      attached: false,
      result: { watermark: lastEvent, events: stream.messages.length, chunks: 1, runs: 1 },
    });
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    const trail = await auditTrail(db.pool, { workflowId: MERGE_IDENTITIES_WORKFLOW_ID });
    expect(trail.map((r) => r.actor)).toEqual(['cli-tester']);

    const human = await pops(['identity', 'merge', '--wait']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(`identities resolved through event ${lastEvent}`);
    expect(human.stdout).toContain('0 events in 0 chunks (1 run)');
  });

  it('exits 1 with the cause when the merge fails', async () => {
    const { rows } = await db.pool.query<{ after: number }>(
      'select min(after_event_id)::int as after from identity_chunks',
    );
    await db.pool.query('update identity_watermarks set last_event_id = $1', [rows[0]?.after]);

    const result = await pops(['identity', 'merge', '--wait']);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('it was moved back');
    await resetGraph(db.pool);
  });
});

describe('pops identity schedule', () => {
  it('creates the schedule, re-times it, pauses and unpauses it', async () => {
    const created = await pops(['identity', 'schedule', '--json']);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({
      scheduleId: MERGE_SCHEDULE_ID,
      every: '1m',
      paused: false,
      overlap: 'SKIP',
      taskQueue: `${prefix}-orchestration`,
    });

    const paused = await pops(['identity', 'schedule', '--every', '5m', '--pause']);
    expect(paused.code).toBe(0);
    expect(paused.stdout).toContain(`schedule ${MERGE_SCHEDULE_ID}: every 5m, paused`);
    expect(paused.stdout).toContain('note: paused by cli-tester');

    const unpaused = await pops(['identity', 'schedule', '--unpause', '--json']);
    expect(JSON.parse(unpaused.stdout)).toMatchObject({ every: '5m', paused: false });
  });

  it('exits 2 naming the option for a bad interval or both --pause and --unpause', async () => {
    const bad = await pops(['identity', 'schedule', '--every', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/every: must be a whole number .*"soon"/);
    const both = await pops(['identity', 'schedule', '--pause', '--unpause']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--pause and --unpause: choose one');
    const env = await pops(['identity', 'schedule'], { POPS_IDENTITY_MERGE_EVERY: 'hourly' });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain('POPS_IDENTITY_MERGE_EVERY="hourly"');
  });
});

/** Runs `pops serve` until it serves, then stops it with SIGTERM; returns its exit code. */
async function serveOnce(env: Record<string, string>): Promise<number | null> {
  const port = await new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      POPS_TASK_QUEUE_PREFIX: prefix,
      POPS_HTTP_PORT: String(port),
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('pops is serving')) resolve();
    });
    void exited.then((code) => reject(new Error(`pops serve exited with ${code}`)));
  });
  child.kill('SIGTERM');
  return exited;
}

describe('pops serve', () => {
  it('creates no schedule when POPS_IDENTITY_MERGE_EVERY=off, and applies its interval otherwise', async () => {
    await client.schedule
      .getHandle(MERGE_SCHEDULE_ID)
      .delete()
      .catch(() => undefined);

    expect(await serveOnce({ POPS_IDENTITY_MERGE_EVERY: 'off' })).toBe(0);
    expect(await describeMergeSchedule(client)).toBeUndefined();

    expect(await serveOnce({ POPS_IDENTITY_MERGE_EVERY: '2m' })).toBe(0);
    expect(await describeMergeSchedule(client)).toMatchObject({
      every: '2m',
      paused: false,
      overlap: 'SKIP',
      taskQueue: `${prefix}-orchestration`,
    });
    expect(await serveOnce({})).toBe(0);
    expect(await describeMergeSchedule(client)).toMatchObject({ every: '2m' });
    // Scheduled runs would race the API test's merge on these queues.
    await client.schedule.getHandle(MERGE_SCHEDULE_ID).delete();
  });
});

describe('POST /v1/identity/merges', () => {
  it('answers 202 when it starts a merge, 200 when it attaches, 400 for an unknown field', async () => {
    const stream = peopleStream(42, 10, 2);
    await importMessages(db.pool, inTimeOrder(stream.messages));
    const workers = await startWorkers(db.pool, prefix, client);
    const api = buildApi({
      pool: db.pool,
      temporal: client,
      queuePrefix: prefix,
      log: logger('silent'),
      actor: 'api-tester',
    });
    const base = await api.listen({ host: '127.0.0.1', port: 0 });
    const token = await apiToken(db.pool, 'mlops', 'api-tester');
    const post = async (body: unknown) => {
      const response = await fetch(`${base}/v1/identity/merges`, {
        method: 'POST',
        headers: withToken(token, { 'content-type': 'application/json' }),
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    // The graph lock keeps the first merge running while the second request arrives.
    const holder = await db.pool.connect();
    try {
      await holder.query('begin');
      await lockGraph(holder);
      const first = await post({});
      const second = await post({});
      await holder.query('commit');

      expect(first).toEqual({
        status: 202,
        body: {
          workflowId: MERGE_IDENTITIES_WORKFLOW_ID,
          runId: expect.any(String),
          attached: false,
        },
      });
      expect(second).toEqual({ status: 200, body: { ...first.body, attached: true } });
      const result = await waitForMerge(client, {
        workflowId: MERGE_IDENTITIES_WORKFLOW_ID,
        runId: first.body['runId'] as string,
      });
      expect(result).toMatchObject({ events: stream.messages.length });
      expect(await storedPartition(db.pool)).toEqual(stream.expected);
      const trail = await auditTrail(db.pool, { workflowId: MERGE_IDENTITIES_WORKFLOW_ID });
      const ours = trail.filter((r) => r.runId === first.body['runId']);
      expect(ours.map((r) => r.actor)).toEqual(['api-tester']);

      const bad = await post({ chunkSize: 5 });
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({ error: { code: 'validation' } });
      expect(JSON.stringify(bad.body)).toContain('chunkSize');
    } finally {
      holder.release();
      await api.close();
      await workers.stop();
    }
  });
});
