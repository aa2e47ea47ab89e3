/**
 * The campaign tables (migration 0016): definitions, runs and their reports. Definitions and pause
 * changes are audited with the change. The send ledger, caps and suppressions are in ledger.ts.
 */
import { type Pool, type Queryable, withTransaction } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { type Campaign, campaignSchema } from './definition.js';

export interface StoredCampaign {
  name: string;
  definition: Campaign;
  origin: string;
  paused: boolean;
  pausedReason: string | null;
  updatedBy: string;
  updatedAt: Date;
}

interface CampaignRow {
  name: string;
  definition: unknown;
  origin: string;
  paused: boolean;
  paused_reason: string | null;
  updated_by: string;
  updated_at: Date;
}

function fromRow(row: CampaignRow): StoredCampaign {
  return {
    name: row.name,
    definition: campaignSchema.parse(row.definition),
    origin: row.origin,
    paused: row.paused,
    pausedReason: row.paused_reason,
    updatedBy: row.updated_by,
    updatedAt: row.updated_at,
  };
}

/** Creates or replaces a definition (audited); `changed` is false when it was the same. */
export async function putCampaign(
  pool: Pool,
  input: { campaign: Campaign; origin: string; actor: string },
): Promise<{ created: boolean; changed: boolean }> {
  return withTransaction(pool, async (client) => {
    const before = await client.query<{ definition: unknown }>(
      'select definition from campaigns where name = $1 for update',
      [input.campaign.name],
    );
    const previous = before.rows[0]?.definition;
    const same = previous !== undefined && sameJson(previous, input.campaign);
    if (same) return { created: false, changed: false };
    await client.query(
      `insert into campaigns (name, definition, origin, updated_by) values ($1, $2, $3, $4)
       on conflict (name) do update set definition = excluded.definition,
         origin = excluded.origin, updated_by = excluded.updated_by, updated_at = now()`,
      [input.campaign.name, JSON.stringify(input.campaign), input.origin, input.actor],
    );
    await appendAuditIn(client, {
      actor: input.actor,
      action: previous === undefined ? 'campaign.created' : 'campaign.updated',
      subject: `campaign/${input.campaign.name}`,
      inputs: { origin: input.origin, definition: input.campaign },
    });
    return { created: previous === undefined, changed: true };
  });
}

function sameJson(a: unknown, b: unknown): boolean {
  const sorted = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, sorted((v as Record<string, unknown>)[k])]),
        )
      : Array.isArray(v)
        ? v.map(sorted)
        : v;
  return JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
}

/** One campaign, or undefined. */
export async function getCampaign(
  db: Queryable,
  name: string,
): Promise<StoredCampaign | undefined> {
  const { rows } = await db.query<CampaignRow>('select * from campaigns where name = $1', [name]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/** Every campaign, by name. */
export async function listCampaigns(db: Queryable): Promise<StoredCampaign[]> {
  const { rows } = await db.query<CampaignRow>('select * from campaigns order by name');
  return rows.map(fromRow);
}

export type RunStatus = 'running' | 'completed' | 'late' | 'failed';

export interface CampaignRun {
  campaign: string;
  fireTime: Date;
  workflowId: string;
  definition: Campaign;
  status: RunStatus;
  lateByMs: number;
  maxLatenessMs: number | null;
  audienceSize: number | null;
  startedAt: Date;
  finishedAt: Date | null;
}

interface RunRow {
  campaign: string;
  fire_time: Date;
  workflow_id: string;
  definition: unknown;
  status: RunStatus;
  late_by_ms: number;
  max_lateness_ms: number | null;
  audience_size: number | null;
  started_at: Date;
  finished_at: Date | null;
}

function runFromRow(row: RunRow): CampaignRun {
  return {
    campaign: row.campaign,
    fireTime: row.fire_time,
    workflowId: row.workflow_id,
    definition: row.definition as Campaign,
    status: row.status,
    lateByMs: row.late_by_ms,
    maxLatenessMs: row.max_lateness_ms,
    audienceSize: row.audience_size,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

/** The run of a fire time, or undefined. */
export async function getRun(
  db: Queryable,
  campaign: string,
  fireTime: Date | string,
): Promise<CampaignRun | undefined> {
  const { rows } = await db.query<RunRow>(
    'select * from campaign_runs where campaign = $1 and fire_time = $2',
    [campaign, new Date(fireTime)],
  );
  return rows[0] ? runFromRow(rows[0]) : undefined;
}

/** A campaign's runs, newest first. */
export async function listRuns(
  db: Queryable,
  campaign: string,
  limit = 20,
): Promise<CampaignRun[]> {
  const { rows } = await db.query<RunRow>(
    `select * from campaign_runs where campaign = $1 order by fire_time desc limit $2`,
    [campaign, limit],
  );
  return rows.map(runFromRow);
}

/** What a run did: persons by outcome and skips by reason. */
export interface RunReport {
  campaign: string;
  fireTime: string;
  status: RunStatus;
  lateByMs: number;
  audience: number;
  sent: number;
  heldOut: number;
  failed: number;
  unknown: number;
  pending: number;
  held: number;
  skipped: Record<string, number>;
}

/** Counts a run's ledger (the stored run report is this, written when the run ends). */
export async function computeRunReport(
  db: Queryable,
  campaign: string,
  fireTime: Date | string,
): Promise<RunReport | undefined> {
  const run = await getRun(db, campaign, fireTime);
  if (!run) return undefined;
  const { rows } = await db.query<{ status: string; reason: string | null; n: number }>(
    `select status, case when status = 'skipped' then reason end as reason, count(*)::int as n
       from campaign_sends where campaign = $1 and fire_time = $2 group by 1, 2`,
    [campaign, run.fireTime],
  );
  const count = (status: string) =>
    rows.filter((r) => r.status === status).reduce((s, r) => s + r.n, 0);
  const skipped: Record<string, number> = {};
  for (const r of rows) if (r.status === 'skipped') skipped[r.reason ?? 'unknown'] = r.n;
  return {
    campaign,
    fireTime: run.fireTime.toISOString(),
    status: run.status,
    lateByMs: run.lateByMs,
    audience: run.audienceSize ?? 0,
    sent: count('sent'),
    heldOut: count('would_send'),
    failed: count('failed'),
    unknown: count('unknown'),
    pending: count('pending'),
    held: count('held'),
    skipped,
  };
}

/** Stores a report (run or lift) under its run; the newest write wins. */
export async function storeReport(
  db: Queryable,
  input: { campaign: string; fireTime: Date | string; kind: 'run' | 'lift'; horizonDays?: number },
  report: unknown,
): Promise<void> {
  await db.query(
    `insert into campaign_reports (campaign, fire_time, kind, horizon_days, report)
     values ($1, $2, $3, $4, $5)
     on conflict (campaign, fire_time, kind, horizon_days)
       do update set report = excluded.report, created_at = now()`,
    [input.campaign, new Date(input.fireTime), input.kind, input.horizonDays ?? 0, report],
  );
}

/** The stored reports of a run. */
export async function storedReports(
  db: Queryable,
  campaign: string,
  fireTime: Date | string,
): Promise<Array<{ kind: string; horizonDays: number; report: unknown; createdAt: Date }>> {
  const { rows } = await db.query<{
    kind: string;
    horizon_days: number;
    report: unknown;
    created_at: Date;
  }>(
    `select kind, horizon_days, report, created_at from campaign_reports
      where campaign = $1 and fire_time = $2 order by kind desc, horizon_days`,
    [campaign, new Date(fireTime)],
  );
  return rows.map((r) => ({
    kind: r.kind,
    horizonDays: r.horizon_days,
    report: r.report,
    createdAt: r.created_at,
  }));
}
