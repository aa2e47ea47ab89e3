/**
 * Consent over HTTP: PUT /v1/consent records a person's choices for one identifier (200 with
 * which purposes changed; for a deleted identifier nothing is written and the answer says
 * `"dropped": "deleted"`, as ingestion accepts and drops its messages), GET
 * /v1/consent?type=&value= answers the state per purpose with its history, and the defaults
 * (applied where a person has no consent event) are read at GET /v1/consent-defaults and set, by
 * an admin, at PUT /v1/consent-defaults/:purpose (marketing cannot default to granted). The
 * history is the record of consent changes; a change of a default is also audited. Registered by
 * api/server.ts as a plugin.
 */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { Pool } from '../common/db.js';
import {
  type IdentityRules,
  identityRulesSchema,
  unknownTypeProblem,
} from '../domain/identity/rules.js';
import {
  changeConsentDefault,
  CONSENT_PURPOSES,
  consentAtSchema,
  consentDefaults,
  ConsentInputError,
  consentOf,
  recordConsentChoices,
  consentSourceSchema,
} from '../domain/privacy/consent.js';
import { actorOf } from './actor.js';
import { ApiError, parse } from './errors.js';

export interface ConsentRoutesOptions {
  pool: Pool;
  /** The caller when no token named one. */
  actor: string;
  /** The identity rules whose types an identifier may have; left out, the defaults. */
  identityRules?: IdentityRules | undefined;
}

/** An identifier as a request names it: a type the identity graph knows and a bounded value. */
export const identifierSchema = z.strictObject({
  type: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'lowercase letters, digits, underscore'),
  value: z.string().trim().min(1).max(512),
});

const putBody = z.strictObject({
  identifier: identifierSchema,
  purposes: z
    .strictObject({
      personalization: z.boolean().optional(),
      marketing: z.boolean().optional(),
      analytics: z.boolean().optional(),
    })
    .refine((p) => Object.keys(p).length > 0, 'must name at least one purpose'),
  source: consentSourceSchema.default('api'),
  at: consentAtSchema.optional(),
});
const purposeParams = z.strictObject({ purpose: z.enum(CONSENT_PURPOSES) });
const defaultBody = z.strictObject({ granted: z.boolean() });

function asApiError(err: unknown): unknown {
  return err instanceof ConsentInputError ? new ApiError('validation', err.message) : err;
}

/**
 * A check that an identifier's type is one of the identity rules' (the defaults when none are
 * given), throwing a 400 naming the field and the known types.
 */
export function knownTypeCheck(rules: IdentityRules | undefined) {
  const known = rules ?? identityRulesSchema.parse({});
  return (identifier: { type: string }, what: string, field: string) => {
    const problem = unknownTypeProblem(known, identifier.type);
    if (problem) throw new ApiError('validation', `invalid ${what}: ${field}: ${problem}`);
  };
}

/** The consent routes. */
export const consentRoutes: FastifyPluginAsync<ConsentRoutesOptions> = async (app, options) => {
  const knownType = knownTypeCheck(options.identityRules);
  app.put('/v1/consent', async (request) => {
    const body = parse(putBody, request.body ?? {}, 'body');
    knownType(body.identifier, 'body', 'identifier.type');
    const actor = actorOf(request, options.actor);
    const { changed, dropped } = await recordConsentChoices(options.pool, {
      ...body,
      actor,
    }).catch((err: unknown) => {
      throw asApiError(err);
    });
    return dropped ? { changed, dropped: 'deleted' } : { changed };
  });

  app.get('/v1/consent', async (request) => {
    const identifier = parse(identifierSchema, request.query ?? {}, 'query');
    knownType(identifier, 'query', 'type');
    return consentOf(options.pool, identifier).catch((err: unknown) => {
      throw asApiError(err);
    });
  });

  app.get('/v1/consent-defaults', async () => ({ defaults: await consentDefaults(options.pool) }));

  app.put('/v1/consent-defaults/:purpose', async (request) => {
    const { purpose } = parse(purposeParams, request.params, 'path');
    const { granted } = parse(defaultBody, request.body ?? {}, 'body');
    const actor = actorOf(request, options.actor);
    if (purpose === 'marketing' && granted) {
      throw new ApiError(
        'validation',
        'purpose marketing: is opt-in, its default cannot be granted',
      );
    }
    const changed = await changeConsentDefault(options.pool, purpose, granted, actor);
    return { purpose, granted, changed };
  });
};
