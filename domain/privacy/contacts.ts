/**
 * The addresses campaigns send to, per person key. Only this module reads or writes `contacts`, so
 * that callers never keep raw addresses themselves. An address set under a key that a merge later
 * folded into another person (a person id that is no longer canonical, or the `unresolved:<id>`
 * key of one of its user or anonymous ids) is found under the surviving person's key.
 */
import type { Queryable } from '../../common/db.js';
import { normalizeEmail } from '../identity/identifiers.js';
import { KEY_IDENTIFIERS_SQL } from './consent.js';

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
  await db.query(
    `insert into contacts (person_key, email, source) values ($1, $2, $3)
     on conflict (person_key) do update
       set email = excluded.email, source = excluded.source, updated_at = now()`,
    [personKey, address, source],
  );
}

/** The address to send to, per person key that has one (the most recently set wins). */
export async function emailAddresses(
  db: Queryable,
  personKeys: readonly string[],
): Promise<Map<string, string>> {
  if (personKeys.length === 0) return new Map();
  const { rows } = await db.query<{ key: string; email: string }>(
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
     select distinct on (a.key) a.key, c.email
       from aliases a join contacts c on c.person_key = a.alias
      order by a.key, c.updated_at desc, c.person_key`,
    [personKeys],
  );
  return new Map(rows.map((r) => [r.key, r.email]));
}
