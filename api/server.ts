/**
 * The HTTP API. Bodies and parameters are parsed by zod; every error is JSON
 * `{ error: { code, message } }` with a message naming the field, and the matching status.
 */
import type { Client } from '@temporalio/client';
import { ServiceError } from '@temporalio/client';
import Fastify, { LogController } from 'fastify';
import { z } from 'zod';
import { startRetrain, workflowStatus } from '../client/retrain.js';
import type { Pool } from '../common/db.js';
import type { Logger } from '../common/logger.js';
import { ApiError, parse, send } from './errors.js';
import { deeperThan } from '../ingest/segment.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import { UnmergeRefusal } from '../domain/identity/unmerge.js';
import { featureRoutes } from './features.js';
import { decideRoutes } from './decide.js';
import type { BackendPreference } from '../domain/ml/backend.js';
import { identityRoutes } from './identity.js';
import { driftRoutes } from './drift.js';
import { modelRoutes } from './models.js';
import { rolloutRoutes } from './rollout.js';
import { playbookRoutes } from './playbooks.js';
import { campaignRoutes } from './campaigns.js';
import { unsubscribeRoutes } from './unsubscribe.js';
import { mailSettings } from '../domain/campaigns/settings.js';
import { consentRoutes } from './consent.js';
import { privacyRoutes } from './privacy.js';
import type { ConsentTraitMap } from '../domain/privacy/consent-traits.js';
import { authHook, trackRoutes } from './auth.js';
import { actorOf } from './actor.js';
import { modelNameSchema, plainText, retrainInputSchema } from '../domain/retrain.js';
import {
  declareModel,
  getVersion,
  listModels,
  listVersions,
  modelExists,
} from '../domain/registry.js';

function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  if (code === 'ECONNREFUSED' || code === '57P01' || code === '57P03' || code === 'ETIMEDOUT') {
    return true;
  }
  return err instanceof ServiceError;
}

export { ApiError, ERROR_CODES, type ErrorCode } from './errors.js';

export interface ApiDeps {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  log: Logger;
  /** Recorded as `requestedBy` until tokens name the caller (privacy and security issue). */
  actor: string;
  /** The identity rules merges started through the API resolve with; left out, the defaults. */
  identityRules?: IdentityRules;
  /** The TensorFlow.js backend decisions score with when a model needs it (default auto). */
  trainBackend?: BackendPreference;
  /** Where Segment identify messages carry consent (POPS_CONSENT_TRAITS); left out, the default. */
  consentTraits?: ConsentTraitMap;
}

const retrainBody = z.object({}).passthrough();
const versionParams = z.object({
  name: modelNameSchema,
  version: z.coerce.number().int().positive().max(2_147_483_647),
});
const declareBody = z.object({
  name: modelNameSchema,
  source: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, 'letters, digits, dot, dash, underscore'),
  description: plainText(2000).optional(),
});

/** How deep any request body may nest objects and arrays. */
const MAX_BODY_DEPTH = 128;

/** How long a request waits for Temporal before it answers 503. */
const TEMPORAL_DEADLINE_MS = 5000;

/** Builds the API (not listening yet). */
export function buildApi(deps: ApiDeps) {
  const temporal = <T>(call: () => Promise<T>, ms = TEMPORAL_DEADLINE_MS) =>
    deps.temporal.connection.withDeadline(Date.now() + ms, call);
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'api' }),
    bodyLimit: 256 * 1024,
    // Fastify's request lines carry the URL, whose path and query may hold personal data (an
    // email in /v1/consent?value=…): requests are logged below by route pattern instead.
    logController: new LogController({ disableRequestLogging: true }),
    // Unsubscribe tokens (signed payloads) are one path segment, longer than the default 100.
    routerOptions: { maxParamLength: 1024 },
    // Errors the router answers before any route (a parameter too long, a malformed URL): in
    // the API's own shape, without the path (it may hold personal data).
    frameworkErrors: (err, _request, reply) => {
      const message =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? 'path: a parameter is over 1024 characters'
          : err.code === 'FST_ERR_BAD_URL'
            ? 'path: is not a valid URL'
            : `request: ${err.code}`;
      void send(reply, 'validation', message);
    },
  });
  trackRoutes(app);

  app.setErrorHandler((err: Error, _request, reply) => {
    if (err instanceof ApiError) return send(reply, err.code, err.message);
    if (err instanceof UnmergeRefusal) return send(reply, err.kind, err.message);
    const status = (err as { statusCode?: number }).statusCode;
    if (status === 413) return send(reply, 'too_large', err.message);
    if (status === 415) return send(reply, 'unsupported_media_type', err.message);
    if (status && status >= 400 && status < 500) return send(reply, 'validation', err.message);
    if (isUnavailable(err)) {
      return send(reply, 'unavailable', `a backing service is unavailable: ${err.message}`);
    }
    deps.log.error({ err }, 'api request failed');
    return send(reply, 'internal', 'internal error');
  });
  app.setNotFoundHandler((request, reply) =>
    send(reply, 'not_found', `no route ${request.method} ${request.url}`),
  );
  app.addHook('onRequest', authHook(deps.pool));
  // No route takes JSON nested this deep (Segment messages stop at 64 levels, with their own
  // message); checking and describing such a body would exhaust the stack.
  app.addHook('preValidation', async (request) => {
    if (deeperThan(request.body, MAX_BODY_DEPTH)) {
      throw new ApiError('validation', `body: is nested deeper than ${MAX_BODY_DEPTH} levels`);
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        route: request.routeOptions.url ?? '(no route)',
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
        actor: request.actor,
      },
      'request',
    );
  });

  app.get('/healthz', async (_request, reply) => {
    const database = await deps.pool.query('select 1').then(
      () => 'ok',
      (e: Error) => e.message,
    );
    const server = await temporal(() => deps.temporal.workflowService.getSystemInfo({}), 2000).then(
      () => 'ok',
      (e: Error) => e.message,
    );
    const ok = database === 'ok' && server === 'ok';
    return reply.status(ok ? 200 : 503).send({ ok, database, temporal: server });
  });

  app.post('/v1/retrains', async (request, reply) => {
    const body = parse(retrainBody, request.body ?? {}, 'body');
    if ('driftRunId' in body) {
      throw new ApiError('validation', 'invalid body: driftRunId: is set by drift monitors only');
    }
    // Who asked is the caller's identity, never a field of the body.
    const input = parse(
      retrainInputSchema,
      { ...body, requestedBy: actorOf(request, deps.actor) },
      'body',
    );
    if (!(await modelExists(deps.pool, input.model))) {
      throw new ApiError(
        'not_found',
        `model "${input.model}" is not declared (POST /v1/models first)`,
      );
    }
    const started = await temporal(() => startRetrain(deps.temporal, deps.queuePrefix, input));
    return reply.status(started.attached ? 200 : 202).send(started);
  });

  app.get('/v1/workflows/*', async (request) => {
    const id = decodeURIComponent((request.params as { '*': string })['*']);
    if (id === '') throw new ApiError('validation', 'workflow id: must not be empty');
    const status = await temporal(() => workflowStatus(deps.temporal, id));
    if (!status) throw new ApiError('not_found', `workflow "${id}" not found`);
    return status;
  });

  app.get('/v1/models', async () => ({ models: await listModels(deps.pool) }));

  app.post('/v1/models', async (request, reply) => {
    const body = parse(declareBody, request.body ?? {}, 'body');
    const declared = await declareModel(deps.pool, {
      ...body,
      createdBy: actorOf(request, deps.actor),
    });
    if (!declared.created && declared.source !== body.source) {
      throw new ApiError(
        'conflict',
        `model "${body.name}" is declared with source "${declared.source}"`,
      );
    }
    return reply
      .status(declared.created ? 201 : 200)
      .send({ name: body.name, source: declared.source });
  });

  app.get('/v1/models/:name/versions', async (request) => {
    const { name } = parse(z.object({ name: modelNameSchema }), request.params, 'path');
    if (!(await modelExists(deps.pool, name))) {
      throw new ApiError('not_found', `model "${name}" is not declared`);
    }
    return { model: name, versions: await listVersions(deps.pool, name) };
  });

  app.get('/v1/models/:name/versions/:version', async (request) => {
    const { name, version } = parse(versionParams, request.params, 'path');
    const found = await getVersion(deps.pool, name, version);
    if (!found) throw new ApiError('not_found', `model "${name}" has no version ${version}`);
    return found;
  });

  void app.register(import('./segment.js'), {
    pool: deps.pool,
    ...(deps.consentTraits ? { consentTraits: deps.consentTraits } : {}),
    ...(deps.identityRules ? { identityRules: deps.identityRules } : {}),
  });
  void app.register(consentRoutes, {
    pool: deps.pool,
    actor: deps.actor,
    identityRules: deps.identityRules,
  });
  void app.register(identityRoutes, {
    pool: deps.pool,
    temporal: deps.temporal,
    queuePrefix: deps.queuePrefix,
    actor: deps.actor,
    ...(deps.identityRules ? { identityRules: deps.identityRules } : {}),
    withDeadline: (call) => temporal(call),
  });
  void app.register(featureRoutes, { pool: deps.pool, identityRules: deps.identityRules });
  // What the routes that start and signal workflows share.
  const workflowRoutes = {
    pool: deps.pool,
    temporal: deps.temporal,
    queuePrefix: deps.queuePrefix,
    actor: deps.actor,
    withDeadline: <T>(call: () => Promise<T>) => temporal(call),
  };
  void app.register(modelRoutes, workflowRoutes);
  void app.register(decideRoutes, {
    pool: deps.pool,
    log: deps.log.child({ component: 'decide' }),
    actor: deps.actor,
    backend: deps.trainBackend,
  });
  void app.register(driftRoutes, workflowRoutes);
  void app.register(rolloutRoutes, workflowRoutes);
  void app.register(privacyRoutes, {
    ...workflowRoutes,
    ...(deps.identityRules ? { identityRules: deps.identityRules } : {}),
  });
  void app.register(playbookRoutes, workflowRoutes);
  void app.register(campaignRoutes, workflowRoutes);
  void app.register(unsubscribeRoutes, {
    pool: deps.pool,
    secret: mailSettings().unsubscribe.secret,
  });
  return app;
}
