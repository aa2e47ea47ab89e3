/**
 * How an identifier is spelled where it is stored: normalized as identity resolution normalizes it
 * (trimmed; emails lower-cased), so that consent, tombstones and the identity graph join on the
 * same value.
 */
import { normalizeEmail } from '../identity/identifiers.js';

export interface IdentifierInput {
  type: string;
  value: string;
}

/** The identifier as the tables hold it, or null when its value cannot be one (a bad email). */
export function storedIdentifier(identifier: IdentifierInput): IdentifierInput | null {
  const type = identifier.type.trim();
  const value = type === 'email' ? normalizeEmail(identifier.value) : identifier.value.trim();
  if (value === null || value === '' || value.length > 512) return null;
  return { type, value };
}
