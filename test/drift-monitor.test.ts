/**
 * monitorDrift end to end on MovieLens (users 1..150) with a time-shifted current window: a
 * model trained on ratings before 2005 is watched against ratings of 2015 on. Real Temporal, real
 * PostgreSQL, real training.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureMonitor, runDrift } from '../client/drift.js';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { auditTrail } from '../domain/audit.js';
import { driftConfigSchema, driftScheduleId } from '../domain/drift/config.js';
import { getRun, listRuns } from '../domain/drift/runs.js';
import { getAliases } from '../domain/registry.js';
import { type RetrainResult, retrainInputSchema, retrainWorkflowId } from '../domain/retrain.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { movieLensSlice, prepareModel } from './retrain-support.js';

let h: Harness;
const slice = movieLensSlice(150);
const suffix = Math.random().toString(36).slice(2, 8);
const watched = `drift-a-${suffix}`;
const twin = `drift-b-${suffix}`;
const scheduled = `drift-c-${suffix}`;

const config = (over: Record<string, unknown> = {}) =>
  driftConfigSchema.parse({
    current: { days: 3 * 365, end: '2018-10-01T00:00:00Z' },
    minRows: 50,
    consecutive: 2,
    cooldownHours: 24,
    ...over,
  });

/** Trains version 1 on ratings before 2005, approves it, and returns the result. */
async function firstVersion(model: string): Promise<RetrainResult> {
  const run = await startRetrain(
    h.client,
    h.prefix,
    retrainInputSchema.parse({
      model,
      reason: 'first version',
      requestedBy: 'tester',
      trainUntil: '2004-01-01T00:00:00Z',
      validateUntil: '2005-01-01T00:00:00Z',
      training: { epochs: 3 },
    }),
  );
  const handle = h.client.workflow.getHandle(run.workflowId, run.runId);
  // Sent before the candidate waits: a decision that arrives early is kept.
  await handle.signal('approvePromotion', { by: 'lead', reason: 'first model' });
  return waitForRetrain(h.client, run.workflowId, run.runId);
}

/** The executions of `retrain/<model>` (each start is one). */
async function retrainRuns(model: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const w of h.client.workflow.list({
    query: `WorkflowId = '${retrainWorkflowId(model)}'`,
  })) {
    ids.push(w.runId);
  }
  return ids;
}

/** Rejects a candidate that waits for approval; one that was not blessed has already ended. */
async function endWaiting(handle: { signal: (name: string, arg: unknown) => Promise<void> }) {
  await handle
    .signal('rejectPromotion', { by: 'lead', reason: 'test ends here' })
    .catch((err: Error) => {
      if (!/completed|not found/i.test(err.message)) throw err;
    });
}

beforeAll(async () => {
  h = await startHarness('drift-monitor', { api: true });
  await prepareModel(h.db.pool, slice.dir, `ml-drift-${suffix}`, watched);
  await h.db.pool.query(
    `insert into models (name, source, created_by) select $1, source, 'test' from models where name = $2`,
    [twin, watched],
  );
  await h.db.pool.query(
    `insert into models (name, source, created_by) select $1, source, 'test' from models where name = $2`,
    [scheduled, watched],
  );
  for (const m of [watched, twin, scheduled]) {
    expect((await firstVersion(m)).promotion.outcome).toBe('promoted');
  }
}, 600_000);

afterAll(async () => {
  await h?.close();
});

describe('monitorDrift', () => {
  it('a first drifted window does not retrain, a second does, once; the report explains', async () => {
    const cfg = config();
    const first = await (
      await runDrift(h.client, h.prefix, { model: watched, config: cfg, requestedBy: 'tester' })
    ).result();
    expect(first.drifted).toBe(true);
    expect(first.decision.decision).toBe('consecutive-short');
    expect(first.retrain).toBeNull();
    expect(await retrainRuns(watched)).toHaveLength(1); // version 1's own

    const stored = await getRun(h.db.pool, watched, first.driftRunId);
    expect(stored?.reference.kind).toBe('training');
    expect(stored?.reference.to).toBe('2004-01-01T00:00:00.000Z');
    expect(stored?.current).toMatchObject({
      from: new Date(Date.parse('2018-10-01T00:00:00Z') - 3 * 365 * 86_400_000).toISOString(),
      to: '2018-10-01T00:00:00.000Z',
    });
    // Rows: the slice's ratings in each window, counted here from the CSV.
    const count = (from: string, to: string) =>
      slice.ratings.filter((r) => r.ts * 1000 >= Date.parse(from) && r.ts * 1000 < Date.parse(to))
        .length;
    expect(stored?.current.rows).toBe(count(stored?.current.from ?? '', stored?.current.to ?? ''));
    const popularity = stored?.report.features.find(
      (f) => f.feature.startsWith('item_popularity@') && f.feature.endsWith(':lifetime'),
    );
    // Lifetime popularity only grows: a decade later it has moved far past any floor.
    expect(popularity).toMatchObject({ kind: 'numeric', test: 'ks', decision: 'drift' });
    expect(popularity?.histogram?.edges.length).toBeGreaterThan(0);
    expect(stored?.report.prediction).not.toBeNull();

    const second = await (
      await runDrift(h.client, h.prefix, { model: watched, config: cfg, requestedBy: 'tester' })
    ).result();
    expect(second.decision).toMatchObject({ decision: 'retrain-requested', consecutive: 2 });
    // The second run read the reference's counts from the cache: the same window, the same figures.
    const again = await getRun(h.db.pool, watched, second.driftRunId);
    const figures = (r: typeof stored) =>
      r?.report.features.map((f) => [f.feature, f.kind, f.statistic, f.pValue, f.effect.value]);
    expect(figures(again)).toEqual(figures(stored));
    expect(second.retrain?.workflowId).toBe(retrainWorkflowId(watched));

    const third = await (
      await runDrift(h.client, h.prefix, { model: watched, config: cfg, requestedBy: 'tester' })
    ).result();
    expect(third.decision.decision).toBe('consecutive-short'); // the count restarts after a request
    expect(await retrainRuns(watched)).toHaveLength(2);

    // The triggered retraining validates against production and records its figures.
    const triggered = h.client.workflow.getHandle(
      retrainWorkflowId(watched),
      second.retrain?.runId,
    );
    await endWaiting(triggered);
    const result = (await triggered.result()) as RetrainResult;
    expect(result.validation.productionVersion).toBe(1);
    expect(result.validation.differences.map((d) => d.metric)).toEqual([
      'auc',
      'logLoss',
      'ece',
      'ndcgAt10',
    ]);
    expect(['rejected', 'not-blessed']).toContain(result.promotion.outcome);
    expect(await getAliases(h.db.pool, watched)).toMatchObject({ production: 1 });

    const actions = (await auditTrail(h.db.pool, { subject: `model/${watched}` })).map(
      (a) => a.action,
    );
    expect(actions.filter((a) => a === 'drift.decided')).toHaveLength(3);
    expect(actions.filter((a) => a === 'drift.retrain-requested')).toHaveLength(1);
    expect(actions).toContain('model.validated');
    const runs = await listRuns(h.db.pool, watched);
    expect(runs.map((r) => r.decision)).toEqual([
      'consecutive-short',
      'retrain-requested',
      'consecutive-short',
    ]);
  }, 900_000);

  it('explains a run through the CLI and the API, and refuses bad input naming it', async () => {
    const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: h.prefix }));
    const [latest] = await listRuns(h.db.pool, watched, 1);
    const shown = await pops(['drift', 'show', watched]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`drift run ${latest?.id} of ${watched} v1`);
    expect(shown.stdout).toMatch(/item_popularity@\d+:lifetime\s+numeric\s+ks/);
    expect(shown.stdout).toContain('decision: consecutive-short');
    const json = JSON.parse((await pops(['drift', 'show', watched, '--json'])).stdout) as {
      id: number;
      report: { features: Array<{ histogram?: { reference: number[] } }> };
    };
    expect(json.id).toBe(latest?.id);
    expect(json.report.features.some((f) => (f.histogram?.reference.length ?? 0) > 1)).toBe(true);

    const api = await h.fetch(`${h.base}/v1/drift/${watched}/runs/${latest?.id}`);
    expect(api.status).toBe(200);
    expect(((await api.json()) as { decision: string }).decision).toBe('consecutive-short');
    const list = (await (await h.fetch(`${h.base}/v1/drift/${watched}/runs`)).json()) as {
      runs: unknown[];
    };
    expect(list.runs.length).toBeGreaterThanOrEqual(3);

    const badRef = await pops(['drift', 'run', watched, '--reference', 'yesterday']);
    expect(badRef.code).toBe(2);
    expect(badRef.stderr).toContain('"yesterday"');
    const badEnd = await pops(['drift', 'monitor', watched, '--current-end', 'soon']);
    expect(badEnd.code).toBe(2);
    expect(badEnd.stderr).toMatch(/current\.end.*"soon"/);
    const badBody = await h.fetch(`${h.base}/v1/drift/${watched}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ config: { consecutive: 0 } }),
    });
    expect(badBody.status).toBe(400);
    expect(await badBody.text()).toMatch(/consecutive/);
    const ghost = await pops(['drift', 'show', 'ghost-model']);
    expect(ghost.code).toBe(2);
    expect(ghost.stderr).toContain('"ghost-model"');
    const noRetrain = await pops(['models', 'approve', watched, '--reason', 'r']);
    expect(noRetrain.code).toBe(2);
    expect(noRetrain.stderr).toMatch(/no retraining/);

    // A first version (no production: blessed on its AUC alone) waits; the CLI approves it.
    const fresh = `drift-d-${suffix}`;
    await h.db.pool.query(
      `insert into models (name, source, created_by) select $1, source, 'test' from models where name = $2`,
      [fresh, watched],
    );
    const run = await startRetrain(
      h.client,
      h.prefix,
      retrainInputSchema.parse({
        model: fresh,
        reason: 'approved from the CLI',
        trainUntil: '2004-01-01T00:00:00Z',
        validateUntil: '2005-01-01T00:00:00Z',
        training: { epochs: 2 },
      }),
    );
    const handle = h.client.workflow.getHandle(run.workflowId, run.runId);
    let stage = '';
    for (let i = 0; i < 1200 && stage !== 'awaiting-approval'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      stage = (await handle.query<{ stage: string }>('progress')).stage;
    }
    const approved = await pops(['models', 'approve', fresh, '--reason', 'looks right']);
    expect(approved.code).toBe(0);
    expect(approved.stdout).toMatch(/v1 promoted: production none -> v1/);
    expect(await getAliases(h.db.pool, fresh)).toMatchObject({ production: 1, candidate: 1 });
  }, 600_000);

  it('two monitors firing together start exactly one retraining', async () => {
    // With a canary configured, the retraining is asked to roll its blessed candidate out there.
    const canary = { surface: `drift-canary-${suffix}`, steps: [50, 100], bake: '1m' };
    const cfg = config({ consecutive: 1, canary });
    const [a, b] = await Promise.all([
      runDrift(h.client, h.prefix, { model: twin, config: cfg, requestedBy: 'one' }),
      runDrift(
        h.client,
        h.prefix,
        { model: twin, config: cfg, requestedBy: 'two' },
        () => new Date(Date.now() + 1),
      ),
    ]);
    const results = await Promise.all([a.result(), b.result()]);
    const decisions = results.map((r) => r.decision.decision).sort();
    expect(decisions).toEqual(['cooldown', 'retrain-requested']);
    expect(await retrainRuns(twin)).toHaveLength(2); // version 1's, and one more
    const handle = h.client.workflow.getHandle(retrainWorkflowId(twin));
    const history = await handle.fetchHistory();
    const payload =
      history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data;
    const asked = JSON.parse(Buffer.from(payload ?? []).toString()) as Record<string, unknown>;
    expect(asked).toMatchObject({ promotion: 'canary', canary: { surface: canary.surface } });
    await endWaiting(handle);
    await handle.result();
  }, 900_000);

  it('the Schedule runs the monitor, and its second drifted run starts one retraining', async () => {
    await configureMonitor(h.db.pool, h.client, h.prefix, {
      model: scheduled,
      config: config({ every: '4s', prediction: false }),
      actor: 'tester',
    });
    const schedule = h.client.schedule.getHandle(driftScheduleId(scheduled));
    try {
      let runs = await listRuns(h.db.pool, scheduled);
      for (let i = 0; i < 600 && !runs.some((r) => r.retrain); i++) {
        await new Promise((r) => setTimeout(r, 500));
        runs = await listRuns(h.db.pool, scheduled);
      }
      await schedule.pause('test done');
      const ordered = runs.slice().reverse();
      expect(ordered.slice(0, 2).map((r) => r.decision)).toEqual([
        'consecutive-short',
        'retrain-requested',
      ]);
      expect(ordered.every((r) => r.requestedBy === `schedule/${driftScheduleId(scheduled)}`)).toBe(
        true,
      );
      expect(ordered[1]?.report.notes).toContain(
        'prediction drift and the performance check are off in this config',
      );
    } finally {
      await schedule.delete();
    }
    // Later runs count again from one, then meet the cooldown: still one retraining.
    const settled = await listRuns(h.db.pool, scheduled);
    expect(settled.filter((r) => r.decision === 'retrain-requested')).toHaveLength(1);
    expect(await retrainRuns(scheduled)).toHaveLength(2);
    await endWaiting(h.client.workflow.getHandle(retrainWorkflowId(scheduled)));
    await h.client.workflow.getHandle(retrainWorkflowId(scheduled)).result();
  }, 900_000);

  it('a candidate worse than production is not blessed, and production does not move', async () => {
    const run = await startRetrain(
      h.client,
      h.prefix,
      retrainInputSchema.parse({
        model: watched,
        reason: 'a deliberately untrained candidate',
        requestedBy: 'tester',
        trainUntil: '2004-01-01T00:00:00Z',
        validateUntil: '2005-01-01T00:00:00Z',
        training: { epochs: 1, learningRate: 1e-7, seed: 3 },
      }),
    );
    const result = await waitForRetrain(h.client, run.workflowId, run.runId);
    expect(result.validation.blessed).toBe(false);
    expect(result.promotion.outcome).toBe('not-blessed');
    expect(result.validation.reasons.join(' ')).toMatch(/auc/i);
    const auc = result.validation.differences.find((d) => d.metric === 'auc');
    expect(auc?.pass).toBe(false);
    expect(await getAliases(h.db.pool, watched)).toMatchObject({ production: 1 });
  }, 900_000);
});
