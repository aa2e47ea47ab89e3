import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { popsRunner } from './cli-support.js';
import { importMessages, message, resolveAll, storedPartition } from './identity-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;
const pops = popsRunner(() => ({
  DATABASE_URL: db.url,
  POPS_TASK_QUEUE_PREFIX: testQueuePrefix('identity-cli'),
  POPS_ACTOR: 'cli-tester',
}));

beforeAll(async () => {
  db = await createTestDatabase('identity-cli');
  await importMessages(db.pool, [
    message({ id: 'c1', at: 0, anonymousId: 'anon-c' }),
    message({ id: 'c2', at: 1, userId: 'carol', deviceId: 'tablet' }),
    message({ id: 'c3', at: 2, userId: 'carol', anonymousId: 'anon-c' }),
    message({ id: 'c4', at: 3, userId: 'dave', deviceId: 'tablet' }),
  ]);
  await resolveAll(db.pool);
});

afterAll(async () => {
  await db.close();
});

describe('pops identity', () => {
  it('shows the person of an identifier with its identifiers, merges and conflicts', async () => {
    const shown = await pops(['identity', 'show', 'device_id:tablet']);
    expect(shown.code).toBe(0);
    // anon-c (c1) is the oldest: carol's person (c2) was merged into it by c3.
    expect(shown.stdout).toMatch(/^person 1: first seen 2024-01-01T00:00:00.000Z, 3 events,/);
    expect(shown.stdout).toContain('user_id       carol');
    expect(shown.stdout).toContain('device_id     tablet');
    expect(shown.stdout).toMatch(/merges:\n.*\n\s*1\s+2\s+1\s+2-1\s+c3 .* active/);
    // c4: dave on carol's tablet would give one person two user ids.
    expect(shown.stdout).toContain('user_id limit of 1 would be exceeded (2 values)');
    const json = JSON.parse(
      (await pops(['identity', 'show', 'user_id:dave', '--json'])).stdout,
    ) as {
      identifiers: unknown[];
    };
    expect(json.identifiers).toEqual([expect.objectContaining({ type: 'user_id', value: 'dave' })]);
  });

  it('unmerges and remerges, and refuses bad input with exit code 2', async () => {
    const unmerged = await pops([
      'identity',
      'unmerge',
      '1',
      '--reason',
      'support ticket',
      '--json',
    ]);
    expect(unmerged.code).toBe(0);
    expect((JSON.parse(unmerged.stdout) as { result: unknown }).result).toMatchObject({
      mergeId: 1,
      splitPerson: 2,
    });
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:anon-c'],
      ['device_id:tablet', 'user_id:carol'],
      ['user_id:dave'],
    ]);
    const shown = await pops(['identity', 'show', 'user_id:carol']);
    expect(shown.stdout).toContain('undone by unmerge 1');
    expect(shown.stdout).toContain('by cli-tester');

    const again = await pops(['identity', 'unmerge', '1', '--reason', 'again']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('merge 1 is already undone (unmerge 1)');

    const remerged = await pops(['identity', 'remerge', '1', '--reason', 'same person']);
    expect(remerged.stdout).toContain('restored exactly as it was');

    const bad = await pops(['identity', 'show', 'carol']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('<identifier> "carol": give type:value');
    const unknown = await pops(['identity', 'show', 'bogus:1']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('"bogus" is no identifier type of the identity rules (');
    const missing = await pops(['identity', 'show', 'email:nobody@example.com']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('not in the graph');
    const badId = await pops(['identity', 'unmerge', 'x1', '--reason', 'r']);
    expect(badId.code).toBe(2);
    expect(badId.stderr).toContain('mergeId');
  });
});
