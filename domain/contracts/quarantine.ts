/**
 * The quarantine: where ingestion keeps a track message that breaks its event's contract, whole and
 * with the reasons, instead of storing it in `events`. This module judges the messages of a batch
 * against the active contracts (loaded once per batch), tallies why they broke, writes a batch's
 * quarantined messages inside the batch's transaction, and reads the quarantine for the CLI.
 */
import type { PoolClient, Queryable } from '../../common/db.js';
import { checkProperties, type Reason, type Rule } from './check.js';
import type { ActiveContract } from './registry.js';

/** The fields of a checked message that its contract is looked up and judged by. */
export interface JudgedFields {
  type: string;
  event?: string | null | undefined;
  properties?: Readonly<Record<string, unknown>> | null | undefined;
}

/** A message that breaks its contract: the contract that judged it, and why. */
export interface Breach {
  contractId: number;
  version: number;
  reasons: Reason[];
}

/** The events whose contracts a batch needs: the names of its track messages. */
export function trackEvents(messages: Iterable<JudgedFields>): string[] {
  const names = new Set<string>();
  for (const m of messages) if (m.type === 'track' && m.event != null) names.add(m.event);
  return [...names];
}

/**
 * The breach of a message, or null when it keeps its contract. Only track messages have
 * contracts; an event without one passes as it is.
 */
export function judge(
  contracts: ReadonlyMap<string, ActiveContract>,
  message: JudgedFields,
): Breach | null {
  if (message.type !== 'track' || message.event == null) return null;
  const contract = contracts.get(message.event);
  if (contract === undefined) return null;
  const reasons = checkProperties(contract.schema, message.properties);
  if (reasons.length === 0) return null;
  return { contractId: contract.id, version: contract.version, reasons };
}

/** How many quarantined messages broke one rule of one event's contract. */
export interface ReasonCount {
  event: string;
  path: string;
  rule: Rule;
  expected: string;
  messages: number;
}

/** Counts a batch's quarantined messages and their reasons, for the answer to its sender. */
export class QuarantineTally {
  /** Messages that broke their contract. */
  messages = 0;
  private readonly counts = new Map<string, ReasonCount>();

  /** One more quarantined message of `event`. */
  add(event: string, reasons: readonly Reason[]): void {
    this.messages += 1;
    for (const { path, rule, expected } of reasons) {
      const key = JSON.stringify([event, path, rule, expected]);
      const count = this.counts.get(key) ?? { event, path, rule, expected, messages: 0 };
      count.messages += 1;
      this.counts.set(key, count);
    }
  }

  /** One message less: it was found to be a duplicate of a stored event, so not quarantined. */
  remove(event: string, reasons: readonly Reason[]): void {
    this.messages -= 1;
    for (const { path, rule, expected } of reasons) {
      const key = JSON.stringify([event, path, rule, expected]);
      const count = this.counts.get(key);
      if (count === undefined) continue;
      count.messages -= 1;
      if (count.messages <= 0) this.counts.delete(key);
    }
  }

  /** The counts, the most frequent first. */
  reasons(): ReasonCount[] {
    return [...this.counts.values()].sort(
      (a, b) =>
        b.messages - a.messages ||
        a.event.localeCompare(b.event) ||
        a.path.localeCompare(b.path) ||
        a.rule.localeCompare(b.rule),
    );
  }
}

/** One message to quarantine: its id and event, the contract that refused it, and why. */
export interface QuarantineRow {
  messageId: string;
  event: string;
  breach: Breach;
  /** The message as received (JSON). */
  message: unknown;
}

/**
 * Writes quarantined messages on the caller's transaction (in batch order), after the batch's
 * events. A messageId already in `events` is a duplicate, dropped as Segment drops one; one
 * already quarantined is not written again. Returns the messageIds dropped as duplicates.
 */
export async function storeQuarantined(
  client: PoolClient,
  source: string,
  receivedAt: Date,
  rows: readonly QuarantineRow[],
): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const records = rows.map((r) => ({
    message_id: r.messageId,
    event: r.event,
    contract_id: r.breach.contractId,
    message: r.message,
    reasons: r.breach.reasons,
  }));
  // The events this transaction stored before are visible here: a statement sees earlier ones.
  const { rows: duplicates } = await client.query<{ message_id: string }>(
    `with r as (
       select e.n, r.*
         from jsonb_array_elements($1::jsonb) with ordinality as e(row, n)
              cross join lateral jsonb_to_record(e.row) as r(
                message_id text, event text, contract_id bigint, message jsonb, reasons jsonb)
     ),
     stored as (
       select r.message_id from r
        where exists (select from events v where v.message_id = r.message_id)
     ),
     written as (
       insert into quarantined_events (message_id, source, event, contract_id, message, reasons,
                                       received_at)
       select r.message_id, $2::text, r.event, r.contract_id, r.message, r.reasons,
              $3::timestamptz
         from r where r.message_id not in (select message_id from stored)
        order by r.n
       on conflict (message_id) do nothing
     )
     select message_id from stored`,
    [JSON.stringify(records), source, receivedAt],
  );
  return new Set(duplicates.map((d) => d.message_id));
}

/** Quarantined messages of one event: how many, and when the last came. */
export interface EventCount {
  event: string;
  messages: number;
  lastReceivedAt: string;
}

/** A quarantined message as `pops quarantine list` shows it. */
export interface QuarantinedView {
  messageId: string;
  source: string;
  event: string;
  contractVersion: number;
  reasons: Reason[];
  receivedAt: string;
  message: unknown;
}

/** The quarantine's counts by event and by reason, of one event or all. */
export async function quarantineCounts(
  db: Queryable,
  event?: string,
): Promise<{ byEvent: EventCount[]; byReason: ReasonCount[] }> {
  const which = [event ?? null];
  const byEvent = await db.query<{ event: string; messages: number; last: Date }>(
    `select event, count(*)::int as messages, max(received_at) as last
       from quarantined_events where $1::text is null or event = $1
      group by event order by messages desc, event`,
    which,
  );
  const byReason = await db.query<ReasonCount>(
    `select event, path, rule, expected, messages from quarantine_reason_counts
      where $1::text is null or event = $1
      order by messages desc, event, path, rule`,
    which,
  );
  return {
    byEvent: byEvent.rows.map((r) => ({
      event: r.event,
      messages: r.messages,
      lastReceivedAt: r.last.toISOString(),
    })),
    byReason: byReason.rows,
  };
}

/** The latest quarantined messages (of one event, or all), newest first. */
export async function recentQuarantined(
  db: Queryable,
  options: { event?: string; limit: number },
): Promise<QuarantinedView[]> {
  const { rows } = await db.query<{
    message_id: string;
    source: string;
    event: string;
    version: number;
    reasons: Reason[];
    received_at: Date;
    message: unknown;
  }>(
    `select q.message_id, q.source, q.event, c.version, q.reasons, q.received_at, q.message
       from quarantined_events q join event_contracts c on c.id = q.contract_id
      where $1::text is null or q.event = $1
      order by q.received_at desc, q.id desc
      limit $2`,
    [options.event ?? null, options.limit],
  );
  return rows.map((r) => ({
    messageId: r.message_id,
    source: r.source,
    event: r.event,
    contractVersion: r.version,
    reasons: r.reasons,
    receivedAt: r.received_at.toISOString(),
    message: r.message,
  }));
}
