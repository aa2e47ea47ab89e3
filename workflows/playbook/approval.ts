/**
 * The approval step of runPlaybook. Votes are signals buffered in the run's state: the step takes
 * those naming it, and those naming no step that no earlier approval took, in the order they
 * arrived. A vote is refused (and recorded) when its author is not an approver or is the run's
 * initiator where the step wants them distinct; a rejection by an approver decides at once; the
 * quorum of distinct approvers approves. At the timeout `on_timeout` approves, rejects, or
 * escalates: recorded (and posted to `escalate_webhook`), the approvers widened by `escalate_to`,
 * one more timeout, then a rejection. Workflow code.
 */
import { condition } from '@temporalio/workflow';
import type { PlaybookStep } from '../../domain/playbooks/definition.js';
import type { StepArgs } from '../../domain/playbooks/steps.js';
import type { ApprovalVote } from '../../domain/playbooks/run.js';
import { durationMs } from '../../domain/rollout/config.js';
import type { RunContext } from '../runPlaybook.js';
import { workflowNow } from './time.js';
import { activitiesFor, incidentSummary } from './steps.js';

export interface ApprovalOutcome {
  decision: 'approved' | 'rejected' | 'aborted';
  by: string[];
  via: 'votes' | 'timeout' | 'abort';
  escalated: boolean;
  refused: Array<{ by: string; why: string }>;
  message: string;
}

/** Waits for the step's decision; see the module comment. */
export async function runApproval(
  ctx: RunContext,
  step: PlaybookStep,
  a: StepArgs<'approval'>,
): Promise<ApprovalOutcome> {
  const approvers = new Set(a.approvers);
  const approved = new Set<string>();
  const refused: ApprovalOutcome['refused'] = [];
  let escalated = false;
  let rejectedBy: ApprovalVote | null = null;
  let deadline = workflowNow() + durationMs(a.timeout);

  const publish = () => {
    ctx.state.waiting = {
      step: step.id,
      approvers: [...approvers],
      quorum: a.quorum,
      approvedBy: [...approved],
      deadline: new Date(deadline).toISOString(),
      escalated,
    };
  };
  const mine = (v: ApprovalVote & { used: boolean }) =>
    !v.used && (v.step === step.id || v.step === undefined);
  const done = () => rejectedBy !== null || approved.size >= a.quorum;

  ctx.state.status = 'awaiting-approval';
  publish();
  await ctx.setStatus('awaiting-approval');
  try {
    for (;;) {
      for (const vote of ctx.votes.filter(mine)) {
        vote.used = true;
        const why = refusal(vote, approvers, a, ctx.input.initiator);
        const base = { stepId: step.id, stepType: step.type, actor: vote.by };
        if (why) {
          refused.push({ by: vote.by, why });
          await ctx.note({
            ...base,
            kind: 'approval',
            outcome: 'refused',
            message: `${vote.decision} by ${vote.by} refused: ${why}`,
            summary: { reason: vote.reason },
          });
          continue;
        }
        await ctx.note({
          ...base,
          kind: 'approval',
          outcome: vote.decision === 'approve' ? 'approved' : 'rejected',
          message: `${vote.decision} by ${vote.by}: ${vote.reason}`,
          summary: { reason: vote.reason },
        });
        if (vote.decision === 'reject') {
          rejectedBy = vote;
          break;
        }
        approved.add(vote.by);
        publish();
        if (done()) break;
      }
      if (done()) break;
      if (ctx.abort) {
        return outcome('aborted', [], 'abort', escalated, refused, 'aborted while waiting');
      }
      const left = deadline - workflowNow();
      const woke =
        left > 0 && (await condition(() => ctx.votes.some(mine) || ctx.abort !== null, left));
      if (woke) continue;
      // The deadline passed.
      if (a.on_timeout === 'approve') {
        return outcome(
          'approved',
          [...approved],
          'timeout',
          escalated,
          refused,
          `approved at the timeout (${a.timeout})`,
        );
      }
      if (a.on_timeout === 'reject' || escalated) {
        const after = escalated ? ' after escalation' : '';
        return outcome(
          'rejected',
          [...approved],
          'timeout',
          escalated,
          refused,
          `no quorum by the timeout (${a.timeout})${after}`,
        );
      }
      escalated = true;
      for (const p of a.escalate_to) approvers.add(p);
      deadline = workflowNow() + durationMs(a.timeout);
      publish();
      await escalate(ctx, step, a);
    }
  } finally {
    ctx.state.waiting = null;
    if (ctx.state.status === 'awaiting-approval') ctx.state.status = 'running';
    await ctx.setStatus('mitigating');
  }
  if (rejectedBy) {
    return outcome(
      'rejected',
      [rejectedBy.by],
      'votes',
      escalated,
      refused,
      `rejected by ${rejectedBy.by}: ${rejectedBy.reason}`,
    );
  }
  return outcome(
    'approved',
    [...approved],
    'votes',
    escalated,
    refused,
    `approved by ${[...approved].join(', ')}`,
  );
}

function outcome(
  decision: ApprovalOutcome['decision'],
  by: string[],
  via: ApprovalOutcome['via'],
  escalated: boolean,
  refused: ApprovalOutcome['refused'],
  message: string,
): ApprovalOutcome {
  return { decision, by, via, escalated, refused, message };
}

/** Why a vote does not count, or undefined when it does. */
function refusal(
  vote: ApprovalVote,
  approvers: ReadonlySet<string>,
  a: StepArgs<'approval'>,
  initiator: string,
): string | undefined {
  if (a.distinct_from_initiator && vote.by === initiator) {
    return `${vote.by} started this run and may not approve it`;
  }
  if (approvers.size > 0 && !approvers.has(vote.by)) {
    return `${vote.by} is not an approver (${[...approvers].join(', ')})`;
  }
  return undefined;
}

async function escalate(ctx: RunContext, step: PlaybookStep, a: StepArgs<'approval'>) {
  await ctx.note({
    kind: 'escalation',
    stepId: step.id,
    stepType: step.type,
    outcome: 'escalated',
    message:
      `no decision by the timeout (${a.timeout}); escalated to ` +
      (a.escalate_to.join(', ') || 'the same approvers'),
    summary: { escalateTo: a.escalate_to },
    actor: 'pops',
  });
  if (!a.escalate_webhook) return;
  await activitiesFor(step).playbookDeliver({
    effectKey: `${ctx.runKey}/${step.id}/escalation`,
    incident: ctx.input.incident.id,
    stepId: step.id,
    kind: 'escalation',
    url: a.escalate_webhook,
    method: 'POST',
    headers: {},
    body: { ...incidentSummary(ctx), escalation: { step: step.id, approvers: a.escalate_to } },
    okStatus: [200, 201, 202, 204],
    timeoutMs: 10_000,
  });
}
