/**
 * Campaign activities. On the orchestration queue: begin a run (late check, audience snapshot),
 * when the next held person may go, end a run (its report), begin a notice, measure lift. On the
 * io queue: send a batch of a run's audience, or its held persons that are due, through the one
 * send path (domain/campaigns/send.ts) and a pooled SMTP transport (POPS_SMTP_URL). Every write is
 * keyed by (campaign, fire time, person), so a retry repeats nothing it finished.
 */
import { Context } from '@temporalio/activity';
import { loadConfig } from '../common/config.js';
import { mailSettings } from '../domain/campaigns/settings.js';
import type { Pool } from '../common/db.js';
import { FAILURE_TYPES, failure } from '../common/failures.js';
import { audienceSlice } from '../domain/campaigns/audience.js';
import { noticeHtml, renderCampaign } from '../domain/campaigns/content.js';
import type { Campaign } from '../domain/campaigns/definition.js';
import { measureLift, type LiftReport } from '../domain/campaigns/lift.js';
import { createMailer, type Mailer, type SmtpSettings } from '../domain/campaigns/mailer.js';
import {
  beginNotice,
  beginRun,
  type BeganRun,
  CampaignNotFound,
  dueHeld,
  finishRun,
  nextRelease,
  type NoticeInput,
} from '../domain/campaigns/runs.js';
import {
  type BatchOutcome,
  type Recipient,
  type SendContext,
  type SendSpec,
  sendToRecipients,
} from '../domain/campaigns/send.js';
import { getRun, type RunReport } from '../domain/campaigns/store.js';
import { Decider } from '../domain/decide/decider.js';
import type { ActivityDeps } from './deps.js';
import { callerWorkflow } from './deps.js';

export interface RunRef {
  campaign: string;
  /** ISO instant. */
  fireTime: string;
}

// One transport and one Decider per worker process (and per SMTP URL / pool), built on first use.
const mailers = new Map<string, Mailer>();
const deciders = new WeakMap<Pool, Decider>();

function mailerFor(settings: SmtpSettings): Mailer {
  const key = JSON.stringify(settings);
  let mailer = mailers.get(key);
  if (!mailer) {
    mailer = createMailer(settings);
    mailers.set(key, mailer);
  }
  return mailer;
}

/** The Decider campaign content scores with (shared by preview). */
export function deciderFor(deps: Pick<ActivityDeps, 'pool' | 'log' | 'trainBackend'>): Decider {
  let decider = deciders.get(deps.pool);
  if (!decider) {
    decider = new Decider({ pool: deps.pool, log: deps.log, backend: deps.trainBackend });
    deciders.set(deps.pool, decider);
  }
  return decider;
}

/** The send spec of a stored run: a campaign's gates and content, or a notice's. */
export async function specOfRun(
  deps: Pick<ActivityDeps, 'pool' | 'log' | 'trainBackend'>,
  ref: RunRef,
): Promise<SendSpec> {
  const fireTime = new Date(ref.fireTime);
  const run = await getRun(deps.pool, ref.campaign, fireTime);
  if (!run) throw failure(FAILURE_TYPES.notFound, `no run of ${ref.campaign} at ${ref.fireTime}`);
  const notice = (run.definition as unknown as { notice?: NoticeInput }).notice;
  if (notice) {
    return {
      campaign: ref.campaign,
      fireTime,
      purpose: notice.purpose,
      sender: loadConfig().POPS_NOTICE_SENDER,
      suppression: false,
      render: async (_r, unsubscribe) => ({
        subject: notice.subject,
        text: `${notice.text}\n\nUnsubscribe: ${unsubscribe}\n`,
        html: `${noticeHtml(notice.text)}\n<p><a href="${unsubscribe}">Unsubscribe</a></p>`,
      }),
    };
  }
  const campaign: Campaign = run.definition;
  const decider = campaign.template.recommendations ? deciderFor(deps) : undefined;
  return {
    campaign: campaign.name,
    fireTime,
    purpose: campaign.audience.purpose,
    sender: campaign.sender,
    suppression: true,
    localTime: 'localTime' in campaign.schedule ? campaign.schedule.localTime : undefined,
    quietHours: campaign.quietHours,
    cap: campaign.frequencyCap,
    render: (r: Recipient, unsubscribe: string) =>
      renderCampaign(deps.pool, decider, campaign, fireTime, r, unsubscribe),
    paused: async () => {
      const { rows } = await deps.pool.query<{ paused: boolean }>(
        'select paused from campaigns where name = $1',
        [campaign.name],
      );
      return rows[0]?.paused ?? false;
    },
  };
}

function sendContext(deps: ActivityDeps): SendContext {
  const settings = mailSettings();
  const ctx = Context.current();
  return {
    pool: deps.pool,
    mailer: mailerFor(settings.smtp),
    unsubscribe: settings.unsubscribe,
    now: deps.clock,
    log: deps.log,
    chunk: Math.max(1, settings.smtp.maxConnections * 2),
    retryDelaysMs: [200, 1000, 3000],
    heartbeat: () => ctx.heartbeat(),
  };
}

/** Builds the orchestration-queue campaign activities. */
export function campaignActivities(deps: ActivityDeps) {
  return {
    /** Begins a run or answers the one begun; see domain/campaigns/runs.ts beginRun. */
    async beginCampaignRun(ref: RunRef): Promise<BeganRun> {
      try {
        return await beginRun(deps.pool, {
          campaign: ref.campaign,
          fireTime: new Date(ref.fireTime),
          workflowId: callerWorkflow().workflowId,
          now: deps.clock(),
        });
      } catch (err) {
        if (err instanceof CampaignNotFound) throw failure(FAILURE_TYPES.notFound, err.message);
        throw err;
      }
    },

    /** When the next held person of the run may go (ISO), or null. */
    async nextHeldRelease(ref: RunRef): Promise<string | null> {
      const at = await nextRelease(deps.pool, ref.campaign, new Date(ref.fireTime));
      return at ? at.toISOString() : null;
    },

    /** Ends the run and stores its report. */
    async finishCampaignRun(ref: RunRef): Promise<RunReport> {
      return finishRun(deps.pool, {
        campaign: ref.campaign,
        fireTime: new Date(ref.fireTime),
        workflowId: callerWorkflow().workflowId,
      });
    },

    /** Begins a notice's run; returns its audience size. */
    async beginNoticeRun(input: NoticeInput): Promise<number> {
      return beginNotice(deps.pool, { ...input, workflowId: callerWorkflow().workflowId });
    },

    /** Measures and stores the lift of a run over `horizonDays`. */
    async measureRunLift(input: RunRef & { horizonDays: number }): Promise<LiftReport> {
      return measureLift(deps.pool, {
        campaign: input.campaign,
        fireTime: new Date(input.fireTime),
        horizonDays: input.horizonDays,
        now: deps.clock(),
      });
    },
  };
}

/** Builds the io-queue campaign activities (they talk to SMTP). */
export function campaignSendActivities(deps: ActivityDeps) {
  return {
    /** Sends to the run's audience with seq in [fromSeq, toSeq). */
    async sendCampaignBatch(
      input: RunRef & { fromSeq: number; toSeq: number },
    ): Promise<BatchOutcome> {
      const spec = await specOfRun(deps, input);
      const recipients = await audienceSlice(
        deps.pool,
        input.campaign,
        spec.fireTime,
        input.fromSeq,
        input.toSeq,
      );
      return sendToRecipients(sendContext(deps), spec, recipients);
    },

    /** Sends to up to `limit` held persons whose time has come; `due` is how many it found. */
    async sendHeldBatch(
      input: RunRef & { limit: number },
    ): Promise<BatchOutcome & { due: number }> {
      const spec = await specOfRun(deps, input);
      const recipients = await dueHeld(deps.pool, {
        campaign: input.campaign,
        fireTime: spec.fireTime,
        now: deps.clock(),
        limit: input.limit,
      });
      const outcome = await sendToRecipients(sendContext(deps), spec, recipients);
      return { ...outcome, due: recipients.length };
    },
  };
}
