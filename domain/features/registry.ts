/**
 * The feature registry in PostgreSQL. Registering is all or nothing and audited in the same
 * transaction. A (name, version) keeps its computation for ever: registering it again with another
 * computation is refused, naming the version to declare instead; owner, description and freshness
 * SLA may change in place.
 */
import { InputError } from '../../common/failures.js';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../common/canonical-json.js';
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { computationOf, type FeatureDefinition, sourceTables } from './definition.js';

/** Thrown when a version would change its computation; nothing of that registration is written. */
export class FeatureVersionConflict extends InputError {
  override name = 'FeatureVersionConflict';
}

export type Registration = 'created' | 'updated' | 'unchanged';

/** The sha256 of the canonical JSON of a definition's computation. */
export function computationSha256(f: FeatureDefinition): string {
  return createHash('sha256')
    .update(canonicalJson(computationOf(f)))
    .digest('hex');
}

/** Registers the definitions in one transaction; returns what happened to each, in order. */
export async function registerFeatures(
  pool: Pool,
  definitions: readonly FeatureDefinition[],
  actor: string,
): Promise<Array<{ name: string; version: number; registration: Registration }>> {
  return withTransaction(pool, async (client) => {
    const out = [];
    for (const f of definitions) {
      const registration = await registerOne(client, f, actor);
      out.push({ name: f.name, version: f.version, registration });
    }
    return out;
  });
}

async function registerOne(
  client: PoolClient,
  f: FeatureDefinition,
  actor: string,
): Promise<Registration> {
  const sha = computationSha256(f);
  const { rows } = await client.query<{ computation_sha256: string; definition: unknown }>(
    `select computation_sha256, definition from feature_versions
      where name = $1 and version = $2 for update`,
    [f.name, f.version],
  );
  const existing = rows[0];
  if (existing && existing.computation_sha256 !== sha) {
    const next = await nextVersion(client, f.name);
    throw new FeatureVersionConflict(
      `feature ${f.name} version ${f.version} is registered with another computation;` +
        ` a changed computation needs a new version (declare version ${next})`,
    );
  }
  if (existing && canonicalJson(existing.definition) === canonicalJson(f)) return 'unchanged';
  const registration: Registration = existing ? 'updated' : 'created';
  await client.query(
    `insert into feature_versions (name, version, entity, value_type, definition,
                                   computation_sha256, owner, description,
                                   freshness_sla_seconds, registered_by)
     values ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)
     on conflict (name, version) do update
        set definition = excluded.definition, owner = excluded.owner,
            description = excluded.description,
            freshness_sla_seconds = excluded.freshness_sla_seconds, updated_at = now()`,
    [
      f.name,
      f.version,
      f.entity,
      f.type,
      JSON.stringify(f),
      sha,
      f.owner,
      f.description,
      f.freshnessSla,
      actor,
    ],
  );
  await appendAuditIn(client, {
    actor,
    action: `feature.${registration}`,
    subject: `feature/${f.name}/${f.version}`,
    inputs: { definition: f },
    outputs: { computationSha256: sha },
  });
  return registration;
}

async function nextVersion(db: Queryable, name: string): Promise<number> {
  const { rows } = await db.query<{ next: number }>(
    'select coalesce(max(version), 0) + 1 as next from feature_versions where name = $1',
    [name],
  );
  return rows[0]?.next ?? 1;
}

/** One registered version, as `pops features show` and the API print it. */
export interface FeatureVersionView {
  name: string;
  version: number;
  definition: FeatureDefinition;
  computationSha256: string;
  registeredAt: string;
  registeredBy: string;
  updatedAt: string;
  lineage: Lineage;
}

/** Where a version's values come from and how current they are. */
export interface Lineage {
  sourceTables: string[];
  /** The last backfill that wrote a partition of this version, or null. */
  lastBackfill: { id: string; status: string; finishedAt: string | null } | null;
  /** The time of the newest snapshot (the midnight ending the last computed day), or null. */
  latestSnapshot: string | null;
  /** Days computed; of them warned and failed by quality checks. */
  partitions: { computed: number; warned: number; failed: number };
  /** `fresh`, `stale: <h> h behind (SLA <h> h)`, or `never backfilled`. */
  freshness: string;
}

interface LineageRow {
  name: string;
  version: number;
  backfill_id: string | null;
  backfill_status: string | null;
  backfill_finished_at: Date | null;
  latest_snapshot: Date | null;
  computed: number;
  warned: number;
  failed: number;
}

/** The lineage of each version (by `name@version`), read in one query. */
async function lineageOf(
  db: Queryable,
  versions: ReadonlyArray<{ name: string; version: number; definition: FeatureDefinition }>,
  now: Date,
): Promise<Map<string, Lineage>> {
  const { rows } = await db.query<LineageRow>(
    `select v.name, v.version, last.backfill_id, b.status as backfill_status,
            b.finished_at as backfill_finished_at,
            (p.latest_day + 1)::timestamp at time zone 'UTC' as latest_snapshot,
            coalesce(p.computed, 0)::int as computed, coalesce(p.warned, 0)::int as warned,
            coalesce(p.failed, 0)::int as failed
       from unnest($1::text[], $2::int[]) as v(name, version)
       left join lateral (
         select max(day) filter (where quality_status <> 'fail') as latest_day,
                count(*) filter (where quality_status <> 'fail') as computed,
                count(*) filter (where quality_status = 'warn') as warned,
                count(*) filter (where quality_status = 'fail') as failed
           from feature_partitions fp where fp.name = v.name and fp.version = v.version
       ) p on true
       left join lateral (
         select backfill_id from feature_partitions fp
          where fp.name = v.name and fp.version = v.version
          order by computed_at desc limit 1
       ) last on true
       left join feature_backfills b on b.id = last.backfill_id`,
    [versions.map((v) => v.name), versions.map((v) => v.version)],
  );
  const out = new Map<string, Lineage>();
  for (const r of rows) {
    const v = versions.find((x) => x.name === r.name && x.version === r.version);
    if (!v) continue;
    const sla = v.definition.freshnessSla;
    const behind = r.latest_snapshot ? (now.getTime() - r.latest_snapshot.getTime()) / 1000 : 0;
    const hours = (sec: number) =>
      sec > 2 * 86_400
        ? `${Math.round(sec / 86_400)} d`
        : `${Math.round((sec / 3600) * 10) / 10} h`;
    out.set(`${r.name}@${r.version}`, {
      sourceTables: sourceTables(v.definition),
      lastBackfill: r.backfill_id
        ? {
            id: r.backfill_id,
            status: r.backfill_status ?? 'unknown',
            finishedAt: r.backfill_finished_at?.toISOString() ?? null,
          }
        : null,
      latestSnapshot: r.latest_snapshot?.toISOString() ?? null,
      partitions: { computed: r.computed, warned: r.warned, failed: r.failed },
      freshness: !r.latest_snapshot
        ? 'never backfilled'
        : behind <= sla
          ? 'fresh'
          : `stale: ${hours(behind)} behind (SLA ${hours(sla)})`,
    });
  }
  return out;
}

/** Every feature with its latest version, how many versions it has, and that version's lineage. */
export async function listFeatures(db: Queryable, now: Date = new Date()) {
  const { rows } = await db.query<{
    name: string;
    latest: number;
    versions: number;
    entity: string;
    owner: string;
    definition: FeatureDefinition;
  }>(
    `select distinct on (name) name, version as latest, entity, owner, definition,
            count(*) over (partition by name)::int as versions
       from feature_versions order by name, version desc`,
  );
  const lineage = await lineageOf(
    db,
    rows.map((r) => ({ name: r.name, version: r.latest, definition: r.definition })),
    now,
  );
  return rows.map(({ definition: _definition, ...r }) => {
    const l = lineage.get(`${r.name}@${r.latest}`) as Lineage;
    return {
      ...r,
      sourceTables: l.sourceTables,
      lastBackfill: l.lastBackfill?.id ?? null,
      latestSnapshot: l.latestSnapshot,
      freshness: l.freshness,
    };
  });
}

/** The versions of a feature (or one of them), newest first; [] when it is not registered. */
export async function showFeature(
  db: Queryable,
  name: string,
  version?: number,
  now: Date = new Date(),
): Promise<FeatureVersionView[]> {
  const { rows } = await db.query<{
    name: string;
    version: number;
    definition: FeatureDefinition;
    computation_sha256: string;
    registered_at: Date;
    registered_by: string;
    updated_at: Date;
  }>(
    `select name, version, definition, computation_sha256, registered_at, registered_by, updated_at
       from feature_versions
      where name = $1 and ($2::int is null or version = $2)
      order by version desc`,
    [name, version ?? null],
  );
  const lineage = await lineageOf(db, rows, now);
  return rows.map((r) => ({
    name: r.name,
    version: r.version,
    definition: r.definition,
    computationSha256: r.computation_sha256,
    registeredAt: r.registered_at.toISOString(),
    registeredBy: r.registered_by,
    updatedAt: r.updated_at.toISOString(),
    lineage: lineage.get(`${r.name}@${r.version}`) as Lineage,
  }));
}

/** A feature version: `name@version`, or `name` for the latest registered version. */
export interface FeatureRef {
  name: string;
  version: number;
}

/** Parses `name@3` (or `name`, version left out). */
export function parseFeatureRef(text: string): { name: string; version?: number } {
  const m = /^([a-z][a-z0-9_]{0,62})(?:@([1-9][0-9]{0,6}))?$/.exec(text);
  if (!m) {
    throw new InputError(
      `feature ${JSON.stringify(text)} is not a feature reference (name or name@version)`,
    );
  }
  return m[2] ? { name: m[1] as string, version: Number(m[2]) } : { name: m[1] as string };
}

/**
 * The stored definitions of the referenced versions (the latest where a version is left out), in
 * the order asked; an InputError names every reference that is not registered.
 */
export async function loadDefinitions(
  db: Queryable,
  refs: ReadonlyArray<{ name: string; version?: number }>,
): Promise<FeatureDefinition[]> {
  const { rows } = await db.query<{ name: string; version: number; definition: FeatureDefinition }>(
    `select distinct on (r.i) r.i::int as i, v.name, v.version, v.definition
       from unnest($1::text[], $2::int[]) with ordinality as r(name, version, i)
       join feature_versions v on v.name = r.name and (r.version is null or v.version = r.version)
      order by r.i, v.version desc`,
    [refs.map((r) => r.name), refs.map((r) => r.version ?? null)],
  );
  const found = new Map(rows.map((r) => [Number((r as { i?: number }).i), r]));
  const missing = refs
    .map((r, i) => (found.has(i + 1) ? null : r.version ? `${r.name}@${r.version}` : r.name))
    .filter((m): m is string => m !== null);
  if (missing.length > 0) {
    throw new InputError(
      `feature ${missing.map((m) => JSON.stringify(m)).join(', ')} is not registered` +
        ' (pops features list shows what is; pops features register <file> adds)',
    );
  }
  return refs.map((_, i) => (found.get(i + 1) as { definition: FeatureDefinition }).definition);
}
