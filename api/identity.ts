/**
 * The identity graph over HTTP: look a person up by any identifier or person id (the same view as
 * `pops identity show`), and start an unmerge or a remerge (answered 202 with the workflow to
 * follow at GET /v1/workflows/:id). Registered by api/server.ts as a plugin.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { startRemerge, startUnmerge } from '../client/identity-edits.js';
import type { Pool } from '../common/db.js';
import { plainText } from '../domain/retrain.js';
import { type PersonLookup, showPerson } from '../domain/identity/show.js';
import { ApiError, parse } from './errors.js';

/** What the identity routes need. */
export interface IdentityRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  /** Recorded as who asked. */
  actor: string;
  /** Runs a Temporal call under the API's deadline. */
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const id = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const identifierParams = z.object({
  type: z.string().regex(/^[a-z][a-z0-9_]{0,39}$/, 'an identifier type, e.g. email or user_id'),
  value: z.string().min(1).max(512),
});
const unmergeBody = z
  .object({ mergeId: id.optional(), personId: id.optional(), reason: plainText(500) })
  .strict()
  .refine((v) => (v.mergeId === undefined) !== (v.personId === undefined), {
    message: 'give exactly one of mergeId and personId',
    path: ['mergeId'],
  });
const remergeBody = z.object({ unmergeId: id, reason: plainText(500) }).strict();

/** The identity routes. */
export const identityRoutes: FastifyPluginAsync<IdentityRoutesOptions> = async (app, options) => {
  const show = async (lookup: PersonLookup, what: string) => {
    const view = await showPerson(options.pool, lookup);
    if (!view) throw new ApiError('not_found', `${what} is not in the identity graph`);
    return view;
  };

  app.get('/v1/identity/persons/:personId', async (request) => {
    const { personId } = parse(z.object({ personId: id }), request.params, 'path');
    return show({ personId }, `person ${personId}`);
  });

  app.get('/v1/identity/identifiers/:type/:value', async (request) => {
    const { type, value } = parse(identifierParams, request.params, 'path');
    return show({ type, value }, `${type} ${JSON.stringify(value)}`);
  });

  app.post('/v1/identity/unmerges', async (request, reply) => {
    const body = parse(unmergeBody, request.body ?? {}, 'body');
    const started = await options.withDeadline(() =>
      startUnmerge(options.temporal, options.queuePrefix, { ...body, requestedBy: options.actor }),
    );
    return reply.status(202).send(started);
  });

  app.post('/v1/identity/remerges', async (request, reply) => {
    const body = parse(remergeBody, request.body ?? {}, 'body');
    const started = await options.withDeadline(() =>
      startRemerge(options.temporal, options.queuePrefix, { ...body, requestedBy: options.actor }),
    );
    return reply.status(202).send(started);
  });
};
