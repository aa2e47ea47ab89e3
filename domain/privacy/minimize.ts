/**
 * PII minimization at ingestion. A message's emails and phone numbers (`traits.email`,
 * `traits.phone`, and the same under `context.traits`) are replaced, before anything is stored, by
 * their keyed hash (`h1:<hex>`, what identity resolution matches on); a value that is no email or
 * phone becomes `[invalid]` (identity resolution counts it rejected, as it would the value). The
 * address campaigns need is taken from the message as received and sealed in `contacts`
 * (domain/privacy/capture.ts). Other traits (names, addresses) are stored as sent.
 */
import { HASHED_TYPES, normalizeEmail, storedValue } from '../identity/identifiers.js';

/** Where a message keeps its emails and phones: each under `traits` and under `context.traits`. */
export const PII_PATHS: ReadonlyArray<{ type: string; path: readonly string[] }> =
  HASHED_TYPES.flatMap((type) => [
    { type, path: ['traits', type] },
    { type, path: ['context', 'traits', type] },
  ]);

/**
 * The same places as SQL text expressions over a row with `traits` and `context` jsonb columns
 * (`events`, the import's staging table), the columns named with `prefix` (`i.`).
 */
export function piiFieldsSql(prefix = ''): Array<{ type: string; sql: string }> {
  return PII_PATHS.map(({ type, path }) => {
    const [column = '', ...keys] = path;
    const inner = keys.slice(0, -1).map((k) => ` -> '${k}'`);
    return { type, sql: `${prefix}${column}${inner.join('')} ->> '${keys[keys.length - 1]}'` };
  });
}

/** SQL: one of the row's emails or phones is among the stored values in parameter `$n`. */
export function carriesPiiSql(n: number, prefix = ''): string {
  return piiFieldsSql(prefix)
    .map(({ sql }) => `${sql} = any($${n}::text[])`)
    .join(' or ');
}

/** What a value that cannot be an email or phone number is stored as. */
export const INVALID_VALUE = '[invalid]';

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function scalarText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/** The traits with their email and phone in stored form (the same object when they hold none). */
export function minimizedTraits<T extends JsonObject | null | undefined>(traits: T): T {
  if (!isObject(traits)) return traits;
  let out: JsonObject = traits;
  for (const type of HASHED_TYPES) {
    const value = traits[type];
    if (value === undefined || value === null) continue;
    const text = scalarText(value);
    const stored = text === null ? null : storedValue(type, text);
    out = { ...out, [type]: stored ?? INVALID_VALUE };
  }
  return out as T;
}

/**
 * The context with its traits minimized (traits sent as an array, which Segment does not define
 * but a sender may do, have each object in it minimized).
 */
export function minimizedContext<T extends JsonObject | null | undefined>(context: T): T {
  if (!isObject(context)) return context;
  const given = context['traits'];
  const traits = Array.isArray(given)
    ? given.map((t: unknown) => (isObject(t) ? minimizedTraits(t) : t))
    : isObject(given)
      ? minimizedTraits(given)
      : given;
  const same = Array.isArray(given)
    ? given.every((t: unknown, i) => t === (traits as unknown[])[i])
    : traits === given;
  return (same ? context : { ...context, traits }) as T;
}

/** A whole message (as received or as checked) with its traits and context minimized. */
export function minimizedMessage<T>(message: T): T {
  if (!isObject(message)) return message;
  const traits = minimizedTraits(message['traits'] as JsonObject | undefined);
  const context = minimizedContext(message['context'] as JsonObject | undefined);
  if (traits === message['traits'] && context === message['context']) return message;
  return { ...message, traits, context } as T;
}

/** The address a message gives to send to (traits.email, else context.traits.email), normalized. */
export function sendableEmail(message: object): string | null {
  const fields = message as JsonObject;
  const context = isObject(fields['context']) ? fields['context'] : {};
  for (const traits of [fields['traits'], context['traits']]) {
    const text = isObject(traits) ? scalarText(traits['email']) : null;
    const email = text === null ? null : normalizeEmail(text);
    if (email !== null) return email;
  }
  return null;
}
