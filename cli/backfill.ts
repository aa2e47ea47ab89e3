/**
 * `pops backfill start` (start or attach to a backfill, optionally watch it to the end),
 * `pops backfill status <id>` (partitions done, rows/s and ETA, with a progress bar on a terminal)
 * and `pops features materialize` (one incremental step).
 */
import { z } from 'zod';
import {
  type BackfillStatus,
  backfillStatus,
  rates,
  startBackfill,
  startMaterialize,
} from '../client/backfill.js';
import { type MaterializeResult, PARTITION_UNITS } from '../domain/features/backfill.js';
import { parseArgs, print, progressBar, UsageError } from './output.js';
import { hasPollers, openRuntime, type Runtime, runWorkers } from './runtime.js';

const startArgs = z.object({
  features: z
    .string()
    .min(1)
    .transform((v) => v.split(',').map((s) => s.trim())),
  from: z.string(),
  to: z.string(),
  partition: z.enum(PARTITION_UNITS).default('day'),
  parallelism: z.coerce.number().int().optional(),
  reason: z.string().optional(),
  wait: z.boolean().default(false),
  json: z.boolean().default(false),
});

const statusArgs = z.object({
  watch: z.boolean().default(false),
  json: z.boolean().default(false),
});

function seconds(s: number | null): string {
  if (s === null) return '?';
  if (s < 90) return `${Math.round(s)}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

/** Formats a backfill's state for people. */
export function describeBackfill(s: BackfillStatus, nowMs = Date.now()): string {
  const lines = [`${s.workflowId}: ${s.status}`];
  if (s.progress) {
    const p = s.progress;
    const r = rates(p, nowMs);
    lines.push(
      `  ${p.phase}: ${p.partitionsDone}/${p.partitionsTotal} partitions` +
        ` (${p.from}..${p.to}), ${p.tileRows} tile rows, ${p.valueRows} value rows,` +
        ` ${Math.round(r.rowsPerSecond)} rows/s, ETA ${seconds(r.etaSeconds)}` +
        (p.warnings > 0 ? `, ${p.warnings} quality warnings` : ''),
    );
  }
  if (s.result) {
    const r = s.result;
    lines.push(
      `  ${r.partitions} partitions, ${r.tileRows} tile rows, ${r.valueRows} value rows` +
        (r.warnings > 0 ? `, ${r.warnings} quality warnings` : ''),
    );
  }
  if (s.failure) lines.push(s.status === 'RUNNING' ? `  ${s.failure}` : `  failure: ${s.failure}`);
  return lines.join('\n');
}

/** Polls the backfill until it ends, drawing a bar; returns its last state. */
async function watch(rt: Runtime, workflowId: string, json: boolean): Promise<BackfillStatus> {
  const bar = progressBar('backfill', !json, ' partitions');
  try {
    for (;;) {
      const s = await backfillStatus(rt.client, workflowId);
      if (!s) throw new UsageError(`backfill "${workflowId}" not found`);
      if (s.progress) {
        const r = rates(s.progress, Date.now());
        bar.update(s.progress.partitionsDone, s.progress.partitionsTotal, {
          detail:
            `${s.progress.phase} ${Math.round(r.rowsPerSecond)} rows/s` +
            ` ETA ${seconds(r.etaSeconds)}`,
        });
      }
      if (s.status !== 'RUNNING') return s;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    bar.stop();
  }
}

function exitForStatus(s: BackfillStatus): void {
  if (s.status !== 'RUNNING' && s.status !== 'COMPLETED') process.exitCode = 1;
}

/** `pops backfill start --features a,b@2 --from D --to D [--partition day] [--wait]`. */
export async function startBackfillCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(startArgs, options);
  const rt = await openRuntime();
  try {
    const started = await startBackfill(rt.client, rt.pool, rt.prefix, {
      features: args.features,
      from: args.from,
      to: args.to,
      partition: args.partition,
      ...(args.parallelism !== undefined ? { parallelism: args.parallelism } : {}),
      requestedBy: rt.config.POPS_ACTOR,
      ...(args.reason ? { reason: args.reason } : {}),
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
    const local = await runWorkers(rt);
    try {
      const s = await watch(rt, started.workflowId, args.json);
      print(args.json, { ...started, ...s }, () => `${line()}\n${describeBackfill(s)}`);
      exitForStatus(s);
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** `pops backfill status <id> [--watch]`. */
export async function backfillStatusCommand(
  workflowId: string,
  options: Record<string, unknown>,
): Promise<void> {
  const args = parseArgs(statusArgs, options);
  const rt = await openRuntime();
  try {
    const s = args.watch
      ? await watch(rt, workflowId, args.json)
      : await backfillStatus(rt.client, workflowId);
    if (!s) {
      throw new UsageError(
        `backfill "${workflowId}" not found (ids look like backfill/<name@version>/<from>/<to>)`,
      );
    }
    print(args.json, s, () => describeBackfill(s));
    exitForStatus(s);
  } finally {
    await rt.close();
  }
}

const materializeArgs = z.object({
  features: z
    .string()
    .min(1)
    .transform((v) => v.split(',').map((s) => s.trim()))
    .optional(),
  lateness: z
    .string()
    .regex(/^[0-9]{1,6}[smhd]$/, 'is not a duration like 30m, 1h or 2d')
    .transform(
      (v) => Number(v.slice(0, -1)) * { s: 1, m: 60, h: 3600, d: 86_400 }[v.slice(-1) as 's'],
    )
    .optional(),
  partition: z.enum(PARTITION_UNITS).optional(),
  wait: z.boolean().default(false),
  json: z.boolean().default(false),
});

/** `pops features materialize [--features a,b] [--lateness 1h] [--wait]`. */
export async function materializeCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(materializeArgs, options);
  const rt = await openRuntime();
  try {
    const started = await startMaterialize(rt.client, rt.pool, rt.prefix, {
      features: args.features ?? 'all',
      ...(args.partition ? { partition: args.partition } : {}),
      ...(args.lateness !== undefined ? { latenessSeconds: args.lateness } : {}),
      requestedBy: rt.config.POPS_ACTOR,
    });
    const line = () =>
      `${started.attached ? 'attached to' : 'started'} ${started.workflowId}` +
      ` (run ${started.runId})`;
    if (!args.wait) {
      print(args.json, started, line);
      return;
    }
    const local = await runWorkers(rt);
    try {
      const result = (await rt.client.workflow
        .getHandle(started.workflowId, started.runId)
        .result()) as MaterializeResult;
      print(args.json, { ...started, result }, () => {
        const lines = [line()];
        lines.push(
          result.range
            ? `  computed ${result.range.from}..${result.range.to}` +
                (result.lateFrom ? ` (late events from ${result.lateFrom})` : '') +
                `: ${result.backfill?.valueRows ?? 0} value rows`
            : `  nothing new: closed through ${result.closedThrough}`,
        );
        lines.push(
          `  features: ${result.features.map((f) => `${f.name}@${f.version}`).join(', ')}`,
        );
        return lines.join('\n');
      });
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}
