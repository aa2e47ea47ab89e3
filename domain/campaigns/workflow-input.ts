/**
 * The inputs of the campaign workflows, validated at their boundary. Pure zod and data (no
 * imports that reach Node), so workflow code may import it.
 */
import { z } from 'zod';

const name = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,62}$/, 'is not a campaign name (a-z, 0-9, -; starts with a letter)');
const instant = z.iso.datetime({ offset: true, error: 'is not an ISO 8601 instant' });

/** Where a run's sending stands, carried across continue-as-new. */
const carrySchema = z.strictObject({
  fireTime: instant,
  audience: z.number().int().min(0),
  nextSeq: z.number().int().min(0),
  counts: z.record(z.string(), z.number().int()),
});
export type RunCarry = z.infer<typeof carrySchema>;

export const runCampaignInputSchema = z.strictObject({
  campaign: name,
  /** The fire time; left out, the schedule's (read from the workflow id Temporal gave the run). */
  fireTime: instant.optional(),
  /** Persons per batch activity. */
  batchSize: z.number().int().min(1).max(10_000).default(500),
  /** Batches per workflow run before it continues as new. */
  batchesPerRun: z.number().int().min(1).max(10_000).default(100),
  carry: carrySchema.optional(),
});
export type RunCampaignInput = z.input<typeof runCampaignInputSchema>;

export const sendNoticeInputSchema = z.strictObject({
  noticeId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, 'is not a notice id'),
  subject: z.string().min(1).max(300),
  text: z.string().min(1).max(100_000),
  purpose: z.enum(['personalization', 'marketing', 'analytics']),
  requestedBy: z.string().min(1).max(200),
});
export type SendNoticeInput = z.input<typeof sendNoticeInputSchema>;

export const measureLiftInputSchema = z.strictObject({
  campaign: name,
  /** The run, by its fire time. */
  run: instant,
  horizonDays: z.number().int().min(1).max(365),
});
export type MeasureLiftInput = z.input<typeof measureLiftInputSchema>;

/** The fire time Temporal's schedule put at the end of a run's id (`…-2027-03-28T08:00:00Z`). */
export function fireTimeFromWorkflowId(workflowId: string): string | undefined {
  const m = /-(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)$/.exec(workflowId);
  return m?.[1];
}
