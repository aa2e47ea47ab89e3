/**
 * The statistics of a canary rollout: the sample-ratio check, ratio metrics with person-level
 * variance, and the anytime-valid confidence sequence that judges guardrails at every tick. Pure
 * functions of their arguments: no database, no clock, no randomness (the workflow bundle may
 * import this file). Checked against scipy and by simulation in test/rollout-stats.test.ts.
 */
import gammainc from '@stdlib/math-base-special-gammainc';

/** What srmTest found. */
export interface SrmResult {
  statistic: number;
  dof: number;
  pValue: number;
  /** The counts the intended split expects, in the order of the arms given. */
  expected: number[];
}

/**
 * The sample-ratio test: Pearson's chi-squared goodness of fit of observed counts against the
 * intended shares, X² = Σ (O_i − E_i)² / E_i with E_i = N·w_i / Σw, on k − 1 degrees of freedom
 * over the arms of positive weight, and p = Q((k − 1)/2, X²/2) (the upper regularized incomplete
 * gamma function of @stdlib: the chi-squared survival function). Equals
 * `scipy.stats.chisquare(observed, expected)`. An arm of weight 0 that was observed at all is a
 * mismatch outright (X² = ∞, p = 0); fewer than two arms of positive weight, or no counts at all,
 * leave nothing to test (X² = 0, p = 1, dof 0).
 * Throws when the lengths differ, a count is not an integer ≥ 0, or a weight is negative.
 */
export function srmTest(observed: readonly number[], weights: readonly number[]): SrmResult {
  if (observed.length !== weights.length) {
    throw new Error(
      `srmTest observed and weights differ in length (${observed.length} vs ${weights.length})`,
    );
  }
  observed.forEach((o, i) => {
    if (!Number.isSafeInteger(o) || o < 0) {
      throw new Error(`srmTest observed[${i}] must be an integer >= 0; got ${o}`);
    }
  });
  weights.forEach((w, i) => {
    if (!(w >= 0) || !Number.isFinite(w)) {
      throw new Error(`srmTest weights[${i}] must be a finite number >= 0; got ${w}`);
    }
  });
  const n = sum(observed);
  const totalWeight = sum(weights);
  const expected = weights.map((w) => (totalWeight > 0 ? (n * w) / totalWeight : 0));
  const live = weights.filter((w) => w > 0).length;
  if (n > 0 && observed.some((o, i) => o > 0 && weights[i] === 0)) {
    return { statistic: Number.POSITIVE_INFINITY, dof: Math.max(0, live - 1), pValue: 0, expected };
  }
  if (n === 0 || live < 2) return { statistic: 0, dof: 0, pValue: 1, expected };
  let statistic = 0;
  observed.forEach((o, i) => {
    const e = expected[i] ?? 0;
    if (e > 0) statistic += ((o - e) * (o - e)) / e;
  });
  const dof = live - 1;
  return { statistic, dof, pValue: gammainc(statistic / 2, dof / 2, true, true), expected };
}

/**
 * Per-person sums of one ratio metric over one arm: n persons, and over them ΣN, ΣN², ΣY, ΣY²,
 * ΣN·Y, where N_i is person i's exposures and Y_i their count of the metric's event (clicks,
 * conversions, errors, …). Sums add, so a window's sums are the sums of its parts.
 */
export interface RatioSums {
  persons: number;
  n: number;
  n2: number;
  y: number;
  y2: number;
  ny: number;
}

/** A ratio metric's estimate and the variance of that estimate. */
export interface RatioEstimate {
  estimate: number;
  variance: number;
  persons: number;
  exposures: number;
  events: number;
}

/**
 * A ratio metric R = ΣY / ΣN (events per exposure) with its variance by the delta method over
 * persons, the unit of randomization: exposures of one person are not independent, so the
 * variance is that of a mean of per-person values. With D_i = Y_i − R·N_i,
 *
 *   Var(R̂) = n / (n − 1) · Σ D_i² / (ΣN)²,   Σ D_i² = ΣY² − 2R·ΣNY + R²·ΣN²,
 *
 * which is (s²_Y − 2R·s_YN + R²·s²_N) / (n·N̄²) with sample (n − 1) variances, the usual first-order
 * (delta) expansion of Ȳ/N̄ (Deng, Knoblich, Lu, "Applying the delta method in metric analytics",
 * KDD 2018). One person or none: the variance is not estimable (Infinity); no exposures: estimate
 * NaN. Throws on sums that no set of persons has (negative, or persons > ΣN).
 */
export function ratioEstimate(s: RatioSums): RatioEstimate {
  for (const key of ['persons', 'n', 'n2', 'y', 'y2'] as const) {
    if (!(s[key] >= 0) || !Number.isFinite(s[key])) {
      throw new Error(`ratioEstimate ${key} must be a finite number >= 0; got ${s[key]}`);
    }
  }
  if (s.persons > s.n) {
    throw new Error(`ratioEstimate persons (${s.persons}) exceed exposures (${s.n})`);
  }
  const base = { persons: s.persons, exposures: s.n, events: s.y };
  if (s.n === 0) return { ...base, estimate: Number.NaN, variance: Number.POSITIVE_INFINITY };
  const estimate = s.y / s.n;
  if (s.persons < 2) return { ...base, estimate, variance: Number.POSITIVE_INFINITY };
  const squares = Math.max(0, s.y2 - 2 * estimate * s.ny + estimate * estimate * s.n2);
  const variance = (s.persons / (s.persons - 1)) * (squares / (s.n * s.n));
  return { ...base, estimate, variance };
}

/**
 * The mixing parameter ρ² of the asymptotic confidence sequence that makes it tightest when
 * `plannedUnits` units have been seen (Waudby-Smith, Arbour, Sinha, Kennedy, Ramdas, "Time-uniform
 * central limit theory and asymptotic confidence sequences", Ann. Statist. 2024, §2.2):
 * ρ² = (−2 ln α + ln(1 − 2 ln α)) / t*. Fixed before any data is seen, as validity requires.
 */
export function csRhoSquared(alpha: number, plannedUnits: number): number {
  checkAlpha('csRhoSquared', alpha);
  if (!(plannedUnits >= 1) || !Number.isFinite(plannedUnits)) {
    throw new Error(`csRhoSquared plannedUnits must be a number >= 1; got ${plannedUnits}`);
  }
  const twoLog = -2 * Math.log(alpha);
  return (twoLog + Math.log(1 + twoLog)) / plannedUnits;
}

/** A confidence sequence's interval at one look. */
export interface CsInterval {
  estimate: number;
  lower: number;
  upper: number;
  halfWidth: number;
}

/**
 * The two-sided (1 − α) asymptotic confidence sequence of Waudby-Smith et al. (Theorem 2.2; the
 * normal-mixture boundary of Howard, Ramdas, McAuliffe, Sekhon, Ann. Statist. 2021), written for
 * an estimate whose variance is V after t units:
 *
 *   estimate ± √V · √( 2(tρ² + 1) / (tρ²) · ln( √(tρ² + 1) / α ) ).
 *
 * With V = σ̂²/t this is their σ̂·√(2(tρ²+1)/(t²ρ²)·ln(√(tρ²+1)/α)). The intervals at every t hold
 * the true value together with probability ≥ 1 − α in the limit (they are time-uniform), so the
 * guardrails may look at every tick, and stop at any, without inflating the false alarm rate.
 * The price against a fixed-sample interval is a width that grows like √(ln t). A one-sided
 * decision on one end errs with probability at most α (about α/2 by the boundary's symmetry).
 * Infinite or NaN V (too few persons) gives the whole line.
 */
export function confidenceSequence(
  estimate: number,
  variance: number,
  units: number,
  rhoSquared: number,
  alpha: number,
): CsInterval {
  checkAlpha('confidenceSequence', alpha);
  if (!(rhoSquared > 0)) {
    throw new Error(`confidenceSequence rhoSquared must be > 0; got ${rhoSquared}`);
  }
  if (!Number.isFinite(estimate) || !Number.isFinite(variance) || !(units >= 1)) {
    const lower = Number.NEGATIVE_INFINITY;
    return {
      estimate,
      lower,
      upper: Number.POSITIVE_INFINITY,
      halfWidth: Number.POSITIVE_INFINITY,
    };
  }
  if (variance < 0) throw new Error(`confidenceSequence variance must be >= 0; got ${variance}`);
  const r = units * rhoSquared;
  const halfWidth =
    Math.sqrt(variance) * Math.sqrt(((2 * (r + 1)) / r) * Math.log(Math.sqrt(r + 1) / alpha));
  return { estimate, lower: estimate - halfWidth, upper: estimate + halfWidth, halfWidth };
}

/** The difference canary − stable of two independent ratio estimates and its variance. */
export function difference(canary: RatioEstimate, stable: RatioEstimate) {
  return {
    estimate: canary.estimate - stable.estimate,
    variance: canary.variance + stable.variance,
  };
}

function checkAlpha(fn: string, alpha: number): void {
  if (!(alpha > 0 && alpha < 1)) throw new Error(`${fn} alpha must be in (0, 1); got ${alpha}`);
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}
