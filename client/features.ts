/**
 * Client-side start of checkFeatureConsistency, for the CLI and the API to share. The workflow id
 * names the features checked (`feature-check/<refs>`, `feature-check/all`), so a second request for
 * the same check while one runs attaches to it (the running one keeps its input).
 */
import { createHash } from 'node:crypto';
import { type Client, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { describeZodError, InputError } from '../common/failures.js';
import { queueName } from '../common/queues.js';
import {
  type ConsistencyCheckInput,
  consistencyCheckInputSchema,
  type ConsistencyCheckResult,
} from '../domain/features/consistency.js';
import { parseFeatureRef } from '../domain/features/registry.js';
import { runningRunId } from './retrain.js';

export interface StartedCheck {
  workflowId: string;
  runId: string;
  /** True when the same check was running and this request attached to it. */
  attached: boolean;
}

/** The workflow id of a check of these features (any order, repeats ignored). */
export function consistencyCheckWorkflowId(features: readonly string[]): string {
  if (features.length === 0) return 'feature-check/all';
  const joined = [...new Set(features)].sort().join(',');
  if (joined.length <= 200) return `feature-check/${joined}`;
  return `feature-check/sha256-${createHash('sha256').update(joined).digest('hex').slice(0, 32)}`;
}

/**
 * Starts a consistency check, or attaches to the same one running. Thrown: InputError naming the
 * field for bad input (a malformed feature reference, a sample out of range), before anything
 * starts. `workflowId` is for tests that share a Temporal namespace.
 */
export async function startConsistencyCheck(
  client: Client,
  prefix: string,
  input: ConsistencyCheckInput,
  workflowId?: string,
): Promise<StartedCheck> {
  const parsed = consistencyCheckInputSchema.safeParse(input);
  if (!parsed.success) {
    throw new InputError(`invalid check: ${describeZodError(parsed.error, input)}`);
  }
  for (const ref of parsed.data.features) parseFeatureRef(ref);
  const id = workflowId ?? consistencyCheckWorkflowId(parsed.data.features);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const handle = await client.workflow.start('checkFeatureConsistency', {
        workflowId: id,
        taskQueue: queueName(prefix, 'orchestration'),
        args: [parsed.data],
        workflowIdConflictPolicy: 'FAIL',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      });
      return { workflowId: id, runId: handle.firstExecutionRunId, attached: false };
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    const running = await runningRunId(client, id);
    if (running) return { workflowId: id, runId: running, attached: true };
  }
  throw new Error(`workflow ${id} kept starting and ending; try again`);
}

/** Waits for a check to finish and returns its result (throws its failure). */
export async function waitForConsistencyCheck(
  client: Client,
  started: Pick<StartedCheck, 'workflowId' | 'runId'>,
): Promise<ConsistencyCheckResult> {
  return client.workflow
    .getHandle<
      (input: ConsistencyCheckInput) => Promise<ConsistencyCheckResult>
    >(started.workflowId, started.runId)
    .result();
}
