/**
 * The send ledger, frequency-cap slots and suppressions: the statements the send path runs per
 * person. A ledger row is keyed by (campaign, fire time, person) and written before a message is
 * handed to SMTP; a cap slot is reserved under a per-person transaction lock so two campaigns
 * sending to one person at once cannot both pass a cap of one.
 */
import { type Pool, type Queryable, withTransaction } from '../../common/db.js';

export type SendStatus =
  | 'pending'
  | 'sent'
  | 'failed'
  | 'unknown'
  | 'would_send'
  | 'skipped'
  | 'held';

export interface LedgerRow {
  personKey: string;
  status: SendStatus;
  reason: string | null;
  releaseAt: Date | null;
}

/** The ledger rows of these persons in a run. */
export async function ledgerRows(
  db: Queryable,
  campaign: string,
  fireTime: Date,
  personKeys: readonly string[],
): Promise<Map<string, LedgerRow>> {
  const { rows } = await db.query<{
    person_key: string;
    status: SendStatus;
    reason: string | null;
    release_at: Date | null;
  }>(
    `select person_key, status, reason, release_at from campaign_sends
      where campaign = $1 and fire_time = $2 and person_key = any($3::text[])`,
    [campaign, fireTime, personKeys],
  );
  return new Map(
    rows.map((r) => [
      r.person_key,
      { personKey: r.person_key, status: r.status, reason: r.reason, releaseAt: r.release_at },
    ]),
  );
}

/**
 * Records a final or held state for a person that is not being sent (skip, hold, would-send):
 * written when the person has no row yet or is held; a row in any other state is left as it is.
 */
export async function recordOutcome(
  db: Queryable,
  row: {
    campaign: string;
    fireTime: Date;
    personKey: string;
    holdout: boolean;
    status: 'skipped' | 'held' | 'would_send';
    reason?: string | null;
    releaseAt?: Date | null;
  },
): Promise<void> {
  await db.query(
    `insert into campaign_sends
       (campaign, fire_time, person_key, holdout, status, reason, release_at)
     values ($1, $2, $3, $4, $5, $6, $7)
     on conflict (campaign, fire_time, person_key) do update
        set status = excluded.status, reason = excluded.reason,
            release_at = excluded.release_at, updated_at = now()
      where campaign_sends.status = 'held'`,
    [
      row.campaign,
      row.fireTime,
      row.personKey,
      row.holdout,
      row.status,
      row.reason ?? null,
      row.releaseAt ?? null,
    ],
  );
}

/**
 * Claims sends: each ledger row becomes `pending` (inserted, or moved from `held`), all in one
 * statement. Returns the persons claimed; one missing is held or finished by another attempt,
 * and nothing may be sent to it.
 */
export async function claimSends(
  db: Queryable,
  run: { campaign: string; fireTime: Date },
  rows: ReadonlyArray<{ personKey: string; messageId: string }>,
): Promise<Set<string>> {
  const { rows: claimed } = await db.query<{ person_key: string }>(
    `insert into campaign_sends (campaign, fire_time, person_key, status, message_id, attempts)
     select $1, $2, r.key, 'pending', r.message_id, 1
       from unnest($3::text[], $4::text[]) as r(key, message_id)
     on conflict (campaign, fire_time, person_key) do update
        set status = 'pending', message_id = excluded.message_id, attempts = 1,
            release_at = null, updated_at = now()
      where campaign_sends.status = 'held'
     returning person_key`,
    [run.campaign, run.fireTime, rows.map((r) => r.personKey), rows.map((r) => r.messageId)],
  );
  return new Set(claimed.map((r) => r.person_key));
}

/** Marks pending sends with how each ended, in one statement. */
export async function markSends(
  db: Queryable,
  run: { campaign: string; fireTime: Date },
  outcomes: ReadonlyArray<{
    personKey: string;
    status: 'sent' | 'failed' | 'unknown';
    response: string;
    attempts: number;
  }>,
): Promise<void> {
  if (outcomes.length === 0) return;
  await db.query(
    `update campaign_sends s
        set status = o.status, smtp_response = o.response, attempts = o.attempts,
            reason = case when o.status = 'sent' then null else o.response end, updated_at = now()
       from unnest($3::text[], $4::text[], $5::text[], $6::int[])
              as o(key, status, response, attempts)
      where s.campaign = $1 and s.fire_time = $2 and s.person_key = o.key and s.status = 'pending'`,
    [
      run.campaign,
      run.fireTime,
      outcomes.map((o) => o.personKey),
      outcomes.map((o) => o.status),
      outcomes.map((o) => o.response),
      outcomes.map((o) => o.attempts),
    ],
  );
}

/**
 * Pending rows of a run's persons left by an attempt that did not finish: their outcome is not
 * known (the message may have gone out), so they become `unknown` and are never sent again.
 */
export async function abandonPending(
  db: Queryable,
  campaign: string,
  fireTime: Date,
  personKeys: readonly string[],
): Promise<number> {
  const { rowCount } = await db.query(
    `update campaign_sends set status = 'unknown',
            reason = 'an earlier attempt ended before recording the outcome', updated_at = now()
      where campaign = $1 and fire_time = $2 and person_key = any($3::text[])
        and status = 'pending'`,
    [campaign, fireTime, personKeys],
  );
  return rowCount ?? 0;
}

function personLock(client: Queryable, personKey: string) {
  return client.query('select pg_advisory_xact_lock(hashtextextended($1, 8))', [personKey]);
}

/**
 * Reserves a cap slot: true when the person has fewer than `max` slots reserved in the `days`
 * before `at` (or already holds this run's slot), false when capped. Atomic per person.
 */
export async function reserveCap(
  pool: Pool,
  input: { personKey: string; campaign: string; fireTime: Date; at: Date },
  cap: { max: number; days: number },
): Promise<boolean> {
  return withTransaction(pool, async (client) => {
    await personLock(client, input.personKey);
    const { rows } = await client.query<{ mine: boolean; n: number }>(
      `select bool_or(campaign = $2 and fire_time = $3) as mine, count(*)::int as n
         from campaign_cap_slots
        where person_key = $1 and reserved_at > $4::timestamptz - make_interval(days => $5)`,
      [input.personKey, input.campaign, input.fireTime, input.at, cap.days],
    );
    if (rows[0]?.mine) return true;
    if ((rows[0]?.n ?? 0) >= cap.max) return false;
    await client.query(
      `insert into campaign_cap_slots (person_key, campaign, fire_time, reserved_at)
       values ($1, $2, $3, $4) on conflict do nothing`,
      [input.personKey, input.campaign, input.fireTime, input.at],
    );
    return true;
  });
}

/** Whether a slot would be granted now, reserving nothing (holdout persons). */
export async function capAllows(
  db: Queryable,
  input: { personKey: string; at: Date },
  cap: { max: number; days: number },
): Promise<boolean> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from campaign_cap_slots
      where person_key = $1 and reserved_at > $2::timestamptz - make_interval(days => $3)`,
    [input.personKey, input.at, cap.days],
  );
  return (rows[0]?.n ?? 0) < cap.max;
}

/** Gives the run's slots of these persons back (their sends failed). */
export async function releaseCaps(
  db: Queryable,
  run: { campaign: string; fireTime: Date },
  personKeys: readonly string[],
): Promise<void> {
  await db.query(
    `delete from campaign_cap_slots
      where campaign = $1 and fire_time = $2 and person_key = any($3::text[])`,
    [run.campaign, run.fireTime, personKeys],
  );
}

/** Gives a run's slot back (its send failed or did not happen). */
export async function releaseCap(
  db: Queryable,
  input: { personKey: string; campaign: string; fireTime: Date },
): Promise<void> {
  await db.query(
    'delete from campaign_cap_slots where person_key = $1 and campaign = $2 and fire_time = $3',
    [input.personKey, input.campaign, input.fireTime],
  );
}

/** The persons among `personKeys` under an unlifted suppression. */
export async function suppressedPersons(
  db: Queryable,
  personKeys: readonly string[],
): Promise<Set<string>> {
  if (personKeys.length === 0) return new Set();
  const { rows } = await db.query<{ person_key: string }>(
    `select distinct person_key from campaign_suppressions
      where person_key = any($1::text[]) and lifted_at is null`,
    [personKeys],
  );
  return new Set(rows.map((r) => r.person_key));
}
