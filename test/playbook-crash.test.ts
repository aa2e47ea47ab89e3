/**
 * A worker process SIGKILLed in the middle of each step type of one playbook run, on real
 * Temporal and PostgreSQL. The test holds a lock the step's activity needs (a table, a row, the
 * registry's advisory lock), waits until the activity is blocked on it, kills the worker, lets go,
 * and starts another worker process; a webhook is held unanswered instead; approval and wait are
 * killed while waiting. The run resumes each time and no side effect happens twice: one pause of
 * the rollout, one mode change, one alias rollback, one scope, one webhook delivery key, one
 * export, one campaign pause, one backfill, one vote counted, each step ended once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolClient } from '../common/db.js';
import { liveState, votePlaybook } from '../client/playbooks.js';
import { startRollout } from '../client/rollout.js';
import { auditTrail } from '../domain/audit.js';
import { getSurface, routingChanges } from '../domain/decide/surfaces.js';
import { incidentTimeline } from '../domain/playbooks/store.js';
import { aliasHistory, getAliases } from '../domain/registry.js';
import { rolloutInputSchema } from '../domain/rollout/config.js';
import { spawnWorker, type WorkerChild } from './fixtures/spawn-worker.js';
import { type Harness, startHarness } from './harness.js';
import {
  fixtureModel,
  resultOf,
  runText,
  startWebhook,
  trainBase,
  until,
  type Webhook,
} from './playbook-support.js';
import { movieLensSlice } from './retrain-support.js';
import { testQueuePrefix } from './support.js';

let h: Harness;
let hook: Webhook;
let worker: WorkerChild | undefined;
const suffix = Math.random().toString(36).slice(2, 8);
const base = `pbc-${suffix}`;
const model = `${base}-m`;
const prefix = testQueuePrefix('pb-crash');
const id = `crash-${suffix}`;

function playbook(): string {
  return `name: crash-${suffix}
version: 1
description: every step type, for the crash test
parameters:
  model: { type: string }
  surface: { type: string }
steps:
  - { id: gap_freeze, type: wait, with: { duration: 2s } }
  - { id: freeze, type: freeze_rollouts, timeout: 15s, with: { model: "\${params.model}" } }
  - { id: gap_mode, type: wait, with: { duration: 2s } }
  - id: mode
    type: set_mode
    timeout: 15s
    with: { surface: "\${params.surface}", mode: conservative }
  - { id: gap_rollback, type: wait, with: { duration: 2s } }
  - { id: rollback, type: rollback_model, timeout: 15s, with: { model: "\${params.model}" } }
  - id: normal
    type: set_mode
    timeout: 15s
    with: { surface: "\${params.surface}", mode: normal }
  - { id: gap_verify, type: wait, with: { duration: 2s } }
  - id: verify
    type: verify_serving
    timeout: 30s
    with: { surface: "\${params.surface}", version: "\${steps.rollback.to}", probes: 5 }
  - { id: gap_scope, type: wait, with: { duration: 2s } }
  - id: scope
    type: identify_scope
    timeout: 15s
    with: { model: "\${params.model}", version: "\${steps.rollback.from}" }
  - { id: gap_page, type: wait, with: { duration: 2s } }
  - id: page
    type: notify
    timeout: 15s
    with: { webhook: "${hook.url}", summary: "scope \${steps.scope.persons}" }
  - { id: gap_export, type: wait, with: { duration: 2s } }
  - { id: export, type: export_scope, timeout: 15s }
  - { id: gap_stop, type: wait, with: { duration: 2s } }
  - { id: stop, type: stop_campaigns, timeout: 15s, with: { names: [c-${suffix}] } }
  - { id: gap_backfill, type: wait, with: { duration: 2s } }
  - id: backfill
    type: run_workflow
    timeout: 30m
    with:
      workflow: backfillFeatures
      input: { features: [item_popularity@1], from: '2003-07-01', to: '2003-07-01' }
  - { id: gap_quality, type: wait, with: { duration: 2s } }
  - id: quality
    type: check_quality
    timeout: 15s
    with: { features: [item_popularity@1], from: '2003-07-01', to: '2003-07-01' }
  - { id: pause, type: wait, with: { duration: 3s } }
  - { id: note, type: record, with: { message: "resumed \${steps.scope.persons}" } }
  - { id: close, type: approval, with: { approvers: [bob] } }
`;
}

async function respawn(): Promise<void> {
  await worker?.stop();
  worker = await spawnWorker(h.db.url, prefix);
}

async function started(step: string): Promise<void> {
  // A guard against a hang, not a timing: a backfill killed mid-way is retried after its
  // activity's 2-minute timeout and recomputes tiles, minutes on the loaded machine.
  await until(
    `step ${step} started`,
    async () =>
      (await incidentTimeline(h.db.pool, id)).some(
        (e) => e.kind === 'step-started' && e.stepId === step,
      ),
    600_000,
  );
}

/** Waits until a statement like `pattern` of this database waits for a lock (the step's does). */
async function blocked(step: string, pattern: string): Promise<void> {
  await until(`step ${step} blocked on the test's lock`, async () => {
    const { rows } = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query like $1`,
      [pattern],
    );
    return (rows[0]?.n ?? 0) > 0;
  });
}

/** Kills the worker while `step`'s activity waits for `lock`, then lets go and respawns. */
async function crashDuring(
  step: string,
  pattern: string,
  lock: (c: PoolClient) => Promise<unknown>,
) {
  // Taken while the run waits in the step's gap, so the step before (which may be retrying after
  // the last crash) is not blocked by it and this step's activity is.
  await started(`gap_${step}`);
  const c = await h.db.pool.connect();
  try {
    await c.query('begin');
    await lock(c);
    await started(step);
    await blocked(step, pattern);
    await worker?.stop();
  } finally {
    await c.query('rollback');
    c.release();
  }
  await respawn();
}

beforeAll(async () => {
  h = await startHarness('playbook-crash');
  hook = await startWebhook();
  const slice = movieLensSlice(150);
  await trainBase(h.db.pool, h.client, h.prefix, slice.dir, `ml-${base}`, base);
}, 900_000);

afterAll(async () => {
  await worker?.stop();
  await hook?.close();
  await h?.close();
});

describe('a worker killed in the middle of each step type', () => {
  it('resumes every time and repeats no side effect', async () => {
    const surface = await fixtureModel(h.db.pool, base, model);
    await h.db.pool.query(
      `insert into exposures (decision_id, surface, person_id, version, arm, generation, items,
         scores, latency_ms, at)
       select gen_random_uuid(), $1, 'p-' || g, 2, 'stable', 1, '{i1}', '{1}', 5, now()
         from generate_series(1, 7) g`,
      [surface],
    );
    await h.db.pool.query(
      `insert into campaigns (name, definition, origin, updated_by)
       values ($1, '{}'::jsonb, 'api', 'tester')`,
      [`c-${suffix}`],
    );
    const rollout = await startRollout(
      h.client,
      h.prefix,
      rolloutInputSchema.parse({
        model,
        version: 1,
        surface,
        steps: [10, 100],
        bake: '1h',
        analysisEvery: '1s',
        requestedBy: 'tester',
      }),
    );
    await until('the rollout routed', async () =>
      (await getSurface(h.db.pool, surface))?.routes.some((r) => r.role === 'canary'),
    );
    const historyBefore = (await aliasHistory(h.db.pool, model)).length;

    worker = await spawnWorker(h.db.url, prefix);
    await runText(h.client, h.db.pool, prefix, playbook(), { model, surface }, id);

    await crashDuring('freeze', "%where state = 'running'%", (c) =>
      c.query('lock table rollouts in access exclusive mode'),
    );
    await crashDuring('mode', '%from surfaces where name = $1 for update%', (c) =>
      c.query('select 1 from surfaces where name = $1 for update', [surface]),
    );
    // In the middle of rollback_model: the alias has moved (its child workflow ended), the
    // surfaces are being routed to version 1.
    await crashDuring('rollback', '%from surfaces where name = $1 for update%', (c) =>
      c.query('select 1 from surfaces where name = $1 for update', [surface]),
    );
    await crashDuring('verify', '%generation::int as generation from surfaces%', (c) =>
      c.query('lock table surfaces in access exclusive mode'),
    );
    await crashDuring('scope', '%insert into incident_scope%', (c) =>
      c.query('lock table incident_scope in exclusive mode'),
    );
    await started('gap_page');
    const held = hook.hold();
    await started('page');
    await held.received;
    await respawn();
    held.release();
    await crashDuring('export', '%insert into incident_exports%', (c) =>
      c.query('lock table incident_exports in exclusive mode'),
    );
    await crashDuring('stop', '%from campaigns where not paused%', (c) =>
      c.query('lock table campaigns in access exclusive mode'),
    );
    await crashDuring('backfill', '%feature_backfills%', (c) =>
      c.query('lock table feature_backfills in access exclusive mode'),
    );
    await crashDuring('quality', '%from feature_partitions p%', (c) =>
      c.query('lock table feature_partitions in access exclusive mode'),
    );
    await started('pause');
    await respawn();
    // Killed while waiting for the approval; the vote arrives while no worker runs.
    await until('waiting at close', async () => (await liveState(h.client, id))?.waiting);
    await worker.stop();
    await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'bob', reason: 'ok' });
    await sleep(200);
    await respawn();
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    expect(result.steps.every((s) => s.outcome === 'ok')).toBe(true);

    const timeline = await incidentTimeline(h.db.pool, id);
    const endings = timeline.filter((e) => e.kind === 'step-ended').map((e) => e.stepId);
    expect(endings.filter((e) => !e?.startsWith('gap_'))).toEqual([
      'freeze',
      'mode',
      'rollback',
      'normal',
      'verify',
      'scope',
      'page',
      'export',
      'stop',
      'backfill',
      'quality',
      'pause',
      'note',
      'close',
    ]);
    expect(new Set(timeline.map((e) => e.seq)).size).toBe(timeline.length);
    expect(timeline.filter((e) => e.kind === 'approval').map((e) => e.actor)).toEqual(['bob']);
    expect(timeline.filter((e) => e.kind === 'note')).toHaveLength(1);

    const paused = (await auditTrail(h.db.pool, { subject: `surface/${surface}` })).filter(
      (r) => r.action === 'rollout.paused',
    );
    expect(paused).toHaveLength(1);
    const modes = (await routingChanges(h.db.pool, surface)).filter((c) =>
      c.changeKey?.startsWith(`playbook/${id}/`),
    );
    // One change per key: the mode, the route of the rollback, the mode back to normal.
    expect(modes.map((c) => c.changeKey?.split('/').at(-1)).sort()).toEqual(
      ['mode', 'normal', surface].sort(),
    );
    const all = await aliasHistory(h.db.pool, model);
    expect(all.slice(0, all.length - historyBefore).map((m) => m.alias)).toEqual([
      'previous',
      'production',
    ]);
    expect(await getAliases(h.db.pool, model)).toEqual({ production: 1 });
    const scope = await h.db.pool.query<{ n: number }>(
      'select count(*)::int as n from incident_scope where incident_id = $1',
      [id],
    );
    expect(scope.rows[0]?.n).toBe(7);
    // The held webhook was sent again after the crash, under the same idempotency key.
    const pageKeys = [...hook.keys()].filter((k) => k.includes('/page/'));
    expect(pageKeys).toHaveLength(1);
    expect(hook.hits.filter((x) => x.key === pageKeys[0])).toHaveLength(2);
    const exports = await h.db.pool.query<{ n: number }>(
      'select count(*)::int as n, max(rows) as rows from incident_exports where incident_id = $1',
      [id],
    );
    expect(exports.rows[0]).toMatchObject({ n: 1, rows: 7 });
    const campaignPauses = (
      await auditTrail(h.db.pool, { subject: `campaign/c-${suffix}` })
    ).filter((r) => r.action === 'campaign.paused');
    expect(campaignPauses).toHaveLength(1);
    const suppressions = await h.db.pool.query<{ n: number }>(
      'select count(*)::int as n from campaign_suppressions where key = $1',
      [id],
    );
    expect(suppressions.rows[0]?.n).toBe(7);
    const backfills = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from feature_backfills
        where features @> '[{"name": "item_popularity"}]' and from_day = '2003-07-01'
          and to_day = '2003-07-01'`,
    );
    expect(backfills.rows[0]?.n).toBe(1);
    await h.client.workflow
      .getHandle(rollout.workflowId)
      .signal('abortRollout', { by: 'tester', reason: 'test done' })
      .catch(() => undefined);
  }, 1_800_000);
});
