/**
 * Candidate validation: a new version against the one in production, on the same later time slice
 * (the candidate's validation split). Pure functions; the activity loads the rows and scores them.
 *
 * Blessed when both hold:
 * - value thresholds: candidate AUC >= `minAuc`;
 * - change thresholds (only when there is a production version), each judged on a bootstrap
 *   confidence interval of (candidate - production) over persons — persons are resampled with
 *   replacement, with all their rows, `bootstrap` times, and the interval is the percentile one at
 *   `confidence`: the AUC difference's lower bound >= -maxAucDrop, the log loss difference's upper
 *   bound <= maxLogLossRise, the ECE difference's upper bound <= maxEceRise, the NDCG@10
 *   difference's lower bound >= -maxNdcgDrop. A candidate must be shown not worse by more than the
 *   margin: equal-looking but noisy figures do not pass.
 * ECE uses `eceBins` equal-mass bins of the sorted probabilities (bin b holds rows
 * floor(b·n/B) .. floor((b+1)·n/B) - 1): sum over bins of (rows/n)·|mean label - mean probability|.
 */
import { z } from 'zod';
import { mulberry32 } from '../common/random.js';
import { auc, logLoss, ndcgAtK } from './metrics.js';

export const validationThresholdsSchema = z.strictObject({
  minAuc: z.number().min(0).max(1).default(0.6),
  maxAucDrop: z.number().min(0).max(1).default(0.01),
  maxLogLossRise: z.number().min(0).max(10).default(0.01),
  maxEceRise: z.number().min(0).max(1).default(0.02),
  maxNdcgDrop: z.number().min(0).max(1).default(0.01),
  bootstrap: z.number().int().min(20).max(10_000).default(200),
  confidence: z.number().gt(0.5).lt(1).default(0.95),
  eceBins: z.number().int().min(2).max(100).default(10),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .default(7),
});
export type ValidationThresholds = z.output<typeof validationThresholdsSchema>;

export interface ScoredSlice {
  persons: readonly string[];
  items: readonly string[];
  labels: Float32Array;
  ratings: Float32Array;
}

export interface SliceMetrics {
  auc: number;
  logLoss: number;
  ece: number;
  ndcgAt10: number;
}

export interface Difference {
  metric: keyof SliceMetrics;
  /** candidate - production on the whole slice. */
  estimate: number;
  low: number;
  high: number;
  /** The bound that is judged, its limit, and whether it passes. */
  bound: 'low' | 'high';
  limit: number;
  pass: boolean;
}

export interface ValidationReport {
  blessed: boolean;
  reasons: string[];
  rows: number;
  persons: number;
  candidate: SliceMetrics;
  production: SliceMetrics | null;
  productionVersion: number | null;
  differences: Difference[];
  thresholds: ValidationThresholds;
}

/** Expected calibration error with equal-mass bins (see the module comment). */
export function expectedCalibrationError(
  labels: ArrayLike<number>,
  probabilities: ArrayLike<number>,
  bins: number,
): number {
  const n = labels.length;
  if (n === 0) throw new Error('expectedCalibrationError needs at least one row; got 0');
  if (probabilities.length !== n) {
    throw new Error(
      `expectedCalibrationError: ${n} labels but ${probabilities.length} probabilities`,
    );
  }
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (probabilities[a] ?? 0) - (probabilities[b] ?? 0) || a - b,
  );
  let ece = 0;
  for (let b = 0; b < bins; b++) {
    const start = Math.floor((b * n) / bins);
    const end = Math.floor(((b + 1) * n) / bins);
    if (end <= start) continue;
    let y = 0;
    let p = 0;
    for (let j = start; j < end; j++) {
      const i = order[j] as number;
      y += labels[i] ?? 0;
      p += probabilities[i] ?? 0;
    }
    ece += ((end - start) / n) * Math.abs(y / (end - start) - p / (end - start));
  }
  return ece;
}

/** AUC, log loss, ECE and NDCG@10 of one model's probabilities on rows picked by `rows`. */
export function sliceMetrics(
  slice: ScoredSlice,
  scores: Float32Array,
  rows: ArrayLike<number>,
  groups: readonly string[],
  eceBins: number,
): SliceMetrics {
  const labels = Float32Array.from(rows, (i) => slice.labels[i] ?? 0);
  const p = Float32Array.from(rows, (i) => scores[i] ?? 0);
  const ndcg = ndcgAtK({
    groups: [...groups],
    items: Array.from(rows, (i) => slice.items[i] ?? ''),
    relevance: Float32Array.from(rows, (i) => slice.ratings[i] ?? 0),
    scores: p,
  });
  return {
    auc: auc(labels, p),
    logLoss: logLoss(labels, p),
    ece: expectedCalibrationError(labels, p, eceBins),
    ndcgAt10: ndcg.ndcg,
  };
}

/** Compares a candidate's scores with production's on one slice; see the module comment. */
export async function compareCandidate(
  slice: ScoredSlice,
  candidate: Float32Array,
  production: { version: number; scores: Float32Array } | null,
  thresholds: ValidationThresholds,
): Promise<ValidationReport> {
  const all = Array.from({ length: slice.labels.length }, (_, i) => i);
  const cand = sliceMetrics(slice, candidate, all, slice.persons, thresholds.eceBins);
  const byPerson = new Map<string, number[]>();
  all.forEach((i) => {
    const p = slice.persons[i] ?? '';
    const list = byPerson.get(p);
    if (list) list.push(i);
    else byPerson.set(p, [i]);
  });
  const reasons: string[] = [];
  if (cand.auc < thresholds.minAuc) {
    reasons.push(`AUC ${cand.auc.toFixed(4)} is below the minimum ${thresholds.minAuc}`);
  }
  let prod: SliceMetrics | null = null;
  const differences: Difference[] = [];
  if (production) {
    prod = sliceMetrics(slice, production.scores, all, slice.persons, thresholds.eceBins);
    const draws = await bootstrapDifferences(
      slice,
      candidate,
      production.scores,
      byPerson,
      thresholds,
    );
    const alpha = 1 - thresholds.confidence;
    const judge = (metric: keyof SliceMetrics, bound: 'low' | 'high', limit: number) => {
      const sorted = (draws[metric] ?? []).slice().sort((a, b) => a - b);
      const low = quantile(sorted, alpha / 2);
      const high = quantile(sorted, 1 - alpha / 2);
      const estimate = cand[metric] - (prod as SliceMetrics)[metric];
      const pass = bound === 'low' ? low >= limit : high <= limit;
      differences.push({ metric, estimate, low, high, bound, limit, pass });
      if (!pass) {
        const side = bound === 'low' ? 'lower' : 'upper';
        reasons.push(
          `${metric} difference ${estimate.toFixed(4)} (${Math.round(thresholds.confidence * 100)}% CI ` +
            `${low.toFixed(4)} .. ${high.toFixed(4)}): the ${side} bound is past ${limit}`,
        );
      }
    };
    judge('auc', 'low', -thresholds.maxAucDrop);
    judge('logLoss', 'high', thresholds.maxLogLossRise);
    judge('ece', 'high', thresholds.maxEceRise);
    judge('ndcgAt10', 'low', -thresholds.maxNdcgDrop);
  }
  return {
    blessed: reasons.length === 0,
    reasons,
    rows: all.length,
    persons: byPerson.size,
    candidate: cand,
    production: prod,
    productionVersion: production?.version ?? null,
    differences,
    thresholds,
  };
}

/**
 * The resampled differences. It yields to the event loop after every resample, so an activity
 * running it keeps heartbeating (200 resamples of 30k rows take seconds of CPU).
 */
async function bootstrapDifferences(
  slice: ScoredSlice,
  candidate: Float32Array,
  production: Float32Array,
  byPerson: Map<string, number[]>,
  t: ValidationThresholds,
): Promise<Record<keyof SliceMetrics, number[]>> {
  const persons = [...byPerson.values()];
  const random = mulberry32(t.seed);
  const out: Record<keyof SliceMetrics, number[]> = { auc: [], logLoss: [], ece: [], ndcgAt10: [] };
  for (let b = 0; b < t.bootstrap; b++) {
    await new Promise((resolve) => setImmediate(resolve));
    const rows: number[] = [];
    const groups: string[] = [];
    for (let k = 0; k < persons.length; k++) {
      const picked = persons[Math.floor(random() * persons.length)] as number[];
      for (const i of picked) {
        rows.push(i);
        groups.push(String(k));
      }
    }
    let c: SliceMetrics;
    let p: SliceMetrics;
    try {
      c = sliceMetrics(slice, candidate, rows, groups, t.eceBins);
      p = sliceMetrics(slice, production, rows, groups, t.eceBins);
    } catch {
      continue; // a resample with one class has no AUC; it is left out
    }
    for (const m of ['auc', 'logLoss', 'ece', 'ndcgAt10'] as const) out[m].push(c[m] - p[m]);
  }
  return out;
}

/** The q-quantile of sorted values, linear between order statistics (numpy's default). */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return (sorted[lo] as number) + (h - lo) * ((sorted[hi] as number) - (sorted[lo] as number));
}
