/**
 * What ingestion keeps of a newly stored message beyond its (minimized) event row, for the HTTP
 * API and NDJSON imports alike. Only newly stored ones: a resent message, already stored, changes
 * nothing (an older resend would otherwise undo a later choice), nor does a quarantined one.
 * - the consent an identify message states in its traits (POPS_CONSENT_TRAITS), recorded for its
 *   user id and its anonymous id;
 * - the address a message gives (traits.email, else context.traits.email), sealed in `contacts`
 *   under `unresolved:<user id, else anonymous id>`, which campaigns find through the identity
 *   graph (the later message of a batch or file wins). The clear address is kept nowhere else.
 * The callers drop messages of deleted persons (tombstones) before this.
 */
import type { Queryable } from '../../common/db.js';
import { recordConsent } from './consent.js';
import { consentChoices, type ConsentTraitMap } from './consent-traits.js';
import { setEmailAddresses } from './contacts.js';
import { sendableEmail } from './minimize.js';

/** One ingested message: the columns of its row that name the sender, and the checked message. */
export interface IngestedMessage {
  row: {
    message_id: string;
    type: string;
    person_id: string;
    user_id: string | null;
    anonymous_id: string | null;
  };
  /** The checked message, not minimized (its traits and context are read). */
  fields: object;
  /** When its consent takes effect. */
  at: Date;
}

/** Records the consent and seals the addresses of `messages`; `stored`: the newly stored ids. */
export async function captureFromMessages(
  db: Queryable,
  traits: ConsentTraitMap,
  source: string,
  messages: readonly IngestedMessage[],
  stored: ReadonlySet<string>,
): Promise<void> {
  const contacts: Array<{ personKey: string; email: string }> = [];
  for (const { row, fields, at } of messages) {
    if (!stored.has(row.message_id)) continue;
    const email = sendableEmail(fields);
    if (email !== null && row.person_id !== '') {
      contacts.push({ personKey: `unresolved:${row.person_id}`, email });
    }
    if (row.type !== 'identify') continue;
    const choices = consentChoices(fields as Record<string, unknown>, traits);
    const ids = [
      row.user_id === null ? null : { type: 'user_id', value: row.user_id },
      row.anonymous_id === null ? null : { type: 'anonymous_id', value: row.anonymous_id },
    ];
    for (const identifier of ids) {
      if (identifier === null || identifier.value.trim() === '') continue;
      for (const { purpose, granted } of choices) {
        const input = { identifier, purpose, granted, actor: `segment:${source}` };
        await recordConsent(db, { ...input, source: `segment:${source}`, at });
      }
    }
  }
  await setEmailAddresses(db, contacts, `segment:${source}`);
}
