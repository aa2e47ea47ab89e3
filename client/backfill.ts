/**
 * Client-side start and watch of backfillFeatures, for the CLI and the API to share. Feature
 * references are pinned to versions before the start, so the workflow id names exactly what it
 * owns (`backfill/<name@version+…>/<from>/<to>`) and a second start of the same backfill attaches.
 */
import {
  type Client,
  ScheduleAlreadyRunning,
  ScheduleOverlapPolicy,
  WorkflowNotFoundError,
} from '@temporalio/client';
import type { Queryable } from '../common/db.js';
import { InputError, parseOrThrow } from '../common/failures.js';
import { queueName } from '../common/queues.js';
import {
  type BackfillInput,
  backfillInputSchema,
  type BackfillProgress,
  type BackfillResult,
  backfillWorkflowId,
  type MaterializeInput,
  materializeInputSchema,
  materializeWorkflowId,
} from '../domain/features/backfill.js';
import { loadDefinitions, parseFeatureRef } from '../domain/features/registry.js';
import { rootCause, runningRunId } from './retrain.js';

export interface StartedBackfill {
  workflowId: string;
  runId: string;
  attached: boolean;
  features: Array<{ name: string; version: number }>;
}

/** Starts a backfill of `features` (`name` or `name@version`), or attaches to the one running. */
export async function startBackfill(
  client: Client,
  db: Queryable,
  prefix: string,
  request: Omit<BackfillInput, 'features'> & { features: string[] },
): Promise<StartedBackfill> {
  const definitions = await loadDefinitions(db, request.features.map(parseFeatureRef));
  // `a,a@1` names one feature version once.
  const features = [
    ...new Map(
      definitions.map((d) => [`${d.name}@${d.version}`, { name: d.name, version: d.version }]),
    ).values(),
  ];
  const input = parseOrThrow(backfillInputSchema, { ...request, features }, 'backfill');
  const today = new Date().toISOString().slice(0, 10);
  const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
  if (input.to >= today) {
    // A snapshot of a day that has not ended would be stamped in the future, and the online
    // store, guarded by time, would keep it over every real value until then.
    throw new InputError(
      `invalid backfill: to: is not a day that has ended (got ${JSON.stringify(input.to)};` +
        ` the last is ${JSON.stringify(yesterday)})`,
    );
  }
  const workflowId = backfillWorkflowId(features, input.from, input.to);
  const running = await runningRunId(client, workflowId);
  if (running) return { workflowId, runId: running, attached: true, features };
  const handle = await client.workflow.start('backfillFeatures', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return { workflowId, runId: handle.firstExecutionRunId, attached: false, features };
}

/** How long `backfillStatus` waits for a worker to answer the progress query. */
const QUERY_DEADLINE_MS = 5000;

export interface BackfillStatus {
  workflowId: string;
  status: string;
  progress?: BackfillProgress;
  result?: BackfillResult;
  failure?: string;
}

/** The backfill's state: the progress query while it runs, its result once done. */
export async function backfillStatus(
  client: Client,
  workflowId: string,
): Promise<BackfillStatus | undefined> {
  const handle = client.workflow.getHandle(workflowId);
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
  const status = description.status.name;
  const out: BackfillStatus = { workflowId, status };
  if (status === 'RUNNING') {
    // A query needs a worker: without one it would wait out Temporal's whole query timeout.
    try {
      out.progress = await client.connection.withDeadline(Date.now() + QUERY_DEADLINE_MS, () =>
        handle.query<BackfillProgress>('progress'),
      );
    } catch (err) {
      out.failure =
        `progress unavailable (${(err as Error).message.split('\n')[0]}):` +
        ' is a worker running? start one with: npm start';
    }
  } else if (status === 'COMPLETED') {
    out.result = (await handle.result()) as BackfillResult;
  } else {
    try {
      await handle.result();
    } catch (err) {
      // The innermost cause: the SQL error or the quality check, not "Activity task failed".
      out.failure = rootCause(err).message;
    }
  }
  return out;
}

/** Rows per second and the estimated seconds left, from a progress report at `nowMs`. */
export function rates(
  p: BackfillProgress,
  nowMs: number,
): { rowsPerSecond: number; etaSeconds: number | null } {
  const elapsed = Math.max(0.001, (nowMs - p.startedAtMs) / 1000);
  const rows = p.tileRows + p.valueRows;
  const left = p.partitionsTotal - p.partitionsDone;
  return {
    rowsPerSecond: rows / elapsed,
    etaSeconds: p.partitionsDone > 0 ? (elapsed / p.partitionsDone) * left : null,
  };
}

export interface StartedMaterialize {
  workflowId: string;
  runId: string;
  attached: boolean;
}

/**
 * Starts one incremental materialization step of `features` (or of every registered feature), or
 * attaches to the step running under the same id.
 */
export async function startMaterialize(
  client: Client,
  db: Queryable,
  prefix: string,
  request: Omit<MaterializeInput, 'features'> & { features: string[] | 'all' },
): Promise<StartedMaterialize> {
  const features =
    request.features === 'all'
      ? ('all' as const)
      : (await loadDefinitions(db, request.features.map(parseFeatureRef))).map((d) => ({
          name: d.name,
          version: d.version,
        }));
  const input = parseOrThrow(materializeInputSchema, { ...request, features }, 'materialize');
  const workflowId = materializeWorkflowId(features);
  const running = await runningRunId(client, workflowId);
  if (running) return { workflowId, runId: running, attached: true };
  const handle = await client.workflow.start('materializeFeatures', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return { workflowId, runId: handle.firstExecutionRunId, attached: false };
}

/** The schedule of incremental materialization of every registered feature. */
export const MATERIALIZE_SCHEDULE_ID = 'features-materialize';
export const DEFAULT_MATERIALIZE_EVERY = '15m';

/** Creates the schedule, or sets its interval and action to this code's; idempotent. */
export async function ensureMaterializeSchedule(
  client: Client,
  prefix: string,
  every: string = DEFAULT_MATERIALIZE_EVERY,
): Promise<void> {
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'materializeFeatures',
    workflowId: `${materializeWorkflowId('all')}/scheduled`,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [
      {
        features: 'all',
        requestedBy: `schedule/${MATERIALIZE_SCHEDULE_ID}`,
      } satisfies MaterializeInput,
    ],
  };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1m' };
  try {
    await client.schedule.create({
      scheduleId: MATERIALIZE_SCHEDULE_ID,
      spec: { intervals: [{ every }] },
      action,
      policies,
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(MATERIALIZE_SCHEDULE_ID).update((previous) => ({
      ...previous,
      spec: { intervals: [{ every }] },
      action,
      policies,
      state: { paused: previous.state.paused, note: previous.state.note },
    }));
  }
}
