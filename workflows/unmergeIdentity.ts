/**
 * unmergeIdentity: splits a person back into the two persons that one merge joined (see
 * domain/identity/unmerge.ts). The activity writes the audit row (what changed, why and on whose
 * say) in the same transaction as the change, so neither stands without the other. Workflow code:
 * no I/O, clocks or randomness; the one effect is an activity keyed by this run.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { type UnmergeInput, unmergeInputSchema } from '../domain/identity/edits.js';
import type { UnmergeResult } from '../domain/identity/unmerge.js';

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

/** Undoes one merge; see the module comment. */
export async function unmergeIdentity(raw: UnmergeInput): Promise<UnmergeResult> {
  const input = parseOrFail(unmergeInputSchema, raw, 'unmergeIdentity input');
  const { reason, requestedBy } = input;
  const target =
    input.mergeId !== undefined ? { mergeId: input.mergeId } : { personId: input.personId ?? 0 };
  return act.applyUnmerge({ ...target, reason, requestedBy });
}
