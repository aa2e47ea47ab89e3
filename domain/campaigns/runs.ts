/**
 * A run's life in the tables: begin (late fire times skipped and recorded; otherwise the run row
 * and the audience snapshot), the persons held for later and when the next may go, and the end
 * (its report stored and audited). Notices are runs of `notice:<id>` at the epoch whose audience
 * is notice_audiences. Each step is keyed by (campaign, fire time), so a retry repeats nothing.
 */
import { type Pool, type Queryable, withTransaction } from '../../common/db.js';
import { appendAuditIn } from '../audit.js';
import { snapshotAudience, insertAudience } from './audience.js';
import { type Campaign, NOTICE_FIRE_TIME, noticeCampaign } from './definition.js';
import { computeRunReport, getCampaign, getRun, type RunReport, storeReport } from './store.js';

export interface BeganRun {
  status: 'running' | 'late' | 'completed' | 'failed';
  lateByMs: number;
  maxLatenessMs: number;
  audience: number;
}

/** Thrown when the campaign of a run is not defined. */
export class CampaignNotFound extends Error {}

/**
 * Begins the run of `fireTime` (or answers the run already begun): a fire time more than the
 * campaign's maxLateness before `now` is recorded as late and sends nothing.
 */
export async function beginRun(
  pool: Pool,
  input: { campaign: string; fireTime: Date; workflowId: string; now: Date },
): Promise<BeganRun> {
  const found = await getRun(pool, input.campaign, input.fireTime);
  if (found && found.status !== 'running') {
    return {
      status: found.status,
      lateByMs: found.lateByMs,
      maxLatenessMs: found.maxLatenessMs ?? 0,
      audience: found.audienceSize ?? 0,
    };
  }
  const stored = found ? { definition: found.definition } : await getCampaign(pool, input.campaign);
  if (!stored) throw new CampaignNotFound(`campaign "${input.campaign}" is not defined`);
  const campaign: Campaign = stored.definition;
  const lateByMs = Math.max(0, input.now.getTime() - input.fireTime.getTime());
  const late = !found && lateByMs > campaign.maxLateness;
  await withTransaction(pool, async (client) => {
    const { rowCount } = await client.query(
      `insert into campaign_runs (campaign, fire_time, workflow_id, definition, status,
                                  late_by_ms, max_lateness_ms, audience_size, finished_at)
       values ($1, $2, $3, $4, $5, $6, $7, case when $5 = 'late' then 0 end,
               case when $5 = 'late' then now() end)
       on conflict do nothing`,
      [
        campaign.name,
        input.fireTime,
        input.workflowId,
        JSON.stringify(campaign),
        late ? 'late' : 'running',
        lateByMs,
        campaign.maxLateness,
      ],
    );
    if (rowCount && late) {
      await appendAuditIn(client, {
        actor: `schedule/campaign/${campaign.name}`,
        action: 'campaign.run-late',
        subject: `campaign/${campaign.name}`,
        workflowId: input.workflowId,
        inputs: { fireTime: input.fireTime.toISOString(), maxLatenessMs: campaign.maxLateness },
        outputs: { lateByMs, sent: 0 },
      });
    }
  });
  if (late) {
    const report = await computeRunReport(pool, campaign.name, input.fireTime);
    await storeReport(
      pool,
      { campaign: campaign.name, fireTime: input.fireTime, kind: 'run' },
      report,
    );
    return { status: 'late', lateByMs, maxLatenessMs: campaign.maxLateness, audience: 0 };
  }
  const audience = await snapshotAudience(pool, campaign, input.fireTime, input.fireTime);
  await pool.query(
    'update campaign_runs set audience_size = $3 where campaign = $1 and fire_time = $2',
    [campaign.name, input.fireTime, audience],
  );
  return { status: 'running', lateByMs, maxLatenessMs: campaign.maxLateness, audience };
}

/** The input of sendNotice (issue 7's notify step starts it by type name). */
export interface NoticeInput {
  noticeId: string;
  subject: string;
  text: string;
  purpose: 'personalization' | 'marketing' | 'analytics';
  requestedBy: string;
}

/** Begins a notice's run: its row and its audience, copied from notice_audiences once. */
export async function beginNotice(
  pool: Pool,
  input: NoticeInput & { workflowId: string },
): Promise<number> {
  const campaign = noticeCampaign(input.noticeId);
  const fireTime = new Date(NOTICE_FIRE_TIME);
  const { workflowId, ...definition } = input;
  const inserted = await pool.query(
    `insert into campaign_runs (campaign, fire_time, workflow_id, definition)
     values ($1, $2, $3, $4) on conflict do nothing`,
    [campaign, fireTime, workflowId, JSON.stringify({ notice: definition })],
  );
  const existing = await pool.query<{ n: number }>(
    'select count(*)::int as n from campaign_audience where campaign = $1 and fire_time = $2',
    [campaign, fireTime],
  );
  if (!inserted.rowCount && (existing.rows[0]?.n ?? 0) > 0) return existing.rows[0]?.n ?? 0;
  const { rows } = await pool.query<{ person_key: string }>(
    'select person_key from notice_audiences where notice_id = $1 order by person_key',
    [input.noticeId],
  );
  await insertAudience(
    pool,
    campaign,
    fireTime,
    rows.map((r) => ({
      personKey: r.person_key,
      holdout: false,
      timeZone: 'UTC',
      zoneSource: 'default',
      features: {},
    })),
  );
  await pool.query(
    'update campaign_runs set audience_size = $3 where campaign = $1 and fire_time = $2',
    [campaign, fireTime, rows.length],
  );
  return rows.length;
}

/** When the next held person of a run may go (undefined: none is held). */
export async function nextRelease(
  db: Queryable,
  campaign: string,
  fireTime: Date,
): Promise<Date | undefined> {
  const { rows } = await db.query<{ at: Date | null }>(
    `select min(release_at) as at from campaign_sends
      where campaign = $1 and fire_time = $2 and status = 'held'`,
    [campaign, fireTime],
  );
  return rows[0]?.at ?? undefined;
}

/** Up to `limit` held persons of a run whose release time is at or before `now`. */
export async function dueHeld(
  db: Queryable,
  input: { campaign: string; fireTime: Date; now: Date; limit: number },
) {
  const { rows } = await db.query<{
    person_key: string;
    holdout: boolean;
    time_zone: string;
    features: Record<string, unknown>;
  }>(
    `select a.person_key, a.holdout, a.time_zone, a.features
       from campaign_sends s
       join campaign_audience a
         on a.campaign = s.campaign and a.fire_time = s.fire_time and a.person_key = s.person_key
      where s.campaign = $1 and s.fire_time = $2 and s.status = 'held' and s.release_at <= $3
      order by s.release_at, a.seq limit $4`,
    [input.campaign, input.fireTime, input.now, input.limit],
  );
  return rows.map((r) => ({
    personKey: r.person_key,
    holdout: r.holdout,
    timeZone: r.time_zone,
    features: r.features,
  }));
}

/** Ends a run: its report is counted from the ledger, stored and audited. */
export async function finishRun(
  pool: Pool,
  input: { campaign: string; fireTime: Date; workflowId: string },
): Promise<RunReport> {
  await withTransaction(pool, async (client) => {
    const { rowCount } = await client.query(
      `update campaign_runs set status = 'completed', finished_at = now()
        where campaign = $1 and fire_time = $2 and status = 'running'`,
      [input.campaign, input.fireTime],
    );
    if (!rowCount) return;
    const report = await computeRunReport(client, input.campaign, input.fireTime);
    await appendAuditIn(client, {
      actor: `workflow/${input.workflowId}`,
      action: 'campaign.run-completed',
      subject: input.campaign.startsWith('notice:') ? input.campaign : `campaign/${input.campaign}`,
      workflowId: input.workflowId,
      inputs: { fireTime: input.fireTime.toISOString() },
      outputs: { ...report },
    });
  });
  const report = await computeRunReport(pool, input.campaign, input.fireTime);
  if (!report) throw new Error(`run ${input.campaign} at ${input.fireTime.toISOString()} is gone`);
  await storeReport(pool, { ...input, kind: 'run' }, report);
  return report;
}
