/**
 * runCampaign: one fire time of one campaign (workflow id `campaign/<name>-<fire time>`, as the
 * campaign's Temporal Schedule names its runs). Begins the run (a fire time later than the
 * campaign's maxLateness sends nothing and is recorded as late), snapshots the audience, sends it
 * in batches on the io queue (continuing as new every `batchesPerRun` batches), then waits on
 * durable timers for the persons held by quiet hours or their local send time and sends them
 * when due, and ends with the run report. A paused campaign's batch stops and the run waits,
 * checking every 15 s. Workflow code: no I/O, clocks or randomness; every effect is an
 * activity keyed by (campaign, fire time, person).
 */
import { continueAsNew, log, proxyActivities, sleep, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, FAILURE_TYPES, failure, parseOrFail } from '../common/failures.js';
import type { RunReport } from '../domain/campaigns/store.js';
import {
  fireTimeFromWorkflowId,
  type RunCampaignInput,
  runCampaignInputSchema,
} from '../domain/campaigns/workflow-input.js';
import { prefixOf } from '../common/queues.js';

export type RunCampaignResult =
  | { status: 'late'; campaign: string; fireTime: string; lateByMs: number; maxLatenessMs: number }
  | (Omit<RunReport, 'status'> & { status: 'completed' });

const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: ACTIVITY_RETRY,
});

function ioActivities() {
  return proxyActivities<Activities>({
    taskQueue: `${prefixOf(workflowInfo().taskQueue)}-io`,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '30s',
    retry: ACTIVITY_RETRY,
  });
}

const PAUSE_CHECK_MS = 15_000;

function add(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** Runs one fire time of a campaign; see the module comment. */
export async function runCampaign(raw: RunCampaignInput): Promise<RunCampaignResult> {
  const input = parseOrFail(runCampaignInputSchema, raw, 'runCampaign input');
  const fireTime =
    input.carry?.fireTime ?? input.fireTime ?? fireTimeFromWorkflowId(workflowInfo().workflowId);
  if (!fireTime) {
    throw failure(FAILURE_TYPES.validation, 'invalid runCampaign input: fireTime: missing');
  }
  const ref = { campaign: input.campaign, fireTime: new Date(fireTime).toISOString() };
  const io = ioActivities();

  let carry = input.carry;
  if (!carry) {
    const began = await act.beginCampaignRun(ref);
    if (began.status === 'late') {
      log.warn('campaign fire time past its maximum lateness: nothing sent', { ...ref });
      return {
        status: 'late',
        ...ref,
        lateByMs: began.lateByMs,
        maxLatenessMs: began.maxLatenessMs,
      };
    }
    carry = { fireTime: ref.fireTime, audience: began.audience, nextSeq: 0, counts: {} };
  }

  let batches = 0;
  while (carry.nextSeq < carry.audience) {
    if (batches >= input.batchesPerRun || workflowInfo().continueAsNewSuggested) {
      return continueAsNew<typeof runCampaign>({ ...input, fireTime: ref.fireTime, carry });
    }
    const toSeq = Math.min(carry.audience, carry.nextSeq + input.batchSize);
    const batch = await io.sendCampaignBatch({ ...ref, fromSeq: carry.nextSeq, toSeq });
    add(carry.counts, batch.counts);
    if (batch.paused) {
      log.info('campaign paused: the run waits', { ...ref, nextSeq: carry.nextSeq });
      await sleep(PAUSE_CHECK_MS);
      continue;
    }
    carry.nextSeq = toSeq;
    batches++;
  }

  for (;;) {
    const next = await act.nextHeldRelease(ref);
    if (next === null) break;
    // Workflow time (Temporal makes `new Date()` deterministic in workflow code).
    const wait = new Date(next).getTime() - new Date().getTime();
    if (wait > 0) await sleep(wait);
    const held = await io.sendHeldBatch({ ...ref, limit: input.batchSize });
    add(carry.counts, held.counts);
    if (held.paused) await sleep(PAUSE_CHECK_MS);
    // None due yet by the worker's clock (a little behind this one): wait, do not spin.
    else if (held.due === 0) await sleep(1000);
    if (++batches >= input.batchesPerRun || workflowInfo().continueAsNewSuggested) {
      return continueAsNew<typeof runCampaign>({ ...input, fireTime: ref.fireTime, carry });
    }
  }

  const report = await act.finishCampaignRun(ref);
  return { ...report, status: 'completed' };
}
