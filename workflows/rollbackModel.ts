/**
 * rollbackModel: points a model's `production` alias back at an earlier version (by default the one
 * `previous` points at) and audits the request, the move or its refusal. Its workflow id is
 * `models/<model>/rollback`, so one runs at a time per model. Workflow code: no I/O, clocks or
 * randomness; the move is one activity keyed by this run, so a retry or a replay moves nothing
 * twice.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import {
  PRODUCTION,
  type RollbackInput,
  type RollbackResult,
  rollbackInputSchema,
} from '../domain/rollback.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  retry: ACTIVITY_RETRY,
});

/** Rolls one model's production back; see the module comment. */
export async function rollbackModel(raw: RollbackInput): Promise<RollbackResult> {
  const input = parseOrFail(rollbackInputSchema, raw, 'rollbackModel input');
  const { workflowId, runId } = workflowInfo();
  const subject = `model/${input.model}`;
  const audit = (
    action: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown> = {},
  ) => act.recordAudit({ actor: input.requestedBy, action, subject, inputs, outputs });

  const asked = { reason: input.reason, toVersion: input.toVersion ?? null };
  await audit('model.rollback-requested', asked);
  const moveKey = `${workflowId}/${runId}`;
  let moved: RollbackResult;
  try {
    moved = await act.rollbackModelProduction({
      model: input.model,
      ...(input.toVersion !== undefined ? { toVersion: input.toVersion } : {}),
      actor: input.requestedBy,
      reason: input.reason,
      workflowId,
      moveKey,
    });
  } catch (err) {
    const refusal = refusalOf(err);
    if (refusal) await audit('model.rollback-refused', asked, { refusal: refusal.message });
    throw err;
  }
  await audit(
    'model.alias-moved',
    { alias: PRODUCTION, reason: input.reason, moveKey },
    { ...moved },
  );
  return moved;
}

/** The business refusal behind an activity's failure (not a timeout or a bug), if it is one. */
function refusalOf(err: unknown): ApplicationFailure | undefined {
  if (!(err instanceof ActivityFailure)) return undefined;
  const cause = err.cause;
  return cause instanceof ApplicationFailure && cause.nonRetryable ? cause : undefined;
}
