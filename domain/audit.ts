/**
 * The append-only, hash-chained audit log. Each row's hash is sha256 over the previous row's hash
 * and a canonical JSON (RFC 8785) of the row, so editing, reordering or removing a row breaks the
 * chain at that row. Appends are serialized by an advisory lock; an idempotency key makes a retried
 * append return the row it already wrote.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from '../common/canonical-json.js';
import type { Pool, PoolClient, Queryable } from '../common/db.js';
import { withTransaction } from '../common/db.js';
import { plainText } from './names.js';

export const GENESIS_HASH = '0'.repeat(64);
const APPEND_LOCK = 0x706f7073; // 'pops'

export interface AuditEntry {
  actor: string;
  action: string;
  subject: string;
  workflowId?: string | null;
  runId?: string | null;
  idempotencyKey?: string | null;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

export interface AuditRow extends Required<AuditEntry> {
  seq: number;
  at: Date;
  prevHash: string;
  hash: string;
}

/** The hash of a row given the hash before it. */
export function auditHash(prevHash: string, row: Omit<AuditRow, 'prevHash' | 'hash'>): string {
  const canonical = canonicalJson({
    seq: row.seq,
    at: row.at.toISOString(),
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    workflowId: row.workflowId,
    runId: row.runId,
    idempotencyKey: row.idempotencyKey,
    inputs: row.inputs,
    outputs: row.outputs,
  });
  return createHash('sha256').update(prevHash).update(canonical).digest('hex');
}

/** JSON values as PostgreSQL's jsonb will give them back (undefined dropped, dates as strings). */
function asStoredJson(value: Record<string, unknown> | undefined): Record<string, unknown> {
  return JSON.parse(JSON.stringify(value ?? {})) as Record<string, unknown>;
}

interface DbRow {
  seq: number;
  at: Date;
  actor: string;
  action: string;
  subject: string;
  workflow_id: string | null;
  run_id: string | null;
  idempotency_key: string | null;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

function fromDb(row: DbRow): AuditRow {
  return {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    workflowId: row.workflow_id,
    runId: row.run_id,
    idempotencyKey: row.idempotency_key,
    inputs: row.inputs,
    outputs: row.outputs,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** Appends one row (or returns the row already written under the same idempotency key). */
/** The idempotency key of a workflow run's audit row for an action (and step): one row each. */
export function auditKey(workflowId: string, runId: string, action: string, step = ''): string {
  return `${workflowId}/${runId}/${action}/${step}`;
}

/** Appends one audit row in its own transaction; see appendAuditIn. */
export async function appendAudit(
  pool: Pool,
  entry: AuditEntry,
  now: Date = new Date(),
): Promise<AuditRow> {
  return withTransaction(pool, (client) => appendAuditIn(client, entry, now));
}

/**
 * appendAudit inside the caller's transaction, so that a change and its audit row commit together
 * or not at all. Takes the append lock until that transaction ends.
 */
export async function appendAuditIn(
  client: PoolClient,
  entry: AuditEntry,
  now: Date = new Date(),
): Promise<AuditRow> {
  await client.query('select pg_advisory_xact_lock($1::bigint)', [APPEND_LOCK]);
  if (entry.idempotencyKey) {
    const existing = await client.query<DbRow>(
      'select * from audit_log where idempotency_key = $1',
      [entry.idempotencyKey],
    );
    if (existing.rows[0]) return fromDb(existing.rows[0]);
  }
  const last = await client.query<{ seq: number; hash: string }>(
    'select seq, hash from audit_log order by seq desc limit 1',
  );
  const prevHash = last.rows[0]?.hash ?? GENESIS_HASH;
  const row = {
    seq: (last.rows[0]?.seq ?? 0) + 1,
    at: new Date(now.getTime()),
    actor: entry.actor,
    action: entry.action,
    subject: entry.subject,
    workflowId: entry.workflowId ?? null,
    runId: entry.runId ?? null,
    idempotencyKey: entry.idempotencyKey ?? null,
    inputs: asStoredJson(entry.inputs),
    outputs: asStoredJson(entry.outputs),
  };
  const hash = auditHash(prevHash, row);
  await client.query(
    `insert into audit_log (seq, at, actor, action, subject, workflow_id, run_id, idempotency_key,
         inputs, outputs, prev_hash, hash)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12)`,
    [
      row.seq,
      row.at,
      row.actor,
      row.action,
      row.subject,
      row.workflowId,
      row.runId,
      row.idempotencyKey,
      JSON.stringify(row.inputs),
      JSON.stringify(row.outputs),
      prevHash,
      hash,
    ],
  );
  return { ...row, prevHash, hash };
}

export type VerifyResult =
  | { ok: true; rows: number; lastHash: string }
  | { ok: false; rows: number; seq: number; reason: string };

/** Walks the chain in order and reports the first row whose link or hash does not match. */
export async function verifyAudit(db: Queryable, pageSize = 5000): Promise<VerifyResult> {
  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  let rows = 0;
  // The chain starts at 1: a row below it is not part of it, yet listings would show it.
  const before = await db.query<{ seq: string }>(
    'select seq::text from audit_log where seq < 1 order by seq limit 1',
  );
  const planted = before.rows[0]?.seq;
  if (planted !== undefined) {
    return { ok: false, rows, seq: Number(planted), reason: 'a row precedes the first (seq 1)' };
  }
  for (;;) {
    // Appends store a JavaScript Date (milliseconds) and hash it so: a finer part is an edit the
    // hash cannot see.
    const page = await db.query<DbRow & { sub_ms: boolean }>(
      `select *, at <> date_trunc('milliseconds', at) as sub_ms
         from audit_log where seq >= $1 order by seq limit $2`,
      [expectedSeq, pageSize],
    );
    for (const raw of page.rows) {
      const row = fromDb(raw);
      if (row.seq !== expectedSeq) {
        return { ok: false, rows, seq: expectedSeq, reason: `row ${expectedSeq} is missing` };
      }
      if (row.prevHash !== prevHash) {
        return {
          ok: false,
          rows,
          seq: row.seq,
          reason: 'prev_hash does not match the hash of the row before',
        };
      }
      if (auditHash(prevHash, row) !== row.hash) {
        return { ok: false, rows, seq: row.seq, reason: 'hash does not match the row contents' };
      }
      if (raw.sub_ms) {
        return { ok: false, rows, seq: row.seq, reason: 'at was changed below the millisecond' };
      }
      prevHash = row.hash;
      expectedSeq += 1;
      rows += 1;
    }
    if (page.rows.length < pageSize) return { ok: true, rows, lastHash: prevHash };
  }
}

/** The audit rows about one subject or one workflow, oldest first. */
export async function auditTrail(
  db: Queryable,
  filter: { subject?: string; workflowId?: string },
): Promise<AuditRow[]> {
  const result = await db.query<DbRow>(
    `select * from audit_log
      where ($1::text is null or subject = $1) and ($2::text is null or workflow_id = $2)
      order by seq`,
    [filter.subject ?? null, filter.workflowId ?? null],
  );
  return result.rows.map(fromDb);
}

// Free of NUL and lone surrogates, which PostgreSQL cannot compare (a 500 before).
const filterText = (max: number) => plainText(max).optional();
const instant = z
  .string()
  .refine((t) => !Number.isNaN(Date.parse(t)), 'is not an ISO-8601 instant')
  .transform((t) => new Date(t))
  .optional();

/**
 * What the audit log is searched by (the CLI's options and the API's query alike): exact actor,
 * subject and workflow id; an action exact or by prefix (`privacy.*`); a time range; and a page of
 * at most 1,000 rows, newest first, before a seq (for the next page).
 */
export const auditSearchSchema = z.strictObject({
  action: z
    .string()
    .trim()
    .regex(/^[a-z0-9_.-]{1,100}\*?$/, 'an action (privacy.person-deleted) or a prefix (privacy.*)')
    .optional(),
  actor: filterText(200),
  subject: filterText(500),
  workflowId: filterText(500),
  since: instant,
  until: instant,
  before: z.coerce.number().int().positive().optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export type AuditSearch = z.output<typeof auditSearchSchema>;

/** The rows that match, newest first (at most `limit`). */
export async function searchAudit(db: Queryable, search: AuditSearch): Promise<AuditRow[]> {
  const action = search.action ?? null;
  const prefix = action?.endsWith('*') ? action.slice(0, -1) : null;
  const result = await db.query<DbRow>(
    `select * from audit_log
      where ($1::text is null or action = $1)
        and ($2::text is null or starts_with(action, $2))
        and ($3::text is null or actor = $3)
        and ($4::text is null or subject = $4)
        and ($5::text is null or workflow_id = $5)
        and ($6::timestamptz is null or at >= $6)
        and ($7::timestamptz is null or at < $7)
        and ($8::bigint is null or seq < $8)
      order by seq desc
      limit $9`,
    [
      prefix === null ? action : null,
      prefix,
      search.actor ?? null,
      search.subject ?? null,
      search.workflowId ?? null,
      search.since ?? null,
      search.until ?? null,
      search.before ?? null,
      search.limit,
    ],
  );
  return result.rows.map(fromDb);
}

/** An anchor of the chain kept outside the database: the hash of row `seq` when it was taken. */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
  /** When the checkpoint was taken. */
  takenAt: string;
}

/** The latest row's seq and hash, as a checkpoint taken now (null for an empty log). */
export async function auditCheckpoint(
  db: Queryable,
  now = new Date(),
): Promise<AuditCheckpoint | null> {
  const { rows } = await db.query<{ seq: number; hash: string }>(
    'select seq, hash from audit_log order by seq desc limit 1',
  );
  const last = rows[0];
  return last ? { seq: last.seq, hash: last.hash, takenAt: now.toISOString() } : null;
}

/**
 * Checks the log against checkpoints kept elsewhere: each checkpoint's row must still be there
 * with the same hash. A log cut after a checkpoint (rows removed from its end, or the whole log
 * rebuilt) fails here even though the chain that is left is intact. Run after verifyAudit.
 */
export async function verifyCheckpoints(
  db: Queryable,
  checkpoints: readonly AuditCheckpoint[],
): Promise<{ ok: true; checked: number } | { ok: false; seq: number; reason: string }> {
  const { rows: tail } = await db.query<{ seq: number }>(
    'select coalesce(max(seq), 0)::bigint as seq from audit_log',
  );
  const last = tail[0]?.seq ?? 0;
  for (const checkpoint of checkpoints) {
    if (checkpoint.seq > last) {
      return {
        ok: false,
        seq: checkpoint.seq,
        reason:
          `the log ends at row ${last}, before row ${checkpoint.seq} of the checkpoint taken` +
          ` ${checkpoint.takenAt}: rows were removed from its end`,
      };
    }
    const { rows } = await db.query<{ hash: string }>('select hash from audit_log where seq = $1', [
      checkpoint.seq,
    ]);
    if (rows[0]?.hash !== checkpoint.hash) {
      return {
        ok: false,
        seq: checkpoint.seq,
        reason:
          `row ${checkpoint.seq} does not have the hash of the checkpoint taken` +
          ` ${checkpoint.takenAt}: the log was rewritten up to it`,
      };
    }
  }
  return { ok: true, checked: checkpoints.length };
}
