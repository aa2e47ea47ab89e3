/**
 * Campaigns over HTTP (marketer and admin, api/roles.ts): GET /v1/campaigns lists them; PUT
 * /v1/campaigns/:name defines one (the body is a definition, domain/campaigns/definition.ts; 201
 * created, 200 replaced or unchanged) and makes its schedule match; GET /v1/campaigns/:name shows
 * it with its schedule and recent runs; POST …/pause, …/resume, …/trigger, …/backfill act
 * on it; POST …/preview answers what a person would get now or why nothing; POST …/test-send
 * mails the message to an address; GET …/reports answers run and lift reports; POST …/lift
 * measures a run's lift. Registered by api/server.ts as a plugin.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { mailSettings } from '../domain/campaigns/settings.js';
import {
  backfillCampaign,
  campaignReport,
  CampaignRefusal,
  defineCampaign,
  describeCampaignSchedule,
  measureLiftNow,
  setCampaignPaused,
  triggerCampaign,
} from '../client/campaigns.js';
import type { Pool } from '../common/db.js';
import { campaignNameSchema, campaignSchema } from '../domain/campaigns/definition.js';
import { createMailer } from '../domain/campaigns/mailer.js';
import { previewPerson, testSend } from '../domain/campaigns/preview.js';
import { getCampaign, listCampaigns, listRuns } from '../domain/campaigns/store.js';
import { Decider } from '../domain/decide/decider.js';
import { actorOf } from './actor.js';
import { ApiError, parse } from './errors.js';

export interface CampaignRoutesOptions {
  pool: Pool;
  temporal: Client;
  queuePrefix: string;
  actor: string;
  withDeadline: <T>(call: () => Promise<T>) => Promise<T>;
}

const nameParams = z.strictObject({ name: campaignNameSchema });
const reasonBody = z.strictObject({ reason: z.string().trim().min(1).max(500) });
const instant = z.iso.datetime({ offset: true, error: 'is not an ISO 8601 instant' });
const triggerBody = z.strictObject({ fireTime: instant.optional() });
const backfillBody = z.strictObject({ from: instant, to: instant });
const personKey = z.string().min(1).max(600);
const previewBody = z.strictObject({ personKey, at: instant.optional() });
const testSendBody = z.strictObject({ address: z.email(), personKey: personKey.optional() });
const liftBody = z.strictObject({ run: instant, horizonDays: z.number().int().min(1).max(365) });

function refused(err: unknown): unknown {
  return err instanceof CampaignRefusal ? new ApiError(err.kind, err.message) : err;
}

/** The campaign routes. */
export const campaignRoutes: FastifyPluginAsync<CampaignRoutesOptions> = async (app, options) => {
  const { pool } = options;
  let decider: Decider | undefined;
  const deciderOf = () => (decider ??= new Decider({ pool }));
  app.addHook('onClose', async () => decider?.close());

  const stored = async (name: string) => {
    const found = await getCampaign(pool, name);
    if (!found) throw new ApiError('not_found', `campaign "${name}" is not defined`);
    return found;
  };

  app.get('/v1/campaigns', async () => ({
    campaigns: (await listCampaigns(pool)).map((c) => ({
      name: c.name,
      paused: c.paused,
      schedule: c.definition.schedule,
      updatedAt: c.updatedAt,
    })),
  }));

  app.put('/v1/campaigns/:name', async (request, reply) => {
    const { name } = parse(nameParams, request.params, 'path');
    const campaign = parse(campaignSchema, request.body ?? {}, 'body');
    if (campaign.name !== name) {
      throw new ApiError(
        'validation',
        `invalid body: name: must be "${name}" (got "${campaign.name}")`,
      );
    }
    const result = await options
      .withDeadline(() =>
        defineCampaign(pool, options.temporal, options.queuePrefix, {
          campaign,
          origin: 'api',
          actor: actorOf(request, options.actor),
        }),
      )
      .catch((err: unknown) => {
        throw refused(err);
      });
    return reply.status(result.created ? 201 : 200).send(result);
  });

  app.get('/v1/campaigns/:name', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    const found = await stored(name);
    const schedule = await options.withDeadline(() =>
      describeCampaignSchedule(options.temporal, name),
    );
    return { ...found, schedule, runs: await listRuns(pool, name, 10) };
  });

  for (const command of ['pause', 'resume'] as const) {
    app.post(`/v1/campaigns/:name/${command}`, async (request) => {
      const { name } = parse(nameParams, request.params, 'path');
      const { reason } = parse(reasonBody, request.body ?? {}, 'body');
      return options
        .withDeadline(() =>
          setCampaignPaused(pool, options.temporal, {
            name,
            paused: command === 'pause',
            reason,
            actor: actorOf(request, options.actor),
          }),
        )
        .catch((err: unknown) => {
          throw refused(err);
        });
    });
  }

  app.post('/v1/campaigns/:name/trigger', async (request, reply) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(triggerBody, request.body ?? {}, 'body');
    const started = await options
      .withDeadline(() =>
        triggerCampaign(pool, options.temporal, options.queuePrefix, {
          name,
          ...(body.fireTime ? { fireTime: new Date(body.fireTime) } : {}),
        }),
      )
      .catch((err: unknown) => {
        throw refused(err);
      });
    return reply.status(202).send(started);
  });

  app.post('/v1/campaigns/:name/backfill', async (request, reply) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(backfillBody, request.body ?? {}, 'body');
    await options
      .withDeadline(() =>
        backfillCampaign(pool, options.temporal, {
          name,
          from: new Date(body.from),
          to: new Date(body.to),
        }),
      )
      .catch((err: unknown) => {
        throw refused(err);
      });
    return reply.status(202).send({ name, ...body });
  });

  app.post('/v1/campaigns/:name/preview', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(previewBody, request.body ?? {}, 'body');
    const found = await stored(name);
    const decider = found.definition.template.recommendations ? deciderOf() : undefined;
    return previewPerson(
      pool,
      { decider, unsubscribe: mailSettings().unsubscribe },
      found.definition,
      body.personKey,
      body.at ? new Date(body.at) : new Date(),
    );
  });

  app.post('/v1/campaigns/:name/test-send', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(testSendBody, request.body ?? {}, 'body');
    const found = await stored(name);
    const settings = mailSettings();
    const mailer = createMailer({ ...settings.smtp, maxConnections: 1 });
    try {
      const decider = found.definition.template.recommendations ? deciderOf() : undefined;
      return await testSend(
        pool,
        { decider, unsubscribe: settings.unsubscribe, mailer },
        found.definition,
        body.address,
        body.personKey,
      );
    } finally {
      mailer.close();
    }
  });

  app.get('/v1/campaigns/:name/reports', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    await stored(name);
    return { campaign: name, runs: await campaignReport(pool, name, 10) };
  });

  app.post('/v1/campaigns/:name/lift', async (request) => {
    const { name } = parse(nameParams, request.params, 'path');
    const body = parse(liftBody, request.body ?? {}, 'body');
    await stored(name);
    return measureLiftNow(options.temporal, options.queuePrefix, { campaign: name, ...body });
  });
};
