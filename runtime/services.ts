/**
 * Brings up what pops needs and hands back where it is: the configured PostgreSQL and Temporal when
 * DATABASE_URL / TEMPORAL_ADDRESS are set, the embedded ones otherwise. Migrations run here, at
 * start-up, followed by the rewrite of emails and phones that earlier versions stored in clear
 * (domain/privacy/minimize-stored.ts; a probe per table when there is none).
 */
import path from 'node:path';
import { type Config, stateDir } from '../common/config.js';
import { createPool, ensureDatabase, withDatabase } from '../common/db.js';
import type { Logger } from '../common/logger.js';
import { migrate } from '../common/migrate.js';
import {
  type MinimizeStoredResult,
  minimizeStoredPiiAtStart,
} from '../domain/privacy/minimize-stored.js';
import { startEmbeddedPostgres } from './postgres.js';
import { startEmbeddedTemporal } from './temporal-server.js';

export interface Services {
  databaseUrl: string;
  /** Empty when the caller asked for PostgreSQL only. */
  temporalAddress: string;
  /** The Temporal UI, when pops knows where it is. */
  temporalUiUrl?: string;
  /** How the Temporal server was reached: configured, reused, or the CLI route that started it. */
  temporalRoute: string;
  /** What the start-up rewrite of clear emails and phones did (usually nothing). */
  minimized: MinimizeStoredResult;
  stop(): Promise<void>;
}

/**
 * Starts or connects to PostgreSQL and Temporal, applies migrations, and returns their addresses.
 */
export async function startServices(
  config: Config,
  log: Logger,
  options: { temporal?: boolean } = {},
): Promise<Services> {
  const state = stateDir(config);
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) {
      await stop().catch((err: Error) => log.warn({ err }, 'stop failed'));
    }
  };
  try {
    let databaseUrl = config.DATABASE_URL;
    if (!databaseUrl) {
      const pg = await startEmbeddedPostgres(path.join(state, 'pg'), config.POPS_PG_PORT, log);
      stops.push(() => pg.stop());
      databaseUrl = withDatabase(pg.url, 'pops');
    }
    await ensureDatabase(databaseUrl);
    await migrate(databaseUrl, log);
    const pool = createPool(databaseUrl, 2);
    const minimized = await minimizeStoredPiiAtStart(pool, log).finally(() => pool.end());

    if (options.temporal === false) {
      const temporalRoute = 'not-started';
      return { databaseUrl, temporalAddress: '', temporalRoute, minimized, stop: stopAll };
    }
    if (config.TEMPORAL_ADDRESS) {
      return {
        databaseUrl,
        temporalAddress: config.TEMPORAL_ADDRESS,
        temporalRoute: 'configured',
        minimized,
        stop: stopAll,
      };
    }
    const temporal = await startEmbeddedTemporal({
      dbFilename: path.join(state, 'temporal.db'),
      ownerFile: path.join(state, 'temporal.json'),
      port: config.POPS_TEMPORAL_PORT,
      uiPort: config.POPS_TEMPORAL_UI_PORT,
      cacheDir: config.POPS_CACHE_DIR,
      explicitCli: config.POPS_TEMPORAL_CLI,
      logFile: path.join(state, 'temporal.log'),
      log,
    });
    stops.push(() => temporal.stop());
    return {
      databaseUrl,
      temporalAddress: temporal.address,
      temporalUiUrl: temporal.uiUrl,
      temporalRoute: temporal.route,
      minimized,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
