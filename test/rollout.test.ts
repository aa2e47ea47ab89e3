/**
 * rolloutModel end to end on real Temporal and PostgreSQL: a version trained on MovieLens (users
 * 1..150) and promoted serves each test's surface; version 2 (the same artifact, registered under
 * another run) is rolled out. Each tick's data is inserted as exposure and outcome rows with known
 * counts, so decisions are deterministic; one test also sends real /v1/decide traffic through the
 * rollback to check the exposure table afterwards, and one SIGKILLs the worker mid-step.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { rootCause, startRetrain, waitForRetrain } from '../client/retrain.js';
import { rolloutStatus, startRollout } from '../client/rollout.js';
import { withTransaction } from '../common/db.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { type Exposure, insertExposures } from '../domain/decide/exposures.js';
import { createSurface, getSurface, routingChanges } from '../domain/decide/surfaces.js';
import { getAliases, getVersion, registerVersion } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import {
  type RolloutInput,
  type RolloutState,
  rolloutInputSchema,
  rolloutWorkflowId,
  STATE_QUERY,
} from '../domain/rollout/config.js';
import type { TickAnalysis } from '../domain/rollout/judge.js';
import { listDecisions, listRollouts } from '../domain/rollout/store.js';
import type { RolloutResult } from '../workflows/rolloutModel.js';
import { popsRunner } from './cli-support.js';
import { spawnWorker } from './fixtures/spawn-worker.js';
import { type Harness, startHarness } from './harness.js';
import { movieLensSlice, prepareModel } from './retrain-support.js';
import { testQueuePrefix, until } from './support.js';

let h: Harness;
const slice = movieLensSlice(150);
const suffix = Math.random().toString(36).slice(2, 8);
const model = `rollout-${suffix}`;
const source = `ml-rollout-${suffix}`;
const other = `rollout-other-${suffix}`;
const surface = (name: string) => `${name}-${suffix}`;
const SURFACES = ['srm', 'short', 'ops', 'biz', 'good', 'hands', 'crash', 'refuse', 'handoff'].map(
  surface,
);
const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: h.prefix }));

function input(name: string, over: Partial<RolloutInput> = {}) {
  return rolloutInputSchema.parse({
    model,
    version: 2,
    surface: name,
    steps: [10, 100],
    bake: '60s',
    analysisEvery: '1s',
    minSamplePerArm: 30,
    minOperationalSample: 30,
    requestedBy: 'tester',
    ...over,
  });
}

async function begin(name: string, over: Partial<RolloutInput> = {}, prefix = h.prefix) {
  const started = await startRollout(h.client, prefix, input(name, over));
  expect(started.attached).toBe(false);
  // A failed test leaves no rollout running behind it.
  onTestFinished(() =>
    h.client.workflow
      .getHandle(started.workflowId)
      .signal('abortRollout', { by: 'tester', reason: 'test finished' })
      .catch(() => undefined),
  );
  return h.client.workflow.getHandle<() => Promise<RolloutResult>>(
    started.workflowId,
    started.runId,
  );
}

async function state(name: string): Promise<RolloutState> {
  return h.client.workflow.getHandle(rolloutWorkflowId(name)).query<RolloutState>(STATE_QUERY);
}

/** Waits until step `index` is routed and baking (or paused); answers the state. */
function step(name: string, index: number): Promise<RolloutState> {
  return until(`${name} at step ${index}`, async () => {
    const s = await state(name);
    return s.stepIndex === index && ['baking', 'paused'].includes(s.phase) && s;
  });
}

interface Traffic {
  arm: 'stable' | 'canary';
  /** Persons are `<tag>-<p>`, p = 1..persons, each with perPerson exposures. */
  tag: string;
  persons: number;
  perPerson: number;
  /** Whether exposure x (1-based) of person p was clicked / failed. */
  click?: (p: number, x: number) => boolean;
  error?: (p: number, x: number) => boolean;
  latencyMs?: number;
}

/**
 * Inserts exposures (and their clicks) routed under the surface's current generation, all in one
 * transaction: a tick sees all of them or none.
 */
async function traffic(name: string, ...arms: Traffic[]) {
  const found = await getSurface(h.db.pool, name);
  const rows: Exposure[] = [];
  const clicked: string[] = [];
  for (const t of arms) {
    const route = found?.routes.find((r) => r.role === t.arm);
    for (let p = 1; p <= t.persons; p++) {
      for (let x = 1; x <= t.perPerson; x++) {
        const decisionId = randomUUID();
        rows.push({
          decisionId,
          surface: name,
          personId: `${t.tag}-${p}`,
          version: route?.version ?? (t.arm === 'stable' ? 1 : 2),
          arm: t.arm,
          generation: found?.generation ?? 1,
          items: ['i1'],
          scores: [1],
          latencyMs: t.latencyMs ?? 12,
          fallback: null,
          error: t.error?.(p, x) ?? false,
          at: new Date(),
        });
        if (t.click?.(p, x)) clicked.push(decisionId);
      }
    }
  }
  await withTransaction(h.db.pool, async (client) => {
    await insertExposures(client, rows);
    await client.query(
      `insert into outcomes (decision_id, item_id, type)
       select d, 'i1', 'click' from unnest($1::uuid[]) as d`,
      [clicked],
    );
  });
}

/** The same healthy traffic on both arms of a split (persons in proportion to the weight). */
async function healthy(name: string, tag: string, stablePersons: number, canaryPersons: number) {
  const click = (p: number, x: number) => (p + x) % 5 === 0;
  const arm = (a: 'stable' | 'canary', persons: number): Traffic[] =>
    persons > 0 ? [{ arm: a, tag: `${tag}-${a}`, persons, perPerson: 3, click }] : [];
  await traffic(name, ...arm('stable', stablePersons), ...arm('canary', canaryPersons));
}

async function decisions(name: string) {
  const [latest] = await listRollouts(h.db.pool, name, 1);
  return latest ? (await listDecisions(h.db.pool, latest.rolloutKey, 1000)).reverse() : [];
}

const analysisOf = (d: { analysis: unknown }) => d.analysis as TickAnalysis;

async function routesOf(name: string) {
  return (await getSurface(h.db.pool, name))?.routes;
}

beforeAll(async () => {
  h = await startHarness('rollout', { api: true });
  await prepareModel(h.db.pool, slice.dir, source, model);
  const run = await startRetrain(
    h.client,
    h.prefix,
    retrainInputSchema.parse({
      model,
      reason: 'first version',
      requestedBy: 'tester',
      trainUntil: '2004-01-01T00:00:00Z',
      validateUntil: '2005-01-01T00:00:00Z',
      training: { epochs: 2 },
    }),
  );
  await h.client.workflow
    .getHandle(run.workflowId, run.runId)
    .signal('approvePromotion', { by: 'lead', reason: 'first model' });
  const first = await waitForRetrain(h.client, run.workflowId, run.runId);
  expect(first.promotion.outcome).toBe('promoted');
  // Version 2: version 1's artifact and training set registered by another run, the canary.
  const v1 = await getVersion(h.db.pool, model, 1);
  if (!v1) throw new Error('version 1 is missing');
  const v2 = await registerVersion(h.db.pool, {
    model,
    runKey: `rollout-test-${suffix}/v2`,
    artifactSha256: v1.artifactSha256,
    trainingSet: { ...first.trainingSet },
    backend: v1.backend,
    codeCommit: null,
    metrics: v1.metrics,
    baselineMetrics: v1.baselineMetrics,
    reason: 'the canary of the rollout tests',
    workflowId: 'rollout-test',
    runId: suffix,
    createdBy: 'tester',
  });
  expect(v2.version).toBe(2);
  for (const name of SURFACES) {
    await createSurface(h.db.pool, { name, model, actor: 'tester', reason: 'rollout test' });
  }
  await h.db.pool.query(`insert into models (name, source, created_by) values ($1, $2, 'tester')`, [
    other,
    source,
  ]);
}, 600_000);

afterAll(async () => {
  await h?.close();
});

describe('rolloutModel', () => {
  it('holds on a sample-ratio mismatch without judging, and a resume starts a new window', async () => {
    const name = surface('srm');
    const handle = await begin(name, { guardrails: [{ metric: 'ctr' }] });
    await step(name, 0);
    // A 10% canary with 25% of the persons: far from the split.
    await healthy(name, 'a', 300, 100);
    const held = await until('the hold', async () => {
      const s = await state(name);
      return s.hold?.reason === 'sample-ratio-mismatch' && s;
    });
    expect(held.phase).toBe('held');
    const srm = (await decisions(name)).find((d) => d.decision === 'srm-hold');
    const a = analysisOf(srm ?? { analysis: {} });
    expect(a.srm.persons).toEqual({ stable: 300, canary: 100 });
    expect(a.srm.pValue).toBeLessThan(1e-10);
    expect(a.guardrails.every((g) => !g.judged && !g.breach)).toBe(true);
    expect(await routesOf(name)).toContainEqual({ version: 2, role: 'canary', weightBp: 1000 });

    // Held: not judged at all.
    const ticks = held.tick;
    await sleep(2500);
    expect((await state(name)).tick).toBe(ticks);
    const actions = (await auditTrail(h.db.pool, { subject: `surface/${name}` })).map(
      (r) => r.action,
    );
    expect(actions).toContain('rollout.held');

    await handle.signal('resumeRollout', { by: 'lead', reason: 'logging fixed' });
    const resumed = await until('a tick on the new window', async () => {
      const s = await state(name);
      return s.hold === null && (s.latest?.tick ?? 0) > ticks && s;
    });
    expect(resumed.phase).toBe('baking');
    expect(Date.parse(resumed.stepStartedAt ?? '')).toBeGreaterThan(
      Date.parse(held.stepStartedAt ?? ''),
    );
    // The old rows are not in the new window.
    expect(analysisOf(resumed.latest ?? { analysis: {} }).arms.canary.persons).toBe(0);

    await handle.signal('abortRollout', { by: 'lead', reason: 'done here' });
    const result = await handle.result();
    expect(result.outcome).toMatchObject({ outcome: 'rolled-back', trigger: 'abort', by: 'lead' });
  });

  it('extends a step that is short of data, then pauses it for a person: never a pass or a fail', async () => {
    const name = surface('short');
    const handle = await begin(name, {
      steps: [50, 100],
      bake: '2s',
      maxExtensions: 2,
      minSamplePerArm: 100,
    });
    await step(name, 0);
    await healthy(name, 'a', 20, 20);
    const paused = await until(
      'the pause',
      async () => {
        const s = await state(name);
        return s.hold?.reason === 'insufficient-data' && s;
      },
      30_000,
    );
    expect(paused).toMatchObject({ phase: 'paused', extensions: 2, stepIndex: 0, weightBp: 5000 });
    const made = (await decisions(name)).map((d) => d.decision);
    expect(made.filter((d) => d === 'extend')).toHaveLength(2);
    expect(made.filter((d) => d === 'pause-insufficient')).toHaveLength(1);
    expect(made.indexOf('pause-insufficient')).toBeGreaterThan(made.lastIndexOf('extend'));
    expect(made).not.toContain('pass');
    expect(made).not.toContain('rollback');
    const [row] = await listRollouts(h.db.pool, name, 1);
    expect(row).toMatchObject({
      state: 'running',
      phase: 'paused',
      hold: { reason: 'insufficient-data' },
    });

    // With enough data, a resume gives the step a new bake, and it passes.
    await healthy(name, 'b', 150, 150);
    await handle.signal('resumeRollout', { by: 'lead', reason: 'traffic is back' });
    const next = await step(name, 1);
    expect(next).toMatchObject({ weightBp: 10_000, extensions: 0 });
    expect((await decisions(name)).map((d) => d.decision)).toContain('pass');
    await handle.signal('abortRollout', { by: 'lead', reason: 'done here' });
    await handle.result();
  });

  it('rolls back on one confident operational breach, in one tick, before any canary exposure after the switch', async () => {
    const name = surface('ops');
    // Real decisions through /v1/decide all along: the exposure table is the witness.
    let running = true;
    const loops = [0, 1, 2, 3].map(async (w) => {
      for (let i = 0; running; i++) {
        await h
          .fetch(`${h.base}/v1/decide`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ surface: name, userId: `d${w}-${i % 300}`, k: 3 }),
          })
          .then((r) => r.arrayBuffer());
      }
    });
    const handle = await begin(name, {
      guardrails: [{ metric: 'error_rate', margin: 0.01 }],
      minSamplePerArm: 100_000,
    });
    const routed = await step(name, 0);
    // The API serves the canary from its poll after the change: wait until it has (a loaded
    // machine may take longer than a poll or two), so that canary exposures precede the switch.
    await until('a canary exposure of the decide loops', async () => {
      const { rows } = await h.db.pool.query(
        `select 1 from exposures where surface = $1 and version = 2 and person_id ~ '(^|:)d[0-3]-'`,
        [name],
      );
      return rows.length > 0;
    });
    const before = (await decisions(name)).length;
    await traffic(
      name,
      { arm: 'stable', tag: 'ok', persons: 400, perPerson: 2 },
      { arm: 'canary', tag: 'bad', persons: 50, perPerson: 2, error: () => true },
    );
    const result = await handle.result();
    await sleep(2000); // decisions keep coming after the switch
    running = false;
    await Promise.all(loops);
    await sleep(500); // the API's exposure buffer flushes every 50 ms

    expect(result.outcome).toMatchObject({ outcome: 'rolled-back', trigger: 'guardrail' });
    if (result.outcome.outcome !== 'rolled-back') throw new Error('not rolled back');
    const made = (await decisions(name)).slice(before);
    const saw = (d: (typeof made)[number]) =>
      (analysisOf(d).guardrails[0]?.canary.events ?? 0) >= 100;
    const first = made.findIndex(saw);
    expect(made[first]?.decision).toBe('rollback');
    expect(made.slice(first + 1)).toHaveLength(0);
    expect(result.outcome.breachDecisionId).toBe(made[first]?.decisionId);
    const breach = analysisOf(made[first] ?? { analysis: {} }).guardrails[0];
    expect(breach).toMatchObject({ metric: 'error_rate', kind: 'operational', breach: true });
    expect(breach?.interval?.lower).toBeGreaterThan(0.01);

    expect(await routesOf(name)).toEqual([{ version: 1, role: 'stable', weightBp: 10_000 }]);
    const [row] = await listRollouts(h.db.pool, name, 1);
    expect(row).toMatchObject({ state: 'rolled-back', breachDecisionId: made[first]?.decisionId });
    process.stdout.write(
      `rollback latency (breach decision -> routing commit): ${row?.rollbackLatencyMs} ms\n`,
    );
    // Recorded, not timed here: the < 1 s goal is a benchmark figure (no timed tests).
    expect(row?.rollbackLatencyMs).toBeGreaterThanOrEqual(0);

    const switchGeneration = result.outcome.generation;
    const counts = await h.db.pool.query<{
      canary_before: number;
      after: number;
      canary_after: number;
    }>(
      `select count(*) filter (where version = 2 and generation < $2)::int as canary_before,
              count(*) filter (where generation >= $2)::int as after,
              count(*) filter (where version = 2 and generation >= $2)::int as canary_after
         from exposures where surface = $1 and person_id not like 'ok-%' and person_id not like 'bad-%'`,
      [name, switchGeneration],
    );
    expect(counts.rows[0]?.canary_before).toBeGreaterThan(0);
    expect(counts.rows[0]?.after).toBeGreaterThan(0);
    expect(counts.rows[0]?.canary_after).toBe(0);
    expect(routed.windowGeneration).toBeLessThan(switchGeneration);
    const actions = (await auditTrail(h.db.pool, { subject: `surface/${name}` })).map(
      (r) => r.action,
    );
    expect(actions).toEqual(
      expect.arrayContaining([
        'rollout.started',
        'rollout.tick',
        'rollout.rolled-back',
        'surface.routed',
      ]),
    );
    expect((await verifyAudit(h.db.pool)).ok).toBe(true);
  });

  it('rolls back a business regression judged by the confidence sequence', async () => {
    const name = surface('biz');
    const handle = await begin(name, {
      steps: [50, 100],
      guardrails: [{ metric: 'ctr', margin: 0.01 }],
      minSamplePerArm: 100,
    });
    await step(name, 0);
    // Stable: 30% of exposures clicked; canary: 5%.
    await traffic(
      name,
      { arm: 'stable', tag: 's', persons: 300, perPerson: 4, click: (p, x) => (p + x) % 10 < 3 },
      { arm: 'canary', tag: 'c', persons: 300, perPerson: 4, click: (p, x) => (p + x) % 20 === 0 },
    );
    const result = await handle.result();
    expect(result.outcome).toMatchObject({ outcome: 'rolled-back', trigger: 'guardrail' });
    const last = (await decisions(name)).at(-1);
    const ctr = analysisOf(last ?? { analysis: {} }).guardrails[0];
    expect(ctr).toMatchObject({
      metric: 'ctr',
      kind: 'business',
      direction: 'higher',
      breach: true,
    });
    expect(ctr?.stable?.estimate).toBeCloseTo(0.3, 6);
    expect(ctr?.canary.estimate).toBeCloseTo(0.05, 6);
    expect(ctr?.interval?.upper).toBeLessThan(-0.01);
    expect(ctr?.stable?.persons).toBe(300);
    expect(await routesOf(name)).toEqual([{ version: 1, role: 'stable', weightBp: 10_000 }]);
    expect(await getAliases(h.db.pool, model)).toMatchObject({ production: 1 });
  });

  it('promotes a healthy candidate: production moves and it serves alone', async () => {
    const name = surface('good');
    const handle = await begin(name, {
      steps: [50, 100],
      bake: '3s',
      guardrails: [
        { metric: 'ctr' },
        { metric: 'error_rate', margin: 0.01 },
        { metric: 'latency_p99', limitMs: 200 },
      ],
      minSamplePerArm: 100,
    });
    await step(name, 0);
    await healthy(name, 'a', 150, 150);
    await step(name, 1);
    await healthy(name, 'b', 0, 150); // 100%: the canary alone
    const result = await handle.result();
    expect(result.outcome).toMatchObject({ outcome: 'promoted', from: 1, to: 2 });
    expect(await getAliases(h.db.pool, model)).toMatchObject({ production: 2, previous: 1 });
    expect(await routesOf(name)).toEqual([{ version: 2, role: 'stable', weightBp: 10_000 }]);
    const made = await decisions(name);
    expect(made.filter((d) => d.decision === 'pass').map((d) => d.stepIndex)).toEqual([0, 1]);
    const atFull = analysisOf(made.at(-1) ?? { analysis: {} });
    expect(atFull.guardrails.find((g) => g.metric === 'ctr')?.judged).toBe(false);
    expect(atFull.guardrails.find((g) => g.metric === 'latency_p99')).toMatchObject({
      judged: true,
      breach: false,
    });
    const [row] = await listRollouts(h.db.pool, name, 1);
    expect(row).toMatchObject({ state: 'promoted', weightBp: 10_000 });
    const changes = await routingChanges(h.db.pool, name);
    expect(changes.map((c) => c.routes)).toEqual([
      [{ version: 2, role: 'stable', weightBp: 10_000 }],
      [
        { version: 1, role: 'stable', weightBp: 0 },
        { version: 2, role: 'canary', weightBp: 10_000 },
      ],
      [
        { version: 1, role: 'stable', weightBp: 5000 },
        { version: 2, role: 'canary', weightBp: 5000 },
      ],
      [{ version: 1, role: 'stable', weightBp: 10_000 }],
    ]);
    const actions = (await auditTrail(h.db.pool, { subject: `surface/${name}` })).map(
      (r) => r.action,
    );
    expect(actions).toContain('rollout.promoted');
  });

  it('pauses, resumes, waits at a gate for an approval, and aborts, through the CLI and the API', async () => {
    const name = surface('hands');
    const handle = await begin(name, {
      steps: [20, 50, 100],
      gates: [50],
      bake: '2s',
      guardrails: [{ metric: 'ctr' }],
    });
    const paused = await pops(['rollout', 'pause', name, '--reason', 'wait for the launch']);
    expect(paused.code).toBe(0);
    await until('the pause', async () => (await state(name)).hold?.reason === 'paused');
    await step(name, 0);
    await healthy(name, 'a', 160, 40);
    await sleep(3500); // past the bake: paused, it does not pass
    expect((await state(name)).stepIndex).toBe(0);
    expect((await decisions(name)).map((d) => d.decision)).toContain('paused');
    expect((await decisions(name)).map((d) => d.decision)).not.toContain('pass');

    const resumed = await h.fetch(`${h.base}/v1/rollouts/${name}/resume`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'launched' }),
    });
    expect(resumed.status).toBe(202);
    const gate = await until('the gate', async () => {
      const s = await state(name);
      return s.phase === 'awaiting-approval' && s;
    });
    expect(gate).toMatchObject({ awaitingGate: 50, weightBp: 2000 });
    await sleep(1500);
    expect(await routesOf(name)).toContainEqual({ version: 2, role: 'canary', weightBp: 2000 });

    const shown = await pops(['rollout', 'status', name]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('awaiting-approval');
    expect(shown.stdout).toContain('waiting for approval of the 50% step');
    expect(shown.stdout).toMatch(/ctr\s+business\s+higher/);

    const approved = await pops(['rollout', 'approve', name, '--reason', 'numbers look fine']);
    expect(approved.code).toBe(0);
    await step(name, 1);
    expect(await routesOf(name)).toContainEqual({ version: 2, role: 'canary', weightBp: 5000 });

    const api = await h.fetch(`${h.base}/v1/rollouts/${name}`);
    expect(api.status).toBe(200);
    const body = (await api.json()) as { live: RolloutState; decisions: unknown[] };
    expect(body.live).toMatchObject({ stepIndex: 1, weightBp: 5000, phase: 'baking' });
    expect(body.decisions.length).toBeGreaterThan(0);

    const aborted = await h.fetch(`${h.base}/v1/rollouts/${name}/abort`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'changed our minds' }),
    });
    expect(aborted.status).toBe(202);
    const result = await handle.result();
    expect(result.outcome).toMatchObject({
      outcome: 'rolled-back',
      trigger: 'abort',
      by: 'api-test',
      breachDecisionId: null,
    });
    expect(await routesOf(name)).toEqual([{ version: 1, role: 'stable', weightBp: 10_000 }]);
    const trail = await auditTrail(h.db.pool, { subject: `surface/${name}` });
    const actions = trail.map((r) => r.action);
    expect(actions).toEqual(
      expect.arrayContaining([
        'rollout.paused',
        'rollout.resumed',
        'rollout.approved',
        'rollout.rolled-back',
      ]),
    );
    expect(trail.find((r) => r.action === 'rollout.approved')?.actor).not.toBe('tester');

    const none = await h.fetch(`${h.base}/v1/rollouts/${name}/pause`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'too late' }),
    });
    expect(none.status).toBe(404);
  });

  it(
    'resumes at the same step and weight after the worker is SIGKILLed mid-step',
    { timeout: 300_000 },
    async () => {
      const name = surface('crash');
      const prefix = testQueuePrefix('rollout-crash');
      let worker = await spawnWorker(h.db.url, prefix);
      try {
        // Two intervals per run: the rollout also continues as new every other tick. No traffic is
        // sent, so the step bakes long and extends without limit: a loaded machine, slow to start
        // the new worker, must not see it pause for data before the check.
        const handle = await begin(
          name,
          {
            steps: [20, 100],
            guardrails: [{ metric: 'ctr' }],
            intervalsPerRun: 2,
            bake: '600s',
            maxExtensions: 100,
          },
          prefix,
        );
        const firstRun = (await handle.describe()).runId;
        const before = await step(name, 0);
        await until('a few ticks', async () => (await state(name)).tick >= 2);
        await worker.stop(); // SIGKILL
        await sleep(3000);
        worker = await spawnWorker(h.db.url, prefix);
        const after = await until(
          'ticks on the new worker',
          async () => {
            const s = await state(name);
            return s.tick >= 4 && s;
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
        expect(await routesOf(name)).toContainEqual({ version: 2, role: 'canary', weightBp: 2000 });
        // One routing change for the step: neither the replay nor the new runs repeated it.
        expect((await routingChanges(h.db.pool, name)).length).toBe(2);
        const current = await h.client.workflow.getHandle(rolloutWorkflowId(name)).describe();
        expect(current.runId).not.toBe(firstRun);
        const made = await decisions(name);
        expect(new Set(made.map((d) => d.tick)).size).toBe(made.length);
        await h.client.workflow
          .getHandle(rolloutWorkflowId(name))
          .signal('abortRollout', { by: 'lead', reason: 'done here' });
        expect((await handle.result()).outcome.outcome).toBe('rolled-back');
      } finally {
        await worker.stop();
      }
    },
  );

  it('hands the blessed candidate of a retraining to a canary rollout, once per surface', async () => {
    const name = surface('handoff');
    const loose = { maxAucDrop: 1, maxLogLossRise: 10, maxEceRise: 1, maxNdcgDrop: 1, minAuc: 0 };
    const retrain = (reason: string) =>
      startRetrain(
        h.client,
        h.prefix,
        retrainInputSchema.parse({
          model,
          reason,
          requestedBy: 'tester',
          trainUntil: '2004-01-01T00:00:00Z',
          validateUntil: '2005-01-01T00:00:00Z',
          training: { epochs: 1 },
          validation: loose,
          promotion: 'canary',
          canary: { surface: name, steps: [10, 100], bake: '10m', analysisEvery: '1s' },
        }),
      );
    expect(() =>
      retrainInputSchema.parse({ model, reason: 'x', promotion: 'canary', requestedBy: 't' }),
    ).toThrow(/canary.*set both, or neither/s);
    const production = (await getAliases(h.db.pool, model))['production'];
    const run = await retrain('hand the candidate to a canary');
    const result = await waitForRetrain(h.client, run.workflowId, run.runId);
    expect(result.validation.blessed).toBe(true);
    expect(result.promotion).toMatchObject({
      outcome: 'canary-started',
      rollout: rolloutWorkflowId(name),
    });
    // The rollout outlives the retraining, rolling out exactly that version over production.
    const s = await step(name, 0);
    expect(s).toMatchObject({ model, version: result.version, weightBp: 1000 });
    expect(s.version).toBeGreaterThan(2);
    expect((await getAliases(h.db.pool, model))['production']).toBe(production);
    const trail = await auditTrail(h.db.pool, { subject: `model/${model}` });
    expect(trail.map((r) => r.action)).toContain('model.canary-started');

    // A second retraining while that rollout runs: its candidate is not rolled out, and says why.
    const again = await retrain('a second candidate');
    const refused = await waitForRetrain(h.client, again.workflowId, again.runId);
    expect(refused.promotion.outcome).toBe('canary-refused');
    expect(refused.promotion.reason).toContain('is already running (one rollout per surface)');
    expect((await state(name)).version).toBe(result.version);
    await h.client.workflow
      .getHandle(rolloutWorkflowId(name))
      .signal('abortRollout', { by: 'lead', reason: 'done' });
  }, 300_000);

  it('attaches a second start, refuses another version, a foreign model and bad input, naming them', async () => {
    const name = surface('refuse');
    await begin(name, { bake: '10m' });
    const again = await startRollout(h.client, h.prefix, input(name, { bake: '10m' }));
    expect(again.attached).toBe(true);
    const body = { model, version: 1, surface: name };
    const conflict = await h.fetch(`${h.base}/v1/rollouts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(conflict.status).toBe(409);
    expect(await conflict.text()).toContain(`already rolling out ${model} v2`);

    const bad = await h.fetch(`${h.base}/v1/rollouts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, version: 2, surface: name, steps: [5, 3] }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/steps\.1: steps must increase/);
    const badBake = await h.fetch(`${h.base}/v1/rollouts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, version: 2, surface: name, bake: '5q' }),
    });
    expect(badBake.status).toBe(400);
    expect(await badBake.text()).toContain(
      'bake: is not a duration such as 2s, 10m, 1h or 1d (got \\"5q\\")',
    );
    const cli = await pops([
      'rollout',
      'start',
      '--model',
      model,
      '--version',
      '2',
      '--surface',
      name,
      '--guardrails',
      'latency_p99',
    ]);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('latency_p99 needs a limit');

    const foreign = await startRollout(
      h.client,
      h.prefix,
      input(surface('good'), { model: other, version: 1 }),
    );
    const failed = await h.client.workflow
      .getHandle(foreign.workflowId, foreign.runId)
      .result()
      .then(
        () => 'completed',
        (err: Error) => rootCause(err).message,
      );
    expect(failed).toContain(`serves model "${model}", not "${other}"`);

    const status = await rolloutStatus(h.client, h.db.pool, name);
    expect(status?.live?.phase).toBe('baking');
    expect(status?.earlier).toEqual([]);
    const first = h.client.workflow.getHandle<() => Promise<RolloutResult>>(
      rolloutWorkflowId(name),
    );
    await first.signal('abortRollout', { by: 'lead', reason: 'done' });
    expect((await first.result()).outcome.outcome).toBe('rolled-back');
    // A second rollout of the surface: its status lists the first one as earlier.
    await begin(name, { bake: '10m' });
    await step(name, 0);
    const second = await rolloutStatus(h.client, h.db.pool, name);
    expect(second?.stored?.state).toBe('running');
    expect(second?.earlier.map((r) => [r.version, r.state])).toEqual([[2, 'rolled-back']]);
    await first.signal('abortRollout', { by: 'lead', reason: 'done' });
  });
});
