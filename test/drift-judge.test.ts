/** judgeFeatures on the edge a breaker found, and the config refusals that keep windows sane. */
import { describe, expect, it } from 'vitest';
import { driftConfigSchema } from '../domain/drift/config.js';
import { judgeFeatures } from '../domain/drift/judge.js';
import { weightedSample } from '../domain/drift/stats.js';

describe('judgeFeatures', () => {
  it('reports an empty current window as not judged, never failing', () => {
    const reference = {
      sample: weightedSample([1, 2, 3, 4, 5].flatMap((v) => new Array<number>(50).fill(v))),
      missing: 3,
    };
    const current = { sample: weightedSample([]), missing: 0 };
    const { rows } = judgeFeatures(
      [{ feature: 'f@1:7d', type: 'float', reference, current }],
      driftConfigSchema.parse({}),
    );
    expect(rows).toHaveLength(1); // the missing-rate row needs rows on both sides
    expect(rows[0]).toMatchObject({ decision: 'not-judged', adjustedP: null });
    expect(rows[0]?.reason).toBe('fewer than 100 rows on a side (250 reference, 0 current)');
  });
});

describe('the drift config refuses', () => {
  const issue = (input: unknown) => {
    const result = driftConfigSchema.safeParse(input);
    return result.success
      ? ''
      : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
  };
  it('a reversed, empty or too long range', () => {
    const range = (from: string, to: string) => ({ reference: { kind: 'range', from, to } });
    expect(issue(range('2018-02-01T00:00:00Z', '2018-01-01T00:00:00Z'))).toBe(
      'reference.to: from must be before to',
    );
    expect(issue(range('2018-01-01T00:00:00Z', '2018-01-01T00:00:00Z'))).toBe(
      'reference.to: from must be before to',
    );
    expect(issue(range('1970-01-01T00:00:00Z', '2100-01-01T00:00:00Z'))).toBe(
      'reference.to: spans more than 3660 days',
    );
  });
  it('instants pops cannot store days for', () => {
    expect(issue({ current: { end: '0001-01-01T00:00:00Z' } })).toBe(
      'current.end: must lie between 1970 and 2199',
    );
  });
  it('a zero interval, and an override key PostgreSQL cannot store', () => {
    expect(issue({ every: '0s' })).toBe('every: is not an interval such as 30m, 1h or 1d');
    expect(issue({ features: { 'a\u0000b': { floor: 1 } } })).toContain('Invalid key');
  });
});
