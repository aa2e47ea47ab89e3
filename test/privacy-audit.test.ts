import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../domain/audit.js';
import { popsRunner } from './cli-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;
let dir: string;
const pops = popsRunner(() => ({ DATABASE_URL: db.url }));

async function append(n: number, from: number) {
  for (let i = 0; i < n; i++) {
    await appendAudit(db.pool, {
      actor: 'tester',
      action: 'test.row',
      subject: `row/${from + i}`,
      inputs: { i: from + i },
    });
  }
}

/** Removes rows past `seq` the way only someone owning the table could (triggers off). */
async function cutAfter(seq: number) {
  await db.pool.query('alter table audit_log disable trigger audit_log_no_update');
  await db.pool.query('delete from audit_log where seq > $1', [seq]);
  await db.pool.query('alter table audit_log enable trigger audit_log_no_update');
}

beforeAll(async () => {
  db = await createTestDatabase('privacy-audit');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-audit-'));
  await append(5, 1);
});

afterAll(async () => {
  await db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('pops audit verify --checkpoint', () => {
  it('detects rows cut from the end, which the chain alone cannot', async () => {
    const file = path.join(dir, 'anchors.jsonl');
    const taken = await pops(['audit', 'checkpoint', '--out', file]);
    expect(taken.code).toBe(0);
    const anchor = JSON.parse(fs.readFileSync(file, 'utf8').trim()) as { seq: number };
    expect(anchor.seq).toBe(5);

    // Rows appended after the checkpoint are fine.
    await append(3, 6);
    const fine = await pops(['audit', 'verify', '--checkpoint', file]);
    expect(fine.code).toBe(0);
    expect(fine.stdout).toContain('ok, 8 rows, 1 checkpoint(s) match');
    expect((await pops(['audit', 'checkpoint', '--out', file])).code).toBe(0);

    // Cut rows 7 and 8: what is left is a valid chain of 6 rows.
    await cutAfter(6);
    const alone = await pops(['audit', 'verify']);
    expect(alone.code).toBe(0);
    expect(alone.stdout).toContain('ok, 6 rows');
    const anchored = await pops(['audit', 'verify', '--checkpoint', file, '--json']);
    expect(anchored.code).toBe(1);
    expect(JSON.parse(anchored.stdout)).toMatchObject({
      ok: false,
      checkpoints: { ok: false, seq: 8 },
    });
  }, 120_000);

  it('detects a log rebuilt with the same length (the hash at the checkpoint differs)', async () => {
    const file = path.join(dir, 'one.json');
    const taken = await pops(['audit', 'checkpoint', '--json']);
    fs.writeFileSync(file, taken.stdout);
    await cutAfter(0);
    await append(6, 100);
    expect((await pops(['audit', 'verify'])).code).toBe(0);
    const rebuilt = await pops(['audit', 'verify', '--checkpoint', file]);
    expect(rebuilt.code).toBe(1);
    expect(rebuilt.stdout).toContain('does not have the hash of the checkpoint');
  }, 120_000);

  it('refuses a checkpoint file that is not one, naming the line', async () => {
    const file = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(file, '{"seq": 1}\n');
    const bad = await pops(['audit', 'verify', '--checkpoint', file]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('line 1 is not {seq, hash, takenAt}');
  }, 60_000);

  it('names --checkpoint when its URL cannot be fetched', async () => {
    const url = 'http://127.0.0.1:1/anchors';
    const unfetched = await pops(['audit', 'verify', '--checkpoint', url]);
    expect(unfetched.code).toBe(2);
    expect(unfetched.stderr).toContain(`--checkpoint ${url}: could not fetch it`);
  }, 60_000);
});

describe('an --out that cannot be written', () => {
  const out = path.join(os.tmpdir(), 'pops-no-such-folder', 'x.json');

  it('is refused by pops audit checkpoint before it reads the log', async () => {
    const refused = await pops(['audit', 'checkpoint', '--out', out]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      `--out ${out}: its folder ${path.dirname(out)} does not exist`,
    );
  }, 60_000);

  it('is refused by pops privacy export before a request is opened', async () => {
    const refused = await pops(['privacy', 'export', 'user_id:u1', '--out', out]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`--out ${out}: its folder`);
    const { rows } = await db.pool.query<{ n: number }>(
      'select count(*)::int as n from privacy_requests',
    );
    expect(rows[0]?.n).toBe(0);
  }, 60_000);
});
