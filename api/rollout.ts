/**
 * Canary rollouts over HTTP: POST /v1/rollouts starts one (202 with the workflow; 200 when the
 * same rollout was running and the request attached to it; 409 when another version is rolling
 * out there), GET /v1/rollouts/:surface answers its status (live state, stored row, latest
 * decisions with their statistics), and POST /v1/rollouts/:surface/{pause,resume,approve,abort}
 * send a person's action (202). Registered by api/server.ts as a plugin.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import {
  type RolloutCommand,
  RolloutRefusal,
  rolloutStatus,
  signalRollout,
  startRollout,
} from '../client/rollout.js';
import type { Pool } from '../common/db.js';
import { plainText } from '../domain/retrain.js';
import { rolloutInputSchema, surfaceNameSchema } from '../domain/rollout/config.js';
import { ApiError, parse } from './errors.js';
import { actorOf } from './actor.js';

/** What the rollout routes need. */
export interface RolloutRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  /** Recorded as who asked. */
  actor: string;
  /** Runs a Temporal call under the API's deadline. */
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const surfaceParams = z.strictObject({ surface: surfaceNameSchema });
const statusQuery = z.strictObject({
  decisions: z.coerce.number().int().min(1).max(1000).default(20),
});
const actionBody = z.strictObject({ reason: plainText(500) });
const approveBody = actionBody.extend({ step: z.number().gt(0).max(100).optional() });

function asApiError(err: unknown): unknown {
  return err instanceof RolloutRefusal ? new ApiError(err.kind, err.message) : err;
}

/** The rollout routes. */
export const rolloutRoutes: FastifyPluginAsync<RolloutRoutesOptions> = async (app, options) => {
  app.post('/v1/rollouts', async (request, reply) => {
    const body = parse(z.object({}).passthrough(), request.body ?? {}, 'body');
    // Who asked is the caller's identity, never a field of the body.
    const input = parse(
      rolloutInputSchema,
      { ...body, requestedBy: actorOf(request, options.actor) },
      'body',
    );
    const started = await options
      .withDeadline(() => startRollout(options.temporal, options.queuePrefix, input, options.pool))
      .catch((err: unknown) => {
        throw asApiError(err);
      });
    return reply.status(started.attached ? 200 : 202).send(started);
  });

  app.get('/v1/rollouts/:surface', async (request) => {
    const { surface } = parse(surfaceParams, request.params, 'path');
    const { decisions } = parse(statusQuery, request.query ?? {}, 'query');
    const status = await options.withDeadline(() =>
      rolloutStatus(options.temporal, options.pool, surface, { decisions }),
    );
    if (!status) throw new ApiError('not_found', `surface "${surface}" has had no rollout`);
    return status;
  });

  for (const command of ['pause', 'resume', 'approve', 'abort'] as const) {
    app.post(`/v1/rollouts/:surface/${command}`, async (request, reply) => {
      const { surface } = parse(surfaceParams, request.params, 'path');
      const body = parse(
        command === 'approve' ? approveBody : actionBody,
        request.body ?? {},
        'body',
      );
      const sent = await options
        .withDeadline(() =>
          signalRollout(options.temporal, surface, command satisfies RolloutCommand, {
            ...body,
            by: actorOf(request, options.actor),
          }),
        )
        .catch((err: unknown) => {
          throw asApiError(err);
        });
      return reply.status(202).send({ ...sent, command, by: actorOf(request, options.actor) });
    });
  }
};
