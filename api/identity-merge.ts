/**
 * `POST /v1/identity/merges`: resolve the events written since the last merge now. Answers 202 when
 * it started a merge, 200 when one was running and the request attached to it, both with
 * `{workflowId, runId, attached}` to follow at GET /v1/workflows/:id. Registered by api/server.ts.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { requestMerge } from '../client/identity.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import { parse } from './errors.js';

/** What the merge route needs (a subset of the API's dependencies). */
export interface IdentityMergeRouteOptions {
  temporal: Client;
  queuePrefix: string;
  /** Recorded as who asked, in the audit log. */
  actor: string;
  /** The rules a merge started here resolves with; left out, the defaults. */
  identityRules?: IdentityRules;
}

// Rules come from the server's configuration (POPS_IDENTITY_RULES) and chunk sizes from the
// workflow's defaults; the body has nothing to set, and an unknown field is refused, not ignored.
const mergeBody = z.object({}).strict();

/** The API's deadline for a Temporal call (as in api/server.ts): past it, the answer is 503. */
const TEMPORAL_DEADLINE_MS = 5000;

/** Registers `POST /v1/identity/merges`. */
export const registerIdentityMerge: FastifyPluginAsync<IdentityMergeRouteOptions> = async (
  app,
  options,
) => {
  app.post('/v1/identity/merges', async (request, reply) => {
    parse(mergeBody, request.body ?? {}, 'body');
    const started = await options.temporal.connection.withDeadline(
      Date.now() + TEMPORAL_DEADLINE_MS,
      () =>
        requestMerge(options.temporal, options.queuePrefix, {
          requestedBy: options.actor,
          ...(options.identityRules ? { rules: options.identityRules } : {}),
        }),
    );
    return reply.status(started.attached ? 200 : 202).send(started);
  });
};

export default registerIdentityMerge;
