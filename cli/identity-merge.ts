/**
 * `pops identity merge` (start or attach to an on-demand merge, optionally wait for its totals) and
 * `pops identity schedule` (create, re-time, pause or unpause the schedule of merges).
 */
import { z } from 'zod';
import {
  describeMergeSchedule,
  ensureMergeSchedule,
  type MergeScheduleState,
  requestMerge,
  setMergeSchedulePaused,
  waitForMerge,
} from '../client/identity.js';
import { intervalSchema } from '../common/config.js';
import type { MergeIdentitiesResult } from '../domain/identity/merge.js';
import { parseArgs, print, UsageError } from './output.js';
import { configuredIdentityRules, hasPollers, openRuntime, runWorkers } from './runtime.js';

const mergeArgs = z.object({
  wait: z.boolean().default(false),
  json: z.boolean().default(false),
});

const scheduleArgs = z.object({
  every: intervalSchema.optional(),
  pause: z.boolean().default(false),
  unpause: z.boolean().default(false),
  json: z.boolean().default(false),
});

/** Formats a finished merge's totals for people. */
export function describeMerge(result: MergeIdentitiesResult): string {
  const runs = `${result.runs} run${result.runs === 1 ? '' : 's'}`;
  return [
    `identities resolved through event ${result.watermark}`,
    `  ${result.events} events in ${result.chunks} chunks (${runs})`,
    `  persons created ${result.personsCreated}, identifiers added ${result.identifiersAdded},` +
      ` merges ${result.merges}, conflicts ${result.conflicts}`,
  ].join('\n');
}

/** `pops identity merge [--wait]`. */
export async function mergeCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(mergeArgs, options);
  const rules = configuredIdentityRules();
  const rt = await openRuntime();
  try {
    const started = await requestMerge(rt.client, rt.prefix, {
      requestedBy: rt.config.POPS_ACTOR,
      rules,
    });
    const line = () =>
      `${started.attached ? 'attached to' : 'started'} ${started.workflowId}` +
      ` (run ${started.runId})`;
    if (!args.wait) {
      if (!(await hasPollers(rt))) {
        rt.log.warn('no worker polls the orchestration queue; start one with: npm start');
      }
      print(args.json, started, line);
      return;
    }
    // As for `pops retrain --wait`: a poller Temporal still lists may be a process that just
    // died, so workers here guarantee progress; beside `npm start` they only add capacity.
    const local = await runWorkers(rt);
    try {
      const result = await waitForMerge(rt.client, started);
      print(args.json, { ...started, result }, () => `${line()}\n${describeMerge(result)}`);
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** Formats the schedule's state for people. */
export function describeSchedule(state: MergeScheduleState): string {
  const lines = [
    `schedule ${state.scheduleId}: every ${state.every}, ${state.paused ? 'paused' : 'active'}` +
      ` (overlap ${state.overlap}, catch-up window ${state.catchupWindow},` +
      ` queue ${state.taskQueue})`,
  ];
  lines.push(
    `  rules sha256 ${state.rulesSha256.slice(0, 12)}…` +
      ' (set by pops serve from POPS_IDENTITY_RULES)',
  );
  if (state.note) lines.push(`  note: ${state.note}`);
  if (!state.paused && state.nextRuns[0]) lines.push(`  next run ${state.nextRuns[0]}`);
  for (const run of state.recentRuns.slice(-3)) {
    lines.push(`  ran ${run.workflowId} (scheduled ${run.scheduledAt})`);
  }
  for (const id of state.running) lines.push(`  running ${id}`);
  return lines.join('\n');
}

/** `pops identity schedule [--every 5m] [--pause | --unpause]`. */
export async function scheduleCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(scheduleArgs, options);
  if (args.pause && args.unpause) {
    throw new UsageError('--pause and --unpause: choose one');
  }
  const rt = await openRuntime();
  try {
    const configured = rt.config.POPS_IDENTITY_MERGE_EVERY;
    // The rules are not touched here: the schedule keeps those `pops serve` gave it.
    await ensureMergeSchedule(rt.client, rt.prefix, {
      ...(args.every ? { every: args.every } : {}),
      ...(configured && configured !== 'off' ? { createEvery: configured } : {}),
    });
    if (args.pause || args.unpause) {
      const note = `${args.pause ? 'paused' : 'unpaused'} by ${rt.config.POPS_ACTOR}`;
      await setMergeSchedulePaused(rt.client, args.pause, note);
    }
    const state = await describeMergeSchedule(rt.client);
    if (!state) throw new Error('the identity merge schedule was deleted meanwhile');
    print(args.json, state, () => describeSchedule(state));
  } finally {
    await rt.close();
  }
}
