/**
 * The CLI's role table (api/roles.ts CLI_ROLES): every command the CLI has is named in it (by its
 * words or a prefix of them), and with POPS_TOKEN set a command runs only for the roles it lists.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { CLI_ROLES, ROLES } from '../api/roles.js';
import { program } from '../cli/program.js';
import { apiToken } from './auth-support.js';
import { popsRunner } from './cli-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

/** The words of every command that runs (a leaf of the command tree). */
function leaves(command: Command, words: string[] = []): string[] {
  const subs = command.commands.filter((c) => c.name() !== 'help');
  if (subs.length === 0) return [words.join(' ')];
  return subs.flatMap((c) => leaves(c, [...words, c.name()]));
}

/** The entry of CLI_ROLES that decides a command: its longest listed prefix. */
function entryOf(words: string): string | undefined {
  const parts = words.split(' ');
  for (let n = parts.length; n > 0; n--) {
    const key = parts.slice(0, n).join(' ');
    if (CLI_ROLES[key]) return key;
  }
  return undefined;
}

describe('the CLI role table', () => {
  it('names every command of the CLI, and nothing the CLI does not have', () => {
    const commands = leaves(program);
    expect(commands.length).toBeGreaterThanOrEqual(80);
    expect(commands.filter((words) => entryOf(words) === undefined)).toEqual([]);
    const prefixes = new Set(
      commands.flatMap((w) => w.split(' ').map((_, i, p) => p.slice(0, i + 1).join(' '))),
    );
    expect(Object.keys(CLI_ROLES).filter((key) => !prefixes.has(key))).toEqual([]);
    for (const roles of Object.values(CLI_ROLES)) {
      expect(roles.every((r) => (ROLES as readonly string[]).includes(r))).toBe(true);
    }
  });
});

describe('POPS_TOKEN', () => {
  let db: TestDatabase;
  const pops = popsRunner(() => ({
    DATABASE_URL: db.url,
    POPS_TASK_QUEUE_PREFIX: testQueuePrefix('cli-roles'),
  }));

  beforeAll(async () => {
    db = await createTestDatabase('cli-roles');
  });

  afterAll(async () => {
    await db.close();
  });

  it('runs a command for the roles the table lists, refusing the others with exit 2', async () => {
    const auditor = await apiToken(db.pool, 'auditor');
    const marketer = await apiToken(db.pool, 'marketer');

    const allowed = await pops(['tokens', 'list', '--json'], { POPS_TOKEN: auditor });
    expect(allowed.code).toBe(0);
    const refused = await pops(['tokens', 'list'], { POPS_TOKEN: marketer });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      'role marketer may not run pops tokens list (needs admin, auditor)',
    );
    const unknown = await pops(['tokens', 'list'], { POPS_TOKEN: 'pt_nothere_' + 'x'.repeat(43) });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('POPS_TOKEN: the token is not known or was revoked');
    // A marketer's own commands: campaigns.
    const campaigns = await pops(['campaign', 'list', '--json'], { POPS_TOKEN: marketer });
    expect(campaigns.code).toBe(0);
    // The token's name is the actor of what the command audits.
    const admin = await apiToken(db.pool, 'admin', 'ops-ann');
    const created = await pops(['tokens', 'create', '--role', 'auditor', '--name', 'by-ann'], {
      POPS_TOKEN: admin,
    });
    expect(created.code).toBe(0);
    const { rows } = await db.pool.query<{ actor: string }>(
      `select actor from audit_log where action like 'token%' order by seq desc limit 1`,
    );
    expect(rows).toEqual([{ actor: 'ops-ann' }]);
  }, 120_000);

  it('refuses with exit 2 a token name a revoked token had', async () => {
    const admin = await apiToken(db.pool, 'admin', 'ops-reuse');
    const first = await pops(
      ['tokens', 'create', '--role', 'auditor', '--name', 'reused', '--json'],
      {
        POPS_TOKEN: admin,
      },
    );
    expect(first.code).toBe(0);
    const { id } = JSON.parse(first.stdout) as { id: string };
    expect((await pops(['tokens', 'revoke', id], { POPS_TOKEN: admin })).code).toBe(0);
    const again = await pops(['tokens', 'create', '--role', 'admin', '--name', 'reused'], {
      POPS_TOKEN: admin,
    });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('name "reused": a revoked token had it');
    const { rows } = await db.pool.query<{ role: string }>(
      `select role from api_tokens where name = 'reused'`,
    );
    expect(rows).toEqual([{ role: 'auditor' }]);
  }, 120_000);
});
