/**
 * Drift monitoring and promotion decisions over HTTP: a model's monitor (read, configure), its
 * runs (start one, list, one report as JSON with its histograms), and approve or reject the
 * blessed candidate of the running retraining. Registered by api/server.ts as a plugin.
 */
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { configureMonitor, describeDriftSchedule, runDrift } from '../client/drift.js';
import type { Pool } from '../common/db.js';
import { driftConfigSchema } from '../domain/drift/config.js';
import { getRun, listRuns } from '../domain/drift/runs.js';
import { getMonitor } from '../domain/drift/store.js';
import { modelExists } from '../domain/registry.js';
import {
  APPROVE_SIGNAL,
  REJECT_SIGNAL,
  modelNameSchema,
  plainText,
  retrainWorkflowId,
} from '../domain/retrain.js';
import { ApiError, parse } from './errors.js';
import { actorOf } from './actor.js';

export interface DriftRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  actor: string;
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const modelParams = z.object({ model: modelNameSchema });
const runParams = z.object({
  model: modelNameSchema,
  id: z
    .string()
    .regex(/^[1-9][0-9]{0,17}$/, 'is not a run id')
    .transform(Number),
});
const monitorBody = z.strictObject({ config: driftConfigSchema });
const runBody = z.strictObject({
  config: driftConfigSchema.optional(),
  at: z.iso.datetime({ offset: true }).optional(),
});
const decisionBody = z.strictObject({ reason: plainText(500) });
const listQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(20) });

/** The drift and promotion routes. */
export const driftRoutes: FastifyPluginAsync<DriftRoutesOptions> = async (app, options) => {
  const declared = async (params: unknown) => {
    const { model } = parse(modelParams, params, 'path');
    if (!(await modelExists(options.pool, model))) {
      throw new ApiError('not_found', `model "${model}" is not declared`);
    }
    return model;
  };

  app.get('/v1/drift/:model', async (request) => {
    const model = await declared(request.params);
    const config = (await getMonitor(options.pool, model)) ?? null;
    const schedule = await options.withDeadline(() =>
      describeDriftSchedule(options.temporal, model),
    );
    return { model, config, schedule };
  });

  app.put('/v1/drift/:model', async (request) => {
    const model = await declared(request.params);
    const { config } = parse(monitorBody, request.body ?? {}, 'body');
    const scheduled = await options.withDeadline(() =>
      configureMonitor(options.pool, options.temporal, options.queuePrefix, {
        model,
        config,
        actor: actorOf(request, options.actor),
      }),
    );
    return { model, config, ...scheduled };
  });

  app.post('/v1/drift/:model/runs', async (request, reply) => {
    const model = await declared(request.params);
    const body = parse(runBody, request.body ?? {}, 'body');
    if (body.at && Date.parse(body.at) > Date.now() + 60_000) {
      throw new ApiError('validation', `invalid body: at: is in the future (got "${body.at}")`);
    }
    const started = await options.withDeadline(() =>
      runDrift(options.temporal, options.queuePrefix, {
        model,
        requestedBy: actorOf(request, options.actor),
        ...(body.config ? { config: body.config } : {}),
        ...(body.at ? { at: body.at } : {}),
      }),
    );
    return reply.status(202).send({ workflowId: started.workflowId, runId: started.runId });
  });

  app.get('/v1/drift/:model/runs', async (request) => {
    const model = await declared(request.params);
    const { limit } = parse(listQuery, request.query ?? {}, 'query');
    const runs = await listRuns(options.pool, model, limit);
    // The list leaves the histograms out; one run's report has them.
    return {
      runs: runs.map((r) => ({
        id: r.id,
        version: r.version,
        createdAt: r.createdAt,
        reference: r.reference,
        current: r.current,
        drifted: r.drifted,
        driftedFeatures: r.report.driftedFeatures,
        decision: r.decision,
        decisionReason: r.decisionReason,
        retrain: r.retrain,
      })),
    };
  });

  app.get('/v1/drift/:model/runs/:id', async (request) => {
    const { model, id } = parse(runParams, request.params, 'path');
    const run = await getRun(options.pool, model, id);
    if (!run) throw new ApiError('not_found', `model "${model}" has no drift run ${id}`);
    return run;
  });

  for (const [path, signal] of [
    ['approve', APPROVE_SIGNAL],
    ['reject', REJECT_SIGNAL],
  ] as const) {
    app.post(`/v1/models/:model/${path}`, async (request) => {
      const model = await declared(request.params);
      const { reason } = parse(decisionBody, request.body ?? {}, 'body');
      const handle = options.temporal.workflow.getHandle(retrainWorkflowId(model));
      const status = await options.withDeadline(() =>
        handle.describe().then(
          (d) => d.status.name,
          (err: unknown) => {
            if (err instanceof WorkflowNotFoundError) return 'NONE';
            throw err;
          },
        ),
      );
      if (status !== 'RUNNING') {
        throw new ApiError('conflict', `no retraining of "${model}" is running to ${path}`);
      }
      await options.withDeadline(() =>
        handle.signal(signal, { by: actorOf(request, options.actor), reason }),
      );
      return {
        model,
        workflowId: handle.workflowId,
        decision: path,
        by: actorOf(request, options.actor),
      };
    });
  }
};
