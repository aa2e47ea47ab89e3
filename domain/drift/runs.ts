/**
 * Drift run reports and the hysteresis that turns them into retraining requests.
 *
 * Decision of a run, taken once (a retried activity reads the stored one), under a per-model lock
 * so two runs that finish together decide one after the other:
 * - not drifted: `no-drift` (or `insufficient-data` when nothing could be judged);
 * - drifted, but the monitor only observes: `observe-only`;
 * - drifted in fewer than K consecutive runs of the same version (counted back from this run to the
 *   first run that did not drift or that requested a retraining): `consecutive-short`;
 * - a request within the cooldown (`cooldownHours` before this run's time): `cooldown`;
 * - otherwise `retrain-requested`. A new version (after a promotion) starts its own count, so the
 *   reference resets to the new model's training window.
 */
import type { Pool, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import type { DriftConfig } from './config.js';
import type { DriftRow } from './judge.js';

export interface Window {
  from: string;
  /** Exclusive. */
  to: string;
  rows: number;
}

export interface PerformanceCheck {
  judged: boolean;
  reason: string;
  rows: number;
  auc?: number;
  logLoss?: number;
  validationAuc: number;
  validationLogLoss: number;
  degraded: boolean;
}

export interface DriftReport {
  alpha: number;
  features: DriftRow[];
  prediction: DriftRow | null;
  performance: PerformanceCheck | null;
  driftedFeatures: string[];
  /** Every row of the run was not judged (too few rows): nothing could be decided. */
  insufficient: boolean;
  notes: string[];
}

export interface StoredRun {
  id: number;
  runKey: string;
  model: string;
  version: number;
  reference: Window & { kind: string };
  current: Window;
  report: DriftReport;
  drifted: boolean;
  decision: Decision['decision'] | null;
  decisionReason: string | null;
  consecutive: number | null;
  retrain: { workflowId: string; runId: string; attached: boolean } | null;
  requestedBy: string;
  createdAt: string;
  decidedAt: string | null;
}

export interface Decision {
  decision:
    | 'retrain-requested'
    | 'consecutive-short'
    | 'cooldown'
    | 'no-drift'
    | 'insufficient-data'
    | 'observe-only';
  reason: string;
  consecutive: number;
}

interface RunRow {
  id: string;
  run_key: string;
  model: string;
  version: number;
  reference: StoredRun['reference'];
  current: Window;
  report: DriftReport;
  drifted: boolean;
  decision: Decision['decision'] | null;
  decision_reason: string | null;
  consecutive: number | null;
  retrain_workflow_id: string | null;
  retrain_run_id: string | null;
  retrain_attached: boolean | null;
  requested_by: string;
  created_at: Date;
  decided_at: Date | null;
}

function fromRow(r: RunRow): StoredRun {
  return {
    id: Number(r.id),
    runKey: r.run_key,
    model: r.model,
    version: r.version,
    reference: r.reference,
    current: r.current,
    report: r.report,
    drifted: r.drifted,
    decision: r.decision,
    decisionReason: r.decision_reason,
    consecutive: r.consecutive,
    retrain:
      r.retrain_workflow_id && r.retrain_run_id
        ? {
            workflowId: r.retrain_workflow_id,
            runId: r.retrain_run_id,
            attached: r.retrain_attached ?? false,
          }
        : null,
    requestedBy: r.requested_by,
    createdAt: r.created_at.toISOString(),
    decidedAt: r.decided_at?.toISOString() ?? null,
  };
}

/** Stores a run's report once; a retry returns the row already stored. */
export async function insertRun(
  db: Queryable,
  run: {
    runKey: string;
    model: string;
    version: number;
    reference: StoredRun['reference'];
    current: Window;
    report: DriftReport;
    drifted: boolean;
    requestedBy: string;
  },
): Promise<StoredRun> {
  await db.query(
    `insert into drift_runs (run_key, model, version, reference, current, report, drifted,
       requested_by)
     values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (run_key) do nothing`,
    [
      run.runKey,
      run.model,
      run.version,
      JSON.stringify(run.reference),
      JSON.stringify(run.current),
      JSON.stringify(run.report),
      run.drifted,
      run.requestedBy,
    ],
  );
  return (await runByKey(db, run.runKey)) as StoredRun;
}

export async function runByKey(db: Queryable, runKey: string): Promise<StoredRun | undefined> {
  const { rows } = await db.query<RunRow>('select * from drift_runs where run_key = $1', [runKey]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/** One run of a model by its id, or its latest run without one. */
export async function getRun(
  db: Queryable,
  model: string,
  id?: number,
): Promise<StoredRun | undefined> {
  const { rows } = await db.query<RunRow>(
    `select * from drift_runs where model = $1 and ($2::bigint is null or id = $2)
      order by id desc limit 1`,
    [model, id ?? null],
  );
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/** A model's latest runs, newest first. */
export async function listRuns(db: Queryable, model: string, limit = 20): Promise<StoredRun[]> {
  const { rows } = await db.query<RunRow>(
    'select * from drift_runs where model = $1 order by id desc limit $2',
    [model, limit],
  );
  return rows.map(fromRow);
}

/** Decides a stored run (see the module comment); deciding again returns the first decision. */
export async function decideRun(
  pool: Pool,
  runKey: string,
  config: DriftConfig,
  at: Date,
): Promise<Decision> {
  return withTransaction(pool, async (client) => {
    const first = await runByKey(client, runKey);
    if (!first) throw new Error(`drift run ${runKey} is not stored`);
    await client.query('select pg_advisory_xact_lock(hashtext($1))', [`drift/${first.model}`]);
    const run = (await runByKey(client, runKey)) as StoredRun;
    if (run.decision) {
      return {
        decision: run.decision,
        reason: run.decisionReason ?? '',
        consecutive: run.consecutive ?? 0,
      };
    }
    const decision = await decisionOf(client, run, config, at);
    await client.query(
      `update drift_runs set decision = $2, decision_reason = $3, consecutive = $4,
              decided_at = $5 where run_key = $1`,
      [runKey, decision.decision, decision.reason, decision.consecutive, at],
    );
    return decision;
  });
}

async function decisionOf(
  db: Queryable,
  run: StoredRun,
  config: DriftConfig,
  at: Date,
): Promise<Decision> {
  if (!run.drifted) {
    return run.report.insufficient
      ? { decision: 'insufficient-data', reason: 'no row could be judged', consecutive: 0 }
      : {
          decision: 'no-drift',
          reason: 'no feature, score or performance drifted',
          consecutive: 0,
        };
  }
  const { rows } = await db.query<{ drifted: boolean; decision: string | null }>(
    `select drifted, decision from drift_runs
      where model = $1 and version = $2 and id < $3 order by id desc limit $4`,
    [run.model, run.version, run.id, config.consecutive],
  );
  let consecutive = 1;
  for (const r of rows) {
    if (!r.drifted || r.decision === 'retrain-requested') break;
    consecutive++;
  }
  const what = `drifted in ${consecutive} consecutive run(s) of version ${run.version}`;
  if (!config.trigger) {
    return {
      decision: 'observe-only',
      reason: `${what}; the monitor does not trigger`,
      consecutive,
    };
  }
  if (consecutive < config.consecutive) {
    return {
      decision: 'consecutive-short',
      reason: `${what}; ${config.consecutive} are needed`,
      consecutive,
    };
  }
  const last = await db.query<{ decided_at: Date }>(
    `select decided_at from drift_runs
      where model = $1 and decision = 'retrain-requested' and decided_at is not null
      order by decided_at desc limit 1`,
    [run.model],
  );
  const lastAt = last.rows[0]?.decided_at;
  const until = lastAt ? new Date(lastAt.getTime() + config.cooldownHours * 3_600_000) : undefined;
  if (until && at < until) {
    return {
      decision: 'cooldown',
      reason:
        `${what}; cooling down until ${until.toISOString()}` +
        ` after the request at ${lastAt?.toISOString()}`,
      consecutive,
    };
  }
  return { decision: 'retrain-requested', reason: what, consecutive };
}

/** Records the retraining a run started (or attached to); recording it again changes nothing. */
export async function recordRetrain(
  db: Queryable,
  runKey: string,
  retrain: { workflowId: string; runId: string; attached: boolean },
): Promise<void> {
  await db.query(
    `update drift_runs set retrain_workflow_id = $2, retrain_run_id = $3, retrain_attached = $4
      where run_key = $1 and retrain_run_id is null`,
    [runKey, retrain.workflowId, retrain.runId, retrain.attached],
  );
}
