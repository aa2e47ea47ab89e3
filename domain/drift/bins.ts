/**
 * Binned drift statistics: bin edges at the reference's quantiles, bin counts, the empty-bin
 * pseudocount, PSI, the Jensen-Shannon distance and the chi-squared test of a 2×k table. Pure
 * functions; no database.
 */
import gammainc from '@stdlib/math-base-special-gammainc';
import { finiteAt, requireRows, type WeightedSample } from './sample.js';

/**
 * The count added to every bin of both sides when some bin is empty on either side. 0.5 is the
 * Jeffreys (Krichevsky-Trofimov) pseudocount: it is in rows, so its effect shrinks as samples
 * grow, and an empty bin's log ratio stays bounded by the data (about ln(2n)) instead of by an
 * arbitrary floor such as 1e-4, which would put ln(p / 1e-4) into PSI whatever the sample size.
 */
export const PSEUDOCOUNT = 0.5;

/**
 * Interior bin edges at the reference's quantiles i/bins, i = 1 … bins−1. The quantile is the
 * lower empirical one (Hyndman-Fan type 1, numpy's `method='inverted_cdf'`): the smallest
 * reference value v whose ECDF F(v) = (rows ≤ v)/n reaches i/bins, decided exactly as
 * rows·bins ≥ i·n in integers. Equal edges are collapsed into one, and an edge at the reference's
 * minimum is left out: with bins [e, next) it would open a bin (−∞, min) that the reference leaves
 * empty by construction. So every bin `binCounts` makes from these edges holds reference rows,
 * and a sample with one distinct value gets no edges (one bin).
 * Throws when the reference is empty or `bins` is not an integer ≥ 1.
 */
export function quantileEdges(reference: WeightedSample, bins: number): number[] {
  requireRows('quantileEdges', 'reference', reference);
  if (!Number.isSafeInteger(bins) || bins < 1) {
    throw new Error(`quantileEdges bins must be an integer >= 1; got ${bins}`);
  }
  const { values, counts, n } = reference;
  const minimum = values[0] ?? 0;
  const edges: number[] = [];
  let k = 0;
  let rows = counts[0] ?? 0;
  for (let i = 1; i < bins; i++) {
    while (rows * bins < i * n && k < values.length - 1) rows += counts[++k] ?? 0;
    const edge = values[k] ?? 0;
    if (edge !== minimum && edge !== edges[edges.length - 1]) edges.push(edge);
  }
  return edges;
}

/**
 * Rows of the sample in each bin of the edges: k edges make k+1 bins (−∞, e0), [e0, e1), …,
 * [e_{k−1}, +∞), so a value equal to an edge counts in the bin that starts there (numpy's
 * `searchsorted(edges, x, side='right')`). No edges give one bin holding every row.
 * Throws when an edge is not finite or the edges are not strictly ascending, naming the index.
 */
export function binCounts(s: WeightedSample, edges: readonly number[]): number[] {
  for (let i = 0; i < edges.length; i++) {
    const edge = finiteAt('binCounts', 'edges', edges, i);
    if (i > 0 && !(edge > (edges[i - 1] ?? 0))) {
      throw new Error(
        `binCounts edges must be strictly ascending; edges[${i}] = ${edge} follows ${edges[i - 1]}`,
      );
    }
  }
  const out = new Array<number>(edges.length + 1).fill(0);
  let bin = 0;
  for (let i = 0; i < s.values.length; i++) {
    const value = s.values[i] ?? 0;
    while (bin < edges.length && value >= (edges[bin] ?? 0)) bin++;
    out[bin] = (out[bin] ?? 0) + (s.counts[i] ?? 0);
  }
  return out;
}

/** Bin counts of both sides after the empty-bin rule, and what was done. */
export interface Smoothed {
  reference: number[];
  current: number[];
  /** What was added to every bin of both sides: 0 or PSEUDOCOUNT. */
  pseudocount: number;
  /** Why a pseudocount was added (which bins were empty), or null when none was. */
  reason: string | null;
}

/**
 * The empty-bin rule of PSI: when some bin is empty on either side, PSEUDOCOUNT (0.5 rows) is
 * added to every bin of both sides and `reason` names the empty bins; otherwise the counts are
 * returned unchanged with pseudocount 0 and reason null.
 * Throws when the lengths differ or are 0, a count is negative or not finite, or a side has no
 * rows.
 */
export function smoothEmptyBins(
  reference: readonly number[],
  current: readonly number[],
): Smoothed {
  checkPair('smoothEmptyBins', reference, current);
  const emptyReference = emptyBins(reference);
  const emptyCurrent = emptyBins(current);
  if (emptyReference.length === 0 && emptyCurrent.length === 0) {
    return { reference: [...reference], current: [...current], pseudocount: 0, reason: null };
  }
  const sides = [
    emptyReference.length > 0 ? `reference bins ${emptyReference.join(', ')}` : null,
    emptyCurrent.length > 0 ? `current bins ${emptyCurrent.join(', ')}` : null,
  ].filter((side) => side !== null);
  return {
    reference: reference.map((count) => count + PSEUDOCOUNT),
    current: current.map((count) => count + PSEUDOCOUNT),
    pseudocount: PSEUDOCOUNT,
    reason:
      `empty bins (${sides.join('; ')}, of ${reference.length}): ` +
      `added ${PSEUDOCOUNT} to every bin of both sides`,
  };
}

/**
 * The population stability index Σ (q_i − p_i)·ln(q_i / p_i), natural log, where p and q are the
 * reference's and the current's bin proportions after `smoothEmptyBins` (so it is finite), with
 * the pseudocount and its reason passed on.
 * Throws as `smoothEmptyBins` does.
 */
export function psi(
  reference: readonly number[],
  current: readonly number[],
): { value: number; pseudocount: number; reason: string | null } {
  checkPair('psi', reference, current);
  const smoothed = smoothEmptyBins(reference, current);
  const p = proportions(smoothed.reference);
  const q = proportions(smoothed.current);
  let value = 0;
  for (let i = 0; i < p.length; i++) {
    const pi = p[i] ?? 0;
    const qi = q[i] ?? 0;
    value += (qi - pi) * Math.log(qi / pi);
  }
  return { value, pseudocount: smoothed.pseudocount, reason: smoothed.reason };
}

/**
 * The Jensen-Shannon distance with log base 2, in [0, 1]: the square root of
 * (KL(p‖m) + KL(q‖m)) / 2 with m = (p + q)/2, p and q the two sides' bin proportions (no
 * pseudocount: empty bins are defined here, 0·log 0 = 0). Equals
 * `scipy.spatial.distance.jensenshannon(reference, current, base=2)`; a rounding residue below 0
 * reads as 0 rather than NaN.
 * Throws as `smoothEmptyBins` does.
 */
export function jensenShannon(reference: readonly number[], current: readonly number[]): number {
  checkPair('jensenShannon', reference, current);
  const p = proportions(reference);
  const q = proportions(current);
  let divergence = 0;
  for (let i = 0; i < p.length; i++) {
    const pi = p[i] ?? 0;
    const qi = q[i] ?? 0;
    const mi = (pi + qi) / 2;
    if (pi > 0) divergence += pi * Math.log(pi / mi);
    if (qi > 0) divergence += qi * Math.log(qi / mi);
  }
  return Math.sqrt(Math.max(0, divergence / Math.LN2 / 2));
}

/**
 * Pearson's chi-squared test of homogeneity on the 2×k table [reference; current], without
 * Yates' correction: Σ (observed − expected)² / expected with expected = row total · column total
 * / total, dof = k' − 1, p = the chi-squared survival function (the regularized upper incomplete
 * gamma Q(dof/2, statistic/2), from @stdlib). Categories empty on both sides are dropped first
 * (k' counts the rest); with fewer than two left the test is void: statistic 0, p 1, dof 0. Equals
 * `scipy.stats.chi2_contingency([reference, current], correction=False)` on the kept columns.
 * Throws as `smoothEmptyBins` does.
 */
export function chiSquared(
  reference: readonly number[],
  current: readonly number[],
): { statistic: number; pValue: number; dof: number } {
  checkPair('chiSquared', reference, current);
  const kept: number[] = [];
  for (let i = 0; i < reference.length; i++) {
    if ((reference[i] ?? 0) + (current[i] ?? 0) > 0) kept.push(i);
  }
  if (kept.length < 2) return { statistic: 0, pValue: 1, dof: 0 };

  const rows = [total(reference), total(current)];
  const grand = (rows[0] ?? 0) + (rows[1] ?? 0);
  let statistic = 0;
  for (const i of kept) {
    const column = (reference[i] ?? 0) + (current[i] ?? 0);
    [reference[i] ?? 0, current[i] ?? 0].forEach((observed, side) => {
      const expected = ((rows[side] ?? 0) * column) / grand;
      statistic += ((observed - expected) * (observed - expected)) / expected;
    });
  }
  const dof = kept.length - 1;
  return { statistic, pValue: gammainc(statistic / 2, dof / 2, true, true), dof };
}

/** Checks two bin-count arrays: same non-zero length, finite counts ≥ 0, rows on each side. */
function checkPair(fn: string, reference: readonly number[], current: readonly number[]): void {
  if (reference.length !== current.length) {
    throw new Error(
      `${fn} reference and current differ in length (${reference.length} vs ${current.length})`,
    );
  }
  if (reference.length === 0) throw new Error(`${fn} needs at least one bin; got 0`);
  for (const [argument, counts] of [
    ['reference', reference],
    ['current', current],
  ] as const) {
    for (let i = 0; i < counts.length; i++) {
      if (finiteAt(fn, argument, counts, i) < 0) {
        throw new Error(`${fn} ${argument}[${i}] must be >= 0; got ${counts[i]}`);
      }
    }
    if (total(counts) === 0) throw new Error(`${fn} ${argument} has no rows (every bin is 0)`);
  }
}

function emptyBins(counts: readonly number[]): number[] {
  const out: number[] = [];
  counts.forEach((count, i) => {
    if (count === 0) out.push(i);
  });
  return out;
}

function total(counts: readonly number[]): number {
  let sum = 0;
  for (const count of counts) sum += count;
  return sum;
}

function proportions(counts: readonly number[]): number[] {
  const sum = total(counts);
  return counts.map((count) => count / sum);
}
