/**
 * PostgreSQL access: one pool per process and one transaction helper. SQL lives next to the code
 * that owns it; this module only hands out clients.
 */
import pg from 'pg';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
export type Queryable = Pick<pg.Pool, 'query'>;

// bigint (int8) and numeric come back as JS numbers: pops keeps counts and ids well below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => Number(v));

/** Opens a pool on the given URL; the caller ends it. */
export function createPool(databaseUrl: string, max = 10): Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl, max });
  pool.on('error', () => {
    // An idle client lost its connection (for example a database restart); the pool replaces it.
  });
  pool.on('connect', (client) => {
    // A checked-out client whose server dies emits 'error'; unheard, that would end the process.
    // The query in flight rejects with the same error, which is where it is handled.
    client.on('error', () => undefined);
  });
  return pool;
}

/** Runs `work` inside one transaction: commit on return, rollback on throw. */
export async function withTransaction<T>(
  pool: Pool,
  work: (client: PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const result = await work(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Replaces the database name in a connection URL. */
export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/** Creates the database if it does not exist (by way of the server's `postgres` database). */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
  const admin = new pg.Client({ connectionString: withDatabase(databaseUrl, 'postgres') });
  await admin.connect();
  try {
    const found = await admin.query('select 1 from pg_database where datname = $1', [name]);
    if (found.rowCount === 0) {
      await admin
        .query(`create database ${pg.escapeIdentifier(name)}`)
        .catch((err: { code?: string }) => {
          if (err.code !== '42P04') throw err; // created concurrently by another process
        });
    }
  } finally {
    await admin.end();
  }
}
