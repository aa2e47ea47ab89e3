/**
 * What a workflow test file runs on, made in one call: a database and task queues of its own, a
 * Temporal client, real workers on those queues, and, when asked, the HTTP API on a loopback port.
 */
import type { Client } from '@temporalio/client';
import { buildApi } from '../api/server.js';
import { logger } from '../common/logger.js';
import { apiToken } from './auth-support.js';
import { startWorkers } from './retrain-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

export interface Harness {
  db: TestDatabase;
  client: Client;
  prefix: string;
  /** The API's base URL (`http://127.0.0.1:port`), or '' without `api`. */
  base: string;
  /** An admin API token of the file's database. */
  token: string;
  /** `fetch` with the admin token (unless the call sets its own Authorization). */
  fetch(url: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

/**
 * Starts a file's harness; `api` also serves the HTTP API (recording `api-test` as the actor), and
 * `prefix` names the task queues when the file needs to know them before it starts.
 */
export async function startHarness(
  label: string,
  options: { api?: boolean; prefix?: string } = {},
): Promise<Harness> {
  const db = await createTestDatabase(label);
  const client = await testTemporalClient();
  const prefix = options.prefix ?? testQueuePrefix(label);
  const workers = await startWorkers(db.pool, prefix, client);
  const api = options.api
    ? buildApi({
        pool: db.pool,
        temporal: client,
        queuePrefix: prefix,
        log: logger('silent'),
        actor: 'api-test',
      })
    : undefined;
  const base = api ? await api.listen({ host: '127.0.0.1', port: 0 }) : '';
  // Named as the actor the API recorded before tokens, which the tests expect.
  const token = await apiToken(db.pool, 'admin', 'api-test');
  const harness: Harness = {
    db,
    client,
    prefix,
    base,
    token,
    fetch: (url, init = {}) => fetch(url, { ...init, headers: withAdmin(token, init.headers) }),
    async close() {
      await api?.close();
      await workers.stop();
      await client.connection.close();
      await db.close();
    },
  };
  return harness;
}

/** Headers with the token's Authorization added, unless they carry one. */
export function withAdmin(
  token: string,
  headers?: ConstructorParameters<typeof Headers>[0],
): Headers {
  const merged = new Headers(headers);
  if (!merged.has('authorization')) merged.set('authorization', `Bearer ${token}`);
  return merged;
}
