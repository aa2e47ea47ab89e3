import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../common/random.js';
import {
  benjaminiHochberg,
  binCounts,
  chiSquared,
  fromCounts,
  jensenShannon,
  kolmogorovSf,
  ksTwoSample,
  mean,
  normalizedWasserstein,
  psi,
  quantileEdges,
  smoothEmptyBins,
  std,
  twoProportionZ,
  wasserstein,
  weightedSample,
  type WeightedSample,
} from '../domain/drift/stats.js';

const ORACLE = path.join(import.meta.dirname, 'fixtures/drift_oracle.py');
const RATINGS = [
  path.resolve(import.meta.dirname, '../../shared/data/movielens-small/ratings.csv'),
  '/work/shared/data/movielens-small/ratings.csv',
].find((file) => fs.existsSync(file));

type Random = () => number;
type Generator = () => number;

function normal(random: Random, mu = 0, sigma = 1): number {
  const u = 1 - random();
  return mu + sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function exponential(random: Random, rate = 1): number {
  return -Math.log(1 - random()) / rate;
}

/** Knuth's Poisson sampler: fine for the small means used here. */
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

function draw(count: number, next: () => number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = next();
  return out;
}

interface SamplesCase {
  name: string;
  a: WeightedSample;
  b: WeightedSample;
  bins: number;
}

const rng = mulberry32(20250105);
/** Generators on the cases' stream: normal, exponential, Poisson (optionally capped), rounded. */
function N(mu = 0, sigma = 1): Generator {
  return () => normal(rng, mu, sigma);
}
function E(rate = 1): Generator {
  return () => exponential(rng, rate);
}
function P(lambda: number, cap = Infinity): Generator {
  return () => Math.min(cap, poisson(rng, lambda));
}
function on(step: number, next: Generator): Generator {
  return () => Math.round(next() / step) * step;
}

/** A case of two samples, each given as raw values or as [rows, generator]. */
function sampleCase(
  name: string,
  bins: number,
  a: Float64Array | [number, Generator],
  b: Float64Array | [number, Generator],
): SamplesCase {
  const rows = (x: typeof a) => (x instanceof Float64Array ? x : draw(...x));
  return { name, a: weightedSample(rows(a)), b: weightedSample(rows(b)), bins };
}

const SAMPLE_CASES: SamplesCase[] = [
  sampleCase('one normal, 300 vs 400', 10, [300, N()], [400, N()]),
  sampleCase('normal shifted by 0.3, 500 vs 500', 10, [500, N()], [500, N(0.3)]),
  sampleCase('normal shifted by 1, 2000 vs 2000 (p near 1e-128)', 10, [2000, N()], [2000, N(1)]),
  sampleCase('integer counts with ties, Poisson 3 vs 3.3', 10, [2000, P(3)], [1500, P(3.3)]),
  sampleCase('very unequal sizes, 5000 vs 7', 10, [5000, E()], [7, E()]),
  sampleCase('a current sample of size 1', 10, [200, N()], Float64Array.of(0.25)),
  sampleCase('a reference of size 1 (std 0)', 10, Float64Array.of(1.5), [50, N()]),
  sampleCase(
    'coprime sizes, ties on a 0.1 grid',
    20,
    [997, on(0.1, N())],
    [1009, on(0.1, N(0.05))],
  ),
  sampleCase(
    'identical samples (D = 0)',
    4,
    Float64Array.of(1, 2, 2, 3, 5, 8),
    Float64Array.of(1, 2, 2, 3, 5, 8),
  ),
  sampleCase('exponential scaled, Kolmogorov limit', 10, [20_000, E()], [15_000, E(0.97)]),
  sampleCase('one normal at the exact limit', 10, [10_000, N()], [9999, N()]),
  sampleCase('equal sizes at the exact limit, shifted', 10, [10_000, N()], [10_000, N(0.05)]),
  sampleCase('just past the exact limit, 10001 vs 300', 10, [10_001, N()], [300, N()]),
  sampleCase('a current above the reference range (empty bins)', 10, [800, N()], [600, N(10)]),
  sampleCase('mostly zeros (edges collapse)', 10, [3000, P(0.4, 2)], [2500, P(0.6, 2)]),
  sampleCase(
    'negatives on a 0.5 grid, 4 bins',
    4,
    [1200, on(0.5, N(-3, 2))],
    [900, on(0.5, N(-2.5, 2))],
  ),
  sampleCase('one bin (bins = 1)', 1, [100, N()], [120, N(1)]),
];

const BIN_CASES: Array<[string, number[], number[]]> = [
  ['no empty bin', [100, 200, 300, 50], [110, 190, 305, 70]],
  ['an empty bin on each side', [10, 0, 5], [3, 4, 0]],
  ['a bin empty on both sides', [0, 5, 5, 0, 9], [0, 2, 8, 1, 0]],
  ['one bin', [5], [7]],
  ['disjoint', [5, 0], [0, 5]],
  ['large counts, small shift', [50_000, 30_000, 20_000], [49_000, 30_500, 20_500]],
];

const Z_CASES: Array<[number, number, number, number]> = [
  [30, 100, 45, 120],
  [0, 50, 0, 70],
  [50, 50, 50, 50],
  [5000, 10_000, 5300, 10_000],
  [1, 1_000_000, 40, 1_000_000],
  [0, 10, 10, 10],
  [7, 9, 2, 11],
];

const BH_P = [...draw(17, () => rng() ** 3), 0, 1, 0.01, 0.01, 0.04, 0.5, 1e-12];
const KOLMOGOROV_X = [0.05, 0.2, 0.5, 0.82, 0.99, 1, 1.01, 1.5, 2, 3, 5, 8, 10];

/** Ratings (the value) of MovieLens latest-small rated before 2005 and after 2015, grouped. */
function movieLensShift(): { before: WeightedSample; after: WeightedSample } {
  if (!RATINGS) throw new Error('movielens-small ratings.csv not found beside the repository');
  const cut2005 = Date.UTC(2005, 0, 1) / 1000;
  const cut2016 = Date.UTC(2016, 0, 1) / 1000;
  const before = new Map<number, number>();
  const after = new Map<number, number>();
  const lines = fs.readFileSync(RATINGS, 'utf8').split('\n').slice(1);
  for (const line of lines) {
    if (line === '') continue;
    const [, , rating, timestamp] = line.split(',');
    const value = Number(rating);
    const ts = Number(timestamp);
    const group = ts < cut2005 ? before : ts >= cut2016 ? after : null;
    group?.set(value, (group.get(value) ?? 0) + 1);
  }
  const sample = (m: Map<number, number>) => fromCounts([...m.keys()], [...m.values()]);
  return { before: sample(before), after: sample(after) };
}

type OracleNumber = number | 'inf' | '-inf' | 'nan';
interface OracleBinned {
  psi: { value: OracleNumber; pseudocount: number };
  js: OracleNumber;
  chi2: { statistic: OracleNumber; pValue: OracleNumber; dof: number };
}
interface OracleSamples extends OracleBinned {
  mean: OracleNumber;
  std: OracleNumber;
  ks: { statistic: OracleNumber; pValue: OracleNumber; method: string };
  wasserstein: OracleNumber;
  normalizedWasserstein: OracleNumber;
  edges: number[];
  reference: number[];
  current: number[];
}

function oracle(cases: unknown[]): unknown[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-drift-'));
  try {
    const file = path.join(dir, 'cases.json');
    fs.writeFileSync(file, JSON.stringify({ cases }));
    const out = execFileSync('python3', [ORACLE, file], { maxBuffer: 256 * 1024 * 1024 });
    return (JSON.parse(out.toString()) as { results: unknown[] }).results;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function asNumber(x: OracleNumber): number {
  if (x === 'inf') return Number.POSITIVE_INFINITY;
  if (x === '-inf') return Number.NEGATIVE_INFINITY;
  if (x === 'nan') return Number.NaN;
  return x;
}

/**
 * Within 1e-9 of scipy: absolutely, and relatively too for values below 1e-6 (small p-values),
 * so a p of 1e-40 must be right to nine digits, not merely "close to 0".
 */
function mismatch(label: string, got: number, expected: OracleNumber): string[] {
  const want = asNumber(expected);
  if (Object.is(got, want) || got === want) return [];
  const diff = Math.abs(got - want);
  const ok = diff <= 1e-9 && (Math.abs(want) >= 1e-6 || diff <= 1e-9 * Math.abs(want));
  return ok ? [] : [`${label}: got ${got}, scipy ${want} (diff ${diff})`];
}

const asWire = (s: WeightedSample) => ({ values: [...s.values], counts: [...s.counts] });
const samplesWire = (c: SamplesCase) => ({
  kind: 'samples',
  a: asWire(c.a),
  b: asWire(c.b),
  bins: c.bins,
});

/** Every statistic of a samples case that differs from the oracle's. */
function sampleDifferences(name: string, c: SamplesCase, want: OracleSamples): string[] {
  const edges = quantileEdges(c.a, c.bins);
  const reference = binCounts(c.a, edges);
  const current = binCounts(c.b, edges);
  const ks = ksTwoSample(c.a, c.b);
  const out = [
    ...mismatch(`${name} mean`, mean(c.a), want.mean),
    ...mismatch(`${name} std`, std(c.a), want.std),
    ...mismatch(`${name} ks statistic`, ks.statistic, want.ks.statistic),
    ...mismatch(`${name} ks p`, ks.pValue, want.ks.pValue),
    ...mismatch(`${name} wasserstein`, wasserstein(c.a, c.b), want.wasserstein),
    ...mismatch(
      `${name} normalized wasserstein`,
      normalizedWasserstein(c.a, c.b),
      want.normalizedWasserstein,
    ),
    ...binnedDifferences(name, reference, current, want),
  ];
  if (ks.method !== want.ks.method) {
    out.push(`${name} ks method: ${ks.method} vs ${want.ks.method}`);
  }
  const pairs: Array<[string, number[], number[]]> = [
    ['edges', edges, want.edges],
    ['reference bins', reference, want.reference],
    ['current bins', current, want.current],
  ];
  for (const [what, got, expected] of pairs) {
    const [x, y] = [JSON.stringify(got), JSON.stringify(expected)];
    if (x !== y) out.push(`${name} ${what}: ${x} vs numpy ${y}`);
  }
  return out;
}

function binnedDifferences(
  name: string,
  reference: number[],
  current: number[],
  want: OracleBinned,
): string[] {
  const p = psi(reference, current);
  const chi = chiSquared(reference, current);
  const out = [
    ...mismatch(`${name} psi`, p.value, want.psi.value),
    ...mismatch(`${name} js`, jensenShannon(reference, current), want.js),
    ...mismatch(`${name} chi2 statistic`, chi.statistic, want.chi2.statistic),
    ...mismatch(`${name} chi2 p`, chi.pValue, want.chi2.pValue),
  ];
  if (p.pseudocount !== want.psi.pseudocount) out.push(`${name} pseudocount ${p.pseudocount}`);
  if (chi.dof !== want.chi2.dof) out.push(`${name} chi2 dof ${chi.dof} vs ${want.chi2.dof}`);
  return out;
}

let results: unknown[] = [];
let shift: { before: WeightedSample; after: WeightedSample };

beforeAll(() => {
  shift = movieLensShift();
  const movieLens: SamplesCase = { name: 'movielens', a: shift.before, b: shift.after, bins: 10 };
  results = oracle([
    ...SAMPLE_CASES.map(samplesWire),
    ...BIN_CASES.map(([, reference, current]) => ({ kind: 'bins', reference, current })),
    ...Z_CASES.map(([x1, n1, x2, n2]) => ({ kind: 'z', x1, n1, x2, n2 })),
    { kind: 'bh', p: BH_P },
    { kind: 'kolmogorov', x: KOLMOGOROV_X },
    samplesWire(movieLens),
  ]);
});

/** The oracle's answer for the i-th case of the kind that starts at `offset`. */
function result<T>(offset: number, i = 0): T {
  return results[offset + i] as T;
}
const BIN_OFFSET = SAMPLE_CASES.length;
const Z_OFFSET = BIN_OFFSET + BIN_CASES.length;
const BH_OFFSET = Z_OFFSET + Z_CASES.length;
const MOVIELENS_OFFSET = BH_OFFSET + 2;

describe('drift statistics against scipy and numpy', () => {
  it('agree on samples: moments, KS, Wasserstein, edges, bins, PSI, JS, chi-squared', () => {
    const differences = SAMPLE_CASES.flatMap((c, i) =>
      sampleDifferences(c.name, c, result<OracleSamples>(0, i)),
    );
    expect(differences).toEqual([]);
    // The cases reach both KS branches, p-values far below 1e-9, and the empty-bin rule.
    const methods = SAMPLE_CASES.map((_c, i) => result<OracleSamples>(0, i).ks.method);
    expect(methods).toContain('exact');
    expect(methods).toContain('asymptotic');
    const ps = SAMPLE_CASES.map((_c, i) => asNumber(result<OracleSamples>(0, i).ks.pValue));
    expect(Math.min(...ps)).toBeLessThan(1e-100);
    const smoothed = SAMPLE_CASES.filter(
      (_c, i) => result<OracleSamples>(0, i).psi.pseudocount > 0,
    );
    expect(smoothed.length).toBeGreaterThan(2);
  });

  it('agree on given bin counts, empty bins included: PSI, JS, chi-squared', () => {
    const differences = BIN_CASES.flatMap(([name, reference, current], i) =>
      binnedDifferences(name, reference, current, result<OracleBinned>(BIN_OFFSET, i)),
    );
    expect(differences).toEqual([]);
  });

  it('agree on the pooled two-proportion z-test', () => {
    const differences = Z_CASES.flatMap(([x1, n1, x2, n2], i) => {
      const want = result<{ statistic: OracleNumber; pValue: OracleNumber }>(Z_OFFSET, i);
      const got = twoProportionZ(x1, n1, x2, n2);
      const label = `z(${x1}/${n1}, ${x2}/${n2})`;
      return [
        ...mismatch(`${label} statistic`, got.statistic, want.statistic),
        ...mismatch(`${label} p`, got.pValue, want.pValue),
      ];
    });
    expect(differences).toEqual([]);
  });

  it('agree on Benjamini-Hochberg (false_discovery_control) and on kstwobign.sf', () => {
    const bh = result<OracleNumber[]>(BH_OFFSET);
    const got = benjaminiHochberg(BH_P);
    expect(got.flatMap((p, i) => mismatch(`bh[${i}]`, p, bh[i] ?? 'nan'))).toEqual([]);
    const sf = result<OracleNumber[]>(BH_OFFSET, 1);
    const differences = KOLMOGOROV_X.flatMap((x, i) =>
      mismatch(`kstwobign.sf(${x})`, kolmogorovSf(x), sf[i] ?? 'nan'),
    );
    expect(differences).toEqual([]);
  });

  it('see the MovieLens shift (ratings before 2005 against after 2015) as scipy does', () => {
    const c: SamplesCase = { name: 'movielens', a: shift.before, b: shift.after, bins: 10 };
    const want = result<OracleSamples>(MOVIELENS_OFFSET);
    expect(sampleDifferences(c.name, c, want)).toEqual([]);
    // The assertions below read the oracle's values: our own are held to them just above.
    expect(shift.before.n).toBe(35_656);
    expect(shift.after.n).toBe(21_319);
    expect(want.ks.method).toBe('asymptotic');
    expect(asNumber(want.ks.pValue)).toBeLessThan(1e-40);
    expect(asNumber(want.psi.value)).toBeGreaterThan(0.1);
    expect(asNumber(want.js)).toBeGreaterThan(0.1);
  });
});

describe('no false alarm at scale', () => {
  const size = 1_000_000;
  const random = mulberry32(77);
  const distributions: Array<[string, () => number]> = [
    ['normal', () => normal(random, 5, 2)],
    ['exponential', () => exponential(random, 0.5)],
    ['integer counts (Poisson 4)', () => poisson(random, 4)],
  ];

  it.each(distributions)(
    'two samples of 1,000,000 rows from one %s distribution',
    (_name, next) => {
      const reference = weightedSample(draw(size, next));
      const current = weightedSample(draw(size, next));
      const edges = quantileEdges(reference, 10);
      const [r, c] = [binCounts(reference, edges), binCounts(current, edges)];
      expect(psi(r, c).value).toBeLessThan(0.01);
      expect(jensenShannon(r, c)).toBeLessThan(0.02);
      expect(normalizedWasserstein(reference, current)).toBeLessThan(0.01);
      // KS at this size is sensitive to tiny differences: its p-value may legitimately be small by
      // chance (and is uniform under the null), which is why p alone never triggers an alarm; the
      // effect sizes above must pass their floors too. D itself stays tiny.
      const ks = ksTwoSample(reference, current);
      expect(ks.method).toBe('asymptotic');
      expect(ks.statistic).toBeLessThan(0.005);
    },
  );
});

describe('drift statistics worked by hand', () => {
  it('merge raw values into distinct ascending values with counts, -0 as 0', () => {
    const s = weightedSample([3, -0, 1, 3, 0, 3]);
    expect([...s.values]).toEqual([0, 1, 3]);
    expect(Object.is(s.values[0], 0)).toBe(true);
    expect([...s.counts]).toEqual([2, 1, 3]);
    expect(s.n).toBe(6);
    expect(weightedSample([]).n).toBe(0);
  });

  it('merge (value, count) pairs in any order, dropping zero counts', () => {
    const s = fromCounts([5, 1, 5, 2, 9], [2, 3, 4, 0, 1]);
    expect([...s.values]).toEqual([1, 5, 9]);
    expect([...s.counts]).toEqual([3, 6, 1]);
    expect(s.n).toBe(10);
  });

  it('put edges at the lower quantile, collapse duplicates and drop an edge at the minimum', () => {
    const oneToTen = weightedSample([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // F(v) >= 1/4, 2/4, 3/4 first at 3 (3/10), 5 (5/10) and 8 (8/10).
    expect(quantileEdges(oneToTen, 4)).toEqual([3, 5, 8]);
    // 60% zeros: the 10%..60% quantiles are 0 (the minimum, dropped), then 1, 1, 2, 2.
    const zeros = fromCounts([0, 1, 2], [60, 20, 20]);
    expect(quantileEdges(zeros, 10)).toEqual([1, 2]);
    expect(quantileEdges(fromCounts([7], [9]), 10)).toEqual([]);
  });

  it('count a value on an edge in the bin that starts there', () => {
    const s = weightedSample([0, 1, 1, 2, 2.5, 3, 4]);
    expect(binCounts(s, [1, 3])).toEqual([1, 4, 2]);
    expect(binCounts(s, [])).toEqual([7]);
  });

  it('add 0.5 to every bin of both sides only when a bin is empty, and say why', () => {
    expect(smoothEmptyBins([1, 2], [3, 4])).toEqual({
      reference: [1, 2],
      current: [3, 4],
      pseudocount: 0,
      reason: null,
    });
    expect(smoothEmptyBins([0, 2, 3], [3, 4, 0])).toEqual({
      reference: [0.5, 2.5, 3.5],
      current: [3.5, 4.5, 0.5],
      pseudocount: 0.5,
      reason:
        'empty bins (reference bins 0; current bins 2, of 3): added 0.5 to every bin of both sides',
    });
    const p = psi([0, 10], [10, 0]);
    // Smoothed proportions (1/22, 21/22) against (21/22, 1/22).
    const expected = 2 * (20 / 22) * Math.log(21);
    expect(p.value).toBeCloseTo(expected, 12);
    expect(p.pseudocount).toBe(0.5);
  });

  it('scale Wasserstein by the reference std, 0 or Infinity when the reference is constant', () => {
    const constant = weightedSample([2, 2, 2]);
    expect(std(constant)).toBe(0);
    expect(normalizedWasserstein(constant, weightedSample([2]))).toBe(0);
    expect(normalizedWasserstein(constant, weightedSample([2, 3]))).toBe(Number.POSITIVE_INFINITY);
    // Reference 0, 2 (std 1), current 1, 1: the CDFs differ by 1/2 over [0, 2].
    expect(normalizedWasserstein(weightedSample([0, 2]), weightedSample([1, 1]))).toBe(1);
  });

  it('void the z-test at a pooled proportion of 0 or 1, and chi-squared on one column', () => {
    expect(twoProportionZ(0, 10, 0, 20)).toEqual({ statistic: 0, pValue: 1 });
    expect(twoProportionZ(10, 10, 20, 20)).toEqual({ statistic: 0, pValue: 1 });
    expect(chiSquared([0, 4], [0, 9])).toEqual({ statistic: 0, pValue: 1, dof: 0 });
    expect(benjaminiHochberg([])).toEqual([]);
  });

  it('give the exact KS p-value at 10,000 against 9,999 rows quickly', () => {
    const random = mulberry32(3);
    const a = weightedSample(draw(10_000, () => normal(random)));
    const b = weightedSample(draw(9999, () => normal(random, 0.5)));
    const started = performance.now();
    const ks = ksTwoSample(a, b);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(ks.method).toBe('exact');
    expect(ks.pValue).toBeGreaterThan(0);
    expect(ks.pValue).toBeLessThan(1e-100);
  });
});

describe('bad input', () => {
  const empty = weightedSample([]);
  const some = weightedSample([1, 2, 3]);

  it('refuses NaN, infinities, negative or fractional counts, unequal lengths, by name', () => {
    expect(() => weightedSample([1, Number.NaN])).toThrow(
      'weightedSample values[1] must be a finite number; got NaN',
    );
    expect(() => weightedSample([Number.POSITIVE_INFINITY])).toThrow(
      'weightedSample values[0] must be a finite number; got Infinity',
    );
    expect(() => fromCounts([1, 2], [1])).toThrow(
      'fromCounts values and counts differ in length (2 vs 1)',
    );
    expect(() => fromCounts([1, 2], [1, -1])).toThrow(
      'fromCounts counts[1] must be a non-negative integer; got -1',
    );
    expect(() => fromCounts([1], [0.5])).toThrow(
      'fromCounts counts[0] must be a non-negative integer; got 0.5',
    );
    expect(() => fromCounts([Number.NaN], [1])).toThrow(
      'fromCounts values[0] must be a finite number; got NaN',
    );
  });

  it('refuses empty samples, naming the function and the argument', () => {
    expect(() => mean(empty)).toThrow('mean s is an empty sample (n = 0)');
    expect(() => std(empty)).toThrow('std s is an empty sample (n = 0)');
    expect(() => ksTwoSample(empty, some)).toThrow('ksTwoSample a is an empty sample (n = 0)');
    expect(() => ksTwoSample(some, empty)).toThrow('ksTwoSample b is an empty sample (n = 0)');
    expect(() => wasserstein(some, empty)).toThrow('wasserstein b is an empty sample (n = 0)');
    expect(() => normalizedWasserstein(empty, some)).toThrow(
      'normalizedWasserstein reference is an empty sample (n = 0)',
    );
    expect(() => quantileEdges(empty, 10)).toThrow(
      'quantileEdges reference is an empty sample (n = 0)',
    );
    expect(() => quantileEdges(some, 0)).toThrow(
      'quantileEdges bins must be an integer >= 1; got 0',
    );
    expect(() => quantileEdges(some, 2.5)).toThrow(
      'quantileEdges bins must be an integer >= 1; got 2.5',
    );
  });

  it('refuses bad edges and bad bin counts, naming the argument, index and value', () => {
    expect(() => binCounts(some, [1, 1])).toThrow(
      'binCounts edges must be strictly ascending; edges[1] = 1 follows 1',
    );
    expect(() => binCounts(some, [Number.NaN])).toThrow(
      'binCounts edges[0] must be a finite number; got NaN',
    );
    expect(() => psi([1, 2], [1])).toThrow('psi reference and current differ in length (2 vs 1)');
    expect(() => psi([], [])).toThrow('psi needs at least one bin; got 0');
    expect(() => psi([1, -2], [1, 2])).toThrow('psi reference[1] must be >= 0; got -2');
    expect(() => jensenShannon([1, 2], [1, Number.NaN])).toThrow(
      'jensenShannon current[1] must be a finite number; got NaN',
    );
    expect(() => chiSquared([0, 0], [1, 2])).toThrow(
      'chiSquared reference has no rows (every bin is 0)',
    );
    expect(() => smoothEmptyBins([1], [0])).toThrow(
      'smoothEmptyBins current has no rows (every bin is 0)',
    );
  });

  it('refuses bad proportions and p-values, naming them', () => {
    expect(() => twoProportionZ(11, 10, 1, 10)).toThrow(
      'twoProportionZ x1 must be an integer in [0, n1 = 10]; got 11',
    );
    expect(() => twoProportionZ(1, 10, 1, 0)).toThrow(
      'twoProportionZ n2 must be an integer >= 1; got 0',
    );
    expect(() => twoProportionZ(1, 10, 0.5, 10)).toThrow(
      'twoProportionZ x2 must be an integer in [0, n2 = 10]; got 0.5',
    );
    expect(() => benjaminiHochberg([0.1, Number.NaN])).toThrow(
      'benjaminiHochberg pValues[1] must be in [0, 1]; got NaN',
    );
    expect(() => benjaminiHochberg([1.5])).toThrow(
      'benjaminiHochberg pValues[0] must be in [0, 1]; got 1.5',
    );
  });
});
