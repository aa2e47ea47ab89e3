/** Shared by the retraining tests: a MovieLens slice, in-process workers, a declared model. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { registerFeatures } from '../domain/features/registry.js';
import { inject } from 'vitest';
import { NativeConnection } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import type { Pool } from '../common/db.js';
import { logger } from '../common/logger.js';
import { QUEUE_KINDS } from '../common/queues.js';
import { declareModel } from '../domain/registry.js';
import { importMovieLens } from '../ingest/movielens.js';
import { installTemporalLogging } from '../common/temporal.js';
import { createWorkers, runWorkers, type RunningWorkers } from '../workers/create.js';

export const MOVIELENS = path.resolve(import.meta.dirname, '../../shared/data/movielens-small');

/**
 * Writes the ratings of users 1..maxUser (and all movies) to a temp dir; returns it and the rows.
 */
export function movieLensSlice(maxUser: number): {
  dir: string;
  ratings: Array<{ user: number; ts: number; rating: number }>;
} {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-ml-slice-'));
  const lines = fs.readFileSync(path.join(MOVIELENS, 'ratings.csv'), 'utf8').trimEnd().split('\n');
  const header = lines[0] ?? '';
  const kept = lines.slice(1).filter((l) => Number(l.split(',')[0]) <= maxUser);
  fs.writeFileSync(path.join(dir, 'ratings.csv'), `${[header, ...kept].join('\n')}\n`);
  fs.copyFileSync(path.join(MOVIELENS, 'movies.csv'), path.join(dir, 'movies.csv'));
  const ratings = kept.map((l) => {
    const [user, , rating, ts] = l.split(',').map(Number);
    return { user: user ?? 0, rating: rating ?? 0, ts: ts ?? 0 };
  });
  return { dir, ratings };
}

/** Imports the slice under `source` and declares `model` over it. */
export async function prepareModel(
  pool: Pool,
  dir: string,
  source: string,
  model: string,
): Promise<void> {
  await importMovieLens(pool, dir, { source });
  await declareModel(pool, { name: model, source, createdBy: 'test' });
  await registerExampleFeatures(pool);
}

/** Registers config/features.example.yaml (the default training features); idempotent. */
export async function registerExampleFeatures(pool: Pool): Promise<void> {
  await registerFeatures(pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), 'test');
}

/** Workers for every queue in this process; `stop()` shuts them down. */
export async function startWorkers(
  pool: Pool,
  prefix: string,
  client: Client,
): Promise<RunningWorkers> {
  installTemporalLogging(logger('warn'));
  const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
  const workers = await createWorkers({
    connection,
    namespace: 'default',
    prefix,
    queues: QUEUE_KINDS,
    pool,
    log: logger('warn'),
    trainBackend: 'cpu',
    client,
    workflowBundlePath: inject('workflowBundlePath'),
  });
  return runWorkers(workers, connection);
}
