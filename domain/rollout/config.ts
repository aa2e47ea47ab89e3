/**
 * The rollout job's contract: its input (validated by zod in the workflow, the CLI and the API
 * alike), its guardrails, the signals a person sends it, the state its query answers, and its
 * workflow id. Pure, for workflow code.
 */
import { z } from 'zod';
import { surfaceNameSchema } from '../decide/routing.js';
import { modelNameSchema, plainText } from '../names.js';
import { versionNumberSchema } from '../rollback.js';

export { surfaceNameSchema };

/** A duration: `1500ms`, `2s`, `10m`, `1h`, `1d` (at most 30 days). */
export const durationSchema = z
  .string()
  .regex(/^[0-9]{1,9}(ms|s|m|h|d)$/, 'is not a duration such as 2s, 10m, 1h or 1d')
  // zod runs the refinement even when the pattern failed: a malformed value is left to the regex.
  .refine((d) => {
    const ms = msOrNaN(d);
    return Number.isNaN(ms) || (ms > 0 && ms <= 30 * 86_400_000);
  }, 'must be in (0, 30d]');

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

function msOrNaN(duration: string): number {
  const match = /^([0-9]+)(ms|s|m|h|d)$/.exec(duration);
  return match ? Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS] : NaN;
}

/** A duration in milliseconds (see durationSchema). */
export function durationMs(duration: string): number {
  const ms = msOrNaN(duration);
  if (Number.isNaN(ms)) throw new Error(`not a duration: ${JSON.stringify(duration)}`);
  return ms;
}

/**
 * The metrics a guardrail can watch. Rates are per exposure, with persons as the unit of
 * variance: `ctr` clicks, `conversion` conversions, `error_rate` exposures whose model failed,
 * `fallback_rate` exposures the rules answered; `latency_p99` the canary's 99th percentile of
 * decision latency against an absolute limit.
 */
export const METRICS = ['ctr', 'conversion', 'error_rate', 'fallback_rate', 'latency_p99'] as const;
export type Metric = (typeof METRICS)[number];

/** Which way is better, and which kind, when a guardrail does not say. */
const METRIC_DEFAULTS: Record<Metric, { kind: GuardrailKind; direction: Direction }> = {
  ctr: { kind: 'business', direction: 'higher' },
  conversion: { kind: 'business', direction: 'higher' },
  error_rate: { kind: 'operational', direction: 'lower' },
  fallback_rate: { kind: 'operational', direction: 'lower' },
  latency_p99: { kind: 'operational', direction: 'lower' },
};

export type GuardrailKind = 'operational' | 'business';
export type Direction = 'higher' | 'lower';

/**
 * A guardrail: the metric, its kind (operational: judged from `minOperationalSample` persons per
 * arm, a broken canary leaves early; business: judged from `minSamplePerArm`), which way is
 * better, and the margin of harm tolerated, as an absolute difference canary − stable of the rate
 * (0.005 = half a percentage point). `latency_p99` compares the canary with `limitMs` instead.
 */
export const guardrailSchema = z
  .strictObject({
    metric: z.enum(METRICS),
    kind: z.enum(['operational', 'business']).optional(),
    direction: z.enum(['higher', 'lower']).optional(),
    margin: z.number().min(0).max(1).default(0),
    limitMs: z.number().positive().max(600_000).optional(),
  })
  .refine((g) => (g.metric === 'latency_p99') === (g.limitMs !== undefined), {
    message: 'latency_p99 needs limitMs (and only it takes one)',
    path: ['limitMs'],
  })
  .refine((g) => g.metric !== 'latency_p99' || (g.direction ?? 'lower') === 'lower', {
    message: 'latency_p99 is better lower',
    path: ['direction'],
  })
  .transform((g) => ({
    metric: g.metric,
    kind: g.kind ?? METRIC_DEFAULTS[g.metric].kind,
    direction: g.direction ?? METRIC_DEFAULTS[g.metric].direction,
    margin: g.margin,
    ...(g.limitMs !== undefined ? { limitMs: g.limitMs } : {}),
  }));
export type Guardrail = z.output<typeof guardrailSchema>;

/** The guardrails of a rollout that names none. */
export const DEFAULT_GUARDRAILS: z.input<typeof guardrailSchema>[] = [
  { metric: 'error_rate', margin: 0.005 },
  { metric: 'ctr', margin: 0 },
];

/** A step's canary share in percent: (0, 100], in whole basis points. */
const stepSchema = z
  .number()
  .gt(0)
  .max(100)
  .refine((p) => Math.abs(p * 100 - Math.round(p * 100)) < 1e-9, 'must be whole basis points');

const rolloutFields = {
  model: modelNameSchema,
  version: versionNumberSchema,
  surface: surfaceNameSchema,
  /** The canary's share at each step, in percent, increasing, ending at 100. */
  steps: z.array(stepSchema).min(1).max(20).default([1, 5, 25, 50, 100]),
  /** How long each step bakes: one duration for all, or one per step. */
  bake: z.union([durationSchema, z.array(durationSchema).min(1).max(20)]).default('30m'),
  /** How often the canary is judged while a step bakes. */
  analysisEvery: durationSchema.default('1m'),
  /** Persons per arm a step needs before business guardrails are judged and it may pass. */
  minSamplePerArm: z.number().int().min(30).max(100_000_000).default(1000),
  /** Persons per arm before operational guardrails are judged (at most minSamplePerArm). */
  minOperationalSample: z.number().int().min(30).max(100_000_000).default(100),
  /** Times a step without enough data is extended by one bake before the rollout pauses. */
  maxExtensions: z.number().int().min(0).max(100).default(2),
  guardrails: z
    .array(guardrailSchema)
    .max(10)
    .default(DEFAULT_GUARDRAILS as never),
  /** Steps (percent) that wait for an approval before the canary is routed to them. */
  gates: z.array(stepSchema).max(20).default([]),
  /** The false-rollback budget of the whole rollout, split over guardrails × steps. */
  alpha: z.number().gt(0).max(0.5).default(0.05),
  /** A sample-ratio test p-value below this holds the rollout. */
  srmAlpha: z.number().gt(0).max(0.1).default(0.001),
  requestedBy: plainText(200).default('unknown'),
  reason: plainText(500).default('canary rollout'),
  /** Analysis intervals one workflow run waits before it continues as new (a short history). */
  intervalsPerRun: z.number().int().min(1).max(5000).default(500),
};

/** The checks across fields of a rollout's input. */
function checkRollout(
  input: { steps: number[]; bake: string | string[]; gates: number[] } & {
    guardrails: Guardrail[];
    minOperationalSample: number;
    minSamplePerArm: number;
  },
  ctx: z.RefinementCtx,
): void {
  const steps = input.steps;
  steps.forEach((p, i) => {
    if (i > 0 && p <= (steps[i - 1] ?? 0)) {
      ctx.addIssue({ code: 'custom', path: ['steps', i], message: 'steps must increase' });
    }
  });
  if (steps[steps.length - 1] !== 100) {
    ctx.addIssue({ code: 'custom', path: ['steps'], message: 'the last step must be 100' });
  }
  if (Array.isArray(input.bake) && input.bake.length !== steps.length) {
    ctx.addIssue({
      code: 'custom',
      path: ['bake'],
      message: `one bake per step: ${steps.length} steps, ${input.bake.length} bakes`,
    });
  }
  input.gates.forEach((g, i) => {
    if (!steps.includes(g)) {
      ctx.addIssue({ code: 'custom', path: ['gates', i], message: 'is not one of the steps' });
    }
  });
  const metrics = input.guardrails.map((g) => g.metric);
  metrics.forEach((m, i) => {
    if (metrics.indexOf(m) !== i) {
      ctx.addIssue({ code: 'custom', path: ['guardrails', i], message: `${m} appears twice` });
    }
  });
  if (input.minOperationalSample > input.minSamplePerArm) {
    ctx.addIssue({
      code: 'custom',
      path: ['minOperationalSample'],
      message: `must be at most minSamplePerArm (${input.minSamplePerArm})`,
    });
  }
}

/** A rollout as a person asks for it (the CLI, the API). */
export const rolloutInputSchema = z.strictObject(rolloutFields).superRefine(checkRollout);

/**
 * The rollout a retraining starts for its blessed candidate (promotion `canary`): a rollout's
 * settings without the model, the version and who asks, which the retraining fills in.
 */
export const canarySettingsSchema = z
  .strictObject(rolloutFields)
  .omit({ model: true, version: true, requestedBy: true })
  .superRefine(checkRollout);
export type CanarySettings = z.output<typeof canarySettingsSchema>;

/**
 * The workflow's input: a request, and, in a run that continued as new, where the last run left
 * off (never from a person: the CLI and the API parse rolloutInputSchema).
 */
export const rolloutWorkflowInputSchema = z
  .strictObject({
    ...rolloutFields,
    carry: z
      .custom<RolloutCarry>((v) => typeof v === 'object' && v !== null && !Array.isArray(v))
      .optional(),
  })
  .superRefine(checkRollout);

export type RolloutInput = z.input<typeof rolloutWorkflowInputSchema>;
export type RolloutRequest = z.output<typeof rolloutInputSchema>;

/** The workflow id that owns a surface's rollout: a second start attaches to it. */
export function rolloutWorkflowId(surface: string): string {
  return `rollout/${surface}`;
}

/** A step's canary weight in basis points. */
export function weightOf(percent: number): number {
  return Math.round(percent * 100);
}

/** The bake of step `index` in milliseconds. */
export function bakeMs(input: RolloutRequest, index: number): number {
  const bake = Array.isArray(input.bake) ? input.bake[index] : input.bake;
  return durationMs(bake ?? '30m');
}

/**
 * The share of the false-rollback budget each guardrail has at each step: alpha / (guardrails ×
 * steps), so that by the union bound the whole rollout rolls back a harmless canary with
 * probability at most alpha, however many ticks look.
 */
export function guardrailAlpha(input: RolloutRequest): number {
  return input.alpha / (Math.max(1, input.guardrails.length) * input.steps.length);
}

export const PAUSE_SIGNAL = 'pauseRollout';
export const RESUME_SIGNAL = 'resumeRollout';
export const APPROVE_SIGNAL = 'approveRollout';
export const ABORT_SIGNAL = 'abortRollout';
export const STATE_QUERY = 'rolloutState';

/** Who acts on a running rollout, and why (audited). */
export const actionSchema = z.strictObject({
  by: plainText(200),
  reason: plainText(500),
});
export type RolloutAction = z.output<typeof actionSchema>;

/** An approval: of the gate before `step` (percent), or of the next gate when left out. */
export const approvalSchema = actionSchema.extend({ step: stepSchema.optional() });
export type RolloutApproval = z.output<typeof approvalSchema>;

export type RolloutPhase =
  | 'starting'
  | 'routing'
  | 'awaiting-approval'
  | 'baking'
  | 'paused'
  | 'held'
  | 'rolling-back'
  | 'rolled-back'
  | 'promoting'
  | 'promoted';

/**
 * Why a rollout does not advance: a person paused it, data ran short, the split is off, or
 * someone else changed the surface's routes.
 */
export type HoldReason =
  | 'paused'
  | 'insufficient-data'
  | 'sample-ratio-mismatch'
  | 'routing-changed';

/** What the state query answers. */
export interface RolloutState {
  surface: string;
  model: string;
  version: number;
  stableVersion: number | null;
  phase: RolloutPhase;
  stepIndex: number;
  stepPercent: number;
  weightBp: number;
  /** When the current step's routing took effect (workflow time), and when its bake ends. */
  stepStartedAt: string | null;
  bakeUntil: string | null;
  /** Time in the step (since its window began), counted in analysis intervals. */
  timeInStepMs: number;
  extensions: number;
  /** The surface generation from which the step's exposures are analyzed. */
  windowGeneration: number | null;
  tick: number;
  hold: { reason: HoldReason; by: string; detail: string } | null;
  /** The gate (percent) waiting for approval, if any. */
  awaitingGate: number | null;
  latest: TickSummary | null;
  outcome: RolloutOutcome | null;
}

/** The decision of one analysis tick (see domain/rollout/judge.ts). */
export type TickDecision =
  | 'collecting'
  | 'continue'
  | 'pass'
  | 'extend'
  | 'pause-insufficient'
  | 'paused'
  | 'srm-hold'
  | 'routing-changed'
  | 'rollback';

/** A tick's decision with its figures, as stored in rollout_decisions. */
export interface TickSummary {
  decisionId: number;
  stepIndex: number;
  tick: number;
  decision: TickDecision;
  reason: string;
  decidedAt: string;
  /** The worker's clock when the decision was made (rollback latency starts here). */
  detectedAtMs: number;
  analysis: unknown;
}

/** How a rollout ended. */
export type RolloutOutcome =
  | {
      outcome: 'promoted';
      from: number | null;
      to: number;
      generation: number;
    }
  | {
      outcome: 'rolled-back';
      trigger: 'guardrail' | 'abort';
      by: string;
      reason: string;
      breachDecisionId: number | null;
      generation: number;
      /** From the breaching tick's decision (or the abort's arrival) to the routing commit. */
      latencyMs: number;
    };

/** What a run that continues as new hands the next: everything the workflow knows. */
export interface RolloutCarry {
  state: RolloutState;
  stableVersion: number;
  windowFrom: string;
  bakedMs: number;
  bakeForMs: number;
  restarts: number;
  actions: number;
  approvals: Array<[number, RolloutAction]>;
  inbox: Array<{ kind: 'pause' | 'resume'; action: RolloutAction }>;
  abort: RolloutAction | null;
}
