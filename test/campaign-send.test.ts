import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAudit } from '../domain/audit.js';
import { storedReports } from '../domain/campaigns/store.js';
import { type Harness, startHarness } from './harness.js';
import { startSmtpFixture, type SmtpFixture } from './fixtures/smtp.js';
import {
  addressOf,
  campaignOf,
  defineCampaign,
  ledgerCounts,
  runFireTime,
  seedPersons,
} from './campaign-support.js';

let smtp: SmtpFixture;
let h: Harness;
const now = new Date();

beforeAll(async () => {
  smtp = await startSmtpFixture();
  // The io workers of this file read the SMTP settings from the environment.
  process.env['POPS_SMTP_URL'] = smtp.url;
  process.env['POPS_SMTP_RATE'] = '0';
  h = await startHarness('campaign-send');
  await seedPersons(
    h.db.pool,
    [
      { id: 'ann', days: 20 },
      { id: 'bob', days: 30, consent: false },
      { id: 'cy', days: 5 },
      { id: 'dee', days: 40, email: null },
      { id: 'eve', days: 50 },
      { id: 'fay', days: 55 },
      { id: 'gus', days: 45 },
      { id: 'hal', days: 25 },
    ],
    now,
  );
  smtp.faults.set(addressOf('eve'), { kind: 'permanent' });
  smtp.faults.set(addressOf('fay'), { kind: 'drop' });
  smtp.faults.set(addressOf('gus'), { kind: 'temporary', times: 1 });
  smtp.faults.set(addressOf('hal'), { kind: 'temporary' });
}, 120_000);

afterAll(async () => {
  await h?.close();
  await smtp?.close();
});

describe('a campaign run over SMTP', () => {
  const fireTime = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);

  it('sends once to each eligible person and records every other outcome by its kind', async () => {
    await defineCampaign(h.db.pool, campaignOf('win-back'));
    const result = await runFireTime(h.client, h.prefix, 'win-back', fireTime);
    expect(result).toMatchObject({
      status: 'completed',
      audience: 7,
      sent: 2,
      failed: 2,
      unknown: 1,
      skipped: { no_consent: 1, no_address: 1 },
    });
    expect(smtp.to(addressOf('ann'))).toHaveLength(1);
    // 451 once, then accepted on the retry inside the same attempt.
    expect(smtp.to(addressOf('gus'))).toHaveLength(1);
    expect(smtp.to(addressOf('eve'))).toHaveLength(0);
    expect(smtp.to(addressOf('hal'))).toHaveLength(0);
    // The connection dropped after DATA: the server read it, the sender cannot know: unknown.
    expect(smtp.dropped.filter((raw) => raw.includes(addressOf('fay')))).toHaveLength(1);
    expect(smtp.messages).toHaveLength(2);

    const { rows } = await h.db.pool.query<{ person_key: string; status: string; reason: string }>(
      `select person_key, status, reason from campaign_sends where campaign = 'win-back'
        order by person_key`,
    );
    const byPerson = Object.fromEntries(rows.map((r) => [r.person_key, r]));
    expect(byPerson['unresolved:eve']).toMatchObject({ status: 'failed' });
    expect(byPerson['unresolved:eve']?.reason).toMatch(/^permanent: .*550|^permanent:/);
    expect(byPerson['unresolved:hal']?.reason).toMatch(/^temporary:/);
    expect(byPerson['unresolved:fay']).toMatchObject({ status: 'unknown' });
    expect(byPerson['unresolved:cy']).toBeUndefined();
  }, 120_000);

  it('puts RFC 8058 one-click unsubscribe headers and both parts on every message', () => {
    const [message] = smtp.to(addressOf('ann'));
    const raw = (message?.raw ?? '').replace(/\r\n[ \t]+/g, ' ');
    expect(raw).toMatch(/^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r?$/m);
    const link = /^List-Unsubscribe: <(http[^>]+)>\r?$/m.exec(raw)?.[1];
    expect(link).toMatch(/\/v1\/unsubscribe\/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(message?.text).toContain(`Unsubscribe: ${link}`);
    expect(message?.text).toContain('Hello unresolved:ann');
    expect(message?.html).toContain('<p>Hello unresolved:ann</p>');
    expect(message?.subject).toBe('We miss you, unresolved:ann');
  });

  it('sends nothing more when the same fire time runs again', async () => {
    const again = await runFireTime(h.client, h.prefix, 'win-back', fireTime);
    expect(again).toMatchObject({ status: 'completed', sent: 2, unknown: 1 });
    expect(smtp.messages).toHaveLength(2);
    expect(smtp.dropped).toHaveLength(1);
  }, 120_000);

  it('gives back the cap slot of a failed send, keeps those of sent and unknown ones', async () => {
    const uncapped = await h.db.pool.query('select 1 from campaign_cap_slots');
    expect(uncapped.rows).toEqual([]);
    await defineCampaign(h.db.pool, campaignOf('capped', { frequencyCap: { max: 5, days: 7 } }));
    const result = await runFireTime(h.client, h.prefix, 'capped', fireTime);
    expect(result).toMatchObject({ sent: 2, failed: 2, unknown: 1 });
    const { rows } = await h.db.pool.query<{ person_key: string }>(
      `select person_key from campaign_cap_slots where campaign = 'capped' order by person_key`,
    );
    // ann and gus sent, fay unknown (it may have arrived); eve (550) and hal (451) failed.
    expect(rows.map((r) => r.person_key)).toEqual([
      'unresolved:ann',
      'unresolved:fay',
      'unresolved:gus',
    ]);
  }, 120_000);

  it('skips a fire time 10 h late past its 2 h maximum lateness and says so', async () => {
    const before = smtp.messages.length;
    const late = new Date(fireTime.getTime() - 10 * 3600_000);
    const result = await runFireTime(h.client, h.prefix, 'win-back', late);
    expect(result).toMatchObject({ status: 'late', maxLatenessMs: 2 * 3600_000 });
    expect((result as { lateByMs: number }).lateByMs).toBeGreaterThan(10 * 3600_000);
    expect(await ledgerCounts(h.db.pool, 'win-back', late)).toEqual({});
    expect(smtp.messages).toHaveLength(before);
    const reports = await storedReports(h.db.pool, 'win-back', late);
    expect(reports[0]?.report).toMatchObject({ status: 'late', sent: 0, audience: 0 });
    const audit = await h.db.pool.query<{ action: string }>(
      `select action from audit_log where action = 'campaign.run-late'`,
    );
    expect(audit.rows).toHaveLength(1);
    expect(await verifyAudit(h.db.pool)).toMatchObject({ ok: true });
  }, 120_000);
});
