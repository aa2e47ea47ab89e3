/**
 * Consent per identifier and purpose, with its history (`consent_events`). A person's consent for
 * a purpose is the latest event (by effective time) over every identifier that resolves to them;
 * with none, the purpose's default (`consent_defaults`: personalization and analytics granted,
 * marketing not, and marketing can only be opt-in). Person keys are spelled as the feature store
 * spells them: the canonical person id as text, or `unresolved:<user or anonymous id>`.
 */
import { z } from 'zod';
import { type Pool, type Queryable, withTransaction } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { identifierHash } from './keys.js';
import { type IdentifierInput, invalidIdentifier, storedIdentifier } from './pii.js';

export const CONSENT_PURPOSES = ['personalization', 'marketing', 'analytics'] as const;
export type ConsentPurpose = (typeof CONSENT_PURPOSES)[number];

/** Where a choice came from, as a request names it (`signup-form`, `segment:web`, `cli`). */
export const consentSourceSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/, 'letters, digits and . _ : - (up to 100)');

/** How far ahead of this clock a caller's `at` may be (its clock's skew); taken as now. */
const AT_SKEW_MS = 60_000;

/** When a choice took effect, as a request gives it: an instant with an offset, not ahead. */
export const consentAtSchema = z.iso
  .datetime({
    offset: true,
    error: 'needs a date, a time and an offset, e.g. 2026-01-31T09:00:00Z',
  })
  .transform((s) => new Date(s))
  .refine((d) => d.getTime() <= Date.now() + AT_SKEW_MS, 'must not be in the future');

/** Thrown when an identifier cannot be one (an empty value, an email that is no address). */
export class ConsentInputError extends Error {}

export interface ConsentInput {
  identifier: IdentifierInput;
  purpose: ConsentPurpose;
  granted: boolean;
  /** Where it came from: `api`, `segment:<source>`, `import`, ... */
  source: string;
  actor: string;
  /** When it takes effect (default now; a later instant is taken as now). */
  at?: Date;
}

/**
 * Records a consent change. Idempotent: when both the identifier's latest state for the purpose
 * and its person's (the latest over all their identifiers), at or before `at`, are already
 * `granted`, nothing is written and `changed` is false. The person's state counts too: a
 * withdrawal on a user id must be written when the person granted on their email after the user
 * id's own last withdrawal. A tombstoned identifier (its person was deleted) gets nothing written:
 * `dropped` is true, as ingestion drops a message carrying one.
 */
export async function recordConsent(
  db: Queryable,
  input: ConsentInput,
): Promise<{ changed: boolean; dropped: boolean }> {
  const id = storedOrRefused(input.identifier);
  // A choice takes effect now at the latest: a future one would silently undo later choices.
  const now = new Date();
  const at = input.at && input.at < now ? input.at : now;
  // One statement: the comparison and the insert see the same snapshot, and a concurrent repeat
  // at worst writes the same state twice (which changes no answer).
  const { rows } = await db.query<{ inserted: number; dropped: boolean }>(
    `with ids as (${keyIdentifiersSql(`array[(${personKeySql('$1', '$2')})]`)}
                  union all select '', $1, $2),
     latest as (
       select c.identifier_type = $1 and c.identifier_value = $2 as own, c.granted,
              row_number() over (partition by c.identifier_type = $1 and c.identifier_value = $2
                                 order by c.effective_at desc, c.id desc) as own_rank,
              row_number() over (order by c.effective_at desc, c.id desc) as person_rank
         from consent_events c
        where (c.identifier_type, c.identifier_value) in (select type, value from ids)
          and c.purpose = $3 and c.effective_at <= $7),
     dead as (select exists (select 1 from privacy_tombstones where identifier_hash = $8) as dead),
     ins as (
       insert into consent_events
         (identifier_type, identifier_value, purpose, granted, source, actor, effective_at)
       select $1, $2, $3, $4, $5, $6, $7
        where not (select dead from dead)
          and ((select granted from latest where own and own_rank = 1) is distinct from $4
               or (select granted from latest where person_rank = 1) is distinct from $4)
       returning 1)
     select (select count(*) from ins)::int as inserted, (select dead from dead) as dropped`,
    [
      id.type,
      id.value,
      input.purpose,
      input.granted,
      input.source,
      input.actor,
      at,
      identifierHash(id),
    ],
  );
  const row = rows[0];
  return { changed: (row?.inserted ?? 0) > 0, dropped: row?.dropped ?? false };
}

/** A person's choices for one identifier: some purposes, recorded together. */
export interface ConsentChoices {
  identifier: IdentifierInput;
  purposes: Partial<Record<ConsentPurpose, boolean>>;
  source: string;
  actor: string;
  at?: Date | undefined;
}

/**
 * Records the choices of one request in one transaction (all purposes or none), as recordConsent
 * does each: `changed` per purpose named, `dropped` when the identifier is tombstoned. Used by
 * PUT /v1/consent and `pops consent set`.
 */
export async function recordConsentChoices(
  pool: Pool,
  choices: ConsentChoices,
): Promise<{ changed: Partial<Record<ConsentPurpose, boolean>>; dropped: boolean }> {
  const changed: Partial<Record<ConsentPurpose, boolean>> = {};
  let dropped = false;
  // The purposes of one request take effect at one instant.
  const at = choices.at ?? new Date();
  await withTransaction(pool, async (client) => {
    for (const purpose of CONSENT_PURPOSES) {
      const granted = choices.purposes[purpose];
      if (granted === undefined) continue;
      const { identifier, source, actor } = choices;
      const result = await recordConsent(client, {
        identifier,
        purpose,
        granted,
        source,
        actor,
        at,
      });
      changed[purpose] = result.changed;
      dropped ||= result.dropped;
    }
  });
  return { changed, dropped };
}

/**
 * The identifiers of each person key: a graph person's (every person merged into it; a key of a
 * person since merged into another names that one), and for an `unresolved:<id>` key the raw id
 * as a user id and as an anonymous id. Columns key, type, value.
 */
export const KEY_IDENTIFIERS_SQL = keyIdentifiersSql('$1::text[]');

/** KEY_IDENTIFIERS_SQL over the person keys of a SQL text[] expression. */
function keyIdentifiersSql(keys: string): string {
  return `
  select k.key, i.type, i.value
    from unnest(${keys}) as k(key)
    join persons named on named.id = case when k.key ~ '^[0-9]{1,18}$' then k.key::bigint end
    join persons p on p.canonical_id = named.canonical_id
    join identifiers i on i.person_id = p.id
  union all
  select k.key, t.type, substr(k.key, 12)
    from unnest(${keys}) as k(key)
    cross join (values ('user_id'), ('anonymous_id')) as t(type)
   where k.key like 'unresolved:%'`;
}

/**
 * The person keys among `personKeys` that have consented to `purpose` at `at` (default now): the
 * latest event over their identifiers, else the purpose's default.
 */
export async function consentedPersons(
  db: Queryable,
  personKeys: readonly string[],
  purpose: ConsentPurpose,
  at?: Date,
): Promise<Set<string>> {
  if (personKeys.length === 0) return new Set();
  const { rows } = await db.query<{ key: string }>(
    `with ids as (${KEY_IDENTIFIERS_SQL}),
     latest as (
       select distinct on (ids.key) ids.key, c.granted
         from ids
         join consent_events c
           on c.identifier_type = ids.type and c.identifier_value = ids.value
          and c.purpose = $2 and c.effective_at <= $3
        order by ids.key, c.effective_at desc, c.id desc)
     select k.key
       from (select distinct unnest($1::text[]) as key) k
       left join latest l on l.key = k.key
      where coalesce(l.granted,
                     (select d.granted from consent_defaults d where d.purpose = $2), false)`,
    [personKeys, purpose, at ?? new Date()],
  );
  return new Set(rows.map((r) => r.key));
}

/** The defaults, per purpose. */
export async function consentDefaults(db: Queryable): Promise<Record<ConsentPurpose, boolean>> {
  const { rows } = await db.query<{ purpose: ConsentPurpose; granted: boolean }>(
    'select purpose, granted from consent_defaults',
  );
  const defaults = { personalization: false, marketing: false, analytics: false };
  for (const row of rows) defaults[row.purpose] = row.granted;
  return defaults;
}

/**
 * Sets a purpose's default; returns whether it changed. Marketing cannot default to granted (the
 * table refuses it too).
 */
export async function setConsentDefault(
  db: Queryable,
  purpose: ConsentPurpose,
  granted: boolean,
  actor: string,
): Promise<boolean> {
  if (purpose === 'marketing' && granted) {
    throw new ConsentInputError('marketing: is opt-in, its default cannot be granted');
  }
  const { rowCount } = await db.query(
    `update consent_defaults set granted = $2, updated_at = now(), updated_by = $3
      where purpose = $1 and granted <> $2`,
    [purpose, granted, actor],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Sets a purpose's default and audits the change (`consent.default_set`) in one transaction;
 * false when it already was. For PUT /v1/consent-defaults/:purpose, `pops consent set-default`
 * and POPS_CONSENT_DEFAULT_* at start.
 */
export async function changeConsentDefault(
  pool: Pool,
  purpose: ConsentPurpose,
  granted: boolean,
  actor: string,
): Promise<boolean> {
  return withTransaction(pool, async (client) => {
    if (!(await setConsentDefault(client, purpose, granted, actor))) return false;
    await appendAuditIn(client, {
      actor,
      action: 'consent.default_set',
      subject: `consent-default/${purpose}`,
      inputs: { purpose, granted },
    });
    return true;
  });
}

export interface ConsentEventRow {
  identifier: IdentifierInput;
  purpose: ConsentPurpose;
  granted: boolean;
  source: string;
  actor: string;
  effectiveAt: Date;
  recordedAt: Date;
}

export interface ConsentView {
  /** The person key the identifier resolves to now. */
  personKey: string;
  /** The state per purpose and whether it comes from an event or the default. */
  purposes: Record<ConsentPurpose, { granted: boolean; from: 'event' | 'default'; at?: Date }>;
  /** Every event over the person's identifiers, oldest first. */
  history: ConsentEventRow[];
}

/** The person key an identifier resolves to now (unresolved ids keep their raw key). */
export async function personKeyOf(db: Queryable, identifier: IdentifierInput): Promise<string> {
  const id = storedOrRefused(identifier);
  const { rows } = await db.query<{ key: string }>(`select (${personKeySql('$1', '$2')}) as key`, [
    id.type,
    id.value,
  ]);
  return rows[0]?.key ?? `unresolved:${id.value}`;
}

/**
 * SQL of the person key a stored identifier (its type and value expressions) resolves to now:
 * its graph person's canonical id, else `unresolved:<value>`.
 */
function personKeySql(type: string, value: string): string {
  return `select coalesce(
      (select p.canonical_id::text from identifiers i join persons p on p.id = i.person_id
        where i.type = ${type} and i.value = ${value}), 'unresolved:' || ${value})`;
}

/** The stored form of an identifier, or a ConsentInputError naming its type. */
function storedOrRefused(identifier: IdentifierInput): IdentifierInput {
  const id = storedIdentifier(identifier);
  if (!id) {
    throw new ConsentInputError(invalidIdentifier(identifier.type));
  }
  return id;
}

/** The consent of the person an identifier resolves to, with its history. */
export async function consentOf(db: Queryable, identifier: IdentifierInput): Promise<ConsentView> {
  const personKey = await personKeyOf(db, identifier);
  const id = storedIdentifier(identifier) ?? identifier;
  // An unresolved key's identifiers are its raw id as user and anonymous id, and the one asked for.
  const { rows } = await db.query<{
    type: string;
    value: string;
    purpose: ConsentPurpose;
    granted: boolean;
    source: string;
    actor: string;
    effective_at: Date;
    recorded_at: Date;
  }>(
    `with ids as (${KEY_IDENTIFIERS_SQL} union select 'asked', $2::text, $3::text)
     select c.identifier_type as type, c.identifier_value as value, c.purpose, c.granted,
            c.source, c.actor, c.effective_at, c.recorded_at
       from consent_events c
      where (c.identifier_type, c.identifier_value) in (select type, value from ids)
      order by c.effective_at, c.id`,
    [[personKey], id.type, id.value],
  );
  const defaults = await consentDefaults(db);
  const purposes = Object.fromEntries(
    CONSENT_PURPOSES.map((p) => [p, { granted: defaults[p], from: 'default' as const }]),
  ) as ConsentView['purposes'];
  const history = rows.map((r) => ({
    identifier: { type: r.type, value: r.value },
    purpose: r.purpose,
    granted: r.granted,
    source: r.source,
    actor: r.actor,
    effectiveAt: r.effective_at,
    recordedAt: r.recorded_at,
  }));
  for (const event of history) {
    if (event.effectiveAt <= new Date()) {
      purposes[event.purpose] = { granted: event.granted, from: 'event', at: event.effectiveAt };
    }
  }
  return { personKey, purposes, history };
}

/**
 * SQL that keeps only rows whose person consented to `purpose` now, for set-wise readers (training
 * and drift label rows): `join` goes after the FROM items, `where` is a condition. The latest event
 * per person key is found once for the whole statement, by the same rules as consentedPersons.
 */
export function consentFilterSql(
  keyExpr: string,
  purpose: ConsentPurpose,
  alias = 'consent_of',
): { join: string; where: string } {
  const latest = `select distinct on (ev.key) ev.key, ev.granted
      from (select p.canonical_id::text as key, c.granted, c.effective_at, c.id
              from consent_events c
              join identifiers i on i.type = c.identifier_type and i.value = c.identifier_value
              join persons p on p.id = i.person_id
             where c.purpose = '${purpose}' and c.effective_at <= now()
            union all
            select 'unresolved:' || c.identifier_value, c.granted, c.effective_at, c.id
              from consent_events c
             where c.purpose = '${purpose}' and c.effective_at <= now()
               and c.identifier_type in ('user_id', 'anonymous_id')) ev
     order by ev.key, ev.effective_at desc, ev.id desc`;
  return {
    join: `left join (${latest}) ${alias} on ${alias}.key = ${keyExpr}`,
    where: `coalesce(${alias}.granted,
      (select d.granted from consent_defaults d where d.purpose = '${purpose}'), false)`,
  };
}
