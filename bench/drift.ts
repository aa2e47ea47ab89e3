/**
 * `npm run bench -- drift [--rows N]`: drift statistics over 20 features × N rows per window (1M
 * by default), the way monitorDrift computes them: point-in-time rows in PostgreSQL, one group-by per
 * window returning (feature, value, count), then the tests and effects in TypeScript over those
 * counts; the reference (a version's training rows) is grouped once and cached. The same statistics on the same values with scipy/numpy (bench/drift_scipy.py, reading
 * the values from a file) give the ratio. The goal: under 2 s.
 *
 * The generated features look like pops's: 8 counts (Poisson), 6 ratings means on a 0.5 grid...
 * see `FEATURES`; the current window shifts 5 of them.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { from as copyFrom } from 'pg-copy-streams';
import { mulberry32 } from '../common/random.js';
import type { Pool } from '../common/db.js';
import { driftConfigSchema } from '../domain/drift/config.js';
import { type FeatureSamples, judgeFeatures } from '../domain/drift/judge.js';
import { loadSides } from '../domain/drift/store.js';
import { openDatabase } from './identity.js';
import { StatementProfile } from './statement-profile.js';

type Row = (name: string, value: string, goal?: string) => void;

interface Generator {
  name: string;
  type: 'int' | 'float';
  draw: (random: () => number, shifted: boolean) => number;
}

function normal(random: () => number): number {
  const u = Math.max(random(), Number.MIN_VALUE);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function poisson(random: () => number, lambda: number): number {
  // Knuth's method: fine for the small means of these counts.
  const limit = Math.exp(-lambda);
  let k = 0;
  let p = random();
  while (p > limit) {
    k++;
    p *= random();
  }
  return k;
}

/** 20 features: counts, ratings means, rates, and continuous ages; 5 shift in the current window. */
const FEATURES: Generator[] = [
  ...Array.from({ length: 8 }, (_, i) => ({
    name: `count_${i}`,
    type: 'int' as const,
    draw: (r: () => number, s: boolean) => poisson(r, 3 + i + (s && i < 2 ? 1.5 : 0)),
  })),
  ...Array.from({ length: 6 }, (_, i) => ({
    name: `mean_rating_${i}`,
    type: 'float' as const,
    draw: (r: () => number, s: boolean) =>
      Math.min(
        5,
        Math.max(0.5, Math.round((3.5 + 0.8 * normal(r) - (s && i < 2 ? 0.4 : 0)) * 2) / 2),
      ),
  })),
  ...Array.from({ length: 3 }, (_, i) => ({
    name: `positive_rate_${i}`,
    type: 'float' as const,
    draw: (r: () => number, s: boolean) => Math.round(r() ** (s && i === 0 ? 1.6 : 1) * 100) / 100,
  })),
  ...Array.from({ length: 3 }, (_, i) => ({
    name: `days_since_${i}`,
    type: 'float' as const,
    draw: (r: () => number) => -Math.log(Math.max(r(), Number.MIN_VALUE)) * (5 + i),
  })),
];

export async function benchDrift(rows: number, row: Row): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-drift-'));
  fs.chmodSync(dir, 0o755); // the embedded server runs as the postgres user when we are root
  const db = await openDatabase(dir, new StatementProfile());
  try {
    const file = path.join(dir, 'values.f64');
    const load = os.loadavg()[0] ?? 0;
    const started = Date.now();
    await generate(db.pool, rows, file);
    row('  generate + COPY 2 windows (s)', ((Date.now() - started) / 1000).toFixed(1));
    // The first run groups both windows (and caches the reference, a version's training rows);
    // later runs of the same version group only the current window.
    const first = await monitorStatistics(db.pool);
    const ours = await monitorStatistics(db.pool);
    const total = ours.sql + ours.stats;
    row('  pops first run: group-by of both windows (s)', first.sql.toFixed(2));
    row('  pops later runs: group-by of the current window (s)', ours.sql.toFixed(2));
    row('  pops: statistics in TypeScript (s)', ours.stats.toFixed(2));
    row(
      `  pops: drift, 20 features x ${rows.toLocaleString('en')} rows/window (s)`,
      total.toFixed(2),
      'goal < 2 s',
    );
    row(
      '  pops: features judged drifted (5 shifted)',
      String(ours.drifted.length),
      ours.drifted.join(','),
    );
    const script = fileURLToPath(new URL('./drift_scipy.py', import.meta.url));
    const out = execFileSync('python3', [script, file], { encoding: 'utf8' });
    const scipy = (JSON.parse(out.trim().split('\n').pop() ?? '{}') as { seconds: number }).seconds;
    row('  scipy/numpy on the same values, from memory (s)', scipy.toFixed(2));
    row('  pops later runs / scipy', (total / scipy).toFixed(2), `load ${load.toFixed(1)}`);
    row('  pops first run / scipy', ((first.sql + first.stats) / scipy).toFixed(2));
  } finally {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes both windows to pit_set_rows (COPY) and, feature-major, to the file scipy reads. */
export async function generate(pool: Pool, rows: number, file: string): Promise<void> {
  const header = `${JSON.stringify({ features: FEATURES.length, n: rows })}\n`;
  const columns = [false, true].map((shifted) => {
    const random = mulberry32(shifted ? 2 : 1);
    const values = FEATURES.map(() => new Float64Array(rows));
    for (let i = 0; i < rows; i++) {
      FEATURES.forEach((f, k) => ((values[k] as Float64Array)[i] = f.draw(random, shifted)));
    }
    return values;
  });
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, header);
  for (const side of columns) for (const v of side) fs.writeSync(fd, new Uint8Array(v.buffer));
  fs.closeSync(fd);

  const client = await pool.connect();
  try {
    for (const [w, side] of columns.entries()) {
      const key = w === 0 ? 'bench/reference' : 'bench/current';
      const copy = client.query(
        copyFrom('copy pit_set_rows (set_key, row_id, ts, vals) from stdin'),
      );
      const done = new Promise<void>((resolve, reject) => {
        copy.on('finish', resolve);
        copy.on('error', reject);
      });
      let chunk = '';
      for (let i = 0; i < rows; i++) {
        chunk += `${key}\t${i + 1}\t2024-01-01T00:00:00Z\t{${side.map((v) => v[i]).join(',')}}\n`;
        if (chunk.length > 1 << 20) {
          if (!copy.write(chunk)) await new Promise((r) => copy.once('drain', r));
          chunk = '';
        }
      }
      copy.end(chunk);
      await done;
    }
    await client.query('vacuum analyze pit_set_rows');
  } finally {
    client.release();
  }
}

/** What computeDriftReport does for features, timed: the group-bys, then the judging. */
async function monitorStatistics(pool: Pool) {
  const dim = FEATURES.length;
  const t0 = performance.now();
  const [reference, current] = await Promise.all([
    loadSides(pool, { setKey: 'bench/reference', immutable: true }, dim),
    loadSides(pool, { setKey: 'bench/current' }, dim),
  ]);
  const t1 = performance.now();
  const samples: FeatureSamples[] = FEATURES.map((f, k) => ({
    feature: f.name,
    type: f.type,
    reference: reference[k] as FeatureSamples['reference'],
    current: current[k] as FeatureSamples['current'],
  }));
  const judged = judgeFeatures(samples, driftConfigSchema.parse({ prediction: false }));
  const t2 = performance.now();
  return {
    sql: (t1 - t0) / 1000,
    stats: (t2 - t1) / 1000,
    drifted: [...new Set(judged.rows.filter((r) => r.decision === 'drift').map((r) => r.feature))],
  };
}
