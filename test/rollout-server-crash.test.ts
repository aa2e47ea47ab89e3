/**
 * A rollout survives a crash of the Temporal server and of its worker at once, mid-step. This file
 * runs its own dev server (history in a SQLite file, like the embedded default), so killing it
 * leaves the suite's shared server alone. The two versions are registered without training: the
 * rollout routes, waits and judges exposure rows, and never loads a model.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startRollout } from '../client/rollout.js';
import { loadConfig } from '../common/config.js';
import { logger } from '../common/logger.js';
import { createSurface, getSurface, routingChanges } from '../domain/decide/surfaces.js';
import { promoteVersion } from '../domain/registry-aliases.js';
import { registerVersion } from '../domain/registry.js';
import {
  type RolloutState,
  rolloutInputSchema,
  rolloutWorkflowId,
  STATE_QUERY,
} from '../domain/rollout/config.js';
import { listDecisions, listRollouts } from '../domain/rollout/store.js';
import type { RolloutResult } from '../workflows/rolloutModel.js';
import { type RunningTemporal, startEmbeddedTemporal } from '../runtime/temporal-server.js';
import { spawnWorker, type WorkerChild } from './fixtures/spawn-worker.js';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testQueuePrefix,
  until,
} from './support.js';

const MODEL = 'server-crash-model';
const SURFACE = 'server-crash';
const log = logger('warn');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-server-crash-'));
let db: TestDatabase;
let server: RunningTemporal;
let ports: { port: number; uiPort: number };

function startServer(): Promise<RunningTemporal> {
  const config = loadConfig({ ...process.env, DATABASE_URL: '', TEMPORAL_ADDRESS: '' });
  return startEmbeddedTemporal({
    ...ports,
    dbFilename: path.join(root, 'temporal.db'),
    ownerFile: path.join(root, 'temporal.json'),
    cacheDir: config.POPS_CACHE_DIR,
    explicitCli: config.POPS_TEMPORAL_CLI,
    logFile: path.join(root, 'temporal.log'),
    log,
  });
}

/** SIGKILLs the dev server (its pid is in the owner file) and waits until it is gone. */
async function killServer(): Promise<void> {
  const { pid } = JSON.parse(fs.readFileSync(path.join(root, 'temporal.json'), 'utf8')) as {
    pid: number;
  };
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
      await sleep(100);
    } catch {
      fs.rmSync(path.join(root, 'temporal.json'), { force: true });
      return;
    }
  }
  throw new Error(`temporal dev server ${pid} did not exit after SIGKILL`);
}

async function connect(): Promise<Client> {
  return new Client({ connection: await Connection.connect({ address: server.address }) });
}

/** Registers a version with a placeholder artifact and training set (never loaded here). */
async function seedVersions() {
  const q = db.pool;
  await q.query(`insert into models (name, source, created_by) values ($1, 'none', 'tester')`, [
    MODEL,
  ]);
  await q.query(
    `insert into model_artifacts (sha256, topology, weight_specs, weights, preprocessing)
     values ('placeholder', '{}', '[]', '\\x00', '{}')`,
  );
  const set = {
    setKey: 'server-crash-set',
    trainFrom: '2020-01-01T00:00:00.000Z',
    trainUntil: '2020-02-01T00:00:00.000Z',
    validateUntil: '2020-03-01T00:00:00.000Z',
    features: [] as string[],
    trainRows: 1,
    validateRows: 1,
  };
  await q.query(
    `insert into training_sets (set_key, model, source, train_from, train_until, validate_until,
       features, train_rows, validate_rows) values ($1, $2, 'none', $3, $4, $5, '{}', 1, 1)`,
    [set.setKey, MODEL, set.trainFrom, set.trainUntil, set.validateUntil],
  );
  for (const run of ['v1', 'v2']) {
    await registerVersion(q, {
      model: MODEL,
      runKey: `server-crash/${run}`,
      artifactSha256: 'placeholder',
      trainingSet: set as never,
      backend: 'cpu',
      codeCommit: null,
      metrics: {} as never,
      baselineMetrics: {} as never,
      reason: `the ${run} of the server-crash test`,
      workflowId: 'server-crash-test',
      runId: run,
      createdBy: 'tester',
    });
  }
  await promoteVersion(q, {
    model: MODEL,
    version: 1,
    actor: 'tester',
    reason: 'the stable version',
    workflowId: null,
    moveKey: 'server-crash/promote-v1',
  });
  await createSurface(q, { name: SURFACE, model: MODEL, actor: 'tester', reason: 'crash test' });
}

beforeAll(async () => {
  ports = { port: await freePort(), uiPort: await freePort() };
  server = await startServer();
  db = await createTestDatabase('rollout-server-crash');
  await seedVersions();
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await db?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

it(
  'resumes at the same step and weight after the Temporal server and the worker are SIGKILLed',
  { timeout: 300_000 },
  async () => {
    const prefix = testQueuePrefix('server-crash');
    let client = await connect();
    let worker: WorkerChild = await spawnWorker(db.url, prefix, server.address);
    const state = () =>
      client.workflow.getHandle(rolloutWorkflowId(SURFACE)).query<RolloutState>(STATE_QUERY);
    try {
      const input = rolloutInputSchema.parse({
        model: MODEL,
        version: 2,
        surface: SURFACE,
        steps: [20, 100],
        bake: '60s',
        analysisEvery: '1s',
        minSamplePerArm: 30,
        minOperationalSample: 30,
        guardrails: [{ metric: 'ctr' }],
        requestedBy: 'tester',
      });
      const started = await startRollout(client, prefix, input, db.pool);
      const before = await until('two ticks at the first step', async () => {
        const s = await state();
        return s.stepIndex === 0 && s.tick >= 2 && s;
      });
      expect(before).toMatchObject({ weightBp: 2000, phase: 'baking' });

      await worker.stop(); // SIGKILL
      await killServer();
      await client.connection.close().catch(() => undefined);
      await sleep(2000);
      server = await startServer();
      client = await connect();
      worker = await spawnWorker(db.url, prefix, server.address);

      const after = await until(
        'ticks after the restart',
        async () => {
          const s = await state();
          return s.tick >= before.tick + 2 && s;
        },
        120_000,
      );
      expect(after).toMatchObject({
        stepIndex: 0,
        weightBp: 2000,
        phase: 'baking',
        windowGeneration: before.windowGeneration,
        stepStartedAt: before.stepStartedAt,
      });
      const surface = await getSurface(db.pool, SURFACE);
      expect(surface?.routes).toContainEqual({ version: 2, role: 'canary', weightBp: 2000 });
      // The surface's creation and the first step: no routing change was made twice.
      expect((await routingChanges(db.pool, SURFACE)).length).toBe(2);
      const [rollout] = await listRollouts(db.pool, SURFACE, 1);
      const made = await listDecisions(db.pool, rollout?.rolloutKey ?? '', 1000);
      expect(made.length).toBeGreaterThanOrEqual(after.tick);
      expect(new Set(made.map((d) => d.tick)).size).toBe(made.length);

      const handle = client.workflow.getHandle<() => Promise<RolloutResult>>(started.workflowId);
      await handle.signal('abortRollout', { by: 'lead', reason: 'done here' });
      expect((await handle.result()).outcome.outcome).toBe('rolled-back');
      expect((await getSurface(db.pool, SURFACE))?.routes).toEqual([
        { version: 1, role: 'stable', weightBp: 10_000 },
      ]);
    } finally {
      await worker.stop();
      await client.connection.close().catch(() => undefined);
    }
  },
);
