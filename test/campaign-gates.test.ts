import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isHeldOut, nextLocalTime, quietUntil } from '../domain/campaigns/gates.js';
import { reserveCap } from '../domain/campaigns/ledger.js';
import { liftOf, newcombeInterval, wilson } from '../domain/campaigns/lift.js';
import { parseCampaign } from '../domain/campaigns/file.js';
import { signUnsubscribe, verifyUnsubscribe } from '../domain/campaigns/unsubscribe.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const quiet = { start: '21:00', end: '08:00' };
const at = new Date('2027-03-27T20:30:00Z');

describe('quiet hours in each person’s zone', () => {
  // By hand: at 20:30Z on 27 March 2027 it is 21:30 CET in Berlin (DST begins the next night at
  // 02:00, so 08:00 there is CEST, 06:00Z), 05:30 on the 28th in Tokyo (08:00 JST = 23:00Z),
  // 16:30 EDT in New York (outside), 02:00 IST in Kolkata (08:00 IST = 02:30Z).
  it.each([
    ['Europe/Berlin', '2027-03-28T06:00:00.000Z'],
    ['Asia/Tokyo', '2027-03-27T23:00:00.000Z'],
    ['America/New_York', undefined],
    ['Asia/Kolkata', '2027-03-28T02:30:00.000Z'],
  ])('%s', (zone, until) => {
    expect(quietUntil(quiet, zone, at)?.toISOString()).toBe(until);
  });

  it('a window that does not wrap midnight, and an empty one', () => {
    const day = { start: '12:00', end: '14:00' };
    expect(quietUntil(day, 'UTC', new Date('2027-01-01T13:59:00Z'))?.toISOString()).toBe(
      '2027-01-01T14:00:00.000Z',
    );
    expect(quietUntil(day, 'UTC', new Date('2027-01-01T14:00:00Z'))).toBeUndefined();
    expect(quietUntil({ start: '09:00', end: '09:00' }, 'UTC', at)).toBeUndefined();
  });
});

describe('each person’s local send time', () => {
  it('is the next such local time, DST included', () => {
    // 10:00 CET on the 27th (09:00Z) has passed at 09:30Z; the next is 10:00 CEST on the 28th.
    expect(
      nextLocalTime('10:00', 'Europe/Berlin', new Date('2027-03-27T09:30:00Z')).toISOString(),
    ).toBe('2027-03-28T08:00:00.000Z');
    // 02:30 does not exist in Berlin on the 28th: moved forward over the gap to 03:30 CEST.
    expect(
      nextLocalTime('02:30', 'Europe/Berlin', new Date('2027-03-28T00:00:00Z')).toISOString(),
    ).toBe('2027-03-28T01:30:00.000Z');
    expect(
      nextLocalTime('10:00', 'Asia/Tokyo', new Date('2027-03-28T00:00:00Z')).toISOString(),
    ).toBe('2027-03-28T01:00:00.000Z');
  });
});

describe('the holdout draw', () => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `unresolved:u${i}`);

  it('is the same for a person in every run, and at its share within binomial tolerance', () => {
    const first = keys.filter((k) => isHeldOut('win-back', k, 10));
    const again = keys.filter((k) => isHeldOut('win-back', k, 10));
    expect(again).toEqual(first);
    // Binomial(10000, 0.1): mean 1000, sd 30; 4 sd either side.
    expect(first.length).toBeGreaterThanOrEqual(880);
    expect(first.length).toBeLessThanOrEqual(1120);
  });

  it('holds out other persons under another salt', () => {
    const a = new Set(keys.filter((k) => isHeldOut('a', k, 10)));
    const both = keys.filter((k) => isHeldOut('b', k, 10) && a.has(k)).length;
    // Independent draws: about 1% of persons in both (100, sd ≈ 9.9); 5 sd either side.
    expect(both).toBeGreaterThan(50);
    expect(both).toBeLessThan(150);
    expect(keys.some((k) => isHeldOut('a', k, 0))).toBe(false);
  });
});

describe('lift statistics against scipy', () => {
  const cases = [
    { x1: 30, n1: 100, x2: 5, n2: 40 },
    { x1: 0, n1: 10, x2: 3, n2: 12 },
    { x1: 412, n1: 900, x2: 38, n2: 100 },
    { x1: 7, n1: 7, x2: 1, n2: 3 },
  ];
  let oracle: Array<{
    wilson1: [number, number];
    wilson2: [number, number];
    interval: [number, number];
    pValue: number;
  }>;

  beforeAll(() => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lift-')), 'in.json');
    fs.writeFileSync(file, JSON.stringify({ cases }));
    const script = path.join(import.meta.dirname, 'fixtures/campaign_lift_oracle.py');
    oracle = (
      JSON.parse(execFileSync('python3', [script, file]).toString()) as { results: typeof oracle }
    ).results;
  });

  it('Wilson intervals, the Newcombe interval and the z-test p-value match', () => {
    cases.forEach((c, i) => {
      const o = oracle[i];
      if (!o) throw new Error(`no oracle result ${i}`);
      const w1 = wilson(c.x1, c.n1);
      const w2 = wilson(c.x2, c.n2);
      const d = newcombeInterval(c.x1, c.n1, c.x2, c.n2);
      const lift = liftOf({ n: c.n1, returned: c.x1 }, { n: c.n2, returned: c.x2 });
      for (const [mine, theirs] of [
        [w1, o.wilson1],
        [w2, o.wilson2],
        [d, o.interval],
      ] as const) {
        expect(mine[0]).toBeCloseTo(theirs[0], 10);
        expect(mine[1]).toBeCloseTo(theirs[1], 10);
      }
      expect(lift.pValue ?? NaN).toBeCloseTo(o.pValue, 10);
      expect(lift.difference).toBeCloseTo(c.x1 / c.n1 - c.x2 / c.n2, 12);
    });
  });

  it('answers no figures for an empty group', () => {
    expect(liftOf({ n: 10, returned: 3 }, { n: 0, returned: 0 })).toMatchObject({
      difference: null,
      interval: null,
      pValue: null,
    });
  });
});

describe('definitions and tokens', () => {
  it('names the file, the field and the value of a bad definition', () => {
    const bad = {
      name: 'x',
      audience: { where: [{ feature: 'f', between: [60, 14] }] },
      schedule: { cron: '0 10 * * *', timeZone: 'Mars/Olympus' },
      sender: 'not-an-address',
      subject: 's',
      template: { html: 'h', text: 't' },
    };
    expect(() => parseCampaign(bad, 'campaigns/x.yaml')).toThrow(
      'campaigns/x.yaml: audience.where.0.between: the low end is above the high end' +
        ' (got [60,14]); schedule.timeZone: is not an IANA time zone (e.g. Europe/Berlin)' +
        ' (got "Mars/Olympus"); sender: is not an email address (got "not-an-address")',
    );
  });

  it('verifies its own unsubscribe tokens and refuses altered ones', () => {
    const token = signUnsubscribe('s'.repeat(20), {
      personKey: 'unresolved:ann',
      purpose: 'marketing',
      campaign: 'win-back',
    });
    expect(verifyUnsubscribe('s'.repeat(20), token)).toEqual({
      personKey: 'unresolved:ann',
      purpose: 'marketing',
      campaign: 'win-back',
    });
    expect(verifyUnsubscribe('t'.repeat(20), token)).toBeUndefined();
    const [body, mac] = token.split('.');
    const forged = Buffer.from(
      JSON.stringify({ p: 'unresolved:bob', u: 'marketing', c: 'win-back' }),
    ).toString('base64url');
    expect(verifyUnsubscribe('s'.repeat(20), `${forged}.${mac}`)).toBeUndefined();
    expect(verifyUnsubscribe('s'.repeat(20), `${body}`)).toBeUndefined();
  });
});

describe('frequency-cap slots', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase('campaign-gates');
  });
  afterAll(async () => db.close());

  it('grant one of many concurrent reservations across campaigns under a cap of one', async () => {
    const at = new Date('2027-03-01T10:00:00Z');
    const grants = await Promise.all(
      ['a', 'b', 'c', 'd', 'e', 'f'].map((campaign) =>
        reserveCap(
          db.pool,
          { personKey: 'unresolved:ann', campaign, fireTime: at, at },
          { max: 1, days: 7 },
        ),
      ),
    );
    expect(grants.filter(Boolean)).toHaveLength(1);
    // The same run asking again keeps its slot; 7 days and a second later the window has moved.
    const winner = ['a', 'b', 'c', 'd', 'e', 'f'][grants.indexOf(true)] as string;
    expect(
      await reserveCap(
        db.pool,
        { personKey: 'unresolved:ann', campaign: winner, fireTime: at, at },
        { max: 1, days: 7 },
      ),
    ).toBe(true);
    const later = new Date(at.getTime() + 7 * 86_400_000 + 1000);
    expect(
      await reserveCap(
        db.pool,
        { personKey: 'unresolved:ann', campaign: 'g', fireTime: later, at: later },
        { max: 1, days: 7 },
      ),
    ).toBe(true);
  });
});
