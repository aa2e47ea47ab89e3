/**
 * What the graph says about one person, for `pops identity show` and the API: its identifiers, the
 * merges that made it (and those undone), unmerges, conflicts, and how many events it holds. Looked
 * up by any identifier (normalized the way resolution normalizes it) or by a person id, current or
 * merged (a merged id leads to the person it is part of now).
 */
import type { Queryable } from '../../common/db.js';
import { storedValue } from './identifiers.js';

export type PersonLookup = { type: string; value: string } | { personId: number };

export interface PersonView {
  /** The canonical person id: the key downstream systems use. */
  personId: number;
  /** What was looked up, and the person row it resolved to first. */
  lookedUp: PersonLookup & { node: number };
  firstSeenAt: string;
  /** Person rows (nodes) this person is made of, itself included. */
  nodes: number[];
  events: number;
  identifiers: Array<{ type: string; value: string; firstSeenAt: string; node: number }>;
  merges: Array<{
    mergeId: number;
    mergedFrom: number;
    mergedInto: number;
    fromNode: number;
    intoNode: number;
    messageId: string;
    eventId: number;
    mergedAt: string;
    workflowId: string;
    decisions: unknown;
    /** The unmerge that undid it, if any. */
    undoneBy: number | null;
  }>;
  unmerges: Array<{
    unmergeId: number;
    mergeId: number;
    keptPerson: number;
    splitPerson: number;
    reason: string;
    requestedBy: string;
    unmergedAt: string;
    revertedAt: string | null;
    revertedReason: string | null;
  }>;
  conflicts: Array<{
    type: string;
    value: string;
    messageId: string;
    identifierPerson: number;
    attributedPerson: number;
    reason: string;
    recordedAt: string;
  }>;
}

/** Parses `type:value` (or a bare person id) as the CLI and API take it. */
export function parseLookup(text: string): PersonLookup | null {
  if (/^\d{1,15}$/.test(text)) return { personId: Number(text) };
  const colon = text.indexOf(':');
  if (colon <= 0 || colon === text.length - 1) return null;
  return { type: text.slice(0, colon), value: text.slice(colon + 1) };
}

/** The person an identifier or person id belongs to now, or undefined when the graph has none. */
export async function showPerson(
  db: Queryable,
  lookup: PersonLookup,
): Promise<PersonView | undefined> {
  const node = await findNode(db, lookup);
  if (node === undefined) return undefined;
  const { rows } = await db.query<{ canonical: number; first_seen_at: Date }>(
    `select c.id as canonical, c.first_seen_at
       from persons p join persons c on c.id = p.canonical_id where p.id = $1`,
    [node],
  );
  const person = rows[0];
  if (!person) return undefined;
  const nodes = await db.query<{ id: number }>(
    'select id from persons where canonical_id = $1 order by id',
    [person.canonical],
  );
  const ids = nodes.rows.map((r) => r.id);
  return {
    personId: person.canonical,
    lookedUp: { ...lookup, node },
    firstSeenAt: person.first_seen_at.toISOString(),
    nodes: ids,
    events: await countEvents(db, ids),
    identifiers: await identifiersOf(db, ids),
    merges: await mergesOf(db, ids),
    unmerges: await unmergesOf(db, ids),
    conflicts: await conflictsOf(db, ids),
  };
}

async function findNode(db: Queryable, lookup: PersonLookup): Promise<number | undefined> {
  if ('personId' in lookup) {
    const { rows } = await db.query<{ id: number }>('select id from persons where id = $1', [
      lookup.personId,
    ]);
    return rows[0]?.id;
  }
  const value = storedValue(lookup.type, lookup.value) ?? lookup.value.trim();
  const { rows } = await db.query<{ person_id: number }>(
    'select person_id from identifiers where type = $1 and value = $2',
    [lookup.type, value],
  );
  return rows[0]?.person_id;
}

/** Instants as ISO-8601 UTC text (`…Z`), the way every pops output writes them. */
function withIsoTimes<R extends object>(rows: R[]): R[] {
  return rows.map(
    (row) =>
      Object.fromEntries(
        Object.entries(row).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]),
      ) as R,
  );
}

async function countEvents(db: Queryable, nodes: number[]): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::bigint as n from event_persons where person_id = any($1::bigint[])',
    [nodes],
  );
  return rows[0]?.n ?? 0;
}

async function identifiersOf(db: Queryable, nodes: number[]) {
  const { rows } = await db.query<PersonView['identifiers'][number]>(
    `select type, value, first_seen_at as "firstSeenAt", person_id as node
       from identifiers where person_id = any($1::bigint[])
      order by first_seen_at, type, value`,
    [nodes],
  );
  return withIsoTimes(rows);
}

async function mergesOf(db: Queryable, nodes: number[]) {
  const { rows } = await db.query<PersonView['merges'][number]>(
    `select id as "mergeId", merged_from as "mergedFrom", merged_into as "mergedInto",
            from_node as "fromNode", into_node as "intoNode", message_id as "messageId",
            event_id as "eventId", merged_at as "mergedAt",
            workflow_id as "workflowId", decisions, undone_by as "undoneBy"
       from identity_merges
      where from_node = any($1::bigint[]) or into_node = any($1::bigint[])
      order by id`,
    [nodes],
  );
  return withIsoTimes(rows);
}

async function unmergesOf(db: Queryable, nodes: number[]) {
  const { rows } = await db.query<PersonView['unmerges'][number]>(
    `select id as "unmergeId", merge_id as "mergeId", kept_person as "keptPerson",
            split_person as "splitPerson", reason, requested_by as "requestedBy",
            unmerged_at as "unmergedAt",
            reverted_at as "revertedAt", reverted_reason as "revertedReason"
       from identity_unmerges
      where from_node = any($1::bigint[]) or into_node = any($1::bigint[])
      order by id`,
    [nodes],
  );
  return withIsoTimes(rows);
}

async function conflictsOf(db: Queryable, nodes: number[]) {
  const { rows } = await db.query<PersonView['conflicts'][number]>(
    `select identifier_type as type, identifier_value as value, message_id as "messageId",
            identifier_person_id as "identifierPerson", attributed_person_id as "attributedPerson",
            reason, recorded_at as "recordedAt"
       from identity_conflicts
      where identifier_person_id = any($1::bigint[]) or attributed_person_id = any($1::bigint[])
      order by id`,
    [nodes],
  );
  return withIsoTimes(rows);
}
