/**
 * The decision API benchmark (issue 6): `POST /v1/decide` with 100 candidates at a fixed rate
 * (2,000 req/s for 20 s by default) on loopback, with autocannon, against the API served by a
 * process of its own (as `pops serve` would). The model is a real version trained on MovieLens
 * latest-small through retrainModel (which fills the online store), promoted, and served on a
 * surface at 90% stable / 10% canary, so every request routes, resolves the person, reads their
 * online features and what they rated, and scores 100 candidates. Runs on the embedded defaults
 * (or DATABASE_URL / TEMPORAL_ADDRESS) in a fresh database; reports client-side p50/p99 (each
 * response) and autocannon's corrected p99, the server's own decide latency (exposures), the rate
 * achieved, errors, and the machine's load.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { openRuntime, type Runtime, runWorkers } from '../cli/runtime.js';
import { createPool } from '../common/db.js';
import { createSurface, setRoutes } from '../domain/decide/surfaces.js';
import { createToken, revokeToken } from '../domain/privacy/tokens.js';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { registerFeatures } from '../domain/features/registry.js';
import { declareModel, promoteVersion } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { importMovieLens } from '../ingest/movielens.js';
import type { Row } from './identity.js';
import { freshDatabase } from './database.js';

/** How hard and how long to ask. */
export interface DecideBenchOptions {
  rate: number;
  seconds: number;
  candidates: number;
  data: string;
}

export const DECIDE_DEFAULTS = { rate: 2000, seconds: 20, candidates: 100 } as const;

const fmt = (n: number) => Math.round(n).toLocaleString('en');
const progress = (message: string) =>
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

// The API in a process of its own: the load generator must not run on the loop it measures.
const SERVER = (root: string) => `
import { Client, Connection } from '@temporalio/client';
import { buildApi } from ${JSON.stringify(pathToFileURL(path.join(root, 'api/server.ts')).href)};
import { createPool } from ${JSON.stringify(pathToFileURL(path.join(root, 'common/db.ts')).href)};
import { logger } from ${JSON.stringify(pathToFileURL(path.join(root, 'common/logger.ts')).href)};
const pool = createPool(process.env.BENCH_DATABASE_URL, 20);
const connection = await Connection.connect({ address: process.env.BENCH_TEMPORAL_ADDRESS });
const api = buildApi({ pool, temporal: new Client({ connection }), queuePrefix: 'bench',
                       log: logger('warn'), actor: 'bench' });
const base = await api.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(base + '\\n');
process.on('SIGTERM', () => {
  void api.close().then(() => pool.end()).then(() => connection.close()).then(() => process.exit(0));
});
`;

async function startServer(url: string, temporalAddress: string) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const profile = process.env['POPS_BENCH_PROFILE'];
  const child = spawn(
    process.execPath,
    [
      // POPS_BENCH_PROFILE=<dir>: the server writes a CPU profile there when it stops.
      ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []),
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      SERVER(root),
    ],
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
    child.once('exit', (code) => reject(new Error(`decide server exited with ${code}`)));
  });
  return { base, pid: child.pid ?? 0, stop: () => stopChild(child) };
}

/** CPU seconds (user + system) a process has used, from /proc (Linux); 0 elsewhere. */
function cpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
  } catch {
    return 0;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** Imports MovieLens, trains and promotes version 1, and makes version 2 the canary at 10%. */
async function prepare(rt: Runtime, url: string, data: string, row: Row) {
  const pool = createPool(url);
  const bench: Runtime = { ...rt, pool, prefix: `bench-decide-${randomBytes(3).toString('hex')}` };
  const workers = await runWorkers(bench);
  try {
    await importMovieLens(pool, data, { source: 'bench' });
    await declareModel(pool, { name: 'bench-ranker', source: 'bench', createdBy: 'bench' });
    await registerFeatures(pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), 'bench');
    progress('training version 1 (retrainModel, whose backfill fills the online store)');
    const input = retrainInputSchema.parse({
      model: 'bench-ranker',
      reason: 'decide bench',
      requestedBy: 'bench',
      training: { epochs: 3 },
    });
    const run = await startRetrain(rt.client, bench.prefix, input);
    await rt.client.workflow
      .getHandle(run.workflowId, run.runId)
      .signal('approvePromotion', { by: 'bench', reason: 'decide bench' });
    const result = await waitForRetrain(rt.client, run.workflowId, run.runId);
    if (result.promotion.outcome !== 'promoted') {
      // The bench measures serving, not the model: promote it whatever validation said.
      await promoteVersion(pool, {
        model: 'bench-ranker',
        version: result.version,
        actor: 'bench',
        reason: `decide bench (validation: ${result.promotion.outcome})`,
        workflowId: null,
        moveKey: `bench-decide-${randomBytes(4).toString('hex')}`,
      });
    }
    await pool.query(
      `insert into model_versions
       select (jsonb_populate_record(null::model_versions, to_jsonb(v)
                 || jsonb_build_object('version', 2, 'run_key', v.run_key || '/canary'))).*
         from model_versions v where model = 'bench-ranker' and version = $1`,
      [result.version],
    );
    await createSurface(pool, { name: 'bench-home', model: 'bench-ranker', actor: 'bench' });
    await setRoutes(pool, {
      surface: 'bench-home',
      routes: [
        { version: result.version, role: 'stable', weightBp: 9000 },
        { version: 2, role: 'canary', weightBp: 1000 },
      ],
      actor: 'bench',
      reason: 'decide bench: a canary at 10%',
    });
    row(
      '  model trained on backend (AUC)',
      `${result.backend}`,
      `AUC ${result.metrics.auc.toFixed(3)}`,
    );
  } finally {
    await workers.stop();
    await pool.end();
  }
  return catalogOf(url);
}

/** The bench source's users and items. */
async function catalogOf(url: string): Promise<{ users: string[]; items: string[] }> {
  const pool = createPool(url, 1);
  try {
    const users = await pool.query<{ person_id: string }>(
      `select distinct person_id from events where source = 'bench' order by person_id`,
    );
    const items = await pool.query<{ item_id: string }>(
      `select item_id from items where source = 'bench' order by item_id`,
    );
    return { users: users.rows.map((r) => r.person_id), items: items.rows.map((r) => r.item_id) };
  } finally {
    await pool.end();
  }
}

/** A deterministic pseudo-random generator (mulberry32), so runs ask the same requests. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One request whose body moves on through a shared list at every send: autocannon replays a
 * `requests` list from its start on each connection, which would repeat a few persons only.
 */
function requestsOf(users: string[], items: string[], n: number, token: string) {
  const next = random(6);
  const bodies = Array.from({ length: 5000 }, () => {
    const candidates = new Set<string>();
    while (candidates.size < Math.min(n, items.length)) {
      candidates.add(items[Math.floor(next() * items.length)] ?? '');
    }
    return JSON.stringify({
      surface: 'bench-home',
      userId: users[Math.floor(next() * users.length)],
      candidates: [...candidates],
      k: 10,
    });
  });
  let sent = 0;
  return [
    {
      method: 'POST' as const,
      path: '/v1/decide',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      setupRequest: (request: autocannon.Request) => {
        sent += 1;
        return { ...request, body: bodies[sent % bodies.length] ?? '' };
      },
    },
  ];
}

/** Runs the benchmark and prints its rows. */
export async function benchDecide(options: DecideBenchOptions, row: Row): Promise<void> {
  const rt = await openRuntime();
  // POPS_BENCH_DECIDE_DB reruns the load on a database an earlier run kept (POPS_BENCH_KEEP=1).
  const reused = process.env['POPS_BENCH_DECIDE_DB'];
  const db = reused
    ? { url: reused, drop: async () => undefined }
    : await freshDatabase(rt, 'decide');
  try {
    const { users, items } = reused
      ? await catalogOf(db.url)
      : await prepare(rt, db.url, options.data, row);
    const server = await startServer(db.url, rt.services.temporalAddress);
    const pool = createPool(db.url, 2);
    // The application's own service token, as a real caller of /v1/decide would hold.
    const caller = await createToken(pool, {
      role: 'ingest',
      name: `bench-decide-${process.pid}-${Date.now()}`,
      createdBy: 'bench',
    });
    try {
      const requests = requestsOf(users, items, options.candidates, caller.token);
      const fire = (seconds: number, latencies: number[]) =>
        new Promise<autocannon.Result>((resolve, reject) => {
          const instance = autocannon(
            {
              url: server.base,
              connections: 20,
              overallRate: options.rate,
              duration: seconds,
              requests,
            },
            (err: unknown, result) =>
              err
                ? reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
                : resolve(result),
          );
          instance.on('response', (_client, _status, _bytes, ms) => latencies.push(ms));
        });
      progress(`warming up (3 s), then ${options.seconds} s at ${fmt(options.rate)} req/s`);
      await fire(3, []);
      await sleep(500);
      const from = new Date();
      const load = os.loadavg()[0] ?? 0;
      const latencies: number[] = [];
      const cpuBefore = cpuSeconds(server.pid);
      const result = await fire(options.seconds, latencies);
      const cpu = cpuSeconds(server.pid) - cpuBefore;
      const end = os.loadavg()[0] ?? 0;
      await sleep(500); // the exposure buffer's last batches
      latencies.sort((a, b) => a - b);
      const at = (q: number) =>
        latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
      row(
        `  decide, ${options.candidates} candidates, at ${fmt(options.rate)}/s: p50 / p99 / max (ms)`,
        `${at(0.5).toFixed(2)} / ${at(0.99).toFixed(2)} / ${(latencies.at(-1) ?? 0).toFixed(1)}`,
        `goal p99 < 5 ms; ${fmt(result.requests.total)} requests in ${result.duration} s` +
          ` (${fmt(result.requests.total / result.duration)}/s), ${result.errors + result.timeouts}` +
          ` errors, ${result.non2xx} non-2xx; autocannon corrected p99 ${result.latency.p99} ms`,
      );
      const served = await pool.query<{
        n: number;
        p50: number;
        p99: number;
        canary: number;
        fallback: number;
      }>(
        `select count(*)::int as n,
                percentile_cont(0.5) within group (order by latency_ms) as p50,
                percentile_cont(0.99) within group (order by latency_ms) as p99,
                count(*) filter (where arm = 'canary')::int as canary,
                count(*) filter (where fallback is not null)::int as fallback
           from exposures where surface = 'bench-home' and at >= $1`,
        [from],
      );
      const s = served.rows[0];
      row(
        '  in the server (exposures): p50 / p99 (ms)',
        `${(s?.p50 ?? 0).toFixed(2)} / ${(s?.p99 ?? 0).toFixed(2)}`,
        `${fmt(s?.n ?? 0)} exposures logged, ${fmt(s?.canary ?? 0)} canary` +
          ` (${(((s?.canary ?? 0) / Math.max(1, s?.n ?? 0)) * 100).toFixed(1)}%), ${fmt(s?.fallback ?? 0)} fallbacks`,
      );
      row(
        '  API process CPU per request (ms)',
        ((cpu * 1000) / Math.max(1, result.requests.total)).toFixed(2),
        `${cpu.toFixed(1)} CPU s in ${result.duration} s: ${fmt(1 / Math.max(1e-9, cpu / result.requests.total))}` +
          ' req/s per core at most (Node runs the route on one core)',
      );
      row(
        '  machine: cores, load 1-min start / end',
        `${os.cpus().length}, ${load.toFixed(1)} / ${end.toFixed(1)}`,
        'PostgreSQL, the API process and autocannon share these cores',
      );
    } finally {
      await revokeToken(pool, caller.id, 'bench').catch(() => undefined);
      await pool.end();
      await server.stop();
    }
  } finally {
    if (process.env['POPS_BENCH_KEEP'] === '1') progress(`database kept: ${db.url}`);
    else await db.drop().catch(() => undefined);
    await rt.close();
  }
}
