/**
 * remergeIdentity: reverts an unmerge, joining its two persons again (exactly as they were when
 * nothing has touched them since; see domain/identity/unmerge.ts), then audits it. Workflow code:
 * no I/O, clocks or randomness; the one effect is an activity keyed by this run.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { type RemergeInput, remergeInputSchema } from '../domain/identity/edits.js';
import { IDENTITY_AUDIT_SUBJECT } from '../domain/identity/merge.js';
import type { RemergeResult } from '../domain/identity/unmerge.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

/** Reverts one unmerge; see the module comment. */
export async function remergeIdentity(raw: RemergeInput): Promise<RemergeResult> {
  const input = parseOrFail(remergeInputSchema, raw, 'remergeIdentity input');
  const result = await act.applyRemerge(input);
  await act.recordAudit({
    actor: input.requestedBy,
    action: 'identity.remerged',
    subject: IDENTITY_AUDIT_SUBJECT,
    inputs: { unmergeId: input.unmergeId, reason: input.reason },
    outputs: { ...result },
  });
  return result;
}
