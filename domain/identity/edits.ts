/**
 * The contract of unmergeIdentity and remergeIdentity: inputs (validated by zod in the workflow),
 * results and workflow ids. Pure data and zod only: the workflow bundle imports this module.
 *
 * Workflow ids name what they own: `identity-unmerge/merge-<id>` (or `/person-<id>`) and
 * `identity-remerge/<unmergeId>`, so a second request for the same edit attaches to the first.
 */
import { z } from 'zod';
import { plainText } from '../retrain.js';

const id = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

export const unmergeInputSchema = z
  .object({
    /** The merge to undo. */
    mergeId: id.optional(),
    /** Or a person: the latest merge that merged it into another is undone. */
    personId: id.optional(),
    reason: plainText(500),
    requestedBy: plainText(200).default('unknown'),
  })
  .refine((v) => (v.mergeId === undefined) !== (v.personId === undefined), {
    message: 'give exactly one of mergeId and personId',
    path: ['mergeId'],
  });

export type UnmergeInput = z.input<typeof unmergeInputSchema>;

export const remergeInputSchema = z.object({
  unmergeId: id,
  reason: plainText(500),
  requestedBy: plainText(200).default('unknown'),
});

export type RemergeInput = z.input<typeof remergeInputSchema>;

/** The workflow id of an unmerge request. */
export function unmergeWorkflowId(input: { mergeId?: number; personId?: number }): string {
  return input.mergeId !== undefined
    ? `identity-unmerge/merge-${input.mergeId}`
    : `identity-unmerge/person-${input.personId}`;
}

/** The workflow id of a remerge request. */
export function remergeWorkflowId(unmergeId: number): string {
  return `identity-remerge/${unmergeId}`;
}
