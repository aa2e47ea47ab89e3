/**
 * PII minimization at ingestion, over both doors (the Segment HTTP API and an NDJSON import):
 * emails and phones are stored only as their keyed hash, the address to send to only sealed, and
 * a scan of every table finds neither in clear; identity still links on them, lookups by the
 * clear value still find the person, and an imported identify's consent is captured.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deletePersonData,
  exportBundle,
  exportPersonData,
  waitForRequest,
} from '../client/privacy.js';
import { emailAddresses } from '../domain/privacy/contacts.js';
import { importEvents } from '../ingest/events.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { type Harness, startHarness } from './harness.js';
import { resolveAll } from './identity-support.js';
import { postBatch, scanEveryTable } from './privacy-support.js';
import { hashedValueOf } from './support.js';

let h: Harness;
let writeKey: string;

const WEB = { user: 'min-user-7q', email: 'Min.Person.Q7@Example.org', phone: '+1 (415) 555-0199' };
const FILE = { user: 'file-user-3k', email: 'File.Person.K3@Example.net', phone: '020 7946 0321' };
const at = (minute: number) => new Date(Date.UTC(2026, 0, 7, 9, minute)).toISOString();

beforeAll(async () => {
  h = await startHarness('privacy-minimize', { api: true });
  writeKey = (await createWriteKey(h.db.pool, 'web', 'tester')).key;
  await postBatch(h.base, writeKey, [
    {
      type: 'identify',
      messageId: 'web-1',
      userId: WEB.user,
      timestamp: at(1),
      traits: { email: WEB.email, phone: WEB.phone, plan: 'pro' },
    },
    // A second visitor gives the same address (other case) on a track call: the same person.
    {
      type: 'track',
      messageId: 'web-2',
      anonymousId: 'min-anon-2',
      event: 'Viewed',
      timestamp: at(2),
      context: { traits: { email: WEB.email.toUpperCase(), phone: 'not a phone' } },
    },
  ]);
  const file = path.join(os.tmpdir(), `pops-minimize-${process.pid}.ndjson`);
  const lines = [
    {
      type: 'identify',
      messageId: 'file-1',
      userId: FILE.user,
      timestamp: at(3),
      traits: { email: FILE.email, phone: FILE.phone, consent: { marketing: false } },
    },
    { type: 'track', messageId: 'file-2', userId: FILE.user, event: 'Viewed', timestamp: at(4) },
  ];
  fs.writeFileSync(file, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  try {
    await importEvents(h.db.pool, file, { source: 'crm-file' });
  } finally {
    fs.rmSync(file, { force: true });
  }
  await resolveAll(h.db.pool);
}, 120_000);

afterAll(async () => {
  await h?.close();
});

describe('PII minimization', () => {
  it('stores emails and phones only as their keyed hash: no table holds one in clear', async () => {
    const clear = [
      WEB.email,
      FILE.email,
      '4155550199',
      '415) 555-0199',
      '02079460321',
      '020 7946 0321',
      'not a phone',
    ];
    expect(await scanEveryTable(h.db.pool, clear, [])).toEqual([]);

    const { rows } = await h.db.pool.query<{ message_id: string; traits: unknown; ctx: unknown }>(
      `select message_id, traits, context -> 'traits' as ctx from events order by message_id`,
    );
    expect(rows).toEqual([
      {
        message_id: 'file-1',
        traits: {
          email: hashedValueOf('email', 'file.person.k3@example.net'),
          phone: hashedValueOf('phone', '02079460321'),
          consent: { marketing: false },
        },
        ctx: null,
      },
      { message_id: 'file-2', traits: null, ctx: null },
      {
        message_id: 'web-1',
        traits: {
          email: hashedValueOf('email', 'min.person.q7@example.org'),
          phone: hashedValueOf('phone', '+14155550199'),
          plan: 'pro',
        },
        ctx: null,
      },
      {
        message_id: 'web-2',
        traits: null,
        ctx: { email: hashedValueOf('email', 'min.person.q7@example.org'), phone: '[invalid]' },
      },
    ]);
  });

  it('links on the hashed values and finds the person by the clear ones', async () => {
    const { rows } = await h.db.pool.query<{ type: string; value: string; person: string }>(
      `select i.type, i.value, p.canonical_id::text as person
         from identifiers i join persons p on p.id = i.person_id order by 3, 1, 2`,
    );
    const webPerson = rows.find((r) => r.value === WEB.user)?.person;
    const filePerson = rows.find((r) => r.value === FILE.user)?.person;
    expect(webPerson).toBeDefined();
    expect(rows.filter((r) => r.person === webPerson).map((r) => `${r.type}:${r.value}`)).toEqual(
      [
        'anonymous_id:min-anon-2',
        `email:${hashedValueOf('email', 'min.person.q7@example.org')}`,
        `phone:${hashedValueOf('phone', '+14155550199')}`,
        `user_id:${WEB.user}`,
      ].sort(),
    );
    expect(rows.filter((r) => r.person === filePerson)).toHaveLength(3);

    for (const [type, value] of [
      ['email', ' MIN.person.q7@example.ORG'],
      ['phone', '+1 415 555 0199'],
    ] as const) {
      const url = `${h.base}/v1/identity/identifiers/${type}/${encodeURIComponent(value)}`;
      const answer = await h.fetch(url);
      expect(answer.status).toBe(200);
      expect(((await answer.json()) as { personId: number }).personId).toBe(Number(webPerson));
    }
  });

  it('seals the address to send to, which opens for the surviving person', async () => {
    const raw = await h.db.pool.query<{ person_key: string; email: null; key_id: string }>(
      `select person_key, email, key_id from contacts order by person_key`,
    );
    // The track call's sender is only an anonymous id: its address is kept under that id.
    expect(raw.rows.map((r) => [r.person_key, r.email])).toEqual([
      ['unresolved:file-user-3k', null],
      ['unresolved:min-anon-2', null],
      ['unresolved:min-user-7q', null],
    ]);
    const { rows } = await h.db.pool.query<{ id: string }>(
      `select p.canonical_id::text as id from identifiers i join persons p on p.id = i.person_id
        where i.type = 'user_id' and i.value = $1`,
      [WEB.user],
    );
    const key = rows[0]?.id ?? '';
    expect(await emailAddresses(h.db.pool, [key])).toEqual(
      new Map([[key, 'min.person.q7@example.org']]),
    );
  });

  it('captures the consent an imported identify states, effective at its timestamp', async () => {
    const { rows } = await h.db.pool.query(
      `select identifier_type, identifier_value, purpose, granted, source, effective_at
         from consent_events order by id`,
    );
    expect(rows).toEqual([
      {
        identifier_type: 'user_id',
        identifier_value: FILE.user,
        purpose: 'marketing',
        granted: false,
        source: 'segment:crm-file',
        effective_at: new Date(at(3)),
      },
    ]);
  });
});

describe('what breakers found', () => {
  it('deletes by email the events no merge has resolved yet, with their senders', async () => {
    const email = 'Unmerged.Person@Example.io';
    await postBatch(h.base, writeKey, [
      { type: 'identify', messageId: 'unm-1', userId: 'unm-user', traits: { email } },
      {
        type: 'track',
        messageId: 'unm-2',
        anonymousId: 'unm-anon',
        event: 'Viewed',
        context: { traits: { email: email.toLowerCase() } },
      },
      // The same sender later, without the address: theirs too.
      { type: 'track', messageId: 'unm-3', anonymousId: 'unm-anon', event: 'Viewed' },
    ]);
    const started = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'email', value: email },
      reason: 'ticket 9-1',
      requestedBy: 'dpo',
    });
    const request = await waitForRequest(h.client, h.db.pool, started);
    // Hand-counted: three events, two sealed addresses (unresolved:unm-user, unresolved:unm-anon),
    // tombstones for the email and both senders.
    expect(request?.counts).toMatchObject({ events: 3, contacts: 2, tombstones: 3 });
    const needles = ['unm-user', 'unm-anon', hashedValueOf('email', email.toLowerCase())];
    expect(await scanEveryTable(h.db.pool, needles, [])).toEqual([]);
  });

  it('reports an import of a deleted person as dropped, not stored nor quarantined', async () => {
    const file = path.join(os.tmpdir(), `pops-minimize-dropped-${process.pid}.ndjson`);
    const again = [
      { type: 'identify', messageId: 'unm-9', userId: 'unm-user', timestamp: at(9) },
      {
        type: 'track',
        messageId: 'unm-10',
        anonymousId: 'x-other',
        event: 'Viewed',
        timestamp: at(10),
        traits: { email: 'UNMERGED.person@example.io' },
      },
      // The same user id spelled another way in the same file (identity trims it).
      {
        type: 'track',
        messageId: 'unm-11',
        userId: ' unm-user ',
        event: 'Viewed',
        timestamp: at(11),
      },
    ];
    fs.writeFileSync(file, again.map((l) => `${JSON.stringify(l)}\n`).join(''));
    try {
      const result = await importEvents(h.db.pool, file, { source: 'crm-file' });
      expect(result).toMatchObject({ read: 3, inserted: 0, dropped: 3, quarantined: 0 });
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('minimizes emails in context.traits sent as an array', async () => {
    await postBatch(h.base, writeKey, [
      {
        type: 'track',
        messageId: 'arr-1',
        anonymousId: 'arr-anon',
        event: 'Viewed',
        context: { traits: [{ email: 'Ctx.Array@Example.io' }, 'loose'] },
      },
    ]);
    expect(await scanEveryTable(h.db.pool, ['ctx.array@example.io'], [])).toEqual([]);
    const { rows } = await h.db.pool.query<{ t: unknown }>(
      `select context -> 'traits' as t from events where message_id = 'arr-1'`,
    );
    expect(rows[0]?.t).toEqual([
      { email: hashedValueOf('email', 'ctx.array@example.io') },
      'loose',
    ]);
  });

  it('keeps export bundles sealed at rest, and a deletion leaves other bundles alone', async () => {
    const exported = await exportPersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'user_id', value: WEB.user },
      requestedBy: 'dpo',
    });
    await waitForRequest(h.client, h.db.pool, exported);
    const address = WEB.email.toLowerCase();
    expect(await scanEveryTable(h.db.pool, [address], [])).toEqual([]);
    const bundle = (await exportBundle(h.db.pool, exported.requestId)) as Record<
      string,
      Record<string, Array<Record<string, unknown>>>
    >;
    expect(bundle['contacts']?.['contacts']?.map((c) => c['email'])).toEqual([address, address]);

    const other = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'email', value: 'nobody.here@example.io' },
      reason: 'ticket 9-2',
      requestedBy: 'dpo',
    });
    const done = await waitForRequest(h.client, h.db.pool, other);
    expect(done?.counts).toMatchObject({ privacy_exports: 0, events: 0 });
    expect(await exportBundle(h.db.pool, exported.requestId)).toEqual(bundle);
  });

  it('does not let a resent older message replace the address to send to', async () => {
    const identify = (id: string, email: string, timestamp: string) => ({
      type: 'identify',
      messageId: id,
      userId: 'resend-user',
      timestamp,
      traits: { email },
    });
    const old = identify('rs-1', 'old.addr@example.io', '2025-01-01T00:00:00Z');
    await postBatch(h.base, writeKey, [old]);
    await postBatch(h.base, writeKey, [
      identify('rs-2', 'new.addr@example.io', '2026-01-01T00:00:00Z'),
    ]);
    await postBatch(h.base, writeKey, [old]);
    const key = 'unresolved:resend-user';
    expect(await emailAddresses(h.db.pool, [key])).toEqual(new Map([[key, 'new.addr@example.io']]));
  });

  it('refuses identifiers PostgreSQL cannot store with 400, naming the field', async () => {
    const bad = { type: 'user_id', value: 'nul\u0000x' };
    for (const [method, route, body] of [
      ['PUT', '/v1/consent', { identifier: bad, purposes: { marketing: true } }],
      ['POST', '/v1/privacy/exports', { identifier: bad }],
      ['POST', '/v1/privacy/deletions', { identifier: bad, reason: 'r' }],
      [
        'PUT',
        '/v1/consent',
        { identifier: { type: 'email', value: 'a\u0000b@x.io' }, purposes: { analytics: true } },
      ],
    ] as const) {
      const answer = await h.fetch(`${h.base}${route}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(answer.status, `${method} ${route}`).toBe(400);
      expect(await answer.text()).toContain('identifier');
    }
  });
});
