/**
 * remergeIdentity: reverts an unmerge, joining its two persons again (exactly as they were when
 * nothing has touched them since; see domain/identity/unmerge.ts). The activity audits it in the
 * same transaction. Workflow code: no I/O, clocks or randomness; the one effect is an activity
 * keyed by this run.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { type RemergeInput, remergeInputSchema } from '../domain/identity/edits.js';
import type { RemergeResult } from '../domain/identity/unmerge.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

/** Reverts one unmerge; see the module comment. */
export async function remergeIdentity(raw: RemergeInput): Promise<RemergeResult> {
  const input = parseOrFail(remergeInputSchema, raw, 'remergeIdentity input');
  return act.applyRemerge(input);
}
