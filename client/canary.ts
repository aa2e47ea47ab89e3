/**
 * A rollout under replayed traffic: starts rolloutModel on a surface and replays held-out
 * MovieLens traffic against an API (domain/decide/replay.ts) until the rollout ends. Used by the
 * canary demo (cli/demo-canary.ts) and test/canary-replay.test.ts.
 */
import type { Client } from '@temporalio/client';
import { type ReplayPerson, type ReplayReport, replayTraffic } from '../domain/decide/replay.js';
import type { RolloutRequest } from '../domain/rollout/config.js';
import type { RolloutResult } from '../workflows/rolloutModel.js';
import { startRollout } from './rollout.js';

export interface ReplayedRollout {
  result: RolloutResult;
  replay: ReplayReport;
  workflowId: string;
  runId: string;
}

/** Runs the rollout of `request` while traffic is replayed at `rate`; answers both. */
export async function rolloutUnderReplay(options: {
  client: Client;
  prefix: string;
  request: RolloutRequest;
  api: string;
  /** The API token the replayed requests carry. */
  token?: string;
  persons: readonly ReplayPerson[];
  rate: number;
  seed?: number;
}): Promise<ReplayedRollout> {
  const stop = new AbortController();
  // Traffic first, so the first tick already has exposures of the stable arm.
  const replay = replayTraffic({
    api: options.api,
    token: options.token,
    surface: options.request.surface,
    persons: options.persons,
    rate: options.rate,
    signal: stop.signal,
    seed: options.seed ?? 1,
  });
  try {
    const started = await startRollout(options.client, options.prefix, options.request);
    const handle = options.client.workflow.getHandle<() => Promise<RolloutResult>>(
      started.workflowId,
      started.runId,
    );
    const result = await handle.result();
    stop.abort();
    return { result, replay: await replay, workflowId: started.workflowId, runId: started.runId };
  } finally {
    stop.abort();
    await replay.catch(() => undefined);
  }
}
