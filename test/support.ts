/**
 * Per-file isolation on the shared servers: a database of its own (migrated) and task queues of
 * its own, so test files run side by side without seeing each other's rows or tasks.
 */
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { createPool, ensureDatabase, type Pool, withDatabase } from '../common/db.js';
import { migrate } from '../common/migrate.js';

export interface TestDatabase {
  url: string;
  pool: Pool;
  close(): Promise<void>;
}

/** A fresh, migrated database named after the test file. */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const name = `t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;
  const url = withDatabase(inject('serverUrl'), name);
  await ensureDatabase(url);
  await migrate(url);
  const pool = createPool(url, 8);
  return { url, pool, close: () => pool.end() };
}

/** A unique task-queue prefix for one test file. */
export function testQueuePrefix(label: string): string {
  return `t-${label.replace(/[^a-z0-9]/gi, '-').toLowerCase()}-${randomBytes(3).toString('hex')}`;
}

/** A Temporal client on the shared test server. */
export async function testTemporalClient(): Promise<Client> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return new Client({ connection, namespace: 'default' });
}

/** A loopback port free now (for a server a test starts itself). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Polls `probe` until it answers something truthy; fails naming `what` after `ms`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  ms = 60_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(
    `timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`,
  );
}

/**
 * The stored form of a normalized email or phone (`h1:` and HMAC-SHA256 of type, NUL, value, hex),
 * computed here from that definition with the tests' key (vitest.config.ts).
 */
export function hashedValueOf(type: string, normalized: string): string {
  const key = Buffer.from(process.env['POPS_PII_HMAC_KEY'] ?? '', 'hex');
  return `h1:${createHmac('sha256', key).update(`${type}\u0000${normalized}`).digest('hex')}`;
}
