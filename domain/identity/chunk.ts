/**
 * One step of mergeIdentities: resolve the events after the watermark and write the result, the
 * ledger row and the new watermark in one transaction. A crash before commit leaves the graph as if
 * the chunk never ran; a retry after commit finds the ledger row and returns the same summary. So a
 * chunk is applied exactly once, however often it is attempted.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../common/canonical-json.js';
import { type Pool, withTransaction } from '../../common/db.js';
import { identifierExtractor, identifierKey, type Identifier } from './identifiers.js';
import { resolveChunk } from './resolve.js';
import { type IdentityRules, ruleOf, typesOf } from './rules.js';
import {
  findChunk,
  loadSlice,
  lockGraph,
  readChunkEvents,
  readWatermark,
  recordChunk,
  type ResolvedBy,
  settledHorizon,
  writeResolution,
} from './store.js';

export interface ChunkRequest {
  /** The watermark the caller expects: the chunk is the events after it. */
  after: number;
  limit: number;
  rules: IdentityRules;
  workflowId: string;
  runId: string;
}

/** What one chunk did; stored in the ledger and audited. Counts only: no identifier values. */
export interface ChunkSummary {
  after: number;
  /** The new watermark: the last event id of the chunk (equal to `after` when there was none). */
  through: number;
  events: number;
  attributed: number;
  /** Events whose identifiers were all junk: attributed to nobody. */
  unattributed: number;
  /** Identifier values dropped as junk, invalid emails or over-long. */
  rejectedValues: number;
  identifiersAdded: number;
  personsCreated: number;
  merges: number;
  conflicts: number;
  rulesSha256: string;
  /** True when this chunk had already been resolved and the ledger's summary is returned. */
  replayed: boolean;
}

/** Thrown by resolveNextChunk when the watermark is not where the caller expected it. */
export class WatermarkMovedError extends Error {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(
      `identity watermark is at event ${actual}, not ${expected}: another merge moved it` +
        ' (only one mergeIdentities should run at a time)',
    );
  }
}

/** The sha256 of the canonical JSON of the rules, recorded with each chunk. */
export function rulesSha256(rules: IdentityRules): string {
  return createHash('sha256').update(canonicalJson(rules)).digest('hex');
}

/** Resolves the next chunk after `request.after`; see the module comment. */
export async function resolveNextChunk(pool: Pool, request: ChunkRequest): Promise<ChunkSummary> {
  const horizon = await settledHorizon(pool);
  const rulesHash = rulesSha256(request.rules);
  const by: ResolvedBy = {
    workflowId: request.workflowId,
    runId: request.runId,
    chunkAfter: request.after,
  };

  return withTransaction(pool, async (client) => {
    await lockGraph(client);
    const done = await findChunk<ChunkSummary>(client, request.after);
    if (done) return { ...done, replayed: true };
    const watermark = await readWatermark(client);
    if (watermark !== request.after) throw new WatermarkMovedError(request.after, watermark);

    const rows = await readChunkEvents(client, request.after, horizon, request.limit);
    const last = rows[rows.length - 1];
    if (!last) return emptySummary(request.after, rulesHash);

    const extract = identifierExtractor(request.rules);
    let rejectedValues = 0;
    const events = rows.map((row) => {
      const extracted = extract(row);
      rejectedValues += extracted.rejected;
      return { id: row.id, messageId: row.messageId, ts: row.ts, ...extracted };
    });
    const limited = typesOf(request.rules).filter((t) => ruleOf(request.rules, t)?.maxValues);
    const slice = await loadSlice(client, distinct(events.flatMap((e) => e.identifiers)), limited);
    const resolution = resolveChunk(events, slice, request.rules);

    const summary: ChunkSummary = {
      after: request.after,
      through: last.id,
      ...resolution.stats,
      unattributed: resolution.stats.events - resolution.stats.attributed,
      rejectedValues,
      rulesSha256: rulesHash,
      replayed: false,
    };
    await writeResolution(client, resolution, by);
    await recordChunk(client, { ...summary, rules: request.rules, summary }, by);
    return summary;
  });
}

function emptySummary(after: number, rulesHash: string): ChunkSummary {
  return {
    after,
    through: after,
    events: 0,
    attributed: 0,
    unattributed: 0,
    rejectedValues: 0,
    identifiersAdded: 0,
    personsCreated: 0,
    merges: 0,
    conflicts: 0,
    rulesSha256: rulesHash,
    replayed: false,
  };
}

function distinct(identifiers: readonly Identifier[]): Identifier[] {
  const byKey = new Map(identifiers.map((i) => [identifierKey(i), i]));
  return [...byKey.values()];
}
