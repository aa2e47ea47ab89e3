/**
 * backfillFeatures: materializes feature versions over a range of days. Two phases, each a list of
 * partitions run as activities, at most `parallelism` at once: the tiles of every day the windows
 * reach (as far back as the longest window, or the first source row for `lifetime`), then the
 * daily snapshots of the range, with quality checks and the online store. Every partition writes
 * idempotently, so a retried activity, a restarted worker or a second run of the same range leaves
 * the store as one run would. After `partitionsPerRun` partitions it continues as new with its
 * state. Progress is the `progress` query. Workflow code: no I/O, clocks or randomness.
 */
import {
  continueAsNew,
  defineQuery,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import {
  type BackfillInput,
  backfillInputSchema,
  type BackfillProgress,
  type BackfillResult,
  type BackfillState,
  type Partition,
  partitionsOf,
} from '../domain/features/backfill.js';

export const backfillProgressQuery = defineQuery<BackfillProgress>('progress');

/** Backfills the features over [from, to]; see the module comment. */
export async function backfillFeatures(raw: BackfillInput): Promise<BackfillResult> {
  const input = parseOrFail(backfillInputSchema, raw, 'backfillFeatures input');
  const backfillId = workflowInfo().workflowId;
  const retry = ACTIVITY_RETRY;
  const act = proxyActivities<Activities>({ startToCloseTimeout: '2 minutes', retry });
  const sql = proxyActivities<Activities>({
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: '30s',
    retry,
  });

  const progress: BackfillProgress = {
    phase: 'planning',
    partitionsDone: input.state?.partitionsDone ?? 0,
    partitionsTotal: 0,
    tileRows: input.state?.tileRows ?? 0,
    valueRows: input.state?.valueRows ?? 0,
    warnings: input.state?.warnings ?? 0,
    startedAtMs: input.state?.startedAtMs ?? workflowInfo().runStartTime.getTime(),
    from: input.from,
    to: input.to,
  };
  setHandler(backfillProgressQuery, () => progress);

  let state: BackfillState;
  if (input.state) {
    state = { ...input.state };
  } else {
    const plan = await act.planBackfill({
      backfillId,
      features: input.features,
      from: input.from,
      to: input.to,
      partition: input.partition,
      ...(input.tilesFrom ? { tilesFrom: input.tilesFrom } : {}),
      requestedBy: input.requestedBy,
      reason: input.reason,
    });
    state = {
      phase: 'tiles',
      next: 0,
      partitionsDone: 0,
      tileRows: 0,
      valueRows: 0,
      warnings: 0,
      startedAtMs: progress.startedAtMs,
      tilesFrom: plan.tilesFrom,
    };
  }
  const tiles = partitionsOf(state.tilesFrom, input.to, input.partition);
  const snapshots = partitionsOf(input.from, input.to, input.partition);
  progress.partitionsTotal = tiles.length + snapshots.length;

  const sync = () => {
    Object.assign(progress, {
      phase: state.phase,
      partitionsDone: state.partitionsDone,
      tileRows: state.tileRows,
      valueRows: state.valueRows,
      warnings: state.warnings,
    });
  };
  sync();

  let budget = input.partitionsPerRun;
  /** Runs the phase's partitions from state.next; false when the run's budget ran out first. */
  const runPhase = async (
    partitions: Partition[],
    work: (p: Partition) => Promise<void>,
  ): Promise<boolean> => {
    const inFlight = new Set<Promise<void>>();
    let failed: { error: unknown } | undefined;
    while (state.next < partitions.length && budget > 0 && !failed) {
      if (workflowInfo().continueAsNewSuggested) break;
      if (inFlight.size >= input.parallelism) {
        await Promise.race(inFlight);
        continue;
      }
      const partition = partitions[state.next] as Partition;
      state.next += 1;
      budget -= 1;
      const running: Promise<void> = work(partition)
        .then(() => {
          state.partitionsDone += 1;
          sync();
        })
        .catch((error: unknown) => {
          failed ??= { error };
        })
        .finally(() => inFlight.delete(running));
      inFlight.add(running);
    }
    await Promise.all(inFlight);
    if (failed) throw failed.error;
    return state.next >= partitions.length;
  };

  const common = { backfillId, features: input.features };
  let carry = false;
  try {
    if (state.phase === 'tiles') {
      const done = await runPhase(tiles, async (p) => {
        const r = await sql.backfillTiles({ ...common, ...p });
        state.tileRows += r.tileRows;
      });
      if (done) {
        state = { ...state, phase: 'snapshots', next: 0 };
        sync();
      } else {
        carry = true;
      }
    }
    if (!carry && state.phase === 'snapshots') {
      const done = await runPhase(snapshots, async (p) => {
        const r = await sql.backfillSnapshots({ ...common, ...p, base: p.from === input.from });
        state.valueRows += r.valueRows;
        state.warnings += r.warnings;
      });
      if (done) {
        state = { ...state, phase: 'done' };
        sync();
      } else {
        carry = true;
      }
    }
  } catch (err) {
    const message =
      err instanceof Error
        ? ((err.cause as Error | undefined)?.message ?? err.message)
        : String(err);
    await act.finishBackfill({
      backfillId,
      requestedBy: input.requestedBy,
      status: 'failed',
      result: { error: message },
    });
    throw err;
  }
  // Outside the try: continuing as new is not a failure.
  if (carry) return continueAsNew<typeof backfillFeatures>({ ...input, state });
  const result: BackfillResult = {
    backfillId,
    partitions: progress.partitionsTotal,
    tileRows: state.tileRows,
    valueRows: state.valueRows,
    warnings: state.warnings,
  };
  await act.finishBackfill({
    backfillId,
    requestedBy: input.requestedBy,
    status: 'completed',
    result,
  });
  log.info('backfill completed', { ...result });
  return result;
}
