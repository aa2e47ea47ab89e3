/**
 * How a feature's source becomes rows `(entity_id, ts, row_key, props)` in SQL, and how entity keys
 * are spelled. Every part of the feature store (backfills, point-in-time reads, the online lookup,
 * training labels) builds keys through here, so they agree.
 *
 * Entity keys:
 * - person: the event's canonical person in the identity graph (`event_canonical_persons`), as
 *   text; an event that no merge has resolved yet is keyed `unresolved:<events.person_id>`.
 * - item: `events.item_id` (events without one are not rows of item features).
 * - person_item: `<person key>|<item id>`.
 */
import type { FeatureDefinition } from './definition.js';

export type Entity = FeatureDefinition['entity'];

/** The entity key of an `events e` row joined to `event_canonical_persons cp`. */
export function entityKeySql(entity: Entity): string {
  const person = `coalesce(cp.person_id::text, 'unresolved:' || e.person_id)`;
  switch (entity) {
    case 'person':
      return person;
    case 'item':
      return 'e.item_id';
    case 'person_item':
      return `${person} || '|' || e.item_id`;
  }
}

/** `events e` with each event's canonical person (left join: unresolved events keep theirs). */
export const EVENTS_WITH_PERSONS =
  'events e left join event_canonical_persons cp on cp.event_id = e.id';

/** A SQL string literal. */
export function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/**
 * A select of the source's rows with columns entity_id (text), ts (timestamptz), row_key (a
 * deterministic tie-break among rows of equal ts: the event id, or the row's JSON) and props
 * (jsonb: the event's properties, or the SQL row itself). `range` bounds ts as [from, until).
 */
export function sourceRowsSql(
  f: FeatureDefinition,
  range: { from: string; until: string },
): string {
  if ('events' in f.source) {
    const key = entityKeySql(f.entity);
    const bySource = f.source.events.source
      ? ` and e.source = ${literal(f.source.events.source)}`
      : '';
    const itemNeeded = f.entity === 'person' ? '' : ' and e.item_id is not null';
    return `select ${key} as entity_id, e.ts, lpad(e.id::text, 20, '0') as row_key, e.properties as props
      from ${EVENTS_WITH_PERSONS}
     where e.type = 'track' and e.event = ${literal(f.source.events.event)}${bySource}${itemNeeded}
       and e.ts >= ${range.from} and e.ts < ${range.until}`;
  }
  return `select q.entity_id::text as entity_id, q.ts::timestamptz as ts,
                 to_jsonb(q)::text as row_key, to_jsonb(q) as props
      from (${f.source.sql}) q
     where q.entity_id is not null
       and q.ts >= ${range.from} and q.ts < ${range.until}`;
}

/** The path of property keys as a SQL text-array literal, for `#>` and `#>>`. */
export function pathSql(path: string): string {
  const keys = path.split('.').map((k) => `"${k.replaceAll('"', '\\"')}"`);
  return literal(`{${keys.join(',')}}`);
}

/** The numeric value at a path (null when it is not a JSON number). */
export function numberAt(props: string, path: string): string {
  const at = `${props} #> ${pathSql(path)}`;
  return `case jsonb_typeof(${at}) when 'number' then (${at})::text::double precision
    when 'boolean' then case when (${at})::text::boolean then 1 else 0 end end`;
}

/** The text value at a path (null when absent). */
export function textAt(props: string, path: string): string {
  return `(${props} #>> ${pathSql(path)})`;
}
