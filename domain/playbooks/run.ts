/**
 * The contract of a playbook run: its input (validated by zod in the workflow, the CLI and the API
 * alike), the signals a person sends it (approve, reject, abort), the state its query answers and
 * its result. Pure, for workflow code.
 */
import { z } from 'zod';
import { plainText } from '../retrain.js';
import { incidentIdSchema, playbookNameSchema } from './definition.js';
import type { TimelineEntry } from './store.js';

export const SEVERITIES = ['sev1', 'sev2', 'sev3', 'sev4'] as const;

export const runInputSchema = z.strictObject({
  playbook: playbookNameSchema,
  version: z.number().int().min(1),
  params: z.record(z.string(), z.unknown()).default({}),
  incident: z.strictObject({
    id: incidentIdSchema,
    title: plainText(300),
    severity: z.enum(SEVERITIES).default('sev2'),
    surface: z.string().max(63).nullable().default(null),
  }),
  /** Who started the run (an approver must differ from them where a step says so). */
  initiator: plainText(200),
});
export type RunInput = z.input<typeof runInputSchema>;
export type RunRequest = z.output<typeof runInputSchema>;

export const APPROVAL_SIGNAL = 'playbookApproval';
export const ABORT_SIGNAL = 'abortPlaybook';
export const TIMELINE_QUERY = 'playbookTimeline';

/** A person's vote: for the approval step `step`, or for the next one to wait when left out. */
export const approvalSignalSchema = z.strictObject({
  step: z.string().max(63).optional(),
  decision: z.enum(['approve', 'reject']),
  by: plainText(200),
  reason: plainText(1000),
});
export type ApprovalVote = z.output<typeof approvalSignalSchema>;

export const abortSignalSchema = z.strictObject({ by: plainText(200), reason: plainText(1000) });
export type AbortRequest = z.output<typeof abortSignalSchema>;

export type StepOutcome = 'ok' | 'failed' | 'skipped' | 'rejected' | 'aborted';

/** What the timeline query answers while the run goes on (and after, from the last state). */
export interface RunState {
  incident: string;
  playbook: string;
  version: number;
  status: 'running' | 'awaiting-approval' | 'compensating' | 'resolved' | 'failed' | 'aborted';
  currentStep: string | null;
  /** The approval step waiting, with the votes counted so far. */
  waiting: {
    step: string;
    approvers: string[];
    quorum: number;
    approvedBy: string[];
    deadline: string;
    escalated: boolean;
  } | null;
  steps: Array<{ id: string; type: string; outcome: StepOutcome | 'running' | 'pending' }>;
  /** Votes received for approval steps not reached yet (buffered, applied when they wait). */
  buffered: number;
  timeline: TimelineEntry[];
}

/** What a run answers when it ends. */
export interface RunResult {
  incident: string;
  status: 'resolved' | 'failed' | 'aborted';
  steps: Array<{ id: string; outcome: StepOutcome }>;
  failedStep: string | null;
  error: string | null;
  compensation: Array<{ step: string; outcome: 'ok' | 'failed' | 'skipped'; error?: string }>;
  compensationFailures: number;
}
