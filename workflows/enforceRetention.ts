/**
 * enforceRetention: deletes, per table with a retention policy, the rows older than the policy
 * (domain/privacy/retention.ts), one activity per table, and audits the counts. Started by its
 * schedule (`pops serve` with POPS_RETENTION) or `pops privacy retention`; its id is
 * `retention/<start>`. The cutoff is the workflow's own time when it starts minus the days kept,
 * so a retried or replayed run deletes against the same cutoff. Workflow code: no I/O.
 */
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY } from '../common/failures.js';
import type { RetentionPolicy } from '../domain/privacy/retention.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '30 seconds',
  retry: ACTIVITY_RETRY,
});

export interface RetentionInput {
  policies: RetentionPolicy[];
  requestedBy: string;
}

export interface RetentionResult {
  cutoffs: Record<string, string>;
  deleted: Record<string, number>;
}

const DAY_MS = 86_400_000;

/** Enforces the policies; see the module comment. */
export async function enforceRetention(input: RetentionInput): Promise<RetentionResult> {
  const { workflowId, runId, startTime } = workflowInfo();
  const runKey = `${workflowId}/${runId}`;
  const result: RetentionResult = { cutoffs: {}, deleted: {} };
  for (const policy of input.policies) {
    const cutoff = new Date(startTime.getTime() - policy.keepDays * DAY_MS);
    result.cutoffs[policy.table] = cutoff.toISOString();
    result.deleted[policy.table] = await act.enforceRetentionTable({
      runKey,
      table: policy.table,
      keepDays: policy.keepDays,
      cutoff: cutoff.toISOString(),
    });
  }
  await act.recordAudit({
    actor: input.requestedBy,
    action: 'privacy.retention-enforced',
    subject: 'retention',
    inputs: { policies: input.policies },
    outputs: { ...result },
  });
  return result;
}
