/** What activities are built from: real clients handed in by the worker (or a test). */
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Pool } from '../common/db.js';
import type { Logger } from '../common/logger.js';

export interface ActivityDeps {
  pool: Pool;
  log: Logger;
  /** The wall clock for audit rows; tests may fix it. */
  clock: () => Date;
  /** The git commit of the code that runs, recorded with each model version. */
  codeCommit: string;
  /** Which TensorFlow.js backend training should use ('auto' picks the fastest that trains). */
  trainBackend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  /** Used by long activities to report progress to their workflow (best effort). */
  temporal?: Client;
}

/** The workflow execution that called the running activity. */
export function callerWorkflow(): { workflowId: string; runId: string } {
  const execution = Context.current().info.workflowExecution;
  if (!execution) throw new Error('this activity must be called from a workflow');
  return { workflowId: execution.workflowId, runId: execution.runId };
}

/**
 * Runs `work` while heartbeating every few seconds, so that a long SQL statement's activity is
 * known to be alive, and one whose worker died is retried after the heartbeat timeout instead of
 * the whole start-to-close timeout.
 */
export async function withHeartbeat<T>(work: () => Promise<T>, everyMs = 5000): Promise<T> {
  const ctx = Context.current();
  const timer = setInterval(() => ctx.heartbeat(), everyMs);
  try {
    ctx.heartbeat();
    return await work();
  } finally {
    clearInterval(timer);
  }
}
