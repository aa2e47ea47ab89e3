/**
 * Retention: how long each table of person data keeps its rows (POPS_RETENTION, e.g.
 * `events=400d,exposures=90d,privacy_exports=30d`), and the batched deletion of older rows. Only
 * the tables below may have a policy: each names the time column a row's age is read from and
 * what goes with it (an event's attribution, an exposure's outcomes). The audit log and consent
 * history are never subject to retention (they are the record). Each batch commits with its count
 * in `retention_runs`, so a run retried after a crash adds to what it had deleted.
 */
import { z } from 'zod';
import { type Pool, withTransaction } from '../../common/db.js';

interface RetentionTable {
  column: string;
  /** Statements (before the delete) of rows that go with the doomed ones; `doomed` holds ids. */
  with?: string;
  id: string;
}

export const RETENTION_TABLES: Readonly<Record<string, RetentionTable>> = {
  events: {
    column: 'received_at',
    id: 'id',
    with: 'gone_ep as (delete from event_persons where event_id in (select id from doomed))',
  },
  exposures: {
    column: 'at',
    id: 'decision_id',
    with: 'gone_o as (delete from outcomes where decision_id in (select id from doomed))',
  },
  outcomes: { column: 'at', id: 'id' },
  quarantined_events: { column: 'received_at', id: 'id' },
  feature_values: { column: 'ts', id: 'ctid' },
  privacy_exports: { column: 'created_at', id: 'request_id' },
  privacy_dropped_messages: { column: 'day', id: 'ctid' },
};

export interface RetentionPolicy {
  table: string;
  keepDays: number;
}

const policySchema = z
  .string()
  .regex(/^[a-z_]+=[1-9][0-9]{0,5}d$/, 'table=<days>d, e.g. events=400d')
  .transform((text): RetentionPolicy => {
    const [table = '', days = ''] = text.split('=');
    return { table, keepDays: Number(days.slice(0, -1)) };
  })
  .refine((p) => p.table in RETENTION_TABLES, {
    message: `the table must be one of ${Object.keys(RETENTION_TABLES).join(', ')}`,
  });

/** Parses POPS_RETENTION (unset or empty: no policy). Errors name the variable and the entry. */
export function retentionPolicies(text: string | undefined): RetentionPolicy[] {
  if (!text?.trim()) return [];
  return text.split(',').map((entry) => {
    const parsed = policySchema.safeParse(entry.trim());
    if (!parsed.success) {
      const message = parsed.error.issues[0]?.message ?? 'is not table=<days>d';
      throw new Error(`POPS_RETENTION: "${entry.trim()}": ${message}`);
    }
    return parsed.data;
  });
}

/**
 * Deletes a table's rows older than `cutoff` in batches, each with its count added to the run's
 * row; returns the run's total for the table.
 */
export async function enforceTable(
  pool: Pool,
  input: { runKey: string; table: string; keepDays: number; cutoff: Date; batch?: number },
  onBatch: () => void = () => undefined,
): Promise<number> {
  const spec = RETENTION_TABLES[input.table];
  if (!spec) throw new Error(`no retention for table "${input.table}"`);
  const batch = input.batch ?? 10_000;
  for (;;) {
    const deleted = await withTransaction(pool, async (client) => {
      const extra = spec.with ? `, ${spec.with}` : '';
      const result = await client.query(
        `with doomed as (select ${spec.id} as id from ${input.table}
                          where ${spec.column} < $1 limit $2)${extra}
         delete from ${input.table} where ${spec.id} in (select id from doomed)`,
        [input.cutoff, batch],
      );
      const n = result.rowCount ?? 0;
      await client.query(
        `insert into retention_runs (run_key, table_name, keep_days, cutoff, deleted)
         values ($1, $2, $3, $4, $5)
         on conflict (run_key, table_name) do update
           set deleted = retention_runs.deleted + excluded.deleted, done_at = now()`,
        [input.runKey, input.table, input.keepDays, input.cutoff, n],
      );
      return n;
    });
    onBatch();
    if (deleted < batch) break;
  }
  const { rows } = await pool.query<{ deleted: number }>(
    'select deleted from retention_runs where run_key = $1 and table_name = $2',
    [input.runKey, input.table],
  );
  return rows[0]?.deleted ?? 0;
}
