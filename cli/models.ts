/**
 * `pops models rollback` (start or attach to a rollback of a model's production, optionally wait
 * for it) and `pops models alias` (point a custom alias at a version by hand, audited).
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { startRollback, waitForRollback } from '../client/models.js';
import { moveAliasByHand, rollbackRefusal } from '../domain/registry.js';
import { modelNameSchema, plainText } from '../domain/retrain.js';
import {
  aliasNameSchema,
  PRODUCTION,
  rollbackInputSchema,
  versionNumberSchema,
} from '../domain/rollback.js';
import { describeMove } from './model-view.js';
import { parseArgs, print } from './output.js';
import { hasPollers, openDatabase, openRuntime, runWorkers } from './runtime.js';

// Digits only: `1e1` or `0x5` must not quietly name version 10 or 5.
const versionArg = z
  .string()
  .regex(/^[1-9][0-9]{0,9}$/, 'is not a version (a positive whole number)')
  .transform(Number)
  .pipe(versionNumberSchema);

const rollbackArgs = z.object({
  to: versionArg.optional(),
  reason: z.string(),
  wait: z.boolean().default(false),
  json: z.boolean().default(false),
});

const aliasArgs = z.object({
  model: modelNameSchema,
  alias: aliasNameSchema.refine((a) => a !== PRODUCTION, {
    message: 'moves only by promotion or rollback (pops models rollback <name>)',
  }),
  version: z
    .string()
    .regex(/^([1-9][0-9]{0,9}|none)$/, 'is not a version (a positive whole number) or none')
    .transform((v) => (v === 'none' ? null : Number(v)))
    .pipe(versionNumberSchema.nullable()),
  reason: plainText(500),
  json: z.boolean().default(false),
});

/** `pops models rollback <name> [--to <version>] --reason R [--wait]`. */
export async function rollbackCommand(
  name: string,
  options: Record<string, unknown>,
): Promise<void> {
  const args = parseArgs(rollbackArgs, options);
  const input = parseArgs(rollbackInputSchema, {
    model: name,
    reason: args.reason,
    ...(args.to !== undefined ? { toVersion: args.to } : {}),
  });
  const rt = await openRuntime();
  try {
    // A rollback that can only be refused is bad input, said before a workflow starts.
    const refusal = await rollbackRefusal(rt.pool, input.model, input.toVersion);
    if (refusal) throw refusal;
    const started = await startRollback(rt.client, rt.prefix, {
      ...input,
      requestedBy: rt.config.POPS_ACTOR,
    });
    const line = `${started.attached ? 'attached to' : 'started'} ${started.workflowId}`;
    if (!args.wait) {
      if (!(await hasPollers(rt))) {
        rt.log.warn('no worker polls the orchestration queue; start one with: npm start');
      }
      print(args.json, started, () => `${line} (run ${started.runId})`);
      return;
    }
    const local = await runWorkers(rt, ['orchestration']);
    try {
      const result = await waitForRollback(rt.client, started);
      print(
        args.json,
        { ...started, result },
        () =>
          `${line}: model ${input.model} production` +
          ` ${result.from ?? '-'} → ${result.to} (audited)`,
      );
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** `pops models alias <name> <alias> <version|none> --reason R`. */
export async function aliasCommand(
  name: string,
  alias: string,
  version: string,
  options: Record<string, unknown>,
): Promise<void> {
  const args = parseArgs(aliasArgs, { ...options, model: name, alias, version });
  const rt = await openDatabase();
  try {
    const move = await moveAliasByHand(
      rt.pool,
      {
        model: args.model,
        alias: args.alias,
        version: args.version,
        actor: rt.config.POPS_ACTOR,
        reason: args.reason,
      },
      `cli/${randomUUID()}`,
    );
    print(args.json, move, () => describeMove(move));
  } finally {
    await rt.close();
  }
}
