import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit, GENESIS_HASH, verifyAudit } from '../domain/audit.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('audit');
});
afterAll(async () => {
  await db.close();
});

/** Tampers with the log the way an attacker with superuser rights could: triggers off. */
async function tamper(sql: string, params: unknown[] = []): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query('set session_replication_role = replica');
    await client.query(sql, params);
  } finally {
    await client.query('set session_replication_role = origin');
    client.release();
  }
}

describe('the hash-chained audit log', () => {
  it('hashes the first row as sha256 of the genesis hash and the row in canonical JSON', async () => {
    const at = new Date('2026-01-02T03:04:05.678Z');
    const row = await appendAudit(
      db.pool,
      { actor: 'ana', action: 'x.did', subject: 'model/m', outputs: { b: 2, a: 1 } },
      at,
    );
    // Canonical JSON written out by hand: keys sorted, no spaces, nulls kept.
    const canonical =
      '{"action":"x.did","actor":"ana","at":"2026-01-02T03:04:05.678Z","idempotencyKey":null,"inputs":{},' +
      '"outputs":{"a":1,"b":2},"runId":null,"seq":1,"subject":"model/m","workflowId":null}';
    const expected = createHash('sha256')
      .update(GENESIS_HASH + canonical)
      .digest('hex');
    expect(row.seq).toBe(1);
    expect(row.prevHash).toBe(GENESIS_HASH);
    expect(row.hash).toBe(expected);
  });

  it('verifies a chain appended concurrently, with gapless sequence numbers', async () => {
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        appendAudit(db.pool, {
          actor: 'bot',
          action: 'step',
          subject: `s/${i}`,
          inputs: { i, nested: { z: [1, 'x'] } },
        }),
      ),
    );
    const result = await verifyAudit(db.pool, 7);
    expect(result).toMatchObject({ ok: true, rows: 21 });
    const seqs = await db.pool.query<{ seq: number }>('select seq from audit_log order by seq');
    expect(seqs.rows.map((r) => r.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  });

  it('writes one row for a retried append with the same idempotency key', async () => {
    const first = await appendAudit(db.pool, {
      actor: 'a',
      action: 'once',
      subject: 's',
      idempotencyKey: 'k-1',
    });
    const again = await appendAudit(db.pool, {
      actor: 'a',
      action: 'once',
      subject: 's',
      idempotencyKey: 'k-1',
    });
    expect(again.seq).toBe(first.seq);
    const count = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from audit_log where idempotency_key = 'k-1'`,
    );
    expect(count.rows[0]?.n).toBe(1);
  });

  it('refuses updates, deletes and truncation through the database', async () => {
    await expect(
      db.pool.query(`update audit_log set actor = 'mallory' where seq = 1`),
    ).rejects.toThrow(/append-only/);
    await expect(db.pool.query('delete from audit_log where seq = 1')).rejects.toThrow(
      /append-only/,
    );
    await expect(db.pool.query('truncate audit_log')).rejects.toThrow(/append-only/);
  });

  it('reports the first edited row', async () => {
    await tamper(`update audit_log set outputs = '{"a":1,"b":3}'::jsonb where seq = 1`);
    const result = await verifyAudit(db.pool);
    expect(result).toEqual({
      ok: false,
      rows: 0,
      seq: 1,
      reason: 'hash does not match the row contents',
    });
    await tamper(`update audit_log set outputs = '{"a":1,"b":2}'::jsonb where seq = 1`);
    expect((await verifyAudit(db.pool)).ok).toBe(true);
  });

  it('reports a removed row and a relinked chain', async () => {
    await tamper('delete from audit_log where seq = 5');
    expect(await verifyAudit(db.pool)).toMatchObject({
      ok: false,
      seq: 5,
      reason: 'row 5 is missing',
    });
    await tamper('update audit_log set seq = 5 where seq = 6');
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: false, seq: 5 });
  });
  it('refuses a row planted below seq 1, and verify reports one already there', async () => {
    const planted = `insert into audit_log (seq, at, actor, action, subject, prev_hash, hash)
                     values (0, now(), 'dpo', 'privacy.person-deleted', 'forged', 'x', 'y')`;
    await expect(db.pool.query(planted)).rejects.toThrow(/audit_log_seq_positive/);
    // A row from before the constraint (or with it dropped) is outside the chain.
    await tamper(`alter table audit_log drop constraint audit_log_seq_positive;
                  ${planted};
                  alter table audit_log add constraint audit_log_seq_positive
                    check (seq > 0) not valid`);
    expect(await verifyAudit(db.pool)).toEqual({
      ok: false,
      rows: 0,
      seq: 0,
      reason: 'a row precedes the first (seq 1)',
    });
    await tamper('delete from audit_log where seq = 0');
  });

  it('reports a time moved by less than a millisecond', async () => {
    const ok = await verifyAudit(db.pool);
    await tamper(`update audit_log set at = at + interval '400 microseconds' where seq = 2`);
    expect(await verifyAudit(db.pool)).toMatchObject({
      ok: false,
      seq: 2,
      reason: 'at was changed below the millisecond',
    });
    await tamper(`update audit_log set at = at - interval '400 microseconds' where seq = 2`);
    expect(await verifyAudit(db.pool)).toEqual(ok);
  });
});
