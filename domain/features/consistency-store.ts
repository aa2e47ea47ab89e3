/**
 * The consistency check's SQL: open a check, compare a sample of one feature version's online
 * values with offline-at-now, close the check with its totals and audit row, and read a report.
 * Each write is keyed by the check's workflow and run id, so a retried step returns what it
 * recorded instead of sampling again.
 *
 * Both stores are read in one repeatable-read snapshot at one instant (the transaction's time),
 * so a backfill committing meanwhile cannot make them look apart.
 */
import type { Pool, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { appendAuditIn, auditKey } from '../audit.js';
import {
  CONSISTENCY_AUDIT_SUBJECT,
  type ConsistencyCheckResult,
  type FeatureCheckFigures,
} from './consistency.js';
import type { FeatureDefinition } from './definition.js';
import { type FeatureValue, offlineAt, type ValuesAt, valuesAt } from './online.js';
import type { FeatureRef } from './registry.js';
import { lockFeatureWrites } from './write-lock.js';

/** Floats agree within this share of the larger magnitude; ints and booleans must be equal. */
export const RELATIVE_TOLERANCE = 1e-9;

/** Whether two served values agree (see RELATIVE_TOLERANCE). */
export function sameValue(a: FeatureValue, b: FeatureValue): boolean {
  if (typeof a === 'number' && typeof b === 'number') {
    return a === b || Math.abs(a - b) <= RELATIVE_TOLERANCE * Math.max(Math.abs(a), Math.abs(b));
  }
  return a === b;
}

/** Which check a write belongs to. */
export interface CheckKey {
  workflowId: string;
  runId: string;
}

export interface CheckRequest extends CheckKey {
  features: FeatureRef[];
  sample: number;
  requestedBy: string;
  reason: string;
}

/** Records a check as running (a retry finds it there and changes nothing). */
export async function openCheck(db: Queryable, check: CheckRequest): Promise<void> {
  await db.query(
    `insert into feature_consistency_checks
       (workflow_id, run_id, features, sample, requested_by, reason)
     values ($1, $2, $3::jsonb, $4, $5, $6)
     on conflict (workflow_id, run_id) do nothing`,
    [
      check.workflowId,
      check.runId,
      JSON.stringify(check.features),
      check.sample,
      check.requestedBy,
      check.reason,
    ],
  );
}

interface Mismatch {
  entity_id: string;
  feature_window: string;
  online: FeatureValue;
  offline: FeatureValue;
  online_ts: string | null;
  offline_ts: string | null;
}

interface FiguresRow {
  compared_at: Date;
  checked: number;
  mismatches: number;
  mismatched_entities: number;
}

function figuresOf(row: FiguresRow): FeatureCheckFigures {
  return {
    checked: row.checked,
    mismatches: row.mismatches,
    mismatchedEntities: row.mismatched_entities,
    comparedAt: row.compared_at.toISOString(),
  };
}

/**
 * Samples up to `sample` entity keys of a feature version from the online store (the order is
 * seeded by the run id, so a retry of this run draws the same keys), reads each through valuesAt
 * and offlineAt at the same instant, and stores the figures and every differing window value.
 */
export async function compareSample(
  pool: Pool,
  f: FeatureDefinition,
  check: CheckKey & { sample: number },
): Promise<FeatureCheckFigures> {
  return withTransaction(pool, async (client) => {
    await client.query('set transaction isolation level repeatable read');
    // Mismatches name entities: the deletion's mismatches step waits for this write to commit
    // (write-lock.ts), so it deletes what a sample read before feature_online's step wrote.
    await lockFeatureWrites(client);
    const key = [check.workflowId, check.runId, f.name, f.version];
    const done = await client.query<FiguresRow>(
      `select compared_at, checked, mismatches, mismatched_entities
         from feature_consistency_results
        where workflow_id = $1 and run_id = $2 and name = $3 and version = $4`,
      key,
    );
    if (done.rows[0]) return figuresOf(done.rows[0]);

    const { rows: online } = await client.query<{
      at: Date;
      entity_id: string;
      ts: Date;
      vals: Array<number | null>;
    }>(
      `select now() as at, entity_id, ts, vals from feature_online
        where name = $1 and version = $2
        order by md5(entity_id || $3), entity_id
        limit $4`,
      [f.name, f.version, check.runId, check.sample],
    );
    const at = online[0]?.at ?? new Date();
    const offline = await offlineAt(
      client,
      f,
      online.map((r) => r.entity_id),
      at,
    );
    const mismatches = online.flatMap((row) => differences(f, row, offline.get(row.entity_id), at));
    const figures: FiguresRow = {
      compared_at: at,
      checked: online.length,
      mismatches: mismatches.length,
      mismatched_entities: new Set(mismatches.map((m) => m.entity_id)).size,
    };
    await client.query(
      `insert into feature_consistency_results
         (workflow_id, run_id, name, version, compared_at, checked, mismatches, mismatched_entities)
       values ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [...key, at, figures.checked, figures.mismatches, figures.mismatched_entities],
    );
    await client.query(
      `insert into feature_consistency_mismatches
         (workflow_id, run_id, name, version, entity_id, feature_window, online, offline,
          online_ts, offline_ts)
       select $1, $2, $3, $4, m.entity_id, m.feature_window, m.online, m.offline,
              m.online_ts, m.offline_ts
         from jsonb_to_recordset($5::jsonb) as m(entity_id text, feature_window text,
              online jsonb, offline jsonb, online_ts timestamptz, offline_ts timestamptz)`,
      [...key, JSON.stringify(mismatches)],
    );
    return figuresOf(figures);
  });
}

/** The window values of one sampled online row that offline-at-t does not agree with. */
function differences(
  f: FeatureDefinition,
  row: { entity_id: string; ts: Date; vals: Array<number | null> },
  offline: ValuesAt | undefined,
  at: Date,
): Mismatch[] {
  const online = valuesAt(f, row, at);
  const expected = offline ?? valuesAt(f, undefined, at);
  return f.windows.flatMap((w, i) => {
    const a = online.values[i] ?? null;
    const b = expected.values[i] ?? null;
    if (sameValue(a, b)) return [];
    return [
      {
        entity_id: row.entity_id,
        feature_window: w,
        online: a,
        offline: b,
        online_ts: online.ts?.toISOString() ?? null,
        offline_ts: expected.ts?.toISOString() ?? null,
      },
    ];
  });
}

/**
 * Closes a check: totals from its stored per-feature figures, and its audit row, in one
 * transaction; a retry returns the same result and writes nothing more.
 */
export async function closeCheck(
  pool: Pool,
  check: CheckRequest,
  now: Date,
): Promise<ConsistencyCheckResult> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<FiguresRow & { name: string; version: number }>(
      `select name, version, compared_at, checked, mismatches, mismatched_entities
         from feature_consistency_results
        where workflow_id = $1 and run_id = $2
        order by name, version`,
      [check.workflowId, check.runId],
    );
    const byFeature = Object.fromEntries(rows.map((r) => [`${r.name}@${r.version}`, figuresOf(r)]));
    const result: ConsistencyCheckResult = {
      checked: rows.reduce((n, r) => n + r.checked, 0),
      mismatches: rows.reduce((n, r) => n + r.mismatches, 0),
      byFeature,
    };
    await client.query(
      `update feature_consistency_checks
          set status = 'completed', checked = $3, mismatches = $4, finished_at = now()
        where workflow_id = $1 and run_id = $2 and status = 'running'`,
      [check.workflowId, check.runId, result.checked, result.mismatches],
    );
    const action = 'feature.consistency-checked';
    await appendAuditIn(
      client,
      {
        actor: check.requestedBy,
        action,
        subject: CONSISTENCY_AUDIT_SUBJECT,
        workflowId: check.workflowId,
        runId: check.runId,
        idempotencyKey: auditKey(check.workflowId, check.runId, action),
        inputs: { features: check.features, sample: check.sample, reason: check.reason },
        outputs: { ...result },
      },
      now,
    );
    return result;
  });
}

/** One differing window value, as reports show it. */
export interface MismatchView {
  feature: string;
  entityId: string;
  window: string;
  online: FeatureValue;
  offline: FeatureValue;
  onlineTs: string | null;
  offlineTs: string | null;
}

/** The differing values a check stored (up to `limit`), and how many there are in all. */
export async function checkMismatches(
  db: Queryable,
  check: CheckKey,
  limit = 1000,
): Promise<{ total: number; mismatches: MismatchView[] }> {
  const { rows } = await db.query<{
    total: number;
    feature: string;
    entity_id: string;
    feature_window: string;
    online: FeatureValue;
    offline: FeatureValue;
    online_ts: Date | null;
    offline_ts: Date | null;
  }>(
    `select count(*) over ()::int as total, name || '@' || version as feature, entity_id,
            feature_window, online, offline, online_ts, offline_ts
       from feature_consistency_mismatches
      where workflow_id = $1 and run_id = $2
      order by name, version, entity_id, feature_window
      limit $3`,
    [check.workflowId, check.runId, limit],
  );
  return {
    total: rows[0]?.total ?? 0,
    mismatches: rows.map((r) => ({
      feature: r.feature,
      entityId: r.entity_id,
      window: r.feature_window,
      online: r.online,
      offline: r.offline,
      onlineTs: r.online_ts?.toISOString() ?? null,
      offlineTs: r.offline_ts?.toISOString() ?? null,
    })),
  };
}
