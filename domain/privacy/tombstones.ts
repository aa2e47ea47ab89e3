/**
 * Ingestion's side of deletion: a message carrying an identifier whose keyed hash is a tombstone
 * (domain/privacy/requests.ts writes them before a deletion removes anything) is dropped before
 * it is stored, so a deleted person is not re-created by events still on their way. Only the
 * number dropped per day and source is kept.
 */
import type { Queryable } from '../../common/db.js';
import type { Reason } from '../contracts/check.js';
import { identifierHash } from './keys.js';
import { type IdentityEventRow, identifierExtractor } from '../identity/identifiers.js';
import { type IdentityRules, identityRulesSchema } from '../identity/rules.js';
import { type IdentifierInput, storedIdentifier } from './pii.js';

/** What a message says about who sent it, as far as tombstones go. */
export interface TombstoneFields {
  row: { user_id: string | null; anonymous_id: string | null; previous_id: string | null };
  /** The checked message (its traits, context and properties are read). */
  fields: object;
}

const DEFAULT_RULES = identityRulesSchema.parse({});
// One extractor per rules object: building one compiles the junk filter and hashes the block list.
const extractors = new WeakMap<IdentityRules, ReturnType<typeof identifierExtractor>>();
const EPOCH = new Date(0);
// A raw id may be typed either way: an alias's previous id by the rules, and a sender may put a
// user id in anonymousId or the reverse; the graph may hold the value under either type.
const RAW_ID_TYPES: readonly string[] = ['user_id', 'anonymous_id'];

function objectAt(fields: object, key: string): Record<string, unknown> | null {
  const value = (fields as Record<string, unknown>)[key];
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

/**
 * The keyed hashes of the identifiers a message carries: every identifier the identity rules
 * extract from it (their own extractor, so the two cannot disagree), raw ids under both types.
 */
export function messageHashes(
  message: TombstoneFields,
  rules: IdentityRules = DEFAULT_RULES,
): string[] {
  let extract = extractors.get(rules);
  if (!extract) {
    extract = identifierExtractor(rules);
    extractors.set(rules, extract);
  }
  const { row, fields } = message;
  const event: IdentityEventRow = {
    id: 0,
    messageId: '',
    ts: EPOCH,
    userId: row.user_id,
    anonymousId: row.anonymous_id,
    previousId: row.previous_id,
    traits: objectAt(fields, 'traits'),
    context: objectAt(fields, 'context'),
    properties: objectAt(fields, 'properties'),
  };
  const hashes = new Set<string>();
  for (const { type, value } of extract(event).identifiers) {
    const types = RAW_ID_TYPES.includes(type) ? RAW_ID_TYPES : [type];
    for (const t of types) hashes.add(identifierHash({ type: t, value }));
  }
  return [...hashes];
}

/** The hashes among `hashes` that are tombstones. */
export async function tombstonesAmong(
  db: Queryable,
  hashes: readonly string[],
): Promise<Set<string>> {
  if (hashes.length === 0) return new Set();
  const { rows } = await db.query<{ identifier_hash: string }>(
    'select identifier_hash from privacy_tombstones where identifier_hash = any($1::text[])',
    [hashes],
  );
  return new Set(rows.map((r) => r.identifier_hash));
}

/** Adds `n` messages of `source` to the day's count of messages dropped by a tombstone. */
async function countDropped(db: Queryable, source: string, at: Date, n: number): Promise<void> {
  if (n === 0) return;
  await db.query(
    `insert into privacy_dropped_messages (day, source, messages)
     values (($1::timestamptz at time zone 'UTC')::date, $2, $3)
     on conflict (day, source) do update
       set messages = privacy_dropped_messages.messages + excluded.messages`,
    [at, source, n],
  );
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
 * privacy_dropped_messages (one query when there is no tombstone at all, one more for the batch
 * when there is).
 */
export async function droppedByTombstones<M extends TombstoneFields>(
  db: Queryable,
  source: string,
  receivedAt: Date,
  messages: readonly M[],
  rules: IdentityRules = DEFAULT_RULES,
): Promise<M[]> {
  const any = await db.query('select 1 from privacy_tombstones limit 1');
  if (any.rowCount === 0) return [...messages];
  const hashes = messages.map((m) => messageHashes(m, rules));
  const dead = await tombstonesAmong(db, [...new Set(hashes.flat())]);
  if (dead.size === 0) return [...messages];
  const kept = messages.filter((_, i) => !(hashes[i] ?? []).some((h) => dead.has(h)));
  await countDropped(db, source, receivedAt, messages.length - kept.length);
  return kept;
}

/** A staged row dropped by a tombstone that its contract would have quarantined. */
export interface DroppedBreach {
  event: string;
  reasons: Reason[];
}

/** A staging table of an import, whose rows carry `id_hashes text[]` (messageHashes). */
export interface StagedRows {
  /** The temp table's name (a constant of the importer, never input). */
  table: string;
  /** Whether the rows have the `event` and `reasons` (null unless quarantined) columns. */
  quarantinable: boolean;
}

/** The array literal of a row's `id_hashes` (keyed hashes are hex: no quoting needed). */
export function hashesLiteral(hashes: readonly string[]): string {
  return `{${hashes.join(',')}}`;
}

/**
 * Deletes the staged rows of an import (the NDJSON and MovieLens importers) that carry a
 * tombstoned identifier, counted in privacy_dropped_messages; returns how many, and those of them
 * bound for the quarantine. One query when there is no tombstone.
 */
export async function dropTombstonedStaged(
  db: Queryable,
  source: string,
  staged: StagedRows,
): Promise<{ dropped: number; breaches: DroppedBreach[] }> {
  const none = { dropped: 0, breaches: [] };
  const any = await db.query('select 1 from privacy_tombstones limit 1');
  if (any.rowCount === 0) return none;
  // The tombstones among the staged rows' hashes (a hash semi-join), then the rows of those.
  const { rows } = await db.query<{ identifier_hash: string }>(
    `select identifier_hash from privacy_tombstones
      where identifier_hash in (select unnest(id_hashes) from ${staged.table})`,
  );
  const dead = rows.map((r) => r.identifier_hash);
  if (dead.length === 0) return none;
  const returning = staged.quarantinable
    ? 'event, reasons'
    : 'null::text as event, null as reasons';
  const deleted = await db.query<{ event: string | null; reasons: Reason[] | null }>(
    `delete from ${staged.table} where id_hashes && $1::text[] returning ${returning}`,
    [dead],
  );
  const n = deleted.rowCount ?? 0;
  await countDropped(db, source, new Date(), n);
  const breaches = deleted.rows.flatMap((r) =>
    r.reasons === null ? [] : [{ event: r.event ?? '', reasons: r.reasons }],
  );
  return { dropped: n, breaches };
}
