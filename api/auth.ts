/**
 * Authentication and authorization of every API request, as one `onRequest` hook on the root
 * instance (so it runs for the routes of every plugin): the route's access comes from the one
 * table of api/roles.ts; a public route (health, Segment's write key, unsubscribe's signed token)
 * passes to its own check; any other needs `Authorization: Bearer <token>` of a live token (401
 * without), whose role the table allows (403 otherwise). A route the table does not name is refused
 * to every token (deny by default). The caller is set as `request.actor`: the token's name (unique
 * among live tokens).
 *
 * Token lookups are cached for a second: a revoked token stops working within that second.
 */
import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Queryable } from '../common/db.js';
import { authenticateToken, type Role } from '../domain/privacy/tokens.js';
import { ApiError } from './errors.js';
import { allows, isPublic, routeAccess } from './roles.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The role of the caller's token, set by the authentication hook. */
    role?: Role;
  }
}

const CACHE_MS = 1000;
const CACHE_LIMIT = 10_000;

interface Cached {
  who: { id: string; role: Role; name: string } | null;
  until: number;
}

/** The bearer token of a request, or undefined; the header's value is never echoed. */
function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S{1,200})\s*$/i.exec(header);
  if (!match?.[1]) {
    throw new ApiError('unauthorized', 'the Authorization header is not "Bearer <token>"');
  }
  return match[1];
}

const ROUTES = new WeakMap<object, Array<{ method: string; url: string }>>();

/**
 * Records every route the app registers (an `onRoute` hook; install it before the first route), so
 * that a test can walk them all against the table.
 */
export function trackRoutes(app: {
  addHook(
    name: 'onRoute',
    hook: (route: { method: string | string[]; url: string }) => void,
  ): unknown;
}): void {
  const routes: Array<{ method: string; url: string }> = [];
  ROUTES.set(app, routes);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) routes.push({ method, url: route.url });
  });
}

/** The routes `trackRoutes` saw on `app` (empty when it was not installed). */
export function registeredRoutes(app: object): ReadonlyArray<{ method: string; url: string }> {
  return ROUTES.get(app) ?? [];
}

/** The hook, for `app.addHook('onRequest', …)` on the root instance. */
export function authHook(db: Queryable): (request: FastifyRequest) => Promise<void> {
  const cache = new Map<string, Cached>();
  const lookUp = async (token: string) => {
    const key = createHash('sha256').update(token).digest('hex');
    const now = Date.now();
    const hit = cache.get(key);
    if (hit && hit.until > now) return hit.who;
    const who = await authenticateToken(db, token);
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(key, { who, until: now + CACHE_MS });
    return who;
  };

  return async (request) => {
    const url = request.routeOptions.url;
    // No route: the not-found handler answers (and says nothing a token would protect).
    if (url === undefined) return;
    const access = routeAccess(request.method, url);
    if (access !== undefined && isPublic(access)) return;
    const token = bearer(request);
    if (token === undefined) {
      throw new ApiError('unauthorized', 'no token: send "Authorization: Bearer <token>"');
    }
    const who = await lookUp(token);
    if (who === null) throw new ApiError('unauthorized', 'the token is not known or was revoked');
    request.actor = who.name;
    request.role = who.role;
    if (access === undefined) {
      throw new ApiError('forbidden', `${request.method} ${url} is not in the access table`);
    }
    if (!allows(access, who.role)) {
      throw new ApiError('forbidden', `role ${who.role} may not call ${request.method} ${url}`);
    }
  };
}
