/**
 * Decision serving over HTTP: `POST /v1/decide`, `POST /v1/outcomes`, and the surfaces
 * (`POST /v1/surfaces`, `GET /v1/surfaces`, `GET /v1/surfaces/:name`,
 * `PUT /v1/surfaces/:name/mode`). The plugin owns one Decider (domain/decide/decider.ts): its
 * routing poller starts with the plugin, and closing the app flushes the buffered exposures.
 * Registered by api/server.ts. The decide route does one statement per request in the common
 * case: keep it so (the goal is p99 < 5 ms at 2,000 req/s with 100 candidates).
 */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { loadConfig } from '../common/config.js';
import type { Pool } from '../common/db.js';
import type { Logger } from '../common/logger.js';
import { Decider, decideRequestSchema } from '../domain/decide/decider.js';
import { OUTCOME_TYPES, recordOutcome } from '../domain/decide/exposures.js';
import {
  surfaceFiltersSchema,
  surfaceModeSchema,
  surfaceNameSchema,
} from '../domain/decide/routing.js';
import {
  createSurface,
  getSurface,
  listSurfaces,
  routingChanges,
  type Surface,
  SurfaceRefusal,
  setFilters,
  setMode,
} from '../domain/decide/surfaces.js';
import type { BackendPreference } from '../domain/ml/backend.js';
import { modelNameSchema, plainText } from '../domain/retrain.js';
import { ApiError, parse } from './errors.js';
import { actorOf } from './actor.js';

/** What the decision routes need. */
export interface DecideRoutesOptions {
  pool: Pool;
  log?: Logger | undefined;
  /** Recorded as who changed a surface. */
  actor: string;
  /** The TensorFlow.js backend to score with (default: POPS_TRAIN_BACKEND, as the workers). */
  backend?: BackendPreference | undefined;
}

const outcomeBody = z.strictObject({
  decisionId: z.uuid({ error: 'must be a decision id (a UUID)' }),
  itemId: z.string().min(1, 'must not be empty').max(512),
  type: z.enum(OUTCOME_TYPES, { error: `is not an outcome type (${OUTCOME_TYPES.join(', ')})` }),
});
const surfaceBody = z.strictObject({
  name: surfaceNameSchema,
  model: modelNameSchema,
  reason: plainText(500).optional(),
});
const surfaceParams = z.object({ name: surfaceNameSchema });
const modeBody = z.strictObject({
  mode: surfaceModeSchema,
  reason: plainText(500),
  changeKey: z.string().min(1).max(1000).optional(),
});
const filtersBody = z.strictObject({
  filters: surfaceFiltersSchema,
  reason: plainText(500),
  changeKey: z.string().min(1).max(1000).optional(),
});
const changesQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(10_000).default(20),
});

function asApiError(err: unknown): unknown {
  return err instanceof SurfaceRefusal ? new ApiError(err.kind, err.message) : err;
}

/** A surface as the API shows it: no salt (it would let a caller predict buckets). */
function shown(surface: Surface) {
  const { salt: _salt, ...rest } = surface;
  return rest;
}

/**
 * The process's training backend (POPS_TRAIN_BACKEND): a process has one backend, so serving must
 * not load another before the workers do. A configuration that does not parse is the runtime's to
 * report; serving then asks for the best available.
 */
function configuredBackend(): BackendPreference {
  try {
    return loadConfig().POPS_TRAIN_BACKEND;
  } catch {
    return 'auto';
  }
}

/** The decision and surface routes. */
export const decideRoutes: FastifyPluginAsync<DecideRoutesOptions> = async (app, options) => {
  const backend = options.backend ?? configuredBackend();
  const decider = new Decider({ pool: options.pool, log: options.log, backend });
  app.addHook('onClose', async () => decider.close());

  app.post('/v1/decide', async (request) => {
    const body = parse(decideRequestSchema, request.body ?? {}, 'body');
    return decider.decide(body).catch((err: unknown) => {
      throw asApiError(err);
    });
  });

  app.post('/v1/outcomes', async (request, reply) => {
    const body = parse(outcomeBody, request.body ?? {}, 'body');
    const result = await recordOutcome(options.pool, decider.exposures, body);
    switch (result.status) {
      case 'unknown-decision':
        throw new ApiError('not_found', `decision "${body.decisionId}" is not known`);
      case 'unknown-item':
        throw new ApiError(
          'validation',
          `invalid body: itemId: is not an item of decision ${body.decisionId}` +
            ` (got ${JSON.stringify(body.itemId)}; items: ${result.items.slice(0, 20).join(', ')})`,
        );
      case 'dropped':
        // As ingestion answers a message of a deleted identifier: accepted, nothing stored.
        return reply.status(202).send({ ...body, recorded: false, dropped: 'deleted' });
      case 'recorded':
      case 'duplicate':
        return reply.status(202).send({ ...body, recorded: result.status === 'recorded' });
    }
  });

  app.post('/v1/surfaces', async (request, reply) => {
    const body = parse(surfaceBody, request.body ?? {}, 'body');
    const created = await createSurface(options.pool, {
      name: body.name,
      model: body.model,
      actor: actorOf(request, options.actor),
      ...(body.reason ? { reason: body.reason } : {}),
    }).catch((err: unknown) => {
      throw asApiError(err);
    });
    return reply.status(created.changed ? 201 : 200).send(shown(created.surface));
  });

  app.get('/v1/surfaces', async () => ({
    surfaces: (await listSurfaces(options.pool)).map(shown),
  }));

  app.get('/v1/surfaces/:name', async (request) => {
    const { name } = parse(surfaceParams, request.params, 'path');
    const { limit } = parse(changesQuery, request.query ?? {}, 'query');
    const surface = await getSurface(options.pool, name);
    if (!surface) throw new ApiError('not_found', `surface "${name}" does not exist`);
    return {
      ...shown(surface),
      // The generation this API process routes under (null: it has not served the surface yet).
      servedGeneration: decider.servedGeneration(name) ?? null,
      changes: await routingChanges(options.pool, name, limit),
    };
  });

  app.put('/v1/surfaces/:name/mode', async (request) => {
    const { name } = parse(surfaceParams, request.params, 'path');
    const body = parse(modeBody, request.body ?? {}, 'body');
    const result = await setMode(options.pool, {
      surface: name,
      mode: body.mode,
      reason: body.reason,
      actor: actorOf(request, options.actor),
      changeKey: body.changeKey ?? null,
    }).catch((err: unknown) => {
      throw asApiError(err);
    });
    return { ...shown(result.surface), changed: result.changed, change: result.change };
  });

  app.put('/v1/surfaces/:name/filters', async (request) => {
    const { name } = parse(surfaceParams, request.params, 'path');
    const body = parse(filtersBody, request.body ?? {}, 'body');
    const result = await setFilters(options.pool, {
      surface: name,
      filters: body.filters,
      reason: body.reason,
      actor: actorOf(request, options.actor),
      changeKey: body.changeKey ?? null,
    }).catch((err: unknown) => {
      throw asApiError(err);
    });
    return { ...shown(result.surface), changed: result.changed, change: result.change };
  });
};
