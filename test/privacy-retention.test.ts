import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRetention } from '../client/privacy.js';
import { auditTrail } from '../domain/audit.js';
import { enforceTable, retentionPolicies } from '../domain/privacy/retention.js';
import type { RetentionResult } from '../workflows/enforceRetention.js';
import { type Harness, startHarness } from './harness.js';

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

  it('refuses a policy of a table without retention, or a malformed one, naming it', () => {
    expect(() => retentionPolicies('audit_log=10d')).toThrow(/POPS_RETENTION: "audit_log=10d"/);
    expect(() => retentionPolicies('events=10')).toThrow(/table=<days>d/);
    expect(retentionPolicies(undefined)).toEqual([]);
  });
});
