/**
 * `pops features check [--features a,b] [--sample N] [--reason R] [--wait]`: compares a sample of
 * the online store with the offline store (checkFeatureConsistency) and, with --wait, prints the
 * values that differ; exits 1 when some do.
 */
import { z } from 'zod';
import {
  type StartedCheck,
  startConsistencyCheck,
  waitForConsistencyCheck,
} from '../client/features.js';
import { checkMismatches, type MismatchView } from '../domain/features/consistency-store.js';
import type { ConsistencyCheckResult } from '../domain/features/consistency.js';
import { parseFeatureRef } from '../domain/features/registry.js';
import { plainText } from '../domain/retrain.js';
import { parseArgs, print, table } from './output.js';
import { hasPollers, openRuntime, runWorkers } from './runtime.js';

const checkArgs = z.object({
  features: z.string().optional(),
  sample: z
    .string()
    .regex(/^[1-9][0-9]{0,5}$/, 'is not a sample size (a positive whole number)')
    .transform(Number)
    .optional(),
  reason: plainText(500).default('checked from the command line'),
  wait: z.boolean().default(false),
  json: z.boolean().default(false),
});

/** Mismatches printed; the rest are in feature_consistency_mismatches. */
const SHOWN = 50;

/** The result of a finished check for people. */
export function describeCheck(
  started: StartedCheck,
  result: ConsistencyCheckResult,
  shown: MismatchView[],
  total: number,
): string {
  const features = Object.entries(result.byFeature);
  const lines = [
    `${started.attached ? 'attached to' : 'ran'} ${started.workflowId} (run ${started.runId})`,
    `checked ${result.checked} entities of ${features.length} feature` +
      ` version${features.length === 1 ? '' : 's'}:` +
      ` ${result.mismatches} mismatching values`,
  ];
  if (features.length > 0) {
    lines.push(
      table(
        ['feature', 'checked', 'mismatches', 'entities', 'compared at'],
        features.map(([name, f]) => [
          name,
          f.checked,
          f.mismatches,
          f.mismatchedEntities,
          f.comparedAt,
        ]),
      ),
    );
  }
  if (shown.length > 0) {
    const more = total > shown.length ? ` (first ${shown.length} of ${total})` : '';
    lines.push('', `mismatches${more}:`);
    lines.push(
      table(
        ['feature', 'entity', 'window', 'online', 'offline', 'online ts', 'offline ts'],
        shown.map((m) => [
          m.feature,
          m.entityId,
          m.window,
          String(m.online),
          String(m.offline),
          m.onlineTs ?? '-',
          m.offlineTs ?? '-',
        ]),
      ),
    );
  }
  return lines.join('\n');
}

/** `pops features check`. */
export async function checkFeaturesCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(checkArgs, options);
  const features = args.features
    ? args.features
        .split(',')
        .map((f) => f.trim())
        .filter((f) => f !== '')
    : [];
  for (const ref of features) parseFeatureRef(ref);
  const rt = await openRuntime();
  try {
    const started = await startConsistencyCheck(rt.client, rt.prefix, {
      features,
      ...(args.sample === undefined ? {} : { sample: args.sample }),
      requestedBy: rt.config.POPS_ACTOR,
      reason: args.reason,
    });
    if (!args.wait) {
      if (!(await hasPollers(rt))) {
        rt.log.warn('no worker polls the orchestration queue; start one with: npm start');
      }
      print(
        args.json,
        started,
        () => `${started.attached ? 'attached to' : 'started'} ${started.workflowId}`,
      );
      return;
    }
    // As for `pops identity merge --wait`: workers here guarantee progress.
    const local = await runWorkers(rt);
    try {
      const result = await waitForConsistencyCheck(rt.client, started);
      const { total, mismatches } = await checkMismatches(rt.pool, started, SHOWN);
      print(args.json, { ...started, result, mismatches }, () =>
        describeCheck(started, result, mismatches, total),
      );
      if (result.mismatches > 0) process.exitCode = 1;
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}
