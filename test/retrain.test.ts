import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { rootCause, startRetrain, waitForRetrain, workflowStatus } from '../client/retrain.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { listVersions, registerVersion } from '../domain/registry.js';
import { retrainInputSchema, retrainWorkflowId } from '../domain/retrain.js';
import { movieLensSlice, prepareModel, startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let workers: Awaited<ReturnType<typeof startWorkers>>;
const prefix = testQueuePrefix('retrain');
const model = `ml-slice-${prefix.slice(-6)}`;
const slice = movieLensSlice(40);

beforeAll(async () => {
  db = await createTestDatabase('retrain');
  client = await testTemporalClient();
  await prepareModel(db.pool, slice.dir, 'ml-slice', model);
  workers = await startWorkers(db.pool, prefix, client);
});

afterAll(async () => {
  await workers.stop();
  await client.connection.close();
  await db.close();
});

const request = (over: Record<string, unknown> = {}) =>
  retrainInputSchema.parse({
    model,
    reason: 'test',
    requestedBy: 'tester',
    training: { epochs: 3 },
    promotion: 'none',
    ...over,
  });

describe('retrainModel on a MovieLens slice', () => {
  it('trains, evaluates, registers version 1 and audits every step; a second request attaches', async () => {
    const first = await startRetrain(client, prefix, request());
    const second = await startRetrain(client, prefix, request({ reason: 'duplicate' }));
    expect(first.workflowId).toBe(retrainWorkflowId(model));
    expect(second).toEqual({ ...first, attached: true });

    const result = await waitForRetrain(client, first.workflowId, first.runId);
    expect(result.version).toBe(1);

    // The split, computed here from the CSV: the last 20% of the time range validates.
    const times = slice.ratings.map((r) => r.ts);
    const min = Math.min(...times);
    const cutoff = min + 0.8 * (Math.max(...times) - min);
    const train = times.filter((t) => t < cutoff).length;
    expect(result.trainingSet.trainRows).toBe(train);
    expect(result.trainingSet.validateRows).toBe(times.length - train);

    for (const m of [result.metrics, result.baseline]) {
      expect(m.auc).toBeGreaterThan(0.5);
      expect(m.auc).toBeLessThan(1);
      expect(m.ndcgAt10).toBeGreaterThan(0);
      expect(m.ndcgAt10).toBeLessThanOrEqual(1);
      expect(m.examples).toBe(times.length - train);
    }
    expect(result.backend).toBe('cpu');

    const [version] = await listVersions(db.pool, model);
    expect(version).toMatchObject({
      version: 1,
      artifactSha256: result.artifactSha256,
      backend: 'cpu',
      createdBy: 'tester',
    });
    expect(version?.rowCounts).toEqual({ train, validate: times.length - train });
    expect(version?.codeCommit).toMatch(/^([0-9a-f]{40}(-dirty)?|unknown)$/);

    const trail = await auditTrail(db.pool, { workflowId: first.workflowId });
    expect(trail.map((r) => r.action)).toEqual([
      'retrain.started',
      'retrain.features-backfilled',
      'retrain.training-set-built',
      'retrain.trained',
      'retrain.evaluated',
      'model.version-registered',
      'model.validated',
    ]);
    expect(trail.every((r) => r.actor === 'tester' && r.subject === `model/${model}`)).toBe(true);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });

    const status = await workflowStatus(client, first.workflowId);
    expect(status).toMatchObject({ status: 'COMPLETED', type: 'retrainModel' });
  });

  it('registers the next version on the next run, and never twice for one run', async () => {
    const run = await startRetrain(client, prefix, request());
    expect(run.attached).toBe(false);
    const result = await waitForRetrain(client, run.workflowId, run.runId);
    expect(result.version).toBe(2);

    const [latest] = await listVersions(db.pool, model);
    if (!latest) throw new Error('no version');
    const again = await registerVersion(db.pool, {
      model,
      runKey: latest.runKey,
      artifactSha256: latest.artifactSha256,
      trainingSet: result.trainingSet,
      backend: latest.backend,
      codeCommit: null,
      metrics: latest.metrics,
      baselineMetrics: latest.baselineMetrics,
      reason: 'retried registration',
      workflowId: latest.workflowId,
      runId: latest.runId,
      createdBy: 'tester',
    });
    expect(again.version).toBe(2);
    expect(await listVersions(db.pool, model)).toHaveLength(2);
  });

  it('fails without retrying for an undeclared model, naming it', async () => {
    const run = await startRetrain(
      client,
      prefix,
      retrainInputSchema.parse({ model: 'nobody', reason: 'test' }),
    );
    const err = await waitForRetrain(client, run.workflowId, run.runId).catch((e: Error) => e);
    expect(rootCause(err)).toMatchObject({
      message: expect.stringContaining('model "nobody" is not declared'),
      type: 'NotFoundFailure',
    });
    const status = await workflowStatus(client, run.workflowId);
    expect(status?.failure).toContain('model "nobody" is not declared');
  });

  it('rejects a bad input inside the workflow with the field named', async () => {
    const handle = await client.workflow.start('retrainModel', {
      workflowId: `retrain/bad-${prefix}`,
      taskQueue: `${prefix}-orchestration`,
      args: [{ model: 'Bad Name!', reason: '' }],
    });
    await expect(handle.result()).rejects.toMatchObject({
      cause: {
        message: expect.stringMatching(/model: .*Bad Name!.*reason/s),
        type: 'ValidationFailure',
      },
    });
  });
});
