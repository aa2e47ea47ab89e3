/**
 * rolloutModel: one canary rollout of a model version on one surface (workflow id
 * rollout/<surface>). Each step routes the canary its share (gated steps wait for an approval
 * first), then bakes on durable timers, judging the step's exposures every `analysisEvery`: a
 * sample-ratio mismatch holds it unjudged, too little data extends it and then pauses it for a
 * person, a confident guardrail breach routes the surface back to stable at once, and a bake that
 * ends with enough data and no breach passes the step. Pauses and resumes apply at the next tick;
 * an abort at once. After the last step (100%) `production`
 * moves to the version and it serves alone. Every decision is stored (rollout_decisions) and
 * audited. Workflow code: no I/O, clocks or randomness; effects are activities keyed by the
 * rollout, so a retry or a replay repeats nothing.
 */
import {
  condition,
  defineQuery,
  defineSignal,
  log,
  makeContinueAsNewFunc,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { Progress, Switched, SwitchInput } from '../activities/rollout.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import type { Route } from '../domain/decide/routing.js';
import {
  ABORT_SIGNAL,
  actionSchema,
  APPROVE_SIGNAL,
  approvalSchema,
  bakeMs,
  durationMs,
  PAUSE_SIGNAL,
  RESUME_SIGNAL,
  type RolloutAction,
  type RolloutApproval,
  type RolloutCarry,
  type RolloutInput,
  type RolloutOutcome,
  type RolloutRequest,
  type RolloutState,
  rolloutWorkflowInputSchema,
  STATE_QUERY,
  type TickSummary,
  weightOf,
} from '../domain/rollout/config.js';

export const pauseSignal = defineSignal<[RolloutAction]>(PAUSE_SIGNAL);
export const resumeSignal = defineSignal<[RolloutAction]>(RESUME_SIGNAL);
export const approveSignal = defineSignal<[RolloutApproval]>(APPROVE_SIGNAL);
export const abortSignal = defineSignal<[RolloutAction]>(ABORT_SIGNAL);
export const stateQuery = defineQuery<RolloutState>(STATE_QUERY);

/** How a rollout ended, with its figures. */
export interface RolloutResult {
  surface: string;
  model: string;
  version: number;
  stableVersion: number;
  ticks: number;
  outcome: RolloutOutcome;
}

// Single statements: a worker that dies mid-call is given up on after 30 s.
const act = proxyActivities<Activities>({ startToCloseTimeout: '30s', retry: ACTIVITY_RETRY });
const analysis = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '15s',
  retry: ACTIVITY_RETRY,
});
// The switch back to stable retries quickly: every second it waits, the canary keeps serving.
const urgent = proxyActivities<Activities>({
  startToCloseTimeout: '15s',
  retry: {
    ...ACTIVITY_RETRY,
    initialInterval: '100ms',
    maximumInterval: '2s',
    maximumAttempts: 50,
  },
});

/** Rolls one version out on one surface; see the module comment. */
export async function rolloutModel(raw: RolloutInput): Promise<RolloutResult> {
  const { carry, ...input } = parseOrFail(rolloutWorkflowInputSchema, raw, 'rolloutModel input');
  // The first run's id survives continue-as-new: every key of the rollout is built on it.
  const { workflowId, firstExecutionRunId } = workflowInfo();
  const run = new Rollout(input, workflowId, `${workflowId}/${firstExecutionRunId}`, carry);
  return run.execute();
}

/** A person's pause or resume, waiting for the main loop. */
type Pending = { kind: 'pause' | 'resume'; action: RolloutAction };

/** The state of one rollout and the steps it takes; lives only inside the workflow. */
class Rollout {
  readonly state: RolloutState;
  private readonly inbox: Pending[] = [];
  private readonly approvals = new Map<number, RolloutAction>();
  private abort: RolloutAction | undefined;
  private stableVersion = 0;
  private windowFrom = '';
  /** Time baked in the current bake (intervals since it began), and the bake's length. */
  private bakedMs = 0;
  private bakeForMs = 0;
  private restarts = 0;
  private actions = 0;
  private intervalsThisRun = 0;
  private readonly carried: RolloutCarry | undefined;

  constructor(
    private readonly input: RolloutRequest,
    private readonly workflowId: string,
    private readonly key: string,
    carry?: RolloutCarry,
  ) {
    this.carried = carry;
    this.state = {
      surface: input.surface,
      model: input.model,
      version: input.version,
      stableVersion: null,
      phase: 'starting',
      stepIndex: 0,
      stepPercent: input.steps[0] ?? 100,
      weightBp: 0,
      stepStartedAt: null,
      bakeUntil: null,
      timeInStepMs: 0,
      extensions: 0,
      windowGeneration: null,
      tick: 0,
      hold: null,
      awaitingGate: null,
      latest: null,
      outcome: null,
    };
    setHandler(stateQuery, () => this.state);
    setHandler(pauseSignal, (a) => this.accept('pause', a));
    setHandler(resumeSignal, (a) => this.accept('resume', a));
    setHandler(abortSignal, (a) => {
      const parsed = this.parsed(actionSchema, a, 'abort');
      if (parsed) this.abort ??= parsed;
    });
    setHandler(approveSignal, (a) => this.approve(a));
    if (carry) this.restore(carry);
  }

  async execute(): Promise<RolloutResult> {
    let first = 0;
    if (this.carried) {
      first = this.state.stepIndex;
    } else {
      const begun = await act.beginRollout({ rolloutKey: this.key, config: this.input });
      this.stableVersion = begun.stableVersion;
      this.state.stableVersion = begun.stableVersion;
      await this.audit('rollout.started', { ...this.input }, { stableVersion: this.stableVersion });
    }
    for (let i = first; i < this.input.steps.length; i++) {
      // A run that continued as new picks its step up where the last run left it: routed.
      const ended = await this.runStep(i, this.carried !== undefined && i === first);
      if (ended) return this.result(ended);
    }
    return this.result(await this.promote());
  }

  /** One step: its gate, its routing, its ticks. Answers the outcome if the rollout ended. */
  private async runStep(i: number, routed: boolean): Promise<RolloutOutcome | undefined> {
    if (!routed) {
      const percent = this.input.steps[i] ?? 100;
      Object.assign(this.state, { stepIndex: i, stepPercent: percent, extensions: 0 });
      this.state.phase = 'routing';
      if (this.input.gates.includes(percent)) {
        const aborted = await this.awaitGate(percent);
        if (aborted) return aborted;
      }
      await this.route(i, `step/${i}`, `step ${i + 1}: canary at ${percent}%`);
      await this.audit('rollout.step-started', { step: i, percent }, this.window(), `${i}`);
    }

    const every = durationMs(this.input.analysisEvery);
    for (;;) {
      if (
        this.intervalsThisRun >= this.input.intervalsPerRun ||
        workflowInfo().continueAsNewSuggested
      ) {
        await this.continueAsNew();
      }
      // One analysis interval on a durable timer; only an abort cuts it short. Time in the step
      // is counted in these intervals, so workflow code never reads a clock.
      if (await condition(() => this.abort !== undefined, every)) {
        return this.rollBack(this.abort ?? null, null);
      }
      this.bakedMs += every;
      this.state.timeInStepMs += every;
      this.intervalsThisRun += 1;
      await this.handleInbox(i);
      if (this.heldUnjudged()) continue;
      const summary = await this.tick(i);
      if (summary.decision === 'rollback') return this.rollBack(null, summary);
      await this.audit('rollout.tick', this.window(), { ...summary }, `${this.state.tick}`);
      if (summary.decision === 'pass') return undefined;
      await this.act(i, summary);
    }
  }

  /** The routes of step i: the canary at its share, stable the rest. */
  private routesOf(i: number): Route[] {
    const canary = weightOf(this.input.steps[i] ?? 100);
    return [
      { version: this.stableVersion, role: 'stable', weightBp: 10_000 - canary },
      { version: this.input.version, role: 'canary', weightBp: canary },
    ];
  }

  /** Routes step i (keyed) and starts its window and bake. */
  private async route(i: number, changeKey: string, reason: string): Promise<void> {
    const routes = this.routesOf(i);
    const weightBp = routes[1]?.weightBp ?? 0;
    const routed = await act.routeRollout({
      rolloutKey: this.key,
      surface: this.input.surface,
      actor: this.input.requestedBy,
      reason: `rollout of ${this.input.model} v${this.input.version}: ${reason}`,
      changeKey: `${this.key}/${changeKey}`,
      routes,
      progress: { ...this.progress(), weightBp, phase: this.state.hold ? 'paused' : 'baking' },
    });
    this.windowFrom = routed.from;
    Object.assign(this.state, {
      phase: this.state.hold ? 'paused' : 'baking',
      weightBp,
      windowGeneration: routed.generation,
      stepStartedAt: routed.from,
      timeInStepMs: 0,
    });
    this.startBake(i, routed.from);
  }

  /** Starts step i's bake afresh from `from` (the database's time of the change or resume). */
  private startBake(i: number, from: string): void {
    this.bakedMs = 0;
    this.bakeForMs = bakeMs(this.input, i);
    this.state.extensions = 0;
    this.state.bakeUntil = new Date(Date.parse(from) + this.bakeForMs).toISOString();
  }

  private async tick(i: number): Promise<TickSummary & { switched?: Switched }> {
    this.state.tick += 1;
    const tick = this.state.tick;
    const summary = await analysis.analyzeRolloutTick({
      place: {
        rolloutKey: this.key,
        decisionKey: `${this.key}/step/${i}/tick/${tick}`,
        stepIndex: i,
        stepPercent: this.state.stepPercent,
        tick,
        windowGeneration: this.state.windowGeneration ?? 0,
        windowFrom: this.windowFrom,
      },
      window: {
        surface: this.input.surface,
        stableVersion: this.stableVersion,
        canaryVersion: this.input.version,
        generation: this.state.windowGeneration ?? 0,
        from: this.windowFrom,
      },
      config: this.input,
      context: {
        weightBp: this.state.weightBp,
        bakeDone: this.bakedMs >= this.bakeForMs,
        extensions: this.state.extensions,
        paused: this.state.hold !== null,
      },
      routes: this.routesOf(i),
      rollback: this.switchBack(null),
    });
    this.state.latest = summary;
    return summary;
  }

  /** Acts on a tick's decision that neither passed nor rolled back. */
  private async act(i: number, s: TickSummary): Promise<void> {
    if (s.decision === 'extend') {
      const more = bakeMs(this.input, i);
      this.state.extensions += 1;
      this.bakeForMs += more;
      this.state.bakeUntil = new Date(Date.parse(this.state.bakeUntil ?? '') + more).toISOString();
      return;
    }
    const holds = {
      'pause-insufficient': 'insufficient-data',
      'srm-hold': 'sample-ratio-mismatch',
      'routing-changed': 'routing-changed',
    } as const;
    if (!(s.decision in holds)) return;
    const reason = holds[s.decision as keyof typeof holds];
    this.state.hold = { reason, by: this.workflowId, detail: s.reason };
    this.state.phase = reason === 'insufficient-data' ? 'paused' : 'held';
    log.warn('rollout held', { surface: this.input.surface, reason, detail: s.reason });
    await act.recordRolloutProgress({ rolloutKey: this.key, progress: this.progress() });
    await this.audit(
      'rollout.held',
      { step: i, decisionId: s.decisionId },
      { ...this.state.hold },
      `${s.tick}`,
    );
  }

  /** Held for a mismatch or foreign routing: not judged at all until a person resumes. */
  private heldUnjudged(): boolean {
    const reason = this.state.hold?.reason;
    return reason === 'sample-ratio-mismatch' || reason === 'routing-changed';
  }

  /** Applies the pauses and resumes that arrived, in order, each audited. */
  private async handleInbox(i: number): Promise<void> {
    for (let next = this.inbox.shift(); next; next = this.inbox.shift()) {
      this.actions += 1;
      const { kind, action } = next;
      if (kind === 'pause' && !this.state.hold) {
        this.state.hold = { reason: 'paused', by: action.by, detail: action.reason };
        this.state.phase = 'paused';
      } else if (kind === 'resume' && this.state.hold) {
        await this.resume(i, this.state.hold.reason);
      } else {
        log.info('rollout signal changes nothing', { kind, hold: this.state.hold?.reason });
        continue;
      }
      await act.recordRolloutProgress({ rolloutKey: this.key, progress: this.progress() });
      await this.actor(action.by, `rollout.${kind}d`, { reason: action.reason }, this.window());
    }
  }

  /**
   * Ends a hold. After a mismatch or foreign routing the step starts over on a new window (its
   * routes set again); after running short of data it gets a new bake with its extensions reset.
   */
  private async resume(i: number, was: string): Promise<void> {
    this.state.hold = null;
    this.state.phase = 'baking';
    if (was === 'sample-ratio-mismatch' || was === 'routing-changed') {
      this.restarts += 1;
      await this.route(i, `step/${i}/restart/${this.restarts}`, `step ${i + 1} restarted (${was})`);
    } else if (was === 'insufficient-data') {
      const { at } = await act.databaseNow();
      this.startBake(i, at);
    }
  }

  /** Waits for the gate's approval (pauses and resumes still apply); answers an abort's outcome. */
  private async awaitGate(percent: number): Promise<RolloutOutcome | undefined> {
    this.state.phase = 'awaiting-approval';
    this.state.awaitingGate = percent;
    await act.recordRolloutProgress({ rolloutKey: this.key, progress: this.progress() });
    for (;;) {
      await condition(
        () => this.approvals.has(percent) || this.abort !== undefined || this.inbox.length > 0,
      );
      if (this.abort) return this.rollBack(this.abort, null);
      await this.handleInbox(this.state.stepIndex);
      const approval = this.approvals.get(percent);
      if (!approval) continue;
      this.state.awaitingGate = null;
      await this.actor(approval.by, 'rollout.approved', { reason: approval.reason, percent }, {});
      return undefined;
    }
  }

  /**
   * Routes the surface back to stable first (one transaction), then records: the breaching tick's
   * audit, the rollout's end with the latency from that tick's decision (or the abort's arrival)
   * to the switch, and the rollback's audit.
   */
  private async rollBack(
    aborted: RolloutAction | null,
    breach: (TickSummary & { switched?: Switched }) | null,
  ): Promise<RolloutOutcome> {
    this.state.phase = 'rolling-back';
    const reason = aborted ? `aborted: ${aborted.reason}` : (breach?.reason ?? 'guardrail breach');
    // A breaching tick has switched already (inside its analysis); an abort switches here.
    const switched =
      breach?.switched ??
      (await urgent.switchToStable({
        ...this.switchBack(aborted),
        ...(breach ? { detectedAtMs: breach.detectedAtMs } : {}),
      }));
    const outcome: RolloutOutcome = {
      outcome: 'rolled-back',
      trigger: aborted ? 'abort' : 'guardrail',
      by: aborted?.by ?? this.workflowId,
      reason: reason.slice(0, 2000),
      breachDecisionId: breach?.decisionId ?? null,
      generation: switched.generation,
      latencyMs: switched.latencyMs,
    };
    if (breach) await this.audit('rollout.tick', this.window(), { ...breach }, `${breach.tick}`);
    await act.endRollout({ rolloutKey: this.key, outcome });
    Object.assign(this.state, { phase: 'rolled-back', weightBp: 0, outcome, hold: null });
    await this.actor(outcome.by, 'rollout.rolled-back', { reason }, { ...outcome });
    log.warn('rollout rolled back', { surface: this.input.surface, latencyMs: outcome.latencyMs });
    return outcome;
  }

  /** The switch back to stable: keyed once per rollout, by the workflow or the aborting person. */
  private switchBack(aborted: RolloutAction | null): SwitchInput {
    const why = aborted ? `aborted: ${aborted.reason}` : 'a guardrail breach';
    return {
      rolloutKey: this.key,
      surface: this.input.surface,
      actor: aborted?.by ?? this.workflowId,
      reason: `rollback of ${this.input.model} v${this.input.version}: ${why}`.slice(0, 500),
      changeKey: `${this.key}/rollback`,
      stableVersion: this.stableVersion,
    };
  }

  /** After the last bake: `production` moves to the version, then it serves alone. */
  private async promote(): Promise<RolloutOutcome> {
    this.state.phase = 'promoting';
    const moved = await act.promoteModelVersion({
      model: this.input.model,
      version: this.input.version,
      actor: this.input.requestedBy,
      reason: `canary rollout on ${this.input.surface} passed every step`,
      workflowId: this.workflowId,
      moveKey: `${this.key}/promote`,
    });
    const routed = await act.routeRollout({
      rolloutKey: this.key,
      surface: this.input.surface,
      actor: this.input.requestedBy,
      reason: `rollout of ${this.input.model} v${this.input.version}: promoted, serves alone`,
      changeKey: `${this.key}/final`,
      routes: [{ version: this.input.version, role: 'stable', weightBp: 10_000 }],
      progress: { ...this.progress(), phase: 'promoting', weightBp: 10_000 },
    });
    const outcome: RolloutOutcome = {
      outcome: 'promoted',
      ...moved,
      generation: routed.generation,
    };
    await act.endRollout({ rolloutKey: this.key, outcome });
    Object.assign(this.state, { phase: 'promoted', weightBp: 10_000, outcome });
    await this.audit('rollout.promoted', { version: this.input.version }, { ...outcome });
    return outcome;
  }

  /** Hands everything on to a new run of this workflow (same id), which resumes the step. */
  private async continueAsNew(): Promise<never> {
    const carry: RolloutCarry = {
      state: this.state,
      stableVersion: this.stableVersion,
      windowFrom: this.windowFrom,
      bakedMs: this.bakedMs,
      bakeForMs: this.bakeForMs,
      restarts: this.restarts,
      actions: this.actions,
      approvals: [...this.approvals.entries()],
      inbox: [...this.inbox],
      abort: this.abort ?? null,
    };
    log.info('rollout continues as new', { surface: this.input.surface, tick: this.state.tick });
    const next = makeContinueAsNewFunc<typeof rolloutModel>({ memo: workflowInfo().memo ?? {} });
    return next({ ...this.input, carry });
  }

  private restore(c: RolloutCarry): void {
    Object.assign(this.state, c.state);
    this.stableVersion = c.stableVersion;
    this.windowFrom = c.windowFrom;
    this.bakedMs = c.bakedMs;
    this.bakeForMs = c.bakeForMs;
    this.restarts = c.restarts;
    this.actions = c.actions;
    for (const [step, approval] of c.approvals) this.approvals.set(step, approval);
    this.inbox.push(...c.inbox);
    this.abort = c.abort ?? undefined;
  }

  private result(outcome: RolloutOutcome): RolloutResult {
    return {
      surface: this.input.surface,
      model: this.input.model,
      version: this.input.version,
      stableVersion: this.stableVersion,
      ticks: this.state.tick,
      outcome,
    };
  }

  private accept(kind: Pending['kind'], raw: unknown): void {
    const action = this.parsed(actionSchema, raw, kind);
    if (action) this.inbox.push({ kind, action });
  }

  /** Keeps an approval (early ones too): of the step it names, else of the next gate. */
  private approve(raw: unknown): void {
    const approval = this.parsed(approvalSchema, raw, 'approve');
    if (!approval) return;
    const gates = this.input.gates.filter((g) => !this.approvals.has(g));
    const step =
      approval.step ??
      this.state.awaitingGate ??
      gates.find((g) => this.input.steps.indexOf(g) >= this.state.stepIndex);
    if (step === undefined) {
      log.warn('approval for no gate', { by: approval.by });
      return;
    }
    if (!this.approvals.has(step)) this.approvals.set(step, approval);
  }

  private parsed<T>(
    schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
    raw: unknown,
    what: string,
  ): T | undefined {
    const result = schema.safeParse(raw);
    if (result.success) return result.data;
    log.warn('rollout signal refused', { signal: what });
    return undefined;
  }

  private progress(): Progress {
    const { phase, stepIndex, weightBp, hold } = this.state;
    return { phase, stepIndex, weightBp, hold };
  }

  private window(): Record<string, unknown> {
    const { stepIndex, stepPercent, weightBp, windowGeneration } = this.state;
    return { stepIndex, stepPercent, weightBp, windowGeneration, windowFrom: this.windowFrom };
  }

  private audit(
    action: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown>,
    step?: string,
  ) {
    return this.actor(this.input.requestedBy, action, inputs, outputs, step);
  }

  private actor(
    actor: string,
    action: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown>,
    step = `a${this.actions}`,
  ) {
    return act.recordAudit({
      actor,
      action,
      subject: `surface/${this.input.surface}`,
      inputs,
      outputs,
      step,
    });
  }
}
