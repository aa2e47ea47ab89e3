/**
 * Point-in-time training sets over the offline store (`feature_values`): one row of
 * `pit_set_rows` per label row, holding one value per requested feature, in the order requested.
 * Runs inside the caller's transaction; set-based SQL only.
 *
 * How each value is chosen (the time model of migrations/0006_feature_store.sql):
 * - A label row at instant t is read at t' = least(t, asOf) (t' = t without asOf). The row keeps
 *   its own ts in the output.
 * - Per feature, the snapshot is the one of the row's entity with the greatest ts such that
 *   ts <= t' (inclusive: a snapshot stamped exactly t' is seen). Entity keys as in source.ts:
 *   person → person_key, item → item_key, person_item → person_key || '|' || item_key.
 * - It counts only while t' - ts <= ttl (definition.ttl, seconds; no ttl: it never expires).
 * - The value is the snapshot's vals at the requested window's index. For `days_since_last` it
 *   ages: stored + (t' - ts) in days (exact seconds / 86400).
 * - No snapshot, an expired one, or a null value there, is missing and becomes definition.default
 *   (true/false as 1/0; null stays null). An older snapshot never stands in for a newer null.
 * - Every label row is kept exactly once, ties in ts and repeated entities included; the row
 *   count is checked and an Error is raised if it ever differs.
 *
 * How: per entity kind, one sort-merge. The label rows and the snapshot rows of every feature of
 * that kind are ordered by (entity, ts, kind: snapshots first); per feature version, a running max
 * over [snapshot epoch, ...vals] arrays carries its latest snapshot forward to the label rows (the
 * epoch comes first and is unique per entity, so the max is the latest). Per label row that costs
 * a share of one sort per entity kind, not one index lookup per feature.
 */
import { InputError } from '../../common/failures.js';
import type { PoolClient } from '../../common/db.js';
import type { FeatureDefinition } from './definition.js';
import { type Entity, literal } from './source.js';
import { lockFeatureWrites } from './write-lock.js';

/** The features of a point-in-time set: each a definition and one of its windows. */
export interface PointInTimeFeature {
  definition: FeatureDefinition;
  window: string;
}

export interface PointInTimeInput {
  /** The set's key in pit_set_rows; a set is written once. */
  setKey: string;
  /**
   * A select returning row_id (integer), ts (timestamptz) and, as the features need them,
   * person_key and item_key (text); label (a number) is optional.
   */
  labels: string;
  features: readonly PointInTimeFeature[];
  /** Reads no snapshot after this instant (label times above it are capped to it). */
  asOf?: Date;
}

const ENTITY_KEY: Record<Entity, string> = {
  person: 'person_key',
  item: 'item_key',
  person_item: `person_key || '|' || item_key`,
};

// pg type oids of the columns a labels query may return.
const INTEGER = [20, 21, 23];
const NUMBER = [20, 21, 23, 700, 701, 1700];
const TEXT = [25, 1042, 1043];
const TIMESTAMPTZ = 1184;
const WANTED = {
  row_id: 'an integer',
  ts: "timestamp with time zone (say its zone: ts at time zone 'UTC')",
  person_key: 'text',
  item_key: 'text',
  label: 'a number',
} as const;

interface Resolved {
  f: FeatureDefinition;
  /** 1-based index of the window in the definition's vals. */
  index: number;
  /** The feature version's number among those of its entity kind (1-based). */
  slot: number;
  /** Its place in the requested order (0-based): the output column v<position>. */
  position: number;
}

/**
 * Writes the point-in-time rows of `input.setKey` into pit_set_rows; returns how many. Thrown
 * InputErrors name the column, feature or window at fault.
 */
export async function buildPointInTimeSet(
  client: PoolClient,
  input: PointInTimeInput,
): Promise<{ rows: number }> {
  // Its rows are computed from events and snapshots: a deletion's step of this table waits for it.
  await lockFeatureWrites(client);
  const features = resolveFeatures(input.features);
  const columns = await checkLabelColumns(client, input.labels, features);
  await refuseWrittenSet(client, input.setKey);
  const { rows: previous } = await client.query<{ work_mem: string }>('show work_mem');
  const restore = async () => {
    await dropStaging(client);
    await client.query(`select set_config('work_mem', $1, true)`, [previous[0]?.work_mem]);
  };
  // The sorts below hold label and snapshot rows; at the 4MB default they would go to disk.
  await client.query(`set local work_mem = '512MB'`);
  let written: number;
  try {
    const labelRows = await stageLabels(client, input, columns);
    for (const entity of kindsOf(features)) {
      const carried = await carryForward(client, entity, features);
      assertCount(carried, labelRows, `the ${entity} merge`);
    }
    written = await writeRows(client, input.setKey, features);
    assertCount(written, labelRows, 'pit_set_rows');
  } catch (err) {
    // After a failed statement the transaction refuses everything until rolled back, which
    // drops the temp tables and the setting anyway: the first error is the one to report.
    await restore().catch(() => undefined);
    throw err;
  }
  await restore();
  return { rows: written };
}

function resolveFeatures(requested: readonly PointInTimeFeature[]): Resolved[] {
  const slots = new Map<string, number>();
  const perKind = new Map<Entity, number>();
  return requested.map(({ definition: f, window }, position) => {
    const index = f.windows.indexOf(window) + 1;
    if (index === 0) {
      throw new InputError(
        `feature ${f.name}@${f.version} has no window ${JSON.stringify(window)}` +
          ` (its windows: ${f.windows.join(', ')})`,
      );
    }
    // Two windows of one version read the same snapshots: they share a slot.
    const key = `${f.name}@${f.version}`;
    let slot = slots.get(key);
    if (slot === undefined) {
      slot = (perKind.get(f.entity) ?? 0) + 1;
      perKind.set(f.entity, slot);
      slots.set(key, slot);
    }
    return { f, index, slot, position };
  });
}

function kindsOf(features: readonly Resolved[]): Entity[] {
  return [...new Set(features.map((r) => r.f.entity))];
}

/**
 * Describes the labels query (no rows run), refuses columns of the wrong type, and returns the
 * names of its columns.
 */
async function checkLabelColumns(
  client: PoolClient,
  labels: string,
  features: readonly Resolved[],
): Promise<Set<string>> {
  const { fields } = await client.query(`select * from (${labels}) labels limit 0`);
  const types = new Map(fields.map((f) => [f.name, f.dataTypeID]));
  const wrong: Array<keyof typeof WANTED> = [];
  const need = (column: keyof typeof WANTED, allowed: number[]) => {
    const type = types.get(column);
    if (type === undefined) {
      throw new InputError(`labels query has no ${column} column (${WANTED[column]} needed)`);
    }
    if (!allowed.includes(type)) wrong.push(column);
  };
  need('row_id', INTEGER);
  need('ts', [TIMESTAMPTZ]);
  const kinds = new Set(features.map((r) => r.f.entity));
  if (kinds.has('person') || kinds.has('person_item')) need('person_key', TEXT);
  if (kinds.has('item') || kinds.has('person_item')) need('item_key', TEXT);
  if (types.has('label')) need('label', NUMBER);
  const first = wrong[0];
  if (first !== undefined) {
    const { rows } = await client.query<{ name: string }>('select format_type($1, null) as name', [
      types.get(first),
    ]);
    throw new InputError(`labels column ${first} is ${rows[0]?.name ?? '?'}, not ${WANTED[first]}`);
  }
  return new Set(types.keys());
}

/** Serializes builders of one set key; a set found written is refused. */
async function refuseWrittenSet(client: PoolClient, setKey: string): Promise<void> {
  await client.query('select pg_advisory_xact_lock(hashtext($1))', [`pit_set_rows:${setKey}`]);
  const found = await client.query('select 1 from pit_set_rows where set_key = $1 limit 1', [
    setKey,
  ]);
  if ((found.rowCount ?? 0) > 0) {
    throw new InputError(`point-in-time set ${JSON.stringify(setKey)} is already written`);
  }
}

/** Copies the label rows into a temp table with their read time t; returns the row count. */
async function stageLabels(
  client: PoolClient,
  input: PointInTimeInput,
  columns: ReadonlySet<string>,
): Promise<number> {
  await dropStaging(client);
  await client.query(
    `create temp table pit_labels (row_id bigint, ts timestamptz, t timestamptz,
       person_key text, item_key text, label double precision) on commit drop`,
  );
  const column = (c: string, type: string) =>
    columns.has(c) ? `labels.${c}::${type}` : `null::${type}`;
  const staged = await client.query(
    `insert into pit_labels (row_id, ts, t, person_key, item_key, label)
     select labels.row_id::bigint, labels.ts, least(labels.ts, $1::timestamptz),
            ${column('person_key', 'text')}, ${column('item_key', 'text')},
            ${column('label', 'double precision')}
       from (${input.labels}) labels`,
    [input.asOf ?? null],
  );
  await refuseNulls(client);
  await client.query('analyze pit_labels');
  return staged.rowCount ?? 0;
}

async function refuseNulls(client: PoolClient): Promise<void> {
  const { rows } = await client.query<{ row_id: number | null }>(
    'select row_id from pit_labels where row_id is null or ts is null limit 1',
  );
  const bad = rows[0];
  if (!bad) return;
  throw new InputError(
    bad.row_id === null
      ? 'labels query returned a row with a null row_id'
      : `labels query returned row_id ${bad.row_id} with a null ts`,
  );
}

/**
 * For the features of one entity kind: per label row, each feature's value (column v<position>)
 * from its version's latest snapshot at or before t, carried as [epoch seconds, ...vals], into
 * pit_k_<entity>; returns its rows.
 */
async function carryForward(
  client: PoolClient,
  entity: Entity,
  features: readonly Resolved[],
): Promise<number> {
  const mine = features.filter((r) => r.f.entity === entity);
  const versions = [...new Map(mine.map((r) => [r.slot, r.f]))];
  const carried = versions.map(
    ([slot]) => `max(pair) filter (where f = ${slot}) over w as c${slot}`,
  );
  const which = versions.map(([slot, f]) => `when ${isVersion(f)} then ${slot}`);
  const wanted = versions.map(([, f]) => `(${isVersion(f)}${oldestUseful(f)})`);
  const result = await client.query(
    `create temp table pit_k_${entity} on commit drop as
     select row_id, ${mine.map((r) => `${valueSql(r)} as v${r.position}`).join(',\n')}
       from (
         select kind, row_id, ts as t, ${carried.join(',\n')}
           from (
             select ${ENTITY_KEY[entity]} as e, t as ts, 1 as kind, row_id,
                    null::int as f, null::float8[] as pair
               from pit_labels
             union all
             select entity_id, ts, 0, null, case ${which.join(' ')} end,
                    array[date_part('epoch', ts)] || vals
               from feature_values
              where (${wanted.join(' or ')}) and ts <= (select max(t) from pit_labels)
           ) merged
         window w as (partition by e collate "C" order by ts, kind
                      rows between unbounded preceding and current row)
       ) carried
      where kind = 1`,
  );
  return result.rowCount ?? 0;
}

function isVersion(f: FeatureDefinition): string {
  return `name = ${literal(f.name)} and version = ${f.version}`;
}

/**
 * With a TTL, a snapshot older than every label's t by more than the TTL is expired wherever it
 * would be read; leaving it out reads as no snapshot, which is missing all the same.
 */
function oldestUseful(f: FeatureDefinition): string {
  if (f.ttl === undefined) return '';
  return ` and ts >= (select min(t) from pit_labels) - ${f.ttl} * interval '1 second'`;
}

/** The value of one feature at the label row's t from its carried snapshot, per the header. */
function valueSql(r: Resolved): string {
  const c = `c${r.slot}`;
  const value = `${c}[${r.index + 1}]`;
  const snapshotTs = `to_timestamp(${c}[1])`;
  const fresh =
    r.f.ttl === undefined ? '' : ` and t <= ${snapshotTs} + ${r.f.ttl} * interval '1 second'`;
  const aged =
    r.f.aggregation.fn === 'days_since_last'
      ? ` + extract(epoch from t - ${snapshotTs})::float8 / 86400`
      : '';
  const fallback = r.f.default === null ? 'null' : String(Number(r.f.default));
  return `coalesce(case when ${value} is not null${fresh} then ${value}${aged} end,
                   ${fallback}::float8)`;
}

async function writeRows(
  client: PoolClient,
  setKey: string,
  features: readonly Resolved[],
): Promise<number> {
  const joins = kindsOf(features).map(
    (entity) => `left join pit_k_${entity} k_${entity} on k_${entity}.row_id = l.row_id`,
  );
  try {
    const result = await client.query(
      `insert into pit_set_rows (set_key, row_id, ts, person_key, item_key, label, vals)
       select $1, l.row_id, l.ts, l.person_key, l.item_key, l.label,
              array[${features.map((r) => `k_${r.f.entity}.v${r.position}`).join(', ')}]::float8[]
         from pit_labels l
         ${joins.join('\n')}`,
      [setKey],
    );
    return result.rowCount ?? 0;
  } catch (err) {
    const e = err as { code?: string; detail?: string };
    if (e.code === '23505') {
      throw new InputError(`labels query returns a row_id twice: ${e.detail ?? ''}`);
    }
    throw err;
  }
}

function assertCount(actual: number, expected: number, where: string): void {
  if (actual !== expected) {
    throw new Error(
      `point-in-time set: ${where} has ${actual} rows for ${expected} label rows;` +
        ' every label row must appear exactly once',
    );
  }
}

async function dropStaging(client: PoolClient): Promise<void> {
  const tables = ['pit_labels', 'pit_k_person', 'pit_k_item', 'pit_k_person_item'];
  await client.query(`drop table if exists ${tables.join(', ')}`);
}
