/**
 * Online feature lookups over HTTP: `GET /v1/features/:entity/:id[?features=name@v,name2]`, the
 * values of an entity's features with their snapshot time, age and freshness (see
 * domain/features/online.ts). A person is named by a person id, an identifier `type:value`
 * (resolved through the identity graph to its canonical person) or `unresolved:<id>`; a
 * person_item by `<person>|<item>`, split at the first `|`. Registered by api/server.ts as a
 * plugin. One statement per request in the common case: keep it so (the goal is p99 < 5 ms).
 */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { Pool } from '../common/db.js';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../common/text.js';
import { ENTITIES } from '../domain/features/definition.js';
import {
  type EntitySelector,
  FeatureEntityMismatch,
  FeatureNotRegistered,
  type FeatureRequest,
  lookupEntity,
} from '../domain/features/online.js';
import { parseFeatureRef } from '../domain/features/registry.js';
import type { Entity } from '../domain/features/source.js';
import { type IdentityRules, identityRulesSchema, typesOf } from '../domain/identity/rules.js';
import { InputError } from '../common/failures.js';
import { ApiError, parse } from './errors.js';

/** What the feature routes need. */
export interface FeatureRoutesOptions {
  pool: Pool;
  /** The identity rules in force: they say which identifier types a person id may use. */
  identityRules?: IdentityRules | undefined;
}

const params = z.object({
  entity: z.enum(ENTITIES, { error: `is not an entity (${ENTITIES.join(', ')})` }),
  id: z
    .string()
    .min(1, 'must not be empty')
    .max(1024)
    .refine((v) => !UNSTORABLE_TEXT.test(v), UNSTORABLE_PROBLEM),
});
const query = z.strictObject({
  features: z.union([z.string().max(10_000), z.array(z.string().max(200)).max(1000)]).optional(),
});

const MAX_FEATURES = 100;

const UNKNOWN: Record<Entity, string> = {
  person: 'is not in the identity graph',
  item: 'has no feature values and is not in the catalog (items)',
  person_item:
    'is not known: its person is not in the identity graph, or its item has no feature values' +
    ' and is not in the catalog (items)',
};

function badId(id: string, problem: string): ApiError {
  return new ApiError('validation', `invalid path: id: ${problem} (got ${JSON.stringify(id)})`);
}

/** A person as the path names it; see the module comment. */
function personSelector(text: string, types: readonly string[], id: string): EntitySelector {
  if (/^[0-9]{1,15}$/.test(text)) return { personId: Number(text) };
  const colon = text.indexOf(':');
  const type = colon > 0 ? text.slice(0, colon) : '';
  const value = text.slice(colon + 1);
  if (type === 'unresolved' && value !== '') return { key: text };
  if (!types.includes(type) || value.trim() === '') {
    throw badId(
      id,
      'is not a person id, unresolved:<id> or an identifier type:value' +
        ` (types: ${types.join(', ')})`,
    );
  }
  return { identifier: { type, value } };
}

function selectorOf(entity: Entity, id: string, types: readonly string[]): EntitySelector {
  switch (entity) {
    case 'person':
      return personSelector(id, types, id);
    case 'item':
      return { key: id };
    case 'person_item': {
      const bar = id.indexOf('|');
      if (bar <= 0 || bar === id.length - 1) {
        throw badId(id, 'is not <person>|<item> (a person id or type:value, |, an item id)');
      }
      const person = personSelector(id.slice(0, bar), types, id);
      const item = id.slice(bar + 1);
      return 'key' in person ? { key: `${person.key}|${item}` } : { ...person, item };
    }
  }
}

/** `?features=a,b@2` (or the parameter repeated) as feature requests. */
function featureRequests(raw: string | string[] | undefined): FeatureRequest[] | undefined {
  if (raw === undefined) return undefined;
  const texts = (Array.isArray(raw) ? raw : [raw])
    .flatMap((r) => r.split(','))
    .map((t) => t.trim());
  if (texts.length > MAX_FEATURES || texts.some((t) => t === '')) {
    throw new ApiError(
      'validation',
      `invalid query: features: must be 1 to ${MAX_FEATURES} comma-separated name or name@version` +
        ` (got ${JSON.stringify(raw).slice(0, 80)})`,
    );
  }
  return texts.map((text) => {
    try {
      return parseFeatureRef(text);
    } catch (err) {
      if (err instanceof InputError) {
        throw new ApiError('validation', `invalid query: features: ${err.message}`);
      }
      throw err;
    }
  });
}

/** A refused feature request as the API answers it: 404 not registered, 400 another entity's. */
function refusal(err: unknown): never {
  if (err instanceof FeatureNotRegistered) throw new ApiError('not_found', err.message);
  if (err instanceof FeatureEntityMismatch) {
    throw new ApiError('validation', `invalid query: features: ${err.message}`);
  }
  throw err;
}

/** The feature lookup route. */
export const featureRoutes: FastifyPluginAsync<FeatureRoutesOptions> = async (app, options) => {
  const types = typesOf(options.identityRules ?? identityRulesSchema.parse({}));

  app.get('/v1/features/:entity/:id', async (request) => {
    const { entity, id } = parse(params, request.params, 'path');
    const { features } = parse(query, request.query, 'query');
    const selector = selectorOf(entity, id, types);
    const refs = featureRequests(features);
    const found = await lookupEntity(options.pool, entity, selector, refs).catch(refusal);
    if (!found) {
      throw new ApiError('not_found', `${entity} ${JSON.stringify(id)} ${UNKNOWN[entity]}`);
    }
    return { entity, id, entityKey: found.entityKey, features: found.features };
  });
};
