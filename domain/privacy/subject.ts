/**
 * The subject of a data subject request and its rows in every table of person-tables.ts. The
 * subject is captured once, before anything is deleted (`privacy_subjects`): the person the
 * identifier resolves to with every person merged into it, their identifiers, raw user and
 * anonymous ids, person keys, events, messages and decisions. Each table's rows are then found
 * from that row alone, so a step retried after the identifiers are gone finds the same rows.
 */
import type { PoolClient, Queryable } from '../../common/db.js';
import { HASHED_TYPES } from '../identity/identifiers.js';
import { identifierHash } from './keys.js';
import { carriesPiiSql, piiFieldsSql } from './minimize.js';
import { PERSON_TABLES, type PersonColumn, type PersonTable } from './person-tables.js';
import { type IdentifierInput, invalidIdentifier, storedIdentifier } from './pii.js';
import { markDriftSets, markTrainingSets } from './retention.js';

export interface Subject {
  personIds: number[];
  personKeys: string[];
  rawIds: string[];
  identifiers: IdentifierInput[];
  eventIds: number[];
  messageIds: string[];
  decisionIds: string[];
  identifierHashes: string[];
}

/** Thrown when the identifier cannot be one. */
export class SubjectInputError extends Error {}

const RAW_TYPES = new Set(['user_id', 'anonymous_id']);

/** The stored form of a request's identifier, or a SubjectInputError naming it. */
export function requestIdentifier(identifier: IdentifierInput): IdentifierInput {
  const stored = storedIdentifier(identifier);
  if (!stored) throw new SubjectInputError(invalidIdentifier(identifier.type));
  return stored;
}

/** Finds the subject of an identifier in the tables as they are now. */
export function findSubject(db: Queryable, identifier: IdentifierInput): Promise<Subject> {
  return findSubjectOf(db, [requestIdentifier(identifier)]);
}

/**
 * The subject of several identifiers (in stored form) at once: the persons any of them belongs
 * to, with everything findSubject adds.
 */
async function findSubjectOf(db: Queryable, asked: readonly IdentifierInput[]): Promise<Subject> {
  const persons = await db.query<{ id: number }>(
    `select p.id from persons p
      where p.canonical_id in (select q.canonical_id from identifiers i
                                 join persons q on q.id = i.person_id
                                where (i.type, i.value) in
                                      (select * from unnest($1::text[], $2::text[])))
      order by p.id`,
    [asked.map((a) => a.type), asked.map((a) => a.value)],
  );
  const personIds = persons.rows.map((r) => r.id);
  const found = await db.query<{ type: string; value: string }>(
    `select type, value from identifiers where person_id = any($1::bigint[]) order by type, value`,
    [personIds],
  );
  const identifiers = [...found.rows];
  for (const a of asked) {
    if (!identifiers.some((i) => i.type === a.type && i.value === a.value)) identifiers.push(a);
  }
  const add = (more: readonly IdentifierInput[]) => {
    let added = 0;
    for (const id of more) {
      if (identifiers.some((i) => i.type === id.type && i.value === id.value)) continue;
      identifiers.push(id);
      added += 1;
    }
    return added;
  };
  // What no merge has linked yet is followed until nothing new comes (a few rounds at most):
  // events that carry one of the emails or phones (not resolved yet, or kept out of the graph by
  // a limit), whose senders are the subject's too; and events not resolved yet that the raw ids
  // sent, whose other ids (an identify's anonymous id, an alias's previous id) and emails and
  // phones the next merge would join to the person.
  const carriedEvents: number[] = [];
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const carrying = await eventsCarrying(db, identifiers);
    carriedEvents.push(...carrying.eventIds);
    const sent = await unresolvedSentBy(db, rawValues(identifiers));
    if (add(carrying.senders) + add(sent) === 0) break;
  }
  const rawIds = rawValues(identifiers);
  const canonical = personIds.length > 0 ? await canonicalOf(db, personIds[0] ?? 0) : null;
  const personKeys = [
    ...(canonical === null ? [] : [String(canonical)]),
    ...personIds.filter((id) => id !== canonical).map(String),
    ...rawIds.map((raw) => `unresolved:${raw}`),
  ];
  const events = await db.query<{ id: number; message_id: string }>(
    `select e.id, e.message_id from events e
      where e.id in (select ep.event_id from event_persons ep
                      where ep.person_id = any($1::bigint[]))
         or e.person_id = any($2::text[]) or e.user_id = any($2::text[])
         or e.anonymous_id = any($2::text[]) or e.previous_id = any($2::text[])
         or e.id = any($3::bigint[])
      order by e.id`,
    [personIds, rawIds, [...new Set(carriedEvents)]],
  );
  const decisions = await db.query<{ decision_id: string }>(
    'select decision_id from exposures where person_id = any($1::text[])',
    [personKeys],
  );
  return {
    personIds,
    personKeys,
    rawIds,
    identifiers,
    eventIds: events.rows.map((r) => r.id),
    messageIds: events.rows.map((r) => r.message_id),
    decisionIds: decisions.rows.map((r) => r.decision_id),
    identifierHashes: identifiers.map(identifierHash),
  };
}

/**
 * The events whose traits (or context.traits) carry one of the identifiers' emails or phones, in
 * their stored form, and the user and anonymous ids that sent them (identifiers of the subject:
 * tombstoned with the others). Reads all of `events` (no index
 * covers the traits): a request is rare.
 */
async function eventsCarrying(
  db: Queryable,
  identifiers: readonly IdentifierInput[],
): Promise<{ eventIds: number[]; senders: IdentifierInput[] }> {
  const pii = identifiers.filter((i) => HASHED_TYPES.includes(i.type)).map((i) => i.value);
  if (pii.length === 0) return { eventIds: [], senders: [] };
  const { rows } = await db.query<{ id: number; user_id: string | null; anon: string | null }>(
    `select id, user_id, anonymous_id as anon from events where ${carriesPiiSql(1)}`,
    [pii],
  );
  const senders = rows.flatMap((r) => [
    ...(r.user_id ? [{ type: 'user_id', value: r.user_id }] : []),
    ...(r.anon ? [{ type: 'anonymous_id', value: r.anon }] : []),
  ]);
  return { eventIds: rows.map((r) => r.id), senders };
}

/** Rounds of following unresolved events (each finds what the one before added). */
const MAX_ROUNDS = 5;

function rawValues(identifiers: readonly IdentifierInput[]): string[] {
  return [...new Set(identifiers.filter((i) => RAW_TYPES.has(i.type)).map((i) => i.value))];
}

/**
 * The identifiers of the events no merge has resolved yet that one of the raw ids sent (as user,
 * anonymous or alias previous id): their user and anonymous ids, an alias's previous id (as
 * either type, as tombstones read it), and the emails and phones they carry (stored form).
 */
async function unresolvedSentBy(
  db: Queryable,
  rawIds: readonly string[],
): Promise<IdentifierInput[]> {
  if (rawIds.length === 0) return [];
  const pii = piiFieldsSql('e.');
  const { rows } = await db.query<Record<string, string | null>>(
    `select e.user_id, e.anonymous_id, e.previous_id,
            ${pii.map((f, i) => `${f.sql} as pii_${i}`).join(', ')}
       from events e
      where (e.user_id = any($1::text[]) or e.anonymous_id = any($1::text[])
             or e.previous_id = any($1::text[]))
        and not exists (select 1 from event_persons ep where ep.event_id = e.id)`,
    [rawIds],
  );
  return rows.flatMap((r) => {
    const ids: IdentifierInput[] = [];
    if (r['user_id']) ids.push({ type: 'user_id', value: r['user_id'] });
    if (r['anonymous_id']) ids.push({ type: 'anonymous_id', value: r['anonymous_id'] });
    const previous = r['previous_id'];
    if (previous) {
      ids.push({ type: 'user_id', value: previous }, { type: 'anonymous_id', value: previous });
    }
    pii.forEach((f, i) => {
      const value = r[`pii_${i}`];
      if (value && value.startsWith('h1:')) ids.push({ type: f.type, value });
    });
    return ids;
  });
}

async function canonicalOf(db: Queryable, personId: number): Promise<number> {
  const { rows } = await db.query<{ canonical_id: number }>(
    'select canonical_id from persons where id = $1',
    [personId],
  );
  return rows[0]?.canonical_id ?? personId;
}

/** Stores the subject of a request unless one is stored; returns the stored one. */
export async function captureSubject(
  client: PoolClient,
  requestId: string,
  identifier: IdentifierInput,
): Promise<Subject> {
  const stored = await storedSubject(client, requestId);
  if (stored) return stored;
  const s = await findSubject(client, identifier);
  await client.query(
    `insert into privacy_subjects (request_id, person_ids, person_keys, raw_ids, identifiers,
                                   event_ids, message_ids, decision_ids, identifier_hashes)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      requestId,
      s.personIds,
      s.personKeys,
      s.rawIds,
      JSON.stringify(s.identifiers),
      s.eventIds,
      s.messageIds,
      s.decisionIds,
      s.identifierHashes,
    ],
  );
  return s;
}

/**
 * Adds to a stored subject what its identifiers reach now (messages stored, and merges made,
 * since it was captured: before its tombstones were written, ingestion still took them) and
 * returns the keyed hashes of the identifiers it adds. Run under the graph lock, after the
 * tombstones and before any row is deleted.
 */
export async function widenSubject(client: PoolClient, requestId: string): Promise<string[]> {
  const before = await storedSubject(client, requestId);
  if (!before) return [];
  const now = await findSubjectOf(client, before.identifiers);
  const union = <T>(a: readonly T[], b: readonly T[]) => [...new Set([...a, ...b])];
  const key = (i: IdentifierInput) => `${i.type}\u0000${i.value}`;
  const known = new Set(before.identifiers.map(key));
  const added = now.identifiers.filter((i) => !known.has(key(i)));
  const hashes = union(before.identifierHashes, now.identifierHashes);
  await client.query(
    `update privacy_subjects set person_ids = $2, person_keys = $3, raw_ids = $4,
            identifiers = $5, event_ids = $6, message_ids = $7, decision_ids = $8,
            identifier_hashes = $9
      where request_id = $1`,
    [
      requestId,
      union(before.personIds, now.personIds),
      union(before.personKeys, now.personKeys),
      union(before.rawIds, now.rawIds),
      JSON.stringify([...before.identifiers, ...added]),
      union(before.eventIds, now.eventIds),
      union(before.messageIds, now.messageIds),
      union(before.decisionIds, now.decisionIds),
      hashes,
    ],
  );
  return added.map(identifierHash);
}

/** The stored subject of a request, or undefined. */
export async function storedSubject(
  db: Queryable,
  requestId: string,
): Promise<Subject | undefined> {
  const { rows } = await db.query<{
    person_ids: number[];
    person_keys: string[];
    raw_ids: string[];
    identifiers: IdentifierInput[];
    event_ids: number[];
    message_ids: string[];
    decision_ids: string[];
    identifier_hashes: string[];
  }>('select * from privacy_subjects where request_id = $1', [requestId]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    personIds: r.person_ids,
    personKeys: r.person_keys,
    rawIds: r.raw_ids,
    identifiers: r.identifiers,
    eventIds: r.event_ids,
    messageIds: r.message_ids,
    decisionIds: r.decision_ids,
    identifierHashes: r.identifier_hashes,
  };
}

/** The request's subject row (`$1` is the request id). */
const SUBJECT_SQL = 'privacy_subjects s where s.request_id = $1';

/**
 * The subject row's columns, by what a person-table column holds (`t` is the person table: its
 * columns are qualified, since privacy_exports shares a column name with the subject row).
 *
 * Each test is a subquery that does not depend on the row, so PostgreSQL runs it once and probes
 * a hash of its values per row (a hashed SubPlan): a row costs the same whether the subject has
 * one event or a hundred thousand. (`t.x = any(s.event_ids)` inside a per-row `exists` searched
 * the whole array for every row: 380 s to delete 40,000 of 200,000 events.)
 */
function matchSql(c: PersonColumn): string {
  const col = `t.${c.column}`;
  const listed = (array: string): string =>
    `${col} in (select unnest(s.${array}) from ${SUBJECT_SQL})`;
  switch (c.by) {
    case 'person_id':
      return listed('person_ids');
    case 'person_key':
      return listed('person_keys');
    case 'entity_key':
      // A person key alone, or `<person key>|<item id>` (person keys are few: tested per row).
      return `(${listed('person_keys')} or exists (
                 select 1 from privacy_subjects s, unnest(s.person_keys) k
                  where s.request_id = $1 and left(${col}, length(k) + 1) = k || '|'))`;
    case 'raw_id':
      return listed('raw_ids');
    case 'identifier':
      return `(${col}, t.${c.valueColumn ?? 'value'}) in
                (select x ->> 'type', x ->> 'value'
                   from privacy_subjects s, jsonb_array_elements(s.identifiers) x
                  where s.request_id = $1)`;
    case 'event_id':
      return listed('event_ids');
    case 'message_id':
      return listed('message_ids');
    case 'decision_id':
      return listed('decision_ids');
    case 'identifier_hash':
      return `${col} && (select s.identifier_hashes from ${SUBJECT_SQL})`;
  }
}

/**
 * The condition that selects a table's rows of the request's subject (`$1` is the request id), with
 * the table named `t`. Without a subject row it selects nothing.
 */
export function rowsOfSubjectSql(table: PersonTable): string {
  return `(${table.columns.map(matchSql).join('\n or ')})`;
}

/** Deletes a table's rows of the subject; returns how many. */
export async function deleteSubjectRows(
  client: PoolClient,
  requestId: string,
  table: PersonTable,
): Promise<number> {
  if (table.table === 'identity_unmerges') {
    // identity_merges.undone_by points at unmerges that are about to go.
    await client.query(
      `update identity_merges set undone_by = null
        where undone_by in (select t.id from identity_unmerges t where ${rowsOfSubjectSql(table)})`,
      [requestId],
    );
  }
  const marks = MARKS_SETS[table.table];
  if (marks) {
    // The sets the rows came from count them as pruned, as retention does: they are not whole.
    const { rows } = await client.query<{ n: number }>(
      `with gone as (delete from ${table.table} t where ${rowsOfSubjectSql(table)}
                     returning ${marks.returning}), ${marks.after}
       select count(*)::int as n from gone`,
      [requestId],
    );
    return rows[0]?.n ?? 0;
  }
  const result = await client.query(
    `delete from ${table.table} t where ${rowsOfSubjectSql(table)}`,
    [requestId],
  );
  return result.rowCount ?? 0;
}

/**
 * Rows of training and drift sets: their deletion adds to the set's pruned counts (migration
 * 0023), so the rows left stay the built count minus the pruned one. A training set's
 * point-in-time rows are counted through its examples, as by retention.
 */
const MARKS_SETS: Readonly<Record<string, { returning: string; after: string }>> = {
  training_examples: { returning: 't.set_key, t.split', after: markTrainingSets('gone') },
  pit_set_rows: { returning: 't.set_key', after: markDriftSets('gone') },
};

/** A table's rows of the subject as JSON objects (for the export bundle). */
export async function subjectRows(
  db: Queryable,
  requestId: string,
  table: PersonTable,
): Promise<Array<Record<string, unknown>>> {
  const { rows } = await db.query<{ row: Record<string, unknown> }>(
    `select to_jsonb(t) as row from ${table.table} t where ${rowsOfSubjectSql(table)}`,
    [requestId],
  );
  return rows.map((r) => r.row);
}

/** The tables of person data, in deletion order. */
export function personTables(): readonly PersonTable[] {
  return PERSON_TABLES;
}
