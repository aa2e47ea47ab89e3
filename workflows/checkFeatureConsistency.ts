/**
 * checkFeatureConsistency: samples entities of each feature version from the online store and
 * compares their values with the offline store's at the same instant (see
 * domain/features/consistency-store.ts), one activity per feature version; then stores the totals
 * and audits them. Every step is keyed by this run, so a retry or replay repeats nothing. Workflow
 * code: no I/O, clocks or randomness.
 */
import { log, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import {
  type ConsistencyCheckInput,
  type ConsistencyCheckResult,
  consistencyCheckInputSchema,
} from '../domain/features/consistency.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  retry: ACTIVITY_RETRY,
});
const sql = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '30s',
  retry: ACTIVITY_RETRY,
});

/** Checks the online store against the offline store; see the module comment. */
export async function checkFeatureConsistency(
  raw: ConsistencyCheckInput,
): Promise<ConsistencyCheckResult> {
  const input = parseOrFail(consistencyCheckInputSchema, raw, 'checkFeatureConsistency input');
  const features = await act.resolveCheckedFeatures({ features: input.features });
  const check = {
    features,
    sample: input.sample,
    requestedBy: input.requestedBy,
    reason: input.reason,
  };
  await act.openConsistencyCheck(check);

  for (const f of features) {
    await sql.compareFeatureSample({ ...f, sample: input.sample });
  }

  const result = await act.closeConsistencyCheck(check);
  log.info('feature consistency checked', {
    features: features.length,
    checked: result.checked,
    mismatches: result.mismatches,
  });
  return result;
}
