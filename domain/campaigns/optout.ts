/**
 * One-click opt-out (RFC 8058): a verified unsubscribe token becomes a consent withdrawal for the
 * token's purpose, recorded through domain/privacy/consent.ts on one of the person's identifiers
 * (a user id first, else an email, else an anonymous id). A person's consent is the latest event
 * over all their identifiers, so withdrawing on one is withdrawing for the person; recording the
 * same withdrawal again changes nothing.
 */
import type { Queryable } from '../../common/db.js';
import { KEY_IDENTIFIERS_SQL, recordConsent } from '../privacy/consent.js';
import { type UnsubscribePayload, verifyUnsubscribe } from './unsubscribe.js';

/**
 * The identifier consent is recorded on for a person key, or undefined when it has none. A graph
 * person's key (also one since merged into another) gives its user id first, else an email, else
 * any. An `unresolved:<raw id>` key gives the raw id as the type it has: in the graph if it got
 * there since, else in its events, else as a user id, so that a later merge keeps the choice.
 */
export async function identifierOfKey(
  db: Queryable,
  personKey: string,
): Promise<{ type: string; value: string } | undefined> {
  if (personKey.startsWith('unresolved:')) {
    const raw = personKey.slice('unresolved:'.length);
    const { rows } = await db.query<{ type: string }>(
      `select type from (
         select i.type, 0 as rank from identifiers i
          where i.type in ('user_id', 'anonymous_id') and i.value = $1
         union all
         select case when e.user_id = $1 then 'user_id' else 'anonymous_id' end, 1
           from (select user_id from events where person_id = $1 limit 1) e) t
        order by rank, type desc limit 1`,
      [raw],
    );
    return { type: rows[0]?.type ?? 'user_id', value: raw };
  }
  const { rows } = await db.query<{ type: string; value: string }>(
    `select type, value from (${KEY_IDENTIFIERS_SQL}) ids
      order by case type when 'user_id' then 0 when 'email' then 1 else 2 end, value limit 1`,
    [[personKey]],
  );
  return rows[0];
}

export type OptOutResult =
  | { ok: true; payload: UnsubscribePayload; changed: boolean }
  | { ok: false; problem: string };

/** Records the opt-out a token asks for (idempotent). */
export async function optOut(db: Queryable, secret: string, token: string): Promise<OptOutResult> {
  const payload = verifyUnsubscribe(secret, token);
  if (!payload) return { ok: false, problem: 'token: is not a valid unsubscribe token' };
  const identifier = await identifierOfKey(db, payload.personKey);
  if (!identifier) return { ok: false, problem: 'token: its person is no longer known' };
  const { changed } = await recordConsent(db, {
    identifier,
    purpose: payload.purpose,
    granted: false,
    source: `unsubscribe:${payload.campaign}`,
    actor: 'recipient',
  });
  return { ok: true, payload, changed };
}
