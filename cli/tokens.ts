/**
 * `pops tokens create|list|revoke`: the API tokens and their roles (api/roles.ts). A token is
 * printed once when created; pops keeps its sha256. Creating and revoking are audited. Also the
 * first start's admin token (`bootstrapAdminToken`, called by `pops serve`).
 */
import { z } from 'zod';
import { type Pool, withTransaction } from '../common/db.js';
import { appendAuditIn } from '../domain/audit.js';
import {
  createToken,
  listTokens,
  revokeToken,
  ROLES,
  type Role,
  TokenInputError,
} from '../domain/privacy/tokens.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

const createArgs = z.object({
  role: z.enum(ROLES),
  name: z.string().trim().min(1).max(100),
  json: z.boolean().optional(),
});
const tokenIdSchema = z.string().regex(/^pt_[A-Za-z0-9_-]{8}$/, 'a token id such as pt_AbCd1234');

/** Creates a token and audits it (the audit names its id, role and name, never the token). */
export async function createAuditedToken(
  pool: Pool,
  input: { role: Role; name: string; actor: string },
): Promise<{ id: string; token: string; role: Role; name: string }> {
  return withTransaction(pool, async (client) => {
    const created = await createToken(client, { ...input, createdBy: input.actor });
    await appendAuditIn(client, {
      actor: input.actor,
      action: 'token.created',
      subject: `token/${created.id}`,
      inputs: { role: created.role, name: created.name },
    });
    return created;
  });
}

/**
 * On the first start (no admin token was ever made) creates one and returns the lines that show
 * it once; null when one exists or existed. The token goes to the terminal, never to the log.
 */
export async function bootstrapAdminToken(pool: Pool, apiUrl: string): Promise<string | null> {
  return withTransaction(pool, async (client) => {
    // Two first starts at once make one token: the second waits here, then finds it.
    await client.query('lock table api_tokens in share row exclusive mode');
    // Tokens that commands make for themselves (the demos' ephemeral ones) do not count: only an
    // admin token ever made does.
    const { rows } = await client.query<{ n: number }>(
      `select count(*)::int as n from api_tokens where role = 'admin'`,
    );
    if ((rows[0]?.n ?? 0) > 0) return null;
    const created = await createToken(client, {
      role: 'admin',
      name: 'first-admin',
      createdBy: 'pops',
    });
    await appendAuditIn(client, {
      actor: 'pops',
      action: 'token.created',
      subject: `token/${created.id}`,
      inputs: { role: 'admin', name: created.name, bootstrap: true },
    });
    return [
      '',
      'pops: first start: created an admin API token. It is shown only now (pops keeps its hash):',
      '',
      `  ${created.token}`,
      '',
      'Every API route but /healthz, Segment ingestion and unsubscribe needs a token, e.g.',
      `  curl -H 'Authorization: Bearer ${created.token}' ${apiUrl}/v1/models`,
      'Make tokens for people and services with: npx pops tokens create --role <role> --name <who>',
      `(roles: ${ROLES.join(', ')}); keep this one somewhere safe or revoke it once you have others.`,
      '',
    ].join('\n');
  });
}

/** `pops tokens create --role R --name N`: prints the token, the only time it is shown. */
export async function createTokenCommand(options: Record<string, unknown>) {
  const args = parseArgs(createArgs, options);
  const rt = await openDatabase();
  try {
    const created = await createAuditedToken(rt.pool, { ...args, actor: rt.config.POPS_ACTOR });
    print(Boolean(args.json), created, () =>
      [
        `token ${created.id} (role ${created.role}, name "${created.name}"; audited):`,
        `  ${created.token}`,
        'it is shown only now: pops keeps its sha256, not the token.',
        "send it as 'Authorization: Bearer <token>'",
      ].join('\n'),
    );
  } catch (err) {
    throw err instanceof TokenInputError ? new UsageError(err.message) : err;
  } finally {
    await rt.close();
  }
}

/** `pops tokens list`: ids, roles, names and state; never a token. */
export async function listTokensCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const tokens = await listTokens(rt.pool);
    print(Boolean(options.json), { tokens }, () =>
      tokens.length === 0
        ? 'no tokens (the first pops serve creates one; pops tokens create --role R --name N)'
        : table(
            ['id', 'role', 'name', 'created', 'by', 'state'],
            tokens.map((t) => [
              t.id,
              t.role,
              t.name,
              t.createdAt.toISOString().slice(0, 19),
              t.createdBy,
              t.revokedAt
                ? `revoked ${t.revokedAt.toISOString().slice(0, 19)} by ${t.revokedBy ?? '?'}`
                : 'active',
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

/** `pops tokens revoke <id>`: requests with that token are refused within a second. */
export async function revokeTokenCommand(id: string, options: { json?: boolean }) {
  const wanted = parseArgs(tokenIdSchema, id);
  const rt = await openDatabase();
  try {
    const state = await withTransaction(rt.pool, async (client) => {
      const result = await revokeToken(client, wanted, rt.config.POPS_ACTOR);
      if (result === 'revoked') {
        await appendAuditIn(client, {
          actor: rt.config.POPS_ACTOR,
          action: 'token.revoked',
          subject: `token/${wanted}`,
        });
      }
      return result;
    });
    if (state === 'unknown') throw new UsageError(`no token ${wanted} (pops tokens list)`);
    print(Boolean(options.json), { id: wanted, state }, () =>
      state === 'already'
        ? `token ${wanted} was already revoked`
        : `revoked token ${wanted} (audited)`,
    );
  } finally {
    await rt.close();
  }
}
