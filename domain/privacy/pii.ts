/**
 * How an identifier is spelled where it is stored: normalized as identity resolution normalizes it
 * (trimmed; emails lower-cased; phones as digits), and emails and phones as their keyed hash, so
 * that consent, tombstones and the identity graph join on the same value.
 */
import { storedValue } from '../identity/identifiers.js';

export interface IdentifierInput {
  type: string;
  value: string;
}

/** What a refusal says of an identifier whose value cannot be one: its type, never the value. */
export function invalidIdentifier(type: string): string {
  return `identifier: not a valid ${type} (the value is not shown: it may be personal data)`;
}

/** The identifier as the tables hold it, or null when its value cannot be one (a bad email). */
export function storedIdentifier(identifier: IdentifierInput): IdentifierInput | null {
  const type = identifier.type.trim();
  const value = storedValue(type, identifier.value);
  return value === null ? null : { type, value };
}
