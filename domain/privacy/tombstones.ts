/**
 * Ingestion's side of deletion: a message carrying an identifier whose keyed hash is a tombstone
 * (domain/privacy/requests.ts writes them before a deletion removes anything) is dropped before
 * it is stored, so a deleted person is not re-created by events still on their way. Only the
 * number dropped per day and source is kept.
 */
import type { Queryable } from '../../common/db.js';
import type { Reason } from '../contracts/check.js';
import { identifierHash } from './keys.js';
import { HASHED_TYPES } from '../identity/identifiers.js';
import { carriesPiiSql, PII_PATHS, piiFieldsSql } from './minimize.js';
import { type IdentifierInput, storedIdentifier } from './pii.js';

/** What a message says about who sent it, as far as tombstones go. */
export interface TombstoneFields {
  row: { user_id: string | null; anonymous_id: string | null; previous_id: string | null };
  /** The checked message (its traits and context are read). */
  fields: object;
}

function at(root: unknown, ...path: string[]): unknown {
  let current = root;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/** The keyed hashes of the identifiers a message carries. */
export function messageHashes(message: TombstoneFields): string[] {
  const { row, fields } = message;
  const raw: Array<[string, unknown]> = [
    ['user_id', row.user_id],
    ['anonymous_id', row.anonymous_id],
    // An alias's previous id may be typed either way by the identity rules.
    ['user_id', row.previous_id],
    ['anonymous_id', row.previous_id],
    ...PII_PATHS.map(({ type, path }): [string, unknown] => [type, at(fields, ...path)]),
  ];
  const hashes: string[] = [];
  for (const [type, value] of raw) {
    if (typeof value !== 'string' && typeof value !== 'number') continue;
    const stored = storedIdentifier({ type, value: String(value) });
    if (stored) hashes.push(identifierHash(stored));
  }
  return hashes;
}

/**
 * The keyed hashes of identifiers as tombstones key them (their stored form; a value that cannot
 * be an identifier is left out): for readers that check privacy_tombstones in a statement of
 * their own (a decision, a consent write) instead of a query more.
 */
export function identifierHashes(identifiers: readonly IdentifierInput[]): string[] {
  return identifiers.flatMap((identifier) => {
    const stored = storedIdentifier(identifier);
    return stored ? [identifierHash(stored)] : [];
  });
}

/**
 * The messages without a tombstoned identifier; the others are counted in
 * privacy_dropped_messages (one query when there is no tombstone at all).
 */
export async function droppedByTombstones<M extends TombstoneFields>(
  db: Queryable,
  source: string,
  receivedAt: Date,
  messages: readonly M[],
): Promise<M[]> {
  const any = await db.query('select 1 from privacy_tombstones limit 1');
  if (any.rowCount === 0) return [...messages];
  const hashes = messages.map(messageHashes);
  const { rows } = await db.query<{ identifier_hash: string }>(
    'select identifier_hash from privacy_tombstones where identifier_hash = any($1::text[])',
    [[...new Set(hashes.flat())]],
  );
  const dead = new Set(rows.map((r) => r.identifier_hash));
  if (dead.size === 0) return [...messages];
  const kept = messages.filter((_, i) => !(hashes[i] ?? []).some((h) => dead.has(h)));
  await db.query(
    `insert into privacy_dropped_messages (day, source, messages)
     values (($1::timestamptz at time zone 'UTC')::date, $2, $3)
     on conflict (day, source) do update
       set messages = privacy_dropped_messages.messages + excluded.messages`,
    [receivedAt, source, messages.length - kept.length],
  );
  return kept;
}

/** A staged row dropped by a tombstone that its contract would have quarantined. */
export interface DroppedBreach {
  event: string;
  reasons: Reason[];
}

/**
 * Deletes the staged rows of an NDJSON import (the temp table `import_events`) that carry a
 * tombstoned identifier; returns how many, and those of them bound for the quarantine. One query
 * when there is no tombstone.
 */
export async function dropTombstonedStaged(
  db: Queryable,
  source: string,
): Promise<{ dropped: number; breaches: DroppedBreach[] }> {
  const none = { dropped: 0, breaches: [] };
  const any = await db.query('select 1 from privacy_tombstones limit 1');
  if (any.rowCount === 0) return none;
  const { rows } = await db.query<{ type: string; value: string }>(
    `select distinct t.type, t.value from import_events i
       cross join lateral (values ('user_id', i.user_id), ('anonymous_id', i.anonymous_id),
                                  ('user_id', i.previous_id), ('anonymous_id', i.previous_id),
                                  ${piiFieldsSql('i.')
                                    .map((f) => `('${f.type}', ${f.sql})`)
                                    .join(', ')}) as t(type, value)
      where t.value is not null`,
  );
  // Every spelling of each hash (`hank` and `hank ` are one user id): the rows are deleted by
  // their raw values, so each spelling must be named.
  const byHash = new Map<string, Array<{ type: string; value: string }>>();
  for (const row of rows) {
    const stored = storedIdentifier(row);
    if (!stored) continue;
    const hash = identifierHash(stored);
    byHash.set(hash, [...(byHash.get(hash) ?? []), { type: row.type, value: row.value }]);
  }
  const dead = await db.query<{ identifier_hash: string }>(
    'select identifier_hash from privacy_tombstones where identifier_hash = any($1::text[])',
    [[...byHash.keys()]],
  );
  const raw = dead.rows.flatMap((r) => byHash.get(r.identifier_hash) ?? []);
  if (raw.length === 0) return none;
  const hashed = (r: { type: string }) => HASHED_TYPES.includes(r.type);
  const ids = raw.filter((r) => !hashed(r)).map((r) => r.value);
  // Stored emails and phones (`h1:`, the type inside the hash): one list for both.
  const pii = raw.filter(hashed).map((r) => r.value);
  const deleted = await db.query<{ event: string | null; reasons: Reason[] | null }>(
    `delete from import_events
      where user_id = any($1::text[]) or anonymous_id = any($1::text[])
         or previous_id = any($1::text[])
         or ${carriesPiiSql(2)}
     returning event, reasons`,
    [ids, pii],
  );
  const n = deleted.rowCount ?? 0;
  if (n > 0) {
    await db.query(
      `insert into privacy_dropped_messages (day, source, messages)
       values ((now() at time zone 'UTC')::date, $1, $2)
       on conflict (day, source) do update
         set messages = privacy_dropped_messages.messages + excluded.messages`,
      [source, n],
    );
  }
  const breaches = deleted.rows.flatMap((r) =>
    r.reasons === null ? [] : [{ event: r.event ?? '', reasons: r.reasons }],
  );
  return { dropped: n, breaches };
}
