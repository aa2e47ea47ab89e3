/**
 * The mergeIdentities job's contract: its input (validated by zod in the workflow), its progress
 * and its result. Pure data and zod only: the workflow bundle imports this module.
 *
 * Workflow id: one, `identity-merge`, not ARCHITECTURE.md's `merge/<watermark>`. The target a merge
 * owns is the whole graph, and the watermark moves while the workflow runs, so an id keyed on it
 * would let a second run start beside the first one. With one id, a second start attaches to the
 * running one (and a schedule can skip overlaps); continue-as-new keeps the id.
 */
import { z } from 'zod';
import { identityRulesSchema } from './rules.js';

export const MERGE_IDENTITIES_WORKFLOW_ID = 'identity-merge';

/** The audit subject of every identity decision. */
export const IDENTITY_AUDIT_SUBJECT = 'identity-graph';

const totalsSchema = z.object({
  runs: z.number().int().min(0),
  chunks: z.number().int().min(0),
  events: z.number().int().min(0),
  personsCreated: z.number().int().min(0),
  identifiersAdded: z.number().int().min(0),
  merges: z.number().int().min(0),
  conflicts: z.number().int().min(0),
});

export type MergeTotals = z.output<typeof totalsSchema>;

export const mergeIdentitiesInputSchema = z.object({
  requestedBy: z.string().trim().min(1).max(200).default('unknown'),
  rules: identityRulesSchema.prefault({}),
  /** Events per chunk: one transaction each. */
  chunkSize: z.number().int().min(1).max(50_000).default(20_000),
  /** Chunks per workflow run before it continues as new (keeps the history short). */
  chunksPerRun: z.number().int().min(1).max(10_000).default(50),
  /** Carried across continue-as-new; callers leave it out. */
  totals: totalsSchema.optional(),
});

export type MergeIdentitiesInput = z.input<typeof mergeIdentitiesInputSchema>;
export type MergeIdentitiesRequest = z.output<typeof mergeIdentitiesInputSchema>;

export interface MergeProgress extends MergeTotals {
  watermark: number;
}

/** The result of the last run: the watermark it reached and the totals over every run. */
export type MergeIdentitiesResult = MergeProgress;

/** Totals of a job that has done nothing yet. */
export function noTotals(): MergeTotals {
  return {
    runs: 0,
    chunks: 0,
    events: 0,
    personsCreated: 0,
    identifiersAdded: 0,
    merges: 0,
    conflicts: 0,
  };
}
