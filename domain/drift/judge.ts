/**
 * Judges drift per feature from the reference and current samples: one test and one effect per
 * feature, chosen by its type and sample size unless overridden, then Benjamini-Hochberg across
 * every judged row of the run. A row drifts when its adjusted p-value is below alpha **and** its
 * effect reaches the floor: at a million rows any shift is "significant", so p alone never decides.
 *
 * How a feature is judged:
 * - `bool`, or only the values 0 and 1 on both sides: binary. Two-proportion z-test on the share
 *   of 1s; effect = the absolute difference of the shares (`proportion`).
 * - `int` with at most `maxCategories` distinct reference values: categorical. Chi-squared on the
 *   2×k table of categories (reference values; current values never seen there count in one
 *   "other" column); effect = Jensen-Shannon distance (base 2) of the category shares.
 * - Otherwise numeric: two-sample Kolmogorov-Smirnov; effect = PSI over the frozen quantile bins
 *   when both sides have `psiMinRows` rows, else Wasserstein over the reference std (binning
 *   needs rows to be stable). PSI, JS and Wasserstein are all reported; `effect` names the judge.
 * - Missing values: a second row per feature when either side has any, a two-proportion z-test on
 *   the missing rates with the `proportion` effect.
 * - Fewer than `minRows` non-missing rows on a side: reported as not judged, and left out of the
 *   Benjamini-Hochberg family.
 */
import {
  type FeatureOverride,
  type DriftConfig,
  type EffectMethod,
  type TestMethod,
  floorFor,
  overrideFor,
} from './config.js';
import {
  type WeightedSample,
  benjaminiHochberg,
  binCounts,
  chiSquared,
  jensenShannon,
  ksTwoSample,
  normalizedWasserstein,
  psi,
  quantileEdges,
  twoProportionZ,
} from './stats.js';

export type FeatureKind = 'numeric' | 'categorical' | 'binary';
export type RowKind = FeatureKind | 'missing';

/** One side of a feature: its non-missing values and how many rows had none. */
export interface Side {
  sample: WeightedSample;
  missing: number;
}

export interface FeatureSamples {
  /** `name@version:window`, or `prediction` for the model's scores. */
  feature: string;
  type: 'int' | 'float' | 'bool';
  reference: Side;
  current: Side;
  /** Bins frozen with the model version, when a run already froze them. */
  frozen?: Frozen;
}

export interface Frozen {
  kind: FeatureKind;
  /** Numeric: interior edges; categorical and binary: the categories. */
  edges: number[];
}

export interface Histogram {
  /** Numeric: interior edges, bins (-inf, e0), [e0, e1), ... [ek, +inf); else categories. */
  edges: number[];
  /** Counts per bin; categorical ones end with the "other" column. */
  reference: number[];
  current: number[];
  /** Added to every bin of both sides for PSI, and why (null: no bin was empty). */
  pseudocount: number;
  pseudocountReason: string | null;
}

export interface DriftRow {
  feature: string;
  kind: RowKind;
  test: TestMethod;
  statistic: number;
  pValue: number;
  /** Benjamini-Hochberg adjusted; null when the row was not judged. */
  adjustedP: number | null;
  effect: { method: EffectMethod; value: number; floor: number };
  /** Every effect measure computed for the row. */
  effects: Partial<Record<EffectMethod, number>>;
  decision: 'drift' | 'stable' | 'not-judged' | 'ignored';
  reason: string;
  rows: { reference: number; current: number };
  histogram?: Histogram;
  ksMethod?: 'exact' | 'asymptotic';
}

/** Judges every feature; returns the rows and the bins to freeze (those not frozen before). */
export function judgeFeatures(
  samples: readonly FeatureSamples[],
  config: DriftConfig,
): { rows: DriftRow[]; toFreeze: Array<{ feature: string } & Frozen> } {
  const rows: DriftRow[] = [];
  const toFreeze: Array<{ feature: string } & Frozen> = [];
  for (const s of samples) {
    const override = overrideFor(config, s.feature);
    const frozen = s.frozen ?? freeze(s, config, override);
    if (!s.frozen) toFreeze.push({ feature: s.feature, ...frozen });
    rows.push(judgeValues(s, frozen, config, override));
    const missingRow = judgeMissing(s, config, override);
    if (missingRow) rows.push(missingRow);
  }
  decide(rows, config);
  return { rows, toFreeze };
}

function freeze(s: FeatureSamples, config: DriftConfig, override?: FeatureOverride): Frozen {
  const ref = s.reference.sample;
  const cur = s.current.sample;
  const binaryValues = (w: WeightedSample) => Array.from(w.values).every((v) => v === 0 || v === 1);
  if (s.type === 'bool' || (ref.n > 0 && binaryValues(ref) && binaryValues(cur))) {
    return { kind: 'binary', edges: [0, 1] };
  }
  const integral = Array.from(ref.values).every((v) => Number.isInteger(v));
  if (
    override?.test !== 'ks' &&
    (override?.test === 'chi2' ||
      (s.type === 'int' && integral && ref.values.length <= config.maxCategories))
  ) {
    return { kind: 'categorical', edges: Array.from(ref.values) };
  }
  if (ref.n === 0) return { kind: 'numeric', edges: [] };
  return { kind: 'numeric', edges: quantileEdges(ref, override?.bins ?? config.bins) };
}

function judgeValues(
  s: FeatureSamples,
  frozen: Frozen,
  config: DriftConfig,
  override?: FeatureOverride,
): DriftRow {
  const ref = s.reference.sample;
  const cur = s.current.sample;
  const rows = { reference: ref.n, current: cur.n };
  const base = { feature: s.feature, kind: frozen.kind, rows, adjustedP: null };
  const small = ref.n < config.minRows || cur.n < config.minRows;
  if (small) {
    // Too few rows to bin or test (an empty window among them): reported, never judged.
    return finish(
      {
        ...base,
        test: frozen.kind === 'binary' ? 'z' : frozen.kind === 'categorical' ? 'chi2' : 'ks',
        statistic: Number.NaN,
        pValue: Number.NaN,
        effect: {
          method: frozen.kind === 'binary' ? 'proportion' : 'psi',
          value: Number.NaN,
          floor: floorFor(config, frozen.kind === 'binary' ? 'proportion' : 'psi', override),
        },
        effects: {},
      },
      true,
      config,
      override,
    );
  }

  if (frozen.kind === 'binary') {
    const ones = (w: WeightedSample) => countOf(w, 1);
    const z = twoProportionZ(ones(ref), ref.n, ones(cur), cur.n);
    const diff = Math.abs(share(ones(cur), cur.n) - share(ones(ref), ref.n));
    const effect = chosen(config, 'proportion', override, { proportion: diff });
    return finish({ ...base, test: 'z', ...z, ...effect }, small, config, override);
  }

  const histogram = histogramOf(frozen, ref, cur);
  const p = psi(histogram.reference, histogram.current);
  histogram.pseudocount = p.pseudocount;
  histogram.pseudocountReason = p.reason;
  const js = jensenShannon(histogram.reference, histogram.current);

  if (frozen.kind === 'categorical') {
    const chi = chiSquared(histogram.reference, histogram.current);
    const effect = chosen(config, 'js', override, { js, psi: p.value });
    return finish(
      { ...base, test: 'chi2', statistic: chi.statistic, pValue: chi.pValue, histogram, ...effect },
      small,
      config,
      override,
    );
  }

  const ks = ksTwoSample(ref, cur);
  const wasserstein = normalizedWasserstein(ref, cur);
  const byRows = Math.min(ref.n, cur.n) >= config.psiMinRows ? 'psi' : 'wasserstein';
  const effect = chosen(config, byRows, override, { psi: p.value, js, wasserstein });
  return finish(
    {
      ...base,
      test: 'ks',
      statistic: ks.statistic,
      pValue: ks.pValue,
      ksMethod: ks.method,
      histogram,
      ...effect,
    },
    small,
    config,
    override,
  );
}

function judgeMissing(
  s: FeatureSamples,
  config: DriftConfig,
  override?: FeatureOverride,
): DriftRow | undefined {
  const { reference: r, current: c } = s;
  if (r.missing === 0 && c.missing === 0) return undefined;
  const nr = r.sample.n + r.missing;
  const nc = c.sample.n + c.missing;
  if (nr === 0 || nc === 0) return undefined;
  const z = twoProportionZ(r.missing, nr, c.missing, nc);
  const diff = Math.abs(share(c.missing, nc) - share(r.missing, nr));
  const floor = floorFor(config, 'proportion');
  const row: DriftRow = {
    feature: s.feature,
    kind: 'missing',
    test: 'z',
    ...z,
    adjustedP: null,
    effect: { method: 'proportion', value: diff, floor },
    effects: { proportion: diff },
    decision: 'stable',
    reason: '',
    rows: { reference: nr, current: nc },
  };
  return finish(row, nr < config.minRows || nc < config.minRows, config, override);
}

type Pending = Omit<DriftRow, 'decision' | 'reason'> & Partial<Pick<DriftRow, 'decision'>>;

function finish(
  row: Pending,
  small: boolean,
  config: DriftConfig,
  override?: FeatureOverride,
): DriftRow {
  if (small) {
    return {
      ...row,
      decision: 'not-judged',
      reason:
        `fewer than ${config.minRows} rows on a side` +
        ` (${row.rows.reference} reference, ${row.rows.current} current)`,
    };
  }
  if (override?.ignore) return { ...row, decision: 'ignored', reason: 'ignored by its override' };
  return { ...row, decision: 'stable', reason: '' };
}

function chosen(
  config: DriftConfig,
  byDefault: EffectMethod,
  override: FeatureOverride | undefined,
  effects: Partial<Record<EffectMethod, number>>,
): Pick<DriftRow, 'effect' | 'effects'> {
  const wanted = override?.effect && override.effect in effects ? override.effect : byDefault;
  const value = effects[wanted] ?? 0;
  return { effect: { method: wanted, value, floor: floorFor(config, wanted, override) }, effects };
}

/** Benjamini-Hochberg over the judged rows, then significance and effect together. */
function decide(rows: DriftRow[], config: DriftConfig): void {
  const judged = rows.filter((r) => r.decision === 'stable');
  const adjusted = benjaminiHochberg(judged.map((r) => r.pValue));
  judged.forEach((r, i) => {
    const q = adjusted[i] ?? 1;
    r.adjustedP = q;
    const significant = q < config.alpha;
    const large = r.effect.value >= r.effect.floor;
    const fmt = (v: number) => (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toFixed(3));
    const test = `adjusted p ${fmt(q)} ${significant ? '<' : '>='} alpha ${config.alpha}`;
    const comparison = large ? '>=' : '<';
    const effect = `${r.effect.method} ${fmt(r.effect.value)} ${comparison} floor ${r.effect.floor}`;
    r.decision = significant && large ? 'drift' : 'stable';
    r.reason = `${test}; ${effect}`;
  });
}

function histogramOf(frozen: Frozen, ref: WeightedSample, cur: WeightedSample): Histogram {
  const counts =
    frozen.kind === 'numeric'
      ? (w: WeightedSample) => binCounts(w, frozen.edges)
      : (w: WeightedSample) => categoryCounts(w, frozen.edges);
  return {
    edges: frozen.edges,
    reference: counts(ref),
    current: counts(cur),
    pseudocount: 0,
    pseudocountReason: null,
  };
}

/** Counts per category, then one "other" column for values outside them. */
function categoryCounts(w: WeightedSample, categories: readonly number[]): number[] {
  const index = new Map(categories.map((c, i) => [c, i]));
  const out = new Array<number>(categories.length + 1).fill(0);
  for (let i = 0; i < w.values.length; i++) {
    const k = index.get(w.values[i] as number) ?? categories.length;
    out[k] = (out[k] ?? 0) + (w.counts[i] ?? 0);
  }
  return out;
}

function countOf(w: WeightedSample, value: number): number {
  for (let i = 0; i < w.values.length; i++) if (w.values[i] === value) return w.counts[i] ?? 0;
  return 0;
}

function share(x: number, n: number): number {
  return n === 0 ? 0 : x / n;
}
