/**
 * Lift of a campaign run: the share of persons who came back (any `track` event attributed to
 * them in [fire time, fire time + horizon)) among those sent the message versus those held out
 * (who passed every gate and were logged as would-have-sent, so the groups are alike). The
 * difference of the two shares carries a 95% Newcombe hybrid score interval (Newcombe 1998,
 * method 10: each share's Wilson score interval, combined), and a pooled two-proportion z-test's
 * p-value (domain/drift/stats.ts). Persons whose outcome is unknown are left out of both groups.
 */
import type { Pool, Queryable } from '../../common/db.js';
import { twoProportionZ } from '../drift/stats.js';
import { storeReport } from './store.js';

/** The 0.975 quantile of the standard normal: the z of a two-sided 95% interval. */
export const Z_95 = 1.959963984540054;

export interface Share {
  n: number;
  returned: number;
  rate: number | null;
  /** Wilson score interval at 95%. */
  interval: [number, number] | null;
}

export interface LiftReport {
  campaign: string;
  fireTime: string;
  horizonDays: number;
  /** False while the horizon has not ended at measuring time (the figures will still move). */
  complete: boolean;
  measuredAt: string;
  metric: string;
  sent: Share;
  holdout: Share;
  /** sent.rate − holdout.rate, with its 95% Newcombe interval and the z-test's p-value. */
  difference: number | null;
  interval: [number, number] | null;
  relativeLift: number | null;
  pValue: number | null;
  method: string;
}

/** The Wilson score interval of x successes in n at normal quantile z. */
export function wilson(x: number, n: number, z = Z_95): [number, number] {
  const p = x / n;
  const z2 = z * z;
  const denominator = 1 + z2 / n;
  const center = (p + z2 / (2 * n)) / denominator;
  const half = (z / denominator) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, center - half), Math.min(1, center + half)];
}

/** Newcombe's hybrid score interval for p1 − p2 (method 10). */
export function newcombeInterval(
  x1: number,
  n1: number,
  x2: number,
  n2: number,
  z = Z_95,
): [number, number] {
  const p1 = x1 / n1;
  const p2 = x2 / n2;
  const [l1, u1] = wilson(x1, n1, z);
  const [l2, u2] = wilson(x2, n2, z);
  const d = p1 - p2;
  return [d - Math.hypot(p1 - l1, u2 - p2), d + Math.hypot(u1 - p1, p2 - l2)];
}

function share(n: number, returned: number): Share {
  return {
    n,
    returned,
    rate: n > 0 ? returned / n : null,
    interval: n > 0 ? wilson(returned, n) : null,
  };
}

/** The lift of two groups' counts (the pure part, checked against scipy in the tests). */
export function liftOf(
  sent: { n: number; returned: number },
  holdout: { n: number; returned: number },
) {
  const s = share(sent.n, sent.returned);
  const h = share(holdout.n, holdout.returned);
  const both = sent.n > 0 && holdout.n > 0;
  return {
    sent: s,
    holdout: h,
    difference: both ? (s.rate as number) - (h.rate as number) : null,
    interval: both ? newcombeInterval(sent.returned, sent.n, holdout.returned, holdout.n) : null,
    relativeLift:
      both && (h.rate as number) > 0 ? (s.rate as number) / (h.rate as number) - 1 : null,
    pValue: both ? twoProportionZ(sent.returned, sent.n, holdout.returned, holdout.n).pValue : null,
  };
}

async function groupCounts(db: Queryable, campaign: string, fireTime: Date, horizonDays: number) {
  const { rows } = await db.query<{ status: string; n: number; returned: number }>(
    `with g as (
       select s.person_key, s.status from campaign_sends s
        where s.campaign = $1 and s.fire_time = $2 and s.status in ('sent', 'would_send')),
     back as (
       select g.person_key from g
        where exists (
          select 1 from persons p join event_persons ep on ep.person_id = p.id
            join events e on e.id = ep.event_id
           where p.canonical_id = case when g.person_key ~ '^[0-9]{1,18}$'
                                       then g.person_key::bigint end
             and e.type = 'track' and e.ts >= $2
             and e.ts < $2::timestamptz + make_interval(days => $3))
           or exists (
          select 1 from events e
           where g.person_key like 'unresolved:%' and e.person_id = substr(g.person_key, 12)
             and e.type = 'track' and e.ts >= $2
             and e.ts < $2::timestamptz + make_interval(days => $3)))
     select g.status, count(*)::int as n,
            count(*) filter (where g.person_key in (select person_key from back))::int as returned
       from g group by g.status`,
    [campaign, fireTime, horizonDays],
  );
  const of = (status: string) => {
    const row = rows.find((r) => r.status === status);
    return { n: row?.n ?? 0, returned: row?.returned ?? 0 };
  };
  return { sent: of('sent'), holdout: of('would_send') };
}

/** Measures a run's lift over `horizonDays` and stores the report under the run. */
export async function measureLift(
  pool: Pool,
  input: { campaign: string; fireTime: Date; horizonDays: number; now: Date },
): Promise<LiftReport> {
  const counts = await groupCounts(pool, input.campaign, input.fireTime, input.horizonDays);
  const end = input.fireTime.getTime() + input.horizonDays * 86_400_000;
  const report: LiftReport = {
    campaign: input.campaign,
    fireTime: input.fireTime.toISOString(),
    horizonDays: input.horizonDays,
    complete: input.now.getTime() >= end,
    measuredAt: input.now.toISOString(),
    metric: `any track event in [fire time, fire time + ${input.horizonDays} d)`,
    ...liftOf(counts.sent, counts.holdout),
    method:
      '95% Newcombe hybrid score interval (Wilson per group) on the difference of shares; ' +
      'p-value of the pooled two-proportion z-test',
  };
  await storeReport(
    pool,
    {
      campaign: input.campaign,
      fireTime: input.fireTime,
      kind: 'lift',
      horizonDays: input.horizonDays,
    },
    report,
  );
  return report;
}
