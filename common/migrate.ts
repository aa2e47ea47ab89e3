/**
 * Runs the forward-only migrations in `migrations/` (node-pg-migrate, one transaction per file,
 * an advisory lock so that concurrent starters do not race).
 */
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type { Logger } from './logger.js';

export const migrationsDir = fileURLToPath(new URL('../migrations', import.meta.url));

/** Applies every pending migration to the database at `databaseUrl`; returns the names applied. */
export async function migrate(databaseUrl: string, log?: Logger): Promise<string[]> {
  // node-pg-migrate refuses, rather than waits, while another process migrates: wait for it.
  for (let attempt = 1; ; attempt++) {
    try {
      return await migrateOnce(databaseUrl, log);
    } catch (err) {
      if (attempt >= 60 || !/Another migration is already running/.test(String(err))) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

async function migrateOnce(databaseUrl: string, log?: Logger): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'pops_migrations',
    checkOrder: true,
    log: () => undefined,
  });
  const names = applied.map((m) => m.name);
  if (names.length > 0) log?.info({ migrations: names }, 'migrations applied');
  return names;
}
