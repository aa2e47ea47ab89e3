import type { Client } from '@temporalio/client';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import {
  consentDefaults,
  consentedPersons,
  recordConsent,
  setConsentDefault,
} from '../domain/privacy/consent.js';
import { consentChoices, consentTraitsFromEnv } from '../domain/privacy/consent-traits.js';
import { emailAddresses, resealContacts, setEmailAddress } from '../domain/privacy/contacts.js';
import { open, seal } from '../domain/privacy/fields.js';
import { forgetKeys } from '../domain/privacy/keys.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { apiToken } from './auth-support.js';
import {
  createTestDatabase,
  hashedValueOf,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let api: ReturnType<typeof buildApi>;
let base: string;
let writeKey: string;
let token: string;

const T1 = new Date('2026-01-01T00:00:00Z');
const T2 = new Date('2026-02-01T00:00:00Z');
const BETWEEN = new Date('2026-01-15T00:00:00Z');

/** A graph person 1 with person 2 merged into it, and an unmerged person 3. */
async function seedGraph() {
  await db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (1, 1, null, $1, 1, null), (3, 3, null, $1, 3, null)`,
    [T1],
  );
  await db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (2, 1, 1, $1, 2, $1)`,
    [T1],
  );
  await db.pool.query(
    `insert into identifiers (type, value, person_id, first_seen_at, first_event_id) values
       ('user_id', 'u1', 1, $1, 1), ('anonymous_id', 'a2', 2, $1, 2),
       ('email', $2, 3, $1, 3)`,
    [T1, hashedValueOf('email', 'p3@example.com')],
  );
}

const consent = (
  type: string,
  value: string,
  purpose: 'marketing' | 'analytics',
  granted: boolean,
) => ({ identifier: { type, value }, purpose, granted, source: 'test', actor: 'tester' }) as const;

async function call(method: string, route: string, body?: unknown) {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  db = await createTestDatabase('privacy-consent');
  client = await testTemporalClient();
  token = await apiToken(db.pool, 'admin');
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: testQueuePrefix('privacy-consent'),
    log: logger('silent'),
    actor: 'api-test',
  });
  base = await api.listen({ host: '127.0.0.1', port: 0 });
  writeKey = (await createWriteKey(db.pool, 'web', 'tester')).key;
  await seedGraph();
});

afterAll(async () => {
  await api.close();
  await client.connection.close();
  await db.close();
});

describe('consent', () => {
  it('records a change once: the same state again is not a change, and history keeps both', async () => {
    const grant = { ...consent('user_id', 'h1', 'marketing', true), at: T1 };
    expect(await recordConsent(db.pool, grant)).toEqual({ changed: true, dropped: false });
    expect(await recordConsent(db.pool, { ...grant, at: T2 })).toEqual({
      changed: false,
      dropped: false,
    });
    const deny = { ...consent('user_id', 'h1', 'marketing', false), at: T2 };
    expect(await recordConsent(db.pool, deny)).toEqual({ changed: true, dropped: false });
    const { rows } = await db.pool.query(
      `select granted from consent_events where identifier_value = 'h1' order by effective_at`,
    );
    expect(rows).toEqual([{ granted: true }, { granted: false }]);
  });

  it('defaults: personalization and analytics granted, marketing opt-in only', async () => {
    expect(await consentDefaults(db.pool)).toEqual({
      personalization: true,
      analytics: true,
      marketing: false,
    });
    await expect(setConsentDefault(db.pool, 'marketing', true, 't')).rejects.toThrow(/opt-in/);
  });

  it('a person consents as the latest event over all their merged identifiers says', async () => {
    // a2 (person 2, merged into 1) grants marketing at T1; u1 (person 1) withdraws it at T2.
    await recordConsent(db.pool, { ...consent('anonymous_id', 'a2', 'marketing', true), at: T1 });
    await recordConsent(db.pool, { ...consent('user_id', 'u1', 'marketing', false), at: T2 });
    const keys = ['1', '3', 'unresolved:raw9'];
    expect(await consentedPersons(db.pool, keys, 'marketing', BETWEEN)).toEqual(new Set(['1']));
    expect(await consentedPersons(db.pool, keys, 'marketing')).toEqual(new Set());
    // Personalization: no event anywhere, so the default (granted) for all three.
    expect(await consentedPersons(db.pool, keys, 'personalization')).toEqual(new Set(keys));
  });

  it('a withdrawal on one identifier is written after a grant on another of the person', async () => {
    // Person 1 (u1, and a2 merged in): u1 withdraws analytics, a2 grants it later, then u1
    // withdraws again. u1's own latest is already "withdrawn", but the person's is "granted".
    const T3 = new Date('2026-03-01T00:00:00Z');
    const withdraw = consent('user_id', 'u1', 'analytics', false);
    expect(await recordConsent(db.pool, { ...withdraw, at: T1 })).toEqual({
      changed: true,
      dropped: false,
    });
    const grant = consent('anonymous_id', 'a2', 'analytics', true);
    expect(await recordConsent(db.pool, { ...grant, at: T2 })).toEqual({
      changed: true,
      dropped: false,
    });
    expect(await consentedPersons(db.pool, ['1'], 'analytics')).toEqual(new Set(['1']));
    expect(await recordConsent(db.pool, { ...withdraw, at: T3 })).toEqual({
      changed: true,
      dropped: false,
    });
    expect(await consentedPersons(db.pool, ['1'], 'analytics')).toEqual(new Set());
    // Now both the identifier's and the person's latest are "withdrawn": nothing to write.
    expect(await recordConsent(db.pool, withdraw)).toEqual({ changed: false, dropped: false });
  });

  it('a choice dated in the future takes effect now, so it cannot undo a later one', async () => {
    const later = new Date(Date.now() + 3_600_000);
    const grant = { ...consent('user_id', 'fut-1', 'marketing', true), at: later };
    expect(await recordConsent(db.pool, grant)).toEqual({ changed: true, dropped: false });
    const { rows } = await db.pool.query<{ effective_at: Date }>(
      `select effective_at from consent_events where identifier_value = 'fut-1'`,
    );
    expect(rows[0]?.effective_at.getTime()).toBeLessThanOrEqual(Date.now());
    await recordConsent(db.pool, consent('user_id', 'fut-1', 'marketing', false));
    expect(await consentedPersons(db.pool, ['unresolved:fut-1'], 'marketing')).toEqual(new Set());
    const refused = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: 'fut-1' },
      purposes: { marketing: true },
      at: later.toISOString(),
    });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toContain('at: must not be in the future');
  });

  it('refuses an identifier type the identity rules do not know, naming it', async () => {
    const put = await call('PUT', '/v1/consent', {
      identifier: { type: 'custom_x', value: 'v' },
      purposes: { marketing: true },
    });
    expect(put.status).toBe(400);
    expect(JSON.stringify(put.body)).toContain(
      'invalid body: identifier.type: \\"custom_x\\" is no identifier type',
    );
    expect((await call('GET', '/v1/consent?type=custom_x&value=v')).status).toBe(400);
    const { rows } = await db.pool.query(
      `select 1 from consent_events where identifier_type = 'custom_x'`,
    );
    expect(rows).toHaveLength(0);
  });

  it('a path parameter over 1 KB gets the API error shape, without the path echoed', async () => {
    const long = await call('GET', `/v1/identity/identifiers/user_id/${'a'.repeat(2000)}`);
    expect(long).toEqual({
      status: 400,
      body: {
        error: { code: 'validation', message: 'path: a parameter is over 1024 characters' },
      },
    });
  });

  it('an unresolved key consents through its raw id as user or anonymous id', async () => {
    await recordConsent(db.pool, {
      ...consent('anonymous_id', 'raw9', 'analytics', false),
      at: T1,
    });
    const keys = ['unresolved:raw9', 'unresolved:raw8', '3'];
    expect(await consentedPersons(db.pool, keys, 'analytics')).toEqual(
      new Set(['unresolved:raw8', '3']),
    );
    await setConsentDefault(db.pool, 'analytics', false, 'tester');
    expect(await consentedPersons(db.pool, keys, 'analytics')).toEqual(new Set());
    await setConsentDefault(db.pool, 'analytics', true, 'tester');
  });

  it('an email identifier matches however it was cased', async () => {
    await recordConsent(db.pool, {
      ...consent('email', ' P3@Example.COM ', 'marketing', true),
      at: T1,
    });
    expect(await consentedPersons(db.pool, ['3'], 'marketing')).toEqual(new Set(['3']));
  });
});

describe('consent from Segment identify messages', () => {
  const identify = (messageId: string, userId: string, marketing: unknown) =>
    fetch(`${base}/v1/identify`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`,
      },
      body: JSON.stringify({ messageId, userId, traits: { consent: { marketing } } }),
    });

  it('reads the mapped traits; a resend of an old message does not undo a later choice', async () => {
    expect((await identify('c-1', 'seg-1', true)).status).toBe(200);
    expect(await consentedPersons(db.pool, ['unresolved:seg-1'], 'marketing')).toEqual(
      new Set(['unresolved:seg-1']),
    );
    expect((await identify('c-2', 'seg-1', 'opt-out')).status).toBe(200);
    expect((await identify('c-1', 'seg-1', true)).status).toBe(200);
    expect(await consentedPersons(db.pool, ['unresolved:seg-1'], 'marketing')).toEqual(new Set());
    const { rows } = await db.pool.query(
      `select granted, source from consent_events where identifier_value = 'seg-1' order by id`,
    );
    expect(rows).toEqual([
      { granted: true, source: 'segment:web' },
      { granted: false, source: 'segment:web' },
    ]);
  });

  it('a value that is no choice says nothing; the mapping is configurable', () => {
    expect(consentChoices({ traits: { consent: { marketing: 1, analytics: 'yes' } } })).toEqual([
      { purpose: 'analytics', granted: true },
    ]);
    const mapping = consentTraitsFromEnv('{"marketing": ["traits.newsletter"]}');
    expect(consentChoices({ traits: { newsletter: false } }, mapping)).toEqual([
      { purpose: 'marketing', granted: false },
    ]);
    expect(() => consentTraitsFromEnv('{"marketing": ["nope"]}')).toThrow(/POPS_CONSENT_TRAITS/);
  });
});

describe('consent over the API', () => {
  it('PUT records per purpose and GET answers the state with its history', async () => {
    const put = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: 'api-1' },
      purposes: { marketing: true, analytics: false },
    });
    expect(put).toEqual({ status: 200, body: { changed: { marketing: true, analytics: true } } });
    const again = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: 'api-1' },
      purposes: { marketing: true },
    });
    expect(again.body).toEqual({ changed: { marketing: false } });
    const got = await call('GET', '/v1/consent?type=user_id&value=api-1');
    expect(got.status).toBe(200);
    expect(got.body['personKey']).toBe('unresolved:api-1');
    const purposes = got.body['purposes'] as Record<string, { granted: boolean; from: string }>;
    expect(purposes['marketing']).toMatchObject({ granted: true, from: 'event' });
    expect(purposes['analytics']).toMatchObject({ granted: false, from: 'event' });
    expect(purposes['personalization']).toEqual({ granted: true, from: 'default' });
    expect((got.body['history'] as unknown[]).length).toBe(2);
  });

  it('refuses a body without purposes and a marketing default of granted', async () => {
    const none = await call('PUT', '/v1/consent', {
      identifier: { type: 'user_id', value: 'x' },
      purposes: {},
    });
    expect(none.status).toBe(400);
    const bad = await call('PUT', '/v1/consent-defaults/marketing', { granted: true });
    expect(bad.status).toBe(400);
  });
});

describe('contacts', () => {
  it('finds an address set under a merged person or a raw id under the surviving person', async () => {
    await setEmailAddress(db.pool, 'unresolved:a2', 'Old@Example.com', 'test');
    expect(await emailAddresses(db.pool, ['1'])).toEqual(new Map([['1', 'old@example.com']]));
    await setEmailAddress(db.pool, '1', 'new@example.com', 'test');
    expect(await emailAddresses(db.pool, ['1', '3'])).toEqual(new Map([['1', 'new@example.com']]));
    await expect(setEmailAddress(db.pool, '3', 'not-an-address', 't')).rejects.toThrow(/email/);
  });

  it('stores addresses sealed with a key id, opens them after a rotation, and reseals', async () => {
    const k1 = 'a'.repeat(64);
    const k2 = 'b'.repeat(64);
    const before = process.env['POPS_FIELD_KEYS'];
    onTestFinished(() => {
      if (before === undefined) delete process.env['POPS_FIELD_KEYS'];
      else process.env['POPS_FIELD_KEYS'] = before;
      forgetKeys();
    });
    // Rows of the tests before were sealed with the state dir's key file: start without them.
    await db.pool.query('delete from contacts');
    process.env['POPS_FIELD_KEYS'] = `t1:${k1}`;
    forgetKeys();
    await setEmailAddress(db.pool, 'unresolved:sealed-1', 'Sealed.One@Example.com', 'test');
    const raw = await db.pool.query<{ email: null; key_id: string; email_sealed: string }>(
      `select email, key_id, email_sealed from contacts where person_key = 'unresolved:sealed-1'`,
    );
    expect(raw.rows[0]).toMatchObject({ email: null, key_id: 't1' });
    expect(JSON.stringify(raw.rows)).not.toContain('sealed.one');
    // Opened by hand with t1: AES-256-GCM, the person key as additional data.
    const [, , iv = '', body = ''] = String(raw.rows[0]?.email_sealed).split('.');
    const bytes = Buffer.from(body, 'base64url');
    const decipher = createDecipheriv(
      'aes-256-gcm',
      Buffer.from(k1, 'hex'),
      Buffer.from(iv, 'base64url'),
    );
    decipher.setAAD(Buffer.from('unresolved:sealed-1'));
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    const plain = Buffer.concat([
      decipher.update(bytes.subarray(0, bytes.length - 16)),
      decipher.final(),
    ]);
    expect(plain.toString()).toBe('sealed.one@example.com');

    // Rotation: t2 seals from now on, t1 still opens; reseal moves every row to t2.
    process.env['POPS_FIELD_KEYS'] = `t2:${k2},t1:${k1}`;
    forgetKeys();
    const key = 'unresolved:sealed-1';
    expect(await emailAddresses(db.pool, [key])).toEqual(
      new Map([[key, 'sealed.one@example.com']]),
    );
    expect(await resealContacts(db.pool)).toBeGreaterThanOrEqual(1);
    const after = await db.pool.query(`select distinct key_id from contacts`);
    expect(after.rows).toEqual([{ key_id: 't2' }]);
    expect(await emailAddresses(db.pool, [key])).toEqual(
      new Map([[key, 'sealed.one@example.com']]),
    );
    // Moved to another row, it does not open.
    await db.pool.query(
      `insert into contacts (person_key, email_sealed, key_id, source)
       select '1', email_sealed, key_id, 'copy' from contacts where person_key = $1`,
      [key],
    );
    await expect(emailAddresses(db.pool, ['1'])).rejects.toThrow(/another row/);
  });

  it('opens a value sealed with a key another process rotated in, without a restart', () => {
    const before = { state: process.env['POPS_STATE_DIR'], keys: process.env['POPS_FIELD_KEYS'] };
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-keys-'));
    onTestFinished(() => {
      for (const [name, value] of [
        ['POPS_STATE_DIR', before.state],
        ['POPS_FIELD_KEYS', before.keys],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      forgetKeys();
      fs.rmSync(state, { recursive: true, force: true });
    });
    process.env['POPS_STATE_DIR'] = state;
    delete process.env['POPS_FIELD_KEYS'];
    forgetKeys();
    const first = seal('a@example.com', 'p1');
    expect(first.keyId).toBe('k1');
    // pops privacy rotate-key in another process adds k2 and makes it current...
    const file = path.join(state, 'keys', 'field-keys.json');
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { keys: Record<string, string> };
    const k2 = 'c'.repeat(64);
    fs.writeFileSync(file, JSON.stringify({ current: 'k2', keys: { ...json.keys, k2 } }));
    // ...and pops privacy reseal seals a row with it (here by hand: AES-256-GCM, the context).
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', Buffer.from(k2, 'hex'), iv);
    cipher.setAAD(Buffer.from('p2'));
    const body = Buffer.concat([
      cipher.update('b@example.com', 'utf8'),
      cipher.final(),
      cipher.getAuthTag(),
    ]);
    const sealed = ['v1', 'k2', iv.toString('base64url'), body.toString('base64url')].join('.');
    expect(open(sealed, 'p2')).toBe('b@example.com');
    expect(open(first.sealed, 'p1')).toBe('a@example.com');
    expect(() => open(sealed.replace('v1.k2.', 'v1.k9.'), 'p2')).toThrow(
      'field key k9 is not in the key file',
    );
  });
});
