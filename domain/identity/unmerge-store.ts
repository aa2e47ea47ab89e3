/**
 * The SQL of unmerge and remerge (domain/identity/unmerge.ts): reading a person's rows and merge
 * links, writing person rows whole, and the unmerge ledger. Every function runs in the caller's
 * transaction, under the identity lock.
 */
import type { PoolClient } from '../../common/db.js';
import type { GraphEditBy, UnmergeResult } from './unmerge.js';

export interface PersonState {
  id: number;
  canonical_id: number;
  merged_into: number | null;
  merged_at: string | null;
  first_seen_at: string;
}

export interface MergeRow {
  id: number;
  merged_from: number;
  merged_into: number;
  from_node: number;
  into_node: number;
  undone_by: number | null;
}

export interface UnmergeRow {
  id: number;
  merge_id: number;
  from_node: number;
  into_node: number;
  canonical_before: number;
  persons_before: PersonState[];
  last_merge_id: number;
  reverted_at: Date | null;
  reverted_workflow_id: string | null;
  reverted_run_id: string | null;
  reverted_exact: boolean | null;
}

/**
 * True when no merge since `unmerge` touched any of the nodes, nor any later unmerge that was not
 * itself reverted exactly (one that was left the rows as they were).
 */
export async function untouchedSince(client: PoolClient, unmerge: UnmergeRow, nodes: number[]) {
  const { rows } = await client.query<{ n: number }>(
    `select (select count(*) from identity_merges
              where id > $1 and (from_node = any($3::bigint[]) or into_node = any($3::bigint[])))
          + (select count(*) from identity_unmerges
              where id > $2 and reverted_exact is not true
                and (from_node = any($3::bigint[]) or into_node = any($3::bigint[])))
            as n`,
    [unmerge.last_merge_id, unmerge.id, nodes],
  );
  return Number(rows[0]?.n ?? 1) === 0;
}

/** The unmerge this workflow run already made, if any (a retry returns it). */
export async function findUnmergeByRun(
  client: PoolClient,
  by: GraphEditBy,
): Promise<Omit<UnmergeResult, 'replayed'> | undefined> {
  const { rows } = await client.query<Omit<UnmergeResult, 'replayed'>>(
    `select id as "unmergeId", merge_id as "mergeId", canonical_before as "canonicalBefore",
            kept_person as "keptPerson", split_person as "splitPerson",
            kept_persons as "keptPersons", split_persons as "splitPersons"
       from identity_unmerges where workflow_id = $1 and run_id = $2`,
    [by.workflowId, by.runId],
  );
  return rows[0];
}

/** The edit's audit row, in the edit's transaction: both commit, or neither. */

/** The canonical person of a person row. */
export async function canonicalOf(client: PoolClient, person: number): Promise<number> {
  const { rows } = await client.query<{ canonical_id: number }>(
    'select canonical_id from persons where id = $1',
    [person],
  );
  const row = rows[0];
  if (!row) throw new Error(`identity graph: person ${person} does not exist`);
  return row.canonical_id;
}

/** Every person row of a canonical person, locked for the edit, by id. */
export async function componentOf(client: PoolClient, canonical: number) {
  const { rows } = await client.query<PersonState>(
    `select id, canonical_id, merged_into, merged_at, first_seen_at
       from persons where canonical_id = $1 for update`,
    [canonical],
  );
  return new Map(rows.map((r) => [r.id, asState(r)]));
}

/** A person row with ids as numbers and instants as ISO text, to compare and store as JSON. */
export function asState(row: PersonState): PersonState {
  const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : (v as string | null));
  return {
    id: Number(row.id),
    canonical_id: Number(row.canonical_id),
    merged_into: row.merged_into === null ? null : Number(row.merged_into),
    merged_at: iso(row.merged_at),
    first_seen_at: iso(row.first_seen_at) as string,
  };
}

/** The links of a person's merges that no unmerge has undone. */
export async function activeEdges(client: PoolClient, canonical: number) {
  const { rows } = await client.query<{ id: number; from_node: number; into_node: number }>(
    `select m.id, m.from_node, m.into_node
       from identity_merges m join persons p on p.id = m.from_node
      where p.canonical_id = $1 and m.undone_by is null`,
    [canonical],
  );
  return rows;
}

/** The nodes reachable from `start` over the edges (undirected). */

/**
 * When each node was first seen: the earliest first sighting of its own identifiers, or its row's
 * first_seen_at when it holds none.
 */
export async function nodeFirstSeen(
  client: PoolClient,
  nodes: number[],
  persons: Map<number, PersonState>,
): Promise<Map<number, string>> {
  const { rows } = await client.query<{ person_id: number; first: Date }>(
    `select person_id, min(first_seen_at) as first from identifiers
      where person_id = any($1::bigint[]) group by person_id`,
    [nodes],
  );
  const own = new Map(rows.map((r) => [Number(r.person_id), r.first.toISOString()]));
  return new Map(nodes.map((id) => [id, own.get(id) ?? persons.get(id)?.first_seen_at ?? '']));
}

/** Records an unmerge with the rows it changes as they were; returns its id. */
export async function insertUnmerge(
  client: PoolClient,
  merge: MergeRow,
  by: GraphEditBy,
  figures: {
    canonicalBefore: number;
    keptPerson: number;
    splitPerson: number;
    keptPersons: number;
    splitPersons: number;
    personsBefore: PersonState[];
  },
): Promise<number> {
  const { rows } = await client.query<{ id: number }>(
    `insert into identity_unmerges
       (merge_id, from_node, into_node, canonical_before, kept_person, split_person, kept_persons,
        split_persons, persons_before, last_merge_id, reason, requested_by, workflow_id, run_id)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb,
             (select coalesce(max(id), 0) from identity_merges), $10, $11, $12, $13)
     returning id`,
    [
      merge.id,
      merge.from_node,
      merge.into_node,
      figures.canonicalBefore,
      figures.keptPerson,
      figures.splitPerson,
      figures.keptPersons,
      figures.splitPersons,
      JSON.stringify(figures.personsBefore),
      by.reason,
      by.requestedBy,
      by.workflowId,
      by.runId,
    ],
  );
  return Number(rows[0]?.id);
}

/** Writes whole person rows in one statement (so the row checks hold at the end of it). */
export async function writePersons(
  client: PoolClient,
  rows: readonly PersonState[],
): Promise<void> {
  if (rows.length === 0) return;
  await client.query(
    `update persons p
        set canonical_id = r.canonical_id, merged_into = r.merged_into,
            merged_at = r.merged_at, first_seen_at = r.first_seen_at
       from jsonb_to_recordset($1::jsonb)
            as r(id bigint, canonical_id bigint, merged_into bigint, merged_at timestamptz,
                 first_seen_at timestamptz)
      where p.id = r.id`,
    [JSON.stringify(rows)],
  );
}
