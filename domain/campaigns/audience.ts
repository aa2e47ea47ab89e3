/**
 * A run's audience, snapshotted once when it starts: every person (canonical persons and the
 * unresolved keys the store holds values for) whose person features, as of the fire time, pass
 * every condition of the campaign, with the holdout draw and their time zone. Values are read as
 * the feature store serves them (domain/features/online.ts valuesAt: TTL, defaults, the aging of
 * days_since_last), from the online store or from the offline snapshot at the fire time.
 *
 * A person's time zone: the `context.timezone` of their latest event that has one (Segment's
 * field), else the `timezone` trait of their latest identify that has one, else the campaign's
 * defaultTimeZone (UTC unless set). A zone Intl does not know counts as none.
 */
import type { Pool, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { InputError } from '../../common/failures.js';
import type { FeatureDefinition } from '../features/definition.js';
import { offlineAt, type ValuesAt, valuesAt } from '../features/online.js';
import { loadDefinitions } from '../features/registry.js';
import { type AudienceCondition, type Campaign, isTimeZone } from './definition.js';
import { isHeldOut } from './gates.js';

interface Resolved {
  condition: AudienceCondition;
  feature: FeatureDefinition;
  window: number;
  label: string;
}

/** The conditions with their registered definitions; an InputError names a bad feature. */
export async function resolveConditions(db: Queryable, campaign: Campaign): Promise<Resolved[]> {
  const defs = await loadDefinitions(
    db,
    campaign.audience.where.map((c) => ({ name: c.feature, version: c.version })),
  );
  return campaign.audience.where.map((condition, i) => {
    const feature = defs[i] as FeatureDefinition;
    if (feature.entity !== 'person') {
      throw new InputError(
        `audience.where[${i}].feature: ${feature.name} is a ${feature.entity} feature,` +
          ' not a person one',
      );
    }
    const window = condition.window ? feature.windows.indexOf(condition.window) : 0;
    if (window < 0) {
      throw new InputError(
        `audience.where[${i}].window: ${feature.name} has no window` +
          ` ${JSON.stringify(condition.window)}` +
          ` (it has ${feature.windows.join(', ')})`,
      );
    }
    const label = `${feature.name}@${feature.version}:${feature.windows[window]}`;
    return { condition, feature, window, label };
  });
}

/** Whether a value passes a condition (a missing value passes none). */
export function passes(c: AudienceCondition, value: number | boolean | null): boolean {
  if (value === null) return false;
  if (c.eq !== undefined && value !== c.eq) return false;
  if (typeof value === 'boolean') return c.eq !== undefined;
  if (c.between && (value < c.between[0] || value > c.between[1])) return false;
  if (c.gte !== undefined && !(value >= c.gte)) return false;
  if (c.gt !== undefined && !(value > c.gt)) return false;
  if (c.lte !== undefined && !(value <= c.lte)) return false;
  if (c.lt !== undefined && !(value < c.lt)) return false;
  return true;
}

async function universe(db: Queryable, resolved: readonly Resolved[]): Promise<string[]> {
  const { rows } = await db.query<{ key: string }>(
    `select canonical_id::text as key from persons where merged_into is null
     union
     select o.entity_id from feature_online o
       join unnest($1::text[], $2::int[]) as f(name, version)
         on o.name = f.name and o.version = f.version
      where o.entity_id like 'unresolved:%'
     order by 1`,
    [resolved.map((r) => r.feature.name), resolved.map((r) => r.feature.version)],
  );
  return rows.map((r) => r.key);
}

async function valuesOf(
  db: Queryable,
  r: Resolved,
  keys: readonly string[],
  store: 'online' | 'offline',
  at: Date,
): Promise<Map<string, ValuesAt>> {
  if (store === 'offline') return offlineAt(db, r.feature, keys, at);
  const { rows } = await db.query<{ entity_id: string; ts: Date; vals: Array<number | null> }>(
    `select entity_id, ts, vals from feature_online
      where name = $1 and version = $2 and entity_id = any($3::text[])`,
    [r.feature.name, r.feature.version, keys],
  );
  const stored = new Map(rows.map((row) => [row.entity_id, row]));
  return new Map(keys.map((k) => [k, valuesAt(r.feature, stored.get(k), at)]));
}

/** The admitted persons (of `only`, else of everyone) with the values that admitted them. */
export async function selectAudience(
  db: Queryable,
  campaign: Campaign,
  at: Date,
  only?: readonly string[],
): Promise<Array<{ personKey: string; features: Record<string, number | boolean | null> }>> {
  const resolved = await resolveConditions(db, campaign);
  let keys = only ? [...only] : await universe(db, resolved);
  const features = new Map<string, Record<string, number | boolean | null>>();
  for (const r of resolved) {
    const values = await valuesOf(db, r, keys, campaign.audience.store, at);
    keys = keys.filter((k) => {
      const value = values.get(k)?.values[r.window] ?? null;
      if (!passes(r.condition, value)) return false;
      features.set(k, { ...(features.get(k) ?? {}), [r.label]: value });
      return true;
    });
  }
  return keys.map((personKey) => ({ personKey, features: features.get(personKey) ?? {} }));
}

/** The zone of each key (see the module comment) and where it came from. */
export async function timeZones(
  db: Queryable,
  keys: readonly string[],
  fallback: string,
): Promise<Map<string, { zone: string; source: 'event' | 'trait' | 'default' }>> {
  const { rows } = await db.query<{ key: string; ctz: string | null; ttz: string | null }>(
    `with k as (select unnest($1::text[]) as key),
     ev as (
       select k.key, e.ts, e.id, e.context ->> 'timezone' as ctz, e.traits ->> 'timezone' as ttz
         from k
         join persons p on p.canonical_id = case when k.key ~ '^[0-9]{1,18}$' then k.key::bigint end
         join event_persons ep on ep.person_id = p.id
         join events e on e.id = ep.event_id
        where e.context ? 'timezone' or e.traits ? 'timezone'
       union all
       select k.key, e.ts, e.id, e.context ->> 'timezone', e.traits ->> 'timezone'
         from k join events e on e.person_id = substr(k.key, 12)
        where k.key like 'unresolved:%' and (e.context ? 'timezone' or e.traits ? 'timezone'))
     select k.key,
            (select ctz from ev where ev.key = k.key and ctz is not null
              order by ts desc, id desc limit 1) as ctz,
            (select ttz from ev where ev.key = k.key and ttz is not null
              order by ts desc, id desc limit 1) as ttz
       from k`,
    [keys],
  );
  const zones = new Map<string, { zone: string; source: 'event' | 'trait' | 'default' }>();
  for (const key of keys) zones.set(key, { zone: fallback, source: 'default' });
  for (const row of rows) {
    if (row.ctz && isTimeZone(row.ctz)) zones.set(row.key, { zone: row.ctz, source: 'event' });
    else if (row.ttz && isTimeZone(row.ttz)) zones.set(row.key, { zone: row.ttz, source: 'trait' });
  }
  return zones;
}

/**
 * Snapshots the audience of a run into campaign_audience, once: a retry finds the rows of the
 * first attempt (written in one transaction) and returns their count.
 */
export async function snapshotAudience(
  pool: Pool,
  campaign: Campaign,
  fireTime: Date,
  at: Date,
): Promise<number> {
  const existing = await pool.query<{ n: number }>(
    'select count(*)::int as n from campaign_audience where campaign = $1 and fire_time = $2',
    [campaign.name, fireTime],
  );
  if ((existing.rows[0]?.n ?? 0) > 0) return existing.rows[0]?.n ?? 0;
  const admitted = await selectAudience(pool, campaign, at);
  const zones = await timeZones(
    pool,
    admitted.map((a) => a.personKey),
    campaign.defaultTimeZone,
  );
  const salt = campaign.holdout.salt ?? campaign.name;
  await insertAudience(
    pool,
    campaign.name,
    fireTime,
    admitted.map((a) => {
      const zone = zones.get(a.personKey) ?? { zone: campaign.defaultTimeZone, source: 'default' };
      return {
        personKey: a.personKey,
        holdout: isHeldOut(salt, a.personKey, campaign.holdout.percent),
        timeZone: zone.zone,
        zoneSource: zone.source,
        features: a.features,
      };
    }),
  );
  return admitted.length;
}

/** Writes a run's audience rows in one transaction, numbered from 0. */
export async function insertAudience(
  pool: Pool,
  campaign: string,
  fireTime: Date,
  rows: ReadonlyArray<{
    personKey: string;
    holdout: boolean;
    timeZone: string;
    zoneSource: string;
    features: Record<string, unknown>;
  }>,
): Promise<void> {
  await withTransaction(pool, async (client) => {
    for (let i = 0; i < rows.length; i += 5000) {
      const part = rows.slice(i, i + 5000);
      await client.query(
        `insert into campaign_audience
           (campaign, fire_time, seq, person_key, holdout, time_zone, zone_source, features)
         select $1, $2, s.seq, s.key, s.holdout, s.zone, s.source, s.features
           from unnest($3::int[], $4::text[], $5::boolean[], $6::text[], $7::text[], $8::jsonb[])
             as s(seq, key, holdout, zone, source, features)
         on conflict do nothing`,
        [
          campaign,
          fireTime,
          part.map((_, j) => i + j),
          part.map((r) => r.personKey),
          part.map((r) => r.holdout),
          part.map((r) => r.timeZone),
          part.map((r) => r.zoneSource),
          part.map((r) => JSON.stringify(r.features)),
        ],
      );
    }
  });
}

/** The recipients of a run with seq in [fromSeq, toSeq). */
export async function audienceSlice(
  db: Queryable,
  campaign: string,
  fireTime: Date,
  fromSeq: number,
  toSeq: number,
) {
  const { rows } = await db.query<{
    person_key: string;
    holdout: boolean;
    time_zone: string;
    features: Record<string, unknown>;
  }>(
    `select person_key, holdout, time_zone, features from campaign_audience
      where campaign = $1 and fire_time = $2 and seq >= $3 and seq < $4 order by seq`,
    [campaign, fireTime, fromSeq, toSeq],
  );
  return rows.map((r) => ({
    personKey: r.person_key,
    holdout: r.holdout,
    timeZone: r.time_zone,
    features: r.features,
  }));
}
