/**
 * Feature definitions: what a feature computes (entity, source, aggregation, windows, type,
 * default, TTL) and who answers for it (owner, description, freshness SLA). Validated by zod
 * wherever they enter. Pure data and zod only, so workflow code may import it.
 *
 * A version's computation is fixed once registered: `computationOf` is what is hashed, and a change
 * to it needs a new version (domain/features/registry.ts). Windows end at the feature's time and
 * reach back `Nd` days (or for ever, `lifetime`).
 */
import { z } from 'zod';
import { plainText } from '../retrain.js';

export const ENTITIES = ['person', 'item', 'person_item'] as const;
export const VALUE_TYPES = ['float', 'int', 'bool'] as const;

const name = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,62}$/, 'is not a feature name (a-z, 0-9, _; starts with a letter)');
const path = z
  .string()
  .regex(/^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/, 'is not a dotted path of property keys');

/** `30m`, `6h`, `7d` as seconds. */
const duration = z
  .string()
  .regex(/^[1-9][0-9]{0,5}[mhd]$/, 'is not a duration like 30m, 6h or 7d')
  .transform((v) => Number(v.slice(0, -1)) * { m: 60, h: 3600, d: 86_400 }[v.slice(-1) as 'm']);

const window = z.union([
  z.literal('lifetime'),
  z.string().regex(/^[1-9][0-9]{0,3}d$/, 'is not a window: Nd (days, 1-9999) or lifetime'),
]);

const eventsSource = z.strictObject({
  /** Events of this name (`track` events' `event`, e.g. `rated`). */
  event: plainText(200),
  /** Only events of this source (events.source); all sources when left out. */
  source: plainText(63).optional(),
});

/** A read-only query over pops tables returning `entity_id`, `ts` and `value` columns. */
const sqlSource = z
  .string()
  .trim()
  .min(1)
  .refine((q) => /^(select|with)\s/i.test(q) && !q.includes(';'), {
    error: 'is not one select statement (start with select or with; no ;)',
  });

const condition = z.strictObject({
  of: path,
  op: z.enum(['eq', 'ne', 'gt', 'gte', 'lt', 'lte']),
  value: z.union([z.number(), z.string(), z.boolean()]),
});

const aggregation = z.discriminatedUnion(
  'fn',
  [
    z.strictObject({ fn: z.literal('count') }),
    z.strictObject({ fn: z.literal('sum'), of: path }),
    z.strictObject({ fn: z.literal('mean'), of: path }),
    z.strictObject({ fn: z.literal('distinct_count'), of: path }),
    z.strictObject({ fn: z.literal('last'), of: path }),
    /** The share of the window's events that meet the condition. */
    z.strictObject({ fn: z.literal('ratio'), where: condition }),
    z.strictObject({ fn: z.literal('days_since_last') }),
  ],
  {
    error:
      'is not an aggregation: fn is one of count, sum, mean, distinct_count, last, ratio,' +
      ' days_since_last',
  },
);

/** The value type each aggregation yields; `last` and `sum` yield the declared type. */
const YIELDS: Record<string, readonly string[]> = {
  count: ['int'],
  distinct_count: ['int'],
  mean: ['float'],
  ratio: ['float'],
  days_since_last: ['float'],
  sum: ['float', 'int'],
  last: VALUE_TYPES,
};

/**
 * Checks on each backfilled partition (a snapshot day): the share of missing values, the range
 * values must fall in, and how far the day's row count may move from the previous day's (0.5:
 * within half to one and a half times). A breach warns (the partition is written and marked) or
 * fails (the partition is not written; the backfill stops). Not part of the computation.
 */
const quality = z
  .strictObject({
    maxNullRate: z.number().min(0).max(1).optional(),
    min: z.number().optional(),
    max: z.number().optional(),
    maxRowCountChange: z.number().positive().optional(),
    /** Row-count changes are only judged when the previous day had at least this many rows. */
    minRowsToCompare: z.number().int().min(1).default(100),
    policy: z.enum(['warn', 'fail']).default('warn'),
  })
  .refine((q) => q.min === undefined || q.max === undefined || q.min <= q.max, {
    error: 'has min above max',
  });

export const featureDefinitionSchema = z
  .strictObject({
    name,
    version: z.number().int().min(1).max(1_000_000),
    entity: z.enum(ENTITIES),
    source: z.union(
      [z.strictObject({ events: eventsSource }), z.strictObject({ sql: sqlSource })],
      {
        error: 'is not a source: { events: { event, source? } } or { sql: "select …" }',
      },
    ),
    aggregation,
    windows: z
      .array(window)
      .min(1)
      .max(12)
      .refine((w) => new Set(w).size === w.length, { error: 'has a window twice' }),
    type: z.enum(VALUE_TYPES),
    /** The value of an entity with no events in the window; null: missing. */
    default: z.union([z.number(), z.boolean(), z.null()]).default(null),
    /** A value older than this is missing in point-in-time reads; left out: never expires. */
    ttl: duration.optional(),
    owner: plainText(200),
    description: plainText(2000),
    freshnessSla: duration,
    quality: quality.optional(),
  })
  .superRefine((f, ctx) => {
    const yields = YIELDS[f.aggregation.fn] ?? [];
    if (!yields.includes(f.type)) {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: `must be ${yields.join(' or ')} for aggregation ${f.aggregation.fn}`,
      });
    }
    const fits = f.default === null || (typeof f.default === 'boolean') === (f.type === 'bool');
    if (
      !fits ||
      (f.type === 'int' && typeof f.default === 'number' && !Number.isInteger(f.default))
    ) {
      ctx.addIssue({ code: 'custom', path: ['default'], message: `is not a ${f.type}` });
    }
  });

/** A definition as declared. */
export type FeatureDefinitionInput = z.input<typeof featureDefinitionSchema>;
/** A definition after validation (durations in seconds, defaults filled in). */
export type FeatureDefinition = z.output<typeof featureDefinitionSchema>;

/** The part of a definition that a version fixes: what is computed, never who owns it. */
export function computationOf(f: FeatureDefinition) {
  const { entity, source, aggregation: agg, windows, type, default: fallback, ttl } = f;
  return { entity, source, aggregation: agg, windows, type, default: fallback, ttl: ttl ?? null };
}

/** The tables a definition reads, for lineage (the SQL's from/join targets, or `events`). */
export function sourceTables(f: FeatureDefinition): string[] {
  if ('events' in f.source) return ['events'];
  const found = [...f.source.sql.matchAll(/\b(?:from|join)\s+([a-z_][a-z0-9_.]*)/gi)];
  return [...new Set(found.map((m) => (m[1] ?? '').toLowerCase()))].sort();
}
