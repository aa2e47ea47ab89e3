/**
 * Reading the audit log: `pops audit list|show` and GET /v1/audit (the auditor's), by action (exact
 * or prefix), actor, subject, workflow and time, newest first, a page at a time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../domain/audit.js';
import { apiToken } from './auth-support.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';

let h: Harness;
let between: Date;
const pops = popsRunner(() => ({ DATABASE_URL: h.db.url }));

beforeAll(async () => {
  h = await startHarness('audit-search', { api: true });
  const rows = [
    { actor: 'ann', action: 'privacy.person-deleted', subject: 'privacy-request/delete-1' },
    { actor: 'bob', action: 'model.promoted', subject: 'model/m', workflowId: 'retrain/m' },
    { actor: 'ann', action: 'privacy.person-exported', subject: 'privacy-request/export-2' },
  ];
  for (const [i, row] of rows.entries()) {
    if (i === 2) {
      await sleep(20);
      between = new Date();
      await sleep(20);
    }
    await appendAudit(h.db.pool, { ...row, inputs: { n: i + 1 } });
  }
}, 120_000);

afterAll(async () => {
  await h?.close();
});

describe('GET /v1/audit', () => {
  it('answers the rows that match, newest first, to an auditor only', async () => {
    const auditor = await apiToken(h.db.pool, 'auditor', 'aud');
    const mlops = await apiToken(h.db.pool, 'mlops', 'ml');
    const get = async (query: string, token = auditor) => {
      const answer = await fetch(`${h.base}/v1/audit${query}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      return { status: answer.status, body: (await answer.json()) as Record<string, unknown> };
    };
    const subjects = (body: Record<string, unknown>) =>
      (body['rows'] as Array<{ subject: string }>).map((r) => r.subject);

    const all = await get('');
    expect(all.status).toBe(200);
    expect(subjects(all.body)).toEqual([
      'privacy-request/export-2',
      'model/m',
      'privacy-request/delete-1',
    ]);
    expect(subjects((await get('?action=privacy.*')).body)).toEqual([
      'privacy-request/export-2',
      'privacy-request/delete-1',
    ]);
    expect(subjects((await get('?action=privacy.person-deleted')).body)).toEqual([
      'privacy-request/delete-1',
    ]);
    expect(subjects((await get('?actor=bob')).body)).toEqual(['model/m']);
    expect(subjects((await get('?workflowId=retrain/m')).body)).toEqual(['model/m']);
    const since = encodeURIComponent(between.toISOString());
    expect(subjects((await get(`?since=${since}`)).body)).toEqual(['privacy-request/export-2']);
    expect(subjects((await get(`?until=${since}`)).body)).toEqual([
      'model/m',
      'privacy-request/delete-1',
    ]);
    // Pages: two rows, then the rest before the last one's seq.
    const first = await get('?limit=2');
    expect(subjects(first.body)).toHaveLength(2);
    const next = first.body['next'] as number;
    expect(subjects((await get(`?before=${next}`)).body)).toEqual(['privacy-request/delete-1']);

    expect((await get('', mlops)).status).toBe(403);
    const bad = await get('?limit=5000');
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain('limit');
    expect((await get('?since=yesterday')).status).toBe(400);
    expect((await get('?color=red')).status).toBe(400);
  });
});

describe('pops audit list|show', () => {
  it('lists by the same filters and shows one row whole', async () => {
    const listed = await pops(['audit', 'list', '--actor', 'ann', '--json']);
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout) as Array<{ seq: number; action: string }>;
    expect(rows.map((r) => r.action)).toEqual([
      'privacy.person-exported',
      'privacy.person-deleted',
    ]);
    const text = await pops(['audit', 'list', '--workflow', 'retrain/m']);
    expect(text.stdout).toContain('model.promoted');
    expect(text.stdout).toContain('retrain/m');

    const seq = rows[1]?.seq ?? 0;
    const shown = await pops(['audit', 'show', String(seq), '--json']);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      seq,
      actor: 'ann',
      subject: 'privacy-request/delete-1',
      inputs: { n: 1 },
    });
    const missing = await pops(['audit', 'show', '999']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('<seq> 999: no such audit row');
    const bad = await pops(['audit', 'list', '--since', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('since');
  }, 120_000);
});
