/**
 * The backfill job's contract: its input (validated by zod in the workflow, the CLI and the API
 * alike), how a range of days splits into partitions, its workflow id, and its progress as the
 * `progress` query reports it. Pure data and zod only, so workflow code may import it.
 *
 * Days are UTC calendar days `YYYY-MM-DD`; `from` and `to` are both inclusive. A partition is a
 * run of consecutive days computed by one activity (a day, an ISO week, a calendar month or year,
 * clipped to the range); snapshots are daily whatever the partition.
 */
import { z } from 'zod';
import { plainText } from '../retrain.js';

export const PARTITION_UNITS = ['day', 'week', 'month', 'year'] as const;
export type PartitionUnit = (typeof PARTITION_UNITS)[number];

const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'is not a day YYYY-MM-DD')
  .refine((d) => {
    const t = Date.parse(`${d}T00:00:00Z`);
    return Number.isFinite(t) && new Date(t).toISOString().startsWith(d);
  }, 'is not a calendar day')
  .refine((d) => d >= '1900-01-01' && d <= '2199-12-31', 'is not a day from 1900 to 2199');

export const featureRefSchema = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, 'is not a feature name'),
  version: z.number().int().min(1),
});

/** How far a run has got; carried across continue-as-new. */
export const backfillStateSchema = z.strictObject({
  phase: z.enum(['tiles', 'snapshots', 'done']),
  /** Index of the next partition of the phase to start. */
  next: z.number().int().min(0),
  partitionsDone: z.number().int().min(0),
  tileRows: z.number().int().min(0),
  valueRows: z.number().int().min(0),
  warnings: z.number().int().min(0),
  /** Epoch ms of the first run's start (workflow time). */
  startedAtMs: z.number(),
  /** The days whose tiles the snapshots read, planned once. */
  tilesFrom: day,
});
export type BackfillState = z.infer<typeof backfillStateSchema>;

export const backfillInputSchema = z
  .strictObject({
    features: z.array(featureRefSchema).min(1).max(200),
    from: day,
    to: day,
    partition: z.enum(PARTITION_UNITS).default('day'),
    /** Partitions computed at once. */
    parallelism: z.number().int().min(1).max(32).default(4),
    /** Tiles are recomputed from this day on (default: as far back as the windows reach). */
    tilesFrom: day.optional(),
    /** Partitions per workflow run before it continues as new. */
    partitionsPerRun: z.number().int().min(1).max(10_000).default(500),
    requestedBy: plainText(200).default('unknown'),
    reason: plainText(500).default('backfill'),
    state: backfillStateSchema.optional(),
  })
  .refine((v) => v.from <= v.to, { error: 'is after to', path: ['from'] })
  .refine((v) => !v.tilesFrom || v.tilesFrom <= v.from, {
    error: 'is after from',
    path: ['tilesFrom'],
  });

export type BackfillInput = z.input<typeof backfillInputSchema>;
export type BackfillOptions = z.output<typeof backfillInputSchema>;

export interface BackfillProgress {
  phase: BackfillState['phase'] | 'planning';
  partitionsDone: number;
  partitionsTotal: number;
  tileRows: number;
  valueRows: number;
  warnings: number;
  startedAtMs: number;
  from: string;
  to: string;
}

export interface BackfillResult {
  backfillId: string;
  partitions: number;
  tileRows: number;
  valueRows: number;
  warnings: number;
}

export interface Partition {
  from: string;
  to: string;
}

const DAY_MS = 86_400_000;
const ms = (d: string) => Date.parse(`${d}T00:00:00Z`);
const iso = (t: number) => new Date(t).toISOString().slice(0, 10);

/** The first day after the partition that holds `d` (its unit's next boundary). */
function nextBoundary(d: string, unit: PartitionUnit): string {
  const t = new Date(ms(d));
  switch (unit) {
    case 'day':
      return iso(t.getTime() + DAY_MS);
    case 'week': {
      const sinceMonday = (t.getUTCDay() + 6) % 7;
      return iso(t.getTime() + (7 - sinceMonday) * DAY_MS);
    }
    case 'month':
      return iso(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + 1, 1));
    case 'year':
      return iso(Date.UTC(t.getUTCFullYear() + 1, 0, 1));
  }
}

/** The range [from, to] split at the unit's boundaries, in order. */
export function partitionsOf(from: string, to: string, unit: PartitionUnit): Partition[] {
  const out: Partition[] = [];
  let start = from;
  while (start <= to) {
    const next = nextBoundary(start, unit);
    const end = iso(ms(next) - DAY_MS);
    out.push({ from: start, to: end < to ? end : to });
    start = next;
  }
  return out;
}

/** The workflow id of a backfill: one owner per feature set and range. */
export function backfillWorkflowId(
  features: ReadonlyArray<{ name: string; version: number }>,
  from: string,
  to: string,
): string {
  const set = [...features]
    .map((f) => `${f.name}@${f.version}`)
    .sort()
    .join('+');
  return `backfill/${set.length <= 400 ? set : `${set.slice(0, 360)}+${fnv1a(set)}`}/${from}/${to}`;
}

/** A 32-bit FNV-1a hash as hex: a short, deterministic stand-in for a long feature set. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * Incremental materialization: closes the days the watermark (now - lateness) has passed, and
 * re-computes the days that events arriving late (by received_at) fall on, with every later day
 * their windows reach.
 */
export const materializeInputSchema = z.strictObject({
  /** Feature versions, or `all`: the latest version of every registered feature, at each step. */
  features: z.union([z.literal('all'), z.array(featureRefSchema).min(1).max(200)]),
  /** How long after a day ends its events may still arrive before the day is computed. */
  latenessSeconds: z
    .number()
    .int()
    .min(0)
    .max(30 * 86_400)
    .default(3600),
  /** Days per activity; left out: a day up to 62 days, a month up to three years, else a year. */
  partition: z.enum(PARTITION_UNITS).optional(),
  /**
   * Events received up to this long before the previous step's mark are looked at again, for
   * transactions that were still committing when it ran.
   */
  receivedOverlapSeconds: z.number().int().min(0).max(86_400).default(300),
  requestedBy: plainText(200).default('unknown'),
});
export type MaterializeInput = z.input<typeof materializeInputSchema>;

export interface MaterializePlan {
  /** The feature versions of this step. */
  features: Array<{ name: string; version: number }>;
  /** The days to (re)compute, or null when nothing is new. */
  range: { from: string; to: string; tilesFrom?: string } | null;
  /** What the commit records once the range is done. */
  receivedThrough: string;
  closedThrough: string;
  /** The earliest day late events fell on, if any. */
  lateFrom: string | null;
}

export interface MaterializeResult extends MaterializePlan {
  backfill: BackfillResult | null;
}

/** The workflow id of the incremental materialization of a feature set. */
export function materializeWorkflowId(
  features: 'all' | ReadonlyArray<{ name: string; version: number }>,
): string {
  if (features === 'all') return 'materialize/all';
  return backfillWorkflowId(features, 'incremental', 'latest')
    .replace(/^backfill\//, 'materialize/')
    .replace(/\/incremental\/latest$/, '');
}

/** A day per activity up to 62 days, a month up to three years, a year beyond. */
export function partitionUnitFor(from: string, to: string): PartitionUnit {
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  return days <= 62 ? 'day' : days <= 3 * 366 ? 'month' : 'year';
}
