/**
 * Client-side campaign operations, shared by the CLI and the HTTP API: define a campaign (stored,
 * audited, and its Temporal Schedule `campaign/<name>` created or updated: overlap skip, the
 * campaign's catch-up window), trigger a fire time now, backfill a range, pause and resume, read
 * runs and reports, and start a lift measurement.
 */
import {
  type Client,
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  type ScheduleOptionsAction,
} from '@temporalio/client';
import type { Pool, Queryable } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { queueName } from '../common/queues.js';
import { pauseCampaigns, resumeCampaigns } from '../domain/campaigns/control.js';
import { templateProblems } from '../domain/campaigns/content.js';
import type { Campaign } from '../domain/campaigns/definition.js';
import { campaignScheduleId, campaignWorkflowId, fireTimeText } from '../domain/campaigns/names.js';
import {
  computeRunReport,
  getCampaign,
  listRuns,
  putCampaign,
  storedReports,
} from '../domain/campaigns/store.js';
import type { LiftReport } from '../domain/campaigns/lift.js';
import type { RunCampaignInput } from '../domain/campaigns/workflow-input.js';
import type { RunCampaignResult } from '../workflows/runCampaign.js';

/** Thrown for a campaign that is not defined (`kind` picks the API answer). */
export class CampaignRefusal extends InputError {
  constructor(
    readonly kind: 'not_found' | 'conflict' | 'validation',
    message: string,
  ) {
    super(message);
  }
}

/** The schedule's spec: the campaign's cron in its zone (UTC for a local-time campaign). */
export function scheduleSpecOf(campaign: Campaign, startAt?: Date) {
  const zone = 'timeZone' in campaign.schedule ? campaign.schedule.timeZone : 'UTC';
  return {
    cronExpressions: [campaign.schedule.cron],
    timezone: zone,
    ...(startAt ? { startAt } : {}),
  };
}

/** Creates or updates the campaign's schedule; a paused campaign's schedule stays paused. */
export async function ensureCampaignSchedule(
  client: Client,
  prefix: string,
  campaign: Campaign,
  options: { paused?: boolean; startAt?: Date } = {},
): Promise<string> {
  const scheduleId = campaignScheduleId(campaign.name);
  const action: ScheduleOptionsAction = {
    type: 'startWorkflow',
    workflowType: 'runCampaign',
    // Temporal appends `-<scheduled time>` to each run's id: campaign/<name>-<fire time>.
    workflowId: scheduleId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [{ campaign: campaign.name } satisfies RunCampaignInput],
  };
  const spec = scheduleSpecOf(campaign, options.startAt);
  const policies = {
    overlap: ScheduleOverlapPolicy.SKIP,
    catchupWindow: campaign.catchUpWindow,
  };
  try {
    await client.schedule.create({
      scheduleId,
      spec,
      action,
      policies,
      state: { paused: options.paused ?? false, note: 'defined' },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((previous) => ({
      ...previous,
      spec,
      action,
      policies,
      state: { paused: options.paused ?? previous.state.paused, note: previous.state.note },
    }));
  }
  return scheduleId;
}

/** Stores a definition and makes its schedule match it. */
export async function defineCampaign(
  pool: Pool,
  client: Client,
  prefix: string,
  input: { campaign: Campaign; origin: string; actor: string },
): Promise<{ created: boolean; changed: boolean; scheduleId: string }> {
  // Checked before anything is stored: a template that would fail every render is refused here.
  const problems = templateProblems(input.campaign);
  // So is a recommendations block on a surface that does not exist: every message would fail.
  const surface = input.campaign.template.recommendations?.surface;
  if (surface !== undefined) {
    const { rows } = await pool.query('select 1 from surfaces where name = $1', [surface]);
    if (rows.length === 0) {
      problems.push(
        `template.recommendations.surface: surface "${surface}" does not exist` +
          ' (create it first: pops surfaces create)',
      );
    }
  }
  if (problems.length > 0) {
    throw new CampaignRefusal('validation', `invalid campaign: ${problems.join('; ')}`);
  }
  const stored = await putCampaign(pool, input);
  const current = await getCampaign(pool, input.campaign.name);
  const scheduleId = await ensureCampaignSchedule(client, prefix, input.campaign, {
    paused: current?.paused ?? false,
  });
  return { ...stored, scheduleId };
}

async function known(db: Queryable, name: string): Promise<Campaign> {
  const found = await getCampaign(db, name);
  if (!found) throw new CampaignRefusal('not_found', `campaign "${name}" is not defined`);
  return found.definition;
}

/** The schedule's state, or null when it has none. */
export async function describeCampaignSchedule(client: Client, name: string) {
  try {
    const d = await client.schedule.getHandle(campaignScheduleId(name)).describe();
    return {
      paused: d.state.paused,
      note: d.state.note ?? null,
      nextFireTimes: d.info.nextActionTimes.slice(0, 5).map((t) => t.toISOString()),
      recentFireTimes: d.info.recentActions.slice(-5).map((a) => a.scheduledAt.toISOString()),
    };
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return null;
    throw err;
  }
}

/**
 * Starts the run of one fire time (default now, to the second) under the id its schedule would
 * give it, or attaches to that run. Returns the workflow id.
 */
export async function triggerCampaign(
  pool: Pool,
  client: Client,
  prefix: string,
  input: { name: string; fireTime?: Date },
): Promise<{ workflowId: string; fireTime: string }> {
  await known(pool, input.name);
  const fireTime = fireTimeText(input.fireTime ?? new Date());
  const workflowId = campaignWorkflowId(input.name, fireTime);
  try {
    await client.workflow.start('runCampaign', {
      workflowId,
      taskQueue: queueName(prefix, 'orchestration'),
      args: [{ campaign: input.name, fireTime } satisfies RunCampaignInput],
    });
  } catch (err) {
    if ((err as Error).name !== 'WorkflowExecutionAlreadyStartedError') throw err;
  }
  return { workflowId, fireTime };
}

/** Waits for a run started by triggerCampaign. */
export function waitForRun(client: Client, workflowId: string): Promise<RunCampaignResult> {
  return client.workflow.getHandle(workflowId).result() as Promise<RunCampaignResult>;
}

/**
 * Has the schedule start every fire time in [from, to] now (Temporal's backfill, overlap skip):
 * each is a run of its own, and one older than maxLateness is recorded as late, not sent.
 */
export async function backfillCampaign(
  pool: Pool,
  client: Client,
  input: { name: string; from: Date; to: Date },
): Promise<void> {
  await known(pool, input.name);
  if (input.from >= input.to) throw new InputError('backfill: from must be before to');
  await client.schedule.getHandle(campaignScheduleId(input.name)).backfill({
    start: input.from,
    end: input.to,
    overlap: ScheduleOverlapPolicy.ALLOW_ALL,
  });
}

/** Pauses (or resumes) one campaign: its schedule and runs in flight. */
export async function setCampaignPaused(
  pool: Pool,
  client: Client,
  input: { name: string; paused: boolean; reason: string; actor: string },
): Promise<{ name: string; paused: boolean; changed: boolean }> {
  await known(pool, input.name);
  const change = input.paused ? pauseCampaigns : resumeCampaigns;
  const changed = await change(client, pool, {
    names: [input.name],
    reason: input.reason,
    actor: input.actor,
  });
  return { name: input.name, paused: input.paused, changed: changed.length > 0 };
}

/** A campaign's runs with their reports (run and lift). */
export async function campaignReport(db: Queryable, name: string, limit = 5) {
  await known(db, name);
  const runs = await listRuns(db, name, limit);
  return Promise.all(
    runs.map(async (run) => {
      const stored = await storedReports(db, name, run.fireTime);
      return {
        fireTime: run.fireTime.toISOString(),
        workflowId: run.workflowId,
        run: await computeRunReport(db, name, run.fireTime),
        lift: stored.filter((r) => r.kind === 'lift').map((r) => r.report as LiftReport),
      };
    }),
  );
}

/** Measures a run's lift now (workflow measureCampaignLift) and returns the report. */
export async function measureLiftNow(
  client: Client,
  prefix: string,
  input: { campaign: string; run: string; horizonDays: number },
): Promise<LiftReport> {
  const run = fireTimeText(input.run);
  return client.workflow.execute('measureCampaignLift', {
    workflowId: `campaign-lift/${input.campaign}/${run}/${input.horizonDays}d`,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [{ ...input, run }],
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  }) as Promise<LiftReport>;
}
