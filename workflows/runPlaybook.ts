/**
 * runPlaybook: runs one playbook for one incident (workflow id `playbook/<incident>`, so one run
 * per incident). Steps run in order; `when:` skips one, `expect:` and errors are retried as the
 * step says, a failure stops, continues or compensates (`on_failure`). Compensation undoes the
 * completed steps that declare an undo in reverse order, each retried and recorded; a failed undo
 * is reported in the result and the timeline, never swallowed. Approval votes and aborts are
 * signals kept in workflow state, so a vote sent before its step waits counts when it does. The
 * `playbookTimeline` query answers the live state and timeline; every entry is also appended to
 * incident_timeline. Workflow code: no I/O, clocks or randomness (times are workflow time).
 */
import {
  condition,
  defineQuery,
  defineSignal,
  proxyLocalActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, FAILURE_TYPES, failure, parseOrFail } from '../common/failures.js';
import { type Playbook, type PlaybookStep, resolveParams } from '../domain/playbooks/definition.js';
import { type ExpressionContext, holds } from '../domain/playbooks/expressions.js';
import {
  ABORT_SIGNAL,
  type AbortRequest,
  abortSignalSchema,
  APPROVAL_SIGNAL,
  approvalSignalSchema,
  type ApprovalVote,
  type RunInput,
  runInputSchema,
  type RunRequest,
  type RunResult,
  type RunState,
  type StepOutcome,
  TIMELINE_QUERY,
} from '../domain/playbooks/run.js';
import type { IncidentStatus, TimelineEntry } from '../domain/playbooks/store.js';
import { UNDOABLE } from '../domain/playbooks/steps.js';
import { durationMs } from '../domain/rollout/config.js';
import { runApproval } from './playbook/approval.js';
import {
  activitiesFor,
  errorText,
  resolveArgs,
  runStepEffect,
  undoStep,
} from './playbook/steps.js';

export const approvalSignal = defineSignal<[ApprovalVote]>(APPROVAL_SIGNAL);
export const abortSignal = defineSignal<[AbortRequest]>(ABORT_SIGNAL);
export const timelineQuery = defineQuery<RunState>(TIMELINE_QUERY);

const local = proxyLocalActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: ACTIVITY_RETRY,
});

/** What a step carries while a run goes on (shared with the helpers in workflows/playbook/). */
export interface RunContext {
  input: RunRequest;
  playbook: Playbook;
  params: Record<string, unknown>;
  runKey: string;
  outputs: Record<string, unknown>;
  votes: Array<ApprovalVote & { used: boolean; seq: number }>;
  abort: AbortRequest | null;
  state: RunState;
  note(entry: Omit<TimelineEntry, 'seq' | 'at'>): Promise<void>;
  setStatus(status: IncidentStatus): Promise<void>;
  expressions(output?: unknown): ExpressionContext;
}

/** Runs a playbook for an incident; see the module comment. */
export async function runPlaybook(raw: RunInput): Promise<RunResult> {
  const input = parseOrFail(runInputSchema, raw, 'runPlaybook input');
  const run = new PlaybookRun(input);
  return run.execute();
}

class PlaybookRun implements RunContext {
  readonly runKey: string;
  playbook!: Playbook;
  params: Record<string, unknown> = {};
  outputs: Record<string, unknown> = {};
  votes: RunContext['votes'] = [];
  abort: AbortRequest | null = null;
  state: RunState;
  private seq = 0;
  private readonly completed: Array<{ step: PlaybookStep; output: unknown }> = [];

  constructor(readonly input: RunRequest) {
    const { workflowId, firstExecutionRunId } = workflowInfo();
    this.runKey = `${workflowId}/${firstExecutionRunId}`;
    this.state = {
      incident: input.incident.id,
      playbook: input.playbook,
      version: input.version,
      status: 'running',
      currentStep: null,
      waiting: null,
      steps: [],
      buffered: 0,
      timeline: [],
    };
    setHandler(timelineQuery, () => ({
      ...this.state,
      buffered: this.votes.filter((v) => !v.used).length,
    }));
    setHandler(approvalSignal, (raw) => {
      const vote = approvalSignalSchema.safeParse(raw);
      if (vote.success) this.votes.push({ ...vote.data, used: false, seq: this.votes.length });
    });
    setHandler(abortSignal, (raw) => {
      const parsed = abortSignalSchema.safeParse(raw);
      if (parsed.success && !this.abort) this.abort = parsed.data;
    });
  }

  expressions(output?: unknown): ExpressionContext {
    return {
      params: this.params,
      steps: this.outputs,
      incident: { ...this.input.incident, initiator: this.input.initiator },
      ...(output !== undefined ? { output } : {}),
    };
  }

  async note(entry: Omit<TimelineEntry, 'seq' | 'at'>): Promise<void> {
    const full: TimelineEntry = { ...entry, seq: this.seq++, at: new Date().toISOString() };
    this.state.timeline.push(full);
    await local.playbookRecord({
      incident: this.input.incident.id,
      runKey: this.runKey,
      entries: [full],
    });
  }

  async setStatus(status: IncidentStatus): Promise<void> {
    await local.playbookSetStatus({ incident: this.input.incident.id, status });
  }

  private outcome(id: string, outcome: StepOutcome | 'running'): void {
    const s = this.state.steps.find((x) => x.id === id);
    if (s) s.outcome = outcome;
  }

  async execute(): Promise<RunResult> {
    const acts = activitiesFor({ timeout: '1m', retries: 5 });
    this.playbook = await acts.playbookLoad({
      name: this.input.playbook,
      version: this.input.version,
    });
    try {
      this.params = resolveParams(this.playbook, this.input.params);
    } catch (err) {
      throw failure(FAILURE_TYPES.validation, (err as Error).message);
    }
    this.state.steps = this.playbook.steps.map((s) => ({
      id: s.id,
      type: s.type,
      outcome: 'pending',
    }));
    await this.setStatus('mitigating');
    await this.note({
      kind: 'run-started',
      stepId: null,
      stepType: null,
      outcome: null,
      message: `${this.playbook.name} v${this.playbook.version} started by ${this.input.initiator}`,
      summary: { params: this.params, severity: this.input.incident.severity },
      actor: this.input.initiator,
    });

    let failedStep: string | null = null;
    let error: string | null = null;
    let compensate = false;
    let status: RunResult['status'] = 'resolved';
    for (const step of this.playbook.steps) {
      if (this.abort) {
        status = 'aborted';
        compensate = true;
        await this.noteAbort();
        break;
      }
      const ran = await this.runStep(step);
      if (ran.outcome === 'aborted') {
        status = 'aborted';
        compensate = true;
        await this.noteAbort();
        break;
      }
      if (ran.outcome === 'ok' || ran.outcome === 'skipped') continue;
      failedStep ??= step.id;
      error ??= ran.error;
      if (step.on_failure === 'continue') continue;
      status = 'failed';
      compensate = step.on_failure === 'compensate';
      break;
    }

    const compensation = compensate ? await this.compensate() : [];
    const compensationFailures = compensation.filter((c) => c.outcome === 'failed').length;
    this.state.status = status;
    this.state.currentStep = null;
    await this.setStatus(status);
    const result: RunResult = {
      incident: this.input.incident.id,
      status,
      steps: this.state.steps.map((s) => ({
        id: s.id,
        outcome: s.outcome === 'pending' || s.outcome === 'running' ? 'skipped' : s.outcome,
      })),
      failedStep,
      error,
      compensation,
      compensationFailures,
    };
    await this.note({
      kind: 'run-ended',
      stepId: null,
      stepType: null,
      outcome: status,
      message:
        `run ${status}` +
        (failedStep ? ` at step ${failedStep}: ${error ?? ''}` : '') +
        (compensationFailures > 0 ? `; ${compensationFailures} compensation(s) FAILED` : ''),
      summary: { failedStep, compensationFailures },
      actor: 'pops',
    });
    return result;
  }

  private async noteAbort(): Promise<void> {
    await this.note({
      kind: 'abort-requested',
      stepId: this.state.currentStep,
      stepType: null,
      outcome: 'aborted',
      message: `aborted by ${this.abort?.by ?? '?'}: ${this.abort?.reason ?? ''}`,
      summary: {},
      actor: this.abort?.by ?? 'unknown',
    });
  }

  /** One step: its condition, its attempts (errors and unmet expectations), its record. */
  private async runStep(
    step: PlaybookStep,
  ): Promise<{ outcome: StepOutcome; error: string | null }> {
    const base = { stepId: step.id, stepType: step.type };
    if (step.when) {
      let taken: boolean;
      try {
        taken = holds(step.when, this.expressions());
      } catch (err) {
        return this.ended(step, 'failed', `when: ${(err as Error).message}`, {});
      }
      if (!taken) {
        this.outcome(step.id, 'skipped');
        await this.note({
          ...base,
          kind: 'step-skipped',
          outcome: 'skipped',
          message: `when: ${step.when} is false`,
          summary: {},
          actor: 'pops',
        });
        return { outcome: 'skipped', error: null };
      }
    }
    this.state.currentStep = step.id;
    this.outcome(step.id, 'running');
    await this.note({
      ...base,
      kind: 'step-started',
      outcome: null,
      message: step.title ?? step.type,
      summary: {},
      actor: 'pops',
    });

    let lastError = '';
    for (let attempt = 0; attempt <= step.retries; attempt++) {
      if (attempt > 0) await sleep(Math.min(1000 * 2 ** (attempt - 1), 30_000));
      let output: unknown;
      try {
        const args = resolveArgs(step, this.expressions());
        if (step.type === 'approval') {
          const decided = await runApproval(this, step, args as never);
          if (decided.decision === 'aborted') return { outcome: 'aborted', error: null };
          output = decided;
          if (decided.decision === 'rejected') {
            this.outputs[step.id] = output;
            return this.ended(step, 'rejected', decided.message, output);
          }
        } else if (step.type === 'wait') {
          const ms = durationMs((args as { duration: string }).duration);
          if (await condition(() => this.abort !== null, ms)) {
            return { outcome: 'aborted', error: null };
          }
          output = { waited: (args as { duration: string }).duration };
        } else {
          output = await runStepEffect(this, step, args, attempt);
        }
      } catch (err) {
        // The step's retries were spent on its activity (or a child or a signal failed): done.
        lastError = errorText(err);
        break;
      }
      if (step.expect && !this.expectHolds(step.expect, output)) {
        lastError = `expect: ${step.expect} is false for ${JSON.stringify(output)?.slice(0, 300)}`;
        continue;
      }
      this.outputs[step.id] = output;
      this.completed.push({ step, output });
      const line =
        step.type === 'approval'
          ? (output as { message: string }).message
          : summaryLine(step, output);
      return this.ended(step, 'ok', line, output);
    }
    return this.ended(step, 'failed', lastError, {});
  }

  private expectHolds(expression: string, output: unknown): boolean {
    try {
      return holds(expression, this.expressions(output));
    } catch {
      return false;
    }
  }

  private async ended(
    step: PlaybookStep,
    outcome: StepOutcome,
    message: string,
    output: unknown,
  ): Promise<{ outcome: StepOutcome; error: string | null }> {
    this.outcome(step.id, outcome);
    this.state.currentStep = null;
    await this.note({
      kind: 'step-ended',
      stepId: step.id,
      stepType: step.type,
      outcome,
      message,
      summary: summaryOf(output),
      actor: step.type === 'approval' ? approversOf(output) : 'pops',
    });
    return { outcome, error: outcome === 'ok' ? null : message };
  }

  /** Undoes the completed steps in reverse; each undo retried, recorded, its failure kept. */
  private async compensate(): Promise<RunResult['compensation']> {
    this.state.status = 'compensating';
    await this.setStatus('compensating');
    const out: RunResult['compensation'] = [];
    for (const { step, output } of [...this.completed].reverse()) {
      if (!UNDOABLE.has(step.type) || !step.compensate) continue;
      const base = { stepId: step.id, stepType: step.type, actor: 'pops' };
      await this.note({
        ...base,
        kind: 'compensation-started',
        outcome: null,
        message: `undo ${step.type}`,
        summary: {},
      });
      try {
        const undone = await undoStep(this, step, output);
        out.push({ step: step.id, outcome: undone.skipped ? 'skipped' : 'ok' });
        await this.note({
          ...base,
          kind: 'compensation-ended',
          outcome: undone.skipped ? 'skipped' : 'ok',
          message: undone.message,
          summary: summaryOf(undone),
        });
      } catch (err) {
        const message = errorText(err);
        out.push({ step: step.id, outcome: 'failed', error: message });
        await this.note({
          ...base,
          kind: 'compensation-ended',
          outcome: 'failed',
          message: `undo FAILED: ${message}`,
          summary: {},
        });
      }
    }
    return out;
  }
}

function summaryOf(output: unknown): Record<string, unknown> {
  if (output === null || output === undefined) return {};
  if (typeof output !== 'object' || Array.isArray(output)) return { value: output };
  const text = JSON.stringify(output);
  return text.length <= 4000
    ? (output as Record<string, unknown>)
    : { truncated: text.slice(0, 4000) };
}

function approversOf(output: unknown): string {
  const by = (output as { by?: string[] } | undefined)?.by;
  return by && by.length > 0 ? by.join(', ') : 'pops';
}

function summaryLine(step: PlaybookStep, output: unknown): string {
  const text = JSON.stringify(output) ?? '';
  return `${step.type} done: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`;
}
