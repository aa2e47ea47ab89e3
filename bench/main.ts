/**
 * `npm run bench [-- retrain|identity|features ...] [--quick] [--links N] [--events N]
 * (with no name: retrain and identity; `features` runs only when named)
 * [--labels N] [--explain]`: with no name, every benchmark.
 * - `retrain`: import rate on MovieLens latest-small, training throughput per backend, end-to-end
 *   retrain wall time, and POST /v1/retrains → completion latency. Runs on the embedded defaults
 *   (or DATABASE_URL / TEMPORAL_ADDRESS) in a fresh database and its own task queues.
 * - `identity`: identity resolution of 1M generated links, a 10k-link increment and the networkx
 *   ratio (bench/identity.ts); `--quick` makes it 100k links, `--links N` any size.
 * - `drift`: drift statistics over 20 features x 1M rows per window against scipy (bench/drift.ts);
 *   `--quick` makes it 100k rows, `--rows N` any size.
 * - `decide`: POST /v1/decide with 100 candidates at 2,000 req/s for 20 s (autocannon, the API in
 *   its own process) on a model trained on MovieLens latest-small, routed 90/10 stable/canary
 *   (bench/decide.ts); `--quick` makes it 10 s, `--rate N` / `--seconds N` any.
 * - `playbook`: rollback-model from start to the previous version serving, `--runs N` times
 *   (bench/playbook.ts).
 * - `campaigns`: one campaign run of 10,000 persons to a local SMTP sink with pooled connections,
 *   its worker process SIGKILLed a third of the way, exactly-once checked on the same run
 *   (bench/campaigns.ts); `--persons N` any size.
 * - `privacy`: an export and a deletion of one person of 40,000 events among 2,000 others of 81,
 *   against a plain delete of the same events (bench/privacy.ts); `--events N` / `--persons N` any
 *   size, `--before` also times the per-row predicate deletions used before.
 * - `features`: feature backfill of 10M generated events against a hand-written floor, a
 *   point-in-time set of 1M labels, and online lookups at 1000/s (bench/features.ts); `--quick`
 *   makes it 500k events and 100k labels, `--events N` / `--labels N` any size, `--explain` adds
 *   EXPLAIN ANALYZE of one day's backfill statements.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildApi } from '../api/server.js';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { openRuntime, type Runtime, runWorkers } from '../cli/runtime.js';
import { createPool } from '../common/db.js';
import { declareModel } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { importMovieLens } from '../ingest/movielens.js';
import { benchFeatures, FEATURE_DEFAULTS, type FeatureBenchOptions } from './features.js';
import { benchDecide, DECIDE_DEFAULTS } from './decide.js';
import { benchDrift } from './drift.js';
import { benchIdentity, IDENTITY_DEFAULTS } from './identity.js';
import { benchPlaybook, PLAYBOOK_DEFAULTS } from './playbook.js';
import { benchCampaigns, CAMPAIGN_DEFAULTS } from './campaigns.js';
import { freshDatabase } from './database.js';
import { benchPrivacy, PRIVACY_DEFAULTS } from './privacy.js';

const DATA =
  process.env['POPS_BENCH_DATA'] ??
  fileURLToPath(new URL('../../shared/data/movielens-small', import.meta.url));

const BENCHMARKS = [
  'retrain',
  'identity',
  'features',
  'drift',
  'decide',
  'playbook',
  'campaigns',
  'privacy',
] as const;
type Benchmark = (typeof BENCHMARKS)[number];

function line(name: string, value: string, goal = '') {
  process.stdout.write(`${name.padEnd(44)} ${value.padStart(16)}  ${goal}\n`);
}

/**
 * Training throughput of one backend, measured in a fresh process (a process keeps one backend).
 */
function throughput(backend: string): string {
  const script = fileURLToPath(new URL('./train-throughput.ts', import.meta.url));
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', script, backend], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const match = /(\d+) examples\/s/.exec(out.toString());
    return match?.[1] ? Number(match[1]).toLocaleString('en') : 'unavailable';
  } catch {
    return 'unavailable';
  }
}

async function benchRetrain() {
  if (!fs.existsSync(path.join(DATA, 'ratings.csv'))) {
    throw new Error(`no ratings.csv in ${DATA} (set POPS_BENCH_DATA)`);
  }
  const rt = await openRuntime();
  const db = await freshDatabase(rt, 'retrain');
  const pool = createPool(db.url);
  const bench: Runtime = { ...rt, pool, prefix: `bench-${randomBytes(3).toString('hex')}` };
  const workers = await runWorkers(bench);
  const api = buildApi({
    pool,
    temporal: rt.client,
    queuePrefix: bench.prefix,
    log: rt.log.child({ level: 'warn' }),
    actor: 'bench',
  });
  const base = await api.listen({ host: '127.0.0.1', port: 0 });
  try {
    process.stdout.write(`pops bench on ${DATA}\n`);
    const imported = await importMovieLens(pool, DATA, { source: 'bench' });
    line(
      'import (rows/s, ratings + movies)',
      Math.round((imported.ratings.read + imported.movies.read) / imported.seconds).toLocaleString(
        'en',
      ),
      'goal >= 200,000',
    );
    const again = await importMovieLens(pool, DATA, { source: 'bench' });
    line(
      're-import of the same files (rows/s, 0 new)',
      Math.round(again.ratings.read / again.seconds).toLocaleString('en'),
    );

    for (const backend of ['tensorflow', 'wasm', 'cpu']) {
      line(
        `training throughput, ${backend} (examples/s)`,
        throughput(backend),
        '80k synthetic rows, MLP [64, 32], batch 512',
      );
    }

    await declareModel(pool, { name: 'bench-ranker', source: 'bench', createdBy: 'bench' });
    const input = retrainInputSchema.parse({
      model: 'bench-ranker',
      reason: 'bench',
      requestedBy: 'bench',
    });
    const started = performance.now();
    const run = await startRetrain(rt.client, bench.prefix, input);
    const result = await waitForRetrain(rt.client, run.workflowId, run.runId);
    const wall = (performance.now() - started) / 1000;
    line('retrain, full MovieLens latest-small (s)', wall.toFixed(1), 'goal < 60 s');
    line(
      `  trained on backend ${result.backend} (examples/s)`,
      Math.round(result.examplesPerSecond).toLocaleString('en'),
    );
    line(
      '  AUC model / popularity',
      `${result.metrics.auc.toFixed(4)} / ${result.baseline.auc.toFixed(4)}`,
    );

    const posted = performance.now();
    const response = await fetch(`${base}/v1/retrains`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'bench-ranker', reason: 'bench via api' }),
    });
    const body = (await response.json()) as { workflowId: string; runId: string };
    await waitForRetrain(rt.client, body.workflowId, body.runId);
    line(
      'POST /v1/retrains -> workflow completed (s)',
      ((performance.now() - posted) / 1000).toFixed(1),
    );
  } finally {
    await api.close();
    await workers.stop();
    await pool.end();
    await db.drop();
    await rt.close();
  }
}

/** A positive whole number given as `--name`, or the fallback. */
function count(name: string, value: string | undefined, fallback: number): number {
  const n = Number(value ?? fallback);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`bench: --${name} must be a positive whole number; got ${value}`);
  }
  return n;
}

/** The benchmarks named on the command line (all when none is), and their sizes. */
function parseCommandLine(): {
  selected: Benchmark[];
  links: number;
  features: FeatureBenchOptions;
  rows: number;
  decide: { rate: number; seconds: number };
  runs: number;
  persons: number;
  privacy: { events: number; persons: number; before: boolean };
} {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      quick: { type: 'boolean', default: false },
      links: { type: 'string' },
      events: { type: 'string' },
      labels: { type: 'string' },
      explain: { type: 'boolean', default: false },
      rows: { type: 'string' },
      rate: { type: 'string' },
      seconds: { type: 'string' },
      runs: { type: 'string' },
      persons: { type: 'string' },
      before: { type: 'boolean', default: false },
    },
  });
  const selected = positionals.map((name) => {
    const found = BENCHMARKS.find((b) => b === name);
    if (!found) throw new Error(`bench: unknown benchmark "${name}" (${BENCHMARKS.join(', ')})`);
    return found;
  });
  const links = count('links', values.links, values.quick ? 100_000 : IDENTITY_DEFAULTS.links);
  const quick = values.quick ? { events: 500_000, labels: 100_000, seconds: 10 } : {};
  const sized = { ...FEATURE_DEFAULTS, ...quick, explain: values.explain };
  const features = {
    ...sized,
    events: count('events', values.events, sized.events),
    labels: count('labels', values.labels, sized.labels),
  };
  // The 10M-event feature benchmark takes hours on 2 cores: it runs only when named.
  const byDefault = BENCHMARKS.filter((b) => b !== 'features');
  const rows = count('rows', values.rows, values.quick ? 100_000 : 1_000_000);
  const decide = {
    rate: count('rate', values.rate, DECIDE_DEFAULTS.rate),
    seconds: count('seconds', values.seconds, values.quick ? 10 : DECIDE_DEFAULTS.seconds),
  };
  const runs = count('runs', values.runs, PLAYBOOK_DEFAULTS.runs);
  const persons = count('persons', values.persons, CAMPAIGN_DEFAULTS.persons);
  const privacy = {
    events: count('events', values.events, PRIVACY_DEFAULTS.events),
    persons: count('persons', values.persons, PRIVACY_DEFAULTS.persons),
    before: values.before,
  };
  return {
    selected: selected.length > 0 ? selected : byDefault,
    links,
    features,
    rows,
    decide,
    runs,
    persons,
    privacy,
  };
}

async function main() {
  const { selected, links, features, rows, decide, runs, persons, privacy } = parseCommandLine();
  if (selected.includes('retrain')) await benchRetrain();
  if (selected.includes('identity')) {
    process.stdout.write(`pops identity bench, ${links.toLocaleString('en')} links\n`);
    await benchIdentity({ ...IDENTITY_DEFAULTS, links }, line);
  }
  if (selected.includes('features')) {
    process.stdout.write(`pops features bench, ${features.events.toLocaleString('en')} events\n`);
    await benchFeatures(features, line);
  }
  if (selected.includes('drift')) {
    process.stdout.write(`pops drift bench, 20 features x ${rows.toLocaleString('en')} rows\n`);
    await benchDrift(rows, line);
  }
  if (selected.includes('decide')) {
    process.stdout.write(
      `pops decide bench, ${decide.rate.toLocaleString('en')} req/s for ${decide.seconds} s\n`,
    );
    await benchDecide({ ...decide, candidates: DECIDE_DEFAULTS.candidates, data: DATA }, line);
  }
  if (selected.includes('playbook')) {
    process.stdout.write(`pops playbook bench, rollback-model x ${runs}\n`);
    await benchPlaybook({ runs, data: DATA }, line);
  }
  if (selected.includes('campaigns')) {
    process.stdout.write(`pops campaigns bench, ${persons.toLocaleString('en')} persons\n`);
    await benchCampaigns({ persons }, line);
  }
  if (selected.includes('privacy')) {
    process.stdout.write(
      `pops privacy bench, one person of ${privacy.events.toLocaleString('en')} events among ` +
        `${privacy.persons.toLocaleString('en')} others\n`,
    );
    await benchPrivacy(privacy, line);
  }
}

await main();
