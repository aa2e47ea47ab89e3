/**
 * The feature-store benchmark (issue 4's three goals), on a private embedded PostgreSQL and
 * Temporal dev server (or DATABASE_URL / TEMPORAL_ADDRESS, in a fresh database):
 *
 * 1. Backfill: the real backfillFeatures workflow, with its defaults (daily partitions,
 *    parallelism 4), over the 90 days of generated `rated` events (bench/feature-generator.ts) for
 *    20 person features of 4 windows each; against the floor, one hand-written statement writing
 *    the same feature_values rows, whose rows are then compared with the store's.
 * 2. Point-in-time: buildPointInTimeSet of label rows sampled from the events × the 20 features.
 * 3. Online lookups: `GET /v1/features/person/<person id>` on loopback at a fixed rate, with
 *    autocannon, against the API served by a process of its own (as `pops serve` would).
 *
 * Prints the table as it goes, then a markdown summary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Client } from '@temporalio/client';
import autocannon from 'autocannon';
import pg from 'pg';
import { backfillStatus, startBackfill } from '../client/backfill.js';
import { loadConfig } from '../common/config.js';
import {
  createPool,
  ensureDatabase,
  type Pool,
  type PoolClient,
  withDatabase,
  withTransaction,
} from '../common/db.js';
import { type Logger, logger } from '../common/logger.js';
import { migrate } from '../common/migrate.js';
import { connectClient, connectWorker, installTemporalLogging } from '../common/temporal.js';
import type { BackfillResult } from '../domain/features/backfill.js';
import { type FeatureDefinition, featureDefinitionSchema } from '../domain/features/definition.js';
import {
  addDays,
  snapshotTime,
  writeSnapshots,
  writeTiles,
} from '../domain/features/materialize.js';
import { lookupEntity, publishOnline } from '../domain/features/online.js';
import { buildPointInTimeSet, type PointInTimeFeature } from '../domain/features/point-in-time.js';
import { registerFeatures } from '../domain/features/registry.js';
import { createToken, revokeToken } from '../domain/privacy/tokens.js';
import { startEmbeddedPostgres } from '../runtime/postgres.js';
import { startEmbeddedTemporal } from '../runtime/temporal-server.js';
import { createWorkers, runWorkers } from '../workers/create.js';
import {
  BENCH_FEATURES,
  compareWithFloor,
  type FeatureWorld,
  floorSql,
  insertEventSlice,
  LABELS_SQL,
  resolvePersons,
  sampleLabels,
  WINDOWS,
} from './feature-generator.js';
import type { Row } from './identity.js';

/** What to generate and how hard to look up. */
export interface FeatureBenchOptions {
  events: number;
  /** People in the events; the default is one per 200 events. */
  persons?: number;
  labels: number;
  /** Lookups per second, and for how long. */
  rate: number;
  seconds: number;
  seed: number;
  /** Also print EXPLAIN ANALYZE of one day's tiles and snapshots of two features. */
  explain: boolean;
}

/** 10M events (50k persons), 1M label rows, 1000 lookups/s for 20 s. */
export const FEATURE_DEFAULTS: FeatureBenchOptions = {
  events: 10_000_000,
  labels: 1_000_000,
  rate: 1000,
  seconds: 20,
  seed: 11,
  explain: false,
};

const START = '2024-01-01';
const DAYS = 90;
const FLOOR_TABLE = 'bench_floor_values';

const fmt = (n: number) => Math.round(n).toLocaleString('en');
const secs = (s: number) => s.toFixed(1);
const progress = (message: string) =>
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

interface Services {
  databaseUrl: string;
  temporalAddress: string;
  stop(): Promise<void>;
}

/** The figures the summary is made of. */
interface Figures {
  world: FeatureWorld;
  tileDays: number;
  backfill: {
    seconds: number;
    tilesSeconds: number;
    result: BackfillResult;
    waits: Map<string, number>;
  };
  floor: { seconds: number; rows: number; indexSeconds: number };
  compared: Awaited<ReturnType<typeof compareWithFloor>> & { sampleOneIn: number };
  pit: { labels: number; seconds: number };
  lookup: LookupFigures;
  load: { start: number; end: number };
}

/** Runs the benchmark and prints its table and the markdown summary. */
export async function benchFeatures(options: FeatureBenchOptions, row: Row): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-features-'));
  fs.chmodSync(dir, 0o755); // the embedded server runs as the postgres user when we are root
  const log = logger(process.env['LOG_LEVEL'] ?? 'warn');
  const services = await openServices(dir, log);
  const name = `pops_bench_features_${randomBytes(3).toString('hex')}`;
  const url = withDatabase(services.databaseUrl, name);
  try {
    await ensureDatabase(url);
    await migrate(url);
    const figures = await runBench(options, row, url, services.temporalAddress, log);
    printSummary(figures);
  } finally {
    await dropDatabase(url, name).catch(() => undefined);
    await services.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function runBench(
  options: FeatureBenchOptions,
  row: Row,
  url: string,
  temporalAddress: string,
  log: Logger,
): Promise<Figures> {
  const load = os.loadavg()[0] ?? 0;
  const world: FeatureWorld = {
    events: options.events,
    persons: options.persons ?? Math.max(1, Math.round(options.events / 200)),
    items: 5000,
    start: START,
    days: DAYS,
    seed: options.seed,
  };
  const from = START;
  const to = addDays(START, DAYS - 1);
  const pool = createPool(url);
  const profile = new StatementTimes(pool);
  const config = loadConfig();
  const client = await connectClient(config, {
    address: temporalAddress,
    namespace: config.TEMPORAL_NAMESPACE,
  });
  try {
    await generate(pool, world, row);
    const definitions = BENCH_FEATURES.map((f) => featureDefinitionSchema.parse(f));
    await registerFeatures(pool, definitions, 'bench');

    const floor = await runFloor(pool, from, to);
    row(
      '  floor: one hand-written statement (s)',
      secs(floor.seconds),
      `${fmt(floor.rows)} value rows into a table like feature_values without its indexes;` +
        ` building its two indexes after: ${secs(floor.indexSeconds)} s more`,
    );
    await pool.query('checkpoint').catch(() => undefined);

    profile.start();
    const backfill = await runBackfill(pool, client, temporalAddress, log, definitions, from, to);
    const lines = profile.stop();
    const ratio = backfill.seconds / floor.seconds;
    row(
      `  backfill, ${definitions.length} features x ${WINDOWS.length} windows (s)`,
      secs(backfill.seconds),
      `tiles ${secs(backfill.tilesSeconds)} s, snapshots ${secs(backfill.seconds - backfill.tilesSeconds)} s;` +
        ` ${fmt(backfill.result.tileRows)} tile rows, ${fmt(backfill.result.valueRows)} value rows`,
    );
    row(
      '  backfill throughput (events/s)',
      fmt(world.events / backfill.seconds),
      `floor ${fmt(world.events / floor.seconds)} events/s`,
    );
    row('  backfill / floor', `${ratio.toFixed(2)}x`, 'goal <= 1.5x');
    printStatementTimes(lines, backfill.seconds);
    printWaits(backfill.waits);

    const sampleOneIn = world.events <= 2_000_000 ? 1 : 20;
    const compared = await compareWithFloor(pool, FLOOR_TABLE, sampleOneIn);
    const same = compared.onlyFloor + compared.onlyStore + compared.differ === 0;
    row(
      `  floor rows = feature_values (${sampleOneIn === 1 ? 'every row' : `1 person in ${sampleOneIn}`})`,
      same ? 'equal' : 'DIFFERENT',
      `${fmt(compared.rows)} rows: ${fmt(compared.onlyStore)} only in the store, ${fmt(compared.onlyFloor)}` +
        ` only in the floor, ${fmt(compared.differ)} differ (${fmt(compared.inexact)} not bit-equal)`,
    );
    if (!same) process.exitCode = 1;
    if (options.explain) await explainOneDay(pool, definitions, addDays(from, 45));
    await pool.query(`drop table ${FLOOR_TABLE}`);
    await settle(pool);

    const pit = await runPointInTime(pool, definitions, options, row);
    await settle(pool);
    const lookup = await runLookups(url, temporalAddress, world.persons, options, row);
    const end = os.loadavg()[0] ?? 0;
    row(
      '  machine: cores, load 1-min start / end',
      `${os.cpus().length}, ${load.toFixed(1)} / ${end.toFixed(1)}`,
      `${Math.round(os.totalmem() / 2 ** 30)} GiB memory`,
    );
    return {
      world,
      tileDays: DAYS + 89,
      backfill,
      floor,
      compared: { ...compared, sampleOneIn },
      pit,
      lookup,
      load: { start: load, end },
    };
  } finally {
    await client.connection.close();
    await pool.end();
  }
}

/** Inserts the events in slices of 1M (progress on stderr), resolves their persons, settles. */
async function generate(pool: Pool, world: FeatureWorld, row: Row): Promise<void> {
  const started = performance.now();
  const slice = 1_000_000;
  for (let first = 1; first <= world.events; first += slice) {
    const last = Math.min(world.events, first + slice - 1);
    await insertEventSlice(pool, world, first, last);
    progress(`features bench: ${fmt(last)} events inserted`);
  }
  await resolvePersons(pool);
  await settle(pool);
  const { rows } = await pool.query<{ active: number; persons: number }>(
    `select count(*)::int as active, count(distinct person_id)::int as persons
       from (select distinct person_id, (ts at time zone 'UTC')::date from events) d`,
  );
  row(
    `features: generated ${fmt(world.events)} rated events`,
    `${secs((performance.now() - started) / 1000)} s`,
    `${fmt(rows[0]?.persons ?? 0)} persons (1 per ${fmt(world.events / world.persons)} events),` +
      ` ${fmt(rows[0]?.active ?? 0)} person-days over ${world.days} days, seed ${world.seed};` +
      ' SQL insert-select, persons resolved, not timed as part of any goal',
  );
}

/** The floor statement in its own transaction (more work_mem, as a DBA would give it). */
async function runFloor(pool: Pool, from: string, to: string) {
  await pool.query(`drop table if exists ${FLOOR_TABLE}`);
  await pool.query(`create table ${FLOOR_TABLE} (like feature_values including defaults)`);
  progress('features bench: floor statement running');
  const started = performance.now();
  const rows = await withTransaction(pool, async (client) => {
    await client.query(`set local work_mem = '1GB'`);
    const result = await client.query(floorSql(FLOOR_TABLE, from, to));
    return result.rowCount ?? 0;
  });
  const seconds = (performance.now() - started) / 1000;
  // The store's two indexes on feature_values, built once the rows are in (what a bulk load does).
  const indexed = performance.now();
  await withTransaction(pool, async (client) => {
    await client.query(`set local maintenance_work_mem = '1GB'`);
    await client.query(`alter table ${FLOOR_TABLE} add primary key (name, version, ts, entity_id)`);
    await client.query(`create index on ${FLOOR_TABLE} (name, version, entity_id, ts)`);
  });
  return { seconds, rows, indexSeconds: (performance.now() - indexed) / 1000 };
}

/**
 * The backfill as an operator starts it (startBackfill, the workflow's defaults), on workers of
 * this process; timed from the start to the result. The tiles phase's end is seen by polling.
 */
async function runBackfill(
  pool: Pool,
  client: Client,
  temporalAddress: string,
  log: Logger,
  definitions: FeatureDefinition[],
  from: string,
  to: string,
): Promise<Figures['backfill']> {
  const config = loadConfig();
  installTemporalLogging(log);
  const connection = await connectWorker(config, {
    address: temporalAddress,
    namespace: config.TEMPORAL_NAMESPACE,
  });
  const prefix = `bench-features-${randomBytes(3).toString('hex')}`;
  const workers = runWorkers(
    await createWorkers({
      connection,
      namespace: config.TEMPORAL_NAMESPACE,
      prefix,
      queues: ['orchestration'],
      pool,
      log,
      trainBackend: 'cpu',
      client,
    }),
    connection,
  );
  const waits = sampleWaits(pool);
  try {
    progress('features bench: backfill started');
    const started = performance.now();
    const run = await startBackfill(client, pool, prefix, {
      features: definitions.map((f) => `${f.name}@${f.version}`),
      from,
      to,
      requestedBy: 'bench',
      reason: 'benchmark',
    });
    const handle = client.workflow.getHandle(run.workflowId, run.runId);
    let done = false;
    const result = handle.result().finally(() => {
      done = true;
    }) as Promise<BackfillResult>;
    let tilesSeconds = 0;
    let reported = performance.now();
    while (!done) {
      await sleep(1000);
      if (done) break;
      const status = await backfillStatus(client, run.workflowId).catch(() => undefined);
      const p = status?.progress;
      if (!p) continue;
      if (tilesSeconds === 0 && p.phase === 'snapshots') {
        tilesSeconds = (performance.now() - started) / 1000;
      }
      if (performance.now() - reported > 60_000) {
        reported = performance.now();
        progress(`features bench: backfill ${p.phase}, ${p.partitionsDone}/${p.partitionsTotal}`);
      }
    }
    const value = await result;
    return {
      seconds: (performance.now() - started) / 1000,
      tilesSeconds,
      result: value,
      waits: await waits.stop(),
    };
  } finally {
    await waits.stop();
    await workers.stop();
  }
}

/** The 20 features, one window each (1d, 7d, 30d, 90d in turn), over the sampled label rows. */
async function runPointInTime(
  pool: Pool,
  definitions: FeatureDefinition[],
  options: FeatureBenchOptions,
  row: Row,
): Promise<Figures['pit']> {
  await sampleLabels(pool, options.labels, options.seed);
  await settle(pool);
  const features = definitions.map((definition, i) => ({
    definition,
    window: WINDOWS[i % WINDOWS.length] as string,
  }));
  progress('features bench: point-in-time set running');
  const timings: Array<{ sql: string; ms: number }> = [];
  const started = performance.now();
  const built = await withTransaction(pool, (client) =>
    buildPointInTimeSet(timed(client, timings), {
      setKey: 'bench',
      labels: LABELS_SQL,
      features,
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  row(
    `  point-in-time: ${fmt(built.rows)} labels x ${features.length} features (s)`,
    secs(seconds),
    'goal < 10 s; buildPointInTimeSet in one transaction, commit included',
  );
  for (const t of timings.sort((a, b) => b.ms - a.ms).slice(0, 4)) {
    process.stdout.write(`      ${(t.ms / 1000).toFixed(2).padStart(7)} s  ${t.sql}\n`);
  }
  if (options.explain) await explainPointInTime(pool, features);
  return { labels: built.rows, seconds };
}

/** The same build again, its carry-forward statement under EXPLAIN ANALYZE, rolled back. */
async function explainPointInTime(pool: Pool, features: PointInTimeFeature[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const query = async (text: string, values?: unknown[]) => {
      const table = /^\s*create temp table (pit_k_\w+)/.exec(text)?.[1];
      if (!table) return client.query(text, values);
      const { rows } = await client.query<{ 'QUERY PLAN': string }>(
        `explain (analyze, buffers) ${text}`,
        values,
      );
      process.stdout.write('\n  EXPLAIN ANALYZE, point-in-time carry-forward:\n');
      process.stdout.write(`${rows.map((r) => `    ${r['QUERY PLAN']}`).join('\n')}\n\n`);
      const counted = await client.query<{ n: number }>(`select count(*)::int as n from ${table}`);
      return { rows: [], rowCount: counted.rows[0]?.n ?? 0 };
    };
    const explaining = withQuery(client, query);
    await buildPointInTimeSet(explaining, {
      setKey: 'bench-explain',
      labels: LABELS_SQL,
      features,
    });
  } finally {
    await client.query('rollback');
    client.release();
  }
}

/** The client with its `query` replaced, to time or explain the statements of the store's code. */
function withQuery(
  client: PoolClient,
  query: (text: string, values?: unknown[]) => Promise<unknown>,
): PoolClient {
  return new Proxy(client, {
    get: (target, key): unknown =>
      key === 'query' ? query : (Reflect.get(target, key) as unknown),
  });
}

/** A client whose statements are timed into `timings` (first words of each). */
function timed(client: PoolClient, timings: Array<{ sql: string; ms: number }>): PoolClient {
  const query = async (text: string, values?: unknown[]) => {
    const t = performance.now();
    try {
      return await client.query(text, values);
    } finally {
      timings.push({
        sql: text.replace(/\s+/g, ' ').trim().slice(0, 90),
        ms: performance.now() - t,
      });
    }
  };
  return withQuery(client, query);
}

interface LookupFigures {
  rate: number;
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
  /** autocannon's own p99 (whole ms, corrected for coordinated omission). */
  correctedP99: number;
  errors: number;
  non2xx: number;
}

// The API in a process of its own, as `pops serve` runs it: the load generator's work must not
// run on the event loop whose latency it measures.
const LOOKUP_SERVER = (root: string) => `
import { Client, Connection } from '@temporalio/client';
import { buildApi } from ${JSON.stringify(pathToFileURL(path.join(root, 'api/server.ts')).href)};
import { createPool } from ${JSON.stringify(pathToFileURL(path.join(root, 'common/db.ts')).href)};
import { logger } from ${JSON.stringify(pathToFileURL(path.join(root, 'common/logger.ts')).href)};
const pool = createPool(process.env.BENCH_DATABASE_URL);
const connection = await Connection.connect({ address: process.env.BENCH_TEMPORAL_ADDRESS });
const api = buildApi({ pool, temporal: new Client({ connection }), queuePrefix: 'bench',
                       log: logger('warn'), actor: 'bench' });
const base = await api.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(base + '\\n');
process.on('SIGTERM', () => {
  void api.close().then(() => pool.end()).then(() => connection.close()).then(() => process.exit(0));
});
`;

async function startLookupServer(url: string, temporalAddress: string) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', LOOKUP_SERVER(root)],
    {
      cwd: root,
      env: { ...process.env, BENCH_DATABASE_URL: url, BENCH_TEMPORAL_ADDRESS: temporalAddress },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', (code) => reject(new Error(`lookup server exited with ${code}`)));
  });
  return { base, stop: () => stopChild(child) };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/**
 * Lookups of random persons (every feature of the entity, the route's default) at a fixed
 * rate: 3 s of warm-up, then the measured run. Latency per response is taken from autocannon's
 * `response` events (microseconds), and its coordinated-omission-corrected p99 is kept too.
 */
async function runLookups(
  url: string,
  temporalAddress: string,
  persons: number,
  options: FeatureBenchOptions,
  row: Row,
): Promise<LookupFigures> {
  const server = await startLookupServer(url, temporalAddress);
  // An mlops token for the lookups, revoked at the end (the API answers 401 without one).
  const pool = createPool(url, 1);
  const caller = await createToken(pool, {
    role: 'mlops',
    name: `bench-features-${process.pid}-${Date.now()}`,
    createdBy: 'bench',
  });
  const headers = { authorization: `Bearer ${caller.token}` };
  try {
    const sample = await fetch(`${server.base}/v1/features/person/1`, { headers });
    const body = (await sample.json()) as { features?: unknown[] };
    if (sample.status !== 200 || body.features?.length !== BENCH_FEATURES.length) {
      throw new Error(`lookup of person 1 answered ${sample.status}: ${JSON.stringify(body)}`);
    }
    const requests = Array.from({ length: 2000 }, (_, i) => ({
      method: 'GET' as const,
      path: `/v1/features/person/${1 + ((i * 7919) % persons)}`,
      headers,
    }));
    const fire = (seconds: number, latencies: number[]) =>
      new Promise<autocannon.Result>((resolve, reject) => {
        const load = {
          url: server.base,
          connections: 10,
          overallRate: options.rate,
          duration: seconds,
          requests,
        };
        const instance = autocannon(load, (err: unknown, result) =>
          err
            ? reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
            : resolve(result),
        );
        instance.on('response', (_client, _status, _bytes, ms) => latencies.push(ms));
      });
    if (options.explain) await explainLookup(url, persons);
    await fire(3, []);
    const latencies: number[] = [];
    const result = await fire(options.seconds, latencies);
    latencies.sort((a, b) => a - b);
    const at = (q: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
    const figures: LookupFigures = {
      rate: result.requests.total / result.duration,
      requests: result.requests.total,
      seconds: result.duration,
      p50: at(0.5),
      p99: at(0.99),
      max: latencies[latencies.length - 1] ?? 0,
      correctedP99: result.latency.p99,
      errors: result.errors + result.timeouts,
      non2xx: result.non2xx,
    };
    row(
      `  lookup at ${fmt(options.rate)}/s: p50 / p99 / max (ms)`,
      `${figures.p50.toFixed(2)} / ${figures.p99.toFixed(2)} / ${figures.max.toFixed(1)}`,
      `goal p99 < 5 ms; ${fmt(figures.requests)} requests in ${figures.seconds} s` +
        ` (${fmt(figures.rate)}/s), ${figures.errors} errors, ${figures.non2xx} non-2xx;` +
        ` autocannon corrected p99 ${figures.correctedP99} ms`,
    );
    return figures;
  } finally {
    await revokeToken(pool, caller.id, 'bench').catch(() => undefined);
    await pool.end();
    await server.stop();
  }
}

/** EXPLAIN ANALYZE of the lookup's one statement for a person, run as the route runs it. */
async function explainLookup(url: string, persons: number): Promise<void> {
  const pool = createPool(url, 1);
  try {
    const explaining = {
      query: async (config: string | { text: string; values?: unknown[] }) => {
        if (typeof config === 'string') return pool.query(config);
        const { rows } = await pool.query<{ 'QUERY PLAN': string }>(
          `explain (analyze, buffers) ${config.text}`,
          config.values,
        );
        process.stdout.write('\n  EXPLAIN ANALYZE, lookup of one person (20 features):\n');
        process.stdout.write(`${rows.map((r) => `    ${r['QUERY PLAN']}`).join('\n')}\n\n`);
        return pool.query(config);
      },
    } as unknown as Pool;
    await lookupEntity(explaining, 'person', { personId: Math.ceil(persons / 2) });
  } finally {
    await pool.end();
  }
}

/**
 * EXPLAIN ANALYZE of one day's tiles and snapshots of a count and a distinct_count feature, in a
 * transaction rolled back: the store's own statements, taken from its writes as they run.
 */
async function explainOneDay(pool: Pool, definitions: FeatureDefinition[], day: string) {
  const client = await pool.connect();
  try {
    await client.query('begin');
    for (const f of definitions.filter((d) => ['fb_ratings', 'fb_genres'].includes(d.name))) {
      const plans: string[] = [];
      const explaining = explainWrites(client, plans);
      await writeTiles(explaining, f, day, day);
      await writeSnapshots(explaining, f, day, day);
      const at = new Date(snapshotTime(day));
      await publishOnline(explaining, f, { fromTs: at, untilTs: at });
      process.stdout.write(
        `\n  EXPLAIN ANALYZE, ${f.name}: tiles, snapshots, publishOnline of ${day}:\n`,
      );
      for (const plan of plans) process.stdout.write(`${plan.replace(/^/gm, '    ')}\n\n`);
    }
  } finally {
    await client.query('rollback');
    client.release();
  }
}

function explainWrites(client: PoolClient, plans: string[]): PoolClient {
  const query = async (text: string, values?: unknown[]) => {
    if (/insert into feature_(tiles|values|online)/.test(text) && !/^\s*explain/.test(text)) {
      const { rows } = await client.query<{ 'QUERY PLAN': string }>(
        `explain (analyze, buffers) ${text}`,
        values,
      );
      plans.push(rows.map((r) => r['QUERY PLAN']).join('\n'));
      return { rows: [], rowCount: 0 };
    }
    return client.query(text, values);
  };
  return withQuery(client, query);
}

/** The backfill's statements, by what they do, matched on whitespace-collapsed SQL. */
const STATEMENTS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^delete from feature_tiles/, 'tiles: delete the days'],
  [/^insert into feature_tiles/, 'tiles: insert (writeTiles)'],
  [/^delete from feature_values/, 'snapshots: delete the days'],
  [/insert into feature_values/, 'snapshots: insert (writeSnapshots)'],
  [/^with days as .* select to_char/, 'snapshots: quality figures'],
  [/^insert into feature_partitions/, 'snapshots: feature_partitions'],
  [/^insert into feature_online/, 'snapshots: publishOnline'],
];

interface StatementLine {
  name: string;
  calls: number;
  ms: number;
}

/**
 * Wall time per kind of statement over every client of a pool while started. Activities run at
 * once, so the times add up to more than the wall time: they say where the work goes.
 */
class StatementTimes {
  private readonly lines = new Map<string, StatementLine>();
  private enabled = false;

  constructor(pool: Pool) {
    pool.on('connect', (client) => this.wrap(client));
  }

  start(): void {
    this.lines.clear();
    this.enabled = true;
  }

  stop(): StatementLine[] {
    this.enabled = false;
    return [...this.lines.values()].sort((a, b) => b.ms - a.ms);
  }

  private add(sql: string, ms: number): void {
    const text = sql.replace(/\s+/g, ' ').trim();
    const name = STATEMENTS.find(([p]) => p.test(text))?.[1] ?? 'other';
    const line = this.lines.get(name) ?? { name, calls: 0, ms: 0 };
    line.calls += 1;
    line.ms += ms;
    this.lines.set(name, line);
  }

  private wrap(client: PoolClient): void {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    const query = (...args: unknown[]) => {
      const [first] = args;
      const sql = typeof first === 'string' ? first : (first as { text?: string })?.text;
      if (!this.enabled || typeof sql !== 'string') return original(...args);
      const start = performance.now();
      const callback = args[args.length - 1];
      // pool.query hands the client a callback; the store's own code awaits the promise form.
      if (typeof callback === 'function') {
        const inner = callback as (...a: unknown[]) => void;
        return original(...args.slice(0, -1), (...a: unknown[]) => {
          this.add(sql, performance.now() - start);
          inner(...a);
        });
      }
      return (original(...args) as Promise<unknown>).finally(() =>
        this.add(sql, performance.now() - start),
      );
    };
    Object.assign(client, { query });
  }
}

/**
 * What the database's active backends of this database are doing, sampled once a second: the wait
 * (none: on CPU) and the statement, counted. A backend waiting on a lock names who it waits for.
 */
function sampleWaits(pool: Pool): { stop(): Promise<Map<string, number>> } {
  const counts = new Map<string, number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      await sleep(1000);
      const { rows } = await pool
        .query<{ what: string }>(
          `select coalesce(wait_event_type || ':' || wait_event, 'CPU') || '  ' ||
                  left(regexp_replace(query, '\\s+', ' ', 'g'), 60) as what
             from pg_stat_activity
            where datname = current_database() and state = 'active' and pid <> pg_backend_pid()`,
        )
        .catch(() => ({ rows: [] }));
      for (const r of rows) counts.set(r.what, (counts.get(r.what) ?? 0) + 1);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return counts;
    },
  };
}

function printWaits(waits: Map<string, number>): void {
  const total = [...waits.values()].reduce((a, b) => a + b, 0);
  process.stdout.write(`      active backends, sampled each second (${fmt(total)} samples):\n`);
  for (const [what, n] of [...waits].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
    process.stdout.write(`      ${`${((100 * n) / total).toFixed(0)}%`.padStart(5)}  ${what}\n`);
  }
}

function printStatementTimes(lines: readonly StatementLine[], wallSeconds: number): void {
  const print = (name: string, calls: string, s: string, share: string) =>
    process.stdout.write(
      `      ${name.padEnd(40)} ${calls.padStart(7)} ${s.padStart(10)} ${share.padStart(9)}\n`,
    );
  print('where the backfill time goes', 'calls', 'sum (s)', 'x wall');
  for (const l of lines) {
    print(l.name, fmt(l.calls), (l.ms / 1000).toFixed(1), (l.ms / 1000 / wallSeconds).toFixed(2));
  }
}

function printSummary(f: Figures): void {
  const ratio = f.backfill.seconds / f.floor.seconds;
  const met = (ok: boolean) => (ok ? 'met' : '**not met**');
  const lines = [
    '',
    `### Feature store benchmark (${os.cpus().length} cores, load ${f.load.start.toFixed(1)} → ${f.load.end.toFixed(1)})`,
    '',
    `${fmt(f.world.events)} \`rated\` events over ${f.world.days} days, ${fmt(f.world.persons)} persons,` +
      ` ${BENCH_FEATURES.length} person features × ${WINDOWS.length} windows (${WINDOWS.join(', ')}),` +
      ` ${f.world.days} daily snapshot partitions (and ${f.tileDays} daily tile partitions).`,
    '',
    '| measure | figure | goal |',
    '|---|---|---|',
    `| backfill (backfillFeatures, defaults) | ${secs(f.backfill.seconds)} s (tiles ${secs(f.backfill.tilesSeconds)} s), ${fmt(f.world.events / f.backfill.seconds)} events/s | |`,
    `| floor (one hand-written statement) | ${secs(f.floor.seconds)} s, ${fmt(f.world.events / f.floor.seconds)} events/s; ${fmt(f.floor.rows)} rows (+ ${secs(f.floor.indexSeconds)} s to index them as feature_values is) | |`,
    `| backfill / floor | ${ratio.toFixed(2)}x | <= 1.5x: ${met(ratio <= 1.5)} |`,
    `| floor rows = feature_values (${f.compared.sampleOneIn === 1 ? 'all' : `1 person in ${f.compared.sampleOneIn}`}) | ${f.compared.onlyStore + f.compared.onlyFloor + f.compared.differ === 0 ? 'equal' : 'different'} (${fmt(f.compared.rows)} rows) | |`,
    `| point-in-time, ${fmt(f.pit.labels)} labels × ${BENCH_FEATURES.length} features | ${f.pit.seconds.toFixed(1)} s | < 10 s: ${met(f.pit.seconds < 10)} |`,
    `| lookup p50 / p99 / max at ${fmt(f.lookup.rate)} req/s | ${f.lookup.p50.toFixed(2)} / ${f.lookup.p99.toFixed(2)} / ${f.lookup.max.toFixed(1)} ms, ${f.lookup.errors + f.lookup.non2xx} errors | p99 < 5 ms: ${met(f.lookup.p99 < 5)} |`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** Fresh statistics and a checkpoint, so no step pays for the writes of the one before. */
async function settle(pool: Pool): Promise<void> {
  await pool.query('vacuum analyze');
  await pool.query('checkpoint').catch(() => undefined); // needs superuser or pg_checkpoint
}

/** PostgreSQL and Temporal: configured (DATABASE_URL, TEMPORAL_ADDRESS) or private ones. */
async function openServices(dir: string, log: Logger): Promise<Services> {
  const config = loadConfig();
  const pgServer = config.DATABASE_URL
    ? { url: config.DATABASE_URL, stop: async () => undefined }
    : await startEmbeddedPostgres(path.join(dir, 'pg'), await freePort(), log);
  try {
    const temporal = config.TEMPORAL_ADDRESS
      ? { address: config.TEMPORAL_ADDRESS, stop: async () => undefined }
      : await startEmbeddedTemporal({
          port: await freePort(),
          uiPort: await freePort(),
          cacheDir: config.POPS_CACHE_DIR,
          explicitCli: config.POPS_TEMPORAL_CLI,
          logFile: path.join(dir, 'temporal.log'),
          log,
        });
    return {
      databaseUrl: pgServer.url,
      temporalAddress: temporal.address,
      async stop() {
        await temporal.stop();
        await pgServer.stop();
      },
    };
  } catch (err) {
    await pgServer.stop();
    throw err;
  }
}

async function dropDatabase(url: string, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
  } finally {
    await admin.end();
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}
