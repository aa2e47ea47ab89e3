/**
 * The lock between the feature store's writers and a deletion's feature steps. Every transaction
 * that writes feature rows computed from other rows (tiles from events, snapshots from tiles, the
 * online store from snapshots, consistency mismatches from the online store, the point-in-time
 * rows and examples of training and drift sets from events and snapshots) holds it shared until
 * it commits, so writers still run side by side. A deletion's step of a feature table
 * (domain/privacy/requests.ts) takes it exclusively: it waits for the writes in flight to commit,
 * so it sees and deletes their rows, and writes that start later wait for it and no longer find
 * the rows it deleted the sources of (the derived tables are deleted after events, in derivation
 * order: see PERSON_TABLES).
 */
import type { PoolClient } from '../../common/db.js';

/** The advisory lock's key ('feat'); the identity graph's lock is 'idnt'. */
export const FEATURE_WRITE_LOCK = 0x66656174;

/**
 * Holds the feature write lock shared until the transaction ends. Take it before any other lock of
 * the transaction (the day locks): a deletion waiting for it then waits for nothing it holds.
 */
export async function lockFeatureWrites(client: PoolClient): Promise<void> {
  await client.query('select pg_advisory_xact_lock_shared($1::bigint)', [FEATURE_WRITE_LOCK]);
}

/** Holds the feature write lock exclusively until the transaction ends (no write in flight). */
export async function excludeFeatureWrites(client: PoolClient): Promise<void> {
  await client.query('select pg_advisory_xact_lock($1::bigint)', [FEATURE_WRITE_LOCK]);
}
