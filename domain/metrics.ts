/**
 * Offline ranking metrics computed in plain TypeScript: ROC AUC, log loss and NDCG@k. Pure
 * functions of their arguments; no database, no tensors, no randomness.
 */

/**
 * The default probability clip of `logLoss`. A model that outputs exactly 0 or 1 would otherwise
 * score an infinite loss on a single wrong row; 1e-7 bounds one row's loss at -ln(1e-7) ≈ 16.12,
 * and it is also float32's epsilon as TensorFlow.js uses it, so clipped float32 outputs stay exact.
 */
export const LOG_LOSS_EPSILON = 1e-7;

/**
 * ROC AUC: the probability that a random positive scores above a random negative, with a tie
 * counting one half. Computed from midranks in O(n log n). Labels must be 0 or 1.
 * Throws when lengths differ, a value is not finite, or only one class is present.
 */
export function auc(labels: ArrayLike<number>, scores: ArrayLike<number>): number {
  assertSameLength('auc', labels.length, scores.length);
  const ranks = midranks(scores);
  let positives = 0;
  let positiveRankSum = 0;
  for (let i = 0; i < labels.length; i++) {
    if (binaryLabel('auc', labels, i) === 1) {
      positives++;
      positiveRankSum += ranks[i] ?? 0;
    }
  }

  const negatives = labels.length - positives;
  if (positives === 0 || negatives === 0) {
    throw new Error(
      `auc needs both classes; got ${positives} positive and ${negatives} negative labels`,
    );
  }
  return (positiveRankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/** 1-based ranks of the scores in ascending order, where tied scores share their mean rank. */
function midranks(scores: ArrayLike<number>): Float64Array {
  const order = new Uint32Array(scores.length);
  for (let i = 0; i < order.length; i++) {
    order[i] = i;
    finiteValue('auc', 'score', scores, i);
  }
  order.sort((a, b) => (scores[a] ?? 0) - (scores[b] ?? 0));

  const ranks = new Float64Array(scores.length);
  let start = 0;
  while (start < order.length) {
    const value = scores[order[start] ?? 0];
    let end = start + 1;
    while (end < order.length && scores[order[end] ?? 0] === value) end++;
    // Positions start..end-1 hold ranks start+1..end; each gets their mean.
    const rank = (start + 1 + end) / 2;
    for (let j = start; j < end; j++) ranks[order[j] ?? 0] = rank;
    start = end;
  }
  return ranks;
}

/**
 * Mean binary cross-entropy of labels in [0, 1] against probabilities, natural log. Each
 * probability is clipped to [eps, 1 - eps] first (see LOG_LOSS_EPSILON).
 * Throws when lengths differ, the input is empty, or a value is out of range.
 */
export function logLoss(
  labels: ArrayLike<number>,
  probabilities: ArrayLike<number>,
  eps: number = LOG_LOSS_EPSILON,
): number {
  assertSameLength('logLoss', labels.length, probabilities.length);
  if (labels.length === 0) throw new Error('logLoss needs at least one row; got 0');
  if (!(eps > 0 && eps < 0.5)) throw new Error(`logLoss eps must be in (0, 0.5); got ${eps}`);

  let sum = 0;
  for (let i = 0; i < labels.length; i++) {
    const y = unitValue('logLoss', 'label', labels, i);
    const raw = unitValue('logLoss', 'probability', probabilities, i);
    const p = Math.min(1 - eps, Math.max(eps, raw));
    sum -= y * Math.log(p) + (1 - y) * Math.log(1 - p);
  }
  return sum / labels.length;
}

/**
 * Columnar input of `ndcgAtK`: row i is item `items[i]` shown to user `groups[i]`, with a graded
 * relevance (0 = not relevant) and the model's score. Columns avoid one object per row.
 */
export interface RankingColumns {
  groups: ArrayLike<string>;
  items: ArrayLike<string>;
  relevance: ArrayLike<number>;
  scores: ArrayLike<number>;
}

/** NDCG@k averaged over groups, and how many groups the average covers. */
export interface NdcgResult {
  ndcg: number;
  groups: number;
}

/**
 * NDCG@k per group (user), averaged with equal weight per group. Gain is linear (the relevance
 * itself) and the item at rank r (from 1) is discounted by 1/log2(r + 1). The ideal DCG ranks ALL
 * of the group's items by relevance and keeps the top k, so a relevant item the model ranked below
 * k still counts against it. Score ties are broken by item id ascending (code-unit order, then the
 * order given), so the result does not depend on row order. Groups with no relevant item (ideal
 * DCG 0) have no defined NDCG: they are skipped and not counted in `groups`.
 * Throws when columns differ in length, k is not a positive integer, a relevance is negative or
 * not finite, or no group has a relevant item.
 */
export function ndcgAtK(columns: RankingColumns, k = 10): NdcgResult {
  assertColumns(columns);
  if (!Number.isInteger(k) || k < 1) throw new Error(`ndcgAtK k must be an integer >= 1; got ${k}`);

  let sum = 0;
  let counted = 0;
  for (const rows of rowsByGroup(columns.groups).values()) {
    const ideal = idealDcg(columns.relevance, rows, k);
    if (ideal === 0) continue;
    sum += dcg(columns.relevance, rankByScore(columns, rows), k) / ideal;
    counted++;
  }

  if (counted === 0) throw new Error('ndcgAtK found no group with a relevance above 0');
  return { ndcg: sum / counted, groups: counted };
}

function assertColumns(columns: RankingColumns): void {
  const n = columns.groups.length;
  assertSameLength('ndcgAtK items', n, columns.items.length);
  assertSameLength('ndcgAtK relevance', n, columns.relevance.length);
  assertSameLength('ndcgAtK scores', n, columns.scores.length);
  for (let i = 0; i < n; i++) {
    finiteValue('ndcgAtK', 'score', columns.scores, i);
    if (finiteValue('ndcgAtK', 'relevance', columns.relevance, i) < 0) {
      throw new Error(`ndcgAtK relevance must be >= 0; got ${columns.relevance[i]} at row ${i}`);
    }
  }
}

function rowsByGroup(groups: ArrayLike<string>): Map<string, number[]> {
  const byGroup = new Map<string, number[]>();
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i] ?? '';
    const rows = byGroup.get(group);
    if (rows) rows.push(i);
    else byGroup.set(group, [i]);
  }
  return byGroup;
}

/** The group's rows best-first: score descending, then item ascending; the sort is stable. */
function rankByScore(columns: RankingColumns, rows: number[]): number[] {
  const { items, scores } = columns;
  return [...rows].sort((a, b) => {
    const byScore = (scores[b] ?? 0) - (scores[a] ?? 0);
    if (byScore !== 0) return byScore;
    const itemA = items[a] ?? '';
    const itemB = items[b] ?? '';
    return itemA < itemB ? -1 : itemA > itemB ? 1 : 0;
  });
}

function idealDcg(relevance: ArrayLike<number>, rows: number[], k: number): number {
  const ideal = rows.map((i) => relevance[i] ?? 0).sort((a, b) => b - a);
  return dcgOfGains(ideal, k);
}

function dcg(relevance: ArrayLike<number>, ranked: number[], k: number): number {
  return dcgOfGains(
    ranked.map((i) => relevance[i] ?? 0),
    k,
  );
}

function dcgOfGains(gains: number[], k: number): number {
  let sum = 0;
  const top = Math.min(k, gains.length);
  for (let r = 1; r <= top; r++) sum += (gains[r - 1] ?? 0) / Math.log2(r + 1);
  return sum;
}

function assertSameLength(what: string, expected: number, actual: number): void {
  if (expected !== actual) {
    throw new Error(`${what}: lengths differ (${expected} vs ${actual})`);
  }
}

function finiteValue(fn: string, what: string, values: ArrayLike<number>, i: number): number {
  const value = values[i];
  if (value === undefined || !Number.isFinite(value)) {
    throw new Error(`${fn} ${what} must be a finite number; got ${value} at row ${i}`);
  }
  return value;
}

function unitValue(fn: string, what: string, values: ArrayLike<number>, i: number): number {
  const value = finiteValue(fn, what, values, i);
  if (value < 0 || value > 1) {
    throw new Error(`${fn} ${what} must be in [0, 1]; got ${value} at row ${i}`);
  }
  return value;
}

function binaryLabel(fn: string, labels: ArrayLike<number>, i: number): 0 | 1 {
  const value = labels[i];
  if (value === 0 || value === 1) return value;
  throw new Error(`${fn} label must be 0 or 1; got ${value} at row ${i}`);
}
