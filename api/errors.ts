/**
 * How the API refuses: errors are JSON `{ error: { code, message } }` with the status of their
 * code, and a message that names the field and the value. Shared by every route module.
 */
import type { FastifyReply } from 'fastify';
import type { z } from 'zod';
import { describeZodError } from '../common/failures.js';

export const ERROR_CODES = {
  validation: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  unsupported_media_type: 415,
  unavailable: 503,
  internal: 500,
} as const;
export type ErrorCode = keyof typeof ERROR_CODES;

/** An error the API answers with its own code and status. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Parses with zod, or throws a 400 ApiError naming each wrong field and its value. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    throw new ApiError('validation', `invalid ${what}: ${describeZodError(result.error, input)}`);
  }
  return result.data;
}

/** Sends an error answer. */
export function send(reply: FastifyReply, code: ErrorCode, message: string) {
  return reply.status(ERROR_CODES[code]).send({ error: { code, message } });
}
