/**
 * Client-side start of mergeIdentities, for the CLI, the API and the schedule to share: one
 * workflow id for on-demand merges, so a second request attaches to the run in progress instead of
 * racing it; and the Temporal Schedule that starts a merge every minute (its runs have ids of their
 * own, made harmless by the workflow: see workflows/mergeIdentities.ts).
 */
import {
  type Client,
  ScheduleAlreadyRunning,
  type ScheduleDescription,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  WorkflowExecutionAlreadyStartedError,
} from '@temporalio/client';
import { queueName } from '../common/queues.js';
import { runningRunId } from './retrain.js';
import { rulesSha256 } from '../domain/identity/chunk.js';
import { type IdentityRules, identityRulesSchema } from '../domain/identity/rules.js';
import {
  MERGE_IDENTITIES_WORKFLOW_ID,
  type MergeIdentitiesInput,
  type MergeIdentitiesResult,
} from '../domain/identity/merge.js';

export interface StartedMerge {
  workflowId: string;
  runId: string;
}

export interface RequestedMerge extends StartedMerge {
  /** True when a merge was already running under this id and the request attached to it. */
  attached: boolean;
}

/**
 * The id of the schedule of identity merges; its runs are `identity-merge/scheduled-<fire time>`.
 */
export const MERGE_SCHEDULE_ID = 'identity-merge';
export const DEFAULT_MERGE_EVERY = '1m';
/**
 * After an outage, only a fire time less than this late is still taken: one catch-up run at most.
 */
const CATCHUP_WINDOW = '1m';

/**
 * Starts mergeIdentities, or attaches to the run already in progress (which then keeps its input).
 * `workflowId` is for tests that share a Temporal namespace; pops itself uses the one id.
 */
export async function requestMerge(
  client: Client,
  prefix: string,
  input: MergeIdentitiesInput = {},
  workflowId = MERGE_IDENTITIES_WORKFLOW_ID,
): Promise<RequestedMerge> {
  // Start-or-fail tells the two cases apart exactly; a run that ends between the refused start
  // and the describe is simply started again.
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const handle = await client.workflow.start('mergeIdentities', {
        workflowId,
        taskQueue: queueName(prefix, 'orchestration'),
        args: [input],
        workflowIdConflictPolicy: 'FAIL',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      });
      return { workflowId, runId: handle.firstExecutionRunId, attached: false };
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    const running = await runningRunId(client, workflowId);
    if (running) return { workflowId, runId: running, attached: true };
  }
  throw new Error(`workflow ${workflowId} kept starting and ending; try again`);
}

/** requestMerge without the `attached` flag. */
export async function startMergeIdentities(
  client: Client,
  prefix: string,
  input: MergeIdentitiesInput = {},
  workflowId = MERGE_IDENTITIES_WORKFLOW_ID,
): Promise<StartedMerge> {
  const { attached: _attached, ...run } = await requestMerge(client, prefix, input, workflowId);
  return run;
}

/** Waits for a merge to finish, following continue-as-new, and returns its totals. */
export async function waitForMerge(
  client: Client,
  run: StartedMerge,
): Promise<MergeIdentitiesResult> {
  return client.workflow
    .getHandle<
      (input: MergeIdentitiesInput) => Promise<MergeIdentitiesResult>
    >(run.workflowId, run.runId)
    .result();
}

export interface MergeScheduleOptions {
  /** Interval to apply (`1m`, `5m`); left out, an existing schedule keeps its own. */
  every?: string;
  /** Interval of a schedule created now when `every` is left out; default 1m. */
  createEvery?: string;
  /**
   * The rules each scheduled run resolves with. Left out, an existing schedule keeps the rules it
   * carries, and a new one gets the defaults: only `pops serve` (the deployment's config) sets
   * them.
   */
  rules?: IdentityRules;
  /** Tests that share a Temporal namespace pass their own ids. */
  scheduleId?: string;
  workflowId?: string;
}

/** What `pops identity schedule` shows. */
export interface MergeScheduleState {
  scheduleId: string;
  every: string;
  paused: boolean;
  note?: string;
  overlap: string;
  catchupWindow: string;
  taskQueue: string;
  /**
   * Which rules the scheduled runs resolve with: the sha256 that each chunk's ledger row records.
   */
  rulesSha256: string;
  nextRuns: string[];
  recentRuns: Array<{ workflowId: string; scheduledAt: string }>;
  running: string[];
}

/**
 * Creates the schedule of identity merges, or updates it to this code's action and policies (and
 * to `every` when given); an existing schedule stays paused or not as it was. Idempotent.
 */
export async function ensureMergeSchedule(
  client: Client,
  prefix: string,
  options: MergeScheduleOptions = {},
): Promise<MergeScheduleState> {
  const scheduleId = options.scheduleId ?? MERGE_SCHEDULE_ID;
  const action = scheduleAction(prefix, scheduleId, options.workflowId, options.rules);
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: CATCHUP_WINDOW };
  try {
    await client.schedule.create({
      scheduleId,
      spec: { intervals: [{ every: options.every ?? options.createEvery ?? DEFAULT_MERGE_EVERY }] },
      action,
      policies,
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((previous) => ({
      ...previous,
      spec: options.every ? { intervals: [{ every: options.every }] } : previous.spec,
      action: options.rules ? action : { ...action, args: previous.action.args },
      policies,
      state: { paused: previous.state.paused, note: previous.state.note },
    }));
  }
  const state = await describeMergeSchedule(client, scheduleId);
  if (!state) throw new Error(`schedule ${scheduleId} was deleted while it was being set up`);
  return state;
}

function scheduleAction(
  prefix: string,
  scheduleId: string,
  workflowId?: string,
  rules?: IdentityRules,
) {
  return {
    type: 'startWorkflow' as const,
    workflowType: 'mergeIdentities',
    // Temporal appends the fire time, so each scheduled run has its own id.
    workflowId: workflowId ?? `${MERGE_IDENTITIES_WORKFLOW_ID}/scheduled`,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [
      {
        requestedBy: `schedule/${scheduleId}`,
        ...(rules ? { rules } : {}),
      } satisfies MergeIdentitiesInput,
    ],
  };
}

/** Pauses or unpauses the schedule, with a note saying who did; throws if it does not exist. */
export async function setMergeSchedulePaused(
  client: Client,
  paused: boolean,
  note: string,
  scheduleId = MERGE_SCHEDULE_ID,
): Promise<void> {
  const handle = client.schedule.getHandle(scheduleId);
  await (paused ? handle.pause(note) : handle.unpause(note));
}

/** The schedule's state, or undefined when there is none. */
export async function describeMergeSchedule(
  client: Client,
  scheduleId = MERGE_SCHEDULE_ID,
): Promise<MergeScheduleState | undefined> {
  let description: ScheduleDescription;
  try {
    description = await client.schedule.getHandle(scheduleId).describe();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return undefined;
    throw err;
  }
  const every = description.spec.intervals?.[0]?.every;
  return {
    scheduleId,
    every: every === undefined ? 'none' : formatInterval(every),
    paused: description.state.paused,
    ...(description.state.note ? { note: description.state.note } : {}),
    overlap: description.policies.overlap ?? 'UNSPECIFIED',
    catchupWindow: formatInterval(description.policies.catchupWindow),
    taskQueue: description.action.taskQueue ?? '',
    rulesSha256: scheduledRulesSha256(description.action.args),
    nextRuns: description.info.nextActionTimes.map((t) => t.toISOString()),
    recentRuns: description.info.recentActions.map((a) => ({
      workflowId: a.action.workflow.workflowId,
      scheduledAt: a.scheduledAt.toISOString(),
    })),
    running: description.info.runningActions.map((a) => a.workflow.workflowId),
  };
}

/** The sha256 of the rules a schedule's runs resolve with (as recorded with each chunk). */
function scheduledRulesSha256(args: readonly unknown[] | undefined): string {
  const input = (args?.[0] ?? {}) as { rules?: unknown };
  const parsed = identityRulesSchema.safeParse(input.rules ?? {});
  return parsed.success ? rulesSha256(parsed.data) : 'invalid';
}

/** Milliseconds as the largest whole unit: 60000 → 1m, 90000 → 90s. */
export function formatInterval(ms: number): string {
  const units: Array<[string, number]> = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ];
  for (const [unit, size] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
