/**
 * Imports a file of Segment-spec messages (NDJSON, one message a line) into `events`. Each line is
 * checked with zod as it streams, so an error names its line and field; checked rows are copied
 * into a staging table and moved into `events` by one statement, all in one transaction. Messages
 * are deduplicated on `messageId`, so importing a file again adds nothing.
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { z } from 'zod';
import { type Pool, type PoolClient, withTransaction } from '../common/db.js';
import {
  COPY_CHUNK_CHARS,
  copyInto,
  copyValue,
  fileSize,
  ImportError,
  type ProgressListener,
  ProgressMeter,
} from './copy.js';

export { ImportError, type ImportProgress, type ProgressListener } from './copy.js';

/** Options of `importEvents`. */
export interface EventsImportOptions {
  /** Written to events.source; defaults to `segment`. */
  source?: string;
  onProgress?: ProgressListener;
}

/** What `importEvents` did: lines read as messages, and messages new to the database. */
export interface EventsImportResult {
  source: string;
  read: number;
  inserted: number;
  seconds: number;
}

const MESSAGE_TYPES = ['track', 'identify', 'alias', 'page'] as const;
const ZONED = 'is not an ISO-8601 date-time with a zone (Z or ±hh:mm)';
const UNSTORABLE_PROBLEM = 'contains U+0000 or a lone surrogate, which PostgreSQL cannot store';
// U+0000, or half of a surrogate pair without its other half.
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const STAGING_COLUMNS = [
  'message_id',
  'type',
  'event',
  'person_id',
  'user_id',
  'anonymous_id',
  'previous_id',
  'item_id',
  'ts',
  'properties',
  'traits',
  'context',
] as const;

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
      z.string().min(1),
      z.number().refine(Number.isSafeInteger, {
        error: 'is a number that is not a whole number below 2^53 (send the id as a string)',
      }),
    ],
    { error: 'is not a non-empty string or a number' },
  )
  .nullish();

const jsonObject = z.record(z.string(), z.unknown(), { error: 'is not a JSON object' }).nullish();

const properties = z
  .looseObject({ item_id: identifier, product_id: identifier }, { error: 'is not a JSON object' })
  .nullish();

const timestamp = text('is missing')
  .pipe(z.iso.datetime({ offset: true, error: ZONED }))
  // PostgreSQL has no year 0, which the ISO pattern allows.
  .refine((value) => !value.startsWith('0000'), { error: 'has year 0000' });

const messageFields = z.object(
  {
    type: z.enum(MESSAGE_TYPES, { error: `is not one of ${MESSAGE_TYPES.join(', ')}` }),
    messageId: text('is missing: it is required because the import deduplicates on it'),
    timestamp,
    userId: identifier,
    anonymousId: identifier,
    previousId: identifier,
    event: text('is missing').nullish(),
    properties,
    traits: jsonObject,
    context: jsonObject,
  },
  { error: 'is not a JSON object' },
);

/** One Segment message, as far as pops reads it; other fields are ignored. */
export const segmentMessageSchema = messageFields.superRefine((message, ctx) => {
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
});

/** A Segment message after validation. */
export type SegmentMessage = z.output<typeof segmentMessageSchema>;

/** Imports the NDJSON file of Segment messages at `file` in one transaction. */
export async function importEvents(
  pool: Pool,
  file: string,
  options: EventsImportOptions = {},
): Promise<EventsImportResult> {
  const started = performance.now();
  const source = options.source ?? 'segment';
  if (source.trim() === '') throw new Error('importEvents: source must not be empty');
  const size = await fileSize(file);
  if (size === null) throw new Error(`events import: ${file} does not exist`);
  const meter = new ProgressMeter(options.onProgress, size);

  const counts = await withTransaction(pool, (client) => {
    return copyAndInsert(client, file, source, meter);
  });
  meter.finish();
  return { source, ...counts, seconds: (performance.now() - started) / 1000 };
}

async function copyAndInsert(
  client: PoolClient,
  file: string,
  source: string,
  meter: ProgressMeter,
): Promise<{ read: number; inserted: number }> {
  await client.query(
    `create temp table import_events (
       message_id text not null, type text not null, event text, person_id text not null,
       user_id text, anonymous_id text, previous_id text, item_id text, ts timestamptz not null,
       properties jsonb not null, traits jsonb, context jsonb
     ) on commit drop`,
  );
  const counter = { rows: 0 };
  await copyInto(client, 'import_events', STAGING_COLUMNS, messageChunks(file, meter, counter));
  const inserted = await client.query(
    `insert into events (message_id, source, type, event, person_id, user_id, anonymous_id,
                         previous_id, item_id, ts, properties, traits, context)
     select message_id, $1::text, type, event, person_id, user_id, anonymous_id,
            previous_id, item_id, ts, properties, traits, context
       from import_events
     on conflict (message_id) do nothing`,
    [source],
  );
  return { read: counter.rows, inserted: inserted.rowCount ?? 0 };
}

/** Yields COPY text for the file's messages in chunks; blank lines are skipped. */
async function* messageChunks(
  file: string,
  meter: ProgressMeter,
  counter: { rows: number },
): AsyncGenerator<string> {
  const input = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  let chunk = '';
  try {
    for await (const raw of lines) {
      line += 1;
      if (raw.trim() === '') continue;
      // A byte-order mark would make the first line invalid JSON.
      const json = line === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      chunk += copyRow(parseMessage(file, line, json));
      counter.rows += 1;
      meter.row(input.bytesRead);
      if (chunk.length >= COPY_CHUNK_CHARS) {
        yield chunk;
        chunk = '';
      }
    }
  } finally {
    lines.close();
    input.destroy();
  }
  if (chunk.length > 0) yield chunk;
  meter.fileDone(input.bytesRead);
}

/** Parses and checks one line; throws an ImportError naming the line and the field path. */
function parseMessage(file: string, line: number, raw: string): SegmentMessage {
  let input: unknown;
  try {
    input = JSON.parse(raw);
  } catch (err) {
    throw new ImportError(file, line, '(line)', raw, `is not JSON: ${(err as Error).message}`);
  }
  const result = segmentMessageSchema.safeParse(input, { reportInput: true });
  if (!result.success) {
    const issue = result.error.issues[0];
    const field = issue && issue.path.length > 0 ? issue.path.join('.') : '(message)';
    throw new ImportError(file, line, field, issue?.input, issue?.message ?? 'is invalid');
  }
  // Raw NULs are invalid JSON and raw lone surrogates invalid UTF-8: both can only arrive as a
  // \u escape, so lines without one skip the walk.
  if (raw.includes('\\u')) {
    const at = unstorablePath(result.data);
    if (at !== null) throw new ImportError(file, line, at, undefined, UNSTORABLE_PROBLEM);
  }
  return result.data;
}

/** The dotted path of the first string (or key) PostgreSQL cannot store, or null. */
function unstorablePath(value: unknown, at = ''): string | null {
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

/** One message as a COPY text row of the staging table, columns in STAGING_COLUMNS order. */
function copyRow(message: SegmentMessage): string {
  const userId = idText(message.userId);
  const anonymousId = idText(message.anonymousId);
  const item = message.properties?.item_id ?? message.properties?.product_id;
  const values = [
    message.messageId,
    message.type,
    message.event ?? null,
    userId ?? anonymousId,
    userId,
    anonymousId,
    idText(message.previousId),
    idText(item),
    message.timestamp,
    JSON.stringify(message.properties ?? {}),
    jsonText(message.traits),
    jsonText(message.context),
  ];
  return `${values.map(copyValue).join('\t')}\n`;
}

function idText(id: string | number | null | undefined): string | null {
  return id === null || id === undefined ? null : String(id);
}

function jsonText(value: Record<string, unknown> | null | undefined): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}
