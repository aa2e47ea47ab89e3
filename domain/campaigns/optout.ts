/**
 * One-click opt-out (RFC 8058): a verified unsubscribe token becomes a consent withdrawal for the
 * token's purpose, recorded through domain/privacy/consent.ts on one of the person's identifiers
 * (a user id first, else an email, else an anonymous id). A person's consent is the latest event
 * over all their identifiers, so withdrawing on one is withdrawing for the person; recording the
 * same withdrawal again changes nothing.
 */
import type { Queryable } from '../../common/db.js';
import { KEY_IDENTIFIERS_SQL, recordConsent } from '../privacy/consent.js';
import { identifierHash } from '../privacy/keys.js';
import { tombstonedHashes } from '../privacy/requests.js';
import { type UnsubscribePayload, verifyUnsubscribe } from './unsubscribe.js';

/**
 * The identifier consent is recorded on for a person key, or undefined when it names nothing
 * pops knows. A graph person's key (also one since merged into another) gives its user id first,
 * else an email, else any. An `unresolved:<raw id>` key gives the raw id as the type it has: in
 * the graph if it got there since, else in its events, else in its consent events; none when the
 * raw id was deleted (a tombstone) or appears nowhere, so that a token cannot write consent for an
 * id pops never held.
 */
export async function identifierOfKey(
  db: Queryable,
  personKey: string,
): Promise<{ type: string; value: string } | undefined> {
  if (personKey.startsWith('unresolved:')) {
    const raw = personKey.slice('unresolved:'.length);
    const deleted = await tombstonedHashes(
      db,
      ['user_id', 'anonymous_id'].map((type) => identifierHash({ type, value: raw })),
    );
    if (deleted.size > 0) return undefined;
    const { rows } = await db.query<{ type: string }>(
      `select type from (
         select i.type, 0 as rank from identifiers i
          where i.type in ('user_id', 'anonymous_id') and i.value = $1
         union all
         select case when e.user_id = $1 then 'user_id' else 'anonymous_id' end, 1
           from (select user_id from events where person_id = $1 limit 1) e
         union all
         select c.identifier_type, 2 from consent_events c
          where c.identifier_type in ('user_id', 'anonymous_id') and c.identifier_value = $1) t
        order by rank, type desc limit 1`,
      [raw],
    );
    return rows[0] && { type: rows[0].type, value: raw };
  }
  const { rows } = await db.query<{ type: string; value: string }>(
    `select type, value from (${KEY_IDENTIFIERS_SQL}) ids
      order by case type when 'user_id' then 0 when 'email' then 1 else 2 end, value limit 1`,
    [[personKey]],
  );
  return rows[0];
}

/**
 * The consent purposes a token of this campaign may withdraw: the audience purpose of its stored
 * definition and of its runs (a notice's run holds the notice's purpose). A campaign pops has no
 * trace of gives marketing only, the purpose campaigns default to.
 */
export async function campaignPurposes(db: Queryable, campaign: string): Promise<Set<string>> {
  const { rows } = await db.query<{ purpose: string | null }>(
    `select coalesce(definition->'audience'->>'purpose', definition->'notice'->>'purpose',
                     'marketing') as purpose
       from (select definition from campaigns where name = $1
             union all
             select definition from campaign_runs where campaign = $1) d`,
    [campaign],
  );
  const purposes = new Set(rows.map((r) => r.purpose ?? 'marketing'));
  return purposes.size > 0 ? purposes : new Set(['marketing']);
}

export type OptOutResult =
  | { ok: true; payload: UnsubscribePayload; changed: boolean }
  | { ok: false; problem: string };

/**
 * Records the opt-out a token asks for (idempotent). A genuine token whose person is unknown or
 * deleted answers the same success with changed: false and writes nothing, so that the answer
 * does not tell whether the person exists.
 */
export async function optOut(db: Queryable, secret: string, token: string): Promise<OptOutResult> {
  const payload = verifyUnsubscribe(secret, token);
  if (!payload) return { ok: false, problem: 'token: is not a valid unsubscribe token' };
  const purposes = await campaignPurposes(db, payload.campaign);
  if (!purposes.has(payload.purpose)) {
    return {
      ok: false,
      problem:
        `token: purpose ${JSON.stringify(payload.purpose)} is not one campaign ` +
        `${JSON.stringify(payload.campaign)} can unsubscribe from (${[...purposes].join(', ')})`,
    };
  }
  const identifier = await identifierOfKey(db, payload.personKey);
  if (!identifier) return { ok: true, payload, changed: false };
  const { changed } = await recordConsent(db, {
    identifier,
    purpose: payload.purpose,
    granted: false,
    source: `unsubscribe:${payload.campaign}`,
    actor: 'recipient',
  });
  return { ok: true, payload, changed };
}
