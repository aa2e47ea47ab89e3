/** `pops retrain` and `pops status`: start or attach to a retraining, watch it, read its state. */
import fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import {
  startRetrain,
  type StartedRetrain,
  waitForRetrain,
  type WorkflowStatus,
  workflowStatus,
} from '../client/retrain.js';
import type { MergeIdentitiesResult } from '../domain/identity/merge.js';
import { describeMerge } from './identity-merge.js';
import { modelExists } from '../domain/registry.js';
import {
  APPROVE_SIGNAL,
  type RetrainProgress,
  type RetrainResult,
  retrainInputSchema,
} from '../domain/retrain.js';
import { parseArgs, print, progressBar, UsageError } from './output.js';
import { hasPollers, openRuntime, type Runtime, runWorkers } from './runtime.js';

const retrainArgs = z.object({
  model: z.string(),
  reason: z.string(),
  trainUntil: z.string().optional(),
  validateUntil: z.string().optional(),
  epochs: z.coerce.number().int().optional(),
  features: z
    .string()
    .transform((v) => v.split(',').map((f) => f.trim()))
    .optional(),
  wait: z.boolean().default(false),
  promote: z.boolean().default(false),
  canary: z.string().optional(),
  canaryFile: z.string().optional(),
  json: z.boolean().default(false),
});

/** A blessed candidate waiting for `pops models approve`: what `--wait` stops at. */
export interface AwaitingApproval {
  awaitingApproval: true;
  model: string;
  version: number;
  workflowId: string;
  runId: string;
}

/** Shows training epochs (read from the workflow's `progress` query) until the run ends. */
export async function watchRetrain(
  rt: Runtime,
  started: StartedRetrain,
  json: boolean,
  epochs?: number,
): Promise<RetrainResult>;
export async function watchRetrain(
  rt: Runtime,
  started: StartedRetrain,
  json: boolean,
  epochs: number,
  stopAtApproval: true,
): Promise<RetrainResult | AwaitingApproval>;
export async function watchRetrain(
  rt: Runtime,
  started: StartedRetrain,
  json: boolean,
  epochs = 1,
  stopAtApproval = false,
): Promise<RetrainResult | AwaitingApproval> {
  const bar = progressBar('training', !json, ' epochs');
  bar.update(0, epochs, { detail: 'starting' });
  const handle = rt.client.workflow.getHandle(started.workflowId, started.runId);
  let awaiting: (value: AwaitingApproval) => void = () => undefined;
  const approval = new Promise<AwaitingApproval>((resolve) => (awaiting = resolve));
  // One query at a time, awaited before the connection may close: a query still retrying
  // against a closed connection throws from its timer.
  let inflight: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (inflight) return;
    inflight = handle
      .query<RetrainProgress>('progress')
      .then((p) => {
        bar.update(p.epoch, p.epochs, {
          detail: `${p.stage}${p.loss ? ` loss ${p.loss.toFixed(4)}` : ''}`,
        });
        if (stopAtApproval && p.stage === 'awaiting-approval' && p.version !== undefined) {
          awaiting({
            awaitingApproval: true,
            model: started.workflowId.replace(/^retrain\//, ''),
            version: p.version,
            ...started,
          });
        }
      })
      .catch(() => undefined)
      .finally(() => (inflight = undefined));
  }, 500);
  // The result's long poll is cancelled when the run stops at its approval, so nothing still
  // polls when the connection closes.
  const polling = new AbortController();
  const result = rt.client.withAbortSignal(polling.signal, () =>
    waitForRetrain(rt.client, started.workflowId, started.runId),
  );
  try {
    return await Promise.race([result, approval]);
  } finally {
    polling.abort();
    await result.catch(() => undefined);
    clearInterval(timer);
    await inflight;
    bar.stop();
  }
}

/** Formats a finished retraining for people. */
export function describeResult(result: RetrainResult): string {
  const m = result.metrics;
  const b = result.baseline;
  const row = (name: string, a: number, c: number) =>
    `  ${name.padEnd(9)} ${a.toFixed(4).padStart(8)} ${c.toFixed(4).padStart(10)}`;
  return [
    `model ${result.model} version ${result.version}` +
      ` (artifact sha256 ${result.artifactSha256.slice(0, 12)}…)`,
    `  trained on ${result.trainingSet.trainRows} examples,` +
      ` validated on ${result.trainingSet.validateRows}` +
      ` (from ${result.trainingSet.trainUntil})`,
    `  backend ${result.backend}, ${Math.round(result.examplesPerSecond)} examples/s` +
      (result.resumedFromEpoch > 0 ? `, resumed from epoch ${result.resumedFromEpoch}` : ''),
    `  metric       model   popularity`,
    row('AUC', m.auc, b.auc),
    row('log loss', m.logLoss, b.logLoss),
    row('NDCG@10', m.ndcgAt10, b.ndcgAt10),
    ...describeValidation(result),
  ].join('\n');
}

/** The validation against production and what became of the candidate, for people. */
function describeValidation(result: RetrainResult): string[] {
  const v = result.validation;
  if (!v) return [];
  const against = v.productionVersion
    ? `against production v${v.productionVersion}`
    : 'no production version yet: value thresholds only';
  const lines = [`  validation ${against}: ${v.blessed ? 'BLESSED' : 'NOT blessed'}`];
  for (const d of v.differences) {
    lines.push(
      `    ${d.metric.padEnd(9)} diff ${d.estimate.toFixed(4)}` +
        ` CI [${d.low.toFixed(4)}, ${d.high.toFixed(4)}]` +
        ` ${d.bound} bound vs ${d.limit}: ${d.pass ? 'pass' : 'FAIL'}`,
    );
  }
  for (const r of v.reasons) lines.push(`    reason: ${r}`);
  const p = result.promotion;
  const moved =
    p.outcome === 'promoted' ? ` (production ${p.from ? `v${p.from}` : 'none'} -> v${p.to})` : '';
  lines.push(`  promotion: ${p.outcome}${moved}${p.by ? ` by ${p.by}` : ''}`);
  if (p.rollout) {
    lines.push(`    ${p.reason ?? ''}`, `    follow it: pops rollout status ${p.rollout.slice(8)}`);
  }
  return lines;
}

/** A YAML mapping of rollout settings (domain/rollout/config.ts), for `--canary-file`. */
function readSettings(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--canary-file ${file}: ${(err as Error).message}`);
  }
  const parsed: unknown = YAML.parse(text);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(`--canary-file ${file}: rollout settings are a mapping`);
  }
  return parsed as Record<string, unknown>;
}

/** `pops retrain --model M --reason R [--wait]`. */
export async function retrainCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(retrainArgs, options);
  if (args.promote && (args.canary || args.canaryFile)) {
    throw new UsageError('--promote and --canary: choose one way to promote');
  }
  if (args.canaryFile && !args.canary) {
    throw new UsageError('--canary-file needs --canary <surface>');
  }
  const input = parseArgs(retrainInputSchema, {
    ...(args.canary
      ? {
          promotion: 'canary',
          canary: {
            ...(args.canaryFile ? readSettings(args.canaryFile) : {}),
            surface: args.canary,
          },
        }
      : {}),
    model: args.model,
    reason: args.reason,
    ...(args.trainUntil ? { trainUntil: args.trainUntil } : {}),
    ...(args.validateUntil ? { validateUntil: args.validateUntil } : {}),
    ...(args.epochs !== undefined ? { training: { epochs: args.epochs } } : {}),
    ...(args.features ? { features: args.features } : {}),
  });
  const rt = await openRuntime();
  try {
    if (!(await modelExists(rt.pool, input.model))) {
      throw new UsageError(
        `model "${input.model}" is not declared; run:` +
          ` pops models create ${input.model} --source <source>`,
      );
    }
    const started = await startRetrain(rt.client, rt.prefix, {
      ...input,
      requestedBy: rt.config.POPS_ACTOR,
    });
    if (args.promote) await approveUpFront(rt, started.workflowId, started.runId);
    if (!args.wait) {
      if (!(await hasPollers(rt))) {
        rt.log.warn('no worker polls the orchestration queue; start one with: npm start');
      }
      print(
        args.json,
        started,
        () =>
          `${started.attached ? 'attached to' : 'started'} ${started.workflowId}` +
          ` (run ${started.runId})`,
      );
      return;
    }
    // Workers in this process guarantee progress: a poller Temporal still lists may belong to a
    // process that died a minute ago. Beside a running `npm start` they only add capacity.
    const local = await runWorkers(rt);
    try {
      const result = await watchRetrain(rt, started, args.json, input.training.epochs, true);
      if ('awaitingApproval' in result) {
        print(
          args.json,
          result,
          () =>
            `${result.model} v${result.version} is blessed and waits for approval:\n` +
            `  npx pops models show ${result.model}    (its validation figures)\n` +
            `  npx pops models approve ${result.model} --reason <why>   (or reject)`,
        );
      } else {
        print(args.json, { ...started, result }, () => describeResult(result));
      }
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** A finished workflow's result for people: retraining and merges in words, others as JSON. */
function describeWorkflowResult(status: WorkflowStatus): string {
  switch (status.type) {
    case 'retrainModel':
      return describeResult(status.result as RetrainResult);
    case 'mergeIdentities':
      return describeMerge(status.result as MergeIdentitiesResult);
    default:
      return `  result: ${JSON.stringify(status.result)}`;
  }
}

/** `pops status <workflowId>`. */
export async function statusCommand(
  workflowId: string,
  options: { json?: boolean },
): Promise<void> {
  const rt = await openRuntime();
  try {
    const status = await workflowStatus(rt.client, workflowId);
    if (!status) throw new UsageError(`workflow "${workflowId}" not found`);
    print(Boolean(options.json), status, () => {
      const closed = status.closeTime ? `, closed ${status.closeTime}` : '';
      const lines = [
        `${status.workflowId} (${status.type}) ${status.status}:` +
          ` started ${status.startTime}${closed}`,
      ];
      if (status.progress) {
        lines.push(
          `  stage ${status.progress.stage},` +
            ` epoch ${status.progress.epoch}/${status.progress.epochs}`,
        );
      }
      for (const a of status.pendingActivities ?? []) {
        const retrying = a.lastFailure
          ? `, attempt ${a.attempt}, last failure: ${a.lastFailure}`
          : '';
        lines.push(`  running ${a.type}${retrying}`);
      }
      if (status.failure) lines.push(`  failure: ${status.failure}`);
      if (status.result !== undefined) lines.push(describeWorkflowResult(status));
      return lines.join('\n');
    });
    if (['FAILED', 'TERMINATED', 'TIMED_OUT', 'CANCELLED'].includes(status.status)) {
      process.exitCode = 1;
    }
  } finally {
    await rt.close();
  }
}

/**
 * `--promote`: the requester's approval, given at the start; it counts only if the candidate is
 * blessed (a decision that arrives early is kept by the workflow).
 */
export async function approveUpFront(rt: Runtime, workflowId: string, runId: string) {
  const actor = rt.config.POPS_ACTOR;
  await rt.client.workflow.getHandle(workflowId, runId).signal(APPROVE_SIGNAL, {
    by: actor,
    reason: `approved at the start by ${actor} (--promote), if blessed`,
  });
}
