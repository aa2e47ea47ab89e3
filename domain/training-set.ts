/**
 * The point-in-time training set, computed inside PostgreSQL. Every labelled interaction (a `rated`
 * event at time t) gets features from events **strictly before t**: window frames end at the
 * current row and `exclude group` removes the row's peers, so an event at the same instant is
 * never seen.
 *
 * Features (raw; the model standardizes them with means and deviations of the training split):
 * - user_prior_count_log: ln(1 + ratings the person gave before t)
 * - user_prior_mean: the person's mean rating before t, smoothed toward 3.5 with weight 5
 * - user_prior_positive_rate: share of the person's ratings >= 4 before t, smoothed toward 0.5
 *   with weight 5
 * - user_days_since_last_log: ln(1 + days since the person's previous rating), 0 for a first rating
 * - item_prior_count_log: ln(1 + ratings the item got before t) (its popularity at t)
 * - item_prior_mean: the item's mean rating before t, smoothed toward 3.5 with weight 5
 * - item_prior_positive_rate: share of the item's ratings >= 4 before t, smoothed toward 0.5
 *   with weight 5
 * - item_age_days_log: ln(1 + days since the item's first rating), 0 for its first rating
 * - user_genre_mean: the person's mean rating before t on items sharing a genre with this item
 *   (a rating counts once per shared genre), smoothed toward 3.5 with weight 5
 * - user_genre_count_log: ln(1 + number of those genre-matching prior ratings)
 *
 * Label: rating >= 4. Split by time: [trainFrom, trainUntil) trains, [trainUntil, validateUntil]
 * validates. A `rated` event whose rating is not a JSON number is not an example.
 * The popularity baseline scores an item by item_prior_count_log.
 */
import type { PoolClient, Queryable } from '../common/db.js';

export const FEATURES = [
  'user_prior_count_log',
  'user_prior_mean',
  'user_prior_positive_rate',
  'user_days_since_last_log',
  'item_prior_count_log',
  'item_prior_mean',
  'item_prior_positive_rate',
  'item_age_days_log',
  'user_genre_mean',
  'user_genre_count_log',
] as const;

export const POPULARITY_FEATURE_INDEX = FEATURES.indexOf('item_prior_count_log');
export const POSITIVE_RATING = 4;
const PRIOR_MEAN = 3.5;
const PRIOR_RATE = 0.5;
const PRIOR_WEIGHT = 5;

export interface TimeRange {
  trainFrom: Date;
  trainUntil: Date;
  validateUntil: Date;
}

/** The default split: the last 20% of the source's time range validates. */
export async function defaultRange(
  db: Queryable,
  source: string,
  overrides: { trainUntil?: Date; validateUntil?: Date },
): Promise<TimeRange | undefined> {
  const span = await db.query<{ first: Date | null; last: Date | null }>(
    `select min(ts) as first, max(ts) as last from events
      where source = $1 and event = 'rated' and jsonb_typeof(properties -> 'rating') = 'number'`,
    [source],
  );
  const first = span.rows[0]?.first;
  const last = span.rows[0]?.last;
  if (!first || !last) return undefined;
  const validateUntil = overrides.validateUntil ?? last;
  const trainUntil =
    overrides.trainUntil ??
    new Date(first.getTime() + 0.8 * (validateUntil.getTime() - first.getTime()));
  return { trainFrom: first, trainUntil, validateUntil };
}

/**
 * Writes the examples of one training set in one statement; returns the rows per split. The caller
 * runs it in the transaction that also records the set, so a retry finds it whole or not at all.
 */
export async function materializeExamples(
  client: PoolClient,
  setKey: string,
  source: string,
  range: TimeRange,
): Promise<{ train: number; validate: number }> {
  const smooth = (sum: string, n: string, prior: number) =>
    `((coalesce(${sum}, 0) + ${PRIOR_WEIGHT * prior}) / (${n} + ${PRIOR_WEIGHT}))`;
  const days = (later: string, earlier: string) =>
    `coalesce(ln(1 + extract(epoch from (${later} - ${earlier})) / 86400.0), 0)`;
  // Fresh tables have no statistics; estimated at one row, the planner would re-run the window
  // aggregates inside nested loops. This statement is set-based through and through: only hash
  // joins.
  await client.query('set local enable_nestloop = off');
  const result = await client.query<{ split: string; n: number }>(
    `with rated as materialized (
       select e.id, e.person_id, e.item_id, e.ts, (e.properties ->> 'rating')::real as rating,
              ((e.properties ->> 'rating')::real >= ${POSITIVE_RATING})::int as positive
         from events e
        where e.source = $2 and e.event = 'rated' and e.ts <= $4::timestamptz
          and jsonb_typeof(e.properties -> 'rating') = 'number'
     ),
     with_user as (
       select r.*, count(*) over w as u_n, sum(rating) over w as u_total,
              sum(positive) over w as u_positives, max(ts) over w as u_last
         from rated r
       window w as (partition by person_id order by ts
                    range between unbounded preceding and current row exclude group)
     ),
     with_item as (
       select x.*, count(*) over w as i_n, sum(rating) over w as i_total,
              sum(positive) over w as i_positives, min(ts) over w as i_first
         from with_user x
       window w as (partition by item_id order by ts
                    range between unbounded preceding and current row exclude group)
     ),
     by_genre as materialized (
       select id, sum(n) as n, sum(total) as total
         from (
           select r.id, count(*) over w as n, sum(r.rating) over w as total
             from rated r
             join items it on it.source = $2 and it.item_id = r.item_id
            cross join lateral unnest(it.genres) as g(genre)
           window w as (partition by r.person_id, g.genre order by r.ts
                        range between unbounded preceding and current row exclude group)
         ) per_genre
        group by id
     ),
     examples as (
       insert into training_examples
         (set_key, event_id, split, person_id, item_id, ts, rating, label, features)
       select $1, x.id,
              case when x.ts < $3::timestamptz then 'train' else 'validate' end,
              x.person_id, x.item_id, x.ts, x.rating, x.positive,
              array[
                ln(1 + x.u_n),
                ${smooth('x.u_total', 'x.u_n', PRIOR_MEAN)},
                ${smooth('x.u_positives', 'x.u_n', PRIOR_RATE)},
                ${days('x.ts', 'x.u_last')},
                ln(1 + x.i_n),
                ${smooth('x.i_total', 'x.i_n', PRIOR_MEAN)},
                ${smooth('x.i_positives', 'x.i_n', PRIOR_RATE)},
                ${days('x.ts', 'x.i_first')},
                ${smooth('g.total', 'coalesce(g.n, 0)', PRIOR_MEAN)},
                ln(1 + coalesce(g.n, 0))
              ]::real[]
         from with_item x
         left join by_genre g on g.id = x.id
        where x.ts >= $5::timestamptz
       returning split
     )
     select split, count(*)::int as n from examples group by split`,
    [setKey, source, range.trainUntil, range.validateUntil, range.trainFrom],
  );
  const count = (split: string) => result.rows.find((r) => r.split === split)?.n ?? 0;
  return { train: count('train'), validate: count('validate') };
}

/** Positive and negative examples per split, to refuse a set that cannot be learned or judged. */
export async function classCounts(
  db: Queryable,
  setKey: string,
): Promise<Record<'train' | 'validate', { positive: number; negative: number }>> {
  const result = await db.query<{
    split: 'train' | 'validate';
    positive: number;
    negative: number;
  }>(
    `select split, count(*) filter (where label = 1)::int as positive,
            count(*) filter (where label = 0)::int as negative
       from training_examples where set_key = $1 group by split`,
    [setKey],
  );
  const of = (split: 'train' | 'validate') => {
    const row = result.rows.find((r) => r.split === split);
    return { positive: row?.positive ?? 0, negative: row?.negative ?? 0 };
  };
  return { train: of('train'), validate: of('validate') };
}

export interface ExampleMatrix {
  n: number;
  dim: number;
  x: Float32Array;
  y: Float32Array;
  rating: Float32Array;
  persons: string[];
  items: string[];
}

/** Reads one split of a training set into row-major arrays, in event order. */
export async function loadExamples(
  db: Queryable,
  setKey: string,
  split: 'train' | 'validate',
): Promise<ExampleMatrix> {
  const result = await db.query<{
    person_id: string;
    item_id: string;
    rating: number;
    label: number;
    features: number[];
  }>(
    `select person_id, item_id, rating, label, features from training_examples
      where set_key = $1 and split = $2 order by ts, event_id`,
    [setKey, split],
  );
  const n = result.rows.length;
  const dim = FEATURES.length;
  const x = new Float32Array(n * dim);
  const y = new Float32Array(n);
  const rating = new Float32Array(n);
  const persons: string[] = new Array<string>(n);
  const items: string[] = new Array<string>(n);
  result.rows.forEach((row, i) => {
    x.set(row.features, i * dim);
    y[i] = row.label;
    rating[i] = row.rating;
    persons[i] = row.person_id;
    items[i] = row.item_id;
  });
  return { n, dim, x, y, rating, persons, items };
}
