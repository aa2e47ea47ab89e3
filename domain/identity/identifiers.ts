/**
 * Identifiers: what one event says about who sent it. Extraction reads an event row, normalizes
 * each value and drops junk, so that resolution only ever sees values that may link two messages.
 *
 * Sources: `user_id`; `anonymous_id`; the alias `previous_id` (typed by `aliasPreviousIdAs`);
 * `context.device.id` as `device_id`; `traits.email` and `context.traits.email` (where Segment
 * puts traits on track and page calls) as `email`; `traits.phone` and `context.traits.phone` as
 * `phone`; and custom types from their configured path.
 *
 * Normalization: every value is trimmed; emails also lose format characters (U+200B and the like),
 * are lower-cased and must look like an address (no plus-tag or dot stripping: those would merge
 * mailboxes that may belong to different people);
 * phone numbers keep their digits and a leading + (00 is read as +) and must have 7 to 15 digits.
 *
 * Minimization: emails and phone numbers are personal data, so the identity tables hold their
 * keyed hash (`h1:<hex>`, domain/privacy/keys.ts hashedValue), never the clear value. Ingestion
 * already replaces them in the stored message (domain/privacy/minimize.ts); a value that arrives
 * hashed is taken as it is, one in clear (stored before minimization) is normalized and hashed.
 */
import { UNSTORABLE_TEXT } from '../../common/text.js';
import { HASHED_VALUE, hashedValue } from '../privacy/keys.js';
import { type IdentityRules, ruleOf, typesOf } from './rules.js';

export interface Identifier {
  type: string;
  value: string;
}

/** The columns of `events` that identity resolution reads. */
export interface IdentityEventRow {
  id: number;
  messageId: string;
  ts: Date;
  userId: string | null;
  anonymousId: string | null;
  previousId: string | null;
  traits: Record<string, unknown> | null;
  context: Record<string, unknown> | null;
  properties: Record<string, unknown> | null;
}

export interface ExtractedIdentifiers {
  /**
   * Distinct, normalized, non-junk identifiers, highest priority first (ties: extraction order).
   */
  identifiers: Identifier[];
  /** Values present in the event that were dropped as junk, invalid or too long. */
  rejected: number;
}

/** Longer values are refused: no real id is this long, and the btree key must stay small. */
export const MAX_VALUE_LENGTH = 512;

const JUNK_VALUES = [
  '',
  'null',
  'undefined',
  'none',
  'nan',
  '0',
  '-1',
  'anonymous',
  'guest',
  '[object object]',
];
const ZERO_UUID = /^\{?0{8}-?0{4}-?0{4}-?0{4}-?0{12}\}?$/;
// Deliberately loose: one @, no spaces, a dot in the domain. Deliverability is not our question.
const EMAIL = /^[^\s@]{1,64}@[^\s@.]+(\.[^\s@.]+)+$/;

/** A predicate for junk values: the built-in list, all-zero UUIDs and the block list, any case. */
export function junkFilter(blockList: readonly string[]): (value: string) => boolean {
  const junk = new Set([...JUNK_VALUES, ...blockList.map((v) => v.trim().toLowerCase())]);
  return (value) => {
    const key = value.trim().toLowerCase();
    return junk.has(key) || ZERO_UUID.test(key);
  };
}

// Format characters (Unicode Cf: zero-width space and joiners, BOM, bidi marks, soft hyphen) are
// invisible: left in, `a@b.com` with one would hash apart from the address itself and slip past
// its tombstone and consent. No mail system reads them as part of an address.
const FORMAT_CHARACTERS = /\p{Cf}/gu;

/**
 * The normalized form of an email address (format characters removed, Unicode NFC, trimmed,
 * lower-cased), or null when it does not look like one.
 */
export function normalizeEmail(raw: string): string | null {
  if (UNSTORABLE_TEXT.test(raw)) return null;
  const email = raw.replace(FORMAT_CHARACTERS, '').normalize('NFC').trim().toLowerCase();
  return email.length <= 254 && EMAIL.test(email) ? email : null;
}

const PHONE = /^(\+|00)?[0-9(][0-9 ().-]*$/;

/**
 * The normalized form of a phone number (its digits, `+` first when it had `+` or `00`), or null
 * when it is not one: other characters, fewer than 7 or more than 15 digits, one digit repeated.
 */
export function normalizePhone(raw: string): string | null {
  const text = raw.trim();
  if (text.length > 40 || !PHONE.test(text)) return null;
  const international = text.startsWith('+') || text.startsWith('00');
  const digits = text.replace(/[^0-9]/g, '').slice(text.startsWith('00') ? 2 : 0);
  if (digits.length < 7 || digits.length > 15 || /^(.)\1*$/.test(digits)) return null;
  return international ? `+${digits}` : digits;
}

/** Identifier types whose values are personal data: stored as their keyed hash. */
export const HASHED_TYPES: readonly string[] = ['email', 'phone'];

/**
 * A value normalized for its type (not hashed), or null when it cannot be one (also when it holds
 * text PostgreSQL cannot store).
 */
function clearValue(type: string, text: string): string | null {
  if (UNSTORABLE_TEXT.test(text)) return null;
  if (type === 'email') return normalizeEmail(text);
  if (type === 'phone') return normalizePhone(text);
  const value = text.trim();
  return value === '' || value.length > MAX_VALUE_LENGTH ? null : value;
}

/**
 * A value as the identity tables store it: normalized, and hashed for emails and phones (a value
 * already hashed is kept). Null when it cannot be a value of its type. For lookups by identifier.
 */
export function storedValue(type: string, raw: string): string | null {
  if (!HASHED_TYPES.includes(type)) return clearValue(type, raw);
  const text = raw.trim();
  if (HASHED_VALUE.test(text)) return text;
  const clear = clearValue(type, text);
  return clear === null ? null : hashedValue(type, clear);
}

/** A JSON value as an identifier string: strings and finite numbers only. */
function asText(value: unknown): string | null | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null; // present but not an id (an object, a boolean): counted as rejected
}

function at(root: Record<string, unknown> | null, path: readonly string[]): unknown {
  let current: unknown = root;
  for (const key of path) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/** Builds the extractor for a set of rules (the junk filter is compiled once). */
export function identifierExtractor(
  rules: IdentityRules,
): (row: IdentityEventRow) => ExtractedIdentifiers {
  const isJunk = junkFilter(rules.blockList);
  // Blocked emails and phones as they arrive from ingestion: hashed.
  const blockedHashes = new Set(
    HASHED_TYPES.flatMap((type) =>
      rules.blockList.map((v) => storedValue(type, v)).filter((v) => v !== null),
    ),
  );
  const priorities = new Map(typesOf(rules).map((t) => [t, ruleOf(rules, t)?.priority ?? 0]));
  const priority = (type: string) => priorities.get(type) ?? 0;
  const custom = Object.entries(rules.custom).map(([type, rule]) => ({
    type,
    from: rule.from,
    path: rule.path.split('.'),
  }));

  return (row) => {
    const raw: Array<[string, unknown]> = [
      ['user_id', row.userId],
      ['email', at(row.traits, ['email'])],
      ['email', at(row.context, ['traits', 'email'])],
      ['phone', at(row.traits, ['phone'])],
      ['phone', at(row.context, ['traits', 'phone'])],
      ['anonymous_id', row.anonymousId],
      [rules.aliasPreviousIdAs, row.previousId],
      ['device_id', at(row.context, ['device', 'id'])],
      ...custom.map(({ type, from, path }): [string, unknown] => [type, at(row[from], path)]),
    ];
    const identifiers: Identifier[] = [];
    let rejected = 0;
    for (const [type, value] of raw) {
      const text = asText(value);
      if (text === undefined) continue;
      const normalized = text === null ? null : normalize(type, text, isJunk, blockedHashes);
      if (normalized === null) {
        rejected += 1;
        continue;
      }
      // A message carries a handful of identifiers: a scan beats hashing them.
      if (identifiers.some((i) => i.type === type && i.value === normalized)) continue;
      identifiers.push({ type, value: normalized });
    }
    identifiers.sort((a, b) => priority(b.type) - priority(a.type));
    return { identifiers, rejected };
  };
}

function normalize(
  type: string,
  text: string,
  isJunk: (value: string) => boolean,
  blockedHashes: ReadonlySet<string>,
): string | null {
  const hashed = HASHED_TYPES.includes(type);
  if (hashed && HASHED_VALUE.test(text)) return blockedHashes.has(text) ? null : text;
  const value = clearValue(type, text);
  if (value === null || isJunk(value)) return null;
  return hashed ? hashedValue(type, value) : value;
}

/** One string per identifier, for maps and sets: type and value cannot collide across the NUL. */
export function identifierKey(identifier: Identifier): string {
  return `${identifier.type}\u0000${identifier.value}`;
}
