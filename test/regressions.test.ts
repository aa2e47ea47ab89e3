/** Regression tests for bugs found by trying to break pops (bad input, crashes). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { buildApi } from '../api/server.js';
import { rootCause, startRetrain, waitForRetrain } from '../client/retrain.js';
import { withTransaction } from '../common/db.js';
import { logger } from '../common/logger.js';
import { auditTrail } from '../domain/audit.js';
import { createToken } from '../domain/privacy/tokens.js';
import { declareModel } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { importEvents } from '../ingest/events.js';
import { importMovieLens } from '../ingest/movielens.js';
import { withToken } from './auth-support.js';
import { registerExampleFeatures, startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let workers: Awaited<ReturnType<typeof startWorkers>>;
const prefix = testQueuePrefix('regress');

/** A MovieLens directory: 60 ratings alternating 5 and 1, then 30 later ratings of 5 only. */
function oneClassValidation(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-oneclass-'));
  const rows = ['userId,movieId,rating,timestamp'];
  for (let i = 0; i < 60; i++) rows.push(`${1 + (i % 6)},${i + 1},${i % 2 ? 1 : 5},${1000 + i}`);
  for (let i = 0; i < 30; i++) rows.push(`${1 + (i % 6)},${100 + i},5,${1075 + i}`);
  fs.writeFileSync(path.join(dir, 'ratings.csv'), `${rows.join('\n')}\n`);
  return dir;
}

beforeAll(async () => {
  db = await createTestDatabase('regress');
  client = await testTemporalClient();
  workers = await startWorkers(db.pool, prefix, client);
  await registerExampleFeatures(db.pool);
});

afterAll(async () => {
  await workers.stop();
  await client.connection.close();
  await db.close();
});

describe('regressions', () => {
  it('ends a retrain whose validation slice has one class, without retrying', async () => {
    // Time range 1000..1104: the last 20% (from 1083.2: 1084..1104) holds only ratings of 5.
    await importMovieLens(db.pool, oneClassValidation(), { source: 'oneclass' });
    await declareModel(db.pool, { name: 'oneclass', source: 'oneclass', createdBy: 't' });
    const run = await startRetrain(
      client,
      prefix,
      retrainInputSchema.parse({ model: 'oneclass', reason: 'r', training: { epochs: 1 } }),
    );
    const err = await waitForRetrain(client, run.workflowId, run.runId).catch((e: Error) => e);
    expect(rootCause(err)).toMatchObject({
      type: 'InsufficientDataFailure',
      message: expect.stringContaining(
        'validate split of "oneclass" has 21 positive and 0 negative',
      ),
    });
  });

  it('leaves out a rated event whose rating is not a number instead of failing the set', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pops-ev-')), 'e.ndjson');
    const event = (id: string, rating: unknown, ts: string) =>
      JSON.stringify({
        type: 'track',
        messageId: id,
        timestamp: ts,
        userId: 'u1',
        event: 'rated',
        properties: { item_id: '5', rating },
      });
    fs.writeFileSync(file, `${event('bad', 'lots', '2021-02-03T00:00:00Z')}\n`);
    await importEvents(db.pool, file, { source: 'oneclass' });
    const { defaultRange } = await import('../domain/training-set.js');
    const range = await defaultRange(db.pool, 'oneclass', {});
    // The string rating is not an example, so it does not stretch the time range either.
    expect(range?.validateUntil.getTime()).toBe(1104 * 1000);
  });

  it('refuses NUL in free text and ids past 2^53 at the boundary', async () => {
    const nul = retrainInputSchema.safeParse({ model: 'm', reason: 'bad \u0000 reason' });
    expect(nul.success).toBe(false);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pops-ev-')), 'big.ndjson');
    fs.writeFileSync(
      file,
      '{"type":"track","messageId":"big","timestamp":"2021-02-03T00:00:00Z",' +
        '"userId":12345678901234567890,"event":"x"}\n',
    );
    await expect(importEvents(db.pool, file)).rejects.toThrow(/line 1: field "userId".*2\^53/);
  });

  it('compares trainUntil and validateUntil as instants, not as text', () => {
    const later = { model: 'm', reason: 'r' };
    // 10:00+09:00 is 01:00Z, before 05:00Z: valid although it sorts after it as text.
    expect(
      retrainInputSchema.safeParse({
        ...later,
        trainUntil: '2018-03-01T10:00:00+09:00',
        validateUntil: '2018-03-01T05:00:00Z',
      }).success,
    ).toBe(true);
    expect(
      retrainInputSchema.safeParse({
        ...later,
        trainUntil: '2018-03-01T05:00:00Z',
        validateUntil: '2018-03-01T10:00:00+09:00',
      }).success,
    ).toBe(false);
  });

  it('records the API caller as the actor, whatever the body says, and answers 400 not 500', async () => {
    await declareModel(db.pool, { name: 'spoof', source: 'nowhere', createdBy: 't' });
    // The actor is the caller's token (its name), never the body's requestedBy.
    const caller = await createToken(db.pool, { role: 'mlops', name: 'the-api', createdBy: 't' });
    const headers = withToken(caller.token);
    const api = buildApi({
      pool: db.pool,
      temporal: client,
      queuePrefix: prefix,
      log: logger('silent'),
      actor: 'fallback-unused',
    });
    const posted = await api.inject({
      method: 'POST',
      url: '/v1/retrains',
      headers,
      payload: { model: 'spoof', reason: 'x', requestedBy: 'the-ceo' },
    });
    expect(posted.statusCode).toBe(202);
    const { workflowId, runId } = posted.json<{ workflowId: string; runId: string }>();
    await waitForRetrain(client, workflowId, runId).catch(() => undefined);
    const trail = await auditTrail(db.pool, { workflowId });
    expect(trail.length).toBeGreaterThan(0);
    expect(new Set(trail.map((r) => r.actor))).toEqual(new Set(['the-api']));

    const huge = await api.inject({
      method: 'GET',
      url: '/v1/models/spoof/versions/99999999999',
      headers,
    });
    expect(huge.statusCode).toBe(400);
    const nul = await api.inject({
      method: 'POST',
      url: '/v1/models',
      headers: withToken(
        (await createToken(db.pool, { role: 'admin', name: 'a', createdBy: 't' })).token,
      ),
      payload: { name: 'n', source: 'a\u0000b' },
    });
    expect(nul.statusCode).toBe(400);
    await api.close();
  });

  it('survives the database ending a connection in the middle of a transaction', async () => {
    const attempt = withTransaction(db.pool, async (tx) => {
      const me = await tx.query<{ pid: number }>('select pg_backend_pid() as pid');
      await db.pool.query('select pg_terminate_backend($1)', [me.rows[0]?.pid]);
      await tx.query('select pg_sleep(1)');
    });
    await expect(attempt).rejects.toThrow();
    expect((await db.pool.query('select 1 as ok')).rows[0]).toEqual({ ok: 1 });
  });
});
