/**
 * Upgrading a database written before PII minimization: the emails (and phones) that earlier
 * versions stored in clear are rewritten to the form ingestion stores now (domain/privacy/
 * minimize.ts, domain/identity/identifiers.ts storedValue), so that new, hashed identifiers join
 * the old rows and no clear value is left:
 * - `events.traits` and `events.context.traits` (email, phone), after sealing each event's address
 *   into `contacts` under `unresolved:<person_id>` as ingestion does (events in id order, so that
 *   a later event's address wins; an address set by someone else after the event was received is
 *   kept);
 * - `quarantined_events.message` (its traits and context.traits);
 * - `identifiers`, `identity_conflicts` and `consent_events` of type email or phone;
 * - plain `contacts.email` (resealContacts).
 * Each table goes in batches, each batch one transaction (identity tables under the graph lock),
 * so a crash loses at most a batch's work, and a rerun skips what is in stored form already. A
 * clear identifier whose hashed form exists already (new events were resolved before the rewrite)
 * is left in place and counted as a conflict, with a warning naming the persons (never a value).
 * A table with nothing to rewrite costs one `limit 1` probe.
 */
import type { Pool, PoolClient } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { type Logger, logger } from '../../common/logger.js';
import { appendAudit } from '../audit.js';
import { HASHED_TYPES, storedValue } from '../identity/identifiers.js';
import { lockGraph } from '../identity/store.js';
import { resealContacts, setEmailAddresses } from './contacts.js';
import { HASHED_VALUE } from './keys.js';
import {
  INVALID_VALUE,
  minimizedContext,
  minimizedMessage,
  minimizedTraits,
  sendableEmail,
} from './minimize.js';

export const MINIMIZED_TABLES = [
  'events',
  'quarantined_events',
  'identifiers',
  'identity_conflicts',
  'consent_events',
  'contacts',
] as const;
export type MinimizedTable = (typeof MINIMIZED_TABLES)[number];

export interface MinimizeStoredResult {
  /** Rows rewritten to the stored form, per table (contacts: rows sealed with the current key). */
  rewritten: Record<MinimizedTable, number>;
  /** Events whose address was sealed into `contacts`. */
  sealed: number;
  /** Clear identity rows left in place because their hashed form exists already. */
  conflicts: number;
  /** Clear identity or consent values that are no email or phone: left as they are. */
  skipped: number;
}

export interface MinimizeStoredOptions {
  /** Rows per batch (one transaction each); default 500. */
  batchSize?: number;
  /** Where conflicts are warned about; default the process logger. */
  log?: Logger;
}

/** The `source` of the contacts rows sealed from stored events. */
export const SEALED_SOURCE = 'minimize-stored';

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function emptyResult(): MinimizeStoredResult {
  const rewritten = Object.fromEntries(MINIMIZED_TABLES.map((t) => [t, 0]));
  return {
    rewritten: rewritten as Record<MinimizedTable, number>,
    sealed: 0,
    conflicts: 0,
    skipped: 0,
  };
}

/** Two results added up. */
export function addResults(a: MinimizeStoredResult, b: MinimizeStoredResult) {
  const sum = emptyResult();
  for (const t of MINIMIZED_TABLES) sum.rewritten[t] = a.rewritten[t] + b.rewritten[t];
  sum.sealed = a.sealed + b.sealed;
  sum.conflicts = a.conflicts + b.conflicts;
  sum.skipped = a.skipped + b.skipped;
  return sum;
}

/** Whether the run changed anything (conflicts and skipped values change nothing). */
export function changedAnything(result: MinimizeStoredResult): boolean {
  return result.sealed > 0 || MINIMIZED_TABLES.some((t) => result.rewritten[t] > 0);
}

// The parameters of the predicates below: $1 the hashed-value pattern, then $2 INVALID_VALUE (JSON
// predicates) or the hashed identifier types (value predicates).
const JSON_PARAMS = (): unknown[] => [HASHED_VALUE.source, INVALID_VALUE];
const VALUE_PARAMS = (): unknown[] => [HASHED_VALUE.source, [...HASHED_TYPES]];

/** SQL: the JSON value `at` is one minimization would change (present, not stored form). */
function clearJson(at: string): string {
  const text = `(${at} #>> '{}')`;
  return `(${at} is not null and ${at} <> 'null'::jsonb
           and not (jsonb_typeof(${at}) = 'string' and (${text} ~ $1 or ${text} = $2)))`;
}

/** SQL: some email or phone of the traits object `traits` is in clear. */
function clearTraits(traits: string): string {
  return `(${HASHED_TYPES.map((type) => clearJson(`${traits} -> '${type}'`)).join(' or ')})`;
}

const EVENTS_CLEAR = `(${clearTraits('traits')} or ${clearTraits(`(context -> 'traits')`)})`;
const QUARANTINE_CLEAR =
  `(${clearTraits(`(message -> 'traits')`)}` +
  ` or ${clearTraits(`(message -> 'context' -> 'traits')`)})`;
/** SQL: a clear identifier value in columns `type` and `value`. */
const clearValue = (type: string, value: string) =>
  `(${type} = any($2::text[]) and ${value} !~ $1)`;

/** The emails and phones of `before` that `after` replaced, or null when none. */
function patchOf(before: unknown, after: unknown): JsonObject | null {
  if (!isObject(before) || !isObject(after) || before === after) return null;
  const patch: JsonObject = {};
  for (const type of HASHED_TYPES) if (after[type] !== before[type]) patch[type] = after[type];
  return Object.keys(patch).length > 0 ? patch : null;
}

const jsonOrNull = (value: JsonObject | null) => (value === null ? null : JSON.stringify(value));

/** Rewrites every clear email and phone stored by earlier versions; see the file's comment. */
export async function minimizeStoredPii(
  pool: Pool,
  options: MinimizeStoredOptions = {},
): Promise<MinimizeStoredResult> {
  const size = options.batchSize ?? 500;
  const log = options.log ?? logger();
  const result = emptyResult();
  const clearIds = clearValue('identifier_type', 'identifier_value');
  // Each table: its probe, and the pass that runs when the probe finds a row.
  const passes: Array<[string, unknown[], () => Promise<unknown>]> = [
    [
      `select 1 from contacts where email is not null limit 1`,
      [],
      async () => (result.rewritten.contacts = await resealContacts(pool)),
    ],
    [
      `select 1 from events where ${EVENTS_CLEAR} limit 1`,
      JSON_PARAMS(),
      () => minimizeEvents(pool, size, result),
    ],
    [
      `select 1 from quarantined_events where ${QUARANTINE_CLEAR} limit 1`,
      JSON_PARAMS(),
      () => minimizeQuarantine(pool, size, result),
    ],
    [
      `select 1 from identifiers where ${clearValue('type', 'value')} limit 1`,
      VALUE_PARAMS(),
      () => minimizeIdentifiers(pool, size, result, log),
    ],
    [
      `select 1 from identity_conflicts where ${clearIds} limit 1`,
      VALUE_PARAMS(),
      () => minimizeConflicts(pool, size, result, log),
    ],
    [
      `select 1 from consent_events where ${clearIds} limit 1`,
      VALUE_PARAMS(),
      () => minimizeConsent(pool, size, result),
    ],
  ];
  for (const [probe, params, pass] of passes) {
    if (await pending(pool, probe, params)) await pass();
  }
  if (result.skipped > 0) {
    log.warn(
      { skipped: result.skipped },
      'clear identifier values that are no email or phone left',
    );
  }
  return result;
}

/** The probe of a table: whether any row is still to rewrite. */
async function pending(pool: Pool, sql: string, params: unknown[]): Promise<boolean> {
  const { rows } = await pool.query(sql, params);
  return rows.length > 0;
}

interface EventRow {
  id: number;
  person_id: string;
  received_at: Date;
  traits: JsonObject | null;
  context: JsonObject | null;
}

async function minimizeEvents(pool: Pool, size: number, result: MinimizeStoredResult) {
  for (let after = 0; ; ) {
    const done = await withTransaction(pool, async (client) => {
      const { rows } = await client.query<EventRow>(
        `select id, person_id, received_at, traits, context from events
          where id > $3 and ${EVENTS_CLEAR} order by id limit $4 for update`,
        [...JSON_PARAMS(), after, size],
      );
      if (rows.length === 0) return true;
      result.sealed += await sealAddresses(client, rows);
      const ids: number[] = [];
      const traits: Array<string | null> = [];
      const contexts: Array<string | null> = [];
      for (const row of rows) {
        const traitsPatch = patchOf(row.traits, minimizedTraits(row.traits));
        const context = minimizedContext(row.context);
        const contextPatch = patchOf(row.context?.['traits'], context?.['traits']);
        if (traitsPatch === null && contextPatch === null) continue;
        ids.push(row.id);
        traits.push(jsonOrNull(traitsPatch));
        contexts.push(jsonOrNull(contextPatch));
      }
      // Only the email and phone keys are replaced: the rest of the JSON stays as stored.
      const updated = await client.query(
        `update events e
            set traits = case when u.tp is null then e.traits else e.traits || u.tp::jsonb end,
                context = case when u.cp is null then e.context
                               else jsonb_set(e.context, '{traits}',
                                              (e.context -> 'traits') || u.cp::jsonb) end
           from unnest($1::bigint[], $2::text[], $3::text[]) as u(id, tp, cp)
          where e.id = u.id`,
        [ids, traits, contexts],
      );
      result.rewritten.events += updated.rowCount ?? 0;
      after = rows[rows.length - 1]?.id ?? after;
      return rows.length < size;
    });
    if (done) return;
  }
}

/**
 * Seals the address of each event (in id order: the last of a person key wins) under
 * `unresolved:<person_id>`, unless the key's address was set by someone else after the event was
 * received (that one is newer). Returns how many events' addresses were sealed.
 */
async function sealAddresses(client: PoolClient, rows: readonly EventRow[]): Promise<number> {
  const wanted: Array<{ personKey: string; email: string; at: number }> = [];
  for (const row of rows) {
    const email = sendableEmail({ traits: row.traits, context: row.context });
    if (email === null || row.person_id === '') continue;
    const personKey = `unresolved:${row.person_id}`;
    wanted.push({ personKey, email, at: row.received_at.getTime() });
  }
  if (wanted.length === 0) return 0;
  const { rows: set } = await client.query<{ person_key: string; updated_at: Date }>(
    `select person_key, updated_at from contacts
      where person_key = any($1::text[]) and source <> $2`,
    [[...new Set(wanted.map((w) => w.personKey))], SEALED_SOURCE],
  );
  const setAt = new Map(set.map((r) => [r.person_key, r.updated_at.getTime()]));
  const entries = wanted.filter((w) => (setAt.get(w.personKey) ?? -Infinity) <= w.at);
  await setEmailAddresses(client, entries, SEALED_SOURCE);
  return entries.length;
}

async function minimizeQuarantine(pool: Pool, size: number, result: MinimizeStoredResult) {
  for (let after = 0; ; ) {
    const done = await withTransaction(pool, async (client) => {
      const { rows } = await client.query<{ id: number; message: JsonObject }>(
        `select id, message from quarantined_events
          where id > $3 and ${QUARANTINE_CLEAR} order by id limit $4 for update`,
        [...JSON_PARAMS(), after, size],
      );
      if (rows.length === 0) return true;
      const ids: number[] = [];
      const traits: Array<string | null> = [];
      const contexts: Array<string | null> = [];
      for (const { id, message } of rows) {
        const minimized = minimizedMessage(message);
        const traitsPatch = patchOf(message['traits'], minimized['traits']);
        const before = isObject(message['context']) ? message['context']['traits'] : undefined;
        const now = isObject(minimized['context']) ? minimized['context']['traits'] : undefined;
        const contextPatch = patchOf(before, now);
        if (traitsPatch === null && contextPatch === null) continue;
        ids.push(id);
        traits.push(jsonOrNull(traitsPatch));
        contexts.push(jsonOrNull(contextPatch));
      }
      const updated = await client.query(
        `with u as (select * from unnest($1::bigint[], $2::text[], $3::text[]) as u(id, tp, cp)),
              t as (select q.id, u.cp,
                           case when u.tp is null then q.message
                                else jsonb_set(q.message, '{traits}',
                                               (q.message -> 'traits') || u.tp::jsonb) end as m
                      from quarantined_events q join u on u.id = q.id)
         update quarantined_events q
            set message = case when t.cp is null then t.m
                               else jsonb_set(t.m, '{context,traits}',
                                              (t.m #> '{context,traits}') || t.cp::jsonb) end
           from t where q.id = t.id`,
        [ids, traits, contexts],
      );
      result.rewritten.quarantined_events += updated.rowCount ?? 0;
      after = rows[rows.length - 1]?.id ?? after;
      return rows.length < size;
    });
    if (done) return;
  }
}

async function minimizeIdentifiers(
  pool: Pool,
  size: number,
  result: MinimizeStoredResult,
  log: Logger,
) {
  const conflicts: Array<{ type: string; clearPersonId: number; hashedPersonId: number }> = [];
  for (let after = { type: '', value: '' }; ; ) {
    const done = await withTransaction(pool, async (client) => {
      await lockGraph(client);
      const { rows } = await client.query<{ type: string; value: string; person_id: number }>(
        `select type, value, person_id from identifiers
          where (type, value) > ($3, $4) and ${clearValue('type', 'value')}
          order by type, value limit $5 for update`,
        [...VALUE_PARAMS(), after.type, after.value, size],
      );
      if (rows.length === 0) return true;
      for (const row of rows) {
        const stored = storedValue(row.type, row.value);
        if (stored === null || stored === row.value) {
          result.skipped += 1;
          continue;
        }
        const { rows: existing } = await client.query<{ person_id: number }>(
          'select person_id from identifiers where type = $1 and value = $2',
          [row.type, stored],
        );
        const hashed = existing[0];
        if (hashed) {
          result.conflicts += 1;
          const [clearPersonId, hashedPersonId] = [row.person_id, hashed.person_id];
          conflicts.push({ type: row.type, clearPersonId, hashedPersonId });
          continue;
        }
        await client.query('update identifiers set value = $3 where type = $1 and value = $2', [
          row.type,
          row.value,
          stored,
        ]);
        result.rewritten.identifiers += 1;
      }
      const last = rows[rows.length - 1];
      if (last) after = { type: last.type, value: last.value };
      return rows.length < size;
    });
    if (done) break;
  }
  if (conflicts.length > 0) {
    log.warn(
      { table: 'identifiers', conflicts },
      'clear identifiers left in place: their hashed form belongs to a row already',
    );
  }
}

async function minimizeConflicts(
  pool: Pool,
  size: number,
  result: MinimizeStoredResult,
  log: Logger,
) {
  const left: Array<{ eventId: number; identifierPersonId: number }> = [];
  for (let after = 0; ; ) {
    const done = await withTransaction(pool, async (client) => {
      await lockGraph(client);
      const { rows } = await client.query<{
        id: number;
        event_id: number;
        identifier_type: string;
        identifier_value: string;
        identifier_person_id: number;
      }>(
        `select id, event_id, identifier_type, identifier_value, identifier_person_id
           from identity_conflicts
          where id > $3 and ${clearValue('identifier_type', 'identifier_value')}
          order by id limit $4 for update`,
        [...VALUE_PARAMS(), after, size],
      );
      if (rows.length === 0) return true;
      for (const row of rows) {
        const stored = storedValue(row.identifier_type, row.identifier_value);
        if (stored === null || stored === row.identifier_value) {
          result.skipped += 1;
          continue;
        }
        // The same event's conflict on the hashed value, recorded already: this one stays.
        const updated = await client.query(
          `update identity_conflicts c set identifier_value = $2
            where c.id = $1
              and not exists (select from identity_conflicts d
                               where d.event_id = c.event_id
                                 and d.identifier_type = c.identifier_type
                                 and d.identifier_value = $2)`,
          [row.id, stored],
        );
        if ((updated.rowCount ?? 0) > 0) {
          result.rewritten.identity_conflicts += 1;
        } else {
          result.conflicts += 1;
          left.push({ eventId: row.event_id, identifierPersonId: row.identifier_person_id });
        }
      }
      after = rows[rows.length - 1]?.id ?? after;
      return rows.length < size;
    });
    if (done) break;
  }
  if (left.length > 0) {
    log.warn(
      { table: 'identity_conflicts', conflicts: left },
      'clear identity conflicts left in place: the same event has one on the hashed value',
    );
  }
}

async function minimizeConsent(pool: Pool, size: number, result: MinimizeStoredResult) {
  for (let after = 0; ; ) {
    const done = await withTransaction(pool, async (client) => {
      const { rows } = await client.query<{
        id: number;
        identifier_type: string;
        identifier_value: string;
      }>(
        `select id, identifier_type, identifier_value from consent_events
          where id > $3 and ${clearValue('identifier_type', 'identifier_value')}
          order by id limit $4 for update`,
        [...VALUE_PARAMS(), after, size],
      );
      if (rows.length === 0) return true;
      const ids: number[] = [];
      const values: string[] = [];
      for (const row of rows) {
        const stored = storedValue(row.identifier_type, row.identifier_value);
        if (stored === null || stored === row.identifier_value) {
          result.skipped += 1;
          continue;
        }
        ids.push(row.id);
        values.push(stored);
      }
      const updated = await client.query(
        `update consent_events c set identifier_value = u.value
           from unnest($1::bigint[], $2::text[]) as u(id, value) where c.id = u.id`,
        [ids, values],
      );
      result.rewritten.consent_events += updated.rowCount ?? 0;
      after = rows[rows.length - 1]?.id ?? after;
      return rows.length < size;
    });
    if (done) return;
  }
}

/** Audits a run (`privacy.stored-pii-minimized`, with its counts). */
export async function auditMinimized(
  pool: Pool,
  actor: string,
  result: MinimizeStoredResult,
): Promise<void> {
  await appendAudit(pool, {
    actor,
    action: 'privacy.stored-pii-minimized',
    subject: 'stored-pii',
    outputs: { ...result },
  });
}

/**
 * At start-up, after the migrations: the rewrite, logged and audited (actor `pops`) when it
 * changed anything, until one pass has run to its end (`stored_pii_minimized`); then nothing.
 */
export async function minimizeStoredPiiAtStart(
  pool: Pool,
  log: Logger,
): Promise<MinimizeStoredResult> {
  // Once a pass has run to its end, nothing new is stored in clear: later starts skip it.
  const done = await pool.query('select 1 from stored_pii_minimized');
  if (done.rows.length > 0) return emptyResult();
  const result = await minimizeStoredPii(pool, { log });
  if (changedAnything(result)) {
    log.info({ ...result }, 'personal data stored in clear by an earlier version minimized');
    await auditMinimized(pool, 'pops', result);
  }
  await pool.query('insert into stored_pii_minimized default values on conflict do nothing');
  return result;
}
