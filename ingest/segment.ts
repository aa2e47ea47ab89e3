/**
 * The Segment message spec as pops reads it, shared by the NDJSON import and the HTTP endpoints:
 * one zod schema (strict about ids for files, lenient for live senders), the check for strings
 * PostgreSQL cannot store, and the mapping of a checked message to an `events` row. Neither caller
 * writes its own rules, so a message the import accepts is one the HTTP API accepts, and back.
 */
import { z } from 'zod';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../common/text.js';
import { minimizedContext, minimizedMessage, minimizedTraits } from '../domain/privacy/minimize.js';

/** The message types the events table stores (its `type` check); screen and group are refused. */
export const MESSAGE_TYPES = ['track', 'identify', 'alias', 'page'] as const;

/** One of MESSAGE_TYPES. */
export type MessageType = (typeof MESSAGE_TYPES)[number];

/**
 * `import`: a file must carry `messageId` (the import deduplicates on it) and `timestamp`.
 * `http`: a live sender may leave both out; the endpoint fills them in.
 */
export type MessageMode = 'import' | 'http';

/** What is wrong with a message: the dotted field path, the bad value (if any) and why. */
export interface MessageProblem {
  field: string;
  value: unknown;
  problem: string;
}

const ZONED = 'is not an ISO-8601 date-time with a zone (Z or ±hh:mm)';
const UNSTORABLE = UNSTORABLE_TEXT;
/**
 * JSON nested deeper than this is refused: no real message needs it, and walking it costs stack.
 */
export const MAX_DEPTH = 64;
// Instants PostgreSQL and people can both make sense of; a sender's clock outside is wrong.
const EARLIEST = Date.UTC(1970, 0, 1);
const LATEST = Date.UTC(2200, 0, 1);

/** A string field; `missing` explains why it is needed when it is absent. */
function text(missing: string) {
  return z
    .string({ error: (issue) => (issue.input === undefined ? missing : 'is not a string') })
    .min(1, { error: 'is empty' });
}

// Segment ids are strings, but many senders write numeric ids; both are stored as text. A number
// past 2^53 has already lost digits when JSON is parsed, which could merge two people: refused.
const identifier = z
  .union(
    [
      z
        .string()
        .min(1)
        .refine((v) => v.trim() !== '', { error: 'is blank' }),
      z.number().refine(Number.isSafeInteger, {
        error: 'is a number that is not a whole number below 2^53 (send the id as a string)',
      }),
    ],
    { error: 'is not a non-empty string or a number' },
  )
  .nullish();

/** A JSON object field (`context`, `traits`), absent or null allowed. */
export const jsonObjectSchema = z
  .record(z.string(), z.unknown(), { error: 'is not a JSON object' })
  .nullish();

const properties = z
  .looseObject({ item_id: identifier, product_id: identifier }, { error: 'is not a JSON object' })
  .nullish();

/** An instant as Segment sends it: ISO-8601 with a zone. */
export const instantSchema = text('is missing')
  .pipe(z.iso.datetime({ offset: true, error: ZONED }))
  // PostgreSQL zones end at ±15:59, which the ISO pattern does not know.
  .refine((value) => !/[+-](1[6-9]|2\d)(:?\d\d)$/.test(value), { error: 'has a zone past ±15:59' })
  .refine(
    (value) => {
      const t = Date.parse(value);
      return t >= EARLIEST && t < LATEST;
    },
    { error: 'is not between 1970 and 2200' },
  );

const commonFields = {
  type: z.enum(MESSAGE_TYPES, { error: `is not one of ${MESSAGE_TYPES.join(', ')}` }),
  sentAt: instantSchema.nullish(),
  userId: identifier,
  anonymousId: identifier,
  previousId: identifier,
  event: text('is missing').nullish(),
  // A page's name and category; stored in its properties (see eventRow).
  name: z.string({ error: 'is not a string' }).nullish(),
  category: z.string({ error: 'is not a string' }).nullish(),
  properties,
  traits: jsonObjectSchema,
  context: jsonObjectSchema,
};

const importFields = z.object(
  {
    ...commonFields,
    messageId: text('is missing: it is required because the import deduplicates on it'),
    timestamp: instantSchema,
  },
  { error: 'is not a JSON object' },
);

const httpFields = z.object(
  { ...commonFields, messageId: text('is missing').nullish(), timestamp: instantSchema.nullish() },
  { error: 'is not a JSON object' },
);

type Fields = z.output<typeof httpFields>;

/** The rules that span fields, the same in both modes. */
function crossFieldRules(message: Fields, ctx: z.RefinementCtx): void {
  // `input` is the absent value itself, not the whole message zod would report by default.
  const missing = (field: 'userId' | 'event' | 'previousId', why: string) => {
    const input = message[field];
    ctx.addIssue({ code: 'custom', path: [field], input, message: `is missing: ${why}` });
  };
  if (message.userId == null && message.anonymousId == null) {
    missing('userId', 'a message needs a userId or an anonymousId');
  }
  if (message.type === 'track' && message.event == null) {
    missing('event', 'a track message needs one');
  }
  if (message.type === 'alias' && message.previousId == null) {
    missing('previousId', 'an alias message needs one');
  }
}

/** One Segment message as the NDJSON import reads it (`messageId` and `timestamp` required). */
export const segmentMessageSchema = importFields.superRefine(crossFieldRules);

/** One Segment message as the HTTP endpoints read it (`messageId` and `timestamp` optional). */
export const segmentHttpMessageSchema = httpFields.superRefine(crossFieldRules);

/** A Segment message after validation; other fields of the input are dropped. */
export type SegmentMessage = z.output<typeof segmentHttpMessageSchema>;

/** A message of an NDJSON file after validation: its messageId and timestamp are there. */
export type ImportedMessage = z.output<typeof segmentMessageSchema>;

/** The result of checking one message. */
export type CheckedMessage<M extends SegmentMessage> =
  | { ok: true; message: M }
  | { ok: false; problem: MessageProblem };

/**
 * Checks one parsed JSON message in the given mode: the schema, then the strings PostgreSQL cannot
 * store. `mayHaveEscapes: false` skips that walk when the caller knows the raw text has no `\u`
 * escape (raw NULs are invalid JSON and raw lone surrogates invalid UTF-8, so only escapes can
 * carry them).
 */
export function checkMessage(
  input: unknown,
  mode: 'import',
  mayHaveEscapes?: boolean,
): CheckedMessage<ImportedMessage>;
export function checkMessage(
  input: unknown,
  mode: 'http',
  mayHaveEscapes?: boolean,
): CheckedMessage<SegmentMessage>;
export function checkMessage(
  input: unknown,
  mode: MessageMode,
  mayHaveEscapes = true,
): CheckedMessage<SegmentMessage> {
  if (deeperThan(input, MAX_DEPTH)) {
    return { ok: false, problem: { field: '(message)', value: undefined, problem: DEEP } };
  }
  const schema = mode === 'import' ? segmentMessageSchema : segmentHttpMessageSchema;
  const result = schema.safeParse(input, { reportInput: true });
  if (!result.success) return { ok: false, problem: firstProblem(result.error, '(message)') };
  const at = mayHaveEscapes ? unstorablePath(result.data) : null;
  if (at !== null) return { ok: false, problem: unstorable(at) };
  return { ok: true, message: result.data };
}

/**
 * The first issue of a zod error (parsed with `reportInput: true`) as a problem; `whole` names the
 * field when the issue is about the value as a whole.
 */
export function firstProblem(error: z.ZodError, whole: string): MessageProblem {
  const issue = error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.join('.') : whole;
  return { field, value: issue?.input, problem: issue?.message ?? 'is invalid' };
}

const DEEP = `is nested deeper than ${MAX_DEPTH} levels`;

/** Whether a JSON value nests objects or arrays deeper than `max` (walked without recursion). */
export function deeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [current, depth] = next;
    if (current === null || typeof current !== 'object') continue;
    if (depth >= max) return true;
    for (const inner of Object.values(current)) stack.push([inner, depth + 1]);
  }
  return false;
}

function unstorable(field: string): MessageProblem {
  return { field, value: undefined, problem: UNSTORABLE_PROBLEM };
}

/** The dotted path of the first string (or key) PostgreSQL cannot store, or null. */
export function unstorablePath(value: unknown, at = ''): string | null {
  if (typeof value === 'string') return UNSTORABLE.test(value) ? at || '(message)' : null;
  if (value === null || typeof value !== 'object') return null;
  for (const [key, inner] of Object.entries(value)) {
    const here = at === '' ? key : `${at}.${key}`;
    if (UNSTORABLE.test(key)) return here;
    const found = unstorablePath(inner, here);
    if (found !== null) return found;
  }
  return null;
}

/**
 * What to keep of a message as received (the quarantine keeps it whole): the received JSON, unless
 * it holds text PostgreSQL cannot store, which can only sit in a field the check dropped; then the
 * message as checked. Either way minimized. `mayHaveEscapes` as for checkMessage.
 */
export function storableMessage(
  received: unknown,
  checked: SegmentMessage,
  mayHaveEscapes = true,
): unknown {
  // Emails and phones are kept hashed here too (domain/privacy/minimize.ts).
  return minimizedMessage(mayHaveEscapes && unstorablePath(received) !== null ? checked : received);
}

/** `field "f": value problem`, or `field "f" problem` without a value; long values are cut. */
export function describeProblem({ field, value, problem }: MessageProblem): string {
  if (value === undefined) return `field "${field}" ${problem}`;
  const shown = JSON.stringify(value) ?? `(${typeof value})`;
  const short = shown.length > 80 ? `${shown.slice(0, 77)}...` : shown;
  return `field "${field}": ${short} ${problem}`;
}

/**
 * The columns of `events` one message fills (source, ts and received_at are the writer's). Text
 * and JSON values are strings, ready for COPY text or a jsonb record set alike.
 */
export interface EventRow {
  message_id: string;
  type: MessageType;
  event: string | null;
  person_id: string;
  user_id: string | null;
  anonymous_id: string | null;
  previous_id: string | null;
  item_id: string | null;
  original_timestamp: string | null;
  sent_at: string | null;
  properties: string;
  traits: string | null;
  context: string | null;
}

/**
 * Maps a checked message (its messageId settled) to its events row. A page's `name` and
 * `category`, which events has no column for, go into its properties unless those hold them.
 */
export function eventRow(message: SegmentMessage & { messageId: string }): EventRow {
  const userId = idText(message.userId);
  const anonymousId = idText(message.anonymousId);
  const item = message.properties?.item_id ?? message.properties?.product_id;
  return {
    message_id: message.messageId,
    type: message.type,
    event: message.event ?? null,
    // The check guarantees one of the two; person_id is the raw id training keys on.
    person_id: userId ?? anonymousId ?? '',
    user_id: userId,
    anonymous_id: anonymousId,
    previous_id: idText(message.previousId),
    item_id: idText(item),
    original_timestamp: message.timestamp ?? null,
    sent_at: message.sentAt ?? null,
    properties: JSON.stringify(propertiesOf(message)),
    // Emails and phones are stored as their keyed hash (domain/privacy/minimize.ts).
    traits: jsonText(minimizedTraits(message.traits)),
    context: jsonText(minimizedContext(message.context)),
  };
}

function propertiesOf(message: SegmentMessage): Record<string, unknown> {
  const properties = message.properties ?? {};
  if (message.type !== 'page') return properties;
  const page = { name: message.name ?? undefined, category: message.category ?? undefined };
  return { ...page, ...properties };
}

function idText(id: string | number | null | undefined): string | null {
  return id === null || id === undefined ? null : String(id);
}

function jsonText(value: Record<string, unknown> | null | undefined): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}
