/**
 * Data subject requests over HTTP: POST /v1/privacy/deletions `{ identifier, reason }` and POST
 * /v1/privacy/exports `{ identifier }` open the request and start its workflow (202; 200 when it
 * attached to a running one or the deletion was done before), GET /v1/privacy/requests/:id
 * answers its state and counts, GET /v1/privacy/exports/:id the bundle of a finished export; GET
 * /v1/audit/checkpoint the audit chain's head, for an auditor to keep outside the database; GET
 * /v1/audit the log's rows by action, actor, subject, workflow and time, newest first.
 * Registered by api/server.ts as a plugin; every route is admin's (api/roles.ts).
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { deletePersonData, exportBundle, exportPersonData, getRequest } from '../client/privacy.js';
import type { Pool } from '../common/db.js';
import { auditCheckpoint, auditSearchSchema, searchAudit } from '../domain/audit.js';
import { SubjectInputError } from '../domain/privacy/subject.js';
import { plainText } from '../domain/retrain.js';
import { actorOf } from './actor.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import { identifierSchema, knownTypeCheck } from './consent.js';
import { ApiError, parse } from './errors.js';

export interface PrivacyRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  actor: string;
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
  /** The identity rules whose types a request may name (the defaults when left out). */
  identityRules?: IdentityRules;
}

const deletionBody = z.strictObject({ identifier: identifierSchema, reason: plainText(500) });
const exportBody = z.strictObject({ identifier: identifierSchema });
const idParams = z.strictObject({ id: z.string().regex(/^(delete|export)-[0-9a-f]{24}$/) });

function asApiError(err: unknown): unknown {
  return err instanceof SubjectInputError ? new ApiError('validation', err.message) : err;
}

/** The privacy request routes. */
export const privacyRoutes: FastifyPluginAsync<PrivacyRoutesOptions> = async (app, options) => {
  const { pool, temporal, queuePrefix } = options;
  const knownType = knownTypeCheck(options.identityRules);

  app.post('/v1/privacy/deletions', async (request, reply) => {
    const body = parse(deletionBody, request.body ?? {}, 'body');
    knownType(body.identifier, 'body', 'identifier.type');
    const requestedBy = actorOf(request, options.actor);
    const started = await options
      .withDeadline(() => deletePersonData(temporal, pool, queuePrefix, { ...body, requestedBy }))
      .catch((err: unknown) => {
        throw asApiError(err);
      });
    return reply.status(started.state === 'created' ? 202 : 200).send(started);
  });

  app.post('/v1/privacy/exports', async (request, reply) => {
    const body = parse(exportBody, request.body ?? {}, 'body');
    knownType(body.identifier, 'body', 'identifier.type');
    const requestedBy = actorOf(request, options.actor);
    const started = await options
      .withDeadline(() => exportPersonData(temporal, pool, queuePrefix, { ...body, requestedBy }))
      .catch((err: unknown) => {
        throw asApiError(err);
      });
    return reply.status(202).send(started);
  });

  app.get('/v1/privacy/requests/:id', async (request) => {
    const { id } = parse(idParams, request.params, 'path');
    const found = await getRequest(pool, id);
    if (!found) throw new ApiError('not_found', `no privacy request ${id}`);
    return found;
  });

  // The chain's head for an auditor to keep outside the database (pops audit verify --checkpoint).
  app.get('/v1/audit/checkpoint', async () => ({ checkpoint: await auditCheckpoint(pool) }));
  app.get('/v1/audit', async (request) => {
    const search = parse(auditSearchSchema, request.query, 'query');
    const rows = await searchAudit(pool, search);
    const last = rows[rows.length - 1];
    return { rows, next: rows.length === search.limit && last ? last.seq : null };
  });

  app.get('/v1/privacy/exports/:id', async (request) => {
    const { id } = parse(idParams, request.params, 'path');
    const found = await getRequest(pool, id);
    if (!found || found.kind !== 'export') throw new ApiError('not_found', `no export ${id}`);
    if (found.status !== 'done') throw new ApiError('conflict', `export ${id} is ${found.status}`);
    return { request: found, bundle: (await exportBundle(pool, id)) ?? {} };
  });
};
