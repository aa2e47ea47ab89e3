/**
 * Campaign test support: persons seeded the way the store holds them (unresolved keys with an
 * online `person_days_since_last_rating` value, an address in contacts, a marketing consent, a
 * zone on an event), a definition builder, and running one fire time to its end.
 */
import type { Client } from '@temporalio/client';
import type { Pool } from '../common/db.js';
import { queueName } from '../common/queues.js';
import {
  type Campaign,
  type CampaignInput,
  campaignSchema,
} from '../domain/campaigns/definition.js';
import { campaignWorkflowId } from '../domain/campaigns/names.js';
import { putCampaign } from '../domain/campaigns/store.js';
import { featureDefinitionSchema } from '../domain/features/definition.js';
import { registerFeatures } from '../domain/features/registry.js';
import { recordConsent } from '../domain/privacy/consent.js';
import { setEmailAddress } from '../domain/privacy/contacts.js';
import type { RunCampaignInput } from '../domain/campaigns/workflow-input.js';
import type { RunCampaignResult } from '../workflows/runCampaign.js';

export const DAYS_FEATURE = featureDefinitionSchema.parse({
  name: 'person_days_since_last_rating',
  version: 1,
  entity: 'person',
  source: { events: { event: 'rated' } },
  aggregation: { fn: 'days_since_last' },
  windows: ['lifetime'],
  type: 'float',
  owner: 'test',
  description: 'days since the last rating',
  freshnessSla: '26h',
});

export interface SeedPerson {
  id: string;
  /** Days since last activity as of `at`. */
  days: number;
  consent?: boolean;
  timeZone?: string;
  email?: string | null;
}

/** The address a seeded person gets (unless told otherwise). */
export const addressOf = (id: string) => `${id}@example.test`;

/** Registers the feature once and seeds persons; returns their person keys. */
export async function seedPersons(
  pool: Pool,
  persons: readonly SeedPerson[],
  at: Date,
): Promise<string[]> {
  await registerFeatures(pool, [DAYS_FEATURE], 'test');
  for (const p of persons) {
    const key = `unresolved:${p.id}`;
    await pool.query(
      `insert into feature_online (name, version, entity_id, ts, vals) values ($1, 1, $2, $3, $4)
       on conflict (name, version, entity_id) do update set ts = excluded.ts, vals = excluded.vals`,
      [DAYS_FEATURE.name, key, at, [p.days]],
    );
    if (p.email !== null) await setEmailAddress(pool, key, p.email ?? addressOf(p.id), 'test');
    if (p.consent !== false) {
      await recordConsent(pool, {
        identifier: { type: 'user_id', value: p.id },
        purpose: 'marketing',
        granted: true,
        source: 'test',
        actor: 'test',
        at: new Date(at.getTime() - 86_400_000),
      });
    }
    if (p.timeZone) {
      await pool.query(
        `insert into events (message_id, source, type, event, person_id, user_id, ts, context)
         values ($1, 'test', 'track', 'opened', $2, $2, $3, $4)`,
        [
          `tz-${p.id}-${p.timeZone}`,
          p.id,
          new Date(at.getTime() - 3600_000),
          { timezone: p.timeZone },
        ],
      );
    }
  }
  return persons.map((p) => `unresolved:${p.id}`);
}

/** A campaign over days-since-last between 14 and 60, overridable field by field. */
export function campaignOf(name: string, over: Partial<CampaignInput> = {}): Campaign {
  return campaignSchema.parse({
    name,
    audience: {
      purpose: 'marketing',
      where: [{ feature: 'person_days_since_last_rating', between: [14, 60] }],
    },
    schedule: { cron: '0 10 * * *', timeZone: 'Europe/Berlin' },
    maxLateness: '2h',
    sender: 'news@shop.example',
    subject: 'We miss you, {{person.key}}',
    template: {
      html: '<p>Hello {{person.key}}</p><a href="{{unsubscribeUrl}}">unsubscribe</a>',
      text: 'Hello {{person.key}}\nUnsubscribe: {{unsubscribeUrl}}',
    },
    ...over,
  });
}

/** Stores the definition. */
export async function defineCampaign(pool: Pool, campaign: Campaign): Promise<void> {
  await putCampaign(pool, { campaign, origin: 'test', actor: 'test' });
}

/** Starts runCampaign for one fire time (the id a schedule would give it) and awaits it. */
export async function runFireTime(
  client: Client,
  prefix: string,
  campaign: string,
  fireTime: Date,
  extra: { batchSize?: number; batchesPerRun?: number } = {},
): Promise<RunCampaignResult> {
  return client.workflow.execute<(input: RunCampaignInput) => Promise<RunCampaignResult>>(
    'runCampaign',
    {
      workflowId: campaignWorkflowId(campaign, fireTime),
      taskQueue: queueName(prefix, 'orchestration'),
      args: [{ campaign, fireTime: fireTime.toISOString(), ...extra }],
    },
  );
}

/** Ledger rows of a run by status. */
export async function ledgerCounts(
  pool: Pool,
  campaign: string,
  fireTime: Date,
): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ status: string; n: number }>(
    `select status, count(*)::int as n from campaign_sends
      where campaign = $1 and fire_time = $2 group by status`,
    [campaign, fireTime],
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}
