/**
 * Client-side operations on the model registry's workflows, shared by the CLI and the HTTP API:
 * start a rollback of a model's production (or attach to the one running), and wait for it.
 */
import type { Client } from '@temporalio/client';
import {
  type RollbackRequest,
  type RollbackResult,
  rollbackWorkflowId,
} from '../domain/rollback.js';
import { startOrAttach } from './retrain.js';

export interface StartedRollback {
  workflowId: string;
  runId: string;
  /** True when a rollback of this model was already running and this request attached to it. */
  attached: boolean;
}

/** Starts a rollback of `request.model`, or returns the one already running for that model. */
export async function startRollback(
  client: Client,
  prefix: string,
  request: RollbackRequest,
): Promise<StartedRollback> {
  return startOrAttach(client, prefix, 'rollbackModel', rollbackWorkflowId(request.model), request);
}

/** Waits for a rollback run to finish and returns its result (throws its failure). */
export async function waitForRollback(
  client: Client,
  started: { workflowId: string; runId: string },
): Promise<RollbackResult> {
  return client.workflow
    .getHandle<() => Promise<RollbackResult>>(started.workflowId, started.runId)
    .result();
}
