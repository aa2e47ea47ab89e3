import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { popsRunner } from './cli-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;

const pops = popsRunner(() => ({
  DATABASE_URL: db.url,
  POPS_TASK_QUEUE_PREFIX: testQueuePrefix('cli'),
}));

beforeAll(async () => {
  db = await createTestDatabase('cli');
});
afterAll(async () => {
  await db.close();
});

describe('the pops command line', () => {
  it('declares a model and lists it as JSON', async () => {
    const created = await pops(['models', 'create', 'cli-model', '--source', 'cli-src', '--json']);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toEqual({
      name: 'cli-model',
      source: 'cli-src',
      created: true,
    });
    const listed = await pops(['models', 'list', '--json']);
    expect(JSON.parse(listed.stdout)).toEqual({
      models: [{ name: 'cli-model', source: 'cli-src', latestVersion: 0, versions: 0 }],
    });
  });

  it('exits 2 naming the option and the value for bad input', async () => {
    const badName = await pops(['models', 'create', 'Bad Name!', '--source', 's']);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toContain('"Bad Name!"');
    const badEpochs = await pops([
      'retrain',
      '--model',
      'cli-model',
      '--reason',
      'r',
      '--epochs',
      '0',
    ]);
    expect(badEpochs.code).toBe(2);
    expect(badEpochs.stderr).toMatch(/training\.epochs.*got 0/);
    const badInstant = await pops([
      'retrain',
      '--model',
      'cli-model',
      '--reason',
      'r',
      '--train-until',
      '2020-01-01',
    ]);
    expect(badInstant.code).toBe(2);
    expect(badInstant.stderr).toMatch(/trainUntil.*"2020-01-01"/);
    const unknown = await pops(['retrain', '--model', 'ghost', '--reason', 'r']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('model "ghost" is not declared');
  });

  it('exits 2 naming the variable for a bad environment', async () => {
    const result = await pops(['models', 'list'], { POPS_HTTP_PORT: 'eighty' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('POPS_HTTP_PORT="eighty"');
  });

  it('verifies the audit chain and exits 1 when it is broken', async () => {
    const empty = await pops(['audit', 'verify', '--json']);
    expect(empty.code).toBe(0);
    expect(JSON.parse(empty.stdout)).toMatchObject({ ok: true, rows: 0 });
    await db.pool.query(
      `insert into audit_log (seq, at, actor, action, subject, prev_hash, hash)
       values (1, now(), 'x', 'y', 'z', repeat('0', 64), 'not-a-hash')`,
    );
    const broken = await pops(['audit', 'verify']);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain('broken at row 1: hash does not match the row contents');
  });
});
