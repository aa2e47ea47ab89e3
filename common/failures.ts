/**
 * The closed list of failure types pops raises. Retry policies match on these names: every type
 * here is a business refusal that retrying cannot fix, so each is non-retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { z } from 'zod';

export const FAILURE_TYPES = {
  validation: 'ValidationFailure',
  notFound: 'NotFoundFailure',
  conflict: 'ConflictFailure',
  insufficientData: 'InsufficientDataFailure',
  qualityCheck: 'QualityCheckFailure',
} as const;

export type FailureType = (typeof FAILURE_TYPES)[keyof typeof FAILURE_TYPES];

/**
 * Bad input that a person can fix (a file, an argument, a setting): its message names the field and
 * the value. The CLI exits 2 for it; every such error of pops extends this class.
 */
export class InputError extends Error {}

/**
 * The retry policy of every pops activity: refusals are not retried, anything else a bounded
 * number of times, so a failure nobody foresaw ends the run with its message instead of retrying
 * forever (and a transient one, such as an import holding `events`, is waited out).
 */
export const ACTIVITY_RETRY = {
  nonRetryableErrorTypes: Object.values(FAILURE_TYPES),
  maximumInterval: '30s',
  maximumAttempts: 8,
};

/** A non-retryable failure of the given type with a message that names the field and value. */
export function failure(type: FailureType, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({
    type,
    message,
    nonRetryable: true,
    details: details ? [details] : [],
  });
}

/** Formats zod issues as `field: problem (got value)` lines, never echoing long values. */
export function describeZodError(error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.length > 0 ? issue.path.join('.') : '(input)';
      const value = valueAt(input, issue.path);
      const shown = value === undefined ? 'missing' : preview(value);
      return `${field}: ${issue.message} (got ${shown})`;
    })
    .join('; ');
}

/** The start of a value's JSON; a value nested too deep to stringify is said to be. */
function preview(value: unknown): string | undefined {
  try {
    return JSON.stringify(value)?.slice(0, 80);
  } catch (err) {
    if (err instanceof RangeError) return 'a value nested too deep to show';
    throw err;
  }
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current = input;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/** Parses with zod or throws a non-retryable ValidationFailure that names each wrong field. */
export function parseOrFail<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw failure(
    FAILURE_TYPES.validation,
    `invalid ${what}: ${describeZodError(result.error, input)}`,
  );
}

/** Parses with zod or throws an InputError naming each wrong field (for clients and the CLI). */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new InputError(`invalid ${what}: ${describeZodError(result.error, input)}`);
}
