import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeCampaignSchedule,
  ensureCampaignSchedule,
  waitForRun,
} from '../client/campaigns.js';
import { queueName } from '../common/queues.js';
import { campaignSchema } from '../domain/campaigns/definition.js';
import { getCampaign } from '../domain/campaigns/store.js';
import type { SendNoticeResult } from '../workflows/sendNotice.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { startSmtpFixture, type SmtpFixture } from './fixtures/smtp.js';
import { addressOf, campaignOf, ledgerCounts, seedPersons } from './campaign-support.js';

let smtp: SmtpFixture;
let h: Harness;
const now = new Date();

beforeAll(async () => {
  smtp = await startSmtpFixture();
  process.env['POPS_SMTP_URL'] = smtp.url;
  process.env['POPS_SMTP_RATE'] = '0';
  h = await startHarness('campaign-flow', { api: true });
  await seedPersons(
    h.db.pool,
    [
      { id: 'ann', days: 20 },
      { id: 'bob', days: 30, consent: false },
      { id: 'cy', days: 70 },
    ],
    now,
  );
}, 120_000);

afterAll(async () => {
  await h?.close();
  await smtp?.close();
});

const json = (body: unknown) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

describe('campaigns over the API', () => {
  const definition = { ...campaignOf('flow'), maxLateness: '2h', catchUpWindow: '1h' };

  it('defines a campaign and its schedule, and refuses a bad one naming the field', async () => {
    const put = await h.fetch(`${h.base}/v1/campaigns/flow`, {
      ...json(definition),
      method: 'PUT',
    });
    expect(put.status).toBe(201);
    const again = await h.fetch(`${h.base}/v1/campaigns/flow`, {
      ...json(definition),
      method: 'PUT',
    });
    expect(await again.json()).toMatchObject({ created: false, changed: false });
    const schedule = await describeCampaignSchedule(h.client, 'flow');
    expect(schedule).toMatchObject({ paused: false });
    const bad = await h.fetch(`${h.base}/v1/campaigns/flow`, {
      ...json({ ...definition, holdout: { percent: 80 } }),
      method: 'PUT',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain(
      'holdout.percent',
    );
    // A cron Temporal would refuse, and templates that fail only when they render, are refused
    // before anything is stored.
    const refusals: Array<[Record<string, unknown>, string]> = [
      [
        { schedule: { cron: '61 * * * *', timeZone: 'Europe/Berlin' } },
        'schedule.cron: is not a valid cron',
      ],
      [
        { template: { ...definition.template, html: '{{nosuchhelper person.key}}' } },
        'template.html: Missing helper: "nosuchhelper"',
      ],
      [
        { template: { ...definition.template, text: '{{#each recommendations}}oops' } },
        'template.text',
      ],
      [{ template: { ...definition.template, text: '{{> secret}}' } }, 'template.text'],
      [
        { template: { ...definition.template, recommendations: { surface: 'no-such', k: 3 } } },
        'template.recommendations.surface: surface "no-such" does not exist',
      ],
    ];
    for (const [over, message] of refusals) {
      const refused = await h.fetch(`${h.base}/v1/campaigns/flow-bad`, {
        ...json({ ...definition, name: 'flow-bad', ...over }),
        method: 'PUT',
      });
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toContain(
        message,
      );
    }
    expect((await h.fetch(`${h.base}/v1/campaigns/flow-bad`)).status).toBe(404);
    expect(await describeCampaignSchedule(h.client, 'flow-bad')).toBeNull();
  });

  it('previews what a person would get, or why nothing', async () => {
    const ok = await h.fetch(
      `${h.base}/v1/campaigns/flow/preview`,
      json({ personKey: 'unresolved:ann' }),
    );
    expect(await ok.json()).toMatchObject({
      wouldSend: true,
      reasons: [],
      message: { to: addressOf('ann'), subject: 'We miss you, unresolved:ann' },
    });
    const bob = await h.fetch(
      `${h.base}/v1/campaigns/flow/preview`,
      json({ personKey: 'unresolved:bob' }),
    );
    expect(((await bob.json()) as { reasons: string[] }).reasons).toEqual([
      'no_consent: no marketing consent',
    ]);
    const cy = await h.fetch(
      `${h.base}/v1/campaigns/flow/preview`,
      json({ personKey: 'unresolved:cy' }),
    );
    expect(await cy.json()).toMatchObject({
      wouldSend: false,
      reasons: ['not_in_audience: the audience conditions do not hold'],
    });
    expect(smtp.messages).toHaveLength(0);
  });

  it('previews on the CLI by identifier, and refuses what names no person', async () => {
    const pops = popsRunner(() => ({ DATABASE_URL: h.db.url }));
    const ann = await pops(['campaign', 'preview', 'flow', 'user_id:ann', '--json']);
    expect(ann.code).toBe(0);
    expect(JSON.parse(ann.stdout)).toMatchObject({
      wouldSend: true,
      message: { to: addressOf('ann') },
    });
    const bob = await pops(['campaign', 'preview', 'flow', 'unresolved:bob', '--json']);
    expect(JSON.parse(bob.stdout)).toMatchObject({ reasons: ['no_consent: no marketing consent'] });
    const typo = await pops(['campaign', 'preview', 'flow', 'nobody-here']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('<person> "nobody-here": give an identifier');
    const gone = await pops(['campaign', 'preview', 'flow', '987654']);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain('<person> 987654: no such person id');
    // An email no person has, and a user id with neither events nor an address: refused, and the
    // answer shows no keyed hash of what was typed.
    for (const person of ['email:nobody-ever@example.com', 'user_id:nobody-ever']) {
      const none = await pops(['campaign', 'preview', 'flow', person]);
      expect(none.code).toBe(2);
      expect(none.stderr).toContain(`<person> ${person}: names no person pops knows`);
      expect(none.stdout + none.stderr).not.toContain('h1:');
    }
    const malformed = await pops(['campaign', 'preview', 'flow', 'email:not an email']);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain(
      '<person> identifier: not a valid email (the value is not shown: it may be personal data)',
    );
    expect(malformed.stderr).not.toContain('not an email');
    expect(smtp.messages).toHaveLength(0);
  }, 120_000);

  it('triggers a fire time now and reports it', async () => {
    const res = await h.fetch(`${h.base}/v1/campaigns/flow/trigger`, json({}));
    expect(res.status).toBe(202);
    const { workflowId, fireTime } = (await res.json()) as { workflowId: string; fireTime: string };
    expect(workflowId).toBe(`campaign/flow-${fireTime}`);
    const result = await waitForRun(h.client, workflowId);
    expect(result).toMatchObject({ status: 'completed', sent: 1, skipped: { no_consent: 1 } });
    expect(smtp.to(addressOf('ann'))).toHaveLength(1);
    const reports = await h.fetch(`${h.base}/v1/campaigns/flow/reports`);
    const body = (await reports.json()) as { runs: Array<{ run: { sent: number } }> };
    expect(body.runs[0]?.run).toMatchObject({ sent: 1, audience: 2 });
  }, 120_000);

  it('pauses a campaign: the schedule stops and a run waits until resume', async () => {
    const paused = await h.fetch(
      `${h.base}/v1/campaigns/flow/pause`,
      json({ reason: 'incident 7' }),
    );
    expect(await paused.json()).toMatchObject({ paused: true, changed: true });
    expect(await describeCampaignSchedule(h.client, 'flow')).toMatchObject({ paused: true });
    expect((await getCampaign(h.db.pool, 'flow'))?.pausedReason).toBe('incident 7');
    const fireTime = new Date(Math.floor(Date.now() / 1000) * 1000 + 1000).toISOString();
    const res = await h.fetch(`${h.base}/v1/campaigns/flow/trigger`, json({ fireTime }));
    const { workflowId } = (await res.json()) as { workflowId: string };
    // Give the run time to reach its first batch, which finds the campaign paused.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(await ledgerCounts(h.db.pool, 'flow', new Date(fireTime))).toEqual({});
    await h.fetch(`${h.base}/v1/campaigns/flow/resume`, json({ reason: 'resolved' }));
    expect(await describeCampaignSchedule(h.client, 'flow')).toMatchObject({ paused: false });
    const result = await waitForRun(h.client, workflowId);
    expect(result).toMatchObject({ status: 'completed', sent: 1 });
    expect(smtp.to(addressOf('ann'))).toHaveLength(2);
  }, 120_000);
});

describe('a schedule in Europe/Berlin across the 2027-03-28 DST change', () => {
  // Expected by luxon, independently of Temporal: 10:00 local each day, 09:00Z before the change
  // (CET) and 08:00Z from 28 March (CEST); every day once.
  it('fires 10:00 local once a day, an hour earlier in UTC after the change', async () => {
    const campaign = campaignSchema.parse({ ...campaignOf('dst'), name: 'dst' });
    await ensureCampaignSchedule(h.client, h.prefix, campaign, {
      startAt: new Date('2027-03-25T12:00:00Z'),
    });
    const schedule = await describeCampaignSchedule(h.client, 'dst');
    const expected = [26, 27, 28, 29, 30].map((day) =>
      DateTime.fromObject({ year: 2027, month: 3, day, hour: 10 }, { zone: 'Europe/Berlin' })
        .toUTC()
        .toISO({ suppressMilliseconds: false }),
    );
    expect(expected.slice(0, 3)).toEqual([
      '2027-03-26T09:00:00.000Z',
      '2027-03-27T09:00:00.000Z',
      '2027-03-28T08:00:00.000Z',
    ]);
    expect(schedule?.nextFireTimes).toEqual(expected);
  });

  it('fires an hourly :30 schedule once per real hour through the skipped local hour', async () => {
    const campaign = campaignSchema.parse({
      ...campaignOf('dst-hourly'),
      schedule: { cron: '30 * * * *', timeZone: 'Europe/Berlin' },
    });
    await ensureCampaignSchedule(h.client, h.prefix, campaign, {
      startAt: new Date('2027-03-27T23:00:00Z'),
    });
    const d = await h.client.schedule.getHandle('campaign/dst-hourly').describe();
    const times = d.info.nextActionTimes.map((t) => t.toISOString());
    // Local 00:30 CET, 01:30 CET, (02:30 does not exist), 03:30 CEST, 04:30 CEST, ...: each UTC
    // hour's :30 once, none twice, none missing.
    expect(times.slice(0, 5)).toEqual([
      '2027-03-27T23:30:00.000Z',
      '2027-03-28T00:30:00.000Z',
      '2027-03-28T01:30:00.000Z',
      '2027-03-28T02:30:00.000Z',
      '2027-03-28T03:30:00.000Z',
    ]);
    expect(new Set(times).size).toBe(times.length);
  });
});

describe('a notice', () => {
  it('goes once to each consenting person of its audience', async () => {
    await h.db.pool.query(
      `insert into notice_audiences (notice_id, person_key)
       values ('inc-1', 'unresolved:ann'), ('inc-1', 'unresolved:bob'),
              ('inc-1', 'unresolved:zed')`,
    );
    const before = smtp.to(addressOf('ann')).length;
    const run = () =>
      h.client.workflow.execute('sendNotice', {
        workflowId: 'notice/inc-1',
        taskQueue: queueName(h.prefix, 'orchestration'),
        args: [
          {
            noticeId: 'inc-1',
            subject: 'About your recommendations',
            text: 'We showed you the wrong films yesterday.\n\nSorry.',
            purpose: 'marketing',
            requestedBy: 'playbook/inc-1',
          },
        ],
      }) as Promise<SendNoticeResult>;
    const result = await run();
    // zed has no address and no consent: consent is checked first.
    expect(result).toEqual({ sent: 1, skipped: { no_consent: 2 }, failed: 0, unknown: 0 });
    const again = await run();
    expect(again).toEqual(result);
    const mine = smtp.to(addressOf('ann')).slice(before);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.subject).toBe('About your recommendations');
    expect(mine[0]?.text).toContain('We showed you the wrong films yesterday.');
  }, 120_000);
});
