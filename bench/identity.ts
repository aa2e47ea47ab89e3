/**
 * The identity-resolution benchmark (issue 3): a generated stream of about 1M links (see
 * bench/identity-generator.ts for what a link is) imported through `importEvents`, then resolved
 * end to end, writes included, by looping `resolveNextChunk` from the watermark with the default
 * rules; an incremental batch of 10k links on top of that graph; networkx connected components on
 * the same edges for the ratio; and, with limits off, a check that the persons equal networkx's
 * components. Runs in a private embedded PostgreSQL (its own port and data folder), or in a fresh
 * database on DATABASE_URL.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createPool, ensureDatabase, type Pool, withDatabase } from '../common/db.js';
import { logger } from '../common/logger.js';
import { migrate } from '../common/migrate.js';
import { type ChunkSummary, resolveNextChunk } from '../domain/identity/chunk.js';
import { type IdentityRules, withoutLimits } from '../domain/identity/rules.js';
import { readWatermark } from '../domain/identity/store.js';
import { importEvents } from '../ingest/events.js';
import { startEmbeddedPostgres } from '../runtime/postgres.js';
import { DEFAULT_RULES } from '../test/identity-support.js';
import {
  distinctIdentifiers,
  edgeLines,
  type GeneratedStream,
  IdentityWorld,
} from './identity-generator.js';
import { type ProfileLine, StatementProfile } from './statement-profile.js';

/** What to generate and how to resolve it. */
export interface IdentityBenchOptions {
  links: number;
  incrementLinks: number;
  /** The first is the workflow's default (5000) and carries the incremental batch. */
  chunkSizes: number[];
  seed: number;
}

/** Prints one row of the table: name, figure, note. */
export type Row = (name: string, value: string, note?: string) => void;

/** The benchmark's defaults: 1M links, 10k more, chunks of 5000 (the workflow's) and 20000. */
export const IDENTITY_DEFAULTS: IdentityBenchOptions = {
  links: 1_000_000,
  incrementLinks: 10_000,
  chunkSizes: [5000, 20_000],
  seed: 7,
};

interface Run {
  seconds: number;
  chunks: number[];
  totals: Totals;
}

type Totals = Pick<
  ChunkSummary,
  'events' | 'attributed' | 'identifiersAdded' | 'personsCreated' | 'merges' | 'conflicts'
>;

interface Networkx {
  read: number;
  build: number;
  components: number;
  nodes: number;
  edges: number;
  count: number;
}

export interface Database {
  pool: Pool;
  close(): Promise<void>;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en');
const secs = (s: number) => s.toFixed(2);

/** Runs the benchmark and prints its table and the per-statement profile. */
export async function benchIdentity(options: IdentityBenchOptions, row: Row): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-identity-'));
  fs.chmodSync(dir, 0o755); // the embedded server runs as the postgres user when we are root
  const profile = new StatementProfile();
  const db = await openDatabase(dir, profile);
  try {
    await runBench(options, row, dir, db.pool, profile);
  } finally {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function runBench(
  options: IdentityBenchOptions,
  row: Row,
  dir: string,
  pool: Pool,
  profile: StatementProfile,
): Promise<void> {
  const load = os.loadavg()[0] ?? 0;
  const { files, base, increment } = generate(options, dir, row);
  const imported = await importEvents(pool, files.base, { source: 'bench-identity' });
  row(
    '  import, importEvents NDJSON (events/s)',
    fmt(imported.read / imported.seconds),
    `${fmt(imported.read)} events in ${secs(imported.seconds)} s, not part of resolution`,
  );
  await settle(pool);
  const baseThrough = await readMaxEventId(pool);

  const [first = 5000, ...others] = options.chunkSizes;
  for (const size of others) {
    await resolveBase(pool, profile, base, size, row);
    await resetGraph(pool);
  }
  const main = await resolveBase(pool, profile, base, first, row);
  await incremental(pool, profile, files.increment, increment, first, row);

  const nx = runNetworkx(files.edges, files.components);
  reportNetworkx(nx, main, first, row);
  await pool.query('delete from events where id > $1::bigint', [baseThrough]);
  await resetGraph(pool);
  await sanityCheck(pool, Math.max(...options.chunkSizes), files.components, row);
  const cores = os.cpus().length;
  row(
    '  machine load, 1-min average, start / end',
    `${load.toFixed(1)} / ${loadNow()}`,
    `${cores} cores`,
  );
}

const loadNow = () => (os.loadavg()[0] ?? 0).toFixed(1);

/** Resolves the base stream from an empty graph; prints its figures and profile. */
async function resolveBase(
  pool: Pool,
  profile: StatementProfile,
  base: Counts,
  chunk: number,
  row: Row,
): Promise<Run> {
  profile.start();
  const run = await resolveAll(pool, DEFAULT_RULES, chunk);
  const lines = profile.stop();
  row(
    `  resolve, default rules, chunk ${chunk} (links/s)`,
    fmt(base.links / run.seconds),
    `goal >= 200,000; ${secs(run.seconds)} s, ${fmt(run.totals.events / run.seconds)} events/s`,
  );
  row(
    `    ${run.chunks.length} chunks: first / median / last (s)`,
    chunkShape(run.chunks),
    totalsNote(run.totals),
  );
  printProfile(lines, run);
  return run;
}

/** The 10k-link batch after the base: imported (timed apart), then resolved on the base graph. */
async function incremental(
  pool: Pool,
  profile: StatementProfile,
  file: string,
  increment: Counts,
  chunk: number,
  row: Row,
): Promise<void> {
  const imported = await importEvents(pool, file, { source: 'bench-identity' });
  await settle(pool);
  profile.start();
  const run = await resolveAll(pool, DEFAULT_RULES, chunk);
  const lines = profile.stop();
  row(
    `  incremental ${fmt(increment.links)} links, chunk ${chunk} (s)`,
    secs(run.seconds),
    `goal < 2 s; ${fmt(increment.events)} events (import ${secs(imported.seconds)} s apart);` +
      ` ${totalsNote(run.totals)}`,
  );
  printProfile(lines, run);
}

function reportNetworkx(nx: Networkx, main: Run, chunk: number, row: Row): void {
  row(
    '  networkx connected_components (s)',
    secs(nx.components),
    `graph build ${secs(nx.build)} s, file read ${secs(nx.read)} s;` +
      ` ${fmt(nx.nodes)} nodes, ${fmt(nx.edges)} distinct edges, ${fmt(nx.count)} components`,
  );
  row(
    `  pops resolve (chunk ${chunk}) / networkx components`,
    `${(main.seconds / nx.components).toFixed(1)}x`,
    `/ (build + components): ${(main.seconds / (nx.build + nx.components)).toFixed(1)}x`,
  );
}

/** With limits off, resolution is connected components: the persons must equal networkx's. */
async function sanityCheck(pool: Pool, chunk: number, components: string, row: Row): Promise<void> {
  const run = await resolveAll(pool, withoutLimits(DEFAULT_RULES), chunk);
  const verdict = await comparePartition(pool, components);
  row(
    `  sanity: limits off, chunk ${chunk}: persons = networkx`,
    verdict.ok ? 'ok' : 'MISMATCH',
    `${verdict.detail}; resolved in ${secs(run.seconds)} s`,
  );
  if (!verdict.ok) process.exitCode = 1;
}

/** resolveAll of test/identity-support.ts, timing each chunk and summing the summaries. */
async function resolveAll(pool: Pool, rules: IdentityRules, limit: number): Promise<Run> {
  const started = performance.now();
  const chunks: number[] = [];
  const totals: Totals = {
    events: 0,
    attributed: 0,
    identifiersAdded: 0,
    personsCreated: 0,
    merges: 0,
    conflicts: 0,
  };
  let after = await readWatermark(pool);
  for (;;) {
    const t = performance.now();
    const request = { after, limit, rules, workflowId: 'bench', runId: 'bench' };
    const chunk = await resolveNextChunk(pool, request);
    chunks.push((performance.now() - t) / 1000);
    for (const key of Object.keys(totals) as Array<keyof Totals>) totals[key] += chunk[key];
    after = chunk.through;
    if (chunk.events < limit) break;
  }
  return { seconds: (performance.now() - started) / 1000, chunks, totals };
}

function chunkShape(chunks: readonly number[]): string {
  const sorted = [...chunks].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
  return [chunks[0] ?? 0, median, chunks[chunks.length - 1] ?? 0].map(secs).join(' / ');
}

function totalsNote(t: Totals): string {
  return (
    `${fmt(t.personsCreated)} persons created, ${fmt(t.merges)} merges,` +
    ` ${fmt(t.conflicts)} conflicts, ${fmt(t.events - t.attributed)} unattributed`
  );
}

/** The profile: share of the run's wall time, ms and rows per chunk, for each statement. */
function printProfile(lines: readonly ProfileLine[], run: Run): void {
  const wall = run.seconds * 1000;
  const chunks = run.chunks.length;
  const print = (name: string, share: string, ms: string, rows: string) =>
    process.stdout.write(
      `      ${name.padEnd(46)} ${share.padStart(7)} ${ms.padStart(10)} ${rows.padStart(10)}\n`,
    );
  print('where the time goes', 'share', 'ms/chunk', 'rows/chunk');
  let measured = 0;
  for (const line of lines) {
    measured += line.ms;
    const share = `${((100 * line.ms) / wall).toFixed(1)}%`;
    print(line.name, share, (line.ms / chunks).toFixed(1), fmt(line.rows / chunks));
  }
  const rest = wall - measured;
  print('unmeasured (pool checkout, awaits)', `${((100 * rest) / wall).toFixed(1)}%`, '', '');
}

/** What the table needs of a generated stream; the messages themselves are gone by then. */
type Counts = Pick<GeneratedStream, 'events' | 'links'>;

/**
 * Generates both streams and writes them out. Only counts are returned: the messages (about half a
 * gigabyte of heap for 1M links) must be garbage before resolution starts, or the collector's
 * pauses over them would be timed as resolution work.
 */
function generate(
  options: IdentityBenchOptions,
  dir: string,
  row: Row,
): { files: Files; base: Counts; increment: Counts } {
  const t = performance.now();
  const world = new IdentityWorld(options.seed);
  const base = world.base(options.links);
  const increment = world.increment(options.incrementLinks);
  const files = writeStreams(dir, base, increment);
  row(
    `identity: generated ${fmt(base.links)} links`,
    `${secs((performance.now() - t) / 1000)} s`,
    `${fmt(base.events)} events, ${fmt(distinctIdentifiers(base))} identifiers,` +
      ` seed ${options.seed}`,
  );
  const counts = (s: GeneratedStream): Counts => ({ events: s.events, links: s.links });
  return { files, base: counts(base), increment: counts(increment) };
}

interface Files {
  base: string;
  increment: string;
  edges: string;
  components: string;
}

function writeStreams(dir: string, base: GeneratedStream, increment: GeneratedStream): Files {
  const files: Files = {
    base: path.join(dir, 'base.ndjson'),
    increment: path.join(dir, 'increment.ndjson'),
    edges: path.join(dir, 'base.edges'),
    components: path.join(dir, 'base.components'),
  };
  writeLines(
    files.base,
    base.messages.map((m) => JSON.stringify(m.message)),
  );
  writeLines(
    files.increment,
    increment.messages.map((m) => JSON.stringify(m.message)),
  );
  writeLines(files.edges, edgeLines(base));
  return files;
}

function writeLines(file: string, lines: readonly string[]): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (let i = 0; i < lines.length; i += 10_000) {
      fs.writeSync(fd, `${lines.slice(i, i + 10_000).join('\n')}\n`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

const NETWORKX = `
import json, sys, time
import networkx as nx
edges_file, out_file = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
with open(edges_file) as f:
    rows = [line.rstrip('\\n').split('\\t') for line in f]
t1 = time.perf_counter()
g = nx.Graph()
g.add_nodes_from(r[0] for r in rows)
g.add_edges_from(r for r in rows if len(r) == 2)
t2 = time.perf_counter()
components = list(nx.connected_components(g))
t3 = time.perf_counter()
with open(out_file, 'w') as f:
    for c in components:
        f.write('\\t'.join(c) + '\\n')
print(json.dumps({'read': t1 - t0, 'build': t2 - t1, 'components': t3 - t2,
                  'nodes': g.number_of_nodes(), 'edges': g.number_of_edges(),
                  'count': len(components)}))
`;

/** networkx over the edge file: times for reading, building and components; writes them out. */
function runNetworkx(edges: string, components: string): Networkx {
  const out = execFileSync('python3', ['-c', NETWORKX, edges, components], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.toString()) as Networkx;
}

/** Whether the stored persons partition the identifiers exactly as networkx's components do. */
async function comparePartition(
  pool: Pool,
  componentsFile: string,
): Promise<{ ok: boolean; detail: string }> {
  const { rows } = await pool.query<{ node: string; person: number }>(
    `select i.type || ':' || i.value as node, p.canonical_id as person
       from identifiers i join persons p on p.id = i.person_id`,
  );
  const personOf = new Map(rows.map((r) => [r.node, r.person]));
  const components = fs.readFileSync(componentsFile, 'utf8').split('\n').filter(Boolean);
  const seen = new Set<number>();
  let nodes = 0;
  for (const component of components) {
    const members = component.split('\t');
    nodes += members.length;
    const persons = new Set(members.map((m) => personOf.get(m) ?? -1));
    const [person = -1] = persons;
    if (persons.size !== 1 || person === -1 || seen.has(person)) {
      return {
        ok: false,
        detail: `component of ${members[0]} is persons ${[...persons].join(', ')}`,
      };
    }
    seen.add(person);
  }
  const detail = `${fmt(nodes)} identifiers, ${fmt(seen.size)} persons = components`;
  if (nodes !== personOf.size) {
    return { ok: false, detail: `${fmt(personOf.size)} stored identifiers, networkx ${nodes}` };
  }
  return { ok: true, detail };
}

/** Empties the identity tables (events stay) and rewinds the watermark. */
async function resetGraph(pool: Pool): Promise<void> {
  // cascade: tables added by later migrations that reference persons go too.
  await pool.query(
    `truncate persons, identifiers, event_persons, identity_merges, identity_conflicts,
              identity_chunks restart identity cascade`,
  );
  await pool.query(`update identity_watermarks set last_event_id = 0`);
  await pool.query(`select setval('person_ids', 1, false)`);
  await settle(pool);
}

/** Fresh statistics and a checkpoint, so no run pays for the writes of the one before. */
async function settle(pool: Pool): Promise<void> {
  await pool.query('vacuum analyze');
  await pool.query('checkpoint').catch(() => undefined); // needs superuser or pg_checkpoint
}

async function readMaxEventId(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ max: number }>(
    'select coalesce(max(id), 0)::bigint as max from events',
  );
  return rows[0]?.max ?? 0;
}

/** A fresh migrated database: on DATABASE_URL when set, else on a private embedded server. */
export async function openDatabase(dir: string, profile: StatementProfile): Promise<Database> {
  const log = logger(process.env['LOG_LEVEL'] ?? 'warn');
  const configured = process.env['DATABASE_URL'];
  const server = configured
    ? { url: configured, stop: async () => undefined }
    : await startEmbeddedPostgres(path.join(dir, 'pg'), await freePort(), log);
  const name = `pops_bench_identity_${randomBytes(3).toString('hex')}`;
  const url = withDatabase(server.url, name);
  await ensureDatabase(url);
  await migrate(url);
  const pool = createPool(url, 4);
  profile.attach(pool);
  return {
    pool,
    async close() {
      await pool.end();
      const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
      await admin.connect();
      await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
      await admin.end();
      await server.stop();
    },
  };
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
