/**
 * measureCampaignLift: compares the return rate of persons sent a run's message with its holdout
 * over a horizon (domain/campaigns/lift.ts: Newcombe interval, z-test), and stores the report
 * under the run (workflow id `campaign-lift/<name>/<fire time>/<horizon>d`). Re-running it later
 * measures again and replaces the report.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import type { LiftReport } from '../domain/campaigns/lift.js';
import {
  type MeasureLiftInput,
  measureLiftInputSchema,
} from '../domain/campaigns/workflow-input.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

/** Measures and stores the lift of one run. */
export async function measureCampaignLift(raw: MeasureLiftInput): Promise<LiftReport> {
  const input = parseOrFail(measureLiftInputSchema, raw, 'measureCampaignLift input');
  return act.measureRunLift({
    campaign: input.campaign,
    fireTime: new Date(input.run).toISOString(),
    horizonDays: input.horizonDays,
  });
}
