/**
 * `pops demo [--data <dir>]`: the main job on the embedded defaults. It brings up PostgreSQL and
 * Temporal, imports data (the simulator's, or a MovieLens-format directory), declares a model,
 * runs the retraining workflow on in-process workers, and prints what it did. A second run reuses
 * the data and state of the first and registers the next version.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { stateDir } from '../common/config.js';
import { startMergeIdentities, waitForMerge } from '../client/identity.js';
import { startRetrain } from '../client/retrain.js';
import type { MergeIdentitiesResult } from '../domain/identity/merge.js';
import { simulateSegmentTraffic } from '../domain/identity/simulator.js';
import { simulateMovieLens } from '../domain/simulator.js';
import { declareModel } from '../domain/registry.js';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { registerFeatures } from '../domain/features/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { importEvents } from '../ingest/events.js';
import { importMovieLens } from '../ingest/movielens.js';
import { parseArgs, print, progressBar, UsageError } from './output.js';
import { approveUpFront, describeResult, watchRetrain } from './retrain.js';
import { configuredIdentityRules, openRuntime, type Runtime, runWorkers } from './runtime.js';

const demoArgs = z.object({
  data: z.string().optional(),
  epochs: z.coerce.number().int().min(1).max(200).optional(),
  canary: z.boolean().default(false),
  campaign: z.boolean().default(false),
  json: z.boolean().default(false),
});

const SIMULATED_SOURCE = 'pops-sim';
const SIMULATED_TRAFFIC_SOURCE = 'pops-sim-web';
const SIMULATED_PEOPLE = 300;

/** What the identity step found, over the whole graph. */
interface IdentityReport {
  merge: MergeIdentitiesResult;
  persons: number;
  identifiers: number;
  merges: number;
  conflicts: number;
}

/**
 * Resolves identities over every event: with simulated data, the simulator's web and app traffic
 * for the same people is imported first (once: a re-import adds nothing).
 */
async function resolveIdentities(rt: Runtime, simulated: boolean): Promise<IdentityReport> {
  if (simulated) {
    const file = path.join(stateDir(rt.config), 'sim', 'web-events.ndjson');
    if (!fs.existsSync(file)) {
      simulateSegmentTraffic(file, { people: SIMULATED_PEOPLE, visitors: 40, sharedTablets: 4 });
    }
    await importEvents(rt.pool, file, {
      source: SIMULATED_TRAFFIC_SOURCE,
      identityRules: configuredIdentityRules(),
    });
  }
  const run = await startMergeIdentities(rt.client, rt.prefix, {
    requestedBy: rt.config.POPS_ACTOR,
    rules: configuredIdentityRules(),
  });
  const merge = await waitForMerge(rt.client, run);
  const { rows } = await rt.pool.query<Omit<IdentityReport, 'merge'>>(
    `select (select count(*) from persons where canonical_id = id)::int as persons,
            (select count(*) from identifiers)::int as identifiers,
            (select count(*) from identity_merges where undone_by is null)::int as merges,
            (select count(*) from identity_conflicts)::int as conflicts`,
  );
  const graph = rows[0] ?? { persons: 0, identifiers: 0, merges: 0, conflicts: 0 };
  return { merge, ...graph };
}

function describeIdentities(report: IdentityReport): string {
  return [
    `identity: ${report.merge.events} new events resolved;` +
      ` the graph holds ${report.persons} persons with ${report.identifiers} identifiers` +
      ` (${report.merges} merges, ${report.conflicts} conflicts)`,
    report.conflicts > 0
      ? '  see one: npx pops identity show user_id:1   (or device_id:family-tablet-0 for a conflict)'
      : '  see one: npx pops identity show user_id:1',
  ].join('\n');
}

async function ensureData(
  rt: Runtime,
  dataDir: string | undefined,
  json: boolean,
): Promise<{ source: string; dir: string; imported: boolean }> {
  let dir = dataDir ? path.resolve(dataDir) : path.join(stateDir(rt.config), 'sim');
  const source = dataDir ? path.basename(dir) : SIMULATED_SOURCE;
  if (dataDir && !fs.existsSync(path.join(dir, 'ratings.csv'))) {
    throw new UsageError(`--data ${JSON.stringify(dataDir)}: no ratings.csv in ${dir}`);
  }
  const existing = await rt.pool.query<{ n: number }>(
    `select count(*)::int as n from events where source = $1 and event = 'rated'`,
    [source],
  );
  if ((existing.rows[0]?.n ?? 0) > 0) {
    rt.log.info({ source, events: existing.rows[0]?.n }, 'data already imported, reusing it');
    return { source, dir, imported: false };
  }
  if (!dataDir && !fs.existsSync(path.join(dir, 'ratings.csv'))) {
    const simulated = await simulateMovieLens(dir, { seed: 7 });
    rt.log.info({ dir, ...simulated }, 'simulated MovieLens-format data');
  }
  dir = path.resolve(dir);
  const bar = progressBar('importing', !json, ' bytes');
  try {
    const result = await importMovieLens(rt.pool, dir, {
      source,
      identityRules: configuredIdentityRules(),
      onProgress: (p) => bar.update(p.bytes, p.totalBytes, { detail: `${p.rows} rows` }),
    });
    rt.log.info(
      {
        source,
        ratings: result.ratings.inserted,
        dropped: result.ratings.dropped,
        seconds: result.seconds,
      },
      'data imported',
    );
  } finally {
    bar.stop();
  }
  return { source, dir, imported: true };
}

/** Runs the demo; see the module comment. */
export async function demoCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(demoArgs, options);
  if (args.canary) {
    const { canaryDemo } = await import('./demo-canary.js');
    return canaryDemo(args);
  }
  if (args.campaign) {
    const { campaignDemo } = await import('./campaign-demo.js');
    return campaignDemo(args);
  }
  const started = Date.now();
  const rt = await openRuntime();
  try {
    const workers = await runWorkers(rt);
    try {
      const data = await ensureData(rt, args.data, args.json);
      const model = `${data.source.toLowerCase().replace(/[^a-z0-9._-]/g, '-')}-ranker`;
      await declareModel(rt.pool, {
        name: model,
        source: data.source,
        createdBy: rt.config.POPS_ACTOR,
      });
      // The model trains on the example features (registering them again changes nothing).
      await registerFeatures(rt.pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), rt.config.POPS_ACTOR);
      const request = retrainInputSchema.parse({
        model,
        reason: 'pops demo',
        requestedBy: rt.config.POPS_ACTOR,
        ...(args.epochs !== undefined ? { training: { epochs: args.epochs } } : {}),
      });
      const identity = await resolveIdentities(rt, args.data === undefined);
      const run = await startRetrain(rt.client, rt.prefix, request);
      // The demo's user approves up front: a blessed candidate becomes production.
      await approveUpFront(rt, run.workflowId, run.runId);
      const result = await watchRetrain(rt, run, args.json, request.training.epochs);
      const wallSeconds = (Date.now() - started) / 1000;
      const ui = rt.services.temporalUiUrl
        ? `${rt.services.temporalUiUrl}/namespaces/${rt.config.TEMPORAL_NAMESPACE}` +
          `/workflows/${encodeURIComponent(run.workflowId)}`
        : undefined;
      const report = {
        workflowId: run.workflowId,
        runId: run.runId,
        source: data.source,
        dataImported: data.imported,
        wallSeconds,
        temporalUi: ui,
        identity,
        result,
      };
      const aucGain = result.metrics.auc - result.baseline.auc;
      print(args.json, report, () =>
        [
          `workflow ${run.workflowId} (run ${run.runId})`,
          describeResult(result),
          result.metrics.auc > result.baseline.auc
            ? `  the model beats the popularity baseline by ${aucGain.toFixed(4)} AUC`
            : '  the model does NOT beat the popularity baseline on AUC',
          `features: ${result.trainingSet.features.length} from the registry, read point-in-time` +
            ` (${result.trainingSet.features.join(', ')})`,
          '  see one: npx pops features show item_popularity; npx pops features list',
          `data: source ${data.source} (${data.imported ? 'imported now' : 'reused from before'})`,
          describeIdentities(identity),
          `wall time ${wallSeconds.toFixed(1)} s`,
          ui
            ? `Temporal UI: ${ui} (while pops runs: npm start)`
            : `Temporal: ${rt.services.temporalAddress}`,
        ].join('\n'),
      );
    } finally {
      await workers.stop();
    }
  } finally {
    await rt.close();
  }
}
