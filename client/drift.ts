/**
 * Client-side drift operations, shared by the CLI and the HTTP API: configure a model's monitor
 * (stored config and its Temporal Schedule `drift/<model>`), run one on demand, read reports.
 */
import {
  type Client,
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
} from '@temporalio/client';
import type { Queryable } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { queueName } from '../common/queues.js';
import {
  type DriftConfig,
  type MonitorDriftInput,
  driftScheduleId,
} from '../domain/drift/config.js';
import { listMonitors, putMonitor } from '../domain/drift/store.js';
import type { MonitorDriftResult } from '../workflows/monitorDrift.js';

/** Stores the monitor's config and creates or updates its schedule. */
export async function configureMonitor(
  db: Queryable,
  client: Client,
  prefix: string,
  monitor: { model: string; config: DriftConfig; actor: string },
): Promise<{ scheduleId: string; every: string }> {
  await putMonitor(db, monitor.model, monitor.config, monitor.actor);
  await ensureDriftSchedule(client, prefix, monitor.model, monitor.config.every);
  return { scheduleId: driftScheduleId(monitor.model), every: monitor.config.every };
}

/**
 * The schedule of one model's monitor: every `every`, overlapping runs skipped, a missed run
 * caught up within one interval. Each run reads the stored config, so a config change needs no
 * schedule change (except `every`).
 */
export async function ensureDriftSchedule(
  client: Client,
  prefix: string,
  model: string,
  every: string,
): Promise<void> {
  const scheduleId = driftScheduleId(model);
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'monitorDrift',
    workflowId: `${scheduleId}/scheduled`,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [{ model, requestedBy: `schedule/${scheduleId}` } satisfies MonitorDriftInput],
  };
  const spec = { intervals: [{ every }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: every };
  try {
    await client.schedule.create({ scheduleId, spec, action, policies });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((previous) => ({
      ...previous,
      spec,
      action,
      policies,
      state: { paused: previous.state.paused, note: previous.state.note },
    }));
  }
}

/** Makes sure every stored monitor has its schedule (at `pops serve`). */
export async function ensureDriftSchedules(
  db: Queryable,
  client: Client,
  prefix: string,
): Promise<string[]> {
  const monitors = await listMonitors(db);
  for (const m of monitors) await ensureDriftSchedule(client, prefix, m.model, m.config.every);
  return monitors.map((m) => m.model);
}

/** The schedule's state, or null when the model has none. */
export async function describeDriftSchedule(
  client: Client,
  model: string,
): Promise<{ paused: boolean; nextRuns: string[]; recentRuns: string[] } | null> {
  try {
    const d = await client.schedule.getHandle(driftScheduleId(model)).describe();
    return {
      paused: d.state.paused,
      nextRuns: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
      recentRuns: d.info.recentActions.slice(-3).map((a) => a.takenAt.toISOString()),
    };
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return null;
    throw err;
  }
}

/** Starts one run on demand; `wait` returns its result. */
export async function runDrift(
  client: Client,
  prefix: string,
  input: MonitorDriftInput,
  clock: () => Date = () => new Date(),
): Promise<{ workflowId: string; runId: string; result: () => Promise<MonitorDriftResult> }> {
  // The run's time decides its cooldown: one from the future would hold every later request off.
  if (input.at && Date.parse(input.at) > clock().getTime() + 60_000) {
    throw new InputError(`at ${JSON.stringify(input.at)} is in the future`);
  }
  const workflowId = `${driftScheduleId(input.model)}/on-demand/${clock().toISOString()}`;
  const handle = await client.workflow.start('monitorDrift', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
  });
  return {
    workflowId,
    runId: handle.firstExecutionRunId,
    result: () => handle.result() as Promise<MonitorDriftResult>,
  };
}
