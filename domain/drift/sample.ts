/**
 * Samples for the drift statistics: distinct values ascending with their row counts, which is
 * what SQL `group by value` returns, plus the moments and the Wasserstein distance computed on
 * them. Pure functions; no database. The statistics themselves are exported by `./stats.js`.
 */

/** A sample as distinct values ascending with their counts (what SQL `group by value` returns). */
export interface WeightedSample {
  /** Distinct finite values, strictly ascending (-0 is stored as 0). */
  values: Float64Array;
  /** Row count of each value: positive integers, as long as `values`. */
  counts: Float64Array;
  /** Total rows: the sum of `counts` (0 for an empty sample). */
  n: number;
}

/**
 * The sample of raw rows: values sorted, equal values merged with their count. An empty input
 * gives an empty sample (n = 0), which the statistics refuse by name.
 * Throws when a value is NaN or infinite, naming its index.
 */
export function weightedSample(values: ArrayLike<number>): WeightedSample {
  const sorted = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    sorted[i] = finiteAt('weightedSample', 'values', values, i);
  }
  sorted.sort();
  const distinct: number[] = [];
  const counts: number[] = [];
  for (const value of sorted) {
    if (distinct.length > 0 && distinct[distinct.length - 1] === value) {
      counts[counts.length - 1] = (counts[counts.length - 1] ?? 0) + 1;
    } else {
      distinct.push(value === 0 ? 0 : value);
      counts.push(1);
    }
  }
  return {
    values: Float64Array.from(distinct),
    counts: Float64Array.from(counts),
    n: values.length,
  };
}

/**
 * The sample of (value, count) pairs in any order: duplicate values are merged (their counts
 * added) and values whose count is 0 are left out. Counts are row counts, so they must be
 * non-negative integers, and their total a safe integer.
 * Throws when the lengths differ, a value is not finite or a count is not a non-negative integer,
 * naming the index and the value.
 */
export function fromCounts(values: ArrayLike<number>, counts: ArrayLike<number>): WeightedSample {
  if (values.length !== counts.length) {
    throw new Error(
      `fromCounts values and counts differ in length (${values.length} vs ${counts.length})`,
    );
  }
  const order: number[] = [];
  for (let i = 0; i < values.length; i++) {
    finiteAt('fromCounts', 'values', values, i);
    if (countAt('fromCounts', 'counts', counts, i) > 0) order.push(i);
  }
  order.sort((x, y) => (values[x] ?? 0) - (values[y] ?? 0));

  const distinct: number[] = [];
  const merged: number[] = [];
  let n = 0;
  for (const i of order) {
    const value = values[i] ?? 0;
    const count = counts[i] ?? 0;
    n += count;
    if (distinct.length > 0 && distinct[distinct.length - 1] === value) {
      merged[merged.length - 1] = (merged[merged.length - 1] ?? 0) + count;
    } else {
      distinct.push(value === 0 ? 0 : value);
      merged.push(count);
    }
  }
  if (!Number.isSafeInteger(n)) {
    throw new Error(`fromCounts total count ${n} is not a safe integer`);
  }
  return { values: Float64Array.from(distinct), counts: Float64Array.from(merged), n };
}

/** The mean Σ value·count / n. Throws on an empty sample. */
export function mean(s: WeightedSample): number {
  requireRows('mean', 's', s);
  if (s.values.length === 1) return s.values[0] ?? 0;
  const sum = new CompensatedSum();
  for (let i = 0; i < s.values.length; i++) sum.add((s.values[i] ?? 0) * (s.counts[i] ?? 0));
  return sum.value / s.n;
}

/**
 * The population standard deviation (ddof = 0, numpy's `np.std` default): the square root of
 * Σ count·(value − mean)² / n, in two passes. A sample of one distinct value gives exactly 0.
 * Throws on an empty sample.
 */
export function std(s: WeightedSample): number {
  requireRows('std', 's', s);
  if (s.values.length === 1) return 0;
  const m = mean(s);
  const sum = new CompensatedSum();
  for (let i = 0; i < s.values.length; i++) {
    const deviation = (s.values[i] ?? 0) - m;
    sum.add(deviation * deviation * (s.counts[i] ?? 0));
  }
  return Math.sqrt(sum.value / s.n);
}

/**
 * The 1-Wasserstein (earth mover's) distance between the two empirical distributions, the area
 * between their CDFs: Σ |F_a(x) − F_b(x)| · (x' − x) over consecutive distinct values x < x' of
 * both samples. Equals `scipy.stats.wasserstein_distance(a_values, b_values, a_counts, b_counts)`.
 * The CDF gap is taken as the integer |c_a·n_b − c_b·n_a| and divided by n_a·n_b once.
 * Throws when either sample is empty.
 */
export function wasserstein(a: WeightedSample, b: WeightedSample): number {
  requireRows('wasserstein', 'a', a);
  requireRows('wasserstein', 'b', b);
  const area = new CompensatedSum();
  let gap = 0;
  let previous = 0;
  mergeDistinct(a, b, (x, countA, countB, first) => {
    if (!first) area.add(Math.abs(gap) * (x - previous));
    gap += countA * b.n - countB * a.n;
    previous = x;
  });
  return area.value / a.n / b.n;
}

/**
 * The Wasserstein distance divided by the reference's population standard deviation, so that a
 * threshold reads in reference standard deviations whatever the feature's unit. When the
 * reference is constant (std 0) the ratio has no scale: it is 0 if the current sample is the same
 * constant (distance 0) and +Infinity otherwise, so any threshold fires on any movement.
 * Throws when either sample is empty.
 */
export function normalizedWasserstein(reference: WeightedSample, current: WeightedSample): number {
  requireRows('normalizedWasserstein', 'reference', reference);
  requireRows('normalizedWasserstein', 'current', current);
  const distance = wasserstein(reference, current);
  const scale = std(reference);
  if (scale === 0) return distance === 0 ? 0 : Number.POSITIVE_INFINITY;
  return distance / scale;
}

/**
 * Walks the distinct values of both samples in ascending order, calling `visit` once per value
 * with the count each sample has there (0 when it lacks the value); `first` marks the smallest.
 */
export function mergeDistinct(
  a: WeightedSample,
  b: WeightedSample,
  visit: (value: number, countA: number, countB: number, first: boolean) => void,
): void {
  let i = 0;
  let j = 0;
  let first = true;
  while (i < a.values.length || j < b.values.length) {
    const x = a.values[i] ?? Number.POSITIVE_INFINITY;
    const y = b.values[j] ?? Number.POSITIVE_INFINITY;
    const value = Math.min(x, y);
    const countA = x === value ? (a.counts[i++] ?? 0) : 0;
    const countB = y === value ? (b.counts[j++] ?? 0) : 0;
    visit(value, countA, countB, first);
    first = false;
  }
}

/** Throws unless the sample has at least one row, naming the function and the argument. */
export function requireRows(fn: string, argument: string, s: WeightedSample): void {
  if (!(s.n > 0)) throw new Error(`${fn} ${argument} is an empty sample (n = ${s.n})`);
}

/** `values[i]` when it is a finite number; otherwise throws naming the argument and index. */
export function finiteAt(
  fn: string,
  argument: string,
  values: ArrayLike<number>,
  i: number,
): number {
  const value = values[i];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`${fn} ${argument}[${i}] must be a finite number; got ${value}`);
  }
  return value;
}

/** `counts[i]` when it is a non-negative integer; otherwise throws naming argument and index. */
function countAt(fn: string, argument: string, counts: ArrayLike<number>, i: number): number {
  const count = counts[i];
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
    throw new Error(`${fn} ${argument}[${i}] must be a non-negative integer; got ${count}`);
  }
  return count;
}

/** Neumaier's compensated sum: an error that does not grow with the number of terms. */
export class CompensatedSum {
  private sum = 0;
  private compensation = 0;

  add(term: number): void {
    const next = this.sum + term;
    if (Math.abs(this.sum) >= Math.abs(term)) this.compensation += this.sum - next + term;
    else this.compensation += term - next + this.sum;
    this.sum = next;
  }

  get value(): number {
    return this.sum + this.compensation;
  }
}
