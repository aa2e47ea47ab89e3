/** Identity resolution activities: the watermark, and one chunk resolved in one transaction. */
import { FAILURE_TYPES, failure, parseOrFail } from '../common/failures.js';
import type { Queryable } from '../common/db.js';
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

/**
 * What a chunk call did: `resolved` by this run (now, or by an earlier attempt of this run), or
 * `moved`: another merge run (a scheduled one beside an on-demand one) got there first and the
 * watermark is past `after`; the caller goes on from `watermark` and counts nothing.
 */
export type ChunkOutcome =
  | ({ outcome: 'resolved' } & ChunkSummary)
  | { outcome: 'moved'; after: number; watermark: number; why: string };

/** Builds the identity activities. */
export function identityActivities({ pool, log }: ActivityDeps) {
  return {
    /** The id of the last event whose identities are resolved. */
    async readIdentityWatermark(): Promise<number> {
      return readWatermark(pool);
    },

    /**
     * Resolves the events after `after` (up to `limit`) and advances the watermark, atomically; a
     * retry of a chunk that committed returns its recorded summary. When another run has moved
     * the watermark, returns `moved` (see ChunkOutcome). Thrown: ValidationFailure for bad input,
     * ConflictFailure when the ledger and the watermark disagree (the watermark was rewound).
     */
    async resolveIdentityChunk(input: ResolveChunkInput): Promise<ChunkOutcome> {
      const rules = parseOrFail(identityRulesSchema, input.rules, 'identity rules');
      checkBounds(input);
      const { workflowId, runId } = callerWorkflow();
      let summary: ChunkSummary;
      try {
        summary = await withHeartbeat(() =>
          resolveNextChunk(pool, { ...input, rules, workflowId, runId }),
        );
      } catch (err) {
        if (!(err instanceof WatermarkMovedError)) throw err;
        return movedOn(log, input.after, err.actual, 'was expected next');
      }
      if (summary.replayed) {
        // The ledger answers by `after` alone: a chunk another run resolved is not this run's.
        const owner = await chunkOwner(pool, input.after);
        if (owner && (owner.workflowId !== workflowId || owner.runId !== runId)) {
          const why = `was resolved by ${owner.workflowId}`;
          return movedOn(log, input.after, await readWatermark(pool), why);
        }
      }
      const { after, through, events, merges, conflicts, replayed } = summary;
      log.info({ after, through, events, merges, conflicts, replayed }, 'identity chunk resolved');
      return { outcome: 'resolved', ...summary };
    },
  };
}

/** The `moved` outcome, once the watermark is known to be past `after`; `why` says how we know. */
function movedOn(log: ActivityDeps['log'], after: number, watermark: number, why: string) {
  // The watermark only moves forward, with a ledger row for each chunk; standing still or behind
  // means someone rewound it, and going on would resolve events twice.
  if (watermark <= after) {
    throw failure(
      FAILURE_TYPES.conflict,
      `the identity chunk after event ${after} ${why}, yet the watermark is at event` +
        ` ${watermark}: it was moved back, and going on would resolve events twice`,
    );
  }
  log.info({ after, watermark, why }, 'identity watermark moved by another merge; going on');
  return { outcome: 'moved', after, watermark, why } satisfies ChunkOutcome;
}

function checkBounds(input: ResolveChunkInput): void {
  if (!Number.isSafeInteger(input.after) || input.after < 0) {
    throw failure(FAILURE_TYPES.validation, `after: must be an event id >= 0 (got ${input.after})`);
  }
  if (!Number.isInteger(input.limit) || input.limit < 1) {
    throw failure(
      FAILURE_TYPES.validation,
      `limit: must be a positive integer (got ${input.limit})`,
    );
  }
}

/**
 * Which run resolved the chunk after `after`, from the ledger (rows are never rewritten, so this
 * read after the chunk's transaction is safe). Belongs beside findChunk in
 * domain/identity/store.ts.
 */
async function chunkOwner(
  db: Queryable,
  after: number,
): Promise<{ workflowId: string; runId: string } | undefined> {
  const { rows } = await db.query<{ workflowId: string; runId: string }>(
    `select workflow_id as "workflowId", run_id as "runId"
       from identity_chunks where after_event_id = $1::bigint`,
    [after],
  );
  return rows[0];
}
