/**
 * mergeIdentities: resolves the events written since the identity watermark into persons, chunk by
 * chunk, auditing each chunk, until it has caught up; after `chunksPerRun` chunks it continues as
 * new with its totals. Each chunk is one activity and one transaction, applied exactly once (see
 * domain/identity/chunk.ts). Runs may overlap (the schedule's ids differ from the on-demand one):
 * the graph lock serializes their chunks, and a run whose chunk another run resolved goes on from
 * the moved watermark, so each chunk is counted and audited by the run that resolved it. Workflow
 * code: no I/O, clocks or randomness.
 */
import { continueAsNew, defineQuery, log, proxyActivities, setHandler } from '@temporalio/workflow';
import type { ChunkOutcome } from '../activities/identity.js';
import type { Activities } from '../activities/index.js';
import type { ChunkSummary } from '../domain/identity/chunk.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import {
  IDENTITY_AUDIT_SUBJECT,
  type MergeIdentitiesInput,
  type MergeIdentitiesResult,
  type MergeProgress,
  mergeIdentitiesInputSchema,
  noTotals,
} from '../domain/identity/merge.js';

export const mergeProgressQuery = defineQuery<MergeProgress>('mergeProgress');

const COUNTED = ['events', 'personsCreated', 'identifiersAdded', 'merges', 'conflicts'] as const;

function addChunk(progress: MergeProgress, chunk: Pick<MergeProgress, (typeof COUNTED)[number]>) {
  for (const key of COUNTED) progress[key] += chunk[key];
  progress.chunks += 1;
}

/** The chunk's summary as the ledger holds it (the audit row shows it without the outcome tag). */
function summaryOf(chunk: Extract<ChunkOutcome, { outcome: 'resolved' }>): ChunkSummary {
  const { outcome: _outcome, ...summary } = chunk;
  return summary;
}

/** Resolves identities up to the newest settled event; see the module comment. */
export async function mergeIdentities(raw: MergeIdentitiesInput): Promise<MergeIdentitiesResult> {
  const input = parseOrFail(mergeIdentitiesInputSchema, raw, 'mergeIdentities input');
  const retry = ACTIVITY_RETRY;
  const act = proxyActivities<Activities>({ startToCloseTimeout: '2 minutes', retry });
  const sql = proxyActivities<Activities>({
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '30s',
    retry,
  });
  const totals = input.totals ?? noTotals();
  totals.runs += 1;
  const progress: MergeProgress = { ...totals, watermark: await act.readIdentityWatermark() };
  setHandler(mergeProgressQuery, () => progress);

  for (let i = 0; i < input.chunksPerRun; i += 1) {
    const after = progress.watermark;
    const chunk = await sql.resolveIdentityChunk({
      after,
      limit: input.chunkSize,
      rules: input.rules,
    });
    if (chunk.outcome === 'moved') {
      // Another run (a scheduled one beside an on-demand one) resolved this chunk under the graph
      // lock: it is theirs to count and audit; go on from where they left the watermark.
      log.info('identity watermark moved by another merge', { after, watermark: chunk.watermark });
      progress.watermark = chunk.watermark;
      continue;
    }
    if (chunk.events > 0) {
      addChunk(progress, chunk);
      await act.recordAudit({
        actor: input.requestedBy,
        action: 'identity.chunk-resolved',
        subject: IDENTITY_AUDIT_SUBJECT,
        inputs: { after, chunkSize: input.chunkSize, rulesSha256: chunk.rulesSha256 },
        outputs: { ...summaryOf(chunk) },
        step: String(after),
      });
    }
    progress.watermark = chunk.through;
    if (chunk.events < input.chunkSize) {
      log.info('identities resolved', { watermark: progress.watermark, chunks: progress.chunks });
      return { ...progress };
    }
  }

  const { watermark: _watermark, ...carried } = progress;
  return continueAsNew<typeof mergeIdentities>({ ...input, totals: carried });
}
