import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registeredRoutes } from '../api/auth.js';
import { allows, isPublic, ROLES, routeAccess, type Role } from '../api/roles.js';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import { migrate } from '../common/migrate.js';
import { createToken, revokeToken } from '../domain/privacy/tokens.js';
import { apiToken } from './auth-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let api: ReturnType<typeof buildApi>;
const tokens = new Map<Role, string>();

/** Answered by the hook below when the authentication hook let the request through. */
const THROUGH = 299;

beforeAll(async () => {
  db = await createTestDatabase('auth-routes');
  client = await testTemporalClient();
  for (const role of ROLES) tokens.set(role, await apiToken(db.pool, role));
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: testQueuePrefix('auth-routes'),
    log: logger('silent'),
    actor: 'api-test',
  });
  // After the authentication hook, so a request that reaches it was let in; no handler runs, so
  // walking the routes starts no workflow and writes nothing.
  api.addHook('onRequest', async (request, reply) => {
    await reply.status(THROUGH).send({ through: true, actor: request.actor ?? null });
  });
  await api.ready();
});

afterAll(async () => {
  await api.close();
  await client.connection.close();
  await db.close();
});

/** A concrete URL of a route pattern: every parameter and the wildcard filled in. */
function concrete(url: string): string {
  return url.replace(/:[A-Za-z]+/g, 'x1').replace('*', 'x1');
}

async function status(method: string, url: string, token?: string) {
  const response = await api.inject({
    method: method as 'GET',
    url: concrete(url),
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return response.statusCode;
}

describe('every registered route, every role', () => {
  it('the app registers the routes the walk covers (Fastify route list, not a hand list)', () => {
    const routes = registeredRoutes(api);
    expect(routes.length).toBeGreaterThan(40);
    expect(routes).toContainEqual({ method: 'POST', url: '/v1/decide' });
    expect(routes).toContainEqual({ method: 'PUT', url: '/v1/consent' });
  });

  it('every route is in the access table', () => {
    const missing = registeredRoutes(api)
      .filter((r) => r.method !== 'HEAD' && routeAccess(r.method, r.url) === undefined)
      .map((r) => `${r.method} ${r.url}`);
    expect(missing).toEqual([]);
  });

  it('answers as the table says: public passes, 401 without a token, 403 for a wrong role', async () => {
    const problems: string[] = [];
    for (const { method, url } of registeredRoutes(api)) {
      const access = routeAccess(method, url);
      const anonymous = await status(method, url);
      if (access !== undefined && isPublic(access)) {
        if (anonymous !== THROUGH) problems.push(`${method} ${url} public: ${anonymous}`);
        continue;
      }
      if (anonymous !== 401) problems.push(`${method} ${url} without token: ${anonymous}`);
      for (const role of ROLES) {
        const got = await status(method, url, tokens.get(role));
        // A route missing from the table is refused to every role, admin too.
        const allowed = access !== undefined && allows(access, role);
        const want = allowed ? THROUGH : 403;
        if (got !== want) problems.push(`${method} ${url} as ${role}: ${got}, want ${want}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('a route the table does not name is refused to admin (deny by default)', async () => {
    const extra = buildApi({
      pool: db.pool,
      temporal: client,
      queuePrefix: testQueuePrefix('auth-routes'),
      log: logger('silent'),
      actor: 'x',
    });
    extra.get('/v1/not-in-the-table', async () => ({ leaked: true }));
    const answer = await extra.inject({
      method: 'GET',
      url: '/v1/not-in-the-table',
      headers: { authorization: `Bearer ${tokens.get('admin')}` },
    });
    expect(answer.statusCode).toBe(403);
    expect(answer.json()).toMatchObject({ error: { code: 'forbidden' } });
    await extra.close();
  });
});

describe('tokens', () => {
  it('an unknown, malformed or revoked token is 401; the actor is the unique token name', async () => {
    const url = '/v1/models';
    expect(await status('GET', url, 'pt_AAAAAAAA_' + 'A'.repeat(43))).toBe(401);
    expect(await status('GET', url, 'garbage')).toBe(401);
    const created = await createToken(db.pool, { role: 'auditor', name: 'ann', createdBy: 't' });
    const ok = await api.inject({
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${created.token}` },
    });
    expect(ok.json()).toEqual({ through: true, actor: 'ann' });
    await expect(
      createToken(db.pool, { role: 'mlops', name: 'ann', createdBy: 't' }),
    ).rejects.toThrow(/live token/);
    await revokeToken(db.pool, created.id, 't');
    // The hook caches a lookup for a second; a fresh app sees the revocation at once.
    const fresh = buildApi({
      pool: db.pool,
      temporal: client,
      queuePrefix: testQueuePrefix('auth-routes'),
      log: logger('silent'),
      actor: 'x',
    });
    const refused = await fresh.inject({
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${created.token}` },
    });
    expect(refused.statusCode).toBe(401);
    await fresh.close();
  });

  it('never gives a name twice, revoked tokens included, also to racing creates', async () => {
    const first = await createToken(db.pool, { role: 'auditor', name: 'bea', createdBy: 't' });
    await revokeToken(db.pool, first.id, 't');
    await expect(
      createToken(db.pool, { role: 'admin', name: 'bea', createdBy: 't' }),
    ).rejects.toThrow('name "bea": a revoked token had it');
    // Eight creates of one new name at once: one wins, on separate connections.
    const racing = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        createToken(db.pool, { role: 'mlops', name: 'race', createdBy: 't' }),
      ),
    );
    expect(racing.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const { rows } = await db.pool.query<{ name: string; n: number }>(
      `select name, count(*)::int as n from api_tokens where name in ('bea', 'race')
        group by name order by name`,
    );
    expect(rows).toEqual([
      { name: 'bea', n: 1 },
      { name: 'race', n: 1 },
    ]);
  });

  it('keeps a live and a revoked token of one name from before names were unique', async () => {
    // As migration 0027 leaves them: the older one of the pair marked name_reused.
    const live = await createToken(db.pool, { role: 'auditor', name: 'old-pair', createdBy: 't' });
    await db.pool.query(
      `insert into api_tokens (id, token_sha256, role, name, created_by, revoked_at, revoked_by,
                               name_reused)
       values ('pt_oldpair1', repeat('a', 64), 'admin', 'old-pair', 't', now(), 't', true)`,
    );
    const ok = await api.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { authorization: `Bearer ${live.token}` },
    });
    expect(ok.json()).toEqual({ through: true, actor: 'old-pair' });
    await expect(
      createToken(db.pool, { role: 'mlops', name: 'old-pair', createdBy: 't' }),
    ).rejects.toThrow('name "old-pair": a live token has it');
  });

  it('migrates a database holding a live and revoked tokens of one name (0027)', async () => {
    // The database as it was before 0027: names unique among live tokens only.
    await db.pool.query(`drop index api_tokens_name_once`);
    await db.pool.query(`alter table api_tokens drop column name_reused`);
    await db.pool.query(`delete from pops_migrations where name = '0027_token_names_once'`);
    const row = (id: string, role: string, revoked: boolean, age: number) =>
      db.pool.query(
        `insert into api_tokens (id, token_sha256, role, name, created_by, created_at,
                                 revoked_at, revoked_by)
         values ($1, repeat($2, 64), $3, 'dup-m', 't', now() - make_interval(days => $4),
                 case when $5 then now() end, case when $5 then 't' end)`,
        [id, id.slice(-1), role, age, revoked],
      );
    await row('pt_dupm0001', 'admin', true, 3);
    await row('pt_dupm0002', 'auditor', false, 2);
    await row('pt_dupm0003', 'mlops', true, 1);
    expect(await migrate(db.url)).toEqual(['0027_token_names_once']);
    const { rows } = await db.pool.query<{ id: string; name_reused: boolean }>(
      `select id, name_reused from api_tokens where name = 'dup-m' order by id`,
    );
    // The live one holds the name in the index; the revoked ones stay, marked.
    expect(rows).toEqual([
      { id: 'pt_dupm0001', name_reused: true },
      { id: 'pt_dupm0002', name_reused: false },
      { id: 'pt_dupm0003', name_reused: true },
    ]);
    await expect(
      createToken(db.pool, { role: 'admin', name: 'dup-m', createdBy: 't' }),
    ).rejects.toThrow('name "dup-m": a live token has it');
  });

  it('stores only the sha256 of a token', async () => {
    const created = await createToken(db.pool, { role: 'mlops', name: 'h', createdBy: 't' });
    const { rows } = await db.pool.query(
      `select count(*)::int as n from api_tokens
        where token_sha256 = encode(sha256(convert_to($1, 'utf8')), 'hex')`,
      [created.token],
    );
    expect(rows[0]).toEqual({ n: 1 });
    const raw = await db.pool.query(
      `select count(*)::int as n from api_tokens t where to_jsonb(t)::text like '%' || $1 || '%'`,
      [created.token.slice(12)],
    );
    expect(raw.rows[0]).toEqual({ n: 0 });
  });
});
