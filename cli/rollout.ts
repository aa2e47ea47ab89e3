/**
 * `pops rollout start|status|pause|resume|approve|abort`: start (or attach to) a canary rollout of
 * a model version on a surface, show where it stands with its latest statistics, and act on it.
 */
import fs from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import {
  type RolloutCommand,
  type RolloutStatus,
  rolloutStatus,
  signalRollout,
  startRollout,
} from '../client/rollout.js';
import { plainText } from '../domain/retrain.js';
import {
  type RolloutInput,
  rolloutInputSchema,
  surfaceNameSchema,
  type TickSummary,
} from '../domain/rollout/config.js';
import type { GuardrailResult, TickAnalysis } from '../domain/rollout/judge.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openRuntime } from './runtime.js';

const list = (what: string) =>
  z
    .string()
    .transform((s) => s.split(',').map((v) => v.trim()))
    .refine((v) => v.every((x) => x !== ''), `${what}: a comma-separated list`);

const startArgs = z.object({
  file: z.string().optional(),
  model: z.string().optional(),
  version: z.string().optional(),
  surface: z.string().optional(),
  steps: list('--steps').optional(),
  bake: list('--bake').optional(),
  every: z.string().optional(),
  minSample: z.string().optional(),
  maxExtensions: z.string().optional(),
  guardrails: list('--guardrails').optional(),
  gates: list('--gates').optional(),
  alpha: z.string().optional(),
  reason: z.string().optional(),
  json: z.boolean().default(false),
});

/** A number from a flag, digits (and a point) only, so `1e3` or `0x10` are not quietly numbers. */
function numberOf(flag: string, text: string): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text)) {
    throw new UsageError(`${flag} ${JSON.stringify(text)} is not a number`);
  }
  return Number(text);
}

/**
 * `--guardrails metric:margin,…`: a rate's margin (`ctr:0`, `error_rate:0.005`), or the latency
 * limit in ms (`latency_p99:250ms`); kinds and directions take their defaults (a --file sets them).
 */
function guardrailsOf(specs: string[]): RolloutInput['guardrails'] {
  return specs.map((spec) => {
    const match = /^([a-z0-9_]+)(?::([0-9.]+)(ms)?)?$/.exec(spec);
    if (!match) {
      throw new UsageError(
        `--guardrails ${JSON.stringify(spec)} is not metric[:margin] or latency_p99:<n>ms`,
      );
    }
    const [, metric = '', value, ms] = match;
    const parsed = value === undefined ? undefined : numberOf('--guardrails', value);
    if (metric === 'latency_p99') {
      if (!ms || parsed === undefined) {
        throw new UsageError('--guardrails latency_p99 needs a limit: latency_p99:250ms');
      }
      return { metric, limitMs: parsed } as never;
    }
    return { metric, ...(parsed === undefined ? {} : { margin: parsed }) } as never;
  });
}

/** The input from `--file` (YAML) overridden by the flags. */
function inputOf(args: z.output<typeof startArgs>, requestedBy: string) {
  let base: Record<string, unknown> = {};
  if (args.file) {
    let text: string;
    try {
      text = fs.readFileSync(args.file, 'utf8');
    } catch (err) {
      throw new UsageError(`--file ${JSON.stringify(args.file)}: ${(err as Error).message}`);
    }
    const parsed: unknown = YAML.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new UsageError(`${args.file}: a rollout is a mapping of settings`);
    }
    base = parsed as Record<string, unknown>;
  }
  const over: Record<string, unknown> = {};
  if (args.model) over['model'] = args.model;
  if (args.version) over['version'] = numberOf('--version', args.version);
  if (args.surface) over['surface'] = args.surface;
  if (args.steps) over['steps'] = args.steps.map((s) => numberOf('--steps', s));
  if (args.bake) over['bake'] = args.bake.length === 1 ? args.bake[0] : args.bake;
  if (args.every) over['analysisEvery'] = args.every;
  if (args.minSample) over['minSamplePerArm'] = numberOf('--min-sample', args.minSample);
  if (args.maxExtensions) over['maxExtensions'] = numberOf('--max-extensions', args.maxExtensions);
  if (args.guardrails) over['guardrails'] = guardrailsOf(args.guardrails);
  if (args.gates) over['gates'] = args.gates.map((g) => numberOf('--gates', g));
  if (args.alpha) over['alpha'] = numberOf('--alpha', args.alpha);
  if (args.reason) over['reason'] = args.reason;
  return parseArgs(rolloutInputSchema, { ...base, ...over, requestedBy });
}

/** `pops rollout start --model M --version N --surface S [settings]`. */
export async function startCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(startArgs, options);
  const rt = await openRuntime();
  try {
    const input = inputOf(args, rt.config.POPS_ACTOR);
    const started = await startRollout(rt.client, rt.prefix, input, rt.pool);
    print(args.json, { ...started, input }, () =>
      [
        `${started.attached ? 'attached to' : 'started'} ${started.workflowId}: ${input.model}` +
          ` v${input.version} on ${input.surface}, steps ${input.steps.join('% → ')}%`,
        `  follow it: pops rollout status ${input.surface} (it runs while pops serves: npm start)`,
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

const statusArgs = z.object({
  decisions: z.coerce.number().int().min(1).max(1000).default(10),
  json: z.boolean().default(false),
});

/** `pops rollout status <surface>`: where the rollout stands and its latest statistics. */
export async function statusCommand(surface: string, options: Record<string, unknown>) {
  const args = parseArgs(statusArgs, options);
  const name = parseArgs(surfaceNameSchema, surface);
  const rt = await openRuntime();
  try {
    const status = await rolloutStatus(rt.client, rt.pool, name, { decisions: args.decisions });
    if (!status) throw new UsageError(`surface ${JSON.stringify(name)} has had no rollout`);
    print(args.json, status, () => describeStatus(status));
  } finally {
    await rt.close();
  }
}

const actionArgs = z.object({
  reason: plainText(500),
  step: z.string().optional(),
  json: z.boolean().default(false),
});

async function act(command: RolloutCommand, surface: string, options: Record<string, unknown>) {
  const args = parseArgs(actionArgs, options);
  const name = parseArgs(surfaceNameSchema, surface);
  const rt = await openRuntime();
  try {
    const by = rt.config.POPS_ACTOR;
    const step = args.step === undefined ? {} : { step: numberOf('--step', args.step) };
    const sent = await signalRollout(rt.client, name, command, {
      by,
      reason: args.reason,
      ...step,
    });
    print(
      args.json,
      { ...sent, command, by },
      () => `${command} sent to ${sent.workflowId} by ${by}`,
    );
  } finally {
    await rt.close();
  }
}

/** `pops rollout pause <surface> --reason R`. */
export const pauseCommand = (s: string, o: Record<string, unknown>) => act('pause', s, o);
/** `pops rollout resume <surface> --reason R`. */
export const resumeCommand = (s: string, o: Record<string, unknown>) => act('resume', s, o);
/** `pops rollout approve <surface> [--step P] --reason R`. */
export const approveCommand = (s: string, o: Record<string, unknown>) => act('approve', s, o);
/** `pops rollout abort <surface> --reason R`: roll back now. */
export const abortCommand = (s: string, o: Record<string, unknown>) => act('abort', s, o);

const fmt = (v: number | null | undefined, digits = 4) =>
  v === null || v === undefined || !Number.isFinite(v)
    ? String(v ?? '-')
    : v !== 0 && Math.abs(v) < 1e-3
      ? v.toExponential(2)
      : v.toFixed(digits);

/** A rollout's status for people. */
export function describeStatus(s: RolloutStatus): string {
  const stored = s.stored;
  const live = s.live;
  const lines = [
    `rollout ${s.workflowId}: ${s.workflow?.status ?? 'no workflow'}` +
      (stored
        ? ` (${stored.model} v${stored.version} over v${stored.stableVersion}, by ${stored.requestedBy})`
        : ''),
  ];
  if (live) {
    const since = live.timeInStepMs / 1000;
    lines.push(
      `  ${live.phase}: step ${live.stepIndex + 1} (${live.stepPercent}%), canary weight ${live.weightBp} bp,` +
        ` ${since.toFixed(0)} s in step, bake until ${live.bakeUntil ?? '-'}, extensions ${live.extensions},` +
        ` tick ${live.tick}`,
    );
    if (live.awaitingGate !== null) {
      lines.push(`  waiting for approval of the ${live.awaitingGate}% step`);
    }
    if (live.hold) {
      lines.push(`  held (${live.hold.reason}) by ${live.hold.by}: ${live.hold.detail}`);
    }
  } else if (stored) {
    lines.push(
      `  ${stored.phase}: step ${stored.stepIndex + 1}, canary weight ${stored.weightBp} bp (stored)`,
    );
  }
  if (stored?.outcome) lines.push(`  outcome: ${JSON.stringify(stored.outcome)}`);
  const latest = live?.latest ?? s.decisions[0];
  if (latest) lines.push(...describeDecision(latest));
  if (s.decisions.length > 0) {
    lines.push(
      table(
        ['id', 'step', 'tick', 'decision', 'stable', 'canary', 'reason'],
        s.decisions.map((d) => {
          const a = d.analysis as Partial<TickAnalysis>;
          return [
            d.decisionId,
            d.stepIndex + 1,
            d.tick,
            d.decision,
            a.arms?.stable.persons ?? 0,
            a.arms?.canary.persons ?? 0,
            d.reason.slice(0, 60),
          ];
        }),
      ),
    );
  }
  if (s.earlier.length > 0) {
    lines.push(
      '  earlier rollouts:',
      table(
        ['rollout', 'version', 'over', 'outcome', 'by', 'started', 'ended'],
        s.earlier.map((r) => [
          r.rolloutKey,
          r.version,
          r.stableVersion,
          r.state,
          r.requestedBy,
          r.startedAt,
          r.endedAt ?? '-',
        ]),
      ),
    );
  }
  return lines.join('\n');
}

function describeDecision(d: TickSummary): string[] {
  const a = d.analysis as Partial<TickAnalysis>;
  const lines = [
    `  latest decision ${d.decisionId} (step ${d.stepIndex + 1}, tick ${d.tick}): ${d.decision} — ${d.reason}`,
  ];
  if (a.srm) {
    lines.push(
      `  sample ratio: persons stable ${a.srm.persons.stable}, canary ${a.srm.persons.canary};` +
        ` chi-squared ${fmt(a.srm.statistic)}, p ${fmt(a.srm.pValue)} (holds below ${a.srm.alpha})`,
    );
  }
  if (a.guardrails?.length) {
    lines.push(
      table(
        [
          'guardrail',
          'kind',
          'better',
          'margin',
          'stable',
          'canary',
          'lower',
          'upper',
          'judged',
          'breach',
        ],
        a.guardrails.map((g: GuardrailResult) => [
          g.metric,
          g.kind,
          g.direction,
          g.limitMs !== undefined ? `${g.limitMs}ms` : fmt(g.margin),
          fmt(g.stable?.estimate),
          fmt(g.canary.estimate),
          fmt(g.interval?.lower),
          fmt(g.interval?.upper),
          g.judged ? 'yes' : 'no',
          g.breach ? 'BREACH' : '-',
        ]),
      ),
    );
  }
  return lines;
}
