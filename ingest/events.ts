/**
 * Imports a file of Segment-spec messages (NDJSON, one message a line) into `events`. Each line is
 * checked with zod as it streams, so an error names its line and field; checked rows are copied
 * into a staging table and moved into `events` by one statement, all in one transaction. Messages
 * are deduplicated on `messageId`, so importing a file again adds nothing. A track message that
 * breaks its event's contract (domain/contracts; the source's contracts are read once) goes into
 * the quarantine with its reasons instead, in the same transaction. Emails and phones are stored
 * minimized (domain/privacy/minimize.ts); the consent identify messages state and the addresses
 * to send to are captured as the HTTP API captures them (domain/privacy/capture.ts), with the
 * message's own timestamp as when its consent took effect (a file is history).
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { type Pool, type PoolClient, withTransaction } from '../common/db.js';
import type { Reason } from '../domain/contracts/check.js';
import { judge, QuarantineTally, type ReasonCount } from '../domain/contracts/quarantine.js';
import { captureFromMessages, type IngestedMessage } from '../domain/privacy/capture.js';
import { type ConsentTraitMap, DEFAULT_CONSENT_TRAITS } from '../domain/privacy/consent-traits.js';
import { sendableEmail } from '../domain/privacy/minimize.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import {
  dropTombstonedStaged,
  hashesLiteral,
  messageHashes,
} from '../domain/privacy/tombstones.js';
import { activeContracts, type ActiveContract } from '../domain/contracts/registry.js';
import {
  COPY_CHUNK_CHARS,
  copyInto,
  copyValue,
  fileSize,
  ImportError,
  type ProgressListener,
  ProgressMeter,
} from './copy.js';
import {
  checkMessage,
  type EventRow,
  eventRow,
  type ImportedMessage,
  storableMessage,
} from './segment.js';

export { ImportError, type ImportProgress, type ProgressListener } from './copy.js';
export { segmentMessageSchema, type SegmentMessage } from './segment.js';

/** Options of `importEvents`. */
export interface EventsImportOptions {
  /** Written to events.source; defaults to `segment`. */
  source?: string;
  onProgress?: ProgressListener;
  /** Where identify messages carry consent (POPS_CONSENT_TRAITS); unset: the default. */
  consentTraits?: ConsentTraitMap;
  /** The identity rules (POPS_IDENTITY_RULES): what a message's identifiers are, for tombstones. */
  identityRules?: IdentityRules;
}

/**
 * What `importEvents` did: lines read as messages, messages new to `events`, and messages that
 * broke their contract (quarantined now or before; not duplicates of stored events), with how
 * often each rule broke.
 */
export interface EventsImportResult {
  source: string;
  read: number;
  inserted: number;
  /** Messages of deleted persons (a tombstoned identifier): not stored, counted per day. */
  dropped: number;
  quarantined: number;
  quarantineReasons: ReasonCount[];
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

/** The staging columns of a quarantined message (null for the others), after STAGING_COLUMNS. */
const QUARANTINE_COLUMNS = ['contract_id', 'reasons', 'message'] as const;

/** The keyed hashes of the message's identifiers (domain/privacy/tombstones.ts), last. */
const HASHES_COLUMN = 'id_hashes';

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

  const traits = options.consentTraits ?? DEFAULT_CONSENT_TRAITS;
  const counts = await withTransaction(pool, (client) => {
    return copyAndInsert(client, file, source, traits, meter, options.identityRules);
  });
  meter.finish();
  return { source, ...counts, seconds: (performance.now() - started) / 1000 };
}

async function copyAndInsert(
  client: PoolClient,
  file: string,
  source: string,
  traits: ConsentTraitMap,
  meter: ProgressMeter,
  rules: IdentityRules | undefined,
): Promise<Omit<EventsImportResult, 'source' | 'seconds'>> {
  await client.query(
    `create temp table import_events (
       message_id text not null, type text not null, event text, person_id text not null,
       user_id text, anonymous_id text, previous_id text, item_id text,
       original_timestamp timestamptz not null, sent_at timestamptz,
       properties jsonb not null, traits jsonb, context jsonb,
       contract_id bigint, reasons jsonb, message jsonb, id_hashes text[] not null
     ) on commit drop`,
  );
  const contracts = await activeContracts(client, source);
  const tally = new QuarantineTally();
  const counter = { rows: 0 };
  // Identify messages and messages with an address: what capture reads after the insert.
  const toCapture: IngestedMessage[] = [];
  const stage = (parsed: ParsedLine) => copyRow(parsed, contracts, tally, toCapture, rules);
  const columns = [...STAGING_COLUMNS, ...QUARANTINE_COLUMNS, HASHES_COLUMN];
  await copyInto(client, 'import_events', columns, messageChunks(file, meter, counter, stage));
  // Messages of deleted persons are not imported (domain/privacy/tombstones.ts).
  const tombstoned = await dropTombstonedStaged(client, source, {
    table: 'import_events',
    quarantinable: true,
  });
  for (const b of tombstoned.breaches) tally.remove(b.event, b.reasons);
  const capture = await stillStaged(client, toCapture);
  const inserted = await client.query(
    // A file is history, not a live send: its timestamps are stored as they are, uncorrected.
    `insert into events (message_id, source, type, event, person_id, user_id, anonymous_id,
                         previous_id, item_id, ts, original_timestamp, sent_at, properties,
                         traits, context)
     select message_id, $1::text, type, event, person_id, user_id, anonymous_id,
            previous_id, item_id, original_timestamp, original_timestamp, sent_at, properties,
            traits, context
       from import_events
      where reasons is null
     on conflict (message_id) do nothing`,
    [source],
  );
  if (tally.messages > 0) await quarantineStaged(client, source, tally);
  await captureFromMessages(client, traits, source, capture.messages, capture.fresh);
  return {
    read: counter.rows,
    inserted: inserted.rowCount ?? 0,
    dropped: tombstoned.dropped,
    quarantined: tally.messages,
    quarantineReasons: tally.reasons(),
  };
}

/**
 * The messages to capture that are still staged (not dropped by a tombstone), and which of them
 * are new to `events` (keep their contract, not stored before): only those record consent.
 */
async function stillStaged(
  client: PoolClient,
  messages: readonly IngestedMessage[],
): Promise<{ messages: IngestedMessage[]; fresh: Set<string> }> {
  if (messages.length === 0) return { messages: [], fresh: new Set() };
  const { rows } = await client.query<{ message_id: string; fresh: boolean }>(
    `select i.message_id,
            bool_or(i.reasons is null and not exists (
                      select from events e where e.message_id = i.message_id)) as fresh
       from import_events i where i.message_id = any($1::text[])
      group by i.message_id`,
    [[...new Set(messages.map((m) => m.row.message_id))]],
  );
  const staged = new Set(rows.map((r) => r.message_id));
  const fresh = new Set(rows.filter((r) => r.fresh).map((r) => r.message_id));
  return { messages: messages.filter((m) => staged.has(m.row.message_id)), fresh };
}

/**
 * Moves the staged messages that broke their contract into the quarantine, after the events. One
 * whose messageId is in `events` (stored before, or by this import) is a duplicate: dropped, and
 * taken out of the tally. One already quarantined is not written again.
 */
async function quarantineStaged(
  client: PoolClient,
  source: string,
  tally: QuarantineTally,
): Promise<void> {
  const duplicates = await client.query<{ event: string; reasons: Reason[] }>(
    `delete from import_events i
      where i.reasons is not null
        and exists (select from events e where e.message_id = i.message_id)
     returning i.event, i.reasons`,
  );
  for (const d of duplicates.rows) tally.remove(d.event, d.reasons);
  await client.query(
    `insert into quarantined_events (message_id, source, event, contract_id, message, reasons)
     select message_id, $1::text, event, contract_id, message, reasons
       from import_events
      where reasons is not null
     on conflict (message_id) do nothing`,
    [source],
  );
}

/** One line, checked: the message, the JSON as read, and whether its text had a `\u` escape. */
interface ParsedLine {
  message: ImportedMessage;
  input: unknown;
  mayHaveEscapes: boolean;
}

/** Yields COPY text for the file's messages (by `stage`) in chunks; blank lines are skipped. */
async function* messageChunks(
  file: string,
  meter: ProgressMeter,
  counter: { rows: number },
  stage: (parsed: ParsedLine) => string,
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
      chunk += stage(parseMessage(file, line, json));
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
function parseMessage(file: string, line: number, raw: string): ParsedLine {
  let input: unknown;
  try {
    input = JSON.parse(raw);
  } catch (err) {
    throw new ImportError(file, line, '(line)', raw, `is not JSON: ${(err as Error).message}`);
  }
  // Only a \u escape can carry what PostgreSQL cannot store, so lines without one skip the walk.
  const mayHaveEscapes = raw.includes('\\u');
  const checked = checkMessage(input, 'import', mayHaveEscapes);
  if (!checked.ok) {
    const { field, value, problem } = checked.problem;
    throw new ImportError(file, line, field, value, problem);
  }
  return { message: checked.message, input, mayHaveEscapes };
}

/**
 * One message as a COPY text row of the staging table, columns in STAGING_COLUMNS, then
 * QUARANTINE_COLUMNS, then HASHES_COLUMN order; a message that breaks its contract carries the
 * contract, the reasons and itself as read, and is counted in `tally`.
 */
function copyRow(
  { message, input, mayHaveEscapes }: ParsedLine,
  contracts: ReadonlyMap<string, ActiveContract>,
  tally: QuarantineTally,
  toCapture: IngestedMessage[],
  rules: IdentityRules | undefined,
): string {
  const row = eventRow(message);
  if (row.type === 'identify' || sendableEmail(message) !== null) {
    const at = row.original_timestamp === null ? new Date() : new Date(row.original_timestamp);
    toCapture.push({ row, fields: message, at });
  }
  const values: Array<string | null> = STAGING_COLUMNS.map((column) => row[column]);
  const breach = judge(contracts, message);
  if (breach === null) {
    values.push(null, null, null);
  } else {
    tally.add(message.event ?? '', breach.reasons);
    const kept = storableMessage(input, message, mayHaveEscapes);
    values.push(String(breach.contractId), JSON.stringify(breach.reasons), JSON.stringify(kept));
  }
  values.push(hashesLiteral(messageHashes({ row, fields: message }, rules)));
  return `${values.map(copyValue).join('\t')}\n`;
}
