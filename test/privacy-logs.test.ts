import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWriteKey } from '../ingest/write-keys.js';
import { postBatch } from './privacy-support.js';
import { createTestDatabase, testQueuePrefix, type TestDatabase } from './support.js';

const CLI = path.join(import.meta.dirname, '../cli/main.ts');
let db: TestDatabase;
let state: string;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

beforeAll(async () => {
  db = await createTestDatabase('privacy-logs');
  state = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-logs-'));
});

afterAll(async () => {
  await db.close();
  fs.rmSync(state, { recursive: true, force: true });
});

const PII = {
  email: 'Log.Scan.Person@Example.net',
  name: 'Quintessa Logscan',
  phone: '+44 20 7946 0958',
  user: 'log-user-5d2w',
};

describe('the logs of a full run', () => {
  it('hold no raw personal data and no secret, at debug level', async () => {
    const port = await freePort();
    // The keys come from the state dir's files here (the tests' variable is left out).
    const { POPS_PII_HMAC_KEY: _testKey, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], {
      env: {
        ...env,
        DATABASE_URL: db.url,
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        POPS_TASK_QUEUE_PREFIX: testQueuePrefix('privacy-logs'),
        POPS_HTTP_PORT: String(port),
        POPS_SMTP_CAPTURE_PORT: String(await freePort()),
        POPS_STATE_DIR: state,
        POPS_IDENTITY_MERGE_EVERY: '2s',
        LOG_LEVEL: 'debug',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      for (let i = 0; i < 600 && !/pt_[A-Za-z0-9_-]{8}_\S{43}/.test(stdout); i++) await sleep(100);
      const token = /(pt_[A-Za-z0-9_-]{8}_\S{43})/.exec(stdout)?.[1] ?? '';
      expect(token).not.toBe('');
      const base = `http://127.0.0.1:${port}`;
      const writeKey = (await createWriteKey(db.pool, 'web', 'tester')).key;
      const call = (method: string, route: string, body?: unknown, auth = `Bearer ${token}`) =>
        fetch(`${base}${route}`, {
          method,
          headers: { authorization: auth, 'content-type': 'application/json' },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });

      await postBatch(base, writeKey, [
        {
          type: 'identify',
          messageId: 'log-1',
          userId: PII.user,
          traits: { email: PII.email, name: PII.name, phone: PII.phone },
        },
        {
          type: 'track',
          messageId: 'log-2',
          userId: PII.user,
          event: 'rated',
          properties: { item_id: 'x', rating: 'bad' },
        },
      ]);
      const malformed = await fetch(`${base}/v1/identify`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}` },
        body: JSON.stringify({
          userId: PII.user,
          traits: { email: PII.email },
          timestamp: 'never',
        }),
      });
      expect(malformed.status).toBe(400);
      const consent = {
        identifier: { type: 'email', value: PII.email },
        purposes: { marketing: true },
      };
      expect((await call('PUT', '/v1/consent', consent)).status).toBe(200);
      const query = `/v1/consent?type=email&value=${encodeURIComponent(PII.email)}`;
      expect((await call('GET', query)).status).toBe(200);
      expect(
        (await call('GET', `/v1/identity/identifiers/email/${PII.email}`)).status,
      ).toBeLessThan(500);
      expect(
        (await call('GET', '/v1/models', undefined, 'Bearer pt_WRONGxxx_' + 'x'.repeat(43))).status,
      ).toBe(401);
      expect((await call('GET', '/v1/models', undefined, `Basic ${writeKey}`)).status).toBe(401);
      const asked = await call('POST', '/v1/privacy/deletions', {
        identifier: { type: 'email', value: PII.email },
        reason: 'log scan',
      });
      expect(asked.status).toBe(202);
      const { requestId } = (await asked.json()) as { requestId: string };
      let status = '';
      for (let i = 0; i < 600 && status !== 'done'; i++) {
        const answer = await call('GET', `/v1/privacy/requests/${requestId}`);
        status = ((await answer.json()) as { status?: string }).status ?? '';
        if (status !== 'done') await sleep(100);
      }
      expect(status).toBe('done');
      child.kill('SIGTERM');
      await exited;

      const keys = fs
        .readdirSync(path.join(state, 'keys'))
        .map((f) => fs.readFileSync(path.join(state, 'keys', f), 'utf8'));
      const hmac = keys.find((k) => /^[0-9a-f]{64}\s*$/.test(k))?.trim() ?? '';
      const field = /"k1": "([0-9a-f]{64})"/.exec(keys.join('\n'))?.[1] ?? '';
      expect(hmac).toMatch(/^[0-9a-f]{64}$/);
      // The identify's address was sealed at ingestion, so the field key file exists.
      expect(field).toMatch(/^[0-9a-f]{64}$/);
      const secrets = {
        token,
        writeKey,
        hmac,
        field,
        tokenBody: token.slice(12),
        writeKeyBody: writeKey.slice(12),
      };

      // Every log line (JSON, on stderr or stdout); the first-start banner is the one place the
      // token is shown, to the terminal and never as a log line.
      const logs = [...stderr.split('\n'), ...stdout.split('\n')].filter((l) => l.startsWith('{'));
      expect(logs.length).toBeGreaterThan(20);
      const text = logs.join('\n').toLowerCase();
      for (const [what, value] of Object.entries({ ...PII, email: PII.email.toLowerCase() })) {
        expect(text.includes(value.toLowerCase()), `${what} in the logs`).toBe(false);
      }
      expect(text.includes(encodeURIComponent(PII.email).toLowerCase()), 'encoded email').toBe(
        false,
      );
      for (const [what, value] of Object.entries(secrets)) {
        expect(text.includes(value.toLowerCase()), `${what} in the logs`).toBe(false);
      }
      expect(stdout).toContain('first start: created an admin API token');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 240_000);
});
