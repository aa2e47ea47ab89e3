/**
 * Client-side start of mergeIdentities, for the CLI, the API and a schedule to share: one workflow
 * id for the graph, so a second request attaches to the run in progress instead of racing it.
 */
import type { Client } from '@temporalio/client';
import { queueName } from '../common/queues.js';
import {
  MERGE_IDENTITIES_WORKFLOW_ID,
  type MergeIdentitiesInput,
  type MergeIdentitiesResult,
} from '../domain/identity/merge.js';

export interface StartedMerge {
  workflowId: string;
  runId: string;
}

/**
 * Starts mergeIdentities, or returns the run already in progress (which then keeps its input).
 * `workflowId` is for tests that share a Temporal namespace; pops itself uses the one id.
 */
export async function startMergeIdentities(
  client: Client,
  prefix: string,
  input: MergeIdentitiesInput = {},
  workflowId = MERGE_IDENTITIES_WORKFLOW_ID,
): Promise<StartedMerge> {
  const handle = await client.workflow.start('mergeIdentities', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return { workflowId: handle.workflowId, runId: handle.firstExecutionRunId };
}

/** Waits for a merge to finish, following continue-as-new, and returns its totals. */
export async function waitForMerge(
  client: Client,
  run: StartedMerge,
): Promise<MergeIdentitiesResult> {
  return client.workflow
    .getHandle<
      (input: MergeIdentitiesInput) => Promise<MergeIdentitiesResult>
    >(run.workflowId, run.runId)
    .result();
}
