/**
 * The consistency check's activities: which feature versions to check, and the three keyed writes
 * of a check (open, compare one feature version's sample, close with the audit row). Each is keyed
 * by the calling workflow's id and run id, so a retry returns what the first attempt recorded.
 */
import { FAILURE_TYPES, failure, InputError } from '../common/failures.js';
import {
  type CheckRequest,
  closeCheck,
  compareSample,
  openCheck,
} from '../domain/features/consistency-store.js';
import type {
  ConsistencyCheckResult,
  FeatureCheckFigures,
} from '../domain/features/consistency.js';
import {
  type FeatureRef,
  listFeatures,
  loadDefinitions,
  parseFeatureRef,
} from '../domain/features/registry.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';

/** What the workflow asked for, as the check row records it. */
export type CheckInput = Omit<CheckRequest, 'workflowId' | 'runId'>;

/** Builds the consistency check activities. */
export function featureConsistencyActivities({ pool, log, clock }: ActivityDeps) {
  return {
    /**
     * The versions to check: those named (`name` is its latest version), or the latest version of
     * every registered feature when none is. Thrown: ValidationFailure for a malformed reference,
     * NotFoundFailure naming every one that is not registered.
     */
    async resolveCheckedFeatures(input: { features: string[] }): Promise<FeatureRef[]> {
      if (input.features.length === 0) {
        const all = await listFeatures(pool);
        return all.map((f) => ({ name: f.name, version: f.latest }));
      }
      const refs = input.features.map((text) => {
        try {
          return parseFeatureRef(text);
        } catch (err) {
          if (err instanceof InputError) throw failure(FAILURE_TYPES.validation, err.message);
          throw err;
        }
      });
      const definitions = await loadDefinitions(pool, refs).catch((err: unknown) => {
        if (err instanceof InputError) throw failure(FAILURE_TYPES.notFound, err.message);
        throw err;
      });
      const unique = new Map(definitions.map((f) => [`${f.name}@${f.version}`, f]));
      return [...unique.values()].map((f) => ({ name: f.name, version: f.version }));
    },

    /** Records the check as running. */
    async openConsistencyCheck(input: CheckInput): Promise<void> {
      await openCheck(pool, { ...input, ...callerWorkflow() });
    },

    /** Compares one feature version's sample; a retry returns the stored figures. */
    async compareFeatureSample(
      input: FeatureRef & { sample: number },
    ): Promise<FeatureCheckFigures> {
      const [definition] = await loadDefinitions(pool, [input]);
      if (!definition) throw new Error(`feature ${input.name}@${input.version} vanished`);
      const check = { ...callerWorkflow(), sample: input.sample };
      const figures = await withHeartbeat(() => compareSample(pool, definition, check));
      log.info(
        { feature: `${input.name}@${input.version}`, ...figures },
        'feature sample compared',
      );
      return figures;
    },

    /** Closes the check with its totals and audit row; a retry returns the same result. */
    async closeConsistencyCheck(input: CheckInput): Promise<ConsistencyCheckResult> {
      return closeCheck(pool, { ...input, ...callerWorkflow() }, clock());
    },
  };
}
