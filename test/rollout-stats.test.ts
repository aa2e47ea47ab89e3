/**
 * The rollout statistics (domain/rollout/stats.ts, judge.ts): the sample-ratio test and the
 * delta-method ratio against scipy/numpy (test/fixtures/rollout_oracle.py), the confidence
 * sequence by its defining identity and by simulation, and whole rollouts simulated tick by tick
 * in-process on identical arms (A/A: the false rollback rate stays under alpha) and on a real
 * regression (caught).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../common/random.js';
import { type RolloutRequest, rolloutInputSchema, weightOf } from '../domain/rollout/config.js';
import { type ArmSums, emptyArm, type EventName, judgeTick } from '../domain/rollout/judge.js';
import {
  confidenceSequence,
  csRhoSquared,
  ratioEstimate,
  type RatioSums,
  srmTest,
} from '../domain/rollout/stats.js';

const ORACLE = path.join(import.meta.dirname, 'fixtures/rollout_oracle.py');
type Random = () => number;

function oracle(cases: unknown[]): Array<Record<string, number | string>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-rollout-oracle-'));
  const file = path.join(dir, 'cases.json');
  fs.writeFileSync(file, JSON.stringify({ cases }));
  const out = execFileSync('python3', [ORACLE, file], { maxBuffer: 64 * 1024 * 1024 });
  fs.rmSync(dir, { recursive: true, force: true });
  return (JSON.parse(out.toString()) as { results: Array<Record<string, number | string>> })
    .results;
}

function closeTo(actual: number, expected: number | string, relative = 1e-9): void {
  const e = typeof expected === 'string' ? Number(expected.replace('inf', 'Infinity')) : expected;
  if (!Number.isFinite(e)) {
    expect(actual).toBe(e);
    return;
  }
  expect(Math.abs(actual - e)).toBeLessThanOrEqual(relative * Math.max(Math.abs(e), 1e-300));
}

function poisson(random: Random, lambda: number): number {
  const limit = Math.exp(-lambda);
  let k = 0;
  let product = random();
  while (product > limit) {
    k++;
    product *= random();
  }
  return k;
}

function binomial(random: Random, n: number, p: number): number {
  let k = 0;
  for (let i = 0; i < n; i++) if (random() < p) k++;
  return k;
}

/** Per-person arrays as the sums ratioEstimate takes. */
function sumsOf(n: readonly number[], y: readonly number[]): RatioSums {
  const s = { persons: n.length, n: 0, n2: 0, y: 0, y2: 0, ny: 0 };
  n.forEach((ni, i) => {
    const yi = y[i] ?? 0;
    s.n += ni;
    s.n2 += ni * ni;
    s.y += yi;
    s.y2 += yi * yi;
    s.ny += ni * yi;
  });
  return s;
}

describe('srmTest', () => {
  const cases: Array<[string, number[], number[]]> = [
    ['a fair 50/50 split', [5012, 4988], [0.5, 0.5]],
    ['5% canary, on target', [95_040, 4960], [0.95, 0.05]],
    ['1% canary, 20% short', [99_200, 800], [0.99, 0.01]],
    ['three arms', [3300, 3350, 3200], [1, 1, 1]],
    ['a mismatch far in the tail (p near 1e-100)', [60_000, 40_000], [0.5, 0.5]],
    ['a million persons, off by 0.15%', [500_750, 499_250], [0.5, 0.5]],
    ['tiny counts', [3, 1], [0.75, 0.25]],
  ];
  it('equals scipy.stats.chisquare', () => {
    const expected = oracle(
      cases.map(([, observed, weights]) => ({ kind: 'srm', observed, weights })),
    );
    cases.forEach(([name, observed, weights], i) => {
      const ours = srmTest(observed, weights);
      const theirs = expected[i] ?? {};
      expect({ name, dof: ours.dof }).toEqual({ name, dof: theirs['dof'] });
      closeTo(ours.statistic, theirs['statistic'] ?? Number.NaN);
      closeTo(ours.pValue, theirs['pValue'] ?? Number.NaN, 1e-8);
    });
  });

  it('leaves nothing to test without counts or a second arm, and calls traffic to a 0-weight arm a mismatch', () => {
    expect(srmTest([0, 0], [0.9, 0.1])).toMatchObject({ statistic: 0, pValue: 1, dof: 0 });
    expect(srmTest([0, 1200], [0, 1])).toMatchObject({ pValue: 1, dof: 0 });
    expect(srmTest([3, 1200], [0, 1])).toMatchObject({ statistic: Infinity, pValue: 0 });
  });

  it('refuses counts and weights that no split has, naming them', () => {
    expect(() => srmTest([1, 2], [1])).toThrow(/differ in length \(2 vs 1\)/);
    expect(() => srmTest([1.5, 2], [1, 1])).toThrow(/observed\[0\].*1\.5/);
    expect(() => srmTest([1, 2], [1, -1])).toThrow(/weights\[1\].*-1/);
  });
});

describe('ratioEstimate', () => {
  it('equals the delta-method variance numpy computes from the per-person values', () => {
    const rng = mulberry32(6);
    const people = (count: number, ctr: number): { n: number[]; y: number[] } => {
      const n: number[] = [];
      const y: number[] = [];
      for (let i = 0; i < count; i++) {
        const exposures = 1 + poisson(rng, 3);
        n.push(exposures);
        y.push(binomial(rng, exposures, Math.min(1, ctr * -Math.log(1 - rng()))));
      }
      return { n, y };
    };
    const cases = [
      people(2, 0.3),
      people(50, 0.1),
      people(5000, 0.05),
      { n: [1, 1, 1, 1], y: [0, 0, 0, 0] },
      { n: [10, 1, 1], y: [10, 0, 0] },
    ];
    const expected = oracle(cases.map((c) => ({ kind: 'ratio', ...c })));
    cases.forEach((c, i) => {
      const ours = ratioEstimate(sumsOf(c.n, c.y));
      closeTo(ours.estimate, expected[i]?.['estimate'] ?? Number.NaN, 1e-12);
      closeTo(ours.variance, expected[i]?.['variance'] ?? Number.NaN, 1e-9);
    });
  });

  it('estimates the variance of the ratio across repeated experiments (persons cluster)', () => {
    const rng = mulberry32(7);
    const estimates: number[] = [];
    const variances: number[] = [];
    let naive = 0;
    for (let run = 0; run < 3000; run++) {
      const n: number[] = [];
      const y: number[] = [];
      for (let i = 0; i < 2000; i++) {
        const exposures = 1 + poisson(rng, 4);
        n.push(exposures);
        // Persons differ a lot: a few click much more than the rest.
        y.push(binomial(rng, exposures, Math.min(1, 0.08 * Math.log(1 - rng()) ** 2)));
      }
      const r = ratioEstimate(sumsOf(n, y));
      estimates.push(r.estimate);
      variances.push(r.variance);
      naive += (r.estimate * (1 - r.estimate)) / r.exposures;
    }
    const mean = estimates.reduce((a, b) => a + b, 0) / estimates.length;
    const empirical =
      estimates.reduce((a, b) => a + (b - mean) * (b - mean), 0) / (estimates.length - 1);
    const delta = variances.reduce((a, b) => a + b, 0) / variances.length;
    // The empirical variance over 3000 runs is itself within ±2.6% (one standard error). With
    // 400 persons of these tastes the delta method measured 7% low: it is a large-sample formula.
    expect(delta / empirical).toBeGreaterThan(0.92);
    expect(delta / empirical).toBeLessThan(1.08);
    // Treating exposures as independent would understate it badly.
    expect(naive / variances.length / empirical).toBeLessThan(0.6);
  });

  it('gives no variance for fewer than two persons and refuses impossible sums', () => {
    expect(ratioEstimate({ persons: 1, n: 4, n2: 16, y: 1, y2: 1, ny: 4 }).variance).toBe(Infinity);
    expect(Number.isNaN(ratioEstimate(sumsOf([], [])).estimate)).toBe(true);
    expect(() => ratioEstimate({ persons: 3, n: 2, n2: 2, y: 0, y2: 0, ny: 0 })).toThrow(
      /persons \(3\) exceed exposures \(2\)/,
    );
    expect(() => ratioEstimate({ persons: 1, n: 1, n2: 1, y: -1, y2: 1, ny: -1 })).toThrow(
      /y must be a finite number >= 0; got -1/,
    );
  });
});

describe('confidenceSequence', () => {
  it('sits exactly where the normal-mixture martingale reaches 1/alpha', () => {
    for (const [alpha, t, planned] of [
      [0.05, 100, 100],
      [0.001, 10_000, 500],
      [0.2, 3, 1000],
    ] as const) {
      const rho2 = csRhoSquared(alpha, planned);
      const sigma = 2.5;
      const cs = confidenceSequence(0, (sigma * sigma) / t, t, rho2, alpha);
      // M_t = (1 + tρ²)^(-1/2) · exp(ρ² S² / (2(1 + tρ²))), S the standardized sum at the boundary.
      const s = (t * cs.halfWidth) / sigma;
      const m = Math.exp((rho2 * s * s) / (2 * (1 + t * rho2))) / Math.sqrt(1 + t * rho2);
      closeTo(m, 1 / alpha, 1e-12);
    }
  });

  it('is tightest at the planned number of units', () => {
    const alpha = 0.01;
    const width = (rho2: number) => confidenceSequence(0, 1 / 800, 800, rho2, alpha).halfWidth;
    const tuned = csRhoSquared(alpha, 800);
    // The closed-form ρ is the first step of the fixed point; it is within 0.1% of the optimum.
    expect(width(tuned)).toBeLessThan(width(tuned * 1.2));
    expect(width(tuned)).toBeLessThan(width(tuned / 1.2));
    expect(width(tuned)).toBeLessThan(width(tuned * 1.02) * 1.001);
  });

  it('covers the mean at every look at once, where repeated fixed-sample intervals do not', () => {
    const rng = mulberry32(8);
    const alpha = 0.05;
    const rho2 = csRhoSquared(alpha, 200);
    let csMissed = 0;
    let fixedMissed = 0;
    const runs = 2000;
    for (let run = 0; run < runs; run++) {
      let sum = 0;
      let sq = 0;
      let csOut = false;
      let fixedOut = false;
      for (let t = 1; t <= 2000; t++) {
        // A skewed unit: exponential with mean 1 (the truth), variance 1.
        const x = -Math.log(1 - rng());
        sum += x;
        sq += x * x;
        // From 100 units on, as rollouts judge (minOperationalSample). The CS is asymptotic: with
        // this skewed unit, looks from t = 20 on missed 7.4% of the time, from t = 50 on 5.1%.
        if (t < 100 || t % 10 !== 0) continue;
        const mean = sum / t;
        const variance = (sq / t - mean * mean) / (t - 1);
        const cs = confidenceSequence(mean, variance, t, rho2, alpha);
        if (cs.lower > 1 || cs.upper < 1) csOut = true;
        if (Math.abs(mean - 1) > 1.959963984540054 * Math.sqrt(variance)) fixedOut = true;
      }
      if (csOut) csMissed++;
      if (fixedOut) fixedMissed++;
    }
    expect(csMissed / runs).toBeLessThan(alpha);
    expect(fixedMissed / runs).toBeGreaterThan(0.3);
  });

  it('is the whole line when the variance cannot be estimated', () => {
    const cs = confidenceSequence(0.1, Infinity, 1, 0.01, 0.05);
    expect([cs.lower, cs.upper]).toEqual([-Infinity, Infinity]);
    expect(() => confidenceSequence(0, 1, 10, 0, 0.05)).toThrow(/rhoSquared must be > 0; got 0/);
    expect(() => csRhoSquared(1.5, 10)).toThrow(/alpha must be in \(0, 1\); got 1.5/);
  });
});

/** What a simulated arm's persons do, per exposure. */
interface ArmModel {
  ctr: number;
  conversion: number;
  error: number;
  fallback: number;
  /** P(latency > the p99 guardrail's limit). */
  slow: number;
}

const HEALTHY: ArmModel = { ctr: 0.1, conversion: 0.02, error: 0.002, fallback: 0.01, slow: 0.004 };

function addPerson(arm: ArmSums, rng: Random, model: ArmModel): void {
  const n = 1 + poisson(rng, 1.5);
  // Persons differ: a person's propensity is the arm's rate times an exponential(1) factor.
  const taste = -Math.log(1 - rng());
  const counts: Record<EventName, number> = {
    clicks: binomial(rng, n, Math.min(1, model.ctr * taste)),
    conversions: binomial(rng, n, Math.min(1, model.conversion * taste)),
    errors: binomial(rng, n, model.error),
    fallbacks: binomial(rng, n, model.fallback),
    slow: binomial(rng, n, model.slow),
  };
  arm.persons += 1;
  arm.n += n;
  arm.n2 += n * n;
  for (const [event, y] of Object.entries(counts) as Array<[EventName, number]>) {
    const e = arm.events[event];
    e.y += y;
    e.y2 += y * y;
    e.ny += n * y;
  }
}

type SimOutcome = { outcome: string; stepIndex: number; tick: number; metrics: string[] };

/**
 * One rollout, tick by tick, as the workflow runs it: each tick new persons arrive and are
 * bucketed into the canary with the step's share; each step's window starts empty; the decisions
 * of judgeTick are acted on (extend, pass, roll back, hold, pause).
 */
function simulateRollout(
  rng: Random,
  config: RolloutRequest,
  arms: { stable: ArmModel; canary: ArmModel },
  personsPerTick: number,
  ticksPerBake: number,
): SimOutcome {
  for (let stepIndex = 0; stepIndex < config.steps.length; stepIndex++) {
    const weightBp = weightOf(config.steps[stepIndex] ?? 100);
    const stable = emptyArm();
    const canary = emptyArm();
    let extensions = 0;
    for (let tick = 1; ; tick++) {
      for (let i = 0; i < personsPerTick; i++) {
        if (rng() * 10_000 < weightBp) addPerson(canary, rng, arms.canary);
        else addPerson(stable, rng, arms.stable);
      }
      const bakeDone = tick >= ticksPerBake * (1 + extensions);
      const a = judgeTick(config, stable, canary, {
        weightBp,
        bakeDone,
        extensions,
        paused: false,
      });
      const metrics = a.guardrails.filter((g) => g.breach).map((g) => g.metric);
      if (a.decision === 'pass') break;
      if (a.decision === 'extend') extensions++;
      if (['rollback', 'srm-hold', 'pause-insufficient'].includes(a.decision)) {
        return { outcome: a.decision, stepIndex, tick, metrics };
      }
    }
  }
  return { outcome: 'promoted', stepIndex: config.steps.length - 1, tick: 0, metrics: [] };
}

const simConfig = rolloutInputSchema.parse({
  model: 'sim',
  version: 2,
  surface: 'sim',
  steps: [5, 25, 50, 100],
  bake: '5m',
  analysisEvery: '1m',
  minSamplePerArm: 200,
  minOperationalSample: 100,
  maxExtensions: 2,
  alpha: 0.05,
  guardrails: [
    { metric: 'ctr', margin: 0 },
    { metric: 'conversion', margin: 0 },
    { metric: 'error_rate', margin: 0.002 },
    { metric: 'fallback_rate', margin: 0.005 },
    { metric: 'latency_p99', limitMs: 250 },
  ],
});

function runMany(runs: number, seed: number, canary: ArmModel): Map<string, SimOutcome[]> {
  const rng = mulberry32(seed);
  const by = new Map<string, SimOutcome[]>();
  for (let run = 0; run < runs; run++) {
    const result = simulateRollout(rng, simConfig, { stable: HEALTHY, canary }, 1000, 5);
    by.set(result.outcome, [...(by.get(result.outcome) ?? []), result]);
  }
  return by;
}

describe('a simulated rollout, tick by tick', () => {
  it('A/A: identical arms are rolled back in fewer than alpha = 5% of 1000 rollouts', () => {
    const runs = 1000;
    const by = runMany(runs, 20260601, HEALTHY);
    const rolledBack = by.get('rollback')?.length ?? 0;
    const held = by.get('srm-hold')?.length ?? 0;
    // Printed for the record (the report quotes it).
    process.stdout.write(
      `A/A over ${runs} rollouts x 4 steps x 5 ticks of 1000 persons: ${rolledBack} rolled back` +
        ` (${((100 * rolledBack) / runs).toFixed(1)}%), ${held} held for SRM,` +
        ` ${by.get('promoted')?.length ?? 0} promoted\n`,
    );
    // The 95% upper binomial bound on the rate stays under alpha.
    const rate = rolledBack / runs;
    expect(rate + 1.645 * Math.sqrt((rate * (1 - rate) + 1e-4) / runs)).toBeLessThan(0.05);
    expect(held / runs).toBeLessThan(0.02);
    expect(by.get('pause-insufficient')).toBeUndefined();
  }, 120_000);

  it('catches a real regression: a canary with 30% fewer clicks is rolled back on ctr', () => {
    const by = runMany(200, 20260602, { ...HEALTHY, ctr: 0.07 });
    const caught = by.get('rollback') ?? [];
    const onCtr = caught.filter((r) => r.metrics.includes('ctr'));
    expect(onCtr.length / 200).toBeGreaterThan(0.95);
    // Before 100%, where there is no stable arm left to compare with.
    expect(onCtr.every((r) => r.stepIndex <= 2)).toBe(true);
  }, 120_000);

  it('rolls a canary that fails 10% of its decisions back at the first step, on error_rate', () => {
    const by = runMany(100, 20260603, { ...HEALTHY, error: 0.1 });
    const caught = by.get('rollback') ?? [];
    expect(caught).toHaveLength(100);
    expect(caught.every((r) => r.stepIndex === 0 && r.metrics.includes('error_rate'))).toBe(true);
  }, 60_000);

  it('holds on a sample-ratio mismatch instead of judging', () => {
    const rng = mulberry32(9);
    const stable = emptyArm();
    const canary = emptyArm();
    // A 5% canary whose exposures are logged for only 80% of its persons.
    for (let i = 0; i < 20_000; i++) {
      if (rng() < 0.05) {
        if (rng() < 0.8) addPerson(canary, rng, { ...HEALTHY, error: 0.5 });
      } else addPerson(stable, rng, HEALTHY);
    }
    const a = judgeTick(simConfig, stable, canary, {
      weightBp: 500,
      bakeDone: true,
      extensions: 0,
      paused: false,
    });
    expect(a.decision).toBe('srm-hold');
    expect(a.srm.pValue).toBeLessThan(1e-6);
    expect(a.guardrails.every((g) => !g.judged && !g.breach)).toBe(true);
  });

  it('never passes or fails without enough data: it collects, extends, then pauses', () => {
    const few = emptyArm();
    const rng = mulberry32(10);
    for (let i = 0; i < 50; i++) addPerson(few, rng, HEALTHY);
    const at = (bakeDone: boolean, extensions: number, paused = false) =>
      judgeTick(simConfig, few, few, { weightBp: 5000, bakeDone, extensions, paused }).decision;
    expect(at(false, 0)).toBe('collecting');
    expect(at(true, 0)).toBe('extend');
    expect(at(true, 1)).toBe('extend');
    expect(at(true, 2)).toBe('pause-insufficient');
    expect(at(true, 2, true)).toBe('paused');
  });
});
