/**
 * The effect of each playbook step type, and its undo, for runPlaybook. Workflow code: every side
 * effect is an activity with the step's timeout and retries, a child workflow, or a signal to
 * another workflow (recorded in history, so a replay sends nothing twice). Keys are
 * `<runKey>/<step id>…`, so an activity retried after a crash finds its first write.
 */
import {
  executeChild,
  getExternalWorkflowHandle,
  type ActivityOptions,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { ZodType } from 'zod';
import type { Activities } from '../../activities/index.js';
import { ACTIVITY_RETRY, FAILURE_TYPES, failure } from '../../common/failures.js';
import type { PlaybookStep } from '../../domain/playbooks/definition.js';
import type { Rerouted } from '../../domain/playbooks/effects.js';
import { type ExpressionContext, resolveTemplates } from '../../domain/playbooks/expressions.js';
import { STEP_ARGS, type StepArgs } from '../../domain/playbooks/steps.js';
import { rollbackWorkflowId } from '../../domain/rollback.js';
import { retrainWorkflowId } from '../../domain/retrain.js';
import type { RunContext } from '../runPlaybook.js';

/** The activities with a step's timeout and retries. */
export function activitiesFor(s: { timeout: string; retries: number }) {
  const options: ActivityOptions = {
    startToCloseTimeout: s.timeout as ActivityOptions['startToCloseTimeout'],
    retry: { ...ACTIVITY_RETRY, maximumAttempts: s.retries + 1 },
  };
  return proxyActivities<Activities>(options);
}

/** The step's arguments with templates resolved, checked against its type's shape. */
export function resolveArgs(step: PlaybookStep, context: ExpressionContext): unknown {
  const resolved = resolveTemplates(step.with, context);
  const parsed = (STEP_ARGS[step.type] as unknown as ZodType).safeParse(resolved);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues
    .map((i) => `with.${i.path.join('.')}: ${i.message}`)
    .join('; ');
  throw failure(
    FAILURE_TYPES.validation,
    `step ${step.id}: resolved arguments are invalid: ${problems}` +
      ` (got ${JSON.stringify(resolved)?.slice(0, 300)})`,
  );
}

/** The message a person can act on, from a failure's innermost cause. */
export function errorText(err: unknown): string {
  let current = err instanceof Error ? err : new Error(String(err));
  while (current.cause instanceof Error) current = current.cause;
  return current.message;
}

const reasonOf = (ctx: RunContext, step: PlaybookStep) =>
  `incident ${ctx.input.incident.id}: ${ctx.playbook.name} step ${step.id}`;

/** Runs one step's effect (not approval or wait) and answers its output. */
export async function runStepEffect(
  ctx: RunContext,
  step: PlaybookStep,
  args: unknown,
  attempt: number,
): Promise<unknown> {
  const act = activitiesFor(step);
  const key = `${ctx.runKey}/${step.id}`;
  const incident = ctx.input.incident.id;
  const by = { actor: ctx.input.initiator, reason: reasonOf(ctx, step) };
  switch (step.type) {
    case 'freeze_rollouts': {
      const a = args as StepArgs<'freeze_rollouts'>;
      const running = await act.playbookRunningRollouts({ ...a });
      for (const r of running) {
        await getExternalWorkflowHandle(r.workflowId).signal('pauseRollout', {
          by: ctx.input.initiator,
          reason: by.reason,
        });
      }
      return { paused: running, count: running.length };
    }
    case 'rollback_model': {
      const a = args as StepArgs<'rollback_model'>;
      const moved: unknown = await executeChild('rollbackModel', {
        workflowId: rollbackWorkflowId(a.model),
        args: [
          {
            model: a.model,
            ...(a.to_version !== undefined ? { toVersion: a.to_version } : {}),
            reason: by.reason,
            requestedBy: ctx.input.initiator,
          },
        ],
      });
      const { from, to } = moved as { from: number | null; to: number };
      const surfaces = a.reroute
        ? await act.playbookReroute({ ...by, key: `${key}/route`, model: a.model, version: to })
        : [];
      return { model: a.model, from, to, surfaces };
    }
    case 'set_mode': {
      const a = args as StepArgs<'set_mode'>;
      return act.playbookSetMode({ ...by, key, surface: a.surface, mode: a.mode });
    }
    case 'identify_scope': {
      const a = args as StepArgs<'identify_scope'>;
      return act.playbookScope({ incident, stepId: step.id, ...a });
    }
    case 'notify':
      return notify(ctx, step, args as StepArgs<'notify'>, key);
    case 'run_workflow': {
      const a = args as StepArgs<'run_workflow'>;
      return executeChild(a.workflow, {
        workflowId: childIdOf(a, `${workflowInfo().workflowId}/${step.id}`),
        args: [inputOf(a, ctx)],
        workflowExecutionTimeout: step.timeout as '1m',
      });
    }
    case 'http': {
      const a = args as StepArgs<'http'>;
      const delivered = await act.playbookDeliver({
        // Each attempt of the step is a call of its own (an unmet expect asks again); retries of
        // one attempt's activity share its key.
        effectKey: `${key}/${attempt}`,
        incident,
        stepId: step.id,
        kind: 'http',
        url: a.url,
        method: a.method,
        headers: a.headers,
        ...(a.body !== undefined ? { body: a.body } : {}),
        okStatus: a.ok_status,
        timeoutMs: 10_000,
        ...(a.auth_env ? { authEnv: a.auth_env } : {}),
      });
      return { status: delivered.status, body: delivered.body };
    }
    case 'record': {
      const a = args as StepArgs<'record'>;
      await ctx.note({
        kind: 'note',
        stepId: step.id,
        stepType: step.type,
        outcome: null,
        message: a.message,
        summary: a.data && typeof a.data === 'object' ? (a.data as Record<string, unknown>) : {},
        actor: ctx.input.initiator,
      });
      return { recorded: a.message };
    }
    case 'verify_serving': {
      const a = args as StepArgs<'verify_serving'>;
      return act.playbookVerifyServing({ incident, ...a });
    }
    case 'check_quality':
      return act.playbookCheckQuality(args as StepArgs<'check_quality'>);
    case 'export_scope':
      return act.playbookExport({ incident, stepId: step.id });
    case 'stop_campaigns': {
      const a = args as StepArgs<'stop_campaigns'>;
      return act.playbookStopCampaigns({
        ...by,
        key,
        incident,
        stepId: step.id,
        ...(a.names ? { names: a.names } : {}),
        suppressScope: a.suppress_scope,
      });
    }
    case 'approval':
    case 'wait':
      throw new Error(`${step.type} is run by the workflow itself`);
  }
}

/** The webhook to on-call (with the incident summary) and/or the email to persons in scope. */
async function notify(
  ctx: RunContext,
  step: PlaybookStep,
  a: StepArgs<'notify'>,
  key: string,
): Promise<unknown> {
  const act = activitiesFor(step);
  const incident = ctx.input.incident;
  const out: Record<string, unknown> = {};
  if (a.webhook) {
    const delivered = await act.playbookDeliver({
      effectKey: `${key}/webhook`,
      incident: incident.id,
      stepId: step.id,
      kind: 'webhook',
      url: a.webhook,
      method: 'POST',
      headers: {},
      body: incidentSummary(ctx, a.summary),
      okStatus: [200, 201, 202, 204],
      timeoutMs: 10_000,
    });
    out['webhook'] = { status: delivered.status, replayed: delivered.replayed };
  }
  if (a.email) {
    const noticeId = `${incident.id}.${step.id}`;
    const audience = await act.playbookNoticeAudience({ incident: incident.id, noticeId });
    const sent: unknown = await executeChild('sendNotice', {
      workflowId: `notice/${noticeId}`,
      args: [
        {
          noticeId,
          subject: a.email.subject,
          text: a.email.text,
          purpose: a.email.purpose,
          requestedBy: ctx.input.initiator,
        },
      ],
    });
    out['email'] = { audience, ...(sent as Record<string, unknown>) };
  }
  return out;
}

/** What on-call receives: the incident, the playbook, the summary and the steps so far. */
export function incidentSummary(ctx: RunContext, summary?: string): Record<string, unknown> {
  return {
    incident: ctx.input.incident,
    playbook: { name: ctx.playbook.name, version: ctx.playbook.version },
    initiator: ctx.input.initiator,
    summary: summary ?? ctx.input.incident.title,
    steps: ctx.state.steps,
  };
}

function childIdOf(a: StepArgs<'run_workflow'>, fallback: string): string {
  const model = typeof a.input['model'] === 'string' ? a.input['model'] : undefined;
  if (a.workflow === 'rollbackModel' && model) return rollbackWorkflowId(model);
  if (a.workflow === 'retrainModel' && model) return retrainWorkflowId(model);
  return fallback;
}

/** The child's input: requestedBy filled in, feature references `name@version` pinned. */
function inputOf(a: StepArgs<'run_workflow'>, ctx: RunContext): Record<string, unknown> {
  const input: Record<string, unknown> = { requestedBy: ctx.input.initiator, ...a.input };
  if (a.workflow === 'rollbackModel' || a.workflow === 'retrainModel') {
    input['reason'] ??= `incident ${ctx.input.incident.id}`;
  }
  if (a.workflow === 'backfillFeatures' && Array.isArray(input['features'])) {
    input['features'] = (input['features'] as unknown[]).map((f) => {
      if (typeof f !== 'string') return f;
      const [name, version] = f.split('@');
      return { name, version: Number(version) };
    });
    input['reason'] ??= `incident ${ctx.input.incident.id}`;
  }
  return input;
}

/** Undoes a completed step; `skipped` when there was nothing to undo. */
export async function undoStep(
  ctx: RunContext,
  step: PlaybookStep,
  output: unknown,
): Promise<{ skipped: boolean; message: string }> {
  const act = activitiesFor(step);
  const key = `${ctx.runKey}/${step.id}/undo`;
  const by = { actor: ctx.input.initiator, reason: `compensation: ${reasonOf(ctx, step)}` };
  switch (step.type) {
    case 'freeze_rollouts': {
      const { paused } = output as { paused: Array<{ surface: string; workflowId: string }> };
      const resumed: string[] = [];
      for (const r of paused) {
        try {
          await getExternalWorkflowHandle(r.workflowId).signal('resumeRollout', {
            by: ctx.input.initiator,
            reason: by.reason,
          });
          resumed.push(r.surface);
        } catch {
          // A rollout that ended since the freeze has nothing to resume.
        }
      }
      return { skipped: paused.length === 0, message: `resumed ${resumed.join(', ') || 'none'}` };
    }
    case 'rollback_model': {
      const o = output as { model: string; from: number | null; to: number; surfaces: Rerouted[] };
      if (o.from === null) return { skipped: true, message: 'production had no version before' };
      await act.playbookRestoreProduction({
        ...by,
        key: `${key}/alias`,
        model: o.model,
        version: o.from,
      });
      const routes = await act.playbookRestoreRoutes({
        ...by,
        key: `${key}/route`,
        surfaces: o.surfaces,
      });
      return {
        skipped: false,
        message:
          `production back to v${o.from}; routes restored on ` +
          (routes.map((r) => r.surface).join(', ') || 'none'),
      };
    }
    case 'set_mode': {
      const o = output as { surface: string; from: string; to: string };
      if (o.from === o.to) return { skipped: true, message: `mode was already ${o.to}` };
      await act.playbookSetMode({ ...by, key, surface: o.surface, mode: o.from });
      return { skipped: false, message: `${o.surface} mode back to ${o.from}` };
    }
    case 'stop_campaigns': {
      const o = output as { paused: string[]; suppressed: number };
      const undone = await act.playbookResumeCampaigns({
        ...by,
        key,
        incident: ctx.input.incident.id,
        names: o.paused,
        lift: o.suppressed > 0,
      });
      return {
        skipped: o.paused.length === 0 && o.suppressed === 0,
        message: `resumed ${undone.resumed.join(', ') || 'no campaign'}; lifted ${undone.lifted}`,
      };
    }
    case 'identify_scope':
    case 'notify':
    case 'approval':
    case 'wait':
    case 'run_workflow':
    case 'http':
    case 'record':
    case 'verify_serving':
    case 'check_quality':
    case 'export_scope':
      return { skipped: true, message: `${step.type} has no undo` };
  }
}
