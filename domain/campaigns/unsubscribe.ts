/**
 * Unsubscribe tokens for List-Unsubscribe (RFC 8058 one-click): the person key, the consent
 * purpose and the campaign, signed with HMAC-SHA256 under POPS_UNSUBSCRIBE_SECRET. The token is
 * the credential of POST /v1/unsubscribe/:token, so the route needs no other; it holds a person
 * key, never an address.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { CONSENT_PURPOSES } from '../privacy/consent.js';

const payloadSchema = z.strictObject({
  p: z.string().min(1).max(600),
  u: z.enum(CONSENT_PURPOSES),
  c: z.string().min(1).max(200),
});
export interface UnsubscribePayload {
  personKey: string;
  purpose: (typeof CONSENT_PURPOSES)[number];
  campaign: string;
}

function mac(secret: string, body: string): Buffer {
  return createHmac('sha256', secret).update(body).digest();
}

/** The token of a payload. */
export function signUnsubscribe(secret: string, payload: UnsubscribePayload): string {
  const body = Buffer.from(
    JSON.stringify({ p: payload.personKey, u: payload.purpose, c: payload.campaign }),
  ).toString('base64url');
  return `${body}.${mac(secret, body).toString('base64url')}`;
}

/** The payload of a genuine token, or undefined for a forged, altered or malformed one. */
export function verifyUnsubscribe(secret: string, token: string): UnsubscribePayload | undefined {
  const [body, signature, extra] = token.split('.');
  if (!body || !signature || extra !== undefined) return undefined;
  const expected = mac(secret, body);
  const given = Buffer.from(signature, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const parsed = payloadSchema.safeParse(JSON.parse(Buffer.from(body, 'base64url').toString()));
    if (!parsed.success) return undefined;
    return { personKey: parsed.data.p, purpose: parsed.data.u, campaign: parsed.data.c };
  } catch {
    return undefined;
  }
}

/** The one-click URL of a token under the API's public base. */
export function unsubscribeUrl(base: string, token: string): string {
  return `${base.replace(/\/+$/, '')}/v1/unsubscribe/${token}`;
}
