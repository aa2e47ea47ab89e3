/**
 * Client-side operations on retraining, shared by the CLI and the HTTP API: start (or attach to the
 * running one), and read a workflow's status with its live progress.
 */
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import { queueName } from '../common/queues.js';
import {
  type RetrainProgress,
  type RetrainRequest,
  type RetrainResult,
  retrainWorkflowId,
} from '../domain/retrain.js';

export interface StartedRetrain {
  workflowId: string;
  runId: string;
  /** True when a retraining of this model was already running and this request attached to it. */
  attached: boolean;
}

/** Starts retraining of `request.model`, or returns the one already running for that model. */
export async function startRetrain(
  client: Client,
  prefix: string,
  request: RetrainRequest,
): Promise<StartedRetrain> {
  return startOrAttach(client, prefix, 'retrainModel', retrainWorkflowId(request.model), request);
}

/**
 * Starts `workflowType` under `workflowId` on the orchestration queue, or returns the run already
 * running under that id (one owner per target).
 */
export async function startOrAttach(
  client: Client,
  prefix: string,
  workflowType: string,
  workflowId: string,
  input: unknown,
): Promise<StartedRetrain> {
  const running = await runningRunId(client, workflowId);
  if (running) return { workflowId, runId: running, attached: true };
  const handle = await client.workflow.start(workflowType, {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return { workflowId, runId: handle.firstExecutionRunId, attached: false };
}

/** The run id of the workflow with this id while it runs, else undefined. */
export async function runningRunId(
  client: Client,
  workflowId: string,
): Promise<string | undefined> {
  try {
    const description = await client.workflow.getHandle(workflowId).describe();
    return description.status.name === 'RUNNING' ? description.runId : undefined;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
}

export interface WorkflowStatus {
  workflowId: string;
  runId: string;
  type: string;
  status: string;
  startTime: string;
  closeTime?: string;
  progress?: RetrainProgress;
  /** Activities still to finish, with their attempt and the last failure when they are retrying. */
  pendingActivities?: Array<{ type: string; attempt: number; lastFailure?: string }>;
  result?: unknown;
  failure?: string;
}

/** The workflow's status; its progress while it runs, its result or failure once it is closed. */
export async function workflowStatus(
  client: Client,
  workflowId: string,
): Promise<WorkflowStatus | undefined> {
  const handle = client.workflow.getHandle(workflowId);
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
  const status: WorkflowStatus = {
    workflowId,
    runId: description.runId,
    type: description.type,
    status: description.status.name,
    startTime: description.startTime.toISOString(),
    ...(description.closeTime ? { closeTime: description.closeTime.toISOString() } : {}),
  };
  if (status.status === 'RUNNING' && description.type === 'retrainModel') {
    status.progress = await handle.query<RetrainProgress>('progress').catch(() => undefined);
  }
  if (status.status === 'RUNNING') {
    status.pendingActivities = (description.raw.pendingActivities ?? []).map((a) => ({
      type: a.activityType?.name ?? '?',
      attempt: a.attempt ?? 1,
      ...(a.lastFailure?.message ? { lastFailure: rootMessage(a.lastFailure) } : {}),
    }));
  }
  if (status.status === 'COMPLETED') status.result = await handle.result();
  if (status.status === 'FAILED') {
    status.failure = await handle.result().then(
      () => undefined,
      (err: Error) => rootCause(err).message,
    );
  }
  return status;
}

/** Waits for a retraining run to finish and returns its result (throws its failure). */
export async function waitForRetrain(
  client: Client,
  workflowId: string,
  runId: string,
): Promise<RetrainResult> {
  return client.workflow.getHandle<() => Promise<RetrainResult>>(workflowId, runId).result();
}

/** The innermost cause of a failure: the error a user can act on (not "Activity task failed"). */
export function rootCause(err: unknown): Error {
  let current = err instanceof Error ? err : new Error(String(err));
  while (current.cause instanceof Error) current = current.cause;
  return current;
}

/** The innermost message of a failure as the server reports it. */
function rootMessage(failure: { message?: string | null; cause?: unknown }): string {
  let current = failure;
  while (current.cause && typeof current.cause === 'object') {
    current = current.cause as typeof failure;
  }
  return current.message ?? '';
}
