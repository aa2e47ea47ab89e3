/**
 * The identity graph over HTTP: resolve new events now, look a person up by any identifier or
 * person id (the same view as `pops identity show`), and start an unmerge or a remerge (answered
 * 202 with the workflow to follow at GET /v1/workflows/:id). Registered by api/server.ts as a
 * plugin.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { requestMerge } from '../client/identity.js';
import { startRemerge, startUnmerge } from '../client/identity-edits.js';
import type { Pool } from '../common/db.js';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../common/text.js';
import { type IdentityRules, identityRulesSchema, typesOf } from '../domain/identity/rules.js';
import { plainText } from '../domain/retrain.js';
import { type PersonLookup, showPerson } from '../domain/identity/show.js';
import { remergeRefusal, type UnmergeRefusal, unmergeRefusal } from '../domain/identity/unmerge.js';
import { ApiError, parse } from './errors.js';
import { actorOf } from './actor.js';

/** What the identity routes need. */
export interface IdentityRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  /** Recorded as who asked. */
  actor: string;
  /** The identity rules in force: they say which identifier types exist. */
  identityRules?: IdentityRules;
  /** Runs a Temporal call under the API's deadline. */
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const id = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const personParams = z.object({
  personId: z
    .string()
    .regex(/^[1-9][0-9]{0,14}$/, 'is not a person id (a positive whole number)')
    .transform(Number),
});

function identifierParams(rules: IdentityRules) {
  const types = typesOf(rules);
  return z.object({
    type: z.string().refine((t) => types.includes(t), {
      message: `is not an identifier type (${types.join(', ')})`,
    }),
    value: z
      .string()
      .min(1)
      .max(512)
      .refine((v) => !UNSTORABLE_TEXT.test(v), UNSTORABLE_PROBLEM),
  });
}
const unmergeBody = z
  .object({ mergeId: id.optional(), personId: id.optional(), reason: plainText(500) })
  .strict()
  .refine((v) => (v.mergeId === undefined) !== (v.personId === undefined), {
    message: 'give exactly one of mergeId and personId',
    path: ['mergeId'],
  });
const remergeBody = z.object({ unmergeId: id, reason: plainText(500) }).strict();
// Rules come from the server's configuration (POPS_IDENTITY_RULES) and chunk sizes from the
// workflow's defaults: a merge request has nothing to set, and an unknown field is refused.
const mergeBody = z.object({}).strict();

/** Answers 404 or 409 (through the API's error handler) for an edit that could only fail. */
function refuseIf(refusal: UnmergeRefusal | undefined): void {
  if (refusal) throw refusal;
}

/** The identity routes. */
export const identityRoutes: FastifyPluginAsync<IdentityRoutesOptions> = async (app, options) => {
  const identifier = identifierParams(options.identityRules ?? identityRulesSchema.parse({}));
  const show = async (lookup: PersonLookup, what: string) => {
    const view = await showPerson(options.pool, lookup);
    if (!view) throw new ApiError('not_found', `${what} is not in the identity graph`);
    return view;
  };

  // 202 when it started a merge, 200 when one was running and the request attached to it.
  app.post('/v1/identity/merges', async (request, reply) => {
    parse(mergeBody, request.body ?? {}, 'body');
    const started = await options.withDeadline(() =>
      requestMerge(options.temporal, options.queuePrefix, {
        requestedBy: actorOf(request, options.actor),
        ...(options.identityRules ? { rules: options.identityRules } : {}),
      }),
    );
    return reply.status(started.attached ? 200 : 202).send(started);
  });

  app.get('/v1/identity/persons/:personId', async (request) => {
    const { personId } = parse(personParams, request.params, 'path');
    return show({ personId }, `person ${personId}`);
  });

  app.get('/v1/identity/identifiers/:type/:value', async (request) => {
    const { type, value } = parse(identifier, request.params, 'path');
    return show({ type, value }, `${type} ${JSON.stringify(value)}`);
  });

  app.post('/v1/identity/unmerges', async (request, reply) => {
    const body = parse(unmergeBody, request.body ?? {}, 'body');
    const target =
      body.mergeId !== undefined ? { mergeId: body.mergeId } : { personId: body.personId ?? 0 };
    refuseIf(await unmergeRefusal(options.pool, target));
    const started = await options.withDeadline(() =>
      startUnmerge(options.temporal, options.queuePrefix, {
        ...body,
        requestedBy: actorOf(request, options.actor),
      }),
    );
    return reply.status(202).send(started);
  });

  app.post('/v1/identity/remerges', async (request, reply) => {
    const body = parse(remergeBody, request.body ?? {}, 'body');
    refuseIf(await remergeRefusal(options.pool, body.unmergeId));
    const started = await options.withDeadline(() =>
      startRemerge(options.temporal, options.queuePrefix, {
        ...body,
        requestedBy: actorOf(request, options.actor),
      }),
    );
    return reply.status(202).send(started);
  });
};
