/**
 * Regressions found by breaking the identity features: each test is one finding, fixed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { auditTrail } from '../domain/audit.js';
import { loadIdentityRules } from '../domain/identity/rules-file.js';
import { importEvents } from '../ingest/events.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { popsRunner } from './cli-support.js';
import { importMessages, message, resolveAll } from './identity-support.js';
import { type Harness, startHarness } from './harness.js';
import { testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;
let client: Client;
let h: Harness;
let base: string;
let key: string;
const prefix = testQueuePrefix('identity-regressions');
const pops = popsRunner(() => ({ DATABASE_URL: db.url, POPS_TASK_QUEUE_PREFIX: prefix }));

async function call(method: string, route: string, body?: unknown, writeKey?: string) {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (writeKey) {
    headers['authorization'] = `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`;
  }
  const response = await h.fetch(`${base}${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, text: await response.text() };
}

beforeAll(async () => {
  h = await startHarness('identity-regressions', { api: true, prefix });
  ({ db, client, base } = h);
  key = (await createWriteKey(db.pool, 'regress', 'tester')).key;
  await importMessages(db.pool, [
    message({ id: 'g1', at: 0, anonymousId: 'ga' }),
    message({ id: 'g2', at: 1, userId: 'gu' }),
    message({ id: 'g3', at: 2, userId: 'gu', anonymousId: 'ga' }),
  ]);
  await resolveAll(db.pool);
});

afterAll(async () => {
  await h.close();
});

describe('identity regressions', () => {
  it('refuses ids that are not plain whole numbers instead of coercing them to a real merge', async () => {
    for (const mergeId of [true, [1], ' 1 ', '1e0']) {
      const answer = await call('POST', '/v1/identity/unmerges', { mergeId, reason: 'r' });
      expect(answer.status).toBe(400);
      expect(answer.text).toContain('mergeId');
    }
    for (const id of ['0x1', '1e0', '+1', '01']) {
      expect((await call('GET', `/v1/identity/persons/${id}`)).status).toBe(400);
    }
    const cli = await pops(['identity', 'unmerge', '--reason', 'r', '--', '1e0']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('mergeId: is not an id (a positive whole number) (got "1e0")');
    const { rows } = await db.pool.query('select 1 from identity_unmerges');
    expect(rows).toHaveLength(0);
  });

  it('refuses a reason PostgreSQL cannot store before anything is undone (it left an unaudited unmerge)', async () => {
    const answer = await call('POST', '/v1/identity/unmerges', {
      mergeId: 1,
      reason: 'bad \ud800 reason',
    });
    expect(answer.status).toBe(400);
    expect(answer.text).toContain('reason: contains U+0000 or a lone surrogate');
    const cli = await pops(['identity', 'unmerge', '1', '--reason', '']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('reason');
    const { rows } = await db.pool.query('select 1 from identity_unmerges');
    expect(rows).toHaveLength(0);
  });

  it('answers two concurrent unmerges of one merge with one start and one refusal, auditing one reason', async () => {
    const [a, b] = await Promise.all([
      call('POST', '/v1/identity/unmerges', { mergeId: 1, reason: 'first' }),
      call('POST', '/v1/identity/unmerges', { mergeId: 1, reason: 'second' }),
    ]);
    expect([a?.status, b?.status].sort()).toEqual([202, 409]);
    const started = JSON.parse(a?.status === 202 ? a.text : (b?.text ?? '{}')) as {
      workflowId: string;
      runId: string;
    };
    await client.workflow.getHandle(started.workflowId, started.runId).result();
    const trail = await auditTrail(db.pool, { subject: 'identity-graph' });
    expect(trail.filter((r) => r.action === 'identity.unmerged')).toHaveLength(1);
  });

  it('answers 400, not 500, for instants PostgreSQL cannot hold and for deep nesting', async () => {
    const track = (extra: Record<string, unknown>) =>
      call('POST', '/v1/track', { userId: 'x', event: 'E', ...extra }, key);
    const zone = await track({ timestamp: '2024-05-01T10:00:00+23:59' });
    expect(zone.status).toBe(400);
    expect(zone.text).toContain('has a zone past ±15:59');
    const skew = await track({
      timestamp: '0001-01-01T00:00:00Z',
      sentAt: '9999-12-31T00:00:00Z',
    });
    expect(skew.status).toBe(400);
    expect(skew.text).toContain('is not between 1970 and 2200');
    // Written as text: JSON.stringify itself runs out of stack at this depth.
    const deep = `${'{"d":'.repeat(5000)}"leaf"${'}'.repeat(5000)}`;
    const nested = await call(
      'POST',
      '/v1/track',
      `{"userId":"x","event":"E","properties":${deep}}`,
      key,
    );
    expect(nested.status).toBe(400);
    expect(nested.text).toContain('is nested deeper than 64 levels');
    const blank = await call('POST', '/v1/track', { userId: '   ', event: 'E' }, key);
    expect(blank.status).toBe(400);
    expect(blank.text).toContain('is blank');
    expect((await call('GET', '/v1/identity/identifiers/email/%00')).status).toBe(400);
    const { rows } = await db.pool.query("select 1 from events where source = 'regress'");
    expect(rows).toHaveLength(0);
  });

  it('names the line of such a message in an NDJSON import', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pops-reg-')), 'e.ndjson');
    const ok = { type: 'track', event: 'E', userId: 'x', messageId: 'n1' };
    fs.writeFileSync(
      file,
      [
        { ...ok, timestamp: '2024-01-01T00:00:00Z' },
        { ...ok, messageId: 'n2', timestamp: '2024-05-01T10:00:00+23:59' },
      ]
        .map((m) => JSON.stringify(m))
        .join('\n'),
    );
    await expect(importEvents(db.pool, file)).rejects.toThrow(/line 2.*timestamp.*±15:59/);
  });

  it('refuses a rules file too large to start a workflow with', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pops-reg-')), 'r.yaml');
    const values = Array.from({ length: 1001 }, (_, i) => `  - ${'k'.repeat(400)}-${i}`);
    fs.writeFileSync(file, `blockList:\n${values.join('\n')}\n`);
    expect(() => loadIdentityRules(file)).toThrow(
      'blockList: Too big: expected array to have <=1000',
    );
  });
});
