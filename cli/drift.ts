/**
 * `pops drift monitor|run|show|list` (configure a model's monitor and its schedule, run one now,
 * print a report) and `pops models approve|reject` (decide a blessed candidate's promotion).
 */
import fs from 'node:fs';
import { WorkflowNotFoundError } from '@temporalio/client';
import { z } from 'zod';
import YAML from 'yaml';
import { configureMonitor, describeDriftSchedule, runDrift } from '../client/drift.js';
import {
  type DriftConfig,
  type DriftConfigInput,
  driftConfigSchema,
  driftScheduleId,
} from '../domain/drift/config.js';
import type { DriftRow } from '../domain/drift/judge.js';
import { type StoredRun, getRun, listRuns } from '../domain/drift/runs.js';
import { getMonitor } from '../domain/drift/store.js';
import { modelExists } from '../domain/registry.js';
import {
  APPROVE_SIGNAL,
  REJECT_SIGNAL,
  type RetrainResult,
  modelNameSchema,
  plainText,
  retrainWorkflowId,
} from '../domain/retrain.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openDatabase, openRuntime, runWorkers } from './runtime.js';

const count = z.coerce.number().int();
const monitorArgs = z.object({
  file: z.string().optional(),
  every: z.string().optional(),
  reference: z.string().optional(),
  windowDays: count.optional(),
  currentEnd: z.string().optional(),
  consecutive: count.optional(),
  cooldownHours: z.coerce.number().optional(),
  alpha: z.coerce.number().optional(),
  observeOnly: z.boolean().default(false),
  json: z.boolean().default(false),
});

/**
 * `--reference`: `training`, `last-cycle:<days>`, `rolling:<days>` or `range:<from>..<to>`.
 */
function referenceOf(text: string): DriftConfigInput['reference'] {
  if (text === 'training') return { kind: 'training' };
  const cycle = /^last-cycle:(\d+)$/.exec(text);
  if (cycle) return { kind: 'last-cycle', cycleDays: Number(cycle[1]) };
  const rolling = /^rolling:(\d+)$/.exec(text);
  if (rolling) return { kind: 'rolling', days: Number(rolling[1]) };
  const range = /^range:(.+)\.\.(.+)$/.exec(text);
  if (range) return { kind: 'range', from: range[1] as string, to: range[2] as string };
  throw new UsageError(
    `--reference ${JSON.stringify(text)} is not training, last-cycle:<days>, rolling:<days>` +
      ' or range:<from>..<to>',
  );
}

/** A config from `--file` (YAML), the stored one, and the flags, in that order of precedence. */
function configOf(base: DriftConfig | undefined, args: z.output<typeof monitorArgs>): DriftConfig {
  let fromFile: Record<string, unknown> = {};
  if (args.file) {
    let text: string;
    try {
      text = fs.readFileSync(args.file, 'utf8');
    } catch (err) {
      throw new UsageError(`--file ${JSON.stringify(args.file)}: ${(err as Error).message}`);
    }
    const parsed: unknown = YAML.parse(text);
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new UsageError(`${args.file}: a drift config is a mapping of settings`);
    }
    fromFile = (parsed ?? {}) as Record<string, unknown>;
  }
  const merged: Record<string, unknown> = { ...(args.file ? {} : (base ?? {})), ...fromFile };
  const current = { ...(merged['current'] as object | undefined) } as Record<string, unknown>;
  if (args.windowDays !== undefined) current['days'] = args.windowDays;
  if (args.currentEnd !== undefined) current['end'] = args.currentEnd;
  if (Object.keys(current).length) merged['current'] = current;
  if (args.reference) merged['reference'] = referenceOf(args.reference);
  if (args.every) merged['every'] = args.every;
  if (args.consecutive !== undefined) merged['consecutive'] = args.consecutive;
  if (args.cooldownHours !== undefined) merged['cooldownHours'] = args.cooldownHours;
  if (args.alpha !== undefined) merged['alpha'] = args.alpha;
  if (args.observeOnly) merged['trigger'] = false;
  return parseArgs(driftConfigSchema, merged);
}

async function declared(db: Parameters<typeof modelExists>[0], model: string): Promise<string> {
  const name = parseArgs(modelNameSchema, model);
  if (!(await modelExists(db, name))) {
    throw new UsageError(`model ${JSON.stringify(name)} is not declared (pops models create)`);
  }
  return name;
}

/** `pops drift monitor <model> [settings]`: stores the config and (re)creates its schedule. */
export async function monitorCommand(model: string, options: Record<string, unknown>) {
  const args = parseArgs(monitorArgs, options);
  const rt = await openRuntime();
  try {
    const name = await declared(rt.pool, model);
    const config = configOf(await getMonitor(rt.pool, name), args);
    const scheduled = await configureMonitor(rt.pool, rt.client, rt.prefix, {
      model: name,
      config,
      actor: rt.config.POPS_ACTOR,
    });
    print(args.json, { model: name, ...scheduled, config }, () =>
      [
        `drift monitor of ${name}: schedule ${scheduled.scheduleId} every ${scheduled.every}` +
          ' (runs while pops serves: npm start)',
        `  reference ${describeReference(config)}; current: ${config.current.days} days to ${config.current.end}`,
        `  drift = BH-adjusted p < ${config.alpha} and effect >= floor; retrain after` +
          ` ${config.consecutive} consecutive drifted runs, cooldown ${config.cooldownHours} h` +
          (config.trigger ? '' : ' (observe only: never retrains)'),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

const runArgs = monitorArgs.extend({
  at: z.iso
    .datetime({ offset: true, message: 'must be an ISO-8601 instant with a zone' })
    .optional(),
  wait: z.boolean().default(false),
});

/** `pops drift run <model> [--wait]`: one run now, with the stored config and the flags. */
export async function runCommand(model: string, options: Record<string, unknown>) {
  const args = parseArgs(runArgs, options);
  const rt = await openRuntime();
  try {
    const name = await declared(rt.pool, model);
    const config = configOf(await getMonitor(rt.pool, name), args);
    const input = {
      model: name,
      config,
      requestedBy: rt.config.POPS_ACTOR,
      ...(args.at ? { at: args.at } : {}),
    };
    const started = await runDrift(rt.client, rt.prefix, input);
    if (!args.wait) {
      print(args.json, started, () => `started ${started.workflowId}`);
      return;
    }
    const workers = await runWorkers(rt);
    try {
      const result = await started.result();
      const run = await getRun(rt.pool, name, result.driftRunId);
      print(args.json, { ...result, report: run }, () => (run ? describeRun(run) : ''));
    } finally {
      await workers.stop();
    }
  } finally {
    await rt.close();
  }
}

const showArgs = z.object({ run: count.optional(), json: z.boolean().default(false) });

/** `pops drift show <model> [--run id]`: a report as a table (JSON with histograms). */
export async function showCommand(model: string, options: Record<string, unknown>) {
  const args = parseArgs(showArgs, options);
  const rt = await openDatabase();
  try {
    const name = await declared(rt.pool, model);
    const run = await getRun(rt.pool, name, args.run);
    if (!run) {
      throw new UsageError(
        args.run === undefined
          ? `model ${name} has no drift run yet (pops drift run ${name} --wait)`
          : `model ${name} has no drift run ${args.run}`,
      );
    }
    print(args.json, run, () => describeRun(run));
  } finally {
    await rt.close();
  }
}

/** `pops drift list <model>`: the latest runs and their decisions, and the schedule. */
export async function listCommand(model: string, options: Record<string, unknown>) {
  const args = parseArgs(z.object({ json: z.boolean().default(false) }), options);
  const rt = await openRuntime();
  try {
    const name = await declared(rt.pool, model);
    const runs = await listRuns(rt.pool, name);
    const schedule = await describeDriftSchedule(rt.client, name);
    print(args.json, { schedule, runs }, () =>
      [
        schedule
          ? `schedule ${driftScheduleId(name)}${schedule.paused ? ' (paused)' : ''}; next ${schedule.nextRuns[0] ?? '-'}`
          : `no schedule (pops drift monitor ${name})`,
        table(
          ['run', 'at', 'version', 'drifted', 'decision', 'retrain'],
          runs.map((r) => [
            r.id,
            r.createdAt,
            r.version,
            r.drifted ? r.report.driftedFeatures.join(',') || 'performance' : '-',
            r.decision ?? '-',
            r.retrain ? `${r.retrain.workflowId}${r.retrain.attached ? ' (attached)' : ''}` : '-',
          ]),
        ),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

const decisionArgs = z.object({
  reason: plainText(500),
  wait: z.boolean().default(true),
  json: z.boolean().default(false),
});

async function decide(model: string, options: Record<string, unknown>, approve: boolean) {
  const args = parseArgs(decisionArgs, options);
  const rt = await openRuntime();
  try {
    const name = await declared(rt.pool, model);
    const handle = rt.client.workflow.getHandle(retrainWorkflowId(name));
    const described = await handle.describe().catch((err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return undefined;
      throw err;
    });
    if (described?.status.name !== 'RUNNING') {
      throw new UsageError(`no retraining of ${name} is running (nothing waits for a decision)`);
    }
    const by = rt.config.POPS_ACTOR;
    await handle.signal(approve ? APPROVE_SIGNAL : REJECT_SIGNAL, { by, reason: args.reason });
    const sent = { model: name, workflowId: handle.workflowId, approve, by };
    if (!args.wait) {
      print(
        args.json,
        sent,
        () =>
          `${approve ? 'approved' : 'rejected'} by ${by}; ${retrainWorkflowId(name)} acts on it` +
          ' where its workers run (npm start)',
      );
      return;
    }
    // Workers in this process carry the decision out, as `--wait` does elsewhere.
    const workers = await runWorkers(rt);
    try {
      const result = (await handle.result()) as RetrainResult;
      print(args.json, { ...sent, promotion: result.promotion }, () => {
        const p = result.promotion;
        const moved =
          p.outcome === 'promoted'
            ? `: production ${p.from ? `v${p.from}` : 'none'} -> v${p.to}`
            : '';
        return `${approve ? 'approved' : 'rejected'} by ${by}; v${result.version} ${p.outcome}${moved}`;
      });
    } finally {
      await workers.stop();
    }
  } finally {
    await rt.close();
  }
}

/** `pops models approve <model> --reason R`. */
export async function approveCommand(model: string, options: Record<string, unknown>) {
  await decide(model, options, true);
}

/** `pops models reject <model> --reason R`. */
export async function rejectCommand(model: string, options: Record<string, unknown>) {
  await decide(model, options, false);
}

function describeReference(config: DriftConfig): string {
  const r = config.reference;
  switch (r.kind) {
    case 'training':
      return "the watched version's training window";
    case 'last-cycle':
      return `the same window ${r.cycleDays} days earlier`;
    case 'rolling':
      return `the ${r.days} days before the current window`;
    case 'range':
      return `${r.from} .. ${r.to}`;
  }
}

const fmt = (v: number | null | undefined) =>
  v === null || v === undefined || Number.isNaN(v)
    ? '-'
    : v !== 0 && Math.abs(v) < 1e-3
      ? v.toExponential(2)
      : v.toFixed(4);

/** A run's report for people. */
export function describeRun(run: StoredRun): string {
  const r = run.report;
  const rows: DriftRow[] = [...r.features, ...(r.prediction ? [r.prediction] : [])];
  const lines = [
    `drift run ${run.id} of ${run.model} v${run.version} (${run.createdAt}, by ${run.requestedBy})`,
    `  reference (${run.reference.kind}): ${run.reference.from} .. ${run.reference.to}, ${run.reference.rows} rows`,
    `  current: ${run.current.from} .. ${run.current.to}, ${run.current.rows} rows`,
    table(
      [
        'feature',
        'kind',
        'test',
        'statistic',
        'p',
        'adj. p',
        'effect',
        'value',
        'floor',
        'decision',
      ],
      rows.map((f) => [
        f.feature,
        f.kind,
        f.test,
        fmt(f.statistic),
        fmt(f.pValue),
        fmt(f.adjustedP),
        f.effect.method,
        fmt(f.effect.value),
        f.effect.floor,
        f.decision,
      ]),
    ),
  ];
  const smoothed = rows.filter((f) => f.histogram?.pseudocountReason);
  for (const f of smoothed) lines.push(`  ${f.feature}: ${f.histogram?.pseudocountReason}`);
  if (r.performance) {
    lines.push(
      `  performance: ${r.performance.reason}${r.performance.degraded ? ' DEGRADED' : ''}`,
    );
  }
  for (const n of r.notes) lines.push(`  note: ${n}`);
  lines.push(
    `  drifted: ${run.drifted ? r.driftedFeatures.join(', ') || 'performance' : 'no'}`,
    `  decision: ${run.decision ?? 'undecided'}${run.decisionReason ? ` (${run.decisionReason})` : ''}`,
  );
  if (run.retrain) {
    lines.push(
      `  retraining: ${run.retrain.workflowId} run ${run.retrain.runId}` +
        (run.retrain.attached ? ' (attached to the one running)' : ''),
    );
  }
  return lines.join('\n');
}
