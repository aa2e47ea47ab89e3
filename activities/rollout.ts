/**
 * The rollout activities: begin a rollout (its row, after checking the surface), route the canary
 * (through domain/decide's setRoutes, keyed by a change key), analyze one tick (PostgreSQL sums
 * the window per arm over persons, judge.ts decides, the decision is stored under its key), switch
 * routing back to stable, and keep the rollout's row current. Every write is keyed, so a retry
 * repeats nothing. Refusals become non-retryable failures of their type.
 */
import { FAILURE_TYPES, failure } from '../common/failures.js';
import type { Route } from '../domain/decide/routing.js';
import { getSurface, setRoutes, SurfaceRefusal } from '../domain/decide/surfaces.js';
import { getVersion } from '../domain/registry.js';
import type {
  RolloutOutcome,
  RolloutRequest,
  RolloutState,
  TickSummary,
} from '../domain/rollout/config.js';
import { judgeTick, type TickContext } from '../domain/rollout/judge.js';
import {
  armSums,
  type DecisionPlace,
  endRollout as storeEnd,
  getRollout,
  insertDecision,
  insertRollout,
  recordedDecision,
  type StepWindow,
  updateRolloutProgress,
} from '../domain/rollout/store.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';

const REFUSALS = {
  validation: FAILURE_TYPES.validation,
  not_found: FAILURE_TYPES.notFound,
  conflict: FAILURE_TYPES.conflict,
} as const;

/** Runs `work`, turning a surface refusal into a non-retryable failure of its type. */
async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (!(err instanceof SurfaceRefusal)) throw err;
    throw failure(REFUSALS[err.kind], err.message);
  }
}

/** Who changes the routing, why, and the key that makes the change happen once. */
export interface RoutingBy {
  rolloutKey: string;
  surface: string;
  actor: string;
  reason: string;
  changeKey: string;
}

/** Where the rollout stands, written to its row with each routing change. */
export type Progress = Pick<RolloutState, 'phase' | 'stepIndex' | 'weightBp' | 'hold'>;

/** A switch back to stable, and when the breach that asks for it was decided (worker clock). */
export type SwitchInput = RoutingBy & { stableVersion: number; detectedAtMs?: number };

/** What a switch back to stable did, and its latency from the breach (or from its own start). */
export interface Switched {
  generation: number;
  switchedAtMs: number;
  latencyMs: number;
  changed: boolean;
}

/** What a tick analyzes and where it stands. */
export interface AnalyzeInput {
  place: DecisionPlace;
  window: Omit<StepWindow, 'limitMs'>;
  config: RolloutRequest;
  context: TickContext;
  /** The routes the rollout set for this step: anything else means someone else changed them. */
  routes: Route[];
  /** The switch a rollback decision makes at once, inside this activity. */
  rollback: SwitchInput;
}

function sameRoutes(a: readonly Route[], b: readonly Route[]): boolean {
  const key = (routes: readonly Route[]) =>
    JSON.stringify(
      [...routes].sort((x, y) => x.version - y.version).map((r) => [r.version, r.role, r.weightBp]),
    );
  return key(a) === key(b);
}

/** Builds the rollout activities. */
export function rolloutActivities({ pool, log }: ActivityDeps) {
  return {
    /**
     * Checks the surface (it exists, serves the model, has no canary, its stable version is not the
     * one rolled out) and stores the rollout's row; a retry returns the row already stored.
     */
    async beginRollout(input: {
      rolloutKey: string;
      config: RolloutRequest;
    }): Promise<{ stableVersion: number; generation: number }> {
      const { config } = input;
      const surface = await getSurface(pool, config.surface);
      if (!surface) {
        throw failure(FAILURE_TYPES.notFound, `surface "${config.surface}" does not exist`);
      }
      const existing = await getRollout(pool, input.rolloutKey);
      if (existing) {
        return { stableVersion: existing.stableVersion, generation: surface.generation };
      }
      if (surface.model !== config.model) {
        throw failure(
          FAILURE_TYPES.validation,
          `surface "${surface.name}" serves model "${surface.model}", not "${config.model}"`,
        );
      }
      if (!(await getVersion(pool, config.model, config.version))) {
        throw failure(
          FAILURE_TYPES.notFound,
          `model "${config.model}" has no version ${config.version}`,
        );
      }
      const stable = surface.routes.find((r) => r.role === 'stable');
      const canary = surface.routes.find((r) => r.role === 'canary');
      if (!stable) throw new Error(`surface "${surface.name}" has no stable route`);
      if (stable.version === config.version) {
        throw failure(
          FAILURE_TYPES.conflict,
          `surface "${surface.name}" already serves version ${config.version} as stable`,
        );
      }
      if (canary) {
        throw failure(
          FAILURE_TYPES.conflict,
          `surface "${surface.name}" already has a canary (version ${canary.version},` +
            ` ${canary.weightBp} bp): end that rollout first`,
        );
      }
      try {
        await insertRollout(pool, {
          ...input,
          workflowId: callerWorkflow().workflowId,
          stableVersion: stable.version,
        });
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err;
        throw failure(
          FAILURE_TYPES.conflict,
          `surface "${surface.name}" has another rollout running`,
        );
      }
      log.info(
        {
          surface: surface.name,
          model: config.model,
          version: config.version,
          stable: stable.version,
        },
        'rollout begun',
      );
      return { stableVersion: stable.version, generation: surface.generation };
    },

    /**
     * Sets the surface's routes (one transaction, keyed by changeKey) and records the rollout's
     * progress. Answers the generation the routes are in force under and, for windows, the
     * change's start: exposures routed under it started after that.
     */
    async routeRollout(
      input: RoutingBy & { routes: Route[]; progress: Progress },
    ): Promise<{ generation: number; from: string; changed: boolean }> {
      const result = await refusing(() =>
        setRoutes(pool, { ...input, workflowId: callerWorkflow().workflowId }),
      );
      await updateRolloutProgress(pool, input.rolloutKey, input.progress);
      const from = result.change?.at ?? (await dbNow());
      const generation = result.change?.generation ?? result.surface.generation;
      log.info(
        { surface: input.surface, routes: input.routes, generation, changed: result.changed },
        'rollout routed',
      );
      return { generation, from, changed: result.changed };
    },

    /**
     * Routes the surface back to its stable version alone (one transaction, before anything else)
     * and answers when the switch committed on this worker's clock; a retry whose switch already
     * committed answers the recorded change's time. A tick that decides to roll back has already
     * made this switch itself; this call then only confirms it.
     */
    async switchToStable(input: SwitchInput): Promise<Switched> {
      return switchRouting(input);
    },

    /**
     * One tick: see the module comment. A rollback decision switches the routing back to stable
     * here, right after it is recorded, so that no round trip through the workflow stands between
     * the breach and the switch. A retry returns the decision already recorded.
     */
    async analyzeRolloutTick(input: AnalyzeInput): Promise<TickSummary & { switched?: Switched }> {
      return withHeartbeat(() => analyze(input), 3000);
    },

    /** The database's clock (what exposure windows are compared with). */
    async databaseNow(): Promise<{ at: string }> {
      return { at: await dbNow() };
    },

    /** Writes where a running rollout stands (phase, step, weight, hold). */
    async recordRolloutProgress(input: { rolloutKey: string; progress: Progress }): Promise<void> {
      await updateRolloutProgress(pool, input.rolloutKey, input.progress);
    },

    /** Ends the rollout's row with its outcome (a second call changes nothing). */
    async endRollout(input: { rolloutKey: string; outcome: RolloutOutcome }): Promise<void> {
      await storeEnd(pool, input.rolloutKey, input.outcome);
      log.info({ rolloutKey: input.rolloutKey, outcome: input.outcome.outcome }, 'rollout ended');
    },
  };

  async function analyze(input: AnalyzeInput): Promise<TickSummary & { switched?: Switched }> {
    const done = await recordedDecision(pool, input.place.decisionKey);
    if (done) return done;
    const latency = input.config.guardrails.find((g) => g.metric === 'latency_p99');
    const sums = await armSums(pool, { ...input.window, limitMs: latency?.limitMs ?? null });
    const analysis = judgeTick(input.config, sums.stable, sums.canary, input.context);
    const surface = await getSurface(pool, input.window.surface);
    const routes = surface?.routes ?? [];
    const foreign = !sameRoutes(routes, input.routes);
    const decided = foreign
      ? {
          ...analysis,
          decision: 'routing-changed' as const,
          reason:
            `the surface's routes are ${JSON.stringify(routes)}, not the rollout's` +
            ` ${JSON.stringify(input.routes)}: held, not judged`,
        }
      : analysis;
    const summary = await insertDecision(pool, input.place, decided, new Date());
    const switched =
      summary.decision === 'rollback'
        ? await switchRouting({ ...input.rollback, detectedAtMs: summary.detectedAtMs })
        : undefined;
    log.info(
      {
        surface: input.window.surface,
        step: input.place.stepIndex,
        tick: input.place.tick,
        decision: summary.decision,
        stable: analysis.arms.stable.persons,
        canary: analysis.arms.canary.persons,
      },
      'rollout tick decided',
    );
    return switched ? { ...summary, switched } : summary;
  }

  /** See switchToStable. */
  async function switchRouting(input: SwitchInput): Promise<Switched> {
    const startedAtMs = Date.now();
    const routes: Route[] = [{ version: input.stableVersion, role: 'stable', weightBp: 10_000 }];
    const result = await refusing(() =>
      setRoutes(pool, { ...input, routes, workflowId: callerWorkflow().workflowId }),
    );
    const switchedAtMs = result.changed
      ? Date.now()
      : Date.parse(result.change?.at ?? '') || Date.now();
    const generation = result.change?.generation ?? result.surface.generation;
    // From the breaching tick's decision; an abort's from this activity's start.
    const latencyMs = Math.max(0, switchedAtMs - (input.detectedAtMs ?? startedAtMs));
    log.warn(
      { surface: input.surface, generation, changed: result.changed, latencyMs },
      'rollout routed back to stable',
    );
    return { generation, switchedAtMs, latencyMs, changed: result.changed };
  }

  async function dbNow(): Promise<string> {
    const { rows } = await pool.query<{ now: Date }>('select now() as now');
    return (rows[0]?.now ?? new Date()).toISOString();
  }
}
