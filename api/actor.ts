/**
 * Who is calling. Every route records the caller through `actorOf(request, fallback)`, never a
 * field
 * of the body. The authentication hook (privacy and security issue) sets `request.actor` from the
 * caller's token; until it has, the route's configured fallback names the caller.
 */
import type { FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller, set by the authentication hook. */
    actor?: string;
  }
}

/** The caller of a request: the authenticated actor, else the fallback. */
export function actorOf(request: FastifyRequest, fallback: string): string {
  return request.actor ?? fallback;
}
