import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootCause } from '../client/retrain.js';
import { startRollback, waitForRollback } from '../client/models.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import {
  aliasHistory,
  declareModel,
  getAliases,
  getVersion,
  type ModelVersion,
  moveAlias,
  promoteVersion,
  recordValidation,
  registerVersion,
  rollbackRefusal,
} from '../domain/registry.js';
import type { EvaluationMetrics } from '../domain/retrain.js';
import { rollbackInputSchema, rollbackWorkflowId } from '../domain/rollback.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';

let h: Harness;
const suffix = Math.random().toString(36).slice(2, 8);
// Workflow ids are per model on a shared Temporal server: names of this run only.
const name = (label: string) => `reg-${label}-${suffix}`;
const metrics: EvaluationMetrics = {
  auc: 0.7,
  logLoss: 0.6,
  ndcgAt10: 0.3,
  examples: 21,
  users: 5,
};
const FEATURES = ['item_popularity@1:lifetime', 'person_rating_count@1:30d'];

beforeAll(async () => {
  h = await startHarness('model-registry', { api: true });
});
afterAll(async () => {
  await h.close();
});

/** A hand-made version n of the model: a training set row, an artifact row, registerVersion. */
async function addVersion(model: string, n: number, driftRunId: string | null = null) {
  const setKey = `${model}/set-${n}`;
  const sha = createHash('sha256').update(`${model}/${n}`).digest('hex');
  const set = {
    setKey,
    source: 'reg-src',
    trainFrom: '2024-01-01T00:00:00.000Z',
    trainUntil: '2024-02-01T00:00:00.000Z',
    validateUntil: '2024-02-08T00:00:00.000Z',
    trainRows: 100 + n,
    validateRows: 20 + n,
    features: FEATURES,
  };
  await h.db.pool.query(
    `insert into training_sets (set_key, model, source, train_from, train_until, validate_until,
       features, train_rows, validate_rows) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      setKey,
      model,
      set.source,
      set.trainFrom,
      set.trainUntil,
      set.validateUntil,
      FEATURES,
      100 + n,
      20 + n,
    ],
  );
  await h.db.pool.query(
    `insert into model_artifacts (sha256, topology, weight_specs, weights, preprocessing)
     values ($1, '{}', '[]', $2, '{}') on conflict do nothing`,
    [sha, Buffer.from([n])],
  );
  return registerVersion(h.db.pool, {
    model,
    runKey: `${model}/run-${n}`,
    artifactSha256: sha,
    trainingSet: set,
    backend: 'cpu',
    codeCommit: 'c0ffee',
    metrics,
    baselineMetrics: metrics,
    reason: `version ${n}`,
    workflowId: `retrain/${model}`,
    runId: `run-${n}`,
    createdBy: 'trainer',
    driftRunId,
  });
}

/** Declares the model with versions 1..n and promotes each in turn (production n, previous n-1). */
async function promotedModel(model: string, n: number): Promise<void> {
  await declareModel(h.db.pool, { name: model, source: 'reg-src', createdBy: 'test' });
  for (let v = 1; v <= n; v += 1) {
    await addVersion(model, v);
    await promoteVersion(h.db.pool, {
      model,
      version: v,
      actor: 'releaser',
      reason: `ship ${v}`,
      workflowId: null,
      moveKey: `${model}/promote-${v}`,
    });
  }
}

const request = (model: string, over: Record<string, unknown> = {}) =>
  rollbackInputSchema.parse({ model, reason: 'test', requestedBy: 'oncall', ...over });

async function rollback(model: string, over: Record<string, unknown> = {}) {
  const started = await startRollback(h.client, h.prefix, request(model, over));
  return { started, result: await waitForRollback(h.client, started) };
}

const moves = async (model: string) =>
  (await aliasHistory(h.db.pool, model)).map((m) => [m.alias, m.fromVersion, m.toVersion]);

describe('model aliases and their history', () => {
  const model = name('a');
  let v1: ModelVersion;

  beforeAll(async () => {
    await declareModel(h.db.pool, { name: model, source: 'reg-src', createdBy: 'test' });
    v1 = await addVersion(model, 1);
  });

  it('registering a version points candidate at it, once per run', async () => {
    expect(await getAliases(h.db.pool, model)).toEqual({ candidate: 1 });
    const [move] = await aliasHistory(h.db.pool, model);
    expect(move).toMatchObject({
      model,
      alias: 'candidate',
      fromVersion: null,
      toVersion: 1,
      actor: 'trainer',
      reason: 'registered version 1: version 1',
      workflowId: `retrain/${model}`,
      moveKey: `${model}/run-1/candidate`,
    });
    // The same run again: the version it registered, and no second history row.
    const retried = await registerVersion(h.db.pool, {
      model,
      runKey: v1.runKey,
      artifactSha256: v1.artifactSha256,
      trainingSet: {
        setKey: v1.setKey,
        source: 'reg-src',
        ...v1.dataRange,
        trainRows: 101,
        validateRows: 21,
        features: FEATURES,
      },
      backend: 'cpu',
      codeCommit: null,
      metrics,
      baselineMetrics: metrics,
      reason: 'retried',
      workflowId: v1.workflowId,
      runId: v1.runId,
      createdBy: 'trainer',
    });
    expect(retried.version).toBe(1);
    await addVersion(model, 2, 'drift/run-7');
    expect(await moves(model)).toEqual([
      ['candidate', 1, 2],
      ['candidate', null, 1],
    ]);
  });

  it('promotion sets production and previous with history rows; a retried move appends nothing', async () => {
    const by = { model, actor: 'releaser', reason: 'ship', workflowId: 'wf-1' };
    expect(await promoteVersion(h.db.pool, { ...by, version: 1, moveKey: 'a/p1' })).toEqual({
      from: null,
      to: 1,
    });
    expect(await promoteVersion(h.db.pool, { ...by, version: 2, moveKey: 'a/p2' })).toEqual({
      from: 1,
      to: 2,
    });
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 2,
      production: 2,
      previous: 1,
    });
    const history = await aliasHistory(h.db.pool, model);
    expect(
      history.slice(0, 3).map((m) => [m.alias, m.fromVersion, m.toVersion, m.moveKey]),
    ).toEqual([
      ['previous', null, 1, 'a/p2/previous'],
      ['production', 1, 2, 'a/p2'],
      ['production', null, 1, 'a/p1'],
    ]);
    expect(history[0]).toMatchObject({ actor: 'releaser', reason: 'ship', workflowId: 'wf-1' });

    // Retried with the same key: the recorded answer, nothing appended, nothing moved.
    expect(await promoteVersion(h.db.pool, { ...by, version: 2, moveKey: 'a/p2' })).toEqual({
      from: 1,
      to: 2,
    });
    const staging = { ...by, alias: 'staging', moveKey: 'a/s1' };
    expect(await moveAlias(h.db.pool, { ...staging, version: 1 })).toMatchObject({
      fromVersion: null,
      toVersion: 1,
    });
    expect(await moveAlias(h.db.pool, { ...staging, version: 2 })).toMatchObject({
      fromVersion: null,
      toVersion: 1,
    });
    expect(await aliasHistory(h.db.pool, model)).toHaveLength(history.length + 1);
    expect((await getAliases(h.db.pool, model))['staging']).toBe(1);

    const removed = await moveAlias(h.db.pool, { ...staging, version: null, moveKey: 'a/s2' });
    expect(removed).toMatchObject({ alias: 'staging', fromVersion: 1, toVersion: null });
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 2,
      production: 2,
      previous: 1,
    });
  });

  it('the database refuses to update, delete or truncate the history', async () => {
    for (const sql of [
      'update model_alias_history set reason = $1',
      'delete from model_alias_history where reason <> $1',
      'truncate model_alias_history',
    ]) {
      const args = sql.includes('$1') ? ['x'] : [];
      await expect(h.db.pool.query(sql, args)).rejects.toMatchObject({
        code: '42501',
        message: expect.stringMatching(
          /^model_alias_history is append-only: (UPDATE|DELETE|TRUNCATE)/,
        ),
      });
    }
    expect((await aliasHistory(h.db.pool, model)).length).toBeGreaterThan(0);
  });

  it('refuses an unknown model, an unknown version and a bad alias name, naming the value', async () => {
    const by = { actor: 'a', reason: 'r', workflowId: null, moveKey: 'a/bad' };
    const ghost = { ...by, model: 'ghost', alias: 'staging', version: 1 };
    await expect(moveAlias(h.db.pool, ghost)).rejects.toThrow('model "ghost" is not declared');
    const missing = { ...by, model, alias: 'staging', version: 99 };
    await expect(moveAlias(h.db.pool, missing)).rejects.toThrow(
      `model "${model}" has no version 99`,
    );
    const badAlias = { ...by, model, alias: 'Bad Alias', version: 1 };
    await expect(moveAlias(h.db.pool, badAlias)).rejects.toThrow(/alias: .*\(got "Bad Alias"\)/);
    await expect(promoteVersion(h.db.pool, { ...by, model, version: 99 })).rejects.toMatchObject({
      kind: 'not_found',
      message: `model "${model}" has no version 99`,
    });
    // A key already used for another alias is a conflict, not a silent answer.
    await expect(
      moveAlias(h.db.pool, { ...by, model, alias: 'staging', version: 1, moveKey: 'a/p2' }),
    ).rejects.toMatchObject({ kind: 'conflict' });
    await expect(
      recordValidation(h.db.pool, { model, version: 99, validation: {}, blessed: false }),
    ).rejects.toThrow(`model "${model}" has no version 99`);
  });

  it('records validation and blessing idempotently; a version keeps its links', async () => {
    const report = { auc: 0.71, baselineAuc: 0.6, passed: ['auc-vs-baseline'] };
    for (let i = 0; i < 2; i += 1) {
      await recordValidation(h.db.pool, { model, version: 2, validation: report, blessed: true });
    }
    const v2 = await getVersion(h.db.pool, model, 2);
    expect(v2).toMatchObject({
      driftRunId: 'drift/run-7',
      validation: report,
      blessed: true,
      setKey: `${model}/set-2`,
      rowCounts: { train: 102, validate: 22 },
      features: FEATURES,
      codeCommit: 'c0ffee',
      artifactSha256: createHash('sha256').update(`${model}/2`).digest('hex'),
    });
    expect(await getVersion(h.db.pool, model, 1)).toMatchObject({
      driftRunId: null,
      validation: null,
      blessed: null,
    });
  });
});

describe('the rollbackModel workflow', () => {
  it('moves production back and audits; a second goes one further; a third is refused', async () => {
    const model = name('b');
    await promotedModel(model, 3);

    const first = await rollback(model, { reason: 'v3 is bad' });
    expect(first.started).toMatchObject({ workflowId: rollbackWorkflowId(model), attached: false });
    expect(first.result).toEqual({ from: 3, to: 2 });
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 3,
      production: 2,
      previous: 1,
    });
    const [previous, production] = await aliasHistory(h.db.pool, model, 2);
    expect(production).toMatchObject({
      alias: 'production',
      fromVersion: 3,
      toVersion: 2,
      actor: 'oncall',
      reason: 'v3 is bad',
      workflowId: `models/${model}/rollback`,
      moveKey: `models/${model}/rollback/${first.started.runId}`,
    });
    expect(previous).toMatchObject({ alias: 'previous', fromVersion: 2, toVersion: 1 });

    const trail = (await auditTrail(h.db.pool, { workflowId: first.started.workflowId })).filter(
      (r) => r.runId === first.started.runId,
    );
    expect(trail.map((r) => [r.action, r.actor, r.subject])).toEqual([
      ['model.rollback-requested', 'oncall', `model/${model}`],
      ['model.alias-moved', 'oncall', `model/${model}`],
    ]);
    expect(trail[0]?.inputs).toEqual({ reason: 'v3 is bad', toVersion: null });
    expect(trail[1]?.outputs).toEqual({ from: 3, to: 2 });

    const second = await rollback(model);
    expect(second.started.runId).not.toBe(first.started.runId);
    expect(second.result).toEqual({ from: 2, to: 1 });
    // Version 1 was the first production: nothing came before it, so `previous` is removed.
    expect(await getAliases(h.db.pool, model)).toEqual({ candidate: 3, production: 1 });

    const third = await startRollback(h.client, h.prefix, request(model));
    const err = await waitForRollback(h.client, third).catch((e: unknown) => e);
    expect(rootCause(err)).toMatchObject({
      type: 'NotFoundFailure',
      message: expect.stringContaining(`model "${model}" has nothing to roll back to`),
    });
    const refused = await auditTrail(h.db.pool, { workflowId: third.workflowId });
    expect(refused.filter((r) => r.runId === third.runId).map((r) => r.action)).toEqual([
      'model.rollback-requested',
      'model.rollback-refused',
    ]);
    expect(await getAliases(h.db.pool, model)).toEqual({ candidate: 3, production: 1 });
    expect(await verifyAudit(h.db.pool)).toMatchObject({ ok: true });
  });

  it('rolls back to an explicit version; later rollbacks skip versions rolled away from', async () => {
    const model = name('c');
    await promotedModel(model, 4);
    expect((await rollback(model, { toVersion: 2 })).result).toEqual({ from: 4, to: 2 });
    // 2 was promoted over 1: 1 is what comes before it.
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 4,
      production: 2,
      previous: 1,
    });

    await promoteVersion(h.db.pool, {
      model,
      version: 3,
      actor: 'releaser',
      reason: 'ship 3 again',
      workflowId: null,
      moveKey: `${model}/promote-3-again`,
    });
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 4,
      production: 3,
      previous: 2,
    });
    expect((await rollback(model)).result).toEqual({ from: 3, to: 2 });
    // Not 3 (just rolled away from) nor 4: the production before 2 was promoted.
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 4,
      production: 2,
      previous: 1,
    });
  });

  it('a second start attaches to the rollback that runs', async () => {
    const model = name('d');
    const idle = `${h.prefix}-idle`; // no worker polls it: the first run stays running
    const first = await startRollback(h.client, idle, request(model));
    const second = await startRollback(h.client, idle, request(model, { reason: 'again' }));
    expect(second).toEqual({ ...first, attached: true });
    await h.client.workflow.getHandle(first.workflowId, first.runId).terminate('test over');
  });

  it('refuses bad input naming the field, and an unknown model or version naming it', async () => {
    const handle = await h.client.workflow.start('rollbackModel', {
      workflowId: `models/bad-${suffix}/rollback`,
      taskQueue: `${h.prefix}-orchestration`,
      args: [{ model: 'Bad Name!', reason: '', toVersion: 0 }],
    });
    await expect(handle.result()).rejects.toMatchObject({
      cause: {
        type: 'ValidationFailure',
        message: expect.stringMatching(/model: .*"Bad Name!".*toVersion: .*got 0.*reason/s),
      },
    });

    const model = name('e');
    await promotedModel(model, 2);
    const started = await startRollback(h.client, h.prefix, request(model, { toVersion: 9 }));
    const err = await waitForRollback(h.client, started).catch((e: unknown) => e);
    expect(rootCause(err)).toMatchObject({
      type: 'NotFoundFailure',
      message: `model "${model}" has no version 9`,
    });
    expect(await rollbackRefusal(h.db.pool, 'ghost')).toMatchObject({
      message: 'model "ghost" is not declared',
    });
    expect(await rollbackRefusal(h.db.pool, model, 2)).toMatchObject({
      kind: 'conflict',
      message: `version 2 of model "${model}" is already production`,
    });
    expect(await getAliases(h.db.pool, model)).toEqual({
      candidate: 2,
      production: 2,
      previous: 1,
    });
  });
});

describe('the model routes', () => {
  const model = name('http');
  async function call(method: string, path: string, body?: unknown) {
    const response = await h.fetch(`${h.base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }
  const message = (r: { body: Record<string, unknown> }) =>
    (r.body['error'] as { message: string } | undefined)?.message;

  beforeAll(async () => {
    await promotedModel(model, 2);
  });

  it('serves a model with its aliases, history and versions', async () => {
    const shown = await call('GET', `/v1/models/${model}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({
      model,
      source: 'reg-src',
      aliases: { candidate: 2, production: 2, previous: 1 },
    });
    const history = shown.body['history'] as Array<Record<string, unknown>>;
    // Newest first: promote 2 (previous, production), register 2, promote 1, register 1.
    expect(history.map((m) => [m['alias'], m['fromVersion'], m['toVersion']])).toEqual([
      ['previous', null, 1],
      ['production', 1, 2],
      ['candidate', 1, 2],
      ['production', null, 1],
      ['candidate', null, 1],
    ]);
    expect((shown.body['versions'] as unknown[]).length).toBe(2);
    expect(message(await call('GET', '/v1/models/nope'))).toBe('model "nope" is not declared');
  });

  it('moves a custom alias by hand, audited; refuses production and bad input', async () => {
    const moved = await call('PUT', `/v1/models/${model}/aliases/staging`, {
      version: 1,
      reason: 'qa',
    });
    expect(moved).toMatchObject({
      status: 200,
      body: { alias: 'staging', fromVersion: null, toVersion: 1, actor: 'api-test', reason: 'qa' },
    });
    const trail = await auditTrail(h.db.pool, { subject: `model/${model}` });
    expect(trail.map((r) => [r.action, r.actor, r.outputs])).toEqual([
      ['model.alias-moved', 'api-test', { from: null, to: 1 }],
    ]);

    const production = await call('PUT', `/v1/models/${model}/aliases/production`, {
      version: 1,
      reason: 'x',
    });
    expect(production.status).toBe(400);
    expect(message(production)).toMatch(/alias: moves only by promotion or rollback.*"production"/);
    const badName = await call('PUT', `/v1/models/${model}/aliases/Bad_Alias`, {
      version: 1,
      reason: 'x',
    });
    expect(badName.status).toBe(400);
    expect(message(badName)).toContain('"Bad_Alias"');
    const unknown = await call('PUT', `/v1/models/${model}/aliases/staging`, {
      version: 99,
      reason: 'x',
    });
    expect(unknown.status).toBe(404);
    expect(message(unknown)).toBe(`model "${model}" has no version 99`);
    const badBody = await call('PUT', `/v1/models/${model}/aliases/staging`, { version: 'x' });
    expect(badBody.status).toBe(400);
    expect(message(badBody)).toMatch(/version: .*"x".*reason/s);
  });

  it('starts a rollback (202), then refuses one with nothing to roll back to', async () => {
    const started = await call('POST', `/v1/models/${model}/rollback`, { reason: 'api' });
    expect(started).toMatchObject({
      status: 202,
      body: { workflowId: rollbackWorkflowId(model), attached: false },
    });
    const runId = started.body['runId'] as string;
    const result = await waitForRollback(h.client, {
      workflowId: rollbackWorkflowId(model),
      runId,
    });
    expect(result).toEqual({ from: 2, to: 1 });

    const nothing = await call('POST', `/v1/models/${model}/rollback`, { reason: 'again' });
    expect(nothing.status).toBe(404);
    expect(message(nothing)).toContain(`model "${model}" has nothing to roll back to`);
    const bad = await call('POST', `/v1/models/${model}/rollback`, { toVersion: 0 });
    expect(bad.status).toBe(400);
    expect(message(bad)).toMatch(/toVersion: .*got 0.*reason/s);
  });
});

describe('pops models rollback | alias | show', () => {
  const model = name('cli');
  const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: h.prefix }));

  beforeAll(async () => {
    await promotedModel(model, 3);
  });

  it('rolls back with --wait, moves a custom alias, and shows aliases, history and links', async () => {
    const rolled = await pops(['models', 'rollback', model, '--reason', 'cli', '--wait', '--json']);
    expect(rolled.code).toBe(0);
    expect(JSON.parse(rolled.stdout)).toMatchObject({
      workflowId: rollbackWorkflowId(model),
      attached: false,
      result: { from: 3, to: 2 },
    });

    const aliased = await pops([
      'models',
      'alias',
      model,
      'staging',
      '1',
      '--reason',
      'qa',
      '--json',
    ]);
    expect(aliased.code).toBe(0);
    expect(JSON.parse(aliased.stdout)).toMatchObject({ alias: 'staging', toVersion: 1 });

    const shown = await pops(['models', 'show', model, '--json']);
    expect(shown.code).toBe(0);
    const view = JSON.parse(shown.stdout) as {
      aliases: Record<string, number>;
      history: Array<{ alias: string; fromVersion: number; toVersion: number }>;
      versions: ModelVersion[];
    };
    expect(view.aliases).toEqual({ candidate: 3, production: 2, previous: 1, staging: 1 });
    expect(view.history.slice(0, 3).map((m) => [m.alias, m.fromVersion, m.toVersion])).toEqual([
      ['staging', null, 1],
      ['previous', 2, 1],
      ['production', 3, 2],
    ]);
    expect(view.versions.map((v) => v.version)).toEqual([3, 2, 1]);
    expect(view.versions[0]).toMatchObject({
      setKey: `${model}/set-3`,
      rowCounts: { train: 103, validate: 23 },
      features: FEATURES,
      driftRunId: null,
      blessed: null,
      codeCommit: 'c0ffee',
      artifactSha256: createHash('sha256').update(`${model}/3`).digest('hex'),
    });

    const human = await pops(['models', 'show', model]);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(
      'aliases: candidate → 3, previous → 1, production → 2, staging → 1',
    );
    expect(human.stdout).toContain(`training set  ${model}/set-2`);
    expect(human.stdout).toContain(
      'features      item_popularity@1:lifetime, person_rating_count@1:30d',
    );
    expect(human.stdout).toMatch(/alias history \(newest first\):\n.*\n.*staging\s+- → 1/);
  });

  it('exits 2 naming the field and the value for bad input', async () => {
    const production = await pops(['models', 'alias', model, 'production', '1', '--reason', 'x']);
    expect(production.code).toBe(2);
    expect(production.stderr).toMatch(/alias: moves only by promotion or rollback.*"production"/);
    const missing = await pops(['models', 'alias', model, 'staging', '99', '--reason', 'x']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`model "${model}" has no version 99`);
    const badTo = await pops(['models', 'rollback', model, '--to', 'abc', '--reason', 'x']);
    expect(badTo.code).toBe(2);
    expect(badTo.stderr).toMatch(/to: .*"abc"/);
    const ghost = await pops(['models', 'rollback', 'ghost', '--reason', 'x']);
    expect(ghost.code).toBe(2);
    expect(ghost.stderr).toContain('model "ghost" is not declared');
  });
});
