/**
 * `pops consent show|set|defaults`: the command line records and reads consent as the API does
 * (one change for all purposes named, the history with source and actor, nothing for a deleted
 * identifier), and refuses bad arguments with exit 2, naming them, before anything is written.
 */
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiToken } from './auth-support.js';
import { popsRunner } from './cli-support.js';
import {
  createTestDatabase,
  hashedValueOf,
  testQueuePrefix,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
const pops = popsRunner(() => ({
  DATABASE_URL: db.url,
  POPS_TASK_QUEUE_PREFIX: testQueuePrefix('consent-cli'),
}));

beforeAll(async () => {
  db = await createTestDatabase('consent-cli');
});

afterAll(async () => {
  await db.close();
});

async function eventCount(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    'select count(*)::int as n from consent_events',
  );
  return rows[0]?.n ?? 0;
}

describe('pops consent', () => {
  it('sets purposes once, shows state and history with the actor, reads the defaults', async () => {
    const marketer = await apiToken(db.pool, 'marketer', 'mk-bob');
    const env = { POPS_TOKEN: marketer };
    const set = await pops(
      ['consent', 'set', 'user_id:c1', '--grant', 'marketing', '--withdraw', 'analytics'],
      env,
    );
    expect(set).toMatchObject({ code: 0, stdout: 'marketing: granted\nanalytics: withdrawn\n' });
    const again = await pops(['consent', 'set', 'user_id:c1', '--grant', 'marketing'], env);
    expect(again.stdout).toBe('marketing: already granted, nothing recorded\n');

    const shown = await pops(['consent', 'show', 'user_id:c1', '--json'], env);
    expect(shown.code).toBe(0);
    const view = JSON.parse(shown.stdout) as {
      personKey: string;
      purposes: Record<string, { granted: boolean; from: string }>;
      history: Array<{
        purpose: string;
        granted: boolean;
        source: string;
        actor: string;
        effectiveAt: string;
      }>;
    };
    expect(view.personKey).toBe('unresolved:c1');
    expect(view).toMatchObject({ deleted: false });
    // One request's purposes take effect at one instant.
    const instants = new Set(view.history.map((e) => e.effectiveAt));
    expect(instants.size).toBe(1);
    expect(view.purposes['marketing']).toMatchObject({ granted: true, from: 'event' });
    expect(view.purposes['analytics']).toMatchObject({ granted: false, from: 'event' });
    expect(view.purposes['personalization']).toEqual({ granted: true, from: 'default' });
    expect(view.history.map((e) => [e.purpose, e.granted, e.source, e.actor]).sort()).toEqual([
      ['analytics', false, 'cli', 'mk-bob'],
      ['marketing', true, 'cli', 'mk-bob'],
    ]);

    const human = await pops(['consent', 'show', 'user_id:c1'], env);
    expect(human.stdout).toContain('person unresolved:c1');
    expect(human.stdout).toMatch(/marketing\s+granted\s+event at /);
    expect(human.stdout).toMatch(/personalization\s+granted\s+default/);

    const defaults = await pops(['consent', 'defaults', '--json']);
    expect(JSON.parse(defaults.stdout)).toEqual({
      defaults: { personalization: true, marketing: false, analytics: true },
    });
  });

  it('matches an email however it is cased and stores only its keyed hash', async () => {
    const set = await pops(['consent', 'set', 'email:Ann@Example.COM', '--grant', 'marketing']);
    expect(set.code).toBe(0);
    const { rows } = await db.pool.query<{ identifier_value: string }>(
      `select identifier_value from consent_events where identifier_type = 'email'`,
    );
    expect(rows).toEqual([{ identifier_value: hashedValueOf('email', 'ann@example.com') }]);
    const shown = await pops(['consent', 'show', 'email:ann@example.com', '--json']);
    const view = JSON.parse(shown.stdout) as { purposes: Record<string, { granted: boolean }> };
    expect(view.purposes['marketing']).toMatchObject({ granted: true });
  });

  it('records nothing for a deleted identifier, and says so', async () => {
    const key = Buffer.from(process.env['POPS_PII_HMAC_KEY'] ?? '', 'hex');
    const hash = createHmac('sha256', key).update('user_id\u0000gone-1').digest('hex');
    const request = `delete-${hash.slice(0, 24)}`;
    await db.pool.query(
      `insert into privacy_requests (id, kind, identifier_hash, requested_by, status)
       values ($1, 'delete', $2, 'test', 'done')`,
      [request, hash],
    );
    await db.pool.query(
      'insert into privacy_tombstones (identifier_hash, request_id) values ($1, $2)',
      [hash, request],
    );
    const before = await eventCount();
    const set = await pops(['consent', 'set', 'user_id:gone-1', '--grant', 'marketing']);
    expect(set).toMatchObject({
      code: 0,
      stdout: 'nothing recorded: this identifier was deleted (tombstoned)\n',
    });
    expect(await eventCount()).toBe(before);
    const shown = await pops(['consent', 'show', 'user_id:gone-1']);
    expect(shown.stdout.split('\n')[0]).toBe(
      'this identifier was deleted (tombstoned): nothing is recorded for it, the defaults apply',
    );
    const json = await pops(['consent', 'show', 'user_id:gone-1', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ deleted: true, history: [] });
  });

  it('refuses bad arguments with exit 2, naming them, and writes nothing', async () => {
    const before = await eventCount();
    const cases: Array<[string[], string]> = [
      [['consent', 'set', 'user_id:c2'], 'name at least one purpose with --grant or --withdraw'],
      [['consent', 'set', 'user_id:c2', '--grant', 'marketting'], 'marketting'],
      [
        ['consent', 'set', 'user_id:c2', '--grant', 'marketing', '--withdraw', 'marketing'],
        'a purpose cannot be both granted and withdrawn',
      ],
      [['consent', 'set', 'emial:a@b.example', '--grant', 'marketing'], 'emial'],
      [
        ['consent', 'set', 'email:not-an-address', '--grant', 'marketing'],
        'identifier: not a valid email (the value is not shown',
      ],
      [
        ['consent', 'set', 'user_id:c2', '--grant', 'marketing', '--at', '2026-01-31'],
        'at: needs a date, a time and an offset, e.g. 2026-01-31T09:00:00Z',
      ],
      [
        ['consent', 'set', 'user_id:c2', '--grant', 'marketing', '--at', '2099-01-01T00:00:00Z'],
        'at: must not be in the future',
      ],
      [['consent', 'set', 'user_id:c2', '--grant', ','], 'an empty purpose (a stray comma?)'],
      [
        ['consent', 'set', 'user_id:c2', '--grant', `marketing,${'x'.repeat(5000)}`],
        `no such purpose "${'x'.repeat(40)}…"`,
      ],
      [['consent', 'set', 'user_id:c2', '--grant', 'marketing', '--source', 'a b'], 'source'],
      [['consent', 'show', 'c2'], 'give type:value'],
    ];
    for (const [args, named] of cases) {
      const result = await pops(args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr).toContain(named);
      expect(result.stderr.length).toBeLessThan(400);
      expect(result.stderr).not.toContain('not-an-address');
    }
    expect(await eventCount()).toBe(before);
  });

  it('runs for the roles of its routes only', async () => {
    const auditor = await apiToken(db.pool, 'auditor');
    const shown = await pops(['consent', 'show', 'user_id:c1'], { POPS_TOKEN: auditor });
    expect(shown.code).toBe(2);
    expect(shown.stderr).toContain('role auditor may not run pops consent show');
    const defaults = await pops(['consent', 'defaults'], { POPS_TOKEN: auditor });
    expect(defaults.code).toBe(0);
  });
  it('sets a default, audited, and refuses marketing granted', async () => {
    const marketing = await pops(['consent', 'set-default', 'marketing', 'granted']);
    expect(marketing.code).toBe(2);
    expect(marketing.stderr).toContain('marketing is opt-in, its default cannot be granted');
    const bad = await pops(['consent', 'set-default', 'analytic', 'withdrawn']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('analytic');

    const admin = await apiToken(db.pool, 'admin', 'dpo-eve');
    const env = { POPS_TOKEN: admin };
    const set = await pops(['consent', 'set-default', 'analytics', 'withdrawn'], env);
    expect(set.stdout).toBe('analytics: the default is withdrawn now (audited)\n');
    const again = await pops(['consent', 'set-default', 'analytics', 'withdrawn'], env);
    expect(again.stdout).toBe('analytics: the default already was withdrawn, nothing changed\n');
    const { rows } = await db.pool.query<{ actor: string; subject: string; inputs: unknown }>(
      `select actor, subject, inputs from audit_log where action = 'consent.default_set'`,
    );
    expect(rows).toEqual([
      {
        actor: 'dpo-eve',
        subject: 'consent-default/analytics',
        inputs: { purpose: 'analytics', granted: false },
      },
    ]);
    const defaults = await pops(['consent', 'defaults', '--json']);
    expect(JSON.parse(defaults.stdout)).toEqual({
      defaults: { personalization: true, marketing: false, analytics: false },
    });
    const marketer = await apiToken(db.pool, 'marketer');
    const refused = await pops(['consent', 'set-default', 'analytics', 'granted'], {
      POPS_TOKEN: marketer,
    });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('needs admin');
  });
});
