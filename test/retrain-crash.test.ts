import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import type { Client } from '@temporalio/client';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { listVersions } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { movieLensSlice, prepareModel, startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
const prefix = testQueuePrefix('crash');
const model = 'crash-model';

/** Starts a worker for every queue in a child process and resolves once it polls. */
async function workerProcess(): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/worker-process.ts')],
    {
      env: {
        ...process.env,
        POPS_TEST_DB_URL: db.url,
        POPS_TEST_TEMPORAL: inject('temporalAddress'),
        POPS_TEST_PREFIX: prefix,
        POPS_TEST_BUNDLE: inject('workflowBundlePath'),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`worker process exited early with ${code}`)));
  });
  return child;
}

async function checkpointEpoch(): Promise<number> {
  const found = await db.pool.query<{ epoch: number }>(
    'select max(epoch)::int as epoch from training_checkpoints',
  );
  return found.rows[0]?.epoch ?? 0;
}

beforeAll(async () => {
  db = await createTestDatabase('crash');
  client = await testTemporalClient();
  await prepareModel(db.pool, movieLensSlice(150).dir, 'ml-crash', model);
});

afterAll(async () => {
  await client.connection.close();
  await db.close();
});

describe('a worker crash during training', () => {
  it('resumes from the last checkpointed epoch on another worker and registers exactly one version', async () => {
    const doomed = await workerProcess();
    onTestFinished(() => {
      doomed.kill('SIGKILL');
    });
    const input = retrainInputSchema.parse({
      model,
      reason: 'crash test',
      promotion: 'none',
      training: { epochs: 6, batchSize: 256 },
      heartbeatTimeoutSeconds: 10,
    });
    const run = await startRetrain(client, prefix, input);

    // A guard against a hang, not a timing assertion: on a loaded 2-core machine the backfill and
    // training set before the first epoch took over 100 s.
    const deadline = Date.now() + 600_000;
    while ((await checkpointEpoch()) < 2) {
      if (Date.now() > deadline) throw new Error('training never reached epoch 2');
      await sleep(100);
    }
    doomed.kill('SIGKILL');
    const killedAt = await checkpointEpoch();
    expect(killedAt).toBeLessThan(6);

    const survivor = await startWorkers(db.pool, prefix, client);
    try {
      const result = await waitForRetrain(client, run.workflowId, run.runId);
      expect(result.version).toBe(1);
      expect(result.resumedFromEpoch).toBeGreaterThanOrEqual(2);
      expect(result.resumedFromEpoch).toBeLessThanOrEqual(killedAt + 1);
    } finally {
      await survivor.stop();
    }

    expect(await listVersions(db.pool, model)).toHaveLength(1);
    const trained = (await auditTrail(db.pool, { workflowId: run.workflowId })).filter(
      (r) => r.action === 'retrain.trained',
    );
    expect(trained).toHaveLength(1);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });
    const history = await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory();
    const attempts = (history.events ?? [])
      .map((e) => e.activityTaskStartedEventAttributes?.attempt)
      .filter((a): a is number => typeof a === 'number');
    expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
  }, 900_000);
});
