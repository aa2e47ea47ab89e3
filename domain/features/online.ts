/**
 * The online store (feature_online): the latest snapshot per feature version and entity, copied
 * from the offline store by publishOnline and served by lookups; and the offline-at-t read that the
 * consistency check compares it with. Every read applies the time model of
 * migrations/0006_feature_store.sql through valuesAt, so online and offline agree by construction:
 * the TTL runs from the snapshot's time, days_since_last ages to the instant read, values take the
 * declared type, and a missing value is the default.
 *
 * Freshness is judged on the newer of the value's time and the latest snapshot computed for the
 * feature version (feature_partitions not failed, feature_materializations.closed_through; day D's
 * snapshot is stamped D + 1): a snapshot row is written only when a value changes, so an unchanged
 * value of a feature computed through yesterday is fresh.
 */
import type { PoolClient, Queryable } from '../../common/db.js';
import { InputError } from '../../common/failures.js';
import { storedValue } from '../identity/identifiers.js';
import type { FeatureDefinition } from './definition.js';
import type { Entity } from './source.js';

/** A served value: a number (float or int), a boolean, or null (missing, no default). */
export type FeatureValue = number | boolean | null;

/** A stored snapshot: its time and one raw value per window, in the definition's order. */
export interface Snapshot {
  ts: Date;
  vals: ReadonlyArray<number | null>;
}

/** What a feature says for one entity at an instant: the snapshot used (null: none) and values. */
export interface ValuesAt {
  ts: Date | null;
  values: FeatureValue[];
}

/** Thrown when a feature asked for is not registered. */
export class FeatureNotRegistered extends InputError {
  override name = 'FeatureNotRegistered';
}

/** Thrown when a feature asked for belongs to another entity kind than the one looked up. */
export class FeatureEntityMismatch extends InputError {
  override name = 'FeatureEntityMismatch';
}

const DAY_MS = 86_400_000;

function typed(type: FeatureDefinition['type'], value: number): FeatureValue {
  switch (type) {
    case 'float':
      return value;
    case 'int':
      return Math.round(value);
    case 'bool':
      return value !== 0;
  }
}

/**
 * The values a snapshot gives at instant t: missing (the default) past the TTL or where a window
 * is null; days_since_last plus the days from the snapshot to t; converted to the declared type.
 */
export function valuesAt(f: FeatureDefinition, snapshot: Snapshot | undefined, t: Date): ValuesAt {
  const ageMs = snapshot ? t.getTime() - snapshot.ts.getTime() : 0;
  const live = snapshot && (f.ttl === undefined || ageMs <= f.ttl * 1000) ? snapshot : undefined;
  const aging = f.aggregation.fn === 'days_since_last' ? ageMs / DAY_MS : 0;
  const values = f.windows.map((_, i) => {
    const raw = live?.vals[i] ?? null;
    return raw === null ? f.default : typed(f.type, raw + aging);
  });
  return { ts: live?.ts ?? null, values };
}

/**
 * Copies each entity's latest snapshot with ts in [fromTs, untilTs] (both inclusive) from
 * feature_values into feature_online, in the caller's transaction; returns the rows written. A
 * stored value of the same time is replaced (a recomputed day wins), one of a newer time never is.
 */
export async function publishOnline(
  client: PoolClient,
  f: FeatureDefinition,
  range: { fromTs: Date; untilTs: Date },
): Promise<number> {
  const { rowCount } = await client.query(
    `insert into feature_online (name, version, entity_id, ts, vals)
     select distinct on (v.entity_id) v.name, v.version, v.entity_id, v.ts, v.vals
       from feature_values v
      where v.name = $1 and v.version = $2 and v.ts >= $3 and v.ts <= $4
      order by v.entity_id, v.ts desc
     on conflict (name, version, entity_id) do update
        set ts = excluded.ts, vals = excluded.vals, written_at = now()
      where feature_online.ts <= excluded.ts`,
    [f.name, f.version, range.fromTs, range.untilTs],
  );
  return rowCount ?? 0;
}

/**
 * The offline-at-t value of each entity key: its latest feature_values snapshot with ts <= t,
 * read through valuesAt (an entity without one gets the defaults). Every key is in the map.
 */
export async function offlineAt(
  db: Queryable,
  f: FeatureDefinition,
  entityKeys: readonly string[],
  t: Date,
): Promise<Map<string, ValuesAt>> {
  const { rows } = await db.query<{ entity_id: string; ts: Date; vals: Array<number | null> }>(
    `select k.entity_id, v.ts, v.vals
       from unnest($3::text[]) as k(entity_id)
       cross join lateral (
         select ts, vals from feature_values
          where name = $1 and version = $2 and entity_id = k.entity_id and ts <= $4
          order by ts desc limit 1) v`,
    [f.name, f.version, entityKeys, t],
  );
  const stored = new Map(rows.map((r) => [r.entity_id, r]));
  return new Map(entityKeys.map((key) => [key, valuesAt(f, stored.get(key), t)]));
}

// Definitions change rarely (a registration), and a lookup must not read them each time: they
// are cached per pool for a few seconds (with each version's latest computed snapshot, which
// freshness needs), and reloaded at once when a feature asked for by name is registered but not
// in the cache. A new latest version is served as `name` within those seconds.
const CATALOG_MAX_AGE_MS = 5000;

interface Catalog {
  loadedAt: number;
  /** `name@version` → the time of its latest computed snapshot (see OnlineFeature). */
  through: Map<string, Date | null>;
  /** `name@version` → definition. */
  versions: Map<string, FeatureDefinition>;
  /** name → its latest version. */
  latest: Map<string, FeatureDefinition>;
}

const catalogs = new WeakMap<Queryable, { catalog?: Catalog; loading?: Promise<Catalog> }>();

async function loadCatalog(db: Queryable): Promise<Catalog> {
  const { rows } = await db.query<{ definition: FeatureDefinition; through: Date | null }>(
    `select v.definition,
            ((select greatest(max(p.day), (select m.closed_through from feature_materializations m
                                            where m.name = v.name and m.version = v.version))
                from feature_partitions p
               where p.name = v.name and p.version = v.version and p.quality_status <> 'fail'
             ) + 1)::timestamp at time zone 'UTC' as through
       from feature_versions v
      order by v.name, v.version`,
  );
  const versions = new Map<string, FeatureDefinition>();
  const latest = new Map<string, FeatureDefinition>();
  const through = new Map<string, Date | null>();
  for (const { definition: f, through: t } of rows) {
    versions.set(`${f.name}@${f.version}`, f);
    latest.set(f.name, f);
    through.set(`${f.name}@${f.version}`, t);
  }
  return { loadedAt: Date.now(), through, versions, latest };
}

/** Whether any of the names is registered now (a cached catalog that misses it is behind). */
async function anyRegistered(db: Queryable, names: string[]): Promise<boolean> {
  const { rows } = await db.query<{ found: boolean }>(
    'select exists (select 1 from feature_versions where name = any($1::text[])) as found',
    [names],
  );
  return rows[0]?.found ?? false;
}

async function catalogOf(db: Queryable, reload = false): Promise<Catalog> {
  let slot = catalogs.get(db);
  if (!slot) {
    slot = {};
    catalogs.set(db, slot);
  }
  const age = slot.catalog ? Date.now() - slot.catalog.loadedAt : Infinity;
  if (slot.catalog && !reload && age < CATALOG_MAX_AGE_MS) return slot.catalog;
  const holder = slot;
  holder.loading ??= loadCatalog(db).then(
    (catalog) => {
      holder.catalog = catalog;
      holder.loading = undefined;
      return catalog;
    },
    (err: unknown) => {
      holder.loading = undefined;
      throw err;
    },
  );
  return holder.loading;
}

/** A feature asked for: `name` (its latest version) or `name@version`. */
export interface FeatureRequest {
  name: string;
  version?: number;
}

function refText(r: FeatureRequest): string {
  return r.version === undefined ? r.name : `${r.name}@${r.version}`;
}

function find(catalog: Catalog, r: FeatureRequest): FeatureDefinition | undefined {
  return r.version === undefined
    ? catalog.latest.get(r.name)
    : catalog.versions.get(`${r.name}@${r.version}`);
}

/** A definition a lookup serves, with its latest computed snapshot as the catalog last saw it. */
interface Served {
  f: FeatureDefinition;
  through: Date | null;
}

/**
 * The definitions a lookup serves: those asked for (each once, in order), or the latest version
 * of every feature whose latest version is of this entity kind, by name.
 */
async function featuresFor(
  db: Queryable,
  entity: Entity,
  refs: readonly FeatureRequest[] | undefined,
): Promise<Served[]> {
  let catalog = await catalogOf(db);
  const serve = (f: FeatureDefinition): Served => ({
    f,
    through: catalog.through.get(`${f.name}@${f.version}`) ?? null,
  });
  if (!refs) {
    return [...catalog.latest.values()]
      .filter((f) => f.entity === entity)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(serve);
  }
  const unknown = refs.filter((r) => !find(catalog, r)).map((r) => r.name);
  if (unknown.length > 0 && (await anyRegistered(db, unknown))) catalog = await catalogOf(db, true);
  const missing = refs.filter((r) => !find(catalog, r)).map((r) => JSON.stringify(refText(r)));
  if (missing.length > 0) {
    throw new FeatureNotRegistered(
      `feature ${missing.join(', ')} is not registered (pops features list shows what is)`,
    );
  }
  const found = new Map<string, FeatureDefinition>();
  for (const r of refs) {
    const f = find(catalog, r);
    if (f) found.set(`${f.name}@${f.version}`, f);
  }
  const wrong = [...found.values()].filter((f) => f.entity !== entity);
  if (wrong.length > 0) {
    const named = wrong.map(
      (f) => `"${f.name}@${f.version}" is ${f.entity === 'item' ? 'an' : 'a'} ${f.entity} feature`,
    );
    throw new FeatureEntityMismatch(`feature ${named.join(', ')}, not a ${entity} feature`);
  }
  return [...found.values()].map(serve);
}

/** One feature of an entity as the lookup serves it. */
export interface OnlineFeature {
  name: string;
  version: number;
  type: FeatureDefinition['type'];
  /** One value per window, by window name (`7d`, `lifetime`). */
  windows: Record<string, FeatureValue>;
  /** The time of the snapshot the values come from; null when missing (none, or past the TTL). */
  ts: string | null;
  /** Seconds from ts to the lookup; null with ts. */
  ageSeconds: number | null;
  /**
   * The time of the latest snapshot computed for this feature version, by backfill or
   * incrementally (the midnight ending the last day computed).
   */
  computedThrough: string | null;
  /** Fresh when the newer of ts and computedThrough is within the freshness SLA. */
  freshness: 'fresh' | 'stale';
}

/**
 * How a lookup names its entity: a stored entity key, or a person (by person row id, merged or
 * not, or by identifier) resolved through the identity graph to the canonical person's key, with
 * `item` appended for person_item keys (`<person>|<item>`).
 */
export type EntitySelector =
  | { key: string }
  | { personId: number; item?: string }
  | { identifier: { type: string; value: string }; item?: string };

/** The statement resolving the selector to its key; `variant` names its shape (5 in all). */
function keySql(selector: EntitySelector): { variant: string; sql: string; params: unknown[] } {
  if ('key' in selector) {
    return { variant: 'key', sql: 'select $1::text as entity_id', params: [selector.key] };
  }
  const item = selector.item === undefined ? [] : [selector.item];
  const withItem = item.length > 0 ? '-item' : '';
  if ('personId' in selector) {
    const suffix = item.length > 0 ? ` || '|' || $2::text` : '';
    return {
      variant: `person${withItem}`,
      sql: `select p.canonical_id::text${suffix} as entity_id
              from persons p where p.id = $1::bigint`,
      params: [selector.personId, ...item],
    };
  }
  const { type, value } = selector.identifier;
  const normalized = storedValue(type, value) ?? value.trim();
  const suffix = item.length > 0 ? ` || '|' || $3::text` : '';
  return {
    variant: `identifier${withItem}`,
    sql: `select p.canonical_id::text${suffix} as entity_id
            from identifiers i join persons p on p.id = i.person_id
           where i.type = $1 and i.value = $2`,
    params: [type, normalized, ...item],
  };
}

interface LookupRow {
  entity_id: string;
  i: number | null;
  /** The snapshot time in epoch milliseconds (cheaper to read than a timestamp's text). */
  ts_ms: number | null;
  vals: Array<number | null> | null;
}

function served({ f, through }: Served, row: LookupRow | undefined, now: Date): OnlineFeature {
  const snapshot =
    row && row.ts_ms !== null && row.vals ? { ts: new Date(row.ts_ms), vals: row.vals } : undefined;
  const read = valuesAt(f, snapshot, now);
  const asOf = Math.max(read.ts?.getTime() ?? -Infinity, through?.getTime() ?? -Infinity);
  return {
    name: f.name,
    version: f.version,
    type: f.type,
    windows: Object.fromEntries(f.windows.map((w, i) => [w, read.values[i] ?? null])),
    ts: read.ts?.toISOString() ?? null,
    ageSeconds: read.ts ? (now.getTime() - read.ts.getTime()) / 1000 : null,
    computedThrough: through?.toISOString() ?? null,
    freshness: (now.getTime() - asOf) / 1000 <= f.freshnessSla ? 'fresh' : 'stale',
  };
}

/** The features of one entity, and how many of them had a stored online value. */
interface Read {
  entityKey: string;
  features: OnlineFeature[];
  stored: number;
}

/** Resolves the entity and reads its online values in one statement; undefined: no such person. */
async function read(
  db: Queryable,
  defs: readonly Served[],
  selector: EntitySelector,
  now: Date,
): Promise<Read | undefined> {
  const key = keySql(selector);
  const n = key.params.length;
  // A named statement: each connection plans it once (planning costs more than running it).
  const { rows } = await db.query<LookupRow>({
    name: `pops-feature-lookup-${key.variant}`,
    text: `with k as (${key.sql})
     select k.entity_id, f.i::int as i, (extract(epoch from o.ts) * 1000)::float8 as ts_ms, o.vals
       from k
       left join unnest($${n + 1}::text[], $${n + 2}::int[]) with ordinality as f(name, version, i)
         on true
       left join feature_online o
         on o.name = f.name and o.version = f.version and o.entity_id = k.entity_id`,
    values: [...key.params, defs.map((d) => d.f.name), defs.map((d) => d.f.version)],
  });
  const first = rows[0];
  if (!first) return undefined;
  const byIndex = new Map(rows.map((r) => [r.i, r]));
  return {
    entityKey: first.entity_id,
    features: defs.map((f, i) => served(f, byIndex.get(i + 1), now)),
    stored: rows.filter((r) => r.ts_ms !== null).length,
  };
}

/**
 * The online features of an entity key: every registered feature of the entity kind (its latest
 * version), or those asked for. Thrown: FeatureNotRegistered, FeatureEntityMismatch.
 */
export async function lookupOnline(
  db: Queryable,
  entity: Entity,
  entityKey: string,
  refs?: readonly FeatureRequest[],
  now: Date = new Date(),
): Promise<OnlineFeature[]> {
  const defs = await featuresFor(db, entity, refs);
  const found = await read(db, defs, { key: entityKey }, now);
  return found?.features ?? [];
}

/**
 * lookupOnline for an entity named the way the API takes it (see EntitySelector). Undefined when
 * pops does not know the entity: a person the graph has no row or identifier for, or a key with no
 * online value whose person has no events or whose item is not in the catalog.
 */
export async function lookupEntity(
  db: Queryable,
  entity: Entity,
  selector: EntitySelector,
  refs?: readonly FeatureRequest[],
  now: Date = new Date(),
): Promise<{ entityKey: string; features: OnlineFeature[] } | undefined> {
  const defs = await featuresFor(db, entity, refs);
  const found = await read(db, defs, selector, now);
  if (!found) return undefined;
  if (found.stored === 0 && !(await isKnown(db, entity, selector, found.entityKey))) {
    return undefined;
  }
  return { entityKey: found.entityKey, features: found.features };
}

/**
 * Whether an entity without any online value is known elsewhere: a graph-resolved person always
 * is; a person key `unresolved:<id>` when events carry that person id; an item when the catalog
 * (items) has it. Only asked on the rare path, so lookups stay one statement.
 */
async function isKnown(
  db: Queryable,
  entity: Entity,
  selector: EntitySelector,
  key: string,
): Promise<boolean> {
  const bar = entity === 'person_item' ? key.indexOf('|') : -1;
  if (entity === 'person_item' && bar <= 0) return false;
  const person = entity === 'person' ? key : entity === 'person_item' ? key.slice(0, bar) : null;
  const item = entity === 'item' ? key : entity === 'person_item' ? key.slice(bar + 1) : null;
  const checkPerson = person !== null && 'key' in selector;
  const unresolved = person?.startsWith('unresolved:') ? person.slice('unresolved:'.length) : null;
  const personId = person !== null && /^[1-9][0-9]{0,14}$/.test(person) ? Number(person) : null;
  const { rows } = await db.query<{ known: boolean }>(
    `select (not $1::boolean
             or exists (select 1 from persons where id = $2::bigint)
             or exists (select 1 from events where person_id = $3::text))
        and ($4::text is null or exists (select 1 from items where item_id = $4)) as known`,
    [checkPerson, personId, unresolved, item],
  );
  return rows[0]?.known ?? false;
}
