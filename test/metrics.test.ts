import { describe, expect, it } from 'vitest';
import { auc, LOG_LOSS_EPSILON, logLoss, ndcgAtK } from '../domain/metrics.js';

/** The definition of AUC, one pair at a time: (pairs won + 0.5 * pairs tied) / (P * N). */
function pairwiseAuc(labels: number[], scores: number[]): number {
  let won = 0;
  let pairs = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < labels.length; j++) {
      if (labels[j] !== 0) continue;
      const [p, q] = [scores[i] ?? 0, scores[j] ?? 0];
      won += p > q ? 1 : p === q ? 0.5 : 0;
      pairs++;
    }
  }
  return won / pairs;
}

/** A tiny seeded generator (Park–Miller) so the random cases are the same on every run. */
function lcg(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 48271) % 2147483647;
    return state / 2147483647;
  };
}

describe('auc', () => {
  it('counts a tied positive-negative pair as one half', () => {
    // positives 0.9, 0.5, 0.3 and negatives 0.9, 0.3, 0.1:
    //   0.9 vs (0.9 tie, 0.3 win, 0.1 win) = 2.5
    //   0.5 vs (0.9 lose, 0.3 win, 0.1 win) = 2
    //   0.3 vs (0.9 lose, 0.3 tie, 0.1 win) = 1.5
    // AUC = (2.5 + 2 + 1.5) / (3 * 3) = 6 / 9
    const labels = [1, 0, 1, 0, 1, 0];
    const scores = [0.9, 0.9, 0.5, 0.3, 0.3, 0.1];
    expect(auc(labels, scores)).toBeCloseTo(6 / 9, 15);
  });

  it('is 1 for a perfect ranking, 0 for a reversed one and 0.5 when every score ties', () => {
    expect(auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])).toBe(1);
    expect(auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4])).toBe(0);
    expect(auc([1, 0, 1, 0], new Float32Array([0.7, 0.7, 0.7, 0.7]))).toBe(0.5);
  });

  it('agrees with the pairwise definition on random data with many ties', () => {
    const random = lcg(20240611);
    for (let trial = 0; trial < 20; trial++) {
      const n = 50 + Math.floor(random() * 200);
      // Five distinct score values over up to 250 rows: most pairs tie somewhere.
      const scores = Array.from({ length: n }, () => Math.floor(random() * 5) / 4);
      const labels = scores.map((s) => (random() < 0.2 + 0.6 * s ? 1 : 0));
      labels[0] = 1;
      labels[1] = 0;
      expect(auc(labels, scores)).toBeCloseTo(pairwiseAuc(labels, scores), 12);
    }
  });

  it('names the problem when a class is missing or the lengths differ', () => {
    expect(() => auc([1, 1, 1], [0.1, 0.2, 0.3])).toThrow(
      /both classes; got 3 positive and 0 negative/,
    );
    expect(() => auc([1, 0], [0.1])).toThrow(/lengths differ \(2 vs 1\)/);
    expect(() => auc([1, 2], [0.1, 0.2])).toThrow(/label must be 0 or 1; got 2 at row 1/);
    expect(() => auc([1, 0], [0.1, NaN])).toThrow(/score must be a finite number; got NaN/);
  });
});

describe('logLoss', () => {
  it('is the mean of -ln(p) for positives and -ln(1 - p) for negatives', () => {
    // label 1, p 0.8: -ln 0.8        = 0.2231435513142097
    // label 0, p 0.4: -ln 0.6        = 0.5108256237659907
    // label 1, p 0.5: -ln 0.5        = 0.6931471805599453
    // label 0, p 0  : clipped to 1e-7, -ln(1 - 1e-7) = 1.0000000494736474e-7
    // sum = 1.4271164556401505; mean = 0.35677911391003764
    const loss = logLoss([1, 0, 1, 0], [0.8, 0.4, 0.5, 0]);
    expect(loss).toBeCloseTo(0.35677911391003764, 14);
  });

  it('clips a confidently wrong probability at eps instead of returning infinity', () => {
    // label 1, p 0 → clipped to 1e-7: -ln(1e-7) = 16.11809565095832
    expect(LOG_LOSS_EPSILON).toBe(1e-7);
    expect(logLoss([1], [0])).toBeCloseTo(16.11809565095832, 12);
    // With eps 1e-3 the same row costs -ln(1e-3) = 6.907755278982137
    expect(logLoss([1], [0], 1e-3)).toBeCloseTo(6.907755278982137, 12);
  });

  it('names the problem on empty input, unequal lengths or a probability out of range', () => {
    expect(() => logLoss([], [])).toThrow(/at least one row/);
    expect(() => logLoss([1], [0.5, 0.5])).toThrow(/lengths differ \(1 vs 2\)/);
    expect(() => logLoss([1], [1.5])).toThrow(/probability must be in \[0, 1\]; got 1.5 at row 0/);
  });
});

describe('ndcgAtK', () => {
  // User a: items a1..a4 with relevance 3, 2, 0, 1; a3 and a4 tie on score 0.5.
  // User b: items b1, b2 with relevance 0, 1.
  // User c: nothing relevant, so NDCG is undefined for c and c is skipped.
  const columns = {
    groups: ['a', 'a', 'a', 'a', 'b', 'b', 'c', 'c'],
    items: ['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'c1', 'c2'],
    relevance: [3, 2, 0, 1, 0, 1, 0, 0],
    scores: [0.1, 0.9, 0.5, 0.5, 0.7, 0.2, 0.4, 0.6],
  };

  it('averages per-user NDCG, linear gain, ideal order over all of a user’s items', () => {
    // a, k = 3, ranked by score with the tie broken by item id: a2 (2), a3 (0), a4 (1), [a1 (3)]
    //   DCG  = 2/log2(2) + 0/log2(3) + 1/log2(4)            = 2 + 0 + 0.5 = 2.5
    //   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)            = 3 + 1.2618595071429148 + 0.5
    //        = 4.7618595071429155  (a1 counts in the ideal although ranked 4th)
    //   NDCG = 2.5 / 4.7618595071429155                      = 0.5250049893849101
    // b: ranked b1 (0), b2 (1): DCG = 1/log2(3) = 0.6309297535714575; IDCG = 1/log2(2) = 1
    // mean over a and b = (0.5250049893849101 + 0.6309297535714575) / 2 = 0.5779673714781839
    const result = ndcgAtK(columns, 3);
    expect(result.groups).toBe(2);
    expect(result.ndcg).toBeCloseTo(0.5779673714781839, 14);
  });

  it('breaks score ties by item id, whatever order the rows come in', () => {
    const reversed = {
      groups: [...columns.groups].reverse(),
      items: [...columns.items].reverse(),
      relevance: [...columns.relevance].reverse(),
      scores: [...columns.scores].reverse(),
    };
    expect(ndcgAtK(reversed, 3)).toEqual(ndcgAtK(columns, 3));

    // Renaming a4 to a0 puts it before a3 in the tie: a2 (2), a0 (1), a3 (0)
    //   DCG = 2 + 1/log2(3) = 2.6309297535714578; NDCG_a = 2.6309297535714578 / 4.7618595071429155
    const renamed = { ...columns, items: ['a1', 'a2', 'a3', 'a0', 'b1', 'b2', 'c1', 'c2'] };
    const ndcgA = (2 + 1 / Math.log2(3)) / (3 + 2 / Math.log2(3) + 0.5);
    expect(ndcgA).toBeCloseTo(0.5525004989384911, 14);
    expect(ndcgAtK(renamed, 3).ndcg).toBeCloseTo((ndcgA + 0.6309297535714575) / 2, 14);
  });

  it('uses the default k of 10, which here covers every item', () => {
    // a at k >= 4: DCG = 2.5 + 3/log2(5) = 3.7920296742201796
    //              IDCG = 4.7618595071429155 + 0/log2(5) = 4.7618595071429155
    const ndcgA = (2.5 + 3 / Math.log2(5)) / (3 + 2 / Math.log2(3) + 0.5);
    expect(ndcgA).toBeCloseTo(0.7963337995444919, 14);
    expect(ndcgAtK(columns).ndcg).toBeCloseTo((ndcgA + 0.6309297535714575) / 2, 14);
  });

  it('refuses input on which NDCG is undefined', () => {
    const noneRelevant = { ...columns, relevance: [0, 0, 0, 0, 0, 0, 0, 0] };
    expect(() => ndcgAtK(noneRelevant)).toThrow(/no group with a relevance above 0/);
    expect(() => ndcgAtK(columns, 0)).toThrow(/k must be an integer >= 1; got 0/);
    expect(() => ndcgAtK({ ...columns, scores: [1] })).toThrow(/scores: lengths differ \(8 vs 1\)/);
  });
});
