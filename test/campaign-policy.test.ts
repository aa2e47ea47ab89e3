import { createHmac } from 'node:crypto';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { campaignWorkflowId } from '../domain/campaigns/names.js';
import { suppressPersons } from '../domain/campaigns/control.js';
import { signUnsubscribe } from '../domain/campaigns/unsubscribe.js';
import { unsubscribeSecret } from '../domain/privacy/keys.js';
import { queueName } from '../common/queues.js';
import { consentedPersons, recordConsent } from '../domain/privacy/consent.js';
import type { RunCampaignResult } from '../workflows/runCampaign.js';
import { type Harness, startHarness } from './harness.js';
import { startSmtpFixture, type SmtpFixture } from './fixtures/smtp.js';
import {
  addressOf,
  campaignOf,
  defineCampaign,
  runFireTime,
  seedPersons,
} from './campaign-support.js';

let smtp: SmtpFixture;
let SECRET: string;
let h: Harness;
const now = new Date();
const ids = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(2, '0')}`);

beforeAll(async () => {
  smtp = await startSmtpFixture();
  process.env['POPS_SMTP_URL'] = smtp.url;
  process.env['POPS_SMTP_RATE'] = '0';
  process.env['POPS_SMTP_MAX_CONNECTIONS'] = '1';
  delete process.env['POPS_UNSUBSCRIBE_SECRET'];
  h = await startHarness('campaign-policy', { api: true });
  // The secret the served API signs with: with the variable unset, the state dir's random one.
  SECRET = unsubscribeSecret();
}, 120_000);

afterAll(async () => {
  await h?.close();
  await smtp?.close();
});

const second = (t: number) => new Date(Math.floor(t / 1000) * 1000);

describe('consent withdrawn mid-run', () => {
  it('stops sends by one-click unsubscribe, a consent event or a suppression', async () => {
    const people = ids('m', 24);
    await seedPersons(
      h.db.pool,
      people.map((id) => ({ id, days: 20 })),
      now,
    );
    await defineCampaign(h.db.pool, {
      ...campaignOf('midrun'),
      audience: {
        purpose: 'marketing',
        store: 'online',
        where: [{ feature: 'person_days_since_last_rating', between: [14, 60] }],
      },
    });
    smtp.delayMs = 150;
    const fireTime = second(Date.now());
    const handle = await h.client.workflow.start('runCampaign', {
      workflowId: campaignWorkflowId('midrun', fireTime),
      taskQueue: queueName(h.prefix, 'orchestration'),
      args: [{ campaign: 'midrun', fireTime: fireTime.toISOString() }],
    });
    while (smtp.to(addressOf('m00')).length === 0) await new Promise((r) => setTimeout(r, 10));

    const token = signUnsubscribe(SECRET, {
      personKey: 'unresolved:m23',
      purpose: 'marketing',
      campaign: 'midrun',
    });
    // RFC 8058: the mail client POSTs the form body, without any API token.
    const post = () =>
      fetch(`${h.base}/v1/unsubscribe/${token}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'List-Unsubscribe=One-Click',
      });
    const first = await post();
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ unsubscribed: true, purpose: 'marketing', changed: true });
    expect(await (await post()).json()).toMatchObject({ changed: false });
    const forged = await fetch(`${h.base}/v1/unsubscribe/${token.slice(0, -2)}xx`, {
      method: 'POST',
    });
    expect(forged.status).toBe(404);
    await recordConsent(h.db.pool, {
      identifier: { type: 'user_id', value: 'm22' },
      purpose: 'marketing',
      granted: false,
      source: 'test',
      actor: 'test',
    });
    await suppressPersons(h.db.pool, {
      key: 'incident-9',
      personKeys: ['unresolved:m21'],
      reason: 'bad recommendations',
      actor: 'test',
    });

    const result = (await handle.result()) as RunCampaignResult;
    smtp.delayMs = 0;
    expect(result).toMatchObject({
      status: 'completed',
      sent: 21,
      skipped: { no_consent: 2, suppressed: 1 },
    });
    for (const id of ['m21', 'm22', 'm23']) expect(smtp.to(addressOf(id))).toHaveLength(0);
    for (const id of people.slice(0, 21)) expect(smtp.to(addressOf(id))).toHaveLength(1);
  }, 180_000);
});

describe('a frequency cap across two campaigns in one week', () => {
  it('lets the first campaign send and caps the second', async () => {
    const people = ids('c', 6);
    await seedPersons(
      h.db.pool,
      people.map((id) => ({ id, days: 30 })),
      now,
    );
    const cap = { max: 1, days: 7 };
    const audience = {
      purpose: 'marketing' as const,
      store: 'online' as const,
      where: [{ feature: 'person_days_since_last_rating', between: [25, 35] as [number, number] }],
    };
    await defineCampaign(h.db.pool, { ...campaignOf('cap-a'), audience, frequencyCap: cap });
    await defineCampaign(h.db.pool, { ...campaignOf('cap-b'), audience, frequencyCap: cap });
    const a = await runFireTime(h.client, h.prefix, 'cap-a', second(Date.now() - 2000));
    const b = await runFireTime(h.client, h.prefix, 'cap-b', second(Date.now() - 1000));
    expect(a).toMatchObject({ sent: 6 });
    expect(b).toMatchObject({ sent: 0, skipped: { capped: 6 } });
    for (const id of people) expect(smtp.to(addressOf(id))).toHaveLength(1);
    const slots = await h.db.pool.query<{ campaign: string; n: number }>(
      `select campaign, count(*)::int as n from campaign_cap_slots
        where person_key like 'unresolved:c%' group by campaign`,
    );
    expect(slots.rows).toEqual([{ campaign: 'cap-a', n: 6 }]);
  }, 120_000);
});

describe('a holdout', () => {
  it('holds the same persons out of every run as would-have-sent, mailing none', async () => {
    const people = ids('h', 40);
    await seedPersons(
      h.db.pool,
      people.map((id) => ({ id, days: 50 })),
      now,
    );
    const audience = {
      purpose: 'marketing' as const,
      store: 'online' as const,
      where: [{ feature: 'person_days_since_last_rating', between: [45, 55] as [number, number] }],
    };
    await defineCampaign(h.db.pool, {
      ...campaignOf('held'),
      audience,
      holdout: { percent: 30, salt: 'held-v1' },
    });
    const heldIn = async (fireTime: Date) => {
      await runFireTime(h.client, h.prefix, 'held', fireTime);
      const { rows } = await h.db.pool.query<{ person_key: string }>(
        `select person_key from campaign_sends
          where campaign = 'held' and fire_time = $1 and status = 'would_send' order by 1`,
        [fireTime],
      );
      return rows.map((r) => r.person_key);
    };
    const first = await heldIn(second(Date.now() - 3000));
    const again = await heldIn(second(Date.now() - 1000));
    expect(again).toEqual(first);
    // Binomial(40, 0.3): mean 12, sd 2.9; 4 sd either side.
    expect(first.length).toBeGreaterThanOrEqual(1);
    expect(first.length).toBeLessThanOrEqual(24);
    for (const key of first) expect(smtp.to(addressOf(key.slice(11)))).toHaveLength(0);
    const sentTo = people.filter((id) => !first.includes(`unresolved:${id}`));
    for (const id of sentTo) expect(smtp.to(addressOf(id))).toHaveLength(2);
  }, 120_000);
});

describe('quiet hours across time zones', () => {
  it('holds a person in a quiet zone until the window ends, sends others at once', async () => {
    // A window in each person's zone that holds now in Tokyo and ends at the next whole minute
    // plus one there; New York is 13-14 hours off, outside it.
    const tokyo = DateTime.now().setZone('Asia/Tokyo');
    const end = tokyo.startOf('minute').plus({ minutes: 2 });
    const start = tokyo.minus({ hours: 1 });
    await seedPersons(
      h.db.pool,
      [
        { id: 'qtokyo', days: 10, timeZone: 'Asia/Tokyo' },
        { id: 'qny', days: 10, timeZone: 'America/New_York' },
      ],
      now,
    );
    const audience = {
      purpose: 'marketing' as const,
      store: 'online' as const,
      where: [{ feature: 'person_days_since_last_rating', between: [9, 11] as [number, number] }],
    };
    const quietHours = { start: start.toFormat('HH:mm'), end: end.toFormat('HH:mm') };
    await defineCampaign(h.db.pool, {
      ...campaignOf('quiet-skip'),
      audience,
      quietHours: { ...quietHours, behaviour: 'skip' },
    });
    await defineCampaign(h.db.pool, {
      ...campaignOf('quiet-hold'),
      audience,
      quietHours: { ...quietHours, behaviour: 'hold' },
    });
    const skipped = await runFireTime(h.client, h.prefix, 'quiet-skip', second(Date.now()));
    expect(skipped).toMatchObject({ sent: 1, skipped: { quiet_hours: 1 } });
    const fireTime = second(Date.now());
    const run = runFireTime(h.client, h.prefix, 'quiet-hold', fireTime);
    let held: { release_at: Date } | undefined;
    while (!held) {
      const { rows } = await h.db.pool.query<{ release_at: Date }>(
        `select release_at from campaign_sends where campaign = 'quiet-hold'
           and person_key = 'unresolved:qtokyo' and status = 'held'`,
      );
      held = rows[0];
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(held.release_at.toISOString()).toBe(end.toUTC().toISO());
    // New York's send of this run goes at once (it may still be in flight as Tokyo is held).
    while (smtp.to(addressOf('qny')).length < 2) await new Promise((r) => setTimeout(r, 20));
    expect(smtp.to(addressOf('qtokyo'))).toHaveLength(0);
    const result = await run;
    expect(result).toMatchObject({ status: 'completed', sent: 2, held: 0 });
    const [message] = smtp.to(addressOf('qtokyo'));
    expect(message).toBeDefined();
    expect(Date.now()).toBeGreaterThanOrEqual(end.toMillis());
  }, 300_000);
});

describe('one-click unsubscribe after identities move', () => {
  const P = 8_000_001;
  const post = (personKey: string) => {
    const token = signUnsubscribe(SECRET, { personKey, purpose: 'marketing', campaign: 'c' });
    return fetch(`${h.base}/v1/unsubscribe/${token}`, {
      method: 'POST',
      body: 'List-Unsubscribe=One-Click',
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  };
  const grant = (type: string, value: string) =>
    recordConsent(h.db.pool, {
      identifier: { type, value },
      purpose: 'marketing',
      granted: true,
      source: 'test',
      actor: 'test',
      at: new Date(Date.now() - 60_000),
    });

  it('withdraws for the person a token named, though merged into another since', async () => {
    // Person P+1 (anonymous id mv-a) was mailed, then merged into P (user id mv-u).
    await h.db.pool.query(
      `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
       values ($1, $1, null, now(), 1, null), ($2, $1, $1, now(), 2, now())`,
      [P, P + 1],
    );
    await h.db.pool.query(
      `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
       values ('user_id', 'mv-u', $1, now(), 1), ('anonymous_id', 'mv-a', $2, now(), 2)`,
      [P, P + 1],
    );
    await grant('anonymous_id', 'mv-a');
    expect(await consentedPersons(h.db.pool, [String(P)], 'marketing')).toEqual(
      new Set([String(P)]),
    );
    const answer = await post(String(P + 1));
    expect(answer).toEqual({
      status: 200,
      body: { unsubscribed: true, purpose: 'marketing', changed: true },
    });
    expect(await consentedPersons(h.db.pool, [String(P)], 'marketing')).toEqual(new Set());
  });

  it('records an unresolved anonymous id as such, so that a later merge keeps it', async () => {
    await h.db.pool.query(
      `insert into events (message_id, source, type, event, person_id, anonymous_id, ts)
       values ('ua-1', 'web', 'track', 'Viewed', 'mv-anon', 'mv-anon', now())`,
    );
    await grant('anonymous_id', 'mv-anon');
    expect((await post('unresolved:mv-anon')).body).toMatchObject({ changed: true });
    const { rows } = await h.db.pool.query(
      `select identifier_type as type, granted from consent_events
        where identifier_value = 'mv-anon' order by id`,
    );
    expect(rows).toEqual([
      { type: 'anonymous_id', granted: true },
      { type: 'anonymous_id', granted: false },
    ]);
    // Identity resolution puts the anonymous id in the graph: the person has withdrawn.
    await h.db.pool.query(
      `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
       values ($1, $1, null, now(), 3, null)`,
      [P + 2],
    );
    await h.db.pool.query(
      `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
       values ('anonymous_id', 'mv-anon', $1, now(), 3)`,
      [P + 2],
    );
    expect(await consentedPersons(h.db.pool, [String(P + 2)], 'marketing')).toEqual(new Set());
  });

  // A token as anyone can make one: the payload and its HMAC under a given secret.
  const forge = (secret: string, payload: object) => {
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
  };
  const postToken = (token: string) =>
    fetch(`${h.base}/v1/unsubscribe/${token}`, {
      method: 'POST',
      body: 'List-Unsubscribe=One-Click',
    }).then(async (r) => ({
      status: r.status,
      body: (await r.json()) as { error?: { message?: string } },
    }));
  const consentRows = async (value: string) =>
    (
      await h.db.pool.query<{ purpose: string; granted: boolean }>(
        `select purpose, granted from consent_events where identifier_value = $1 order by id`,
        [value],
      )
    ).rows;

  it('refuses a token signed with the public default secret of old versions', async () => {
    await grant('user_id', 'old-secret-u');
    const token = forge('pops-local-unsubscribe-secret', {
      p: 'unresolved:old-secret-u',
      u: 'marketing',
      c: 'c',
    });
    const answer = await postToken(token);
    expect(answer.status).toBe(404);
    expect(answer.body.error?.message).toContain('token: is not a valid unsubscribe token');
    expect(await consentRows('old-secret-u')).toEqual([{ purpose: 'marketing', granted: true }]);
  });

  it('refuses a genuine token for a purpose its campaign does not unsubscribe from', async () => {
    await h.db.pool.query(
      `insert into events (message_id, source, type, event, person_id, user_id, ts)
       values ('pu-1', 'web', 'track', 'Viewed', 'pu-user', 'pu-user', now())`,
    );
    // midrun (the first test) is a marketing campaign; c is no campaign: marketing only.
    for (const campaign of ['midrun', 'c']) {
      for (const purpose of ['personalization', 'analytics']) {
        const token = forge(SECRET, { p: 'unresolved:pu-user', u: purpose, c: campaign });
        const answer = await postToken(token);
        expect(answer.status).toBe(404);
        expect(answer.body.error?.message).toBe(
          `token: purpose "${purpose}" is not one campaign "${campaign}" can unsubscribe from ` +
            '(marketing)',
        );
      }
    }
    expect(await consentRows('pu-user')).toEqual([]);
    // The campaign's own purpose is still honoured.
    const token = forge(SECRET, { p: 'unresolved:pu-user', u: 'marketing', c: 'midrun' });
    expect(await postToken(token)).toEqual({
      status: 200,
      body: { unsubscribed: true, purpose: 'marketing', changed: true },
    });
    expect(await consentRows('pu-user')).toEqual([{ purpose: 'marketing', granted: false }]);
  });

  it('writes nothing for a deleted or never-held raw id, and tells no one', async () => {
    // A deletion tombstoned the user id ts-gone: the keyed hash of its type and value.
    const key = Buffer.from(process.env['POPS_PII_HMAC_KEY'] ?? '', 'hex');
    const hash = createHmac('sha256', key).update('user_id\u0000ts-gone').digest('hex');
    await h.db.pool.query(
      `insert into privacy_requests (id, kind, identifier_hash, requested_by, status)
       values ($1, 'delete', $2, 'test', 'done')`,
      [`delete-${hash.slice(0, 24)}`, hash],
    );
    await h.db.pool.query(
      'insert into privacy_tombstones (identifier_hash, request_id) values ($1, $2)',
      [hash, `delete-${hash.slice(0, 24)}`],
    );
    for (const raw of ['ts-gone', 'victim-user-42']) {
      const token = forge(SECRET, { p: `unresolved:${raw}`, u: 'marketing', c: 'c' });
      expect(await postToken(token)).toEqual({
        status: 200,
        body: { unsubscribed: true, purpose: 'marketing', changed: false },
      });
      expect(await consentRows(raw)).toEqual([]);
    }
    // A graph key naming no person answers the same.
    expect(await post('987654321')).toEqual({
      status: 200,
      body: { unsubscribed: true, purpose: 'marketing', changed: false },
    });
  });
});
