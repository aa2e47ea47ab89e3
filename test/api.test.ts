import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import { apiToken, withToken } from './auth-support.js';
import { movieLensSlice, prepareModel, startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

let db: TestDatabase;
let client: Client;
let workers: Awaited<ReturnType<typeof startWorkers>>;
let api: ReturnType<typeof buildApi>;
let base: string;
let token: string;
const prefix = testQueuePrefix('api');
const model = 'api-model';

async function call(method: string, path: string, body?: unknown, raw?: string) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: withToken(
      token,
      body !== undefined || raw !== undefined ? { 'content-type': 'application/json' } : {},
    ),
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  db = await createTestDatabase('api');
  client = await testTemporalClient();
  await prepareModel(db.pool, movieLensSlice(30).dir, 'ml-api', model);
  workers = await startWorkers(db.pool, prefix, client);
  token = await apiToken(db.pool, 'admin', 'api-test');
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: prefix,
    log: logger('silent'),
    actor: 'api-test',
  });
  base = await api.listen({ host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await api.close();
  await workers.stop();
  await client.connection.close();
  await db.close();
});

describe('the HTTP API', () => {
  it('answers health with both backing services', async () => {
    expect(await call('GET', '/healthz')).toEqual({
      status: 200,
      body: { ok: true, database: 'ok', temporal: 'ok' },
    });
  });

  it('starts a retraining, attaches a second request, and serves the registered version', async () => {
    const started = await call('POST', '/v1/retrains', {
      model,
      reason: 'api test',
      training: { epochs: 2 },
      promotion: 'none',
    });
    expect(started.status).toBe(202);
    expect(started.body).toMatchObject({ workflowId: `retrain/${model}`, attached: false });
    const again = await call('POST', '/v1/retrains', { model, reason: 'again' });
    expect(again).toEqual({ status: 200, body: { ...started.body, attached: true } });

    const id = encodeURIComponent(String(started.body['workflowId']));
    let status = await call('GET', `/v1/workflows/${id}`);
    for (let i = 0; i < 600 && status.body['status'] === 'RUNNING'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await call('GET', `/v1/workflows/${id}`);
    }
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({
      status: 'COMPLETED',
      type: 'retrainModel',
      result: { version: 1 },
    });

    const models = await call('GET', '/v1/models');
    expect(models.body['models']).toEqual([
      { name: model, source: 'ml-api', latestVersion: 1, versions: 1 },
    ]);
    const version = await call('GET', `/v1/models/${model}/versions/1`);
    expect(version.status).toBe(200);
    expect(version.body).toMatchObject({
      model,
      version: 1,
      createdBy: 'api-test',
      reason: 'api test',
    });
  });

  it('answers bad input with 400 naming the field and the value', async () => {
    const missing = await call('POST', '/v1/retrains', { model });
    expect(missing.status).toBe(400);
    expect(missing.body).toMatchObject({
      error: { code: 'validation', message: expect.stringContaining('reason') },
    });
    const badEpochs = await call('POST', '/v1/retrains', {
      model,
      reason: 'x',
      training: { epochs: 0 },
    });
    expect(badEpochs.status).toBe(400);
    expect(String((badEpochs.body['error'] as { message: string }).message)).toContain(
      'training.epochs',
    );
    const badJson = await call('POST', '/v1/retrains', undefined, '{"model": ');
    expect(badJson.status).toBe(400);
    const badVersion = await call('GET', `/v1/models/${model}/versions/zero`);
    expect(badVersion).toMatchObject({
      status: 400,
      body: { error: { message: expect.stringContaining('version') } },
    });
  });

  it('answers 404 for unknown things and 409 for a conflicting declaration', async () => {
    expect((await call('POST', '/v1/retrains', { model: 'ghost', reason: 'x' })).status).toBe(404);
    expect((await call('GET', '/v1/workflows/retrain%2Fghost')).status).toBe(404);
    expect((await call('GET', `/v1/models/${model}/versions/99`)).status).toBe(404);
    expect((await call('GET', '/v1/nothing')).status).toBe(404);
    expect((await call('POST', '/v1/models', { name: model, source: 'ml-api' })).status).toBe(200);
    const conflict = await call('POST', '/v1/models', { name: model, source: 'other' });
    expect(conflict).toMatchObject({ status: 409, body: { error: { code: 'conflict' } } });
  });

  it('answers 503 when Temporal is unreachable', async () => {
    const dead = new Client({
      connection: Connection.lazy({ address: '127.0.0.1:1', connectTimeout: 500 }),
    });
    const broken = buildApi({
      pool: db.pool,
      temporal: dead,
      queuePrefix: prefix,
      log: logger('silent'),
      actor: 'x',
    });
    const health = await broken.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(503);
    const status = await broken.inject({
      method: 'GET',
      url: '/v1/workflows/retrain%2Fx',
      headers: withToken(token),
    });
    expect(status.statusCode).toBe(503);
    expect(status.json()).toMatchObject({ error: { code: 'unavailable' } });
    await broken.close();
  });
});
