/**
 * `npm run demo -- --canary [--data <MovieLens dir>]`: both outcomes of a canary on replayed real
 * traffic, on the embedded defaults with in-process workers and an in-process API on a loopback
 * port. The ratings are split at a holdout instant (the 35% quantile of their timestamps, 2004-11
 * on MovieLens small): those before it are imported under their own source (`<source>-before`),
 * the ones after it are the replayed traffic (domain/decide/replay.ts). It trains and promotes a
 * stable version (or reuses the production version of an earlier run), registers a good candidate
 * (a new retraining of the stable's recipe, not promoted: on the small simulated data another seed
 * can give a much worse model, which the canary then rightly rolls back) and a broken one
 * (production's artifact with its
 * weights shuffled, domain/rollout/canary.ts), creates the surface `canary-demo`, then runs
 * rolloutModel twice with short bakes while the held-out persons ask for 10 items at 40 req/s and
 * click what they rated >= 4: the broken candidate must be rolled back by a guardrail, the good
 * one promoted. Without --data it uses the simulated MovieLens-format data of `npm run demo`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { buildApi } from '../api/server.js';
import { createToken, revokeToken } from '../domain/privacy/tokens.js';
import { type ReplayedRollout, rolloutUnderReplay } from '../client/canary.js';
import { startRetrain } from '../client/retrain.js';
import { stateDir } from '../common/config.js';
import { heldOutFromCsv } from '../domain/decide/replay.js';
import { createSurface, getSurface } from '../domain/decide/surfaces.js';
import { registerFeatures } from '../domain/features/registry.js';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { declareModel, getAliases, listVersions } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { registerShuffledVersion } from '../domain/rollout/canary.js';
import { rolloutInputSchema } from '../domain/rollout/config.js';
import type { GuardrailResult } from '../domain/rollout/judge.js';
import { simulateMovieLens } from '../domain/simulator.js';
import { importMovieLens } from '../ingest/movielens.js';
import { print, UsageError } from './output.js';
import { approveUpFront, watchRetrain } from './retrain.js';
import { configuredIdentityRules, openRuntime, type Runtime, runWorkers } from './runtime.js';

const SURFACE = 'canary-demo';
const RATE = 40;

/** The ratings' timestamps (seconds), sorted. */
function timestamps(lines: string[]): number[] {
  return lines.map((l) => Number(l.split(',')[3])).sort((a, b) => a - b);
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0;

/** Splits the data at the holdout; writes (once) the ratings before it under the state dir. */
async function splitData(rt: Runtime, dataDir: string | undefined) {
  let dir = dataDir ? path.resolve(dataDir) : path.join(stateDir(rt.config), 'sim');
  if (!fs.existsSync(path.join(dir, 'ratings.csv'))) {
    if (dataDir) {
      throw new UsageError(`--data ${JSON.stringify(dataDir)}: no ratings.csv in ${dir}`);
    }
    await simulateMovieLens(dir, { seed: 7 });
  }
  dir = path.resolve(dir);
  const base = dataDir ? path.basename(dir) : 'pops-sim';
  const source = `${base.toLowerCase().replace(/[^a-z0-9._-]/g, '-')}-before`;
  const lines = fs.readFileSync(path.join(dir, 'ratings.csv'), 'utf8').trimEnd().split('\n');
  const sorted = timestamps(lines.slice(1));
  const holdout = new Date(quantile(sorted, 0.35) * 1000);
  const trainUntil = new Date(quantile(sorted, 0.3) * 1000);
  const before = path.join(stateDir(rt.config), 'canary', source);
  if (!fs.existsSync(path.join(before, 'ratings.csv'))) {
    fs.mkdirSync(before, { recursive: true });
    const cutoff = holdout.getTime() / 1000;
    const kept = lines.slice(1).filter((l) => Number(l.split(',')[3]) < cutoff);
    fs.writeFileSync(path.join(before, 'ratings.csv'), `${[lines[0], ...kept].join('\n')}\n`);
    if (fs.existsSync(path.join(dir, 'movies.csv'))) {
      fs.copyFileSync(path.join(dir, 'movies.csv'), path.join(before, 'movies.csv'));
    }
  }
  const { rows } = await rt.pool.query<{ n: number }>(
    `select count(*)::int as n from events where source = $1 and event = 'rated'`,
    [source],
  );
  if ((rows[0]?.n ?? 0) === 0) {
    await importMovieLens(rt.pool, before, { source, identityRules: configuredIdentityRules() });
  }
  return { dir, source, holdout, trainUntil };
}

/** Runs a retraining to its end; `promote` approves it up front. */
async function retrain(
  rt: Runtime,
  model: string,
  options: { seed: number; promote: boolean; trainUntil: Date; holdout: Date; json: boolean },
) {
  const request = retrainInputSchema.parse({
    model,
    reason: options.promote ? 'canary demo: the stable version' : 'canary demo: a good candidate',
    requestedBy: rt.config.POPS_ACTOR,
    trainUntil: options.trainUntil.toISOString(),
    validateUntil: options.holdout.toISOString(),
    training: { epochs: 3, seed: options.seed },
    promotion: options.promote ? 'approval' : 'none',
  });
  const run = await startRetrain(rt.client, rt.prefix, request);
  if (options.promote) await approveUpFront(rt, run.workflowId, run.runId);
  return watchRetrain(rt, run, options.json, request.training.epochs);
}

const pct = (x: number | undefined) => (x === undefined ? '?' : x.toFixed(3));

function describeGuardrail(g: GuardrailResult): string {
  const i = g.interval;
  return (
    `${g.metric} (${g.kind}): stable ${pct(g.stable?.estimate)} over ${g.stable?.persons ?? 0}` +
    ` persons, canary ${pct(g.canary.estimate)} over ${g.canary.persons} persons;` +
    (i
      ? ` canary - stable ${pct(i.estimate)}, confidence sequence [${pct(i.lower)}, ${pct(i.upper)}]`
      : '') +
    ` (alpha ${g.alpha.toPrecision(2)}, margin ${g.margin})${g.breach ? ' BREACH' : ''}`
  );
}

async function describeRollout(rt: Runtime, label: string, run: ReplayedRollout) {
  const { rows } = await rt.pool.query<{
    decision: string;
    step_percent: number;
    reason: string;
    guardrails: GuardrailResult[];
    rollback_latency_ms: number | null;
  }>(
    `select d.decision, d.step_percent, d.reason, d.guardrails, r.rollback_latency_ms
       from rollout_decisions d join rollouts r using (rollout_key)
      where r.surface = $1 and r.version = $2 and r.state <> 'running'
      order by r.started_at desc, d.id`,
    [SURFACE, run.result.version],
  );
  const decisive =
    rows.find((d) => d.decision === 'rollback') ??
    rows.filter((d) => d.decision === 'pass' && d.step_percent < 100).at(-1);
  const o = run.result.outcome;
  const lines = [
    `${label}: v${run.result.version} against stable v${run.result.stableVersion}: ` +
      (o.outcome === 'promoted'
        ? `PROMOTED (production v${o.from ?? '-'} -> v${o.to}) after ${run.result.ticks} ticks`
        : `ROLLED BACK by ${o.trigger} after ${run.result.ticks} ticks:` +
          ` ${o.reason}; routing switched ${o.latencyMs.toFixed(0)} ms after the breaching tick`),
  ];
  if (decisive) {
    lines.push(
      `  decisive tick at ${decisive.step_percent}% (${decisive.decision}): ${decisive.reason}`,
    );
    for (const g of decisive.guardrails) lines.push(`    ${describeGuardrail(g)}`);
  }
  const arms = Object.entries(run.replay.arms)
    .map(([arm, c]) => `${arm} ${c.decisions} decisions, CTR ${c.ctr.toFixed(3)}`)
    .join('; ');
  lines.push(
    `  replayed traffic: ${run.replay.requests} requests (${run.replay.rate.toFixed(0)}/s),` +
      ` ${run.replay.errors} errors; ${arms} (clicks per decision)`,
  );
  return lines.join('\n');
}

/** `pops demo --canary`; see the module comment. */
export async function canaryDemo(args: { data?: string | undefined; json: boolean }) {
  const started = Date.now();
  const rt = await openRuntime();
  try {
    const workers = await runWorkers(rt);
    const api = buildApi({
      pool: rt.pool,
      temporal: rt.client,
      queuePrefix: rt.prefix,
      log: rt.log,
      actor: rt.config.POPS_ACTOR,
      trainBackend: rt.config.POPS_TRAIN_BACKEND,
    });
    // The replayed traffic calls the in-process API with a token that lives as long as the demo.
    // Token names are never reused (the audit names the token), so each demo's has its own.
    const caller = await createToken(rt.pool, {
      role: 'ingest',
      name: `canary-demo-${Date.now()}`,
      createdBy: rt.config.POPS_ACTOR,
    });
    try {
      const base = await api.listen({ host: '127.0.0.1', port: 0 });
      const data = await splitData(rt, args.data);
      const model = `${data.source}-ranker`;
      await declareModel(rt.pool, {
        name: model,
        source: data.source,
        createdBy: rt.config.POPS_ACTOR,
      });
      await registerFeatures(rt.pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), rt.config.POPS_ACTOR);
      const common = { trainUntil: data.trainUntil, holdout: data.holdout, json: args.json };
      let stable = (await getAliases(rt.pool, model))['production'];
      if (stable === undefined) {
        const first = await retrain(rt, model, { ...common, seed: 1, promote: true });
        if (first.promotion.outcome !== 'promoted') {
          throw new Error(`the stable version was not promoted: ${first.promotion.outcome}`);
        }
        stable = first.version;
      }
      const next = (await listVersions(rt.pool, model)).length + 1;
      const good = await retrain(rt, model, { ...common, seed: 1, promote: false });
      const broken = await registerShuffledVersion(rt.pool, {
        model,
        from: stable,
        seed: next,
        actor: rt.config.POPS_ACTOR,
      });
      const surface = await getSurface(rt.pool, SURFACE);
      if (surface && surface.model !== model) {
        throw new UsageError(`surface ${SURFACE} serves ${surface.model}, not ${model}`);
      }
      if (!surface) {
        await createSurface(rt.pool, {
          name: SURFACE,
          model,
          actor: rt.config.POPS_ACTOR,
          reason: 'canary demo',
        });
      }
      const persons = heldOutFromCsv(data.dir, data.holdout);
      const request = (version: number) =>
        rolloutInputSchema.parse({
          model,
          version,
          surface: SURFACE,
          steps: [50, 100],
          bake: ['25s', '3s'],
          analysisEvery: '1s',
          minSamplePerArm: 60,
          minOperationalSample: 30,
          guardrails: [
            { metric: 'error_rate', margin: 0.01 },
            { metric: 'ctr', margin: 0 },
          ],
          requestedBy: rt.config.POPS_ACTOR,
          reason: `canary demo: v${version}`,
        });
      const replay = (version: number, seed: number) =>
        rolloutUnderReplay({
          client: rt.client,
          prefix: rt.prefix,
          request: request(version),
          api: base,
          token: caller.token,
          persons,
          rate: RATE,
          seed,
        });
      const brokenRun = await replay(broken.version, 1);
      const goodRun = await replay(good.version, 2);
      const wallSeconds = (Date.now() - started) / 1000;
      const report = {
        model,
        surface: SURFACE,
        holdoutFrom: data.holdout.toISOString(),
        persons: persons.length,
        broken: brokenRun,
        good: goodRun,
        production: (await getAliases(rt.pool, model))['production'],
        wallSeconds,
      };
      const human = [
        `model ${model} on surface ${SURFACE}: stable v${stable}, good candidate v${good.version}` +
          ` (a new retraining, same recipe), broken candidate v${broken.version}` +
          ` (v${stable} with shuffled weights)`,
        `traffic: ${persons.length} held-out persons (ratings from ${data.holdout.toISOString()}),` +
          ` k=10 at ${RATE} req/s; a person clicks what they rated >= 4`,
        await describeRollout(rt, 'broken candidate', brokenRun),
        await describeRollout(rt, 'good candidate', goodRun),
        `production is now v${report.production ?? '?'}`,
        `  every tick with its statistics: npx pops rollout status ${SURFACE}; the audit: npx pops audit verify`,
        `wall time ${wallSeconds.toFixed(1)} s`,
      ].join('\n');
      print(args.json, report, () => human);
    } finally {
      await revokeToken(rt.pool, caller.id, rt.config.POPS_ACTOR);
      await api.close();
      await workers.stop();
    }
  } finally {
    await rt.close();
  }
}
