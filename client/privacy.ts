/**
 * Data subject requests from the CLI and the API: `deletePersonData({ identifier, reason })` and
 * `exportPersonData({ identifier })` open the request (its subject captured) and start its
 * workflow as `privacy/<request id>`, or attach to the one running; a deletion asked again after
 * it finished answers the finished request instead of starting anything. Also the start and the
 * schedule of enforceRetention.
 */
import { type Client, ScheduleAlreadyRunning, ScheduleOverlapPolicy } from '@temporalio/client';
import type { Pool } from '../common/db.js';
import { queueName } from '../common/queues.js';
import type { IdentifierInput } from '../domain/privacy/pii.js';
import {
  exportBundle,
  getRequest,
  openRequest,
  type PrivacyRequest,
  type RequestKind,
} from '../domain/privacy/requests.js';
import type { RetentionInput } from '../workflows/enforceRetention.js';
import { runningRunId } from './retrain.js';

export interface StartedRequest {
  requestId: string;
  workflowId: string;
  runId: string | null;
  /** created: a new request; attached: it was running; done: it had finished (nothing started). */
  state: 'created' | 'attached' | 'done';
}

/** The workflow id of a request. */
export function privacyWorkflowId(requestId: string): string {
  return `privacy/${requestId}`;
}

const WORKFLOW_TYPES: Record<RequestKind, string> = {
  delete: 'deletePersonData',
  export: 'exportPersonData',
};

async function startRequest(
  client: Client,
  pool: Pool,
  prefix: string,
  input: { kind: RequestKind; identifier: IdentifierInput; reason: string; requestedBy: string },
): Promise<StartedRequest> {
  const { request, created } = await openRequest(pool, input);
  const workflowId = privacyWorkflowId(request.id);
  if (request.status === 'done') {
    return { requestId: request.id, workflowId, runId: null, state: 'done' };
  }
  const running = await runningRunId(client, workflowId);
  if (running) return { requestId: request.id, workflowId, runId: running, state: 'attached' };
  // Not running and not done: new, or one whose start was lost; starting resumes its ledger.
  const handle = await client.workflow.start(WORKFLOW_TYPES[input.kind], {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [{ requestId: request.id }],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return {
    requestId: request.id,
    workflowId,
    runId: handle.firstExecutionRunId,
    state: created ? 'created' : 'attached',
  };
}

/** Deletes a person's data (see the module comment). */
export function deletePersonData(
  client: Client,
  pool: Pool,
  prefix: string,
  input: { identifier: IdentifierInput; reason: string; requestedBy: string },
): Promise<StartedRequest> {
  return startRequest(client, pool, prefix, { kind: 'delete', ...input });
}

/** Exports a person's data (see the module comment). */
export function exportPersonData(
  client: Client,
  pool: Pool,
  prefix: string,
  input: { identifier: IdentifierInput; requestedBy: string },
): Promise<StartedRequest> {
  return startRequest(client, pool, prefix, { kind: 'export', reason: '', ...input });
}

/** Waits for a request's workflow; answers the request as it finished. */
export async function waitForRequest(
  client: Client,
  pool: Pool,
  started: StartedRequest,
): Promise<PrivacyRequest | undefined> {
  if (started.state !== 'done') {
    await client.workflow.getHandle(started.workflowId, started.runId ?? undefined).result();
  }
  return getRequest(pool, started.requestId);
}

export { exportBundle, getRequest };

/** The id of the Temporal Schedule that runs enforceRetention. */
export const RETENTION_SCHEDULE_ID = 'retention';

/** Starts enforceRetention now, as `retention/manual/<now>`; returns its handle's ids. */
export async function startRetention(
  client: Client,
  prefix: string,
  input: RetentionInput,
): Promise<{ workflowId: string; runId: string }> {
  const workflowId = `retention/manual/${new Date().toISOString()}`;
  const handle = await client.workflow.start('enforceRetention', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
  });
  return { workflowId, runId: handle.firstExecutionRunId };
}

/**
 * Has the retention schedule run enforceRetention `every` (e.g. 1d) with these policies: created,
 * or updated to them; with no policy it is deleted.
 */
export async function ensureRetentionSchedule(
  client: Client,
  prefix: string,
  input: RetentionInput,
  every: string,
): Promise<void> {
  const handle = client.schedule.getHandle(RETENTION_SCHEDULE_ID);
  if (input.policies.length === 0) {
    await handle.delete().catch(() => undefined);
    return;
  }
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'enforceRetention',
    workflowId: 'retention/scheduled',
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
  };
  const spec = { intervals: [{ every }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1h' };
  try {
    await client.schedule.create({ scheduleId: RETENTION_SCHEDULE_ID, spec, action, policies });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await handle.update((previous) => ({ ...previous, spec, action, policies }));
  }
}
