/**
 * The embedded Temporal used when TEMPORAL_ADDRESS is unset: the Temporal CLI's dev server, its
 * history kept in a SQLite file in the state folder so that workflows survive a restart, its UI on
 * a known port. A server already answering on the port is reused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Logger } from '../common/logger.js';
import { resolveTemporalCli, TEMPORAL_CLI_MODULE } from './temporal-cli.js';

export interface RunningTemporal {
  address: string;
  uiUrl: string;
  owned: boolean;
  /** How the server binary was found: env, path, cache, go-install, sdk-download, or reused. */
  route: string;
  stop(): Promise<void>;
}

export interface TemporalServerOptions {
  /** SQLite file for the server's state; undefined keeps it in memory (tests). */
  dbFilename?: string;
  /**
   * Where the running server's port and pid are recorded, so another pops process with the same
   * state folder reuses it while one with another folder refuses to share it.
   */
  ownerFile?: string;
  port: number;
  uiPort: number;
  cacheDir: string;
  explicitCli?: string;
  logFile?: string;
  log: Logger;
}

/** Returns true when a Temporal frontend answers at the address. */
export async function temporalAnswers(address: string, timeoutMs = 1500): Promise<boolean> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    try {
      await connection.workflowService.getSystemInfo({});
      return true;
    } finally {
      await connection.close();
    }
  } catch {
    return false;
  }
}

async function waitUntilReady(
  address: string,
  child: ChildProcess,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`temporal dev server exited with code ${child.exitCode} during start`);
    }
    if (await temporalAnswers(address, 1000)) return;
    await sleep(250);
  }
  throw new Error(`temporal dev server did not answer at ${address} within ${timeoutMs} ms`);
}

function startWithCli(
  cli: string,
  options: TemporalServerOptions,
  address: string,
): Promise<ChildProcess> {
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(options.port)];
  args.push('--ui-port', String(options.uiPort), '--log-level', 'warn', '--namespace', 'default');
  if (options.dbFilename) {
    fs.mkdirSync(path.dirname(options.dbFilename), { recursive: true });
    args.push('--db-filename', options.dbFilename);
  } else {
    args.push('--headless');
  }
  const out = options.logFile ? fs.openSync(options.logFile, 'a') : 'ignore';
  // Its own process group: Ctrl-C on pops must not kill the server before pops has drained its
  // workers; pops stops it itself.
  const child = spawn(cli, args, { stdio: ['ignore', out, out], detached: true });
  if (typeof out === 'number') fs.closeSync(out);
  return waitUntilReady(address, child, 60_000).then(() => child);
}

/** Whether the owner file names a live server on this port (one this state folder started). */
function startedFromHere(ownerFile: string, port: number): boolean {
  try {
    const owner = JSON.parse(fs.readFileSync(ownerFile, 'utf8')) as { port?: number; pid?: number };
    if (owner.port !== port || !owner.pid) return false;
    process.kill(owner.pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const killed = await Promise.race([
    exited.then(() => true),
    sleep(10_000, false, { ref: false }),
  ]);
  if (!killed) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Starts (or finds) the dev server; fails with what to install when no route gives a CLI. */
export async function startEmbeddedTemporal(
  options: TemporalServerOptions,
): Promise<RunningTemporal> {
  const { log, port, uiPort } = options;
  const address = `127.0.0.1:${port}`;
  const uiUrl = `http://127.0.0.1:${uiPort}`;
  if (await temporalAnswers(address)) {
    if (options.ownerFile && !startedFromHere(options.ownerFile, port)) {
      throw new Error(
        `port ${port} is taken by a Temporal server that this state folder did not start ` +
          `(${options.ownerFile} does not name it):` +
          ' set POPS_TEMPORAL_PORT to a free port, or TEMPORAL_ADDRESS',
      );
    }
    log.info({ address }, 'temporal server already running, reusing it');
    return { address, uiUrl, owned: false, route: 'reused', stop: async () => undefined };
  }
  const cli = resolveTemporalCli({
    explicit: options.explicitCli,
    cacheDir: options.cacheDir,
    log,
  });
  if (cli) {
    log.info({ route: cli.route, path: cli.path }, 'temporal cli resolved');
    const child = await startWithCli(cli.path, options, address);
    if (options.ownerFile) {
      fs.writeFileSync(options.ownerFile, JSON.stringify({ port, pid: child.pid }));
    }
    log.info(
      { address, uiUrl, dbFilename: options.dbFilename ?? 'memory' },
      'temporal dev server started',
    );
    const ownerFile = options.ownerFile;
    return {
      address,
      uiUrl,
      owned: true,
      route: cli.route,
      async stop() {
        await stopChild(child);
        if (ownerFile) fs.rmSync(ownerFile, { force: true });
      },
    };
  }
  return startWithSdkDownload(options, address, uiUrl);
}

async function startWithSdkDownload(
  options: TemporalServerOptions,
  address: string,
  uiUrl: string,
): Promise<RunningTemporal> {
  const { log } = options;
  log.info({ downloadDir: options.cacheDir }, 'no temporal cli found; trying the SDK download');
  try {
    const env = await TestWorkflowEnvironment.createLocal({
      server: {
        executable: { type: 'cached-download', downloadDir: options.cacheDir },
        ip: '127.0.0.1',
        port: options.port,
        ui: options.dbFilename !== undefined,
        uiPort: options.uiPort,
        ...(options.dbFilename ? { dbFilename: options.dbFilename } : {}),
      },
    });
    log.info({ route: 'sdk-download', address }, 'temporal cli resolved');
    return { address, uiUrl, owned: true, route: 'sdk-download', stop: () => env.teardown() };
  } catch (err) {
    throw new Error(
      'no Temporal CLI could be found or obtained. Install Go (https://go.dev/dl) so pops' +
        ` can run 'go install ${TEMPORAL_CLI_MODULE}', put 'temporal' on PATH,` +
        ' set POPS_TEMPORAL_CLI to its path, or set TEMPORAL_ADDRESS to a running server.' +
        ` (SDK download failed: ${(err as Error).message})`,
    );
  }
}
