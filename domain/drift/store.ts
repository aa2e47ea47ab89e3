/**
 * The tables of drift monitoring (migrations/0011_drift.sql): monitors, the samples a run compares
 * (point-in-time rows in pit_set_rows), frozen bins, and run reports with their decisions.
 */
import type { Pool, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { InputError } from '../../common/failures.js';
import type { FeatureDefinition } from '../features/definition.js';
import { buildPointInTimeSet } from '../features/point-in-time.js';
import { loadDefinitions } from '../features/registry.js';
import { ratedLabelsSql } from '../training-set.js';
import { type DriftConfig, driftConfigSchema } from './config.js';
import type { Frozen, Side } from './judge.js';
import { fromCounts } from './stats.js';

/** The version a monitor watches: what it trained on, and how it scored on validation. */
export interface WatchedVersion {
  model: string;
  version: number;
  /** `production` when the alias points at it, else `latest` (no production yet). */
  via: 'production' | 'latest';
  source: string;
  setKey: string;
  features: string[];
  trainFrom: string;
  trainUntil: string;
  validateUntil: string;
  artifactSha256: string;
  validation: { auc: number; logLoss: number };
}

/** The production version of a model, else its latest; undefined when it has none. */
export async function watchedVersion(
  db: Queryable,
  model: string,
): Promise<WatchedVersion | undefined> {
  const { rows } = await db.query<{
    version: number;
    via: 'production' | 'latest';
    source: string;
    set_key: string;
    features: string[];
    data_range: { trainFrom: string; trainUntil: string; validateUntil: string };
    artifact_sha256: string;
    metrics: { auc: number; logLoss: number };
  }>(
    `select v.version, case when a.version is null then 'latest' else 'production' end as via,
            m.source, v.set_key, v.features, v.data_range, v.artifact_sha256, v.metrics
       from models m
       join model_versions v on v.model = m.name
       left join model_aliases a on a.model = m.name and a.alias = 'production'
      where m.name = $1 and (a.version is null or v.version = a.version)
      order by v.version desc limit 1`,
    [model],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    model,
    version: r.version,
    via: r.via,
    source: r.source,
    setKey: r.set_key,
    features: r.features,
    ...r.data_range,
    artifactSha256: r.artifact_sha256,
    validation: { auc: r.metrics.auc, logLoss: r.metrics.logLoss },
  };
}

/** A training feature name `name@version:window` split into its parts. */
export function splitFeature(name: string): { name: string; version: number; window: string } {
  const m = /^([a-z][a-z0-9_]*)@(\d+):(.+)$/.exec(name);
  if (!m) throw new InputError(`feature ${JSON.stringify(name)} is not name@version:window`);
  return { name: m[1] as string, version: Number(m[2]), window: m[3] as string };
}

/** The definitions of a version's features, in its order. */
export async function featureDefinitions(
  db: Queryable,
  features: readonly string[],
): Promise<FeatureDefinition[]> {
  return loadDefinitions(db, features.map(splitFeature));
}

/**
 * The days (YYYY-MM-DD) from `from` to `to` inclusive on which some feature version has no
 * snapshot partition that passed its quality checks: what a run must backfill before reading.
 */
export async function missingDays(
  db: Queryable,
  features: readonly string[],
  from: string,
  to: string,
): Promise<{ from: string; to: string } | null> {
  const refs = [...new Set(features.map((f) => f.replace(/:.*$/, '')))].map((r) => {
    const [name, version] = r.split('@');
    return { name: name as string, version: Number(version) };
  });
  const { rows } = await db.query<{ first: string | null; last: string | null }>(
    `select min(d)::date::text as first, max(d)::date::text as last
       from generate_series($1::date, $2::date, interval '1 day') d
      cross join unnest($3::text[], $4::int[]) f(name, version)
      where not exists (select 1 from feature_partitions p
                         where p.name = f.name and p.version = f.version and p.day = d::date
                           and p.quality_status <> 'fail')`,
    [from, to, refs.map((r) => r.name), refs.map((r) => r.version)],
  );
  const r = rows[0];
  return r?.first && r.last ? { from: r.first, to: r.last } : null;
}

/**
 * Writes the point-in-time rows of a source's rated events in [from, to) under `setKey`, once:
 * a retry finds the set whole (it is recorded in the same transaction) and returns its count.
 */
export async function buildDriftSet(
  pool: Pool,
  set: { setKey: string; source: string; from: Date; to: Date; features: readonly string[] },
): Promise<number> {
  const definitions = await featureDefinitions(pool, set.features);
  return withTransaction(pool, async (client) => {
    await client.query('select pg_advisory_xact_lock(hashtext($1))', [set.setKey]);
    const done = await client.query<{ row_count: number }>(
      'select row_count from drift_sets where set_key = $1',
      [set.setKey],
    );
    if (done.rows[0]) return done.rows[0].row_count;
    const { rows } = await buildPointInTimeSet(client, {
      setKey: set.setKey,
      labels: ratedLabelsSql(set.source, set.from, set.to, 'exclusive'),
      features: set.features.map((f, i) => ({
        definition: definitions[i] as FeatureDefinition,
        window: splitFeature(f).window,
      })),
    });
    await client.query(
      `insert into drift_sets (set_key, range_from, range_to, row_count) values ($1, $2, $3, $4)`,
      [set.setKey, set.from, set.to, rows],
    );
    return rows;
  });
}

/**
 * Which rows of pit_set_rows a sample is: a set, optionally only its rows before an instant.
 * `immutable`: the rows never change (a version's training set), so their counts may be cached.
 */
export interface SampleRef {
  setKey: string;
  before?: string;
  immutable?: boolean;
}

/**
 * Per feature position, the sample's values as (value, count) and its missing count, from one
 * group-by in PostgreSQL, without moving the rows. An immutable sample's counts are read from
 * drift_sample_cache after the first time.
 */
export async function loadSides(db: Pool, ref: SampleRef, dim: number): Promise<Side[]> {
  const key = `${ref.setKey}|${ref.before ?? ''}`;
  if (ref.immutable) {
    const cached = await cachedSides(db, key, dim);
    if (cached) return cached;
  }
  // One scan: unnest reads each row's array once (a group-by per feature would read it 20 times).
  const { rows } = await db.query<{ i: number; v: number | null; n: number }>(
    `select u.i::int as i, u.v, count(*)::float8 as n
       from pit_set_rows p, unnest(p.vals) with ordinality as u(v, i)
      where p.set_key = $1 and ($2::timestamptz is null or p.ts < $2::timestamptz)
      group by u.i, u.v`,
    [ref.setKey, ref.before ?? null],
  );
  const values: number[][] = Array.from({ length: dim }, () => []);
  const counts: number[][] = Array.from({ length: dim }, () => []);
  const missing = new Array<number>(dim).fill(0);
  for (const r of rows) {
    const k = r.i - 1;
    if (k < 0 || k >= dim) continue;
    if (r.v === null) missing[k] = (missing[k] ?? 0) + r.n;
    else {
      values[k]?.push(r.v);
      counts[k]?.push(r.n);
    }
  }
  const sides = values.map((v, k) => ({
    sample: fromCounts(v, counts[k] ?? []),
    missing: missing[k] ?? 0,
  }));
  if (ref.immutable) await cacheSides(db, key, sides);
  return sides;
}

async function cachedSides(db: Queryable, key: string, dim: number): Promise<Side[] | undefined> {
  const { rows } = await db.query<{
    feature_index: number;
    value_bytes: Buffer;
    count_bytes: Buffer;
    missing: number;
  }>(
    `select feature_index, value_bytes, count_bytes, missing from drift_sample_cache
      where sample_key = $1 order by feature_index`,
    [key],
  );
  if (rows.length !== dim) return undefined;
  const floats = (b: Buffer) =>
    new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  return rows.map((r) => {
    const values = floats(r.value_bytes);
    const counts = floats(r.count_bytes);
    return { sample: { values, counts, n: counts.reduce((a, c) => a + c, 0) }, missing: r.missing };
  });
}

async function cacheSides(db: Queryable, key: string, sides: readonly Side[]): Promise<void> {
  const bytes = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  await db.query(
    `insert into drift_sample_cache (sample_key, feature_index, value_bytes, count_bytes, missing)
     select $1, i::int - 1, v, c, m
       from unnest($2::bytea[], $3::bytea[], $4::float8[]) with ordinality as u(v, c, m, i)
     on conflict do nothing`,
    [
      key,
      sides.map((s) => bytes(s.sample.values)),
      sides.map((s) => bytes(s.sample.counts)),
      sides.map((s) => s.missing),
    ],
  );
}

/** The rows of a sample for scoring: feature vectors (missing as 0, as training saw them), labels. */
export async function loadRows(
  db: Queryable,
  ref: SampleRef,
  dim: number,
): Promise<{ n: number; x: Float32Array; labels: Float32Array; hasLabels: boolean }> {
  const { rows } = await db.query<{ vals: Array<number | null>; label: number | null }>(
    `select p.vals, p.label from pit_set_rows p
      where p.set_key = $1 and ($2::timestamptz is null or p.ts < $2::timestamptz)
      order by p.ts, p.row_id`,
    [ref.setKey, ref.before ?? null],
  );
  const x = new Float32Array(rows.length * dim);
  const labels = new Float32Array(rows.length);
  let hasLabels = rows.length > 0;
  rows.forEach((r, i) => {
    for (let k = 0; k < dim; k++) x[i * dim + k] = r.vals[k] ?? 0;
    if (r.label === null) hasLabels = false;
    labels[i] = r.label ?? 0;
  });
  return { n: rows.length, x, labels, hasLabels };
}

/** The bins frozen with a version, by feature. */
export async function frozenBins(
  db: Queryable,
  model: string,
  version: number,
): Promise<Map<string, Frozen>> {
  const { rows } = await db.query<{ feature: string; kind: Frozen['kind']; edges: number[] }>(
    'select feature, kind, edges from drift_bin_edges where model = $1 and version = $2',
    [model, version],
  );
  return new Map(rows.map((r) => [r.feature, { kind: r.kind, edges: r.edges }]));
}

/** Freezes bins for a version; ones frozen first (by a concurrent run) win. */
export async function freezeBins(
  db: Queryable,
  model: string,
  version: number,
  bins: ReadonlyArray<{ feature: string } & Frozen>,
): Promise<void> {
  if (bins.length === 0) return;
  await db.query(
    `insert into drift_bin_edges (model, version, feature, kind, edges)
     select $1, $2, b ->> 'feature', b ->> 'kind',
            array(select jsonb_array_elements_text(b -> 'edges')::float8)
       from jsonb_array_elements($3::jsonb) b
     on conflict (model, version, feature) do nothing`,
    [model, version, JSON.stringify(bins)],
  );
}

/** The stored monitor config of a model, or undefined. */
export async function getMonitor(db: Queryable, model: string): Promise<DriftConfig | undefined> {
  const { rows } = await db.query<{ config: unknown }>(
    'select config from drift_monitors where model = $1',
    [model],
  );
  return rows[0] ? driftConfigSchema.parse(rows[0].config) : undefined;
}

/** Every stored monitor. */
export async function listMonitors(
  db: Queryable,
): Promise<Array<{ model: string; config: DriftConfig; updatedBy: string; updatedAt: string }>> {
  const { rows } = await db.query<{
    model: string;
    config: unknown;
    updated_by: string;
    updated_at: Date;
  }>('select model, config, updated_by, updated_at from drift_monitors order by model');
  return rows.map((r) => ({
    model: r.model,
    config: driftConfigSchema.parse(r.config),
    updatedBy: r.updated_by,
    updatedAt: r.updated_at.toISOString(),
  }));
}

/** Stores (or replaces) a model's monitor config. */
export async function putMonitor(
  db: Queryable,
  model: string,
  config: DriftConfig,
  actor: string,
): Promise<void> {
  const exists = await db.query('select 1 from models where name = $1', [model]);
  if (!exists.rowCount) throw new InputError(`model ${JSON.stringify(model)} is not declared`);
  await db.query(
    `insert into drift_monitors (model, config, created_by, updated_by) values ($1, $2, $3, $3)
     on conflict (model) do update
        set config = excluded.config, updated_by = excluded.updated_by, updated_at = now()`,
    [model, JSON.stringify(config), actor],
  );
}
