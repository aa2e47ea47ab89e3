/**
 * Sticky traffic splitting. A person's bucket is the first 4 bytes of
 * sha256(salt + ':' + personKey), read as an unsigned big-endian integer, mod 10000: a number in
 * 0..9999 that depends only on the surface's salt and the person, never on the weights. The canary
 * takes buckets [0, canary weight_bp) and the stable version the rest, so raising the canary's
 * weight only adds buckets to it: a person in the canary at 5% (buckets 0..499) is still in it at
 * 10% (0..999), and a person in the stable version at 10% was in it at 5% too.
 *
 * The person key is the feature store's (domain/features/source.ts): the canonical person id, or
 * `unresolved:<id>` for an identifier the graph has not resolved. A merge that changes someone's
 * canonical id can therefore move them to another bucket once; the salt differs per surface, so
 * the same person's buckets on two surfaces are independent. 2^32 mod 10000 = 7296, so buckets
 * below 7296 are more likely by 1 part in 429,497: far below any split a test can see.
 */
import { createHash } from 'node:crypto';
import type { Route } from './routing.js';

/** Buckets per surface; weights are in basis points of this. */
export const BUCKETS = 10_000;

/** The person's bucket on a surface with this salt, in 0..9999. */
export function bucketOf(salt: string, personKey: string): number {
  const digest = createHash('sha256').update(`${salt}:${personKey}`).digest();
  return digest.readUInt32BE(0) % BUCKETS;
}

/**
 * The route a bucket falls in: the canary for buckets below its weight, the stable version
 * otherwise. Undefined when there is no stable route (a surface always has one).
 */
export function routeOf(routes: readonly Route[], bucket: number): Route | undefined {
  const canary = routes.find((r) => r.role === 'canary');
  if (canary && bucket < canary.weightBp) return canary;
  return routes.find((r) => r.role === 'stable');
}
