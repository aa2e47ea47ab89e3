/**
 * What incident playbooks (issue 7) and people use to stop campaign mail: suppress persons under
 * a key (an incident id) until the key is lifted, and pause or resume campaigns (their Temporal
 * Schedules and, through the `paused` flag every batch reads, the runs in flight). Each change is
 * audited with its actor and reason.
 */
import { type Client, ScheduleNotFoundError } from '@temporalio/client';
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { campaignScheduleId } from './definition.js';

/** Runs `work` in a transaction: the pool's own, or the caller's when given a client. */
async function inTransaction<T>(db: Queryable, work: (c: PoolClient) => Promise<T>): Promise<T> {
  if (!('connect' in db)) return work(db as PoolClient);
  const client = await (db as Pool).connect();
  try {
    await client.query('begin');
    const result = await work(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Suppresses persons under `key`: no campaign mail reaches them (a batch in flight checks before
 * each chunk it sends) until liftSuppression. Returns how many were newly suppressed.
 */
export async function suppressPersons(
  db: Queryable,
  input: { key: string; personKeys: readonly string[]; reason: string; actor: string },
): Promise<number> {
  return inTransaction(db, async (client) => {
    const { rowCount } = await client.query(
      `insert into campaign_suppressions (key, person_key, reason, actor)
       select $1, k, $3, $4 from unnest($2::text[]) as k
       on conflict (key, person_key) do update
          set lifted_at = null, lifted_by = null, reason = excluded.reason, actor = excluded.actor
        where campaign_suppressions.lifted_at is not null`,
      [input.key, [...new Set(input.personKeys)], input.reason, input.actor],
    );
    const added = rowCount ?? 0;
    if (added > 0) {
      await appendAuditIn(client, {
        actor: input.actor,
        action: 'campaign.suppressed',
        subject: `suppression/${input.key}`,
        inputs: { reason: input.reason, persons: added },
      });
    }
    return added;
  });
}

/** Lifts every suppression under `key`; returns how many persons it freed. */
export async function liftSuppression(db: Queryable, key: string, actor: string): Promise<number> {
  return inTransaction(db, async (client) => {
    const { rowCount } = await client.query(
      `update campaign_suppressions set lifted_at = now(), lifted_by = $2
        where key = $1 and lifted_at is null`,
      [key, actor],
    );
    const lifted = rowCount ?? 0;
    if (lifted > 0) {
      await appendAuditIn(client, {
        actor,
        action: 'campaign.suppression-lifted',
        subject: `suppression/${key}`,
        inputs: { persons: lifted },
      });
    }
    return lifted;
  });
}

async function flag(
  db: Queryable,
  input: { names?: readonly string[] | undefined; paused: boolean; reason: string; actor: string },
): Promise<string[]> {
  return inTransaction(db, async (client) => {
    const { rows } = await client.query<{ name: string }>(
      `update campaigns set paused = $2, paused_reason = case when $2 then $3 end,
              updated_at = now()
        where ($1::text[] is null or name = any($1::text[])) and paused <> $2
       returning name`,
      [input.names ?? null, input.paused, input.reason],
    );
    const changed = rows.map((r) => r.name).sort();
    for (const name of changed) {
      await appendAuditIn(client, {
        actor: input.actor,
        action: input.paused ? 'campaign.paused' : 'campaign.resumed',
        subject: `campaign/${name}`,
        inputs: { reason: input.reason },
      });
    }
    return changed;
  });
}

async function eachSchedule(
  temporal: Client,
  names: readonly string[],
  act: (handle: ReturnType<Client['schedule']['getHandle']>) => Promise<void>,
): Promise<void> {
  for (const name of names) {
    try {
      await act(temporal.schedule.getHandle(campaignScheduleId(name)));
    } catch (err) {
      // A campaign defined but never scheduled has no schedule: the flag alone pauses it.
      if (!(err instanceof ScheduleNotFoundError)) throw err;
    }
  }
}

/**
 * Pauses campaigns (all when `names` is left out): their schedules stop firing and runs in flight
 * stop before their next chunk. Returns the ones that were running and are now paused.
 */
export async function pauseCampaigns(
  temporal: Client,
  db: Queryable,
  input: { names?: string[]; reason: string; actor: string },
): Promise<string[]> {
  const paused = await flag(db, { ...input, paused: true });
  await eachSchedule(temporal, paused, (h) => h.pause(`${input.actor}: ${input.reason}`));
  return paused;
}

/** Resumes the named campaigns (the compensation of pauseCampaigns); returns those resumed. */
export async function resumeCampaigns(
  temporal: Client,
  db: Queryable,
  input: { names: string[]; reason: string; actor: string },
): Promise<string[]> {
  const resumed = await flag(db, { ...input, paused: false });
  await eachSchedule(temporal, resumed, (h) => h.unpause(`${input.actor}: ${input.reason}`));
  return resumed;
}
