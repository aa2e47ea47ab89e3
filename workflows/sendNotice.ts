/**
 * sendNotice: one email per person of `notice_audiences` for a notice (workflow id
 * `notice/<noticeId>`), through the campaign send path: consent-gated by the notice's purpose,
 * written to the send ledger before each send, at most once per person. Notices are service
 * messages: no frequency cap, quiet hours, holdout or campaign suppression applies to them.
 * Issue 7's notify step inserts the audience rows and starts this as a child by its type name.
 */
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { prefixOf } from '../common/queues.js';
import { NOTICE_FIRE_TIME, noticeCampaign } from '../domain/campaigns/names.js';
import { type SendNoticeInput, sendNoticeInputSchema } from '../domain/campaigns/workflow-input.js';

export interface SendNoticeResult {
  sent: number;
  skipped: Record<string, number>;
  failed: number;
  unknown: number;
}

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

const BATCH = 500;

/** Sends a notice to its audience; see the module comment. */
export async function sendNotice(raw: SendNoticeInput): Promise<SendNoticeResult> {
  const input = parseOrFail(sendNoticeInputSchema, raw, 'sendNotice input');
  const io = proxyActivities<Activities>({
    taskQueue: `${prefixOf(workflowInfo().taskQueue)}-io`,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '30s',
    retry: ACTIVITY_RETRY,
  });
  const ref = { campaign: noticeCampaign(input.noticeId), fireTime: NOTICE_FIRE_TIME };
  const audience = await act.beginNoticeRun(input);
  for (let from = 0; from < audience; from += BATCH) {
    await io.sendCampaignBatch({ ...ref, fromSeq: from, toSeq: Math.min(audience, from + BATCH) });
  }
  const report = await act.finishCampaignRun(ref);
  return {
    sent: report.sent,
    skipped: report.skipped,
    failed: report.failed,
    unknown: report.unknown + report.pending,
  };
}
