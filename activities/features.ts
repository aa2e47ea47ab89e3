/**
 * Backfill activities: plan a run, write the tiles of a partition, write its snapshots (with
 * quality checks and the online store), and close the run. Each partition writes by
 * delete-and-insert in one transaction, so a retry, or a second run of the same range, leaves the store as one run would.
 */
import { type PoolClient, type Queryable, withTransaction } from '../common/db.js';
import { FAILURE_TYPES, failure, InputError } from '../common/failures.js';
import { appendAuditIn, auditKey } from '../domain/audit.js';
import type {
  BackfillResult,
  MaterializePlan,
  PartitionUnit,
} from '../domain/features/backfill.js';
import type { FeatureDefinition } from '../domain/features/definition.js';
import {
  addDays,
  type QualityBreach,
  qualityBreaches,
  snapshotTime,
  tilesNeededFrom,
  writeSnapshots,
  writeTiles,
} from '../domain/features/materialize.js';
import { publishOnline } from '../domain/features/online.js';
import { type FeatureRef, loadDefinitions } from '../domain/features/registry.js';
import { sourceRowsSql } from '../domain/features/source.js';
import { lockFeatureWrites } from '../domain/features/write-lock.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';

export interface PlanBackfillInput {
  backfillId: string;
  features: FeatureRef[];
  from: string;
  to: string;
  partition: PartitionUnit;
  tilesFrom?: string;
  requestedBy: string;
  reason: string;
}

export interface PartitionInput {
  backfillId: string;
  features: FeatureRef[];
  from: string;
  to: string;
  /** The backfill's first partition: its first day holds every entity (see writeSnapshots). */
  base?: boolean;
}

/** The first day of the source rows of f before `until` (null: none). */
async function firstSourceDay(db: Queryable, f: FeatureDefinition, until: string) {
  const rows = sourceRowsSql(f, {
    from: `'-infinity'::timestamptz`,
    until: `(${`$1::date`})::timestamp at time zone 'UTC'`,
  });
  const { rows: found } = await db.query<{ day: string | null }>(
    `select to_char(min(r.ts) at time zone 'UTC', 'YYYY-MM-DD') as day from (${rows}) r`,
    [until],
  );
  return found[0]?.day ?? null;
}

/** Thrown inside a partition's transaction to roll it back when a `fail` quality check breached. */
class QualityBreached extends Error {}

/**
 * Takes the transaction-scoped locks of the (feature version, day) pairs a partition writes, in
 * one sorted order, so two runs writing the same day (a backfill beside a scheduled incremental
 * step, or a retraining's) take turns instead of colliding on its keys; partitions of different
 * days still run side by side.
 */
async function lockDays(
  client: PoolClient,
  table: 'tiles' | 'values',
  definitions: readonly FeatureDefinition[],
  from: string,
  to: string,
): Promise<void> {
  const keys: string[] = [];
  for (const f of definitions) {
    for (let day = from; day <= to; day = addDays(day, 1)) {
      keys.push(`pops/${table}/${f.name}@${f.version}/${day}`);
    }
  }
  await client.query(
    `select count(pg_advisory_xact_lock(hashtext(k)))
       from (select k from unnest($1::text[]) as k order by k) sorted`,
    [keys],
  );
}

/**
 * Runs `work` in one transaction, heartbeating while it runs, under the feature write lock
 * (shared): a deletion's feature step waits for it, so none leaves rows computed from the
 * person's events behind (domain/features/write-lock.ts).
 */
function partitionTransaction<T>(deps: ActivityDeps, work: (c: PoolClient) => Promise<T>) {
  return withHeartbeat(() =>
    withTransaction(deps.pool, async (client) => {
      await lockFeatureWrites(client);
      return work(client);
    }),
  );
}

/** Builds the backfill activities. */
export function featureActivities(deps: ActivityDeps) {
  const { pool, log, clock } = deps;
  return {
    /**
     * Checks the features exist and records the run; returns the first day whose tiles the
     * snapshots need (as far back as the longest window reaches, or the first source row for
     * `lifetime`, unless the input says).
     */
    async planBackfill(input: PlanBackfillInput): Promise<{ tilesFrom: string }> {
      let definitions: FeatureDefinition[];
      try {
        definitions = await loadDefinitions(pool, input.features);
      } catch (err) {
        if (err instanceof InputError) throw failure(FAILURE_TYPES.notFound, err.message);
        throw err;
      }
      let tilesFrom = input.tilesFrom ?? input.from;
      if (!input.tilesFrom) {
        for (const f of definitions) {
          const needed =
            tilesNeededFrom(f, input.from) ?? (await firstSourceDay(pool, f, input.from));
          if (needed && needed < tilesFrom) tilesFrom = needed;
        }
      }
      const { workflowId, runId } = callerWorkflow();
      await withTransaction(pool, async (client) => {
        await client.query(
          `insert into feature_backfills
             (id, features, from_day, to_day, partition_unit, requested_by, reason)
           values ($1, $2::jsonb, $3, $4, $5, $6, $7)
           on conflict (id) do update
              set status = 'running', finished_at = null, started_at = now(),
                  requested_by = excluded.requested_by, reason = excluded.reason`,
          [
            input.backfillId,
            JSON.stringify(input.features),
            input.from,
            input.to,
            input.partition,
            input.requestedBy,
            input.reason,
          ],
        );
        await appendAuditIn(
          client,
          {
            actor: input.requestedBy,
            action: 'backfill.started',
            subject: input.backfillId,
            workflowId,
            runId,
            idempotencyKey: auditKey(workflowId, runId, 'backfill.started'),
            inputs: { ...input, tilesFrom },
          },
          clock(),
        );
      });
      return { tilesFrom };
    },

    /** Rewrites the tiles of every feature for the partition's days; returns the rows written. */
    async backfillTiles(input: PartitionInput): Promise<{ tileRows: number }> {
      const definitions = await loadDefinitions(pool, input.features);
      const tileRows = await partitionTransaction(deps, async (client) => {
        await lockDays(client, 'tiles', definitions, input.from, input.to);
        let n = 0;
        for (const f of definitions) n += await writeTiles(client, f, input.from, input.to);
        return n;
      });
      return { tileRows };
    },

    /**
     * Rewrites the snapshots of every feature for the partition's days, checks their quality,
     * records the partitions and publishes the latest values online, in one transaction. A breach
     * under a `fail` policy writes nothing but the partition's mark and its audit row, and fails
     * (QualityCheckFailure); under `warn` the partition is written, marked and audited.
     */
    async backfillSnapshots(
      input: PartitionInput,
    ): Promise<{ valueRows: number; warnings: number }> {
      const definitions = await loadDefinitions(pool, input.features);
      const { workflowId, runId } = callerWorkflow();
      const breached: Array<{ f: FeatureDefinition; breaches: QualityBreach[] }> = [];
      const outcome = await partitionTransaction(deps, async (client) => {
        await lockDays(client, 'values', definitions, input.from, input.to);
        let valueRows = 0;
        const warned: Array<{ f: FeatureDefinition; breaches: QualityBreach[] }> = [];
        for (const f of definitions) {
          const days = await writeSnapshots(client, f, input.from, input.to, {
            base: input.base ?? false,
          });
          const breaches = days.flatMap((d) => qualityBreaches(f, d));
          if (breaches.length > 0) {
            (f.quality?.policy === 'fail' ? breached : warned).push({ f, breaches });
          }
          if (breached.length > 0) continue;
          for (const d of days) {
            valueRows += d.valueRows;
            const mine = breaches.filter((b) => b.day === d.day);
            await client.query(
              `insert into feature_partitions
                 (name, version, day, backfill_id, tile_rows, value_rows, quality, quality_status)
               values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
               on conflict (name, version, day) do update
                  set backfill_id = excluded.backfill_id, tile_rows = excluded.tile_rows,
                      value_rows = excluded.value_rows, quality = excluded.quality,
                      quality_status = excluded.quality_status, computed_at = now()`,
              [
                f.name,
                f.version,
                d.day,
                input.backfillId,
                d.tileRows,
                d.valueRows,
                JSON.stringify({ ...d, breaches: mine }),
                mine.length > 0 ? 'warn' : 'ok',
              ],
            );
          }
          await publishOnline(client, f, {
            fromTs: new Date(snapshotTime(input.from)),
            untilTs: new Date(snapshotTime(input.to)),
          });
        }
        // Throwing rolls the partition's writes back.
        if (breached.length > 0) throw new QualityBreached();
        for (const { f, breaches } of warned) {
          await appendAuditIn(
            client,
            qualityAudit(f, breaches, input, workflowId, runId, 'feature.quality.warned'),
            clock(),
          );
        }
        return { valueRows, warnings: warned.reduce((n, w) => n + w.breaches.length, 0) };
      }).catch((err: unknown) => {
        if (err instanceof QualityBreached) return null;
        throw err;
      });
      if (outcome) return outcome;
      // Rolled back: record the failed partitions and why, then fail the run.
      await withTransaction(pool, async (client) => {
        for (const { f, breaches } of breached) {
          for (const day of new Set(breaches.map((b) => b.day))) {
            await client.query(
              `insert into feature_partitions
                 (name, version, day, backfill_id, tile_rows, value_rows, quality, quality_status)
               values ($1, $2, $3, $4, 0, 0, $5::jsonb, 'fail')
               on conflict (name, version, day) do update
                  set backfill_id = excluded.backfill_id, quality = excluded.quality,
                      quality_status = 'fail', computed_at = now()`,
              [
                f.name,
                f.version,
                day,
                input.backfillId,
                JSON.stringify({ breaches: breaches.filter((b) => b.day === day) }),
              ],
            );
          }
          await appendAuditIn(
            client,
            qualityAudit(f, breaches, input, workflowId, runId, 'feature.quality.failed'),
            clock(),
          );
        }
      });
      const first = breached[0] as { f: FeatureDefinition; breaches: QualityBreach[] };
      const b = first.breaches[0] as QualityBreach;
      log.warn({ backfillId: input.backfillId, breaches: breached }, 'quality check failed');
      throw failure(
        FAILURE_TYPES.qualityCheck,
        `feature ${first.f.name}@${first.f.version} failed its quality check on ${b.day}:` +
          ` ${b.check}${b.window ? ` of window ${b.window}` : ''} is ${b.observed},` +
          ` the limit is ${b.limit}; the partition ${input.from}..${input.to} was not written` +
          ' (pops backfill status shows every breach)',
        { breaches: breached.map((x) => ({ feature: x.f.name, breaches: x.breaches })) },
      );
    },

    /** Closes the run's record and audits its outcome. */
    async finishBackfill(input: {
      backfillId: string;
      requestedBy: string;
      status: 'completed' | 'failed';
      result: BackfillResult | { error: string };
    }): Promise<void> {
      const { workflowId, runId } = callerWorkflow();
      await withTransaction(pool, async (client) => {
        await client.query(
          `update feature_backfills set status = $2, finished_at = now() where id = $1`,
          [input.backfillId, input.status],
        );
        await appendAuditIn(
          client,
          {
            actor: input.requestedBy,
            action: `backfill.${input.status}`,
            subject: input.backfillId,
            workflowId,
            runId,
            idempotencyKey: auditKey(workflowId, runId, `backfill.${input.status}`),
            outputs: input.result as unknown as Record<string, unknown>,
          },
          clock(),
        );
      });
    },
  };
}

function qualityAudit(
  f: FeatureDefinition,
  breaches: QualityBreach[],
  input: PartitionInput,
  workflowId: string,
  runId: string,
  action: string,
) {
  return {
    actor: 'pops',
    action,
    subject: `feature/${f.name}/${f.version}`,
    workflowId,
    runId,
    idempotencyKey: auditKey(workflowId, runId, action, `${f.name}@${f.version}/${input.from}`),
    inputs: { backfillId: input.backfillId, from: input.from, to: input.to, quality: f.quality },
    outputs: { breaches },
  };
}

/**
 * How far events count as taken in: `now`, or, once identities are merged at all, just before the
 * arrival of the first event the identity merge has not resolved yet. Such an event is keyed
 * `unresolved:<id>` today; the next step after the merge finds it again and re-computes its day
 * under its person.
 */
async function resolvedThrough(db: Queryable, now: Date): Promise<Date> {
  const { rows } = await db.query<{ first: Date | null }>(
    `select min(e.received_at) as first
       from identity_watermarks w join events e on e.id > w.last_event_id
      where w.name = 'events' and w.last_event_id > 0`,
  );
  const first = rows[0]?.first;
  return first && first.getTime() - 1 < now.getTime() ? new Date(first.getTime() - 1) : now;
}

/** The latest version of every registered feature. */
async function latestDefinitions(db: Queryable): Promise<FeatureDefinition[]> {
  const { rows } = await db.query<{ definition: FeatureDefinition }>(
    `select distinct on (name) definition from feature_versions order by name, version desc`,
  );
  return rows.map((r) => r.definition);
}

/** The earliest day (UTC) of source events of f received after `since`, or null. */
async function earliestLateDay(db: Queryable, f: FeatureDefinition, since: Date) {
  if (!('events' in f.source)) return null;
  const { rows } = await db.query<{ day: string | null }>(
    `select to_char(min(e.ts) at time zone 'UTC', 'YYYY-MM-DD') as day
       from events e
      where e.received_at > $1 and e.type = 'track' and e.event = $2
        and ($3::text is null or e.source = $3)`,
    [since, f.source.events.event, f.source.events.source ?? null],
  );
  return rows[0]?.day ?? null;
}

/** Builds the incremental materialization activities. */
export function materializationActivities({ pool, clock }: ActivityDeps) {
  return {
    /** Which days the next incremental run computes; see MaterializePlan. */
    async planMaterialization(input: {
      features: FeatureRef[] | 'all';
      latenessSeconds: number;
      receivedOverlapSeconds: number;
    }): Promise<MaterializePlan> {
      const definitions =
        input.features === 'all'
          ? await latestDefinitions(pool)
          : await loadDefinitions(pool, input.features);
      const features = definitions.map((f) => ({ name: f.name, version: f.version }));
      const now = clock();
      const watermark = new Date(now.getTime() - input.latenessSeconds * 1000);
      const closedThrough = addDays(watermark.toISOString().slice(0, 10), -1);
      let from: string | null = null;
      let lateFrom: string | null = null;
      let fresh = false;
      for (const f of definitions) {
        const { rows } = await pool.query<{ received_through: Date; closed_through: string }>(
          `select received_through, to_char(closed_through, 'YYYY-MM-DD') as closed_through
             from feature_materializations where name = $1 and version = $2`,
          [f.name, f.version],
        );
        const state = rows[0];
        let start: string | null;
        if (!state) {
          fresh = true;
          start = await firstSourceDay(pool, f, addDays(closedThrough, 1));
        } else {
          const since = new Date(
            state.received_through.getTime() - input.receivedOverlapSeconds * 1000,
          );
          const late = await earliestLateDay(pool, f, since);
          if (late && late <= state.closed_through && (!lateFrom || late < lateFrom)) {
            lateFrom = late;
          }
          const next = addDays(state.closed_through, 1);
          start = late && late < next ? late : next;
        }
        if (start && (!from || start < from)) from = start;
      }
      const range =
        from && from <= closedThrough
          ? { from, to: closedThrough, ...(fresh ? {} : { tilesFrom: from }) }
          : null;
      return {
        features,
        range,
        receivedThrough: (await resolvedThrough(pool, now)).toISOString(),
        closedThrough,
        lateFrom,
      };
    },

    /** Records how far the features are materialized, and audits the run. */
    async commitMaterialization(input: {
      plan: MaterializePlan;
      requestedBy: string;
      backfill: BackfillResult | null;
    }): Promise<void> {
      const { workflowId, runId } = callerWorkflow();
      await withTransaction(pool, async (client) => {
        for (const f of input.plan.features) {
          await client.query(
            `insert into feature_materializations (name, version, received_through, closed_through)
             values ($1, $2, $3, $4)
             on conflict (name, version) do update
                set received_through = greatest(feature_materializations.received_through,
                                                excluded.received_through),
                    closed_through = greatest(feature_materializations.closed_through,
                                              excluded.closed_through),
                    updated_at = now()`,
            [f.name, f.version, input.plan.receivedThrough, input.plan.closedThrough],
          );
        }
        await appendAuditIn(
          client,
          {
            actor: input.requestedBy,
            action: 'features.materialized',
            subject: workflowId,
            workflowId,
            runId,
            idempotencyKey: auditKey(workflowId, runId, 'features.materialized'),
            inputs: { plan: input.plan },
            outputs: { backfill: input.backfill },
          },
          clock(),
        );
      });
    },
  };
}
