/**
 * Builds the workers of each task queue: orchestration runs the workflows and the light SQL
 * activities; training runs CPU-heavy training and evaluation; io is for outbound calls. Each can
 * run in its own process so a cluster scales them apart; `pops serve` runs them all in one.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import { type NativeConnection, Worker } from '@temporalio/worker';
import type { Pool } from '../common/db.js';
import type { Logger } from '../common/logger.js';
import { type QueueKind, queueName } from '../common/queues.js';
import { activitiesFor } from '../activities/index.js';
import type { ActivityDeps } from '../activities/deps.js';
import { workflowsPath } from './bundle.js';

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  prefix: string;
  queues: readonly QueueKind[];
  pool: Pool;
  log: Logger;
  trainBackend: ActivityDeps['trainBackend'];
  /** A client for activities that report progress to their workflow. */
  client?: Client;
  /** A prebuilt workflow bundle (tests build it once); otherwise the workflows are bundled here. */
  workflowBundlePath?: string;
  clock?: () => Date;
  /** Bounds concurrent activities per worker; training is CPU-bound, so it defaults to 1 there. */
  maxConcurrentActivities?: number;
}

/**
 * The git commit of the running code: POPS_CODE_COMMIT (set in images), else git, else 'unknown'.
 */
export function codeCommit(): string {
  if (process.env['POPS_CODE_COMMIT']) return process.env['POPS_CODE_COMMIT'];
  try {
    const cwd = fileURLToPath(new URL('..', import.meta.url));
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return `${commit.toString().trim()}${dirty.length > 0 ? '-dirty' : ''}`;
  } catch {
    return 'unknown';
  }
}

/**
 * Creates one worker per requested queue (a queue with nothing to run yet is skipped with a log).
 */
export async function createWorkers(options: WorkerOptions): Promise<Worker[]> {
  const deps: ActivityDeps = {
    pool: options.pool,
    log: options.log,
    clock: options.clock ?? (() => new Date()),
    codeCommit: codeCommit(),
    trainBackend: options.trainBackend,
    ...(options.client ? { temporal: options.client } : {}),
  };
  const workers: Worker[] = [];
  for (const kind of options.queues) {
    const activities = activitiesFor(kind, deps);
    const hasWorkflows = kind === 'orchestration';
    if (!hasWorkflows && Object.keys(activities).length === 0) {
      options.log.info({ queue: kind }, 'queue has no activities yet, no worker started');
      continue;
    }
    const workflows = hasWorkflows
      ? options.workflowBundlePath
        ? { workflowBundle: { codePath: options.workflowBundlePath } }
        : { workflowsPath }
      : {};
    workers.push(
      await Worker.create({
        connection: options.connection,
        namespace: options.namespace,
        taskQueue: queueName(options.prefix, kind),
        activities,
        ...workflows,
        maxConcurrentActivityTaskExecutions:
          options.maxConcurrentActivities ?? (kind === 'training' ? 1 : 20),
        shutdownGraceTime: '5s',
      }),
    );
  }
  return workers;
}

export interface RunningWorkers {
  workers: Worker[];
  /**
   * Shuts every worker down (in-flight activities get the grace time), then closes the connection.
   */
  stop(): Promise<void>;
}

/** Runs the workers until `stop()`. */
export function runWorkers(workers: Worker[], connection: NativeConnection): RunningWorkers {
  const running = workers.map((w) => w.run());
  return {
    workers,
    async stop() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(running);
      await connection.close();
    },
  };
}
