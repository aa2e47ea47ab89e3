/**
 * The model registry's aliases over HTTP: a model with its aliases, versions and alias history
 * (the view of `pops models show`), a rollback of its production (answered 202 with the workflow
 * to follow at GET /v1/workflows/:id, or 200 when one was running and the request attached to
 * it), and a custom alias moved by hand. Registered by api/server.ts as a plugin.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { startRollback } from '../client/models.js';
import type { Pool } from '../common/db.js';
import {
  moveAliasByHand,
  RegistryRefusal,
  rollbackRefusal,
  showModel,
} from '../domain/registry.js';
import { modelNameSchema, plainText } from '../domain/retrain.js';
import {
  aliasNameSchema,
  PRODUCTION,
  rollbackInputSchema,
  versionNumberSchema,
} from '../domain/rollback.js';
import { ApiError, parse } from './errors.js';
import { actorOf } from './actor.js';

/** What the model routes need. */
export interface ModelRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  /** Recorded as who asked. */
  actor: string;
  /** Runs a Temporal call under the API's deadline. */
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const modelParams = z.object({ name: modelNameSchema });
const aliasParams = z.object({
  name: modelNameSchema,
  alias: aliasNameSchema.refine((a) => a !== PRODUCTION, {
    message: 'moves only by promotion or rollback (POST /v1/models/:name/rollback)',
  }),
});
const rollbackBody = z
  .object({ toVersion: versionNumberSchema.optional(), reason: plainText(500) })
  .strict();
const aliasBody = z
  .object({ version: versionNumberSchema.nullable(), reason: plainText(500) })
  .strict();
const historyQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
});

/** A registry refusal as the API answers it (the error handler knows ApiError). */
function asApiError(err: unknown): unknown {
  return err instanceof RegistryRefusal ? new ApiError(err.kind, err.message) : err;
}

/** The model routes. */
export const modelRoutes: FastifyPluginAsync<ModelRoutesOptions> = async (app, options) => {
  app.get('/v1/models/:name', async (request) => {
    const { name } = parse(modelParams, request.params, 'path');
    const { limit } = parse(historyQuery, request.query ?? {}, 'query');
    const view = await showModel(options.pool, name, limit);
    if (!view) throw new ApiError('not_found', `model "${name}" is not declared`);
    return view;
  });

  app.post('/v1/models/:name/rollback', async (request, reply) => {
    const { name } = parse(modelParams, request.params, 'path');
    const body = parse(rollbackBody, request.body ?? {}, 'body');
    // Who asked is the caller's identity, never a field of the body.
    const input = parse(
      rollbackInputSchema,
      { ...body, model: name, requestedBy: actorOf(request, options.actor) },
      'body',
    );
    const refusal = await rollbackRefusal(options.pool, name, input.toVersion);
    if (refusal) throw asApiError(refusal);
    const started = await options.withDeadline(() =>
      startRollback(options.temporal, options.queuePrefix, input),
    );
    return reply.status(started.attached ? 200 : 202).send(started);
  });

  app.put('/v1/models/:name/aliases/:alias', async (request) => {
    const { name, alias } = parse(aliasParams, request.params, 'path');
    const body = parse(aliasBody, request.body ?? {}, 'body');
    const move = { model: name, alias, ...body, actor: actorOf(request, options.actor) };
    return moveAliasByHand(options.pool, move, `api/${randomUUID()}`).catch((err: unknown) => {
      throw asApiError(err);
    });
  });
};
