/**
 * Materialization of features, set-based in PostgreSQL, in two steps per UTC day:
 *
 * 1. Tiles: each day's source rows, grouped per entity, reduced to the partial aggregates the
 *    feature's aggregation needs (row count, sum, condition hits, last value and time, distinct
 *    values). A day's tiles depend on that day's rows only.
 * 2. Snapshots: the value at the UTC midnight ending day D (`ts = D + 1`), per window, from the
 *    tiles of the days the window covers (D - w + 1 .. D, or every day up to D for `lifetime`). A
 *    row is written for each entity whose value may have changed at that midnight: it had rows on
 *    day D, or rows on day D - w left a window w. Every other entity keeps its previous snapshot, which is
 *    still exact.
 *
 * Both steps write a range of days by delete-and-insert in the caller's transaction, so running a
 * range twice leaves the tables as running it once. A window with no rows is null (missing: readers
 * apply the feature's default). `days_since_last` is stored as of the snapshot's midnight; readers
 * add the time elapsed since.
 */
import type { PoolClient } from '../../common/db.js';
import type { FeatureDefinition } from './definition.js';
import { literal, numberAt, pathSql, sourceRowsSql, textAt } from './source.js';

type Aggregation = FeatureDefinition['aggregation'];

/** A window's length in days; null for `lifetime`. */
export function windowDays(window: string): number | null {
  return window === 'lifetime' ? null : Number(window.slice(0, -1));
}

/** The first day whose tiles the snapshots of `day` read (null: every earlier day). */
export function tilesNeededFrom(f: FeatureDefinition, day: string): string | null {
  const days = f.windows.map(windowDays);
  if (days.includes(null)) return null;
  return addDays(day, 1 - Math.max(...(days as number[])));
}

/** `YYYY-MM-DD` plus n days. */
export function addDays(day: string, n: number): string {
  const t = Date.parse(`${day}T00:00:00Z`) + n * 86_400_000;
  return new Date(t).toISOString().slice(0, 10);
}

/** The midnight ending `day`, as an ISO instant: the time of that day's snapshot. */
export function snapshotTime(day: string): string {
  return `${addDays(day, 1)}T00:00:00.000Z`;
}

/** The value a row contributes (null rows are left out for these aggregations). */
function valueSql(agg: Aggregation): string | null {
  switch (agg.fn) {
    case 'sum':
    case 'mean':
    case 'last':
      return numberAt('r.props', agg.of);
    case 'distinct_count':
      return textAt('r.props', agg.of);
    case 'count':
    case 'ratio':
    case 'days_since_last':
      return null;
  }
}

function conditionSql(agg: Extract<Aggregation, { fn: 'ratio' }>): string {
  const { of, op, value } = agg.where;
  const sqlOp = { eq: '=', ne: '<>', gt: '>', gte: '>=', lt: '<', lte: '<=' }[op];
  if (typeof value === 'number') return `${numberAt('r.props', of)} ${sqlOp} ${value}`;
  if (typeof value === 'boolean') {
    return `(r.props #> ${pathSql(of)}) ${sqlOp} '${value}'::jsonb`;
  }
  return `${textAt('r.props', of)} ${sqlOp} ${literal(value)}`;
}

/** The tile columns an aggregation fills, as `column = expression` over source rows `r`. */
function tileAggregates(agg: Aggregation): Record<string, string> {
  const value = valueSql(agg);
  switch (agg.fn) {
    case 'count':
      return {};
    case 'sum':
    case 'mean':
      return { total: `sum(${value})` };
    case 'ratio':
      return { hits: `count(*) filter (where ${conditionSql(agg)})` };
    case 'distinct_count':
      return { distinct_values: `array_agg(distinct ${value})` };
    case 'last':
      return {
        last_ts: 'max(r.ts)',
        last_value: `(array_agg(${value} order by r.ts desc, r.row_key desc))[1]`,
      };
    case 'days_since_last':
      return { last_ts: 'max(r.ts)' };
  }
}

/** Rewrites the tiles of f for the days [from, to]; returns the tile rows written. */
export async function writeTiles(
  client: PoolClient,
  f: FeatureDefinition,
  from: string,
  to: string,
): Promise<number> {
  await client.query(
    'delete from feature_tiles where name = $1 and version = $2 and day between $3 and $4',
    [f.name, f.version, from, to],
  );
  const value = valueSql(f.aggregation);
  const columns = tileAggregates(f.aggregation);
  const names = Object.keys(columns);
  const rows = sourceRowsSql(f, {
    from: `($3::date)::timestamp at time zone 'UTC'`,
    until: `($4::date + 1)::timestamp at time zone 'UTC'`,
  });
  const result = await client.query(
    `insert into feature_tiles (name, version, day, entity_id, n${names.map((n) => `, ${n}`).join('')})
     select $1, $2, (r.ts at time zone 'UTC')::date, r.entity_id, count(*)${names
       .map((n) => `, ${columns[n]}`)
       .join('')}
       from (${rows}) r
      where r.entity_id is not null${value ? ` and ${value} is not null` : ''}
      group by 3, 4`,
    [f.name, f.version, from, to],
  );
  return result.rowCount ?? 0;
}

/** The value of one window over the tiles `t` joined to a changed (entity, day) `c`. */
function windowValueSql(agg: Aggregation, window: string): string {
  const days = windowDays(window);
  const within = days === null ? '' : ` filter (where t.day > c.day - ${days})`;
  const end = `((c.day + 1)::timestamp at time zone 'UTC')`;
  switch (agg.fn) {
    case 'count':
      return `sum(t.n)${within}`;
    case 'sum':
      return `sum(t.total)${within}`;
    case 'mean':
      return `sum(t.total)${within} / sum(t.n)${within}`;
    case 'ratio':
      return `sum(t.hits)${within}::double precision / sum(t.n)${within}`;
    case 'last':
      return `(array_agg(t.last_value order by t.day desc)${within})[1]`;
    case 'days_since_last':
      return `extract(epoch from ${end} - max(t.last_ts)${within}) / 86400.0`;
    case 'distinct_count':
      // Distinct values do not add up across days: counted in a lateral subquery below.
      return `d.w${windowIndex(window)}`;
  }
}

function windowIndex(window: string): string {
  return window === 'lifetime' ? 'lifetime' : window.slice(0, -1);
}

/** Figures of one snapshot day, for quality checks. */
export interface SnapshotDay {
  day: string;
  valueRows: number;
  tileRows: number;
  previousTileRows: number;
  /** Per window, in the definition's order. */
  windows: Array<{ window: string; nulls: number; min: number | null; max: number | null }>;
}

/**
 * Rewrites the snapshots of f for the days [from, to] from the tiles (which must be written for
 * every day the windows reach); returns each day's figures.
 */
export async function writeSnapshots(
  client: PoolClient,
  f: FeatureDefinition,
  from: string,
  to: string,
  options: { base?: boolean } = {},
): Promise<SnapshotDay[]> {
  const finite = f.windows.map(windowDays).filter((d): d is number => d !== null);
  const lifetime = f.windows.includes('lifetime');
  await client.query(
    `delete from feature_values where name = $1 and version = $2
        and ts between (($3::date + 1)::timestamp at time zone 'UTC')
                   and (($4::date + 1)::timestamp at time zone 'UTC')`,
    [f.name, f.version, from, to],
  );
  // A tile of day D changes the snapshots of D and, for each window w, of D + w (it leaves).
  const shifts = [...new Set([0, ...finite])].join(', ');
  const reach = lifetime ? '' : ` and t.day > c.day - ${Math.max(...finite)}`;
  // The base snapshot (the first day of a backfill) holds every entity its windows reach, so
  // that a read in the range never falls back to a snapshot the backfill did not write.
  const base = options.base
    ? `union
       select $3::date, t.entity_id from feature_tiles t
        where t.name = $1 and t.version = $2 and t.day <= $3::date${reach.replaceAll('c.day', '$3::date')}`
    : '';
  const values = f.windows.map((w) => windowValueSql(f.aggregation, w));
  const distinct =
    f.aggregation.fn === 'distinct_count'
      ? `cross join lateral (
           select ${f.windows
             .map((w) => {
               const days = windowDays(w);
               const within = days === null ? '' : ` filter (where dt.day > c.day - ${days})`;
               return `nullif(count(distinct v)${within}, 0) as w${windowIndex(w)}`;
             })
             .join(', ')}
             from feature_tiles dt cross join lateral unnest(dt.distinct_values) v
            where dt.name = $1 and dt.version = $2 and dt.entity_id = c.entity_id
              and dt.day <= c.day${reach.replaceAll('t.day', 'dt.day')}
         ) d`
      : '';
  const groupDistinct =
    f.aggregation.fn === 'distinct_count'
      ? f.windows.map((w) => `, d.w${windowIndex(w)}`).join('')
      : '';
  // Tiles just written have no statistics yet: estimated at a row or two, the planner would walk
  // an entity's history once per changed day in nested loops. Hash joins are right at any size.
  await client.query(`select set_config('enable_nestloop', $1, true)`, [
    f.aggregation.fn === 'distinct_count' ? 'on' : 'off',
  ]);
  await client.query(
    `with changed as (
       select distinct t.day + k as day, t.entity_id
         from feature_tiles t cross join unnest(array[${shifts}]) as k
        where t.name = $1 and t.version = $2
          and t.day between $3::date - ${Math.max(0, ...finite)} and $4::date
          and t.day + k between $3::date and $4::date
       ${base}
     )
     insert into feature_values (name, version, ts, entity_id, vals)
     select $1, $2, (c.day + 1)::timestamp at time zone 'UTC', c.entity_id,
            array[${values.map((v) => `(${v})::double precision`).join(', ')}]
       from changed c
       -- A left join: an entity whose rows all left its windows gets a row of nulls.
       left join feature_tiles t on t.name = $1 and t.version = $2
                                and t.entity_id = c.entity_id and t.day <= c.day${reach}
       ${distinct}
      group by c.day, c.entity_id${groupDistinct}`,
    [f.name, f.version, from, to],
  );
  await client.query(`select set_config('enable_nestloop', 'on', true)`);
  return snapshotFigures(client, f, from, to);
}

async function snapshotFigures(
  client: PoolClient,
  f: FeatureDefinition,
  from: string,
  to: string,
): Promise<SnapshotDay[]> {
  const n = f.windows.length;
  const perWindow = Array.from(
    { length: n },
    (_, i) =>
      `count(*) filter (where v.vals[${i + 1}] is null)::int,
       min(v.vals[${i + 1}]), max(v.vals[${i + 1}])`,
  ).join(', ');
  // Grouped once per table, not per day: a year-long partition is 365 days.
  const { rows } = await client.query<{ day: string; value_rows: number; figures: unknown[] }>(
    `with days as (
       select g::date as day from generate_series($3::date, $4::date, interval '1 day') g
     ),
     v as (
       select (v.ts at time zone 'UTC')::date - 1 as day, count(*)::int as value_rows,
              array[${perWindow}]::double precision[] as figures
         from feature_values v
        where v.name = $1 and v.version = $2
          and v.ts between (($3::date + 1)::timestamp at time zone 'UTC')
                       and (($4::date + 1)::timestamp at time zone 'UTC')
        group by v.ts
     ),
     t as (
       select day, count(*)::int as n from feature_tiles
        where name = $1 and version = $2 and day between $3::date - 1 and $4::date
        group by day
     )
     select to_char(d.day, 'YYYY-MM-DD') as day, coalesce(v.value_rows, 0) as value_rows,
            coalesce(t1.n, 0) as tile_rows, coalesce(t0.n, 0) as previous_tile_rows,
            coalesce(v.figures, '{}') as figures
       from days d
       left join v on v.day = d.day
       left join t t1 on t1.day = d.day
       left join t t0 on t0.day = d.day - 1
      order by d.day`,
    [f.name, f.version, from, to],
  );
  return rows.map((r) => {
    const row = r as unknown as {
      day: string;
      value_rows: number;
      tile_rows: number;
      previous_tile_rows: number;
      figures: Array<number | null>;
    };
    return {
      day: row.day,
      valueRows: row.value_rows,
      tileRows: row.tile_rows,
      previousTileRows: row.previous_tile_rows,
      windows: f.windows.map((window, i) => ({
        window,
        nulls: Number(row.figures[i * 3] ?? 0),
        min: row.figures[i * 3 + 1] ?? null,
        max: row.figures[i * 3 + 2] ?? null,
      })),
    };
  });
}

/** A breach of the feature's quality checks on one day, with the figures that decided it. */
export interface QualityBreach {
  day: string;
  check: 'null_rate' | 'min' | 'max' | 'row_count_change';
  window?: string;
  observed: number;
  limit: number;
}

/** The checks of `f.quality` applied to one day's figures; [] when it passes (or has no checks). */
export function qualityBreaches(f: FeatureDefinition, day: SnapshotDay): QualityBreach[] {
  const q = f.quality;
  if (!q) return [];
  const out: QualityBreach[] = [];
  for (const w of day.windows) {
    if (q.maxNullRate !== undefined && day.valueRows > 0) {
      const rate = w.nulls / day.valueRows;
      if (rate > q.maxNullRate) {
        out.push({
          day: day.day,
          check: 'null_rate',
          window: w.window,
          observed: rate,
          limit: q.maxNullRate,
        });
      }
    }
    if (q.min !== undefined && w.min !== null && w.min < q.min) {
      out.push({ day: day.day, check: 'min', window: w.window, observed: w.min, limit: q.min });
    }
    if (q.max !== undefined && w.max !== null && w.max > q.max) {
      out.push({ day: day.day, check: 'max', window: w.window, observed: w.max, limit: q.max });
    }
  }
  if (q.maxRowCountChange !== undefined && day.previousTileRows >= q.minRowsToCompare) {
    const change = Math.abs(day.tileRows - day.previousTileRows) / day.previousTileRows;
    if (change > q.maxRowCountChange) {
      out.push({
        day: day.day,
        check: 'row_count_change',
        observed: change,
        limit: q.maxRowCountChange,
      });
    }
  }
  return out;
}
