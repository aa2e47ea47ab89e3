/**
 * The training set of a retraining run, built from registry features through the point-in-time
 * builder (domain/features/point-in-time.ts): each labelled interaction (a `rated` event of the
 * model's source at time t, with a numeric rating) gets, per training feature, the value the
 * offline store held at t (the latest daily snapshot at or before t, so only events of earlier
 * UTC days count; within the feature's TTL; its default when missing). A value still missing
 * after the default trains as 0.
 *
 * Only persons who consent to `analytics` now (domain/privacy/consent.ts) give label rows, in
 * training sets and in drift sets alike: a withdrawal keeps the person out of every later build.
 *
 * Label: rating >= 4. Split by time: [trainFrom, trainUntil) trains, [trainUntil, validateUntil]
 * validates. The popularity baseline scores an item by `item_popularity:lifetime`.
 */
import type { PoolClient, Queryable } from '../common/db.js';
import { type PointInTimeFeature, buildPointInTimeSet } from './features/point-in-time.js';
import { EVENTS_WITH_PERSONS, entityKeySql, literal } from './features/source.js';
import { consentFilterSql } from './privacy/consent.js';

export const POSITIVE_RATING = 4;

/** How a training feature is named in a set: `name@version:window`. */
export function trainingFeatureName(f: PointInTimeFeature): string {
  return `${f.definition.name}@${f.definition.version}:${f.window}`;
}

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
 * The label rows of a source's `rated` events with a numeric rating from `from` (inclusive) to
 * `to` (inclusive or exclusive, as said), of persons with analytics consent, for
 * buildPointInTimeSet; label = rating >= 4.
 */
export function ratedLabelsSql(
  source: string,
  from: Date,
  to: Date,
  end: 'inclusive' | 'exclusive',
): string {
  const consent = consentFilterSql(entityKeySql('person'), 'analytics');
  return `select e.id as row_id, e.ts, ${entityKeySql('person')} as person_key,
            e.item_id as item_key,
            ((e.properties ->> 'rating')::real >= ${POSITIVE_RATING})::int as label
       from ${EVENTS_WITH_PERSONS} ${consent.join}
      where ${consent.where}
        and e.source = ${literal(source)} and e.type = 'track' and e.event = 'rated'
        and e.item_id is not null and jsonb_typeof(e.properties -> 'rating') = 'number'
        and e.ts >= ${literal(from.toISOString())}::timestamptz
        and e.ts ${end === 'inclusive' ? '<=' : '<'} ${literal(to.toISOString())}::timestamptz`;
}

/**
 * Writes the examples of one training set: the point-in-time rows of its labels, then one example
 * per row. The caller runs it in the transaction that also records the set, so a retry finds it
 * whole or not at all. Returns the rows per split.
 */
export async function materializeExamples(
  client: PoolClient,
  setKey: string,
  source: string,
  range: TimeRange,
  features: readonly PointInTimeFeature[],
): Promise<{ train: number; validate: number }> {
  const labels = ratedLabelsSql(source, range.trainFrom, range.validateUntil, 'inclusive');
  await buildPointInTimeSet(client, { setKey, labels, features });
  const result = await client.query<{ split: string; n: number }>(
    `with examples as (
       insert into training_examples
         (set_key, event_id, split, person_id, item_id, ts, rating, label, features)
       select $1, e.id, case when e.ts < $2::timestamptz then 'train' else 'validate' end,
              p.person_key, p.item_key, e.ts, (e.properties ->> 'rating')::real,
              ((e.properties ->> 'rating')::real >= ${POSITIVE_RATING})::int,
              array_replace(p.vals, null, 0)::real[]
         from pit_set_rows p join events e on e.id = p.row_id
        where p.set_key = $1
       returning split
     )
     select split, count(*)::int as n from examples group by split`,
    [setKey, range.trainUntil],
  );
  // The set's pit_set_rows stay: drift monitors compare against them, missing values included.
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
  /** The set's features, `name@version:window`, in column order. */
  names: string[];
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
  const set = await db.query<{ features: string[] }>(
    'select features from training_sets where set_key = $1',
    [setKey],
  );
  const names = set.rows[0]?.features ?? [];
  const n = result.rows.length;
  const dim = names.length;
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
  return { n, dim, names, x, y, rating, persons, items };
}
