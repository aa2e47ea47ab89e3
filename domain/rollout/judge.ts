/**
 * One analysis tick of a rollout step, as a pure function of the step's per-arm sums: the
 * sample-ratio check, then whether there is enough data, then the guardrails, then the decision.
 * The activity feeds it sums computed in PostgreSQL; the A/A simulation feeds it simulated ones.
 */
import {
  type Guardrail,
  guardrailAlpha,
  type Metric,
  type RolloutRequest,
  type TickDecision,
} from './config.js';
import {
  type CsInterval,
  confidenceSequence,
  csRhoSquared,
  difference,
  type RatioEstimate,
  ratioEstimate,
  type SrmResult,
  srmTest,
} from './stats.js';

/** The per-person event counts a metric is the rate of. */
export const EVENTS = ['clicks', 'conversions', 'errors', 'fallbacks', 'slow'] as const;
export type EventName = (typeof EVENTS)[number];

const EVENT_OF: Record<Metric, EventName> = {
  ctr: 'clicks',
  conversion: 'conversions',
  error_rate: 'errors',
  fallback_rate: 'fallbacks',
  latency_p99: 'slow',
};

/** The share of a canary's exposures that may exceed a p99 limit. */
export const P99_TAIL = 0.01;

/**
 * One arm's sums over its persons in the step's window: persons, exposures N (ΣN, ΣN²), and for
 * each event Y: ΣY, ΣY², ΣN·Y. `slow` counts exposures above the latency guardrail's limit.
 */
export interface ArmSums {
  persons: number;
  n: number;
  n2: number;
  events: Record<EventName, { y: number; y2: number; ny: number }>;
  /** The arm's observed 99th percentile of latency (ms), for the record; null without rows. */
  p99Ms: number | null;
}

/** An arm with nothing in it. */
export function emptyArm(): ArmSums {
  const zero = () => ({ y: 0, y2: 0, ny: 0 });
  return {
    persons: 0,
    n: 0,
    n2: 0,
    events: {
      clicks: zero(),
      conversions: zero(),
      errors: zero(),
      fallbacks: zero(),
      slow: zero(),
    },
    p99Ms: null,
  };
}

/** How one guardrail was judged at one tick. */
export interface GuardrailResult {
  metric: Metric;
  kind: Guardrail['kind'];
  direction: Guardrail['direction'];
  margin: number;
  limitMs?: number;
  /** Its share of the false-rollback budget, and the confidence sequence's tuning. */
  alpha: number;
  plannedUnits: number;
  stable: RatioEstimate | null;
  canary: RatioEstimate;
  /** canary − stable (comparisons), or the canary's share above limitMs (latency_p99). */
  interval: CsInterval | null;
  judged: boolean;
  breach: boolean;
  note: string;
}

/** Everything a tick computed and decided: stored in rollout_decisions and audited. */
export interface TickAnalysis {
  weightBp: number;
  srm: SrmResult & { persons: { stable: number; canary: number }; alpha: number };
  arms: { stable: ArmSummary; canary: ArmSummary };
  enough: boolean;
  guardrails: GuardrailResult[];
  decision: TickDecision;
  reason: string;
}

/** An arm in the record: persons, exposures, and its p99. */
export interface ArmSummary {
  persons: number;
  exposures: number;
  p99Ms: number | null;
}

/** Where the step stands in time when it is judged. */
export interface TickContext {
  weightBp: number;
  /** The bake (with its extensions) has elapsed. */
  bakeDone: boolean;
  extensions: number;
  /** A person paused the rollout or data ran short: judge, but never pass or extend. */
  paused: boolean;
}

/** Judges one tick; see the module comment and decide() for the order. */
export function judgeTick(
  config: RolloutRequest,
  stable: ArmSums,
  canary: ArmSums,
  context: TickContext,
): TickAnalysis {
  const canaryShare = context.weightBp / 10_000;
  const srm = {
    ...srmTest([stable.persons, canary.persons], [1 - canaryShare, canaryShare]),
    persons: { stable: stable.persons, canary: canary.persons },
    alpha: config.srmAlpha,
  };
  const compared = canaryShare < 1;
  const smallest = compared ? Math.min(stable.persons, canary.persons) : canary.persons;
  const enough = smallest >= config.minSamplePerArm;
  const operationalReady = smallest >= config.minOperationalSample;
  const mismatch = srm.pValue < config.srmAlpha;
  const guardrails = config.guardrails.map((g) =>
    judgeGuardrail(config, g, stable, canary, canaryShare, {
      ready: !mismatch && (g.kind === 'operational' ? operationalReady : enough),
    }),
  );
  const { decision, reason } = decide(config, { mismatch, enough, guardrails, srm, context });
  return {
    weightBp: context.weightBp,
    srm,
    arms: { stable: summary(stable), canary: summary(canary) },
    enough,
    guardrails,
    decision,
    reason,
  };
}

function summary(arm: ArmSums): ArmSummary {
  return { persons: arm.persons, exposures: arm.n, p99Ms: arm.p99Ms };
}

function ratio(arm: ArmSums, event: EventName): RatioEstimate {
  const e = arm.events[event];
  return ratioEstimate({ persons: arm.persons, n: arm.n, n2: arm.n2, y: e.y, y2: e.y2, ny: e.ny });
}

/**
 * One guardrail. Comparisons (every metric but latency_p99) bound canary − stable with the
 * asymptotic confidence sequence over the persons of both arms, tuned to be tightest when the
 * smaller arm reaches the guardrail's minimum; a breach is the whole interval on the harmful side
 * of the margin (higher is better: upper < −margin; lower is better: lower > margin). At 100% there
 * is no stable arm to compare with: comparisons are not judged. latency_p99 bounds the canary's
 * share of exposures above limitMs over its own persons: a breach is a lower bound above 1%, that
 * is, a p99 above the limit with confidence.
 */
function judgeGuardrail(
  config: RolloutRequest,
  g: Guardrail,
  stable: ArmSums,
  canary: ArmSums,
  canaryShare: number,
  { ready }: { ready: boolean },
): GuardrailResult {
  const alpha = guardrailAlpha(config);
  const minimum = g.kind === 'operational' ? config.minOperationalSample : config.minSamplePerArm;
  const event = EVENT_OF[g.metric];
  const c = ratio(canary, event);
  const base = {
    metric: g.metric,
    kind: g.kind,
    direction: g.direction,
    margin: g.margin,
    ...(g.limitMs !== undefined ? { limitMs: g.limitMs } : {}),
    alpha,
  };

  if (g.metric === 'latency_p99') {
    const plannedUnits = minimum;
    const interval = ready
      ? confidenceSequence(
          c.estimate,
          c.variance,
          canary.persons,
          csRhoSquared(alpha, minimum),
          alpha,
        )
      : null;
    const breach = interval !== null && interval.lower > P99_TAIL;
    const note = !ready
      ? `not judged: fewer than ${minimum} persons per arm, or a sample-ratio mismatch`
      : breach
        ? `canary p99 above ${g.limitMs} ms: share above the limit >= ${fmt(interval.lower)} > 1%`
        : `share above ${g.limitMs} ms in [${fmt(interval?.lower)}, ${fmt(interval?.upper)}]`;
    return {
      ...base,
      plannedUnits,
      stable: null,
      canary: c,
      interval,
      judged: ready,
      breach,
      note,
    };
  }

  const smaller = Math.min(canaryShare, 1 - canaryShare);
  const plannedUnits = smaller > 0 ? Math.ceil(minimum / smaller) : minimum;
  const s = ratio(stable, event);
  if (canaryShare >= 1) {
    const note = 'not judged: at 100% there is no stable arm to compare with';
    return {
      ...base,
      plannedUnits,
      stable: s,
      canary: c,
      interval: null,
      judged: false,
      breach: false,
      note,
    };
  }
  const d = difference(c, s);
  const interval = ready
    ? confidenceSequence(
        d.estimate,
        d.variance,
        canary.persons + stable.persons,
        csRhoSquared(alpha, plannedUnits),
        alpha,
      )
    : null;
  const breach =
    interval !== null &&
    (g.direction === 'higher' ? interval.upper < -g.margin : interval.lower > g.margin);
  const side = g.direction === 'higher' ? `below -${g.margin}` : `above ${g.margin}`;
  const note = !ready
    ? `not judged: fewer than ${minimum} persons per arm, or a sample-ratio mismatch`
    : `canary - stable in [${fmt(interval?.lower)}, ${fmt(interval?.upper)}]` +
      (breach ? `: entirely ${side}` : `: not entirely ${side}`);
  return { ...base, plannedUnits, stable: s, canary: c, interval, judged: ready, breach, note };
}

/**
 * The decision, in order: (1) a sample-ratio mismatch holds the step, unjudged; (2) a confident
 * breach rolls back (operational guardrails are judged from their own smaller minimum, so they can
 * act first); (3) without enough data the step keeps collecting until its bake ends, is then
 * extended up to maxExtensions times, then pauses for a person: never a pass or a fail; (4) with
 * enough data and no breach it continues until the bake ends, then passes. Paused: never passes
 * or extends, but still rolls back on a breach.
 */
function decide(
  config: RolloutRequest,
  t: {
    mismatch: boolean;
    enough: boolean;
    guardrails: GuardrailResult[];
    srm: SrmResult;
    context: TickContext;
  },
): { decision: TickDecision; reason: string } {
  if (t.mismatch) {
    return {
      decision: 'srm-hold',
      reason:
        `sample-ratio mismatch: chi-squared ${fmt(t.srm.statistic)} on ${t.srm.dof} dof, ` +
        `p = ${fmt(t.srm.pValue)} < ${config.srmAlpha}; not judged`,
    };
  }
  const breaches = t.guardrails.filter((g) => g.breach);
  if (breaches.length > 0) {
    return {
      decision: 'rollback',
      reason: breaches.map((g) => `${g.metric} (${g.kind}): ${g.note}`).join('; '),
    };
  }
  const { bakeDone, paused, extensions } = t.context;
  if (!t.enough) {
    const short = `fewer than ${config.minSamplePerArm} persons in an arm`;
    if (!bakeDone) return { decision: 'collecting', reason: short };
    if (paused) return { decision: 'paused', reason: `${short}; paused` };
    if (extensions < config.maxExtensions) {
      return {
        decision: 'extend',
        reason: `${short} when the bake ended: extension ${extensions + 1} of ${config.maxExtensions}`,
      };
    }
    return {
      decision: 'pause-insufficient',
      reason: `${short} after ${extensions} extensions: paused for a person (not a pass or a fail)`,
    };
  }
  if (paused) return { decision: 'paused', reason: 'no breach; paused' };
  if (!bakeDone) return { decision: 'continue', reason: 'no breach; baking' };
  return { decision: 'pass', reason: 'no breach at the end of the bake' };
}

function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (!Number.isFinite(v)) return String(v);
  return v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toFixed(4);
}
