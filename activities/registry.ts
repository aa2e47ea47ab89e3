/**
 * The model registry's activities: register versions, move aliases, promote, roll back, record
 * validations. Each is keyed (a run key, a move key, a version), so a retried one returns what it
 * already did. Refusals become non-retryable failures of their type.
 */
import { FAILURE_TYPES, failure } from '../common/failures.js';
import {
  type AliasMove,
  moveAlias,
  type NewVersion,
  promoteVersion,
  recordValidation,
  registerVersion,
  RegistryRefusal,
  rollbackProduction,
} from '../domain/registry.js';
import { type ActivityDeps, callerWorkflow } from './deps.js';

/** Who moves an alias, why, and the key that makes the move happen once. */
export interface MoveBy {
  actor: string;
  reason: string;
  moveKey: string;
  /** The workflow recorded with the move; left out, the calling workflow. */
  workflowId?: string | null;
}

const REFUSALS = {
  validation: FAILURE_TYPES.validation,
  not_found: FAILURE_TYPES.notFound,
  conflict: FAILURE_TYPES.conflict,
} as const;

/** Runs `work`, turning a registry refusal into a non-retryable failure of its type. */
async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (!(err instanceof RegistryRefusal)) throw err;
    throw failure(REFUSALS[err.kind], err.message);
  }
}

function workflowOf(by: MoveBy): string | null {
  return by.workflowId === undefined ? callerWorkflow().workflowId : by.workflowId;
}

/** Builds the registry activities. */
export function registryActivities({ pool, codeCommit, log }: ActivityDeps) {
  return {
    /** Registers the run's model version (pointing `candidate` at it) and returns its number. */
    async registerModelVersion(input: Omit<NewVersion, 'codeCommit'>): Promise<number> {
      const version = await registerVersion(pool, { ...input, codeCommit });
      log.info(
        { model: input.model, version: version.version, runKey: input.runKey },
        'model version registered',
      );
      return version.version;
    },

    /** Points `production` at the version and `previous` at the old production. */
    async promoteModelVersion(
      input: MoveBy & { model: string; version: number },
    ): Promise<{ from: number | null; to: number }> {
      const moved = await refusing(() =>
        promoteVersion(pool, { ...input, workflowId: workflowOf(input) }),
      );
      log.info({ model: input.model, ...moved, moveKey: input.moveKey }, 'model version promoted');
      return moved;
    },

    /** Points `production` back at `toVersion` (default: `previous`); see rollbackProduction. */
    async rollbackModelProduction(
      input: MoveBy & { model: string; toVersion?: number },
    ): Promise<{ from: number | null; to: number }> {
      const moved = await refusing(() =>
        rollbackProduction(pool, { ...input, workflowId: workflowOf(input) }),
      );
      log.info(
        { model: input.model, ...moved, moveKey: input.moveKey },
        'model production rolled back',
      );
      return moved;
    },

    /** Points an alias at a version (null removes it). */
    async moveModelAlias(
      input: MoveBy & { model: string; alias: string; version: number | null },
    ): Promise<AliasMove> {
      const move = await refusing(() =>
        moveAlias(pool, { ...input, workflowId: workflowOf(input) }),
      );
      log.info(
        { model: input.model, alias: input.alias, from: move.fromVersion, to: move.toVersion },
        'model alias moved',
      );
      return move;
    },

    /** Stores a version's validation report and verdict (the same again changes nothing). */
    async recordModelValidation(input: {
      model: string;
      version: number;
      validation: unknown;
      blessed: boolean;
    }): Promise<void> {
      await refusing(() => recordValidation(pool, input));
      log.info(
        { model: input.model, version: input.version, blessed: input.blessed },
        'model validation recorded',
      );
    },
  };
}
