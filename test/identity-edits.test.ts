import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { importMessages, message, resolveAll, storedPartition } from './identity-support.js';
import { type Harness, startHarness } from './harness.js';
import { hashedValueOf, testQueuePrefix, type TestDatabase } from './support.js';

let db: TestDatabase;
let client: Client;
let h: Harness;
let base: string;
const prefix = testQueuePrefix('identity-edits');

async function call(method: string, path: string, body?: unknown) {
  const response = await h.fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function finished(started: Record<string, unknown>) {
  const handle = client.workflow.getHandle(String(started['workflowId']), String(started['runId']));
  return handle.result() as Promise<Record<string, unknown>>;
}

beforeAll(async () => {
  h = await startHarness('identity-edits', { api: true, prefix });
  ({ db, client, base } = h);
  await importMessages(db.pool, [
    message({ id: 'e1', at: 0, anonymousId: 'anon-1' }),
    message({ id: 'e2', at: 1, type: 'identify', userId: 'ann', email: ' Ann@Example.com ' }),
    message({ id: 'e3', at: 2, userId: 'ann', anonymousId: 'anon-1' }),
  ]);
  await resolveAll(db.pool);
});

afterAll(async () => {
  await h.close();
});

describe('identity over HTTP and Temporal', () => {
  it('shows a person by any identifier, normalized, with its merge history', async () => {
    const byEmail = await call('GET', '/v1/identity/identifiers/email/ANN%40example.COM');
    expect(byEmail.status).toBe(200);
    // anon-1 was seen first (e1), so its person is the canonical one; e3 merged ann's into it.
    const anon = await call('GET', '/v1/identity/identifiers/anonymous_id/anon-1');
    expect(byEmail.body['personId']).toBe(anon.body['personId']);
    expect(byEmail.body['events']).toBe(3);
    const identifiers = byEmail.body['identifiers'] as Array<Record<string, unknown>>;
    expect(identifiers.map((i) => `${String(i['type'])}:${String(i['value'])}`)).toEqual([
      'anonymous_id:anon-1',
      `email:${hashedValueOf('email', 'ann@example.com')}`,
      'user_id:ann',
    ]);
    const merges = byEmail.body['merges'] as Array<Record<string, unknown>>;
    expect(merges).toHaveLength(1);
    expect(merges[0]).toMatchObject({ messageId: 'e3', undoneBy: null });
    const byId = await call('GET', `/v1/identity/persons/${String(anon.body['personId'])}`);
    const { lookedUp: _a, ...viaId } = byId.body;
    const { lookedUp: _b, ...viaAnon } = anon.body;
    expect(viaId).toEqual(viaAnon);
  });

  it('unmerges and remerges through workflows, auditing who asked and why', async () => {
    const person = await call('GET', '/v1/identity/identifiers/user_id/ann');
    const [merge] = person.body['merges'] as Array<{ mergeId: number }>;
    const started = await call('POST', '/v1/identity/unmerges', {
      mergeId: merge?.mergeId,
      reason: 'ticket 42: two people',
    });
    expect(started.status).toBe(202);
    expect(started.body['workflowId']).toBe(`identity-unmerge/merge-${merge?.mergeId}`);
    const unmerged = await finished(started.body);
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:anon-1'],
      ['email:ann@example.com', 'user_id:ann'],
    ]);
    const after = await call('GET', '/v1/identity/identifiers/user_id/ann');
    expect(after.body['personId']).toBe(unmerged['splitPerson']);
    expect(after.body['unmerges']).toMatchObject([
      {
        unmergeId: unmerged['unmergeId'],
        reason: 'ticket 42: two people',
        requestedBy: 'api-test',
      },
    ]);

    // The same merge again: refused at once, saying why.
    const again = await call('POST', '/v1/identity/unmerges', {
      mergeId: merge?.mergeId,
      reason: 'again',
    });
    expect(again).toEqual({
      status: 409,
      body: {
        error: {
          code: 'conflict',
          message: `merge ${merge?.mergeId} is already undone (unmerge ${String(unmerged['unmergeId'])})`,
        },
      },
    });

    const remerge = await call('POST', '/v1/identity/remerges', {
      unmergeId: unmerged['unmergeId'],
      reason: 'it was one person after all',
    });
    expect(await finished(remerge.body)).toMatchObject({ exact: true });
    expect(await storedPartition(db.pool)).toEqual([
      ['anonymous_id:anon-1', 'email:ann@example.com', 'user_id:ann'],
    ]);

    const trail = await auditTrail(db.pool, { subject: 'identity-graph' });
    expect(trail.map((r) => [r.action, r.actor, r.inputs['reason']])).toEqual([
      ['identity.unmerged', 'api-test', 'ticket 42: two people'],
      ['identity.remerged', 'api-test', 'it was one person after all'],
    ]);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true, rows: 2 });
  });

  it('refuses bad requests naming the field and the value', async () => {
    expect(await call('POST', '/v1/identity/unmerges', { reason: 'r' })).toEqual({
      status: 400,
      body: {
        error: {
          code: 'validation',
          message: 'invalid body: mergeId: give exactly one of mergeId and personId (got missing)',
        },
      },
    });
    const wrong = await call('POST', '/v1/identity/unmerges', { mergeId: 'x', reason: 'r' });
    expect(wrong.status).toBe(400);
    expect(JSON.stringify(wrong.body)).toContain('mergeId');
    expect(JSON.stringify(wrong.body)).toContain('(got \\"x\\")');
    expect((await call('POST', '/v1/identity/remerges', { unmergeId: 1 })).status).toBe(400);
    expect(await call('GET', '/v1/identity/persons/abc')).toEqual({
      status: 400,
      body: {
        error: {
          code: 'validation',
          message:
            'invalid path: personId: is not a person id (a positive whole number) (got "abc")',
        },
      },
    });
    const fax = await call('GET', '/v1/identity/identifiers/fax/123');
    expect(fax.status).toBe(400);
    expect(JSON.stringify(fax.body)).toContain(
      'type: is not an identifier type (user_id, email, phone, anonymous_id, device_id)',
    );
    const unknownMerge = await call('POST', '/v1/identity/unmerges', { mergeId: 999, reason: 'r' });
    expect(unknownMerge).toEqual({
      status: 404,
      body: { error: { code: 'not_found', message: 'mergeId: merge 999 does not exist' } },
    });
    const unknownUnmerge = await call('POST', '/v1/identity/remerges', {
      unmergeId: 999,
      reason: 'r',
    });
    expect(unknownUnmerge.status).toBe(404);
    expect(await call('GET', '/v1/identity/persons/987654')).toEqual({
      status: 404,
      body: {
        error: { code: 'not_found', message: 'person 987654 is not in the identity graph' },
      },
    });
    const unknown = await call('GET', '/v1/identity/identifiers/user_id/nobody');
    expect(unknown.status).toBe(404);
  });
});
