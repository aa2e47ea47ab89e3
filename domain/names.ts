/**
 * Names and free text as people type them, shared by every contract (retraining, rollouts,
 * rollbacks, routing): kept apart so that those contracts can import one another.
 */
import { z } from 'zod';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../common/text.js';

/** Text a person typed: trimmed, bounded, and free of NUL (which PostgreSQL cannot store). */
export function plainText(max: number) {
  return z
    .string()
    .trim()
    .min(1)
    .max(max)
    .refine((v) => !UNSTORABLE_TEXT.test(v), UNSTORABLE_PROBLEM);
}

export const modelNameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,62}$/,
    'lowercase letters, digits, dot, dash, underscore; 1-63 chars',
  );
