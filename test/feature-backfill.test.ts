/**
 * Backfills end to end on a real Temporal server and PostgreSQL: the values every reader sees at
 * every day's end equal an oracle computed from the events in plain TypeScript; a second run, a
 * run continued as new, and a run whose worker was SIGKILLed mid-partition all leave the same
 * tables; quality checks warn or fail with their figures audited; late events are re-materialized;
 * an older backfill never overwrites a newer online value.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { backfillStatus, startBackfill } from '../client/backfill.js';
import type { Pool } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import type { BackfillResult, MaterializeResult } from '../domain/features/backfill.js';
import { featureDefinitionSchema, type FeatureDefinition } from '../domain/features/definition.js';
import { listFeatures, registerFeatures, showFeature } from '../domain/features/registry.js';
import type { materializeFeatures } from '../workflows/materializeFeatures.js';
import { spawnWorker } from './fixtures/spawn-worker.js';
import {
  daysBetween,
  expectedValue,
  generateEvents,
  insertEvents,
  keyOf,
  type RatedEvent,
  storedValues,
  storeTables,
  testDefinitions,
} from './feature-support.js';
import { type Harness, startHarness } from './harness.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

let h: Harness;
/** The store after one uninterrupted backfill of FROM..TO (the crash test's reference). */
let reference: Awaited<ReturnType<typeof storeTables>>;
const definitions = testDefinitions();
const events = generateEvents(7, 2500, { start: '2024-03-01', days: 20, persons: 25, items: 15 });
const FROM = '2024-03-04';
const TO = '2024-03-23';
const names = definitions.map((f) => f.name);

beforeAll(async () => {
  h = await startHarness('feature-backfill');
  await registerFeatures(h.db.pool, definitions, 'tests');
  await insertEvents(h.db.pool, events);
});
afterAll(async () => {
  await h?.close();
});

async function runBackfill(
  pool: Pool,
  prefix: string,
  request: { features: string[]; from: string; to: string } & Record<string, unknown>,
): Promise<BackfillResult> {
  const started = await startBackfill(h.client, pool, prefix, { requestedBy: 'tests', ...request });
  return (await h.client.workflow
    .getHandle(started.workflowId, started.runId)
    .result()) as BackfillResult;
}

/** Checks every entity's value at every day's end against the oracle; returns the checks made. */
async function expectOracle(
  pool: Pool,
  fs: FeatureDefinition[],
  all: RatedEvent[],
  from: string,
  to: string,
): Promise<number> {
  let checks = 0;
  for (const f of fs) {
    const stored = await storedValues(pool, f);
    const byEntity = new Map<string, typeof stored>();
    for (const r of stored) byEntity.set(r.entity_id, [...(byEntity.get(r.entity_id) ?? []), r]);
    const keys = [...new Set(all.map((e) => keyOf(f, e)))];
    for (const key of keys) {
      for (const day of daysBetween(from, to)) {
        const end = Date.parse(`${day}T00:00:00Z`) + 86_400_000;
        const snapshot = (byEntity.get(key) ?? []).filter((r) => r.ts.getTime() <= end).at(-1);
        f.windows.forEach((w, i) => {
          const want = expectedValue(f, i, all, key, day);
          const stored = snapshot ? (snapshot.vals[i] ?? null) : null;
          // days_since_last ages between snapshots: readers add the days since the snapshot.
          const aged = (end - (snapshot?.ts.getTime() ?? end)) / 86_400_000;
          const got =
            stored !== null && f.aggregation.fn === 'days_since_last' ? stored + aged : stored;
          const where = `${f.name} ${w} of ${key} at the end of ${day}`;
          if (want === null) expect(got, where).toBeNull();
          else expect(got, where).toBeCloseTo(want, 9);
          checks += 1;
        });
      }
    }
  }
  return checks;
}

describe('a backfill', () => {
  it('stores the value of every feature, window, entity and day the oracle computes', async () => {
    const result = await runBackfill(h.db.pool, h.prefix, {
      features: names,
      from: FROM,
      to: TO,
      partition: 'week',
      parallelism: 3,
      // Forces several continue-as-new runs.
      partitionsPerRun: 2,
    });
    // Tiles from the first event (lifetime windows reach back to it), snapshots for the range.
    expect(result.partitions).toBe(4 + 3);
    expect(result.valueRows).toBeGreaterThan(0);
    const checks = await expectOracle(h.db.pool, definitions, events, FROM, TO);
    expect(checks).toBeGreaterThan(10_000);

    const status = await backfillStatus(h.client, result.backfillId);
    expect(status).toMatchObject({ status: 'COMPLETED', result });
    const { rows } = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from feature_partitions where backfill_id = $1`,
      [result.backfillId],
    );
    expect(rows[0]?.n).toBe(definitions.length * daysBetween(FROM, TO).length);
    const trail = await auditTrail(h.db.pool, { workflowId: result.backfillId });
    expect(trail.map((r) => r.action)).toEqual(['backfill.started', 'backfill.completed']);

    // Lineage: the registry knows the last backfill and how current the values are.
    const now = new Date('2024-03-25T06:00:00Z');
    const [shown] = await showFeature(h.db.pool, 'p_count', 1, now);
    expect(shown?.lineage).toEqual({
      sourceTables: ['events'],
      lastBackfill: { id: result.backfillId, status: 'completed', finishedAt: expect.any(String) },
      latestSnapshot: '2024-03-24T00:00:00.000Z',
      partitions: { computed: 20, warned: 0, failed: 0 },
      // 30 h after the last snapshot, against a 1-day SLA.
      freshness: 'stale: 30 h behind (SLA 24 h)',
    });
    const listed = await listFeatures(h.db.pool, new Date('2024-03-24T12:00:00Z'));
    expect(listed.find((f) => f.name === 'p_count')).toMatchObject({
      lastBackfill: result.backfillId,
      freshness: 'fresh',
    });
  });

  it('run again, leaves every table as one run did', async () => {
    const before = await storeTables(h.db.pool);
    await runBackfill(h.db.pool, h.prefix, {
      features: names,
      from: FROM,
      to: TO,
      partition: 'day',
    });
    reference = await storeTables(h.db.pool);
    expect(reference).toEqual(before);
  });

  it('of an older range never overwrites newer online values', async () => {
    type Online = { name: string; entity_id: string; ts: Date };
    const key = (r: Online) => `${r.name}|${r.entity_id}`;
    const before = new Map((reference.online as Online[]).map((r) => [key(r), r]));
    expect(before.size).toBeGreaterThan(0);
    await runBackfill(h.db.pool, h.prefix, {
      features: names,
      from: '2024-03-05',
      to: '2024-03-08',
    });
    const after = (await storeTables(h.db.pool)).online as Online[];
    expect(after.length).toBe(before.size);
    const olderEnd = Date.parse('2024-03-09T00:00:00Z');
    let newer = 0;
    for (const row of after) {
      const was = before.get(key(row)) as Online;
      // The older range's last snapshot is at olderEnd: a value newer than that stays as it was;
      // no value moves back in time.
      expect(row.ts.getTime()).toBeGreaterThanOrEqual(was.ts.getTime());
      if (was.ts.getTime() > olderEnd) {
        expect(row).toEqual(was);
        newer += 1;
      }
    }
    expect(newer).toBeGreaterThan(0);
  });

  it('refuses unknown features, reversed ranges and bad days, naming them', async () => {
    const start = (request: { features: string[]; from: string; to: string }) =>
      startBackfill(h.client, h.db.pool, h.prefix, request);
    await expect(start({ features: ['nope'], from: FROM, to: TO })).rejects.toThrow(
      /feature "nope" is not registered/,
    );
    await expect(start({ features: ['p_count@9'], from: FROM, to: TO })).rejects.toThrow(
      /"p_count@9" is not registered/,
    );
    await expect(start({ features: ['p_count'], from: TO, to: FROM })).rejects.toThrow(
      /from: is after to \(got "2024-03-23"\)/,
    );
    await expect(start({ features: ['p_count'], from: '2024-02-30', to: TO })).rejects.toThrow(
      /from: is not a calendar day \(got "2024-02-30"\)/,
    );
    await expect(start({ features: ['P!'], from: FROM, to: TO })).rejects.toBeInstanceOf(
      InputError,
    );
    // A day that has not ended would put online values in the future, where nothing overwrites them.
    await expect(start({ features: ['p_count'], from: FROM, to: '2199-01-01' })).rejects.toThrow(
      /to: is not a day that has ended \(got "2199-01-01"/,
    );
    await expect(
      start({ features: ['p_count'], from: '9999-12-31', to: '9999-12-31' }),
    ).rejects.toThrow(/from: is not a day from 1900 to 2199/);
  });
});

describe('a backfill whose worker is SIGKILLed in the middle of a partition', () => {
  let crash: TestDatabase;
  beforeAll(async () => {
    crash = await createTestDatabase('feature-crash');
    await registerFeatures(crash.pool, definitions, 'tests');
    await insertEvents(crash.pool, events);
  });
  afterAll(async () => crash?.close());

  it('resumes on another worker and leaves the tables of an uninterrupted run', async () => {
    // The reference is the first tests' run (the same events, features and range).
    const prefix = testQueuePrefix('feature-crash');
    const doomed = await spawnWorker(crash.url, prefix);
    onTestFinished(() => doomed.stop());

    // Holding feature_partitions stops the first snapshot partition after it wrote its values,
    // before it commits: the kill lands inside its transaction.
    const holder = await crash.pool.connect();
    await holder.query('begin');
    await holder.query('lock table feature_partitions in exclusive mode');
    const started = await startBackfill(h.client, crash.pool, prefix, {
      features: names,
      from: FROM,
      to: TO,
      partition: 'week',
      requestedBy: 'tests',
    });
    const pid = await until(async () => {
      const { rows } = await crash.pool.query<{ pid: number }>(
        `select l.pid from pg_locks l join pg_class c on c.oid = l.relation
          where c.relname = 'feature_partitions' and not l.granted limit 1`,
      );
      return rows[0]?.pid;
    });
    const written = await crash.pool.query<{ n: number }>(
      'select count(*)::int as n from feature_values',
    );
    expect(written.rows[0]?.n).toBe(0);
    await doomed.stop();
    await holder.query('commit');
    holder.release();
    await until(async () => {
      const { rows } = await crash.pool.query('select 1 from pg_stat_activity where pid = $1', [
        pid,
      ]);
      return rows.length === 0 ? true : undefined;
    });

    const survivor = await spawnWorker(crash.url, prefix);
    onTestFinished(() => survivor.stop());
    await h.client.workflow.getHandle(started.workflowId).result();
    expect(await storeTables(crash.pool)).toEqual(reference);
    expect(await verifyAudit(crash.pool)).toMatchObject({ ok: true });
  });
});

async function until<T>(probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('quality checks', () => {
  const quality = (name: string, policy: 'warn' | 'fail') =>
    featureDefinitionSchema.parse({
      name,
      version: 1,
      entity: 'person',
      source: { events: { event: 'rated' } },
      aggregation: { fn: 'count' },
      windows: ['1d'],
      type: 'int',
      owner: 'tests',
      description: 'at most 12 ratings a day',
      freshnessSla: '1d',
      quality: { max: 12, policy },
    });

  it('under warn, write the partition, mark it and audit the figures', async () => {
    const f = quality('q_warn', 'warn');
    await registerFeatures(h.db.pool, [f], 'tests');
    const result = await runBackfill(h.db.pool, h.prefix, {
      features: ['q_warn'],
      from: FROM,
      to: TO,
    });
    // The oracle's busiest person-days are the breaches.
    const busiest = new Map<string, number>();
    for (const e of events) {
      const k = `${e.ts.toISOString().slice(0, 10)}|${e.person}`;
      busiest.set(k, (busiest.get(k) ?? 0) + 1);
    }
    const breachDays = new Set(
      [...busiest]
        .filter(([k, n]) => n > 12 && k.slice(0, 10) >= FROM)
        .map(([k]) => k.slice(0, 10)),
    );
    expect(breachDays.size).toBeGreaterThan(0);
    expect(result.warnings).toBe(breachDays.size);
    const { rows } = await h.db.pool.query<{ day: string }>(
      `select day::text from feature_partitions where name = 'q_warn' and quality_status = 'warn'
        order by day`,
    );
    expect(rows.map((r) => r.day)).toEqual([...breachDays].sort());
    const trail = await auditTrail(h.db.pool, { workflowId: result.backfillId });
    const warned = trail.filter((r) => r.action === 'feature.quality.warned');
    expect(warned.length).toBeGreaterThan(0);
    expect(JSON.stringify(warned[0]?.outputs)).toContain('"check":"max"');
  });

  it('under fail, write nothing of the partition, mark it, audit it and fail the backfill', async () => {
    const f = quality('q_fail', 'fail');
    await registerFeatures(h.db.pool, [f], 'tests');
    const started = await startBackfill(h.client, h.db.pool, h.prefix, {
      features: ['q_fail'],
      from: FROM,
      to: TO,
      partition: 'week',
      parallelism: 1,
      requestedBy: 'tests',
    });
    const failed = await h.client.workflow
      .getHandle(started.workflowId)
      .result()
      .catch((e: unknown) => e as Error);
    expect(failed).toBeInstanceOf(Error);
    // WorkflowFailedError → ActivityFailure → the activity's ApplicationFailure.
    const cause = (failed as { cause?: { cause?: { message: string; type?: string } } }).cause
      ?.cause;
    expect(cause?.type).toBe('QualityCheckFailure');
    expect(cause?.message).toMatch(
      /q_fail@1 failed its quality check on 2024-03-\d\d: max of window 1d/,
    );
    const marked = await h.db.pool.query<{ day: string; quality_status: string }>(
      `select day::text, quality_status from feature_partitions where name = 'q_fail'`,
    );
    expect(marked.rows.length).toBeGreaterThan(0);
    expect(marked.rows.every((r) => r.quality_status === 'fail')).toBe(true);
    const failedDays = marked.rows.map((r) => r.day);
    const values = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from feature_values where name = 'q_fail'
        and (ts at time zone 'UTC')::date - 1 = any($1::date[])`,
      [failedDays],
    );
    expect(values.rows[0]?.n).toBe(0);
    const trail = await auditTrail(h.db.pool, { workflowId: started.workflowId });
    expect(trail.map((r) => r.action)).toContain('feature.quality.failed');
    expect(trail.at(-1)?.action).toBe('backfill.failed');
  });
});

describe('incremental materialization', () => {
  it('closes new days and re-computes the days late events fall on', async () => {
    const fs = definitions.filter((f) => ['p_count', 'p_genres', 'p_since'].includes(f.name));
    const refs = fs.map((f) => ({ name: f.name, version: f.version }));
    const materialize = async (): Promise<MaterializeResult> =>
      h.client.workflow.execute<typeof materializeFeatures>('materializeFeatures', {
        workflowId: `materialize-test-${Date.now()}`,
        taskQueue: `${h.prefix}-orchestration`,
        args: [
          {
            features: refs,
            latenessSeconds: 3600,
            partition: 'year',
            receivedOverlapSeconds: 0,
            requestedBy: 'tests',
          },
        ],
      });
    const first = await materialize();
    expect(first.range?.from).toBe('2024-03-01');
    expect(first.lateFrom).toBeNull();

    // Nothing new: nothing to compute.
    const idle = await materialize();
    expect(idle.range).toBeNull();

    const late = generateEvents(99, 60, { start: '2024-03-10', days: 3, persons: 25, items: 15 });
    await insertEvents(h.db.pool, late);
    const second = await materialize();
    expect(second.lateFrom).toBe('2024-03-10');
    expect(second.range?.from).toBe('2024-03-10');
    await expectOracle(h.db.pool, fs, [...events, ...late], '2024-03-01', '2024-04-05');
  });
});
