/**
 * The backfill commands from the real command line: register the example features, backfill them
 * with --wait, read the status (and refuse bad input with exit 2 naming the value), then one
 * incremental step.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { popsRunner } from './cli-support.js';
import { generateEvents, insertEvents } from './feature-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

const EXAMPLE = path.join(import.meta.dirname, '../config/features.example.yaml');
const prefix = testQueuePrefix('feature-backfill-cli');
let db: TestDatabase;
const pops = popsRunner(() => ({
  DATABASE_URL: db.url,
  POPS_TASK_QUEUE_PREFIX: prefix,
  POPS_ACTOR: 'cli-tester',
}));

beforeAll(async () => {
  db = await createTestDatabase('feature-backfill-cli');
  await insertEvents(
    db.pool,
    generateEvents(3, 400, { start: '2024-05-01', days: 10, persons: 12, items: 8 }),
  );
});
afterAll(async () => db?.close());

describe('pops backfill', () => {
  it('backfills the registered features, shows the status, and refuses bad input', async () => {
    expect((await pops(['features', 'register', EXAMPLE])).code).toBe(0);
    const started = await pops([
      'backfill',
      'start',
      '--features',
      'person_rating_count,item_popularity@1',
      '--from',
      '2024-05-03',
      '--to',
      '2024-05-12',
      '--partition',
      'week',
      '--wait',
      '--json',
    ]);
    expect(started.stderr).toBe('');
    expect(started.code).toBe(0);
    const out = JSON.parse(started.stdout) as {
      workflowId: string;
      status: string;
      result: { partitions: number; valueRows: number };
    };
    expect(out.workflowId).toBe(
      'backfill/item_popularity@1+person_rating_count@1/2024-05-03/2024-05-12',
    );
    expect(out.status).toBe('COMPLETED');
    expect(out.result.valueRows).toBeGreaterThan(0);

    const status = await pops(['backfill', 'status', out.workflowId]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`${out.workflowId}: COMPLETED`);
    expect(status.stdout).toMatch(/\d+ partitions, \d+ tile rows, \d+ value rows/);

    const shown = await pops(['features', 'show', 'person_rating_count']);
    expect(shown.stdout).toContain('values through 2024-05-13T00:00:00.000Z');
    expect(shown.stdout).toContain(`last backfill ${out.workflowId} (completed); 10 days computed`);

    const missing = await pops(['backfill', 'status', 'backfill/nope/2024-01-01/2024-01-02']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('backfill "backfill/nope/2024-01-01/2024-01-02" not found');
    const unknown = await pops([
      'backfill',
      'start',
      '--features',
      'nope',
      '--from',
      '2024-05-03',
      '--to',
      '2024-05-04',
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('feature "nope" is not registered');
    const reversed = await pops([
      'backfill',
      'start',
      '--features',
      'person_rating_count',
      '--from',
      '2024-05-09',
      '--to',
      '2024-05-04',
    ]);
    expect(reversed.code).toBe(2);
    expect(reversed.stderr).toContain('from: is after to (got "2024-05-09")');
    const unit = await pops([
      'backfill',
      'start',
      '--features',
      'person_rating_count',
      '--from',
      '2024-05-03',
      '--to',
      '2024-05-04',
      '--partition',
      'hour',
    ]);
    expect(unit.code).toBe(2);
    expect(unit.stderr).toContain('partition');
  });

  it('materializes every feature incrementally', async () => {
    const first = await pops(['features', 'materialize', '--wait', '--json']);
    expect(first.code).toBe(0);
    const r = JSON.parse(first.stdout) as {
      workflowId: string;
      result: { range: { from: string } | null; features: Array<{ name: string }> };
    };
    expect(r.workflowId).toBe('materialize/all');
    expect(r.result.range?.from).toBe('2024-05-01');
    expect(r.result.features.map((f) => f.name)).toContain('person_mean_rating');
    const bad = await pops(['features', 'materialize', '--lateness', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('lateness: is not a duration like 30m, 1h or 2d (got "soon")');
  });
});
