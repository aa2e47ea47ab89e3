/**
 * The contract of model aliases and of the rollback job: alias names, the rollback input (validated
 * by zod in the workflow, the CLI and the API alike), its result and its workflow id. Pure, for
 * workflow code.
 */
import { z } from 'zod';
import { modelNameSchema, plainText } from './names.js';

/** Alias names follow model names: lowercase letters, digits, dot, dash, underscore. */
export const aliasNameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,62}$/,
    'is not an alias name: lowercase letters, digits, dot, dash, underscore; 1-63 chars',
  );

/** The aliases the registry itself moves; `production` moves only by promotion or rollback. */
export const PRODUCTION = 'production';
export const PREVIOUS = 'previous';
export const CANDIDATE = 'candidate';

export const versionNumberSchema = z.number().int().positive().max(2_147_483_647);

export const rollbackInputSchema = z.object({
  model: modelNameSchema,
  /** The version production returns to; left out, the one the `previous` alias points at. */
  toVersion: versionNumberSchema.optional(),
  reason: plainText(500),
  requestedBy: plainText(200).default('unknown'),
});

export type RollbackInput = z.input<typeof rollbackInputSchema>;
export type RollbackRequest = z.output<typeof rollbackInputSchema>;

/** What production pointed at before a rollback, and after it. */
export interface RollbackResult {
  from: number | null;
  to: number;
}

/** The workflow id that owns rollbacks of one model: a second request attaches to it. */
export function rollbackWorkflowId(model: string): string {
  return `models/${model}/rollback`;
}
