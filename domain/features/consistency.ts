/**
 * The checkFeatureConsistency job's contract: its input (validated by zod in the workflow, the
 * client and the CLI alike) and its result. Pure data and zod only: the workflow bundle imports
 * this module. The check itself (sampling, reading both stores, the report) is in
 * consistency-store.ts.
 */
import { z } from 'zod';
import { plainText } from '../retrain.js';

/** The audit subject of every consistency check. */
export const CONSISTENCY_AUDIT_SUBJECT = 'feature-store/online';

export const consistencyCheckInputSchema = z.object({
  /** `name` (its latest version) or `name@version`; empty: every registered feature. */
  features: z.array(z.string().min(1).max(80)).max(500).default([]),
  /** Entities sampled from the online store per feature version. */
  sample: z.number().int().min(1).max(100_000).default(1000),
  requestedBy: plainText(200),
  reason: plainText(500),
});

export type ConsistencyCheckInput = z.input<typeof consistencyCheckInputSchema>;
export type ConsistencyCheckRequest = z.output<typeof consistencyCheckInputSchema>;

/** The figures of one feature version in a check. */
export interface FeatureCheckFigures {
  /** Sampled entities compared. */
  checked: number;
  /** Window values that differ between the stores. */
  mismatches: number;
  /** Entities with at least one differing window value. */
  mismatchedEntities: number;
  /** The instant both stores were read at (ISO-8601). */
  comparedAt: string;
}

export interface ConsistencyCheckResult {
  checked: number;
  mismatches: number;
  /** By `name@version`. */
  byFeature: Record<string, FeatureCheckFigures>;
}
