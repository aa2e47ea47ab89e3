import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRetention } from '../client/privacy.js';
import { auditTrail } from '../domain/audit.js';
import { enforceTable, retentionPolicies } from '../domain/privacy/retention.js';
import type { RetentionResult } from '../workflows/enforceRetention.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { testQueuePrefix } from './support.js';

let h: Harness;
const DAY = 86_400_000;
const ago = (days: number) => new Date(Date.now() - days * DAY);

beforeAll(async () => {
  h = await startHarness('privacy-retention');
  // 10 events received 500 days ago (4 of them attributed), 5 received 10 days ago.
  for (let i = 1; i <= 15; i++) {
    await h.db.pool.query(
      `insert into events (id, message_id, source, type, event, person_id, ts, received_at)
       values ($1, $2, 'web', 'track', 'x', 'p', $3, $3)`,
      [i, `r-${i}`, ago(i <= 10 ? 500 : 10)],
    );
  }
  await h.db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values (1, 1, null, now(), 1, null)`,
  );
  await h.db.pool.query(
    `insert into event_persons (event_id, person_id) values (1, 1), (2, 1), (3, 1), (4, 1), (11, 1)`,
  );
  // Two export bundles: one 40 days old, one of today.
  for (const [id, days] of [
    ['export-aaaaaaaaaaaaaaaaaaaaaaaa', 40],
    ['export-bbbbbbbbbbbbbbbbbbbbbbbb', 0],
  ] as const) {
    await h.db.pool.query(
      `insert into privacy_requests (id, kind, identifier_hash, requested_by, status)
       values ($1, 'export', repeat('a', 64), 't', 'done')`,
      [id],
    );
    await h.db.pool.query(
      `insert into privacy_exports (request_id, identifier_hashes, bundle, created_at)
       values ($1, '{}', '{}', $2)`,
      [id, ago(days)],
    );
  }
}, 120_000);

afterAll(async () => {
  await h?.close();
});

async function count(table: string): Promise<number> {
  const { rows } = await h.db.pool.query<{ n: number }>(`select count(*)::int as n from ${table}`);
  return rows[0]?.n ?? -1;
}

describe('enforceRetention', () => {
  it('deletes rows older than each policy, with what goes with them, and audits the counts', async () => {
    const policies = retentionPolicies('events=400d,privacy_exports=30d');
    const started = await startRetention(h.client, h.prefix, { policies, requestedBy: 'dpo' });
    const result = (await h.client.workflow
      .getHandle(started.workflowId, started.runId)
      .result()) as RetentionResult;
    expect(result.deleted).toEqual({ events: 10, privacy_exports: 1 });
    expect(await count('events')).toBe(5);
    // The 4 attributions of old events went with them; the recent one stays.
    expect(await count('event_persons')).toBe(1);
    expect(await count('privacy_exports')).toBe(1);
    const audit = await auditTrail(h.db.pool, { workflowId: started.workflowId });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      action: 'privacy.retention-enforced',
      actor: 'dpo',
      outputs: { deleted: { events: 10, privacy_exports: 1 } },
    });
    const runs = await h.db.pool.query(
      'select table_name, deleted from retention_runs where run_key like $1 order by table_name',
      [`${started.workflowId}/%`],
    );
    expect(runs.rows).toEqual([
      { table_name: 'events', deleted: 10 },
      { table_name: 'privacy_exports', deleted: 1 },
    ]);
  }, 120_000);

  it('counts across batches and a retry adds to the same run', async () => {
    for (let i = 100; i < 107; i++) {
      await h.db.pool.query(
        `insert into events (id, message_id, source, type, event, person_id, ts, received_at)
         values ($1, $2, 'web', 'track', 'x', 'p', $3, $3)`,
        [i, `b-${i}`, ago(900)],
      );
    }
    const input = { runKey: 'test/run', table: 'events', keepDays: 400, cutoff: ago(400) };
    expect(await enforceTable(h.db.pool, { ...input, batch: 3 })).toBe(7);
    expect(await enforceTable(h.db.pool, { ...input, batch: 3 })).toBe(7);
    expect(await count('events')).toBe(5);
  });

  it('prunes old training and drift set rows, keeps young ones, marks the sets', async () => {
    // Rows by [set, row id, split, age in days]; a split of null is a drift set's row.
    const rows: Array<[string, number, 'train' | 'validate' | null, number]> = [
      ['set-a', 1001, 'train', 500],
      ['set-a', 1002, 'train', 500],
      ['set-a', 1003, 'train', 500],
      ['set-a', 1004, 'train', 10],
      ['set-a', 1005, 'validate', 500],
      ['set-a', 1006, 'validate', 10],
      ['set-b', 2001, 'train', 30],
      ['set-b', 2002, 'train', 20],
      ['set-b', 2003, 'validate', 5],
      ['set-c', 3001, 'train', 600],
      ['set-c', 3002, 'train', 600],
      ['drift-d', 4001, null, 700],
      ['drift-d', 4002, null, 700],
      ['drift-d', 4003, null, 20],
    ];
    await h.db.pool.query(`insert into models (name, source, created_by)
                           values ('m', 'web', 't')`);
    for (const [set, train, validate] of [
      ['set-a', 4, 2],
      ['set-b', 2, 1],
      ['set-c', 2, 0],
    ] as const) {
      await h.db.pool.query(
        `insert into training_sets (set_key, model, source, train_from, train_until,
           validate_until, features, train_rows, validate_rows)
         values ($1, 'm', 'web', $2, $3, now(), '{f@1:lifetime}', $4, $5)`,
        [set, ago(800), ago(8), train, validate],
      );
    }
    await h.db.pool.query(
      `insert into drift_sets (set_key, range_from, range_to, row_count)
       values ('drift-d', $1, now(), 3)`,
      [ago(800)],
    );
    for (const [set, id, split, days] of rows) {
      await h.db.pool.query(
        `insert into pit_set_rows (set_key, row_id, ts, person_key, item_key, label, vals)
         values ($1, $2, $3, 'p', 'i', 1, '{0.5}')`,
        [set, id, ago(days)],
      );
      if (split === null) continue;
      await h.db.pool.query(
        `insert into training_examples
           (set_key, event_id, split, person_id, item_id, ts, rating, label, features)
         values ($1, $2, $3, 'p', 'i', $4, 5, 1, '{0.5}')`,
        [set, id, split, ago(days)],
      );
    }
    // pit_set_rows first, older than 550 days: set-c's 2 rows (their examples with them) and
    // drift-d's 2. Then training_examples older than 400 days: set-a's 1001-1003 and 1005 (with
    // their point-in-time rows); set-c's are gone already, set-b's and the rest are younger.
    const policies = retentionPolicies('pit_set_rows=550d,training_examples=400d');
    const started = await startRetention(h.client, h.prefix, { policies, requestedBy: 'dpo' });
    const result = (await h.client.workflow
      .getHandle(started.workflowId, started.runId)
      .result()) as RetentionResult;
    expect(result.deleted).toEqual({ pit_set_rows: 4, training_examples: 4 });
    const ids = async (table: string, column: string) =>
      (
        await h.db.pool.query<{ id: string }>(
          `select ${column}::text as id from ${table} order by ${column}`,
        )
      ).rows.map((r) => Number(r.id));
    // 11 examples - 2 (set-c) - 4 (set-a) = 5; 14 point-in-time rows - 4 - 4 = 6.
    expect(await ids('training_examples', 'event_id')).toEqual([1004, 1006, 2001, 2002, 2003]);
    expect(await ids('pit_set_rows', 'row_id')).toEqual([1004, 1006, 2001, 2002, 2003, 4003]);
    // The sets keep the counts they were built with and say what retention took.
    const sets = await h.db.pool.query(
      `select set_key, train_rows, validate_rows, pruned_train_rows, pruned_validate_rows,
              pruned_at is not null as pruned
         from training_sets order by set_key`,
    );
    expect(sets.rows).toEqual([
      {
        set_key: 'set-a',
        train_rows: 4,
        validate_rows: 2,
        pruned_train_rows: 3,
        pruned_validate_rows: 1,
        pruned: true,
      },
      {
        set_key: 'set-b',
        train_rows: 2,
        validate_rows: 1,
        pruned_train_rows: 0,
        pruned_validate_rows: 0,
        pruned: false,
      },
      {
        set_key: 'set-c',
        train_rows: 2,
        validate_rows: 0,
        pruned_train_rows: 2,
        pruned_validate_rows: 0,
        pruned: true,
      },
    ]);
    const drift = await h.db.pool.query(
      'select row_count, pruned_rows, pruned_at is not null as pruned from drift_sets',
    );
    expect(drift.rows).toEqual([{ row_count: 3, pruned_rows: 2, pruned: true }]);
    const audit = await auditTrail(h.db.pool, { workflowId: started.workflowId });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      action: 'privacy.retention-enforced',
      outputs: { deleted: { pit_set_rows: 4, training_examples: 4 } },
    });

    // In batches of 1, set-b's two train rows older than 15 days go, and its counts add up.
    const input = { runKey: 'test/sets', table: 'training_examples', keepDays: 15 };
    expect(await enforceTable(h.db.pool, { ...input, cutoff: ago(15), batch: 1 })).toBe(2);
    expect(await ids('training_examples', 'event_id')).toEqual([1004, 1006, 2003]);
    expect(await ids('pit_set_rows', 'row_id')).toEqual([1004, 1006, 2003, 4003]);
    const b = await h.db.pool.query(
      `select pruned_train_rows, pruned_validate_rows from training_sets where set_key = 'set-b'`,
    );
    expect(b.rows).toEqual([{ pruned_train_rows: 2, pruned_validate_rows: 0 }]);
  }, 120_000);

  it('refuses a policy of a table without retention, or a malformed one, naming it', () => {
    expect(() => retentionPolicies('audit_log=10d')).toThrow(/POPS_RETENTION: "audit_log=10d"/);
    expect(() => retentionPolicies('events=10')).toThrow(/table=<days>d/);
    expect(retentionPolicies(undefined)).toEqual([]);
  });

  it('pops privacy retention runs it now, and refuses (exit 2) without a policy or a bad one', async () => {
    const pops = popsRunner(() => ({
      DATABASE_URL: h.db.url,
      POPS_TASK_QUEUE_PREFIX: testQueuePrefix('retention-cli'),
    }));
    const none = await pops(['privacy', 'retention'], { POPS_RETENTION: '' });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('POPS_RETENTION is not set');
    const bad = await pops(['privacy', 'retention'], { POPS_RETENTION: 'events=10' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('POPS_RETENTION: "events=10"');
    // Left from the test above: examples 1004 and 1006 (10 days old) and 2003 (5 days old).
    const ran = await pops(['privacy', 'retention'], { POPS_RETENTION: 'training_examples=7d' });
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(
      /training_examples: 2 rows older than 7 days \(before [^)]+\), with the point-in-time rows/,
    );
    expect(ran.stdout).toContain('counted once: under the policy that took it');
    const left = await h.db.pool.query<{ id: string }>(
      'select row_id::text as id from pit_set_rows order by row_id',
    );
    expect(left.rows.map((r) => Number(r.id))).toEqual([2003, 4003]);
  }, 180_000);
});
