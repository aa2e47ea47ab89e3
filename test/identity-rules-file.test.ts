import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadIdentityRules } from '../domain/identity/rules-file.js';
import { DEFAULT_LIMITS } from '../domain/identity/rules.js';
import { popsRunner } from './cli-support.js';
import { importMessages, message, storedConflicts, storedPartition } from './identity-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

const EXAMPLE = path.join(import.meta.dirname, '../config/identity-rules.example.yaml');

function file(text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-rules-'));
  const target = path.join(dir, 'rules.yaml');
  fs.writeFileSync(target, text);
  return target;
}

describe('identity rules from a file', () => {
  it('reads the example file, which holds exactly the documented defaults', () => {
    const rules = loadIdentityRules(EXAMPLE);
    expect({
      user_id: rules.user_id,
      email: rules.email,
      phone: rules.phone,
      anonymous_id: rules.anonymous_id,
      device_id: rules.device_id,
    }).toEqual(DEFAULT_LIMITS);
    expect(rules.custom).toEqual({});
    expect(rules.blockList).toEqual([]);
    expect(rules).toEqual(loadIdentityRules(undefined));
  });

  it('fills what a file leaves out with the defaults; no file means the defaults', () => {
    const rules = loadIdentityRules(file('email:\n  maxValues: 2\n'));
    expect(rules.email).toEqual({ priority: 80, maxValues: 2, windowDays: 365 });
    expect(rules.device_id).toEqual(DEFAULT_LIMITS.device_id);
    expect(loadIdentityRules(undefined).user_id).toEqual(DEFAULT_LIMITS.user_id);
    expect(loadIdentityRules(file('')).email).toEqual(DEFAULT_LIMITS.email);
  });

  it('names the file, the field and the value of a mistake', () => {
    const bad = file('email:\n  maxValues: 0\n');
    expect(() => loadIdentityRules(bad)).toThrow(
      `POPS_IDENTITY_RULES="${bad}": email.maxValues: Too small: expected number to be >=1 (got 0)`,
    );
    const custom = file(
      'custom:\n  user_id: {from: traits, path: x, priority: 1, maxValues: 1, windowDays: null}\n',
    );
    expect(() => loadIdentityRules(custom)).toThrow('custom.user_id: is a built-in type');
    expect(() => loadIdentityRules(file('email: [unclosed\n'))).toThrow('not valid YAML');
    expect(() => loadIdentityRules(file('email:\n  priorty: 80\n'))).toThrow(
      'email: Unrecognized key: "priorty"',
    );
    expect(() => loadIdentityRules(file('fax: {}\n'))).toThrow('Unrecognized key: "fax"');
    expect(() => loadIdentityRules('/nonexistent/rules.yaml')).toThrow(
      'POPS_IDENTITY_RULES="/nonexistent/rules.yaml": cannot read it',
    );
  });
});

describe('pops identity merge with POPS_IDENTITY_RULES', () => {
  let db: TestDatabase;
  const pops = popsRunner(() => ({
    DATABASE_URL: db.url,
    POPS_TASK_QUEUE_PREFIX: testQueuePrefix('rules-file'),
  }));
  beforeAll(async () => {
    db = await createTestDatabase('rules-file');
  });
  afterAll(async () => {
    await db.close();
  });

  it("resolves with the file's rules, and refuses a bad file with exit code 2", async () => {
    await importMessages(db.pool, [
      message({ id: 'r1', at: 0, userId: 'kim', deviceId: 'kiosk-01' }),
      message({ id: 'r2', at: 1, userId: 'lee', deviceId: 'kiosk-01' }),
      message({ id: 'r3', at: 2, userId: 'kim', email: 'a@example.com' }),
      message({ id: 'r4', at: 3, userId: 'kim', email: 'b@example.com' }),
    ]);
    const bad = file('email:\n  maxValues: none\n');
    const refused = await pops(['identity', 'merge', '--wait'], { POPS_IDENTITY_RULES: bad });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`POPS_IDENTITY_RULES="${bad}": email.maxValues:`);

    // kiosk-01 is blocked, so it links nobody and stores nothing; one email per person: b is kept
    // out.
    const rules = file('blockList: [KIOSK-01]\nemail:\n  maxValues: 1\n');
    const done = await pops(['identity', 'merge', '--wait', '--json'], {
      POPS_IDENTITY_RULES: rules,
    });
    expect(done.code).toBe(0);
    expect(await storedPartition(db.pool)).toEqual([
      ['email:a@example.com', 'user_id:kim'],
      ['email:b@example.com'],
      ['user_id:lee'],
    ]);
    expect(await storedConflicts(db.pool)).toEqual(['r4|email:b@example.com']);
  });
});
