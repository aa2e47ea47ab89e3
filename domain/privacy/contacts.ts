/**
 * The addresses campaigns send to, per person key. Only this module reads or writes `contacts`, so
 * that callers never keep raw addresses themselves. An address set under a key that a merge later
 * folded into another person (a person id that is no longer canonical, or the `unresolved:<id>`
 * key of one of its user or anonymous ids) is found under the surviving person's key.
 *
 * Addresses are stored sealed (AES-256-GCM, domain/privacy/fields.ts) under the person key they
 * were set for; the plain column only holds rows written before sealing, until resealContacts.
 */
import type { Queryable } from '../../common/db.js';
import { normalizeEmail } from '../identity/identifiers.js';
import { KEY_IDENTIFIERS_SQL } from './consent.js';
import { open, seal } from './fields.js';
import { loadFieldKeys } from './keys.js';

/** Thrown when the address is not one. */
export class ContactInputError extends Error {}

/** Sets (or replaces) the address of a person key. */
export async function setEmailAddress(
  db: Queryable,
  personKey: string,
  email: string,
  source: string,
): Promise<void> {
  const address = normalizeEmail(email);
  if (address === null) throw new ContactInputError('email: is not an email address');
  if (personKey.length === 0 || personKey.length > 600) {
    throw new ContactInputError('personKey: must be 1 to 600 characters');
  }
  const { sealed, keyId } = seal(address, personKey);
  await db.query(
    `insert into contacts (person_key, email, email_sealed, key_id, source)
     values ($1, null, $2, $3, $4)
     on conflict (person_key) do update
       set email = null, email_sealed = excluded.email_sealed, key_id = excluded.key_id,
           source = excluded.source, updated_at = now()`,
    [personKey, sealed, keyId, source],
  );
}

/**
 * Sets the addresses of many person keys in one statement (the last entry of a key wins); each
 * address must be normalized already (domain/privacy/minimize.ts sendableEmail). For ingestion.
 */
export async function setEmailAddresses(
  db: Queryable,
  entries: ReadonlyArray<{ personKey: string; email: string }>,
  source: string,
): Promise<void> {
  const byKey = new Map<string, string>();
  for (const { personKey, email } of entries) {
    if (personKey.length > 0 && personKey.length <= 600) byKey.set(personKey, email);
  }
  if (byKey.size === 0) return;
  const keys = [...byKey.keys()];
  const sealed = keys.map((key) => seal(byKey.get(key) ?? '', key));
  await db.query(
    `insert into contacts (person_key, email, email_sealed, key_id, source)
     select k, null, s, i, $4 from unnest($1::text[], $2::text[], $3::text[]) as t(k, s, i)
     on conflict (person_key) do update
       set email = null, email_sealed = excluded.email_sealed, key_id = excluded.key_id,
           source = excluded.source, updated_at = now()`,
    [keys, sealed.map((s) => s.sealed), sealed.map((s) => s.keyId), source],
  );
}

/** The address to send to, per person key that has one (the most recently set wins). */
export async function emailAddresses(
  db: Queryable,
  personKeys: readonly string[],
): Promise<Map<string, string>> {
  if (personKeys.length === 0) return new Map();
  const { rows } = await db.query<{
    key: string;
    alias: string;
    email: string | null;
    email_sealed: string | null;
  }>(
    `with aliases as (
       select k.key, k.key as alias from unnest($1::text[]) as k(key)
       union
       select k.key, p.id::text
         from unnest($1::text[]) as k(key)
         join persons p on p.canonical_id = case when k.key ~ '^[0-9]{1,18}$' then k.key::bigint end
       union
       select ids.key, 'unresolved:' || ids.value
         from (${KEY_IDENTIFIERS_SQL}) ids
        where ids.type in ('user_id', 'anonymous_id'))
     select distinct on (a.key) a.key, a.alias, c.email, c.email_sealed
       from aliases a join contacts c on c.person_key = a.alias
      order by a.key, c.updated_at desc, c.person_key`,
    [personKeys],
  );
  // Opened under the key it was sealed for: the row's own person key.
  return new Map(
    rows.map((r) => [r.key, r.email_sealed ? open(r.email_sealed, r.alias) : (r.email ?? '')]),
  );
}

/**
 * Seals every address not sealed with the current key (plain rows, or rows of an older key after a
 * rotation); returns how many. Rows are rewritten in batches of 500.
 */
export async function resealContacts(db: Queryable): Promise<number> {
  const { current } = loadFieldKeys();
  let total = 0;
  for (;;) {
    const { rows } = await db.query<{
      person_key: string;
      email: string | null;
      email_sealed: string | null;
    }>(
      `select person_key, email, email_sealed from contacts
        where key_id is distinct from $1 order by person_key limit 500`,
      [current],
    );
    if (rows.length === 0) return total;
    for (const row of rows) {
      const plain = row.email_sealed ? open(row.email_sealed, row.person_key) : (row.email ?? '');
      const { sealed, keyId } = seal(plain, row.person_key);
      await db.query(
        `update contacts set email = null, email_sealed = $2, key_id = $3 where person_key = $1`,
        [row.person_key, sealed, keyId],
      );
    }
    total += rows.length;
  }
}
