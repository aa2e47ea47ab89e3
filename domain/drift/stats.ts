/**
 * The drift statistics of a feature: two-sample tests (Kolmogorov-Smirnov, two proportions),
 * Benjamini-Hochberg, and, re-exported from `./sample.js` and `./bins.js`, the samples, moments,
 * Wasserstein distances, quantile bins, PSI, Jensen-Shannon and chi-squared. Pure functions of
 * their arguments; no database, no randomness. Each is checked against scipy/numpy in
 * test/drift-stats.test.ts (test/fixtures/drift_oracle.py).
 */
import normalCdf from '@stdlib/stats-base-dists-normal-cdf';
import { mergeDistinct, requireRows, type WeightedSample } from './sample.js';

export {
  fromCounts,
  mean,
  normalizedWasserstein,
  std,
  wasserstein,
  weightedSample,
  type WeightedSample,
} from './sample.js';
export {
  binCounts,
  chiSquared,
  jensenShannon,
  PSEUDOCOUNT,
  psi,
  quantileEdges,
  smoothEmptyBins,
  type Smoothed,
} from './bins.js';

/** Up to this larger sample size ksTwoSample's p-value is exact (scipy's own `auto` limit). */
export const KS_EXACT_MAX_N = 10_000;

/** The result of ksTwoSample: D, its two-sided p-value, and which way p was computed. */
export interface KsResult {
  statistic: number;
  pValue: number;
  method: 'exact' | 'asymptotic';
}

/**
 * The two-sample Kolmogorov-Smirnov test, two-sided. The statistic is D = max |F_a − F_b| over
 * the values of both samples, with ties counted as scipy's `ks_2samp` counts them (each ECDF
 * includes the rows equal to the value); it is found in integers, as h = max |c_a·(L/n_a) −
 * c_b·(L/n_b)| with L = lcm(n_a, n_b), and D = h / L, so equal distances compare exactly.
 *
 * p-value, `method: 'exact'` when max(n_a, n_b) ≤ KS_EXACT_MAX_N: P(D ≥ h/L) under the null,
 * the share of the lattice paths from (0, 0) to (n_a, n_b) that leave the band |i·n_b − j·n_a|
 * < h·g (g = gcd), equal to `scipy.stats.ks_2samp(a, b, method='exact')`. It is computed as a
 * probability, never as a path count: for equal sizes by the reflection series, otherwise by the
 * recursion of 1 − p over the band's cells (Hodges' inside method in Viehmann's form), so it stays
 * in [0, 1] and small p-values keep their relative precision.
 *
 * p-value, `method: 'asymptotic'` for larger samples: the Kolmogorov limit
 * `scipy.stats.kstwobign.sf(D·√(n_a·n_b/(n_a + n_b)))`. This is NOT what scipy's own asymptotic
 * branch returns (`kstwo.sf(D, round(n_a·n_b/(n_a + n_b)))`, the one-sample finite-n law): the
 * two differ by O(1/√n). At n_a·n_b/(n_a + n_b) = 5000 (two samples of 10,000) the gap is at most
 * 0.004 in p, and kstwobign's p is about 1.3% larger at p = 0.05 and 3% larger at p = 1e-6; far
 * in the tail the relative gap keeps growing, so tiny p-values agree with scipy's only in order of
 * magnitude.
 * Throws when either sample is empty.
 */
export function ksTwoSample(a: WeightedSample, b: WeightedSample): KsResult {
  requireRows('ksTwoSample', 'a', a);
  requireRows('ksTwoSample', 'b', b);
  const lcm = (a.n / gcd(a.n, b.n)) * b.n;
  // Past 2^53 the lattice units are not exact integers; only the asymptotic branch gets there.
  const h = Number.isSafeInteger(lcm) ? ksLatticeDistance(a, b, lcm) : Number.NaN;
  const statistic = Number.isNaN(h) ? ksDistance(a, b) : h / lcm;
  if (Math.max(a.n, b.n) > KS_EXACT_MAX_N) {
    const pValue = kolmogorovSf(statistic * Math.sqrt((a.n * b.n) / (a.n + b.n)));
    return { statistic, pValue, method: 'asymptotic' };
  }

  let pValue = 1;
  if (h > 0) pValue = a.n === b.n ? outsideSquare(a.n, h) : outsideBand(a.n, b.n, h);
  return { statistic, pValue: Math.min(1, Math.max(0, pValue)), method: 'exact' };
}

/** max |c_a·(L/n_a) − c_b·(L/n_b)| over the merged values: D·L as an exact integer. */
function ksLatticeDistance(a: WeightedSample, b: WeightedSample, lcm: number): number {
  const stepA = lcm / a.n;
  const stepB = lcm / b.n;
  let gap = 0;
  let h = 0;
  mergeDistinct(a, b, (_value, countA, countB) => {
    gap += countA * stepA - countB * stepB;
    h = Math.max(h, Math.abs(gap));
  });
  return h;
}

/** D in floating point, for sizes whose lcm is past 2^53 (the asymptotic branch only). */
function ksDistance(a: WeightedSample, b: WeightedSample): number {
  let rowsA = 0;
  let rowsB = 0;
  let d = 0;
  mergeDistinct(a, b, (_value, countA, countB) => {
    rowsA += countA;
    rowsB += countB;
    d = Math.max(d, Math.abs(rowsA / a.n - rowsB / b.n));
  });
  return d;
}

/**
 * P(D ≥ h/n) for two samples of n rows: paths of 2n ±1 steps from 0 back to 0 that reach ±h, by
 * reflection 2·Σ_{k≥1} (−1)^{k−1} C(2n, n − kh) / C(2n, n). Term k is term k−1 times
 * A_k = Π_{j=(k−1)h}^{kh−1} (n − j)/(n + 1 + j), so the sum is A_1(1 − A_2(1 − A_3(…))),
 * evaluated from the inside out without cancellation or large numbers.
 */
function outsideSquare(n: number, h: number): number {
  let nested = 0;
  for (let k = Math.floor(n / h); k >= 1; k--) {
    let factor = 1;
    for (let j = (k - 1) * h; j < k * h; j++) factor *= (n - j) / (n + 1 + j);
    nested = factor * (1 - nested);
  }
  return 2 * nested;
}

/**
 * P(D ≥ h/L) for sizes n1 ≠ n2: with m ≥ n the two sizes and g their gcd, cell (i, j) (i rows of
 * the larger sample, j of the smaller) is inside the band when |i·(n/g) − j·(m/g)| < h. For a
 * uniformly random path to (i, j), r(i, j) = P(it has left the band) is 1 outside and
 * (i·r(i−1, j) + j·r(i, j−1)) / (i + j) inside, since the path came from the left with
 * probability i/(i+j); the answer is r(m, n). One column of r is kept, updated in place over the
 * band's rows, which move upwards with i.
 */
function outsideBand(n1: number, n2: number, h: number): number {
  const m = Math.max(n1, n2);
  const n = Math.min(n1, n2);
  const g = gcd(m, n);
  const mg = m / g;
  const ng = n / g;
  const r = new Float64Array(n + 1).fill(1);
  let previousLow = 0;
  for (let i = 0; i <= m; i++) {
    const low = Math.max(0, Math.floor((i * ng - h) / mg) + 1);
    const high = Math.min(n, Math.ceil((i * ng + h) / mg) - 1);
    if (low > high) return 1;
    for (let j = previousLow; j < low; j++) r[j] = 1;
    for (let j = low; j <= high; j++) {
      if (i + j === 0) r[j] = 0;
      else r[j] = (i * (r[j] ?? 1) + j * (j > 0 ? (r[j - 1] ?? 1) : 1)) / (i + j);
    }
    previousLow = low;
  }
  return r[n] ?? 1;
}

/**
 * The survival function of the Kolmogorov distribution (the limit law of √n·D), equal to
 * `scipy.stats.kstwobign.sf(x)`. Written here because no @stdlib package has it: for x ≥ 1 the
 * series 2·Σ_{k≥1} (−1)^{k−1} e^{−2k²x²}, for x < 1 one minus the CDF's theta-function series
 * √(2π)/x · Σ_{k≥1} e^{−(2k−1)²π²/(8x²)}; each converges to double precision in a few terms.
 */
export function kolmogorovSf(x: number): number {
  if (Number.isNaN(x)) throw new Error('kolmogorovSf x must be a number; got NaN');
  if (x <= 0) return 1;
  if (x < 1) {
    let cdf = 0;
    for (let k = 1; k <= 20; k++) {
      const term = Math.exp((-((2 * k - 1) ** 2) * Math.PI ** 2) / (8 * x * x));
      cdf += term;
      if (term < 1e-17 * cdf) break;
    }
    return 1 - (Math.sqrt(2 * Math.PI) / x) * cdf;
  }
  let sf = 0;
  for (let k = 1; k <= 100; k++) {
    const term = Math.exp(-2 * k * k * x * x);
    sf += k % 2 === 1 ? term : -term;
    if (term <= 1e-17 * sf) break;
  }
  return Math.min(1, 2 * sf);
}

/**
 * The pooled two-proportion z-test, two-sided: z = (x1/n1 − x2/n2) / √(p̂(1 − p̂)(1/n1 + 1/n2))
 * with p̂ = (x1 + x2)/(n1 + n2), and p = 2·Φ(−|z|) (Φ from @stdlib). When p̂ is 0 or 1 both
 * proportions are equal and the standard error is 0: statistic 0, p 1.
 * Throws when a count is not an integer, n is below 1, or x is outside [0, n], naming which.
 */
export function twoProportionZ(
  x1: number,
  n1: number,
  x2: number,
  n2: number,
): { statistic: number; pValue: number } {
  checkProportion('x1', x1, 'n1', n1);
  checkProportion('x2', x2, 'n2', n2);
  const pooled = (x1 + x2) / (n1 + n2);
  const se = Math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2));
  if (se === 0) return { statistic: 0, pValue: 1 };
  const statistic = (x1 / n1 - x2 / n2) / se;
  return { statistic, pValue: Math.min(1, 2 * normalCdf(-Math.abs(statistic), 0, 1)) };
}

function checkProportion(xName: string, x: number, nName: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`twoProportionZ ${nName} must be an integer >= 1; got ${n}`);
  }
  if (!Number.isSafeInteger(x) || x < 0 || x > n) {
    throw new Error(`twoProportionZ ${xName} must be an integer in [0, ${nName} = ${n}]; got ${x}`);
  }
}

/**
 * Benjamini-Hochberg adjusted p-values, in the order given: with p_(1) ≤ … ≤ p_(m) sorted,
 * adjusted p_(i) = min over k ≥ i of p_(k)·m/k, clipped to [0, 1]. Equals
 * `scipy.stats.false_discovery_control(p, method='bh')`; an empty list gives an empty list.
 * Throws when a p-value is not a number in [0, 1], naming its index.
 */
export function benjaminiHochberg(pValues: readonly number[]): number[] {
  pValues.forEach((p, i) => {
    if (!(p >= 0 && p <= 1)) {
      throw new Error(`benjaminiHochberg pValues[${i}] must be in [0, 1]; got ${p}`);
    }
  });
  const m = pValues.length;
  const order = pValues.map((_p, i) => i).sort((x, y) => (pValues[x] ?? 0) - (pValues[y] ?? 0));
  const adjusted = new Array<number>(m).fill(1);
  let running = 1;
  for (let rank = m; rank >= 1; rank--) {
    const index = order[rank - 1] ?? 0;
    running = Math.min(running, (pValues[index] ?? 0) * (m / rank));
    adjusted[index] = Math.min(1, Math.max(0, running));
  }
  return adjusted;
}

function gcd(x: number, y: number): number {
  let a = x;
  let b = y;
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}
