/** Identity edits by hand: unmerge a merge, remerge an unmerge. Each is one transaction. */
import { FAILURE_TYPES, failure } from '../common/failures.js';
import {
  remergeIdentity,
  type RemergeResult,
  type UnmergeResult,
  UnmergeRefusal,
  unmergeIdentity,
  type UnmergeTarget,
} from '../domain/identity/unmerge.js';
import { type ActivityDeps, callerWorkflow } from './deps.js';

export interface EditInput {
  reason: string;
  requestedBy: string;
}

/** Refusals become non-retryable failures of their type; anything else is retried. */
async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (!(err instanceof UnmergeRefusal)) throw err;
    const type = err.kind === 'not_found' ? FAILURE_TYPES.notFound : FAILURE_TYPES.conflict;
    throw failure(type, err.message);
  }
}

/** Builds the identity edit activities. */
export function identityEditActivities({ pool, log, clock }: ActivityDeps) {
  return {
    /**
     * Undoes one merge and audits it in the same transaction, keyed by the calling run (a retry
     * returns the recorded result). Thrown: NotFoundFailure for an unknown merge or person,
     * ConflictFailure for a merge already undone.
     */
    async applyUnmerge(input: UnmergeTarget & EditInput): Promise<UnmergeResult> {
      const by = { ...input, ...callerWorkflow(), at: clock() };
      const target = 'mergeId' in input ? { mergeId: input.mergeId } : { personId: input.personId };
      const result = await refusing(() => unmergeIdentity(pool, target, by));
      log.info({ ...result }, 'identity merge undone');
      return result;
    },

    /**
     * Reverts an unmerge and audits it in the same transaction, keyed by the calling run. Thrown:
     * NotFoundFailure for an unknown unmerge, ConflictFailure for one already reverted.
     */
    async applyRemerge(input: { unmergeId: number } & EditInput): Promise<RemergeResult> {
      const by = { ...input, ...callerWorkflow(), at: clock() };
      const result = await refusing(() => remergeIdentity(pool, input.unmergeId, by));
      log.info({ ...result }, 'identity unmerge reverted');
      return result;
    },
  };
}
