/**
 * One real PostgreSQL and one real Temporal dev server for the whole test run, plus the workflow
 * bundle built once. Each test file then makes its own database and task queues (test/support.ts).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../common/config.js';
import { logger } from '../common/logger.js';
import { startEmbeddedPostgres } from '../runtime/postgres.js';
import { startEmbeddedTemporal } from '../runtime/temporal-server.js';
import { workflowsPath } from '../workers/bundle.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export default async function setup(project: TestProject) {
  const log = logger(process.env['LOG_LEVEL'] ?? 'warn');
  const config = loadConfig({ ...process.env, DATABASE_URL: '', TEMPORAL_ADDRESS: '' });
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-test-'));
  fs.chmodSync(root, 0o755); // the embedded server runs as the postgres user when we are root

  const pg = process.env['POPS_TEST_DATABASE_URL']
    ? { url: process.env['POPS_TEST_DATABASE_URL'], stop: async () => undefined }
    : await startEmbeddedPostgres(path.join(root, 'pg'), await freePort(), log);
  const temporal = process.env['POPS_TEST_TEMPORAL_ADDRESS']
    ? { address: process.env['POPS_TEST_TEMPORAL_ADDRESS'], stop: async () => undefined }
    : await startEmbeddedTemporal({
        port: await freePort(),
        uiPort: await freePort(),
        cacheDir: config.POPS_CACHE_DIR,
        explicitCli: config.POPS_TEMPORAL_CLI,
        logFile: path.join(root, 'temporal.log'),
        log,
      });

  const bundle = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('WARN') });
  const bundlePath = path.join(root, 'workflow-bundle.js');
  fs.writeFileSync(bundlePath, bundle.code);

  project.provide('serverUrl', pg.url);
  project.provide('temporalAddress', temporal.address);
  project.provide('workflowBundlePath', bundlePath);

  return async () => {
    await temporal.stop();
    await pg.stop();
    fs.rmSync(root, { recursive: true, force: true });
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    serverUrl: string;
    temporalAddress: string;
    workflowBundlePath: string;
  }
}
