/**
 * Segment write keys: the credential a sender puts in Basic auth (or in the body) to write events
 * into one source. A key is random, shown once, and stored as its sha256; its first characters are
 * a non-secret prefix that lists and revokes it. Creation and revocation are audited.
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Pool, Queryable } from '../common/db.js';
import { appendAudit } from '../domain/audit.js';

/** The name of an event source (events.source), as the CLI and the API accept it. */
export const sourceNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, 'letters, digits, dot, dash, underscore');

/** A write key's listing prefix: `wk_` and the key's next 8 characters. */
export const writeKeyPrefixSchema = z
  .string()
  .regex(/^wk_[A-Za-z0-9_-]{8}$/, 'wk_ and 8 letters, digits, dashes or underscores');

const PREFIX_LENGTH = 11;
const UNIQUE_VIOLATION = '23505';

/** A write key as listed: never the key itself. */
export interface WriteKeyInfo {
  prefix: string;
  source: string;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
  revokedBy: string | null;
}

/** What a key authenticates as: its prefix and the source it writes to. */
export interface WriteKeyIdentity {
  prefix: string;
  source: string;
}

/** The outcome of presenting a key: who it is, or why it is refused. */
export type Authentication =
  | { ok: true; key: WriteKeyIdentity }
  | { ok: false; reason: 'unknown' }
  | { ok: false; reason: 'revoked'; prefix: string };

interface WriteKeyRow {
  prefix: string;
  source: string;
  created_at: Date;
  created_by: string;
  revoked_at: Date | null;
  revoked_by: string | null;
}

function info(row: WriteKeyRow): WriteKeyInfo {
  return {
    prefix: row.prefix,
    source: row.source,
    createdAt: row.created_at.toISOString(),
    createdBy: row.created_by,
    revokedAt: row.revoked_at?.toISOString() ?? null,
    revokedBy: row.revoked_by,
  };
}

function sha256(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** A new random key: `wk_` and 43 base64url characters (256 bits). */
function newKey(): string {
  return `wk_${randomBytes(32).toString('base64url')}`;
}

/**
 * Creates a key for `source` and audits it; returns the key (the only time it exists in clear).
 * If the audit row cannot be written, the key is deleted again, so no key exists unaudited.
 */
export async function createWriteKey(
  pool: Pool,
  source: string,
  actor: string,
): Promise<{ key: string } & WriteKeyInfo> {
  const name = sourceNameSchema.parse(source);
  const { key, row } = await insertKey(pool, name, actor);
  try {
    await appendAudit(pool, {
      actor,
      action: 'write-key.created',
      subject: `write-key/${row.prefix}`,
      idempotencyKey: `write-key/${row.prefix}/created`,
      inputs: { source: name },
      outputs: { prefix: row.prefix },
    });
  } catch (err) {
    await pool.query('delete from write_keys where prefix = $1', [row.prefix]);
    throw err;
  }
  return { key, ...info(row) };
}

// Two keys sharing a 48-bit prefix are unlikely; if it happens, a fresh key is drawn.
async function insertKey(pool: Pool, source: string, actor: string) {
  for (let attempt = 1; ; attempt++) {
    const key = newKey();
    try {
      const { rows } = await pool.query<WriteKeyRow>(
        `insert into write_keys (prefix, key_sha256, source, created_by)
         values ($1, $2, $3, $4) returning *`,
        [key.slice(0, PREFIX_LENGTH), sha256(key), source, actor],
      );
      const row = rows[0];
      if (!row) throw new Error('write_keys insert returned no row');
      return { key, row };
    } catch (err) {
      if ((err as { code?: string }).code !== UNIQUE_VIOLATION || attempt >= 3) throw err;
    }
  }
}

/** Every key, oldest first, revoked ones included. */
export async function listWriteKeys(db: Queryable): Promise<WriteKeyInfo[]> {
  const { rows } = await db.query<WriteKeyRow>('select * from write_keys order by created_at');
  return rows.map(info);
}

/**
 * Revokes the key with `prefix` and audits it; undefined when no key has that prefix. Revoking a
 * revoked key changes nothing and writes its audit row only if an earlier attempt could not.
 */
export async function revokeWriteKey(
  pool: Pool,
  prefix: string,
  actor: string,
): Promise<(WriteKeyInfo & { alreadyRevoked: boolean }) | undefined> {
  const updated = await pool.query<WriteKeyRow>(
    `update write_keys set revoked_at = now(), revoked_by = $2
      where prefix = $1 and revoked_at is null returning *`,
    [prefix, actor],
  );
  const { rows } = updated.rows[0]
    ? updated
    : await pool.query<WriteKeyRow>('select * from write_keys where prefix = $1', [prefix]);
  const row = rows[0];
  if (!row) return undefined;
  await appendAudit(pool, {
    actor: row.revoked_by ?? actor,
    action: 'write-key.revoked',
    subject: `write-key/${row.prefix}`,
    idempotencyKey: `write-key/${row.prefix}/revoked`,
    inputs: { prefix: row.prefix },
    outputs: { source: row.source, revokedAt: row.revoked_at?.toISOString() ?? null },
  });
  return { ...info(row), alreadyRevoked: updated.rows.length === 0 };
}

/** Looks a presented key up by its hash. */
export async function authenticateWriteKey(db: Queryable, key: string): Promise<Authentication> {
  const { rows } = await db.query<{ prefix: string; source: string; revoked: boolean }>(
    `select prefix, source, revoked_at is not null as revoked
       from write_keys where key_sha256 = $1`,
    [sha256(key)],
  );
  const row = rows[0];
  if (!row) return { ok: false, reason: 'unknown' };
  if (row.revoked) return { ok: false, reason: 'revoked', prefix: row.prefix };
  return { ok: true, key: { prefix: row.prefix, source: row.source } };
}
