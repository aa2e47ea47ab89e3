import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registeredRoutes } from '../api/auth.js';
import { routeAccess } from '../api/roles.js';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import { seededRandom } from '../domain/decide/replay.js';
import { createWriteKey } from '../ingest/write-keys.js';
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
let token: string;
let writeKey: string;
const random = seededRandom(20261204);

beforeAll(async () => {
  db = await createTestDatabase('auth-fuzz');
  client = await testTemporalClient();
  token = await apiToken(db.pool, 'admin');
  writeKey = (await createWriteKey(db.pool, 'web', 'fuzzer')).key;
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: testQueuePrefix('auth-fuzz'),
    log: logger('silent'),
    actor: 'fuzzer',
  });
  await api.ready();
});

afterAll(async () => {
  await api.close();
  await client.connection.close();
  await db.close();
});

const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const NASTY = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '💥',
  "'; drop table events; --",
  '../../etc/passwd',
  '%00',
  '{}',
  'null',
  '9'.repeat(400),
  '-1',
  '1e309',
  'x'.repeat(5000),
  '2026-13-45T99:99:99Z',
  'pt_AAAAAAAA_' + 'A'.repeat(43),
];

/** A random JSON value, nested at most `depth` deep. */
function value(depth: number): unknown {
  const r = random();
  if (depth <= 0 || r < 0.45) {
    return pick<unknown>([
      null,
      true,
      false,
      0,
      -1,
      2 ** 53 + 1,
      1e308,
      -0.5,
      pick(NASTY),
      Math.floor(random() * 1e6),
    ]);
  }
  if (r < 0.7) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth - 1));
  const keys = [
    'name',
    'model',
    'identifier',
    'type',
    'value',
    'purposes',
    'reason',
    'mode',
    'batch',
    'userId',
    'surface',
    'k',
    'candidates',
    'granted',
    'version',
    pick(NASTY),
  ];
  return Object.fromEntries(
    Array.from({ length: Math.floor(random() * 5) }, () => [pick(keys), value(depth - 1)]),
  );
}

/** A body as sent: JSON of a random value, or text that is not JSON. */
function body(): { payload: string; type: string } {
  const r = random();
  if (r < 0.15) {
    return {
      payload: pick(['{', '{"a":', '[1,2', 'not json', '\u0000', '']),
      type: 'application/json',
    };
  }
  if (r < 0.2) return { payload: 'a=1&b=2', type: 'application/x-www-form-urlencoded' };
  if (r < 0.22) {
    return { payload: JSON.stringify({ big: 'x'.repeat(300 * 1024) }), type: 'application/json' };
  }
  return { payload: JSON.stringify(value(3)) ?? 'null', type: 'application/json' };
}

/** URI-encoded; a lone surrogate (which encodeURIComponent refuses) as its invalid UTF-8 bytes. */
function enc(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return '%ED%A0%80';
  }
}

function concrete(url: string): string {
  return url.replace(/:[A-Za-z]+/g, () => enc(pick(NASTY) || 'x')).replace('*', 'x%2Fy');
}

async function tableCounts(): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ table_name: string }>(
    `select table_name from information_schema.tables
      where table_schema = current_schema() and table_type = 'BASE TABLE' order by 1`,
  );
  const counts: Record<string, number> = {};
  for (const { table_name } of rows) {
    const r = await db.pool.query<{ n: number }>(`select count(*)::int as n from "${table_name}"`);
    counts[table_name] = r.rows[0]?.n ?? 0;
  }
  return counts;
}

describe('random and malformed requests to every route', () => {
  it('never answer 5xx, refuse every write with 4xx, and store nothing', async () => {
    // Listing playbooks registers the shipped ones the first time: that is not the fuzz's doing.
    await api.inject({
      method: 'GET',
      url: '/v1/playbooks',
      headers: { authorization: `Bearer ${token}` },
    });
    const before = await tableCounts();
    const failures: string[] = [];
    let sent = 0;
    for (const { method, url } of registeredRoutes(api)) {
      if (method === 'HEAD' || url === '/healthz') continue;
      const access = routeAccess(method, url);
      const ingestion = access !== undefined && !Array.isArray(access);
      for (let i = 0; i < 30; i++) {
        const { payload, type } = body();
        const query = random() < 0.3 ? `?${enc(pick(NASTY))}=${enc(pick(NASTY))}` : '';
        const authorization = ingestion
          ? `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`
          : `Bearer ${token}`;
        const response = await api.inject({
          method: method as 'POST',
          url: concrete(url) + query,
          headers: { authorization, 'content-type': type },
          ...(method === 'GET' ? {} : { payload }),
        });
        sent += 1;
        // A GET of a list takes no input: it may answer 200 to anything. Nothing may answer 5xx,
        // and no write may succeed.
        if (response.statusCode >= 500 || (method !== 'GET' && response.statusCode < 400)) {
          failures.push(
            `${method} ${url} -> ${response.statusCode}: ${payload.slice(0, 120)} ${response.body.slice(0, 200)}`,
          );
        }
      }
    }
    expect(sent).toBeGreaterThan(500);
    expect(failures).toEqual([]);
    expect(await tableCounts()).toEqual(before);
  }, 600_000);

  it('answers 413 to a body over the limit and 415 to a type no route reads', async () => {
    const headers = { authorization: `Bearer ${token}` };
    const big = await api.inject({
      method: 'PUT',
      url: '/v1/consent',
      headers: { ...headers, 'content-type': 'application/json' },
      payload: JSON.stringify({ big: 'x'.repeat(2 * 1024 * 1024) }),
    });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toMatchObject({ error: { code: 'too_large' } });
    const xml = await api.inject({
      method: 'PUT',
      url: '/v1/consent',
      headers: { ...headers, 'content-type': 'application/xml' },
      payload: '<consent/>',
    });
    expect(xml.statusCode).toBe(415);
    expect(xml.json()).toMatchObject({ error: { code: 'unsupported_media_type' } });
  });

  it('a body nested 5,000 deep and a NUL in each query parameter answer 4xx', async () => {
    await api.inject({
      method: 'GET',
      url: '/v1/playbooks',
      headers: { authorization: `Bearer ${token}` },
    });
    const before = await tableCounts();
    // 10 KB, well under the body limit; describing it once overflowed the stack (500).
    const deep = `{"identifier":${'['.repeat(5000)}${']'.repeat(5000)},"reason":"r","userId":1}`;
    // Every query parameter a route reads (each route's own zod schema).
    const keys = [
      'type',
      'value',
      'limit',
      'features',
      'decisions',
      'format',
      'action',
      'actor',
      'subject',
      'workflowId',
      'since',
      'until',
      'before',
    ];
    const failures: string[] = [];
    for (const { method, url } of registeredRoutes(api)) {
      if (method === 'HEAD' || url === '/healthz') continue;
      const access = routeAccess(method, url);
      const authorization =
        access !== undefined && !Array.isArray(access)
          ? `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`
          : `Bearer ${token}`;
      const path = url.replace(/:[A-Za-z]+/g, 'x');
      const sent =
        method === 'GET'
          ? keys.map((k) => ({ url: `${path}?${k}=%00`, payload: undefined }))
          : [{ url: path, payload: deep }];
      for (const r of sent) {
        const response = await api.inject({
          method: method as 'POST',
          url: r.url,
          headers: { authorization, 'content-type': 'application/json' },
          ...(r.payload === undefined ? {} : { payload: r.payload }),
        });
        const refused = response.statusCode >= 400 && response.statusCode < 500;
        if (response.statusCode >= 500 || (method !== 'GET' && !refused)) {
          failures.push(
            `${method} ${r.url} -> ${response.statusCode} ${response.body.slice(0, 200)}`,
          );
        }
      }
    }
    expect(failures).toEqual([]);
    expect(await tableCounts()).toEqual(before);
  }, 300_000);
});
