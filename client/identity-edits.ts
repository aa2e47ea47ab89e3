/**
 * Client-side start of unmergeIdentity and remergeIdentity, for the CLI and the API to share. Each
 * edit has its own workflow id, so a second request for the same edit attaches to the first.
 */
import { type Client, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { queueName } from '../common/queues.js';
import {
  type RemergeInput,
  remergeWorkflowId,
  type UnmergeInput,
  unmergeWorkflowId,
} from '../domain/identity/edits.js';
import {
  type RemergeResult,
  UnmergeRefusal,
  type UnmergeResult,
} from '../domain/identity/unmerge.js';

export interface StartedEdit {
  workflowId: string;
  runId: string;
}

/**
 * Starts the edit, or refuses with a conflict when the same edit is already running: its caller's
 * reason is what gets audited, and a second one must not be dropped silently.
 */
async function start(client: Client, prefix: string, type: string, id: string, input: unknown) {
  try {
    const handle = await client.workflow.start(type, {
      workflowId: id,
      taskQueue: queueName(prefix, 'orchestration'),
      args: [input],
      workflowIdConflictPolicy: 'FAIL',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    });
    return { workflowId: handle.workflowId, runId: handle.firstExecutionRunId };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    throw new UnmergeRefusal('conflict', `the same edit is already running: workflow ${id}`);
  }
}

/** Starts an unmerge; refused while one for the same merge or person runs. */
export function startUnmerge(
  client: Client,
  prefix: string,
  input: UnmergeInput,
): Promise<StartedEdit> {
  return start(client, prefix, 'unmergeIdentity', unmergeWorkflowId(input), input);
}

/** Starts a remerge; refused while one for the same unmerge runs. */
export function startRemerge(
  client: Client,
  prefix: string,
  input: RemergeInput,
): Promise<StartedEdit> {
  return start(client, prefix, 'remergeIdentity', remergeWorkflowId(input.unmergeId), input);
}

/** The result of a started edit, once it has finished. */
export function editResult<R extends UnmergeResult | RemergeResult>(
  client: Client,
  started: StartedEdit,
): Promise<R> {
  return client.workflow.getHandle(started.workflowId, started.runId).result() as Promise<R>;
}
