/**
 * Data subject requests as rows: opening one (its subject captured in the same transaction, so the
 * workflow's input is the request id alone and no identifier enters Temporal's history), each
 * step's ledger (a retried step returns the count it recorded), tombstones, the export bundle, and
 * the finish (audit row with counts and no personal data; the subject row deleted).
 *
 * A deletion's id is `delete-` and the first 24 hex characters of the identifier's keyed hash: a
 * second request for the same identifier is the same request, and one for any identifier of a
 * person deleted before (a tombstone) answers that deletion. An export's id is random: each
 * export is a new bundle.
 */
import { randomBytes } from 'node:crypto';
import { type Pool, type PoolClient, type Queryable, withTransaction } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { excludeFeatureWrites } from '../features/write-lock.js';
import { lockGraph } from '../identity/store.js';
import { open, SealError } from './fields.js';
import { identifierHash } from './keys.js';
import type { PersonTable } from './person-tables.js';
import type { IdentifierInput } from './pii.js';
import {
  captureSubject,
  deleteSubjectRows,
  personTables,
  requestIdentifier,
  storedSubject,
  subjectRows,
  widenSubject,
} from './subject.js';

export type RequestKind = 'delete' | 'export';

export interface PrivacyRequest {
  id: string;
  kind: RequestKind;
  status: 'pending' | 'running' | 'done';
  reason: string;
  requestedBy: string;
  counts: Record<string, number>;
  createdAt: Date;
  finishedAt: Date | null;
  /**
   * A finished request that found nothing of the identifier (no person, no event carrying it): a
   * deletion then only tombstoned it, an export is empty. Null until the request is done.
   */
  foundNothing: boolean | null;
}

/** Thrown for a step of an unknown request or table (a bug, or a request scrubbed already). */
export class RequestStateError extends Error {}

/**
 * Opens a request and captures its subject, or finds the open deletion of the same identifier.
 * Returns the request and whether this call created it.
 */
export async function openRequest(
  pool: Pool,
  input: { kind: RequestKind; identifier: IdentifierInput; reason: string; requestedBy: string },
): Promise<{ request: PrivacyRequest; created: boolean }> {
  const stored = requestIdentifier(input.identifier);
  const hash = identifierHash(stored);
  const suffix = input.kind === 'delete' ? hash.slice(0, 24) : randomBytes(12).toString('hex');
  const id = `${input.kind}-${suffix}`;
  return withTransaction(pool, async (client) => {
    if (input.kind === 'delete') {
      // Any identifier of a person deleted before names that deletion.
      const earlier = await client.query<{ request_id: string }>(
        'select request_id from privacy_tombstones where identifier_hash = $1',
        [hash],
      );
      const known = earlier.rows[0] && (await getRequest(client, earlier.rows[0].request_id));
      if (known) return { request: known, created: false };
    }
    const inserted = await client.query(
      `insert into privacy_requests (id, kind, identifier_hash, reason, requested_by)
       values ($1, $2, $3, $4, $5) on conflict (id) do nothing`,
      [id, input.kind, hash, input.reason, input.requestedBy],
    );
    const created = (inserted.rowCount ?? 0) > 0;
    if (created) {
      // The graph does not move while the subject is read.
      await lockGraph(client);
      await captureSubject(client, id, stored);
    }
    const request = await getRequest(client, id);
    if (!request) throw new RequestStateError(`request ${id} vanished`);
    return { request, created };
  });
}

/** A request by id. */
export async function getRequest(db: Queryable, id: string): Promise<PrivacyRequest | undefined> {
  const { rows } = await db.query<{
    id: string;
    kind: RequestKind;
    status: PrivacyRequest['status'];
    reason: string;
    requested_by: string;
    counts: Record<string, number>;
    created_at: Date;
    finished_at: Date | null;
  }>('select * from privacy_requests where id = $1', [id]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    id: r.id,
    kind: r.kind,
    status: r.status,
    reason: r.reason,
    requestedBy: r.requested_by,
    counts: r.counts,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
    foundNothing: r.status === 'done' ? foundNothing(r.counts) : null,
  };
}

/** Whether a request's counts hold nothing of the person (its own tombstones aside). */
function foundNothing(counts: Record<string, number>): boolean {
  return Object.entries(counts).every(([table, n]) => n === 0 || table === 'tombstones');
}

function tableNamed(name: string): PersonTable {
  const table = personTables().find((t) => t.table === name);
  if (!table) throw new RequestStateError(`no person table "${name}"`);
  return table;
}

/**
 * Runs a step once: a retry finds its ledger row and returns the recorded count. `work` runs in
 * the transaction that writes the ledger row, under the identity graph lock; `first` runs before
 * that lock is taken (a wait there does not hold up identity resolution).
 */
async function step(
  pool: Pool,
  requestId: string,
  name: string,
  work: (client: PoolClient) => Promise<number>,
  first?: (client: PoolClient) => Promise<void>,
): Promise<number> {
  return withTransaction(pool, async (client) => {
    if (first) await first(client);
    await lockGraph(client);
    const done = await client.query<{ rows: number }>(
      'select rows from privacy_request_steps where request_id = $1 and step = $2',
      [requestId, name],
    );
    if (done.rows[0]) return done.rows[0].rows;
    if (!(await storedSubject(client, requestId))) {
      throw new RequestStateError(`request ${requestId} has no subject (finished already?)`);
    }
    const rows = await work(client);
    await client.query(
      'insert into privacy_request_steps (request_id, step, rows) values ($1, $2, $3)',
      [requestId, name, rows],
    );
    return rows;
  });
}

/** Marks the request running; returns the tables its steps walk, in order. */
export async function startRequest(pool: Queryable, requestId: string): Promise<string[]> {
  const { rowCount } = await pool.query(
    `update privacy_requests set status = 'running' where id = $1 and status <> 'done'`,
    [requestId],
  );
  const request = await getRequest(pool, requestId);
  if (!request) throw new RequestStateError(`no privacy request ${requestId}`);
  if (rowCount === 0) return [];
  return personTables()
    .filter((t) => request.kind === 'delete' || t.exported !== false)
    .map((t) => t.table);
}

/** Writes the tombstones of the subject's identifiers (before any row goes). */
export function writeTombstones(pool: Pool, requestId: string): Promise<number> {
  return step(pool, requestId, 'tombstones', async (client) => {
    const result = await client.query(
      `insert into privacy_tombstones (identifier_hash, request_id)
       select h, $1 from privacy_subjects s, unnest(s.identifier_hashes) h
        where s.request_id = $1
       on conflict (identifier_hash) do nothing`,
      [requestId],
    );
    return result.rowCount ?? 0;
  });
}

/**
 * Widens the subject to what its identifiers reach now (widenSubject) and tombstones the
 * identifiers that adds; returns how many tombstones it wrote. Once per request.
 */
export function widenAndTombstone(pool: Pool, requestId: string): Promise<number> {
  return step(pool, requestId, 'widen', async (client) => {
    const added = await widenSubject(client, requestId);
    if (added.length === 0) return 0;
    const result = await client.query(
      `insert into privacy_tombstones (identifier_hash, request_id)
       select h, $1 from unnest($2::text[]) h
       on conflict (identifier_hash) do nothing`,
      [requestId, added],
    );
    return result.rowCount ?? 0;
  });
}

/**
 * Deletes one table's rows of the subject, once (`sweep`: a second time, once, as its own step:
 * see derivedBeforeEvents). A derived table's step first waits for the feature writes in flight
 * (domain/features/write-lock.ts): a write that read the person's rows before their step commits
 * before this one reads, and one that starts later no longer finds them.
 */
export function deleteTableRows(
  pool: Pool,
  requestId: string,
  table: string,
  options: { sweep?: boolean } = {},
): Promise<number> {
  const t = tableNamed(table);
  // The wait for the derived writes in flight comes before the graph lock: nothing that holds the
  // feature write lock takes the graph lock, and identity resolution goes on meanwhile.
  return step(
    pool,
    requestId,
    `${options.sweep ? 'sweep' : 'delete'}:${table}`,
    (client) => deleteSubjectRows(client, requestId, t),
    t.derived === undefined ? undefined : excludeFeatureWrites,
  );
}

/**
 * A row as the person should read it: a sealed address opened (under its row's person key). The
 * stored bundle keeps it sealed; it is opened only when the bundle is read.
 */
function readable(row: Record<string, unknown>): Record<string, unknown> {
  const sealed = row['email_sealed'];
  if (typeof sealed !== 'string') return row;
  const { email_sealed: _, key_id: __, ...rest } = row;
  try {
    return { ...rest, email: open(sealed, String(row['person_key'])) };
  } catch (err) {
    if (!(err instanceof SealError)) throw err;
    return { ...rest, email: null, unreadable: err.message };
  }
}

/** Adds one table's rows of the subject to the request's bundle, once. */
export function exportTableRows(pool: Pool, requestId: string, table: string): Promise<number> {
  return step(pool, requestId, `export:${table}`, async (client) => {
    const t = tableNamed(table);
    const rows = await subjectRows(client, requestId, t);
    await client.query(
      `insert into privacy_exports (request_id, identifier_hashes, bundle)
       select $1, s.identifier_hashes, '{}'::jsonb from privacy_subjects s where s.request_id = $1
       on conflict (request_id) do nothing`,
      [requestId],
    );
    await client.query(
      `update privacy_exports
          set bundle = jsonb_set(bundle, array[$2::text],
                                 coalesce(bundle -> $2, '{}'::jsonb)
                                   || jsonb_build_object($3::text, $4::jsonb))
        where request_id = $1`,
      [requestId, t.section, table, JSON.stringify(rows)],
    );
    return rows.length;
  });
}

/**
 * Finishes a request: records the counts, audits (ids, kind, reason, counts and the workflow that
 * ran it; no identifier), deletes the subject row, marks it done. Idempotent: a finished request
 * is left as it is.
 */
export async function finishRequest(
  pool: Pool,
  requestId: string,
  counts: Record<string, number>,
  workflowId?: string,
): Promise<void> {
  await withTransaction(pool, async (client) => {
    const request = await getRequest(client, requestId);
    if (!request) throw new RequestStateError(`no privacy request ${requestId}`);
    if (request.status === 'done') return;
    await appendAuditIn(client, {
      actor: request.requestedBy,
      action: request.kind === 'delete' ? 'privacy.person-deleted' : 'privacy.person-exported',
      subject: `privacy-request/${requestId}`,
      idempotencyKey: `privacy-request/${requestId}/finished`,
      workflowId: workflowId ?? null,
      inputs: { kind: request.kind, reason: request.reason },
      outputs: { counts },
    });
    await client.query('delete from privacy_subjects where request_id = $1', [requestId]);
    await client.query(
      `update privacy_requests set status = 'done', counts = $2, finished_at = now()
        where id = $1`,
      [requestId, JSON.stringify(counts)],
    );
  });
}

/** The bundle of a finished export, its sealed addresses opened (undefined when there is none). */
export async function exportBundle(
  db: Queryable,
  requestId: string,
): Promise<Record<string, unknown> | undefined> {
  const { rows } = await db.query<{ bundle: Record<string, Record<string, unknown[]>> }>(
    'select bundle from privacy_exports where request_id = $1',
    [requestId],
  );
  const bundle = rows[0]?.bundle;
  if (!bundle) return undefined;
  return Object.fromEntries(
    Object.entries(bundle).map(([section, tables]) => [
      section,
      Object.fromEntries(
        Object.entries(tables).map(([table, list]) => [
          table,
          Array.isArray(list) ? list.map((r) => readable(r as Record<string, unknown>)) : list,
        ]),
      ),
    ]),
  );
}

/** Whether any of these identifiers was deleted (its keyed hash is a tombstone). */
export async function tombstonedHashes(
  db: Queryable,
  hashes: readonly string[],
): Promise<Set<string>> {
  if (hashes.length === 0) return new Set();
  const { rows } = await db.query<{ identifier_hash: string }>(
    'select identifier_hash from privacy_tombstones where identifier_hash = any($1::text[])',
    [hashes],
  );
  return new Set(rows.map((r) => r.identifier_hash));
}
