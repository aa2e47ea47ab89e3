/**
 * Retention: how long each table of person data keeps its rows (POPS_RETENTION, e.g.
 * `events=400d,exposures=90d,privacy_exports=30d`), and the batched deletion of older rows. Only
 * the tables below may have a policy: each names the time column a row's age is read from and
 * what goes with it (an event's attribution, an exposure's outcomes). The audit log and consent
 * history are never subject to retention (they are the record). Each batch commits with its count
 * in `retention_runs`, so a run retried after a crash adds to what it had deleted.
 *
 * Training and drift sets: a training example and the point-in-time row it was built from are
 * one label row, aged by the label's event time (`ts`), and go together whichever of
 * `training_examples` and `pit_set_rows` has the policy. The set itself stays, with the counts it
 * was built with (what its model version trained on); the same batch adds what went to the set's
 * `pruned_*` columns and sets `pruned_at` (migration 0023), so the rows left are the built count
 * minus the pruned one and a pruned set is known not to be whole.
 */
import { z } from 'zod';
import { type Pool, withTransaction } from '../../common/db.js';
import { InputError } from '../../common/failures.js';

interface RetentionTable {
  column: string;
  /** Statements (before the delete) of rows that go with the doomed ones; `doomed` holds ids. */
  with?: string;
  /** Statements (after the delete) that read `gone`: the deleted rows' `returning` columns. */
  after?: string;
  /** The columns of the deleted rows that `after` reads (none: they are only counted). */
  returning?: string;
  id: string;
}

/**
 * Adds the training examples in `examples` (set_key, split) to their sets' pruned counts (also
 * used by a privacy deletion, domain/privacy/subject.ts).
 */
export const markTrainingSets = (examples: string) => `marked_ts as (
  update training_sets s
     set pruned_train_rows = s.pruned_train_rows + g.train,
         pruned_validate_rows = s.pruned_validate_rows + g.validate, pruned_at = now()
    from (select set_key, count(*) filter (where split = 'train')::int as train,
                 count(*) filter (where split = 'validate')::int as validate
            from ${examples} group by set_key) g
   where s.set_key = g.set_key)`;

/** Adds the point-in-time rows in `rows` (set_key) to their drift sets' pruned counts. */
export const markDriftSets = (rows: string) => `marked_ds as (
  update drift_sets d set pruned_rows = d.pruned_rows + g.n, pruned_at = now()
    from (select set_key, count(*)::int as n from ${rows} group by set_key) g
   where d.set_key = g.set_key)`;

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
  // The label row's event time; its point-in-time row goes with it, and its set counts it.
  training_examples: {
    column: 'ts',
    id: 'ctid',
    returning: 'set_key, event_id, split',
    after: `gone_pit as (delete from pit_set_rows p using gone g
                          where p.set_key = g.set_key and p.row_id = g.event_id),
            ${markTrainingSets('gone')}`,
  },
  // Rows of training sets (the example built from the row goes with it) and of drift sets.
  pit_set_rows: {
    column: 'ts',
    id: 'ctid',
    returning: 'set_key, row_id',
    after: `gone_te as (delete from training_examples t using gone g
                         where t.set_key = g.set_key and t.event_id = g.row_id
                         returning t.set_key, t.split),
            ${markTrainingSets('gone_te')},
            ${markDriftSets('gone')}`,
  },
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
      throw new InputError(`POPS_RETENTION: "${entry.trim()}": ${message}`);
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
      const before = spec.with ? `, ${spec.with}` : '';
      const after = spec.after ? `, ${spec.after}` : '';
      const result = await client.query<{ n: number }>(
        `with doomed as (select ${spec.id} as id from ${input.table}
                          where ${spec.column} < $1 limit $2)${before},
              gone as (delete from ${input.table} where ${spec.id} in (select id from doomed)
                       returning ${spec.returning ?? '1'})${after}
         select count(*)::int as n from gone`,
        [input.cutoff, batch],
      );
      const n = result.rows[0]?.n ?? 0;
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
