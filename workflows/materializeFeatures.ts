/**
 * materializeFeatures: one incremental step of the feature store. Plans the days to compute (those
 * the watermark `now - lateness` has closed since the last step, and those late-arriving events
 * fall on, with every later day), backfills them as a child workflow, then records how far the
 * features are materialized. Re-running a step recomputes the same days idempotently. Workflow
 * code: no I/O, clocks or randomness.
 */
import { executeChild, log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import {
  type BackfillResult,
  type MaterializeInput,
  materializeInputSchema,
  type MaterializeResult,
  partitionUnitFor,
} from '../domain/features/backfill.js';
import type { backfillFeatures } from './backfillFeatures.js';

/** One incremental materialization step; see the module comment. */
export async function materializeFeatures(raw: MaterializeInput): Promise<MaterializeResult> {
  const input = parseOrFail(materializeInputSchema, raw, 'materializeFeatures input');
  const act = proxyActivities<Activities>({
    startToCloseTimeout: '10 minutes',
    heartbeatTimeout: '30s',
    retry: ACTIVITY_RETRY,
  });
  const { workflowId, runId } = workflowInfo();
  const plan = await act.planMaterialization({
    features: input.features,
    latenessSeconds: input.latenessSeconds,
    receivedOverlapSeconds: input.receivedOverlapSeconds,
  });
  let backfill: BackfillResult | null = null;
  if (plan.range && plan.features.length > 0) {
    log.info('materializing', { ...plan.range, lateFrom: plan.lateFrom });
    backfill = await executeChild<typeof backfillFeatures>('backfillFeatures', {
      workflowId: `${workflowId}/${runId}/${plan.range.from}/${plan.range.to}`,
      args: [
        {
          features: plan.features,
          ...plan.range,
          partition: input.partition ?? partitionUnitFor(plan.range.from, plan.range.to),
          requestedBy: input.requestedBy,
          reason: plan.lateFrom ? `late events from ${plan.lateFrom}` : 'incremental',
        },
      ],
    });
  }
  await act.commitMaterialization({
    plan,
    requestedBy: input.requestedBy,
    backfill,
  });
  return { ...plan, backfill };
}
