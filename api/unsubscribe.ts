/**
 * One-click unsubscribe (RFC 8058): POST /v1/unsubscribe/:token records the opt-out the signed
 * token names (idempotent: a second POST answers the same and changes nothing) and needs no API
 * token, the signature being the credential. GET answers a small page with a button that POSTs,
 * so that a link scanner following the link unsubscribes nobody. Registered by api/server.ts.
 */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { Pool } from '../common/db.js';
import { optOut } from '../domain/campaigns/optout.js';
import { ApiError, parse } from './errors.js';

export interface UnsubscribeRoutesOptions {
  pool: Pool;
  /** POPS_UNSUBSCRIBE_SECRET. */
  secret: string;
}

const params = z.strictObject({ token: z.string().min(10).max(2000) });

/** The unsubscribe routes. */
export const unsubscribeRoutes: FastifyPluginAsync<UnsubscribeRoutesOptions> = async (
  app,
  options,
) => {
  // Mail clients POST `List-Unsubscribe=One-Click` form-encoded; the body carries nothing else.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 4096 },
    (_request, body, done) => done(null, body),
  );

  app.post('/v1/unsubscribe/:token', async (request) => {
    const { token } = parse(params, request.params, 'path');
    const result = await optOut(options.pool, options.secret, token);
    if (!result.ok) throw new ApiError('not_found', result.problem);
    return { unsubscribed: true, purpose: result.payload.purpose, changed: result.changed };
  });

  app.get('/v1/unsubscribe/:token', async (request, reply) => {
    const { token } = parse(params, request.params, 'path');
    const action = `/v1/unsubscribe/${encodeURIComponent(token)}`;
    return reply
      .type('text/html; charset=utf-8')
      .send(
        `<!doctype html><title>Unsubscribe</title><form method="post" action="${action}">` +
          '<input type="hidden" name="List-Unsubscribe" value="One-Click">' +
          '<button type="submit">Unsubscribe</button></form>',
      );
  });
};
