/** Emails with invisible format characters normalize (and hash) as the address itself. */
import { describe, expect, it } from 'vitest';
import { normalizeEmail, storedValue } from '../domain/identity/identifiers.js';
import { hashedValueOf } from './support.js';

describe('emails with format characters', () => {
  it('are normalized without them, so they hash as the address', () => {
    const clean = 'alice.smith@example.com';
    for (const raw of [
      `${clean}\u200b`,
      `\ufeff${clean}`,
      'alice.smith\u200d@example\u00ad.com',
      `\u200e${clean}\u200f`,
    ]) {
      expect(normalizeEmail(raw)).toBe(clean);
      expect(storedValue('email', raw)).toBe(hashedValueOf('email', clean));
    }
    // Nothing left once they are gone: not an email.
    expect(normalizeEmail('\u200b@\u200b')).toBeNull();
  });
});
