/**
 * API tokens: `pt_<8 characters>_<43 characters>`, random, shown once when created; only their
 * sha256 is stored (`api_tokens`). The first 11 characters are the token's id, not secret, by which
 * it is listed and revoked. A token has one role (api/roles.ts says what each role may call) and a
 * name, unique among live tokens, which is the actor that audit rows of its requests record.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Queryable } from '../../common/db.js';

/** The roles a token may have (api/roles.ts says what each may call). */
export const ROLES = ['admin', 'mlops', 'marketer', 'responder', 'auditor', 'ingest'] as const;
export type Role = (typeof ROLES)[number];

export interface TokenRow {
  id: string;
  role: Role;
  name: string;
  createdAt: Date;
  createdBy: string;
  revokedAt: Date | null;
  revokedBy: string | null;
}

/** Thrown for a role or name that cannot be a token's. */
export class TokenInputError extends Error {}

const TOKEN = /^pt_[A-Za-z0-9_-]{8}_[A-Za-z0-9_-]{43}$/;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function randomText(bytes: number, length: number): string {
  return randomBytes(bytes).toString('base64url').slice(0, length);
}

/** Creates a token; the returned `token` is the only time it exists outside its holder. */
export async function createToken(
  db: Queryable,
  input: { role: string; name: string; createdBy: string },
): Promise<{ id: string; token: string; role: Role; name: string }> {
  if (!(ROLES as readonly string[]).includes(input.role)) {
    throw new TokenInputError(`role "${input.role}": must be one of ${ROLES.join(', ')}`);
  }
  const name = input.name.trim();
  if (name.length === 0 || name.length > 100 || !/^[\p{L}\p{N}\p{P}\p{Zs}\p{S}]+$/u.test(name)) {
    throw new TokenInputError('name: must be 1 to 100 printable characters');
  }
  const id = `pt_${randomText(6, 8)}`;
  const token = `${id}_${randomText(32, 43)}`;
  // The name is the actor audit rows record, so it is given once ever (revoked tokens included);
  // the unique index api_tokens_name_once (migration 0027) decides a race between two inserts.
  const { rowCount } = await db.query(
    `insert into api_tokens (id, token_sha256, role, name, created_by)
     values ($1, $2, $3, $4, $5)
     on conflict (name) where not name_reused do nothing`,
    [id, sha256(token), input.role, name, input.createdBy],
  );
  if (rowCount === 0) {
    const { rows } = await db.query<{ live: boolean }>(
      'select bool_or(revoked_at is null) as live from api_tokens where name = $1',
      [name],
    );
    throw new TokenInputError(
      rows[0]?.live
        ? `name "${name}": a live token has it (names are never reused; pick another)`
        : `name "${name}": a revoked token had it (names are never reused, so that audit ` +
          'actors name one token; pick another)',
    );
  }
  return { id, token, role: input.role as Role, name };
}

/** The token's id, role and name when it is a live token; null otherwise (unknown or revoked). */
export async function authenticateToken(
  db: Queryable,
  presented: string,
): Promise<{ id: string; role: Role; name: string } | null> {
  if (!TOKEN.test(presented)) return null;
  const digest = sha256(presented);
  const { rows } = await db.query<{ id: string; role: Role; name: string; token_sha256: string }>(
    `select id, role, name, token_sha256 from api_tokens
      where id = $1 and revoked_at is null`,
    [presented.slice(0, 11)],
  );
  const row = rows[0];
  if (!row) return null;
  // The lookup is by id; the digest comparison is constant-time.
  const ok = timingSafeEqual(Buffer.from(row.token_sha256, 'hex'), Buffer.from(digest, 'hex'));
  return ok ? { id: row.id, role: row.role, name: row.name } : null;
}

/** Every token, newest first (never the token itself). */
export async function listTokens(db: Queryable): Promise<TokenRow[]> {
  const { rows } = await db.query<{
    id: string;
    role: Role;
    name: string;
    created_at: Date;
    created_by: string;
    revoked_at: Date | null;
    revoked_by: string | null;
  }>('select * from api_tokens order by created_at desc, id');
  return rows.map((r) => ({
    id: r.id,
    role: r.role,
    name: r.name,
    createdAt: r.created_at,
    createdBy: r.created_by,
    revokedAt: r.revoked_at,
    revokedBy: r.revoked_by,
  }));
}

/** Revokes a token by id; 'unknown' when there is none, 'already' when it was revoked before. */
export async function revokeToken(
  db: Queryable,
  id: string,
  by: string,
): Promise<'revoked' | 'already' | 'unknown'> {
  const { rows } = await db.query<{ revoked: boolean }>(
    `with prior as (select revoked_at is not null as already from api_tokens where id = $1),
     done as (update api_tokens set revoked_at = now(), revoked_by = $2
               where id = $1 and revoked_at is null returning 1)
     select (select already from prior) as revoked`,
    [id, by],
  );
  const already = rows[0]?.revoked;
  if (already === null || already === undefined) return 'unknown';
  return already ? 'already' : 'revoked';
}

/** How many live admin tokens exist (the first start creates one when there is none). */
export async function liveAdminTokens(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from api_tokens where role = 'admin' and revoked_at is null`,
  );
  return rows[0]?.n ?? 0;
}

/**
 * Runs `work` with a token of `role` that exists only while it runs (an in-process API called by
 * the same command, e.g. `pops simulate traffic --serve`); it is revoked afterwards, also on error.
 */
export async function withEphemeralToken<T>(
  db: Queryable,
  role: Role,
  name: string,
  work: (token: string) => Promise<T>,
): Promise<T> {
  // A name is never given twice: each run's token has its own.
  const created = await createToken(db, {
    role,
    name: `${name}-${randomText(6, 8)}`,
    createdBy: 'pops',
  });
  try {
    return await work(created.token);
  } finally {
    await revokeToken(db, created.id, 'pops');
  }
}
