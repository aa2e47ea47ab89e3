/** Identity resolution activities: the watermark, and one chunk resolved in one transaction. */
import { FAILURE_TYPES, failure, parseOrFail } from '../common/failures.js';
import {
  type ChunkSummary,
  resolveNextChunk,
  WatermarkMovedError,
} from '../domain/identity/chunk.js';
import { type IdentityRulesInput, identityRulesSchema } from '../domain/identity/rules.js';
import { readWatermark } from '../domain/identity/store.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';

export interface ResolveChunkInput {
  /** The watermark the workflow expects: the chunk is the events after it. */
  after: number;
  limit: number;
  rules: IdentityRulesInput;
}

/** Builds the identity activities. */
export function identityActivities({ pool, log }: ActivityDeps) {
  return {
    /** The id of the last event whose identities are resolved. */
    async readIdentityWatermark(): Promise<number> {
      return readWatermark(pool);
    },

    /**
     * Resolves the events after `after` (up to `limit`) and advances the watermark, atomically; a
     * retry of a chunk that committed returns its recorded summary. Thrown: ConflictFailure when
     * the watermark is elsewhere (another merge moved it), ValidationFailure for bad rules.
     */
    async resolveIdentityChunk(input: ResolveChunkInput): Promise<ChunkSummary> {
      const rules = parseOrFail(identityRulesSchema, input.rules, 'identity rules');
      if (!Number.isSafeInteger(input.after) || input.after < 0) {
        throw failure(
          FAILURE_TYPES.validation,
          `after: must be an event id >= 0 (got ${input.after})`,
        );
      }
      if (!Number.isInteger(input.limit) || input.limit < 1) {
        throw failure(
          FAILURE_TYPES.validation,
          `limit: must be a positive integer (got ${input.limit})`,
        );
      }
      const { workflowId, runId } = callerWorkflow();
      try {
        const summary = await withHeartbeat(() =>
          resolveNextChunk(pool, { ...input, rules, workflowId, runId }),
        );
        const { after, through, events, merges, conflicts, replayed } = summary;
        log.info(
          { after, through, events, merges, conflicts, replayed },
          'identity chunk resolved',
        );
        return summary;
      } catch (err) {
        if (err instanceof WatermarkMovedError) throw failure(FAILURE_TYPES.conflict, err.message);
        throw err;
      }
    },
  };
}
