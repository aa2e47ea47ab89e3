/**
 * A benchmark's own database on the runtime's PostgreSQL: made and migrated fresh, dropped after
 * (with the connections still open to it).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Runtime } from '../cli/runtime.js';
import { ensureDatabase, withDatabase } from '../common/db.js';
import { migrate } from '../common/migrate.js';

export interface BenchDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A new migrated database `pops_bench_<label>_<random>`. */
export async function freshDatabase(rt: Runtime, label: string): Promise<BenchDatabase> {
  const name = `pops_bench_${label}_${randomBytes(3).toString('hex')}`;
  const url = withDatabase(rt.services.databaseUrl, name);
  await ensureDatabase(url);
  await migrate(url);
  return {
    url,
    async drop() {
      const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
      await admin.connect();
      await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
      await admin.end();
    },
  };
}
