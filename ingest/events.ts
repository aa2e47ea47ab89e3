/**
 * Imports a file of Segment-spec messages (NDJSON, one message a line) into `events`. Each line is
 * checked with zod as it streams, so an error names its line and field; checked rows are copied
 * into a staging table and moved into `events` by one statement, all in one transaction. Messages
 * are deduplicated on `messageId`, so importing a file again adds nothing.
 */
import fs from 'node:fs';
import readline from 'node:readline';
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
import { checkMessage, type EventRow, eventRow, type ImportedMessage } from './segment.js';

export { ImportError, type ImportProgress, type ProgressListener } from './copy.js';
export { segmentMessageSchema, type SegmentMessage } from './segment.js';

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

const STAGING_COLUMNS = [
  'message_id',
  'type',
  'event',
  'person_id',
  'user_id',
  'anonymous_id',
  'previous_id',
  'item_id',
  'original_timestamp',
  'sent_at',
  'properties',
  'traits',
  'context',
] as const satisfies ReadonlyArray<keyof EventRow>;

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
       user_id text, anonymous_id text, previous_id text, item_id text,
       original_timestamp timestamptz not null, sent_at timestamptz,
       properties jsonb not null, traits jsonb, context jsonb
     ) on commit drop`,
  );
  const counter = { rows: 0 };
  await copyInto(client, 'import_events', STAGING_COLUMNS, messageChunks(file, meter, counter));
  const inserted = await client.query(
    // A file is history, not a live send: its timestamps are stored as they are, uncorrected.
    `insert into events (message_id, source, type, event, person_id, user_id, anonymous_id,
                         previous_id, item_id, ts, original_timestamp, sent_at, properties,
                         traits, context)
     select message_id, $1::text, type, event, person_id, user_id, anonymous_id,
            previous_id, item_id, original_timestamp, original_timestamp, sent_at, properties,
            traits, context
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
function parseMessage(file: string, line: number, raw: string): ImportedMessage {
  let input: unknown;
  try {
    input = JSON.parse(raw);
  } catch (err) {
    throw new ImportError(file, line, '(line)', raw, `is not JSON: ${(err as Error).message}`);
  }
  // Only a \u escape can carry what PostgreSQL cannot store, so lines without one skip the walk.
  const checked = checkMessage(input, 'import', raw.includes('\\u'));
  if (!checked.ok) {
    const { field, value, problem } = checked.problem;
    throw new ImportError(file, line, field, value, problem);
  }
  return checked.message;
}

/** One message as a COPY text row of the staging table, columns in STAGING_COLUMNS order. */
function copyRow(message: ImportedMessage): string {
  const row = eventRow(message);
  return `${STAGING_COLUMNS.map((column) => copyValue(row[column])).join('\t')}\n`;
}
