/**
 * What `pops serve` does on start that a new user meets: the admin token printed once on a
 * database where no admin token was ever made (tokens other commands made for themselves do not
 * count), and the local mail catcher, which reuses one already listening (another pops) and names
 * its variable when something else holds the port, and a first database start in a state folder
 * whose keys were made first (the tests, then the demo).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { bootstrapAdminToken } from '../cli/tokens.js';
import { logger } from '../common/logger.js';
import { startMailCatcher } from '../domain/campaigns/capture.js';
import { createToken, revokeToken } from '../domain/privacy/tokens.js';
import { popsRunner } from './cli-support.js';
import { createTestDatabase, freePort, type TestDatabase } from './support.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('serve-start');
});
afterAll(async () => {
  await db?.close();
});

it('prints an admin token once, also after a demo made a token of its own', async () => {
  const demo = await createToken(db.pool, { role: 'ingest', name: 'canary-demo', createdBy: 't' });
  await revokeToken(db.pool, demo.id, 't');
  const first = await bootstrapAdminToken(db.pool, 'http://127.0.0.1:8080');
  const token = /^ {2}(pt_\S+)$/m.exec(first ?? '')?.[1];
  expect(token).toMatch(/^pt_[A-Za-z0-9_-]{8}_[A-Za-z0-9_-]{43}$/);
  const { rows } = await db.pool.query<{ role: string; name: string }>(
    `select role, name from api_tokens where revoked_at is null`,
  );
  expect(rows).toEqual([{ role: 'admin', name: 'first-admin' }]);
  expect(await bootstrapAdminToken(db.pool, 'http://127.0.0.1:8080')).toBeNull();
});

it("reuses its own folder's mail catcher, and names the variable for anything else", async () => {
  const log = logger('silent');
  const dir = path.join(os.tmpdir(), `pops-catcher-${process.pid}`);
  const first = await startMailCatcher(dir, await freePort(), log);
  const again = await startMailCatcher(dir, first.port, log);
  expect(again.port).toBe(first.port);
  await again.close();
  // The first still listens: closing the reused one closed nothing.
  expect(await greeting(first.port)).toMatch(/^220 /);
  await first.close();

  const squatter = net.createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  const port = await new Promise<number>((resolve) =>
    squatter.listen(0, '127.0.0.1', () => resolve((squatter.address() as net.AddressInfo).port)),
  );
  await expect(startMailCatcher(dir, port, log)).rejects.toThrow(
    `POPS_SMTP_CAPTURE_PORT=${port}: the port is taken by something that is not an SMTP server`,
  );
  await new Promise<void>((resolve) => squatter.close(() => resolve()));
});

it("refuses another state folder's mail catcher, which would take this folder's mail", async () => {
  const log = logger('silent');
  const theirs = path.join(os.tmpdir(), `pops-catcher-theirs-${process.pid}`);
  const ours = path.join(os.tmpdir(), `pops-catcher-ours-${process.pid}`);
  const other = await startMailCatcher(theirs, await freePort(), log);
  await expect(startMailCatcher(ours, other.port, log)).rejects.toThrow(
    `POPS_SMTP_CAPTURE_PORT=${other.port}: the port is taken by an SMTP server that does not` +
      ` write into ${ours} (another pops state folder?)`,
  );
  await other.close();
  fs.rmSync(theirs, { recursive: true, force: true });
  fs.rmSync(ours, { recursive: true, force: true });
});

function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('data', (chunk: Buffer) => {
      socket.destroy();
      resolve(chunk.toString());
    });
    socket.once('error', reject);
  });
}

it('starts its embedded PostgreSQL in a state folder whose keys were made first', async () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-keys-first-'));
  onTestFinished(() => fs.rmSync(state, { recursive: true, force: true }));
  const port = await freePort();
  const pops = popsRunner(() => ({
    DATABASE_URL: '',
    POPS_STATE_DIR: state,
    POPS_PG_PORT: String(port),
  }));
  // The keys before any database: the state folder is made by the key code.
  expect((await pops(['privacy', 'rotate-key', '--json'])).code).toBe(0);
  expect(fs.statSync(path.join(state, 'keys')).mode & 0o777).toBe(0o700);
  // As an earlier version left it: the state folder itself private.
  fs.chmodSync(state, 0o700);
  const first = await pops(['consent', 'defaults', '--json']);
  expect({ code: first.code, stderr: first.stderr }).toEqual({ code: 0, stderr: '' });
  expect(JSON.parse(first.stdout)).toEqual({
    defaults: { personalization: true, marketing: false, analytics: true },
  });
  expect(fs.statSync(path.join(state, 'keys')).mode & 0o777).toBe(0o700);
  expect(fs.existsSync(path.join(state, 'pg', 'PG_VERSION'))).toBe(true);
});
