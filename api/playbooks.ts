/**
 * Playbooks and incidents over HTTP: GET /v1/playbooks lists them (the shipped ones registered on
 * first use), POST /v1/playbooks registers one from YAML, POST /v1/playbooks/:name/plan is the dry
 * run, POST /v1/playbooks/:name/runs starts one for an incident (202; 200 attached), GET
 * /v1/incidents and /v1/incidents/:id read them (?format=markdown: the postmortem draft), POST
 * /v1/incidents/:id/{approve,reject,abort} send a person's vote or abort (202), GET
 * /v1/incidents/:id/export answers the DPO list (CSV). The caller is actorOf(request). Registered
 * by api/server.ts as a plugin.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import {
  abortPlaybook,
  incidentReport,
  liveState,
  planPlaybook,
  registerPlaybookText,
  registerShipped,
  type RunAsk,
  startPlaybookRun,
  votePlaybook,
} from '../client/playbooks.js';
import type { Pool } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { incidentIdSchema, playbookNameSchema } from '../domain/playbooks/definition.js';
import { incidentMarkdown } from '../domain/playbooks/markdown.js';
import { SEVERITIES } from '../domain/playbooks/run.js';
import {
  getExport,
  listIncidents,
  listPlaybooks,
  PlaybookRefusal,
} from '../domain/playbooks/store.js';
import { plainText } from '../domain/retrain.js';
import { actorOf } from './actor.js';
import { ApiError, parse } from './errors.js';

/** What the playbook routes need. */
export interface PlaybookRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  /** The caller when the request carries no authenticated actor. */
  actor: string;
  /** Runs a Temporal call under the API's deadline. */
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const nameParams = z.strictObject({ name: playbookNameSchema });
const idParams = z.strictObject({ id: incidentIdSchema });
const runBody = z.strictObject({
  version: z.number().int().min(1).optional(),
  params: z
    .record(z.string().max(63), z.unknown())
    .refine((p) => Object.keys(p).length <= 100, 'at most 100 parameters')
    .default({}),
  incident: z
    .strictObject({
      id: incidentIdSchema.optional(),
      title: plainText(300).optional(),
      severity: z.enum(SEVERITIES).optional(),
      surface: z.string().max(63).optional(),
    })
    .default({}),
});
const voteBody = z.strictObject({ reason: plainText(1000), step: z.string().max(63).optional() });
const abortBody = z.strictObject({ reason: plainText(1000) });

function asApiError(err: unknown): unknown {
  if (err instanceof PlaybookRefusal) return new ApiError(err.kind, err.message);
  if (err instanceof InputError) return new ApiError('validation', err.message);
  return err;
}

async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw asApiError(err);
  }
}

/** The playbook and incident routes. */
export const playbookRoutes: FastifyPluginAsync<PlaybookRoutesOptions> = async (app, options) => {
  const { pool } = options;
  let shipped: Promise<unknown> | undefined;
  const ensureShipped = () =>
    (shipped ??= registerShipped(pool, 'pops').catch((err: unknown) => {
      shipped = undefined;
      throw err;
    }));

  app.get('/v1/playbooks', async () => {
    await ensureShipped();
    return { playbooks: await listPlaybooks(pool) };
  });

  app.post('/v1/playbooks', async (request, reply) => {
    const body = parse(
      z.strictObject({ yaml: z.string().min(1).max(200_000) }),
      request.body ?? {},
      'body',
    );
    const r = await refusing(() =>
      registerPlaybookText(pool, body.yaml, 'request body', actorOf(request, options.actor)),
    );
    return reply.status(r.registered ? 201 : 200).send(r);
  });

  const askOf = (name: string, body: z.output<typeof runBody>, initiator: string): RunAsk => ({
    playbook: name,
    ...(body.version !== undefined ? { version: body.version } : {}),
    params: body.params,
    incident: body.incident,
    initiator,
  });

  app.post('/v1/playbooks/:name/plan', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(runBody, request.body ?? {}, 'body');
    await ensureShipped();
    return refusing(() => planPlaybook(pool, askOf(name, body, actorOf(request, options.actor))));
  });

  app.post('/v1/playbooks/:name/runs', async (request, reply) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(runBody, request.body ?? {}, 'body');
    await ensureShipped();
    const ask = askOf(name, body, actorOf(request, options.actor));
    const started = await refusing(() =>
      options.withDeadline(() =>
        startPlaybookRun(options.temporal, pool, options.queuePrefix, ask),
      ),
    );
    return reply.status(started.attached ? 200 : 202).send(started);
  });

  app.get('/v1/incidents', async () => ({ incidents: await listIncidents(pool) }));

  app.get('/v1/incidents/:id', async (request, reply) => {
    const { id } = parse(idParams, request.params, 'path');
    const { format } = parse(
      z.strictObject({ format: z.enum(['json', 'markdown']).default('json') }),
      request.query,
      'query',
    );
    const report = await refusing(() => incidentReport(pool, id));
    if (format === 'markdown') {
      return reply.type('text/markdown; charset=utf-8').send(incidentMarkdown(report));
    }
    const live = await options
      .withDeadline(() => liveState(options.temporal, id))
      .catch(() => undefined);
    return { ...report, live: live ?? null };
  });

  for (const decision of ['approve', 'reject'] as const) {
    app.post(`/v1/incidents/:id/${decision}`, async (request, reply) => {
      const { id } = parse(idParams, request.params, 'path');
      const body = parse(voteBody, request.body ?? {}, 'body');
      const sent = await refusing(() =>
        options.withDeadline(() =>
          votePlaybook(options.temporal, pool, id, {
            decision,
            by: actorOf(request, options.actor),
            reason: body.reason,
            ...(body.step ? { step: body.step } : {}),
          }),
        ),
      );
      return reply.status(202).send({ ...sent, decision });
    });
  }

  app.post('/v1/incidents/:id/abort', async (request, reply) => {
    const { id } = parse(idParams, request.params, 'path');
    const body = parse(abortBody, request.body ?? {}, 'body');
    const sent = await refusing(() =>
      options.withDeadline(() =>
        abortPlaybook(options.temporal, pool, id, {
          by: actorOf(request, options.actor),
          reason: body.reason,
        }),
      ),
    );
    return reply.status(202).send(sent);
  });

  app.get('/v1/incidents/:id/export', async (request, reply) => {
    const { id } = parse(idParams, request.params, 'path');
    const stored = await getExport(pool, id);
    if (!stored) throw new ApiError('not_found', `incident ${id} has no export`);
    return reply.type('text/csv; charset=utf-8').header('x-sha256', stored.sha256).send(stored.csv);
  });
};
