import { gzipSync } from 'node:zlib';
import { Analytics } from '@segment/analytics-node';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { createWriteKey, revokeWriteKey } from '../ingest/write-keys.js';
import { popsRunner } from './cli-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let api: ReturnType<typeof buildApi>;
let base: string;
let webKey: string;
let messages = 0;

/** A messageId no other test uses. */
function id(label: string): string {
  messages += 1;
  return `${label}-${messages}`;
}

interface Answer {
  status: number;
  body: { success?: boolean; error?: { code: string; message: string } };
  headers: Headers;
}

/** POSTs `body` (JSON unless a string) with Basic auth for `key`, unless `key` is null. */
async function post(route: string, body: unknown, key: string | null = webKey): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== null) headers['authorization'] = `Basic ${Buffer.from(`${key}:`).toString('base64')}`;
  const response = await fetch(`${base}${route}`, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: response.status,
    body: (await response.json()) as Answer['body'],
    headers: response.headers,
  };
}

async function eventCount(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>('select count(*)::int as n from events');
  return rows[0]?.n ?? -1;
}

async function storedIds(ids: readonly string[]): Promise<string[]> {
  const { rows } = await db.pool.query<{ message_id: string }>(
    'select message_id from events where message_id = any($1::text[]) order by id',
    [ids],
  );
  return rows.map((r) => r.message_id);
}

/** Sends a request that must be refused; checks the status, and that nothing was stored. */
async function refused(route: string, body: unknown, status: 400 | 401, key?: string | null) {
  const before = await eventCount();
  const answer = await post(route, body, key);
  expect(answer.status).toBe(status);
  expect(await eventCount()).toBe(before);
  return answer.body.error?.message ?? '';
}

/** A track message whose JSON is exactly `bytes` long (ASCII padding in a property). */
function trackOfSize(messageId: string, bytes: number) {
  const message = { type: 'track', messageId, userId: 'u-size', event: 'Sized', properties: {} };
  const empty = Buffer.byteLength(JSON.stringify({ ...message, properties: { pad: '' } }));
  return { ...message, properties: { pad: 'x'.repeat(bytes - empty) } };
}

beforeAll(async () => {
  db = await createTestDatabase('segment-api');
  client = await testTemporalClient();
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: testQueuePrefix('segment-api'),
    log: logger('silent'),
    actor: 'api-test',
  });
  base = await api.listen({ host: '127.0.0.1', port: 0 });
  webKey = (await createWriteKey(db.pool, 'web', 'tester')).key;
});

afterAll(async () => {
  await api.close();
  await client.connection.close();
  await db.close();
});

describe('the Segment client library', () => {
  it('delivers track, identify, page and alias calls that are stored under its key', async () => {
    const analytics = new Analytics({ writeKey: webKey, host: base, flushAt: 50, maxRetries: 0 });
    const statuses: number[] = [];
    const errors: unknown[] = [];
    analytics.on('http_response', (response) => statuses.push(response.status));
    analytics.on('error', (err) => errors.push(err));

    analytics.identify({ messageId: 'lib-identify', userId: 'u-lib', traits: { plan: 'pro' } });
    analytics.track({
      messageId: 'lib-track',
      userId: 'u-lib',
      event: 'Product Viewed',
      properties: { item_id: 'sku-7', price: 12.5 },
    });
    analytics.page({ messageId: 'lib-page', anonymousId: 'a-lib', name: 'Home', category: 'Web' });
    analytics.alias({ messageId: 'lib-alias', userId: 'u-lib', previousId: 'a-lib' });
    await analytics.closeAndFlush({ timeout: 10_000 });

    expect(errors).toEqual([]);
    expect(statuses).toEqual([200]);
    const { rows } = await db.pool.query(
      `select message_id, source, type, event, person_id, user_id, anonymous_id, previous_id,
              item_id, properties, traits, context->'library'->>'name' as library
         from events where message_id like 'lib-%' order by id`,
    );
    const none = { event: null, previous_id: null, item_id: null, traits: null };
    const library = '@segment/analytics-node';
    expect(rows).toEqual([
      {
        ...none,
        message_id: 'lib-identify',
        source: 'web',
        type: 'identify',
        person_id: 'u-lib',
        user_id: 'u-lib',
        anonymous_id: null,
        properties: {},
        traits: { plan: 'pro' },
        library,
      },
      {
        ...none,
        message_id: 'lib-track',
        source: 'web',
        type: 'track',
        event: 'Product Viewed',
        person_id: 'u-lib',
        user_id: 'u-lib',
        anonymous_id: null,
        item_id: 'sku-7',
        properties: { item_id: 'sku-7', price: 12.5 },
        library,
      },
      {
        ...none,
        message_id: 'lib-page',
        source: 'web',
        type: 'page',
        person_id: 'a-lib',
        user_id: null,
        anonymous_id: 'a-lib',
        properties: { name: 'Home', category: 'Web' },
        library,
      },
      {
        ...none,
        message_id: 'lib-alias',
        source: 'web',
        type: 'alias',
        person_id: 'u-lib',
        user_id: 'u-lib',
        anonymous_id: null,
        previous_id: 'a-lib',
        properties: {},
        library,
      },
    ]);
  });

  it('stores the batch-level sentAt the library sends and corrects each timestamp by it', async () => {
    const { rows } = await db.pool.query<{
      ts: Date;
      received_at: Date;
      original_timestamp: Date;
      sent_at: Date;
    }>(
      `select ts, received_at, original_timestamp, sent_at from events
        where message_id like 'lib-%'`,
    );
    expect(rows).toHaveLength(4);
    for (const row of rows) {
      const skew = row.sent_at.getTime() - row.original_timestamp.getTime();
      expect(skew).toBeGreaterThanOrEqual(0);
      expect(row.ts.getTime()).toBe(row.received_at.getTime() - skew);
    }
  });

  it('reports a wrong write key as a failed delivery, and nothing is stored', async () => {
    const analytics = new Analytics({ writeKey: 'wk_not-a-key', host: base, maxRetries: 0 });
    const statuses: number[] = [];
    analytics.on('http_response', (response) => statuses.push(response.status));
    const before = await eventCount();

    const delivered = new Promise<unknown>((resolve) => {
      analytics.track({ userId: 'u-x', event: 'Nope' }, (err) => resolve(err));
    });
    await analytics.closeAndFlush({ timeout: 10_000 });

    expect(await delivered).toBeDefined();
    expect(statuses).toEqual([401]);
    expect(await eventCount()).toBe(before);
  });
});

describe('timestamps', () => {
  it('corrects a skewed client clock: receivedAt - (sentAt - timestamp)', async () => {
    // The client's clock is 1 h 2 min 3.25 s ahead of ours: it stamped the event at 10:00:00
    // and sent it 30.5 s later, at 10:00:30.5 on its clock.
    const before = Date.now();
    const answer = await post('/v1/track', {
      messageId: 'skewed',
      userId: 'u-ts',
      event: 'Clicked',
      timestamp: '2024-03-01T10:00:00.000Z',
      sentAt: '2024-03-01T10:00:30.500Z',
    });
    const after = Date.now();

    expect(answer).toMatchObject({ status: 200, body: { success: true } });
    const { rows } = await db.pool.query<{
      ts: Date;
      received_at: Date;
      original_timestamp: Date;
      sent_at: Date;
    }>(`select ts, received_at, original_timestamp, sent_at from events where message_id = $1`, [
      'skewed',
    ]);
    const row = rows[0];
    expect(row?.received_at.getTime()).toBeGreaterThanOrEqual(before);
    expect(row?.received_at.getTime()).toBeLessThanOrEqual(after);
    expect(row?.ts.getTime()).toBe((row?.received_at.getTime() ?? 0) - 30_500);
    expect(row?.original_timestamp).toEqual(new Date('2024-03-01T10:00:00.000Z'));
    expect(row?.sent_at).toEqual(new Date('2024-03-01T10:00:30.500Z'));
  });

  it('keeps microseconds, uses the timestamp without sentAt, and receivedAt without timestamp', async () => {
    const answer = await post('/v1/batch', {
      sentAt: '2024-05-01T00:00:00.000009Z',
      batch: [
        // sentAt - timestamp = 7 µs (the batch's sentAt applies).
        {
          type: 'page',
          messageId: 'micro',
          anonymousId: 'a',
          timestamp: '2024-05-01T00:00:00.000002Z',
        },
        // Its own sentAt wins over the batch's: 2 s.
        {
          type: 'page',
          messageId: 'own-sent-at',
          anonymousId: 'a',
          timestamp: '2024-05-01T00:00:00Z',
          sentAt: '2024-05-01T00:00:02Z',
        },
        { type: 'page', messageId: 'no-timestamp', anonymousId: 'a' },
      ],
    });
    const single = await post('/v1/page', {
      messageId: 'no-sent-at',
      anonymousId: 'a',
      timestamp: '2023-12-31T23:00:00-01:00',
    });

    expect([answer.status, single.status]).toEqual([200, 200]);
    const { rows } = await db.pool.query<{ message_id: string; lag: string; ts: Date }>(
      `select message_id, extract(epoch from received_at - ts)::text as lag, ts
         from events where message_id = any($1::text[]) order by message_id`,
      [['micro', 'own-sent-at', 'no-timestamp', 'no-sent-at']],
    );
    expect(rows.map((r) => [r.message_id, r.lag])).toEqual([
      ['micro', '0.000007'],
      ['no-sent-at', expect.any(String)],
      ['no-timestamp', '0.000000'],
      ['own-sent-at', '2.000000'],
    ]);
    expect(rows.find((r) => r.message_id === 'no-sent-at')?.ts).toEqual(
      new Date('2024-01-01T00:00:00Z'),
    );
  });
});

describe('a batch', () => {
  it('merges its context into each message, the message keys winning at every depth', async () => {
    const answer = await post('/v1/batch', {
      context: { locale: 'fr-FR', device: { id: 'd-1', type: 'ios' }, library: { name: 'x' } },
      batch: [
        {
          type: 'track',
          messageId: 'ctx-own',
          userId: 'u-ctx',
          event: 'Opened',
          context: { device: { type: 'android' }, ip: '198.51.100.4', locale: 'de-DE' },
        },
        { type: 'identify', messageId: 'ctx-none', userId: 'u-ctx' },
      ],
    });

    expect(answer.status).toBe(200);
    const { rows } = await db.pool.query(
      `select message_id, context from events where message_id like 'ctx-%' order by id`,
    );
    expect(rows).toEqual([
      {
        message_id: 'ctx-own',
        context: {
          locale: 'de-DE',
          device: { id: 'd-1', type: 'android' },
          library: { name: 'x' },
          ip: '198.51.100.4',
        },
      },
      {
        message_id: 'ctx-none',
        context: { locale: 'fr-FR', device: { id: 'd-1', type: 'ios' }, library: { name: 'x' } },
      },
    ]);
  });

  it('stores nothing when one message is bad, naming its index and field', async () => {
    const good = [id('aon'), id('aon')];
    const message = await refused(
      '/v1/batch',
      {
        batch: [
          { type: 'track', messageId: good[0], userId: 'u', event: 'A' },
          { type: 'identify', messageId: good[1], userId: 'u' },
          { type: 'track', messageId: id('aon'), userId: 'u', event: 'B', timestamp: 'yesterday' },
        ],
      },
      400,
    );

    expect(message).toMatch(/^batch\[2\]: field "timestamp": "yesterday" is not an ISO-8601/);
    expect(await storedIds(good)).toEqual([]);
  });

  it('refuses screen and group messages, which events cannot hold, naming the index', async () => {
    const screen = await refused(
      '/v1/batch',
      {
        batch: [
          { type: 'track', messageId: id('type'), userId: 'u', event: 'A' },
          { type: 'screen', messageId: id('type'), userId: 'u', name: 'Home' },
        ],
      },
      400,
    );
    const group = await refused(
      '/v1/batch',
      { batch: [{ type: 'group', messageId: id('type'), userId: 'u', groupId: 'g' }] },
      400,
    );
    const mismatch = await refused('/v1/track', { type: 'identify', userId: 'u' }, 400);

    expect(screen).toMatch(/^batch\[1\]: field "type": "screen" is not one of track, identify/);
    expect(group).toMatch(/^batch\[0\]: field "type": "group" is not one of/);
    expect(mismatch).toMatch(/field "type": "identify" is not "track"/);
  });

  it('needs a userId or an anonymousId on every message', async () => {
    const message = await refused(
      '/v1/batch',
      { batch: [{ type: 'identify', messageId: id('anon'), traits: { a: 1 } }] },
      400,
    );

    expect(message).toMatch(/^batch\[0\]: field "userId" is missing: .*anonymousId/);
  });

  it('answers bad JSON and a missing batch with 400', async () => {
    expect(await refused('/v1/batch', '{"batch": [', 400)).toMatch(/body is not JSON/);
    expect(await refused('/v1/batch', { messages: [] }, 400)).toMatch(
      /^body: field "batch" is missing/,
    );
    expect(await refused('/v1/batch', { batch: [] }, 400)).toBe('body: field "batch": [] is empty');
    expect(await refused('/v1/page', '', 400)).toMatch(/body is empty/);
  });
});

describe('size limits', () => {
  it('takes a message of exactly 32 KB and refuses one byte more, naming the index', async () => {
    const fits = trackOfSize(id('size'), 32 * 1024);
    const over = trackOfSize(id('size'), 32 * 1024 + 1);
    expect(Buffer.byteLength(JSON.stringify(over))).toBe(32_769);

    const accepted = await post('/v1/batch', { batch: [fits] });
    const message = await refused(
      '/v1/batch',
      { batch: [trackOfSize(id('size'), 100), over] },
      400,
    );
    const single = await refused('/v1/track', over, 400);

    expect(accepted.status).toBe(200);
    expect(message).toMatch(/^batch\[1\]: is 32769 bytes, over the 32 KB limit/);
    expect(single).toMatch(/^message: is 32769 bytes, over the 32 KB limit/);
  });

  it('takes a 480 KB batch (above the server default body limit) and refuses one past 500 KB', async () => {
    // 16 messages of 30,000 bytes: 480,000 bytes of messages, under 512,000.
    const fits = Array.from({ length: 16 }, () => trackOfSize(id('big'), 30_000));
    // 20 of them: `{"batch":[` is 10 bytes and each message ends with a comma, so the 17th
    // (index 16) ends at byte 10 + 17 * 30,001 = 510,027 and the 18th (index 17) at 540,028.
    const tooMany = Array.from({ length: 20 }, () => trackOfSize(id('big'), 30_000));

    const accepted = await post('/v1/batch', { batch: fits });
    const message = await refused('/v1/batch', { batch: tooMany }, 400);

    expect(accepted.status).toBe(200);
    expect(await storedIds(fits.map((m) => m.messageId))).toHaveLength(16);
    expect(message).toMatch(/^batch\[17\]: the batch is \d+ bytes, over the 500 KB limit/);
  });
});

describe('write keys', () => {
  const track = () => ({
    batch: [{ type: 'track', messageId: id('auth'), userId: 'u', event: 'E' }],
  });

  it('answers 401 without a key, with an unknown one and with a malformed header', async () => {
    const none = await refused('/v1/batch', track(), 401, null);
    const unknown = await refused('/v1/batch', track(), 401, 'wk_AAAAAAAAnot-a-key');
    const before = await eventCount();
    const malformed = await fetch(`${base}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer something' },
      body: JSON.stringify(track()),
    });

    expect(none).toMatch(/no write key/);
    expect(unknown).toMatch(/not known/);
    expect(unknown).not.toContain('not-a-key');
    expect(malformed.status).toBe(401);
    expect(malformed.headers.get('www-authenticate')).toMatch(/^Basic/);
    expect(await eventCount()).toBe(before);
  });

  it('accepts the key as writeKey in the body, and refuses a body key unlike the header', async () => {
    const body = { ...track(), writeKey: webKey };
    const other = (await createWriteKey(db.pool, 'other', 'tester')).key;

    const accepted = await post('/v1/batch', body, null);
    const mismatch = await refused('/v1/batch', { ...track(), writeKey: other }, 401);

    expect(accepted.status).toBe(200);
    expect(await storedIds(body.batch.map((m) => m.messageId))).toHaveLength(1);
    expect(mismatch).toMatch(/not the key of the Authorization header/);
  });

  it('writes into the source of the key, and refuses the key once revoked', async () => {
    const created = await createWriteKey(db.pool, 'mobile', 'tester');
    const first = track();

    const accepted = await post('/v1/batch', first, created.key);
    await revokeWriteKey(db.pool, created.prefix, 'tester');
    const message = await refused('/v1/batch', track(), 401, created.key);

    expect(accepted.status).toBe(200);
    const { rows } = await db.pool.query('select source from events where message_id = $1', [
      first.batch[0]?.messageId,
    ]);
    expect(rows).toEqual([{ source: 'mobile' }]);
    expect(message).toBe(`write key ${created.prefix}… was revoked`);
  });

  it('audits creation and revocation in the hash chain', async () => {
    const created = await createWriteKey(db.pool, 'audited', 'ana');
    await revokeWriteKey(db.pool, created.prefix, 'bob');
    const again = await revokeWriteKey(db.pool, created.prefix, 'carl');

    const trail = await auditTrail(db.pool, { subject: `write-key/${created.prefix}` });
    expect(trail.map((row) => [row.actor, row.action, row.inputs])).toEqual([
      ['ana', 'write-key.created', { source: 'audited' }],
      ['bob', 'write-key.revoked', { prefix: created.prefix }],
    ]);
    expect(again).toMatchObject({ alreadyRevoked: true, revokedBy: 'bob' });
    expect(JSON.stringify(trail)).not.toContain(created.key);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });
  });

  it('stores only the sha256 of a key', async () => {
    const created = await createWriteKey(db.pool, 'hashed', 'tester');
    const { createHash } = await import('node:crypto');

    const { rows } = await db.pool.query(
      'select prefix, key_sha256 from write_keys where source = $1',
      ['hashed'],
    );

    expect(rows).toEqual([
      {
        prefix: created.key.slice(0, 11),
        key_sha256: createHash('sha256').update(created.key).digest('hex'),
      },
    ]);
  });
});

describe('deduplication and message ids', () => {
  it('drops a messageId already stored, and a repeat inside one batch', async () => {
    const repeated = id('dup');
    const message = { type: 'track', messageId: repeated, userId: 'u', event: 'First' };
    const first = await post('/v1/batch', { batch: [message, { ...message, event: 'Second' }] });
    const again = await post('/v1/track', { ...message, event: 'Third' });

    expect([first.status, again.status]).toEqual([200, 200]);
    const { rows } = await db.pool.query('select event from events where message_id = $1', [
      repeated,
    ]);
    expect(rows).toEqual([{ event: 'First' }]);
  });

  it('gives a message without messageId a generated one', async () => {
    const answer = await post('/v1/identify', { userId: 'u-generated', traits: { a: 1 } });

    expect(answer.status).toBe(200);
    const { rows } = await db.pool.query<{ message_id: string }>(
      `select message_id from events where user_id = 'u-generated'`,
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.message_id).toMatch(/^pops-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-/);
  });
});

describe('request bodies', () => {
  it('accepts JSON sent as text/plain, as browser senders do', async () => {
    const messageId = id('plain');
    const response = await fetch(`${base}/v1/track`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ writeKey: webKey, messageId, userId: 'u', event: 'Plain' }),
    });

    expect(response.status).toBe(200);
    expect(await storedIds([messageId])).toEqual([messageId]);
  });

  it('takes a gzip body, and refuses other encodings and a corrupt gzip with 400', async () => {
    const messageId = id('gzip');
    const json = JSON.stringify({ batch: [{ type: 'track', messageId, userId: 'u', event: 'Z' }] });
    const send = (encoding: string, body: Buffer) =>
      fetch(`${base}/v1/batch`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-encoding': encoding,
          authorization: `Basic ${Buffer.from(`${webKey}:`).toString('base64')}`,
        },
        body,
      });

    const gzipped = await send('gzip', gzipSync(json));
    const brotli = await send('br', Buffer.from(json));
    const corrupt = await send('gzip', Buffer.from(json));

    expect(gzipped.status).toBe(200);
    expect(await storedIds([messageId])).toEqual([messageId]);
    expect(brotli.status).toBe(400);
    expect(await brotli.json()).toMatchObject({
      error: { code: 'validation', message: expect.stringContaining('"br" is not supported') },
    });
    expect(corrupt.status).toBe(400);
  });
});

describe('pops write-keys', () => {
  const cli = popsRunner(() => ({ DATABASE_URL: db.url, POPS_ACTOR: 'cli-user' }));
  const pops = (args: string[]) => cli(['write-keys', ...args]);

  it('creates a key that the API takes, lists it without the key, and revokes it', async () => {
    const created = await pops(['create', '--source', 'cli-src', '--json']);
    expect(created.code).toBe(0);
    const { key, prefix } = JSON.parse(created.stdout) as { key: string; prefix: string };
    expect((await post('/v1/track', { userId: 'u', event: 'E' }, key)).status).toBe(200);

    const listed = await pops(['list', '--json']);
    expect(listed.stdout).not.toContain(key);
    const { writeKeys } = JSON.parse(listed.stdout) as { writeKeys: Array<{ prefix: string }> };
    expect(writeKeys.find((k) => k.prefix === prefix)).toMatchObject({
      source: 'cli-src',
      createdBy: 'cli-user',
      revokedAt: null,
    });

    const revoked = await pops(['revoke', prefix]);
    expect(revoked).toMatchObject({ code: 0 });
    expect(revoked.stdout).toContain(`revoked write key ${prefix}`);
    expect((await post('/v1/track', { userId: 'u', event: 'E' }, key)).status).toBe(401);
  });

  it('exits 2 for a bad source, a malformed prefix and an unknown one', async () => {
    const badSource = await pops(['create', '--source', 'no spaces']);
    const badPrefix = await pops(['revoke', 'nope']);
    const unknown = await pops(['revoke', 'wk_00000000']);

    expect([badSource.code, badPrefix.code, unknown.code]).toEqual([2, 2, 2]);
    expect(badSource.stderr).toContain('"no spaces"');
    expect(badPrefix.stderr).toContain('"nope"');
    expect(unknown.stderr).toContain('no write key with prefix "wk_00000000"');
  });
});
