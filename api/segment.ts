/**
 * Segment-compatible ingestion: `POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/alias` and
 * `/v1/page`, authenticated by a write key the way Segment clients send it, so their libraries can
 * point here unchanged. Messages are checked by the same rules as the NDJSON import
 * (ingest/segment.ts); a request is stored whole, in one transaction, or not at all, and the 200
 * is sent after the commit. A track message that breaks its event's contract (domain/contracts)
 * is kept in the quarantine with its reasons instead of in `events`, in the same transaction: the
 * request is still accepted (a Segment sender retries anything else), and the answer counts it.
 * Registered by api/server.ts as a Fastify plugin of its own, so its body parsing and limits apply
 * to these routes only.
 */
import { randomUUID } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { type Pool, type PoolClient, withTransaction } from '../common/db.js';
import {
  judge,
  type JudgedFields,
  QuarantineTally,
  type QuarantineRow,
  storeQuarantined,
  trackEvents,
} from '../domain/contracts/quarantine.js';
import { activeContracts } from '../domain/contracts/registry.js';
import {
  checkMessage,
  describeProblem,
  eventRow,
  type EventRow,
  firstProblem,
  instantSchema,
  jsonObjectSchema,
  type MessageProblem,
  type MessageType,
  type SegmentMessage,
  storableMessage,
} from '../ingest/segment.js';
import { authenticateWriteKey, type WriteKeyIdentity } from '../ingest/write-keys.js';
import { captureFromMessages } from '../domain/privacy/capture.js';
import { droppedByTombstones } from '../domain/privacy/tombstones.js';
import { type IdentityRules, identityRulesSchema } from '../domain/identity/rules.js';
import { type ConsentTraitMap, DEFAULT_CONSENT_TRAITS } from '../domain/privacy/consent-traits.js';

/** What the routes need: the pool they write events to. */
export interface SegmentRoutesOptions {
  pool: Pool;
  /** Where identify messages carry consent (default: DEFAULT_CONSENT_TRAITS). */
  consentTraits?: ConsentTraitMap;
  /** The identity rules: what a message's identifiers are, for tombstones (default: built-in). */
  identityRules?: IdentityRules;
}

/** Segment's limit on one message: 32 KB of JSON, as sent (before the batch context). */
export const MESSAGE_LIMIT_BYTES = 32 * 1024;

/** Segment's limit on one batch request: 500 KB of body (after gunzip, when compressed). */
export const BATCH_LIMIT_BYTES = 500 * 1024;

// Bodies up to this size are read, so that one over the batch limit is answered with the index
// where it passes it; a larger one gets Fastify's own "too large" refusal.
const READ_LIMIT_BYTES = 4 * BATCH_LIMIT_BYTES;

const SINGLE_ROUTES: readonly MessageType[] = ['track', 'identify', 'alias', 'page'];

/** A checked message: its events row, the fields its contract judges, the message as received. */
interface Received {
  row: EventRow;
  fields: JudgedFields;
  message: unknown;
}

/** Where identify messages carry consent, and the identity rules (for tombstones). */
interface IngestSettings {
  traits: ConsentTraitMap;
  rules: IdentityRules;
}

/** A request refused with 400 or 401 and a message saying why. */
class Refusal extends Error {
  constructor(
    readonly status: 400 | 401,
    message: string,
  ) {
    super(message);
  }
}

/** The registering plugin: the five routes with their own body parser and limits. */
export const segmentRoutes: FastifyPluginAsync<SegmentRoutesOptions> = async (app, options) => {
  // Segment's browser library posts JSON as text/plain, and some senders set no type at all: the
  // body is read as bytes whatever its type, measured, and parsed here.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => {
    done(null, body);
  });
  app.addHook('preParsing', async (request, _reply, payload) => decoded(request, payload));
  const route = { bodyLimit: READ_LIMIT_BYTES };

  const settings = {
    traits: options.consentTraits ?? DEFAULT_CONSENT_TRAITS,
    rules: options.identityRules ?? identityRulesSchema.parse({}),
  };
  app.post('/v1/batch', route, (request, reply) =>
    ingest(options.pool, settings, request, reply, 'batch'),
  );
  for (const type of SINGLE_ROUTES) {
    app.post(`/v1/${type}`, route, (request, reply) =>
      ingest(options.pool, settings, request, reply, type),
    );
  }
};

export default segmentRoutes;

/**
 * The body stream, gunzipped when the sender compressed it (Segment's HTTP API takes gzip, and
 * some server libraries send it). The limits then apply to the JSON, not to the compressed bytes.
 */
function decoded(request: FastifyRequest, payload: NodeJS.ReadableStream) {
  const encoding = request.headers['content-encoding']?.trim().toLowerCase();
  if (encoding === undefined || encoding === '' || encoding === 'identity') return payload;
  if (encoding !== 'gzip') {
    const problem = `content-encoding "${encoding}" is not supported (send gzip or none)`;
    throw Object.assign(new Error(problem), { statusCode: 400 });
  }
  // Fastify matches Content-Length against the bytes that arrived, which this count gives it.
  const gunzip = Object.assign(createGunzip(), { receivedEncodedLength: 0 });
  payload.on('data', (chunk: Buffer) => {
    gunzip.receivedEncodedLength += chunk.length;
  });
  payload.on('error', (err: Error) => gunzip.destroy(err));
  return payload.pipe(gunzip);
}

/** Authenticates, checks and stores one request; answers as Segment does. */
async function ingest(
  pool: Pool,
  settings: IngestSettings,
  request: FastifyRequest,
  reply: FastifyReply,
  route: 'batch' | MessageType,
) {
  const receivedAt = new Date();
  const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  try {
    const body = parseBody(raw);
    const key = await authenticate(pool, request.headers.authorization, body);
    const messages = route === 'batch' ? readBatch(body, raw) : [readSingle(body, route, raw)];
    const { stored, quarantine } = await storeBatch(
      pool,
      settings,
      key.source,
      receivedAt,
      messages,
    );
    const counts = { writeKey: key.prefix, messages: messages.length, stored };
    request.log.debug({ ...counts, quarantined: quarantine.messages }, 'ingested');
    if (quarantine.messages > 0) {
      // Paths and rules only: the values may be personal data.
      const reasons = quarantine.reasons().map(({ expected: _, ...count }) => count);
      request.log.info({ writeKey: key.prefix, reasons }, 'messages quarantined');
    }
    return await reply.status(200).send({ success: true, quarantined: quarantine.messages });
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    if (err.status === 401) void reply.header('www-authenticate', 'Basic realm="pops"');
    const code = err.status === 401 ? 'unauthorized' : 'validation';
    return reply.status(err.status).send({ error: { code, message: err.message } });
  }
}

/** The body as JSON, or a problem to report once the caller is known to be allowed. */
function parseBody(raw: Buffer): unknown {
  if (raw.length === 0) return new Refusal(400, 'body is empty: send a JSON object');
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return new Refusal(400, `body is not JSON: ${(err as Error).message}`);
  }
}

const bodyKeySchema = z.object({ writeKey: z.string().min(1) });

/**
 * The write key of the request: the Basic auth username (password ignored, as Segment does), or
 * the body's `writeKey`. When both are sent they must be the same key.
 */
async function authenticate(
  pool: Pool,
  header: string | undefined,
  body: unknown,
): Promise<WriteKeyIdentity> {
  const fromHeader = header === undefined ? undefined : basicUsername(header);
  const parsed = bodyKeySchema.safeParse(body);
  const fromBody = parsed.success ? parsed.data.writeKey : undefined;
  if (fromHeader !== undefined && fromBody !== undefined && fromHeader !== fromBody) {
    throw new Refusal(401, 'the body\'s "writeKey" is not the key of the Authorization header');
  }
  const presented = fromHeader ?? fromBody;
  if (presented === undefined) {
    throw new Refusal(
      401,
      'no write key: send it as the Basic auth username (empty password) or as "writeKey"',
    );
  }
  const result = await authenticateWriteKey(pool, presented);
  if (result.ok) return result.key;
  if (result.reason === 'revoked') {
    throw new Refusal(401, `write key ${result.prefix}… was revoked`);
  }
  throw new Refusal(401, 'the write key is not known (pops write-keys list shows the keys)');
}

/** The username of a Basic Authorization header; the header's value is never echoed. */
function basicUsername(header: string): string {
  const match = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  const decoded = match?.[1] === undefined ? '' : Buffer.from(match[1], 'base64').toString('utf8');
  const username = decoded.split(':')[0] ?? '';
  if (username === '') {
    throw new Refusal(401, 'the Authorization header is not "Basic base64(<write key>:)"');
  }
  return username;
}

const batchSchema = z.object(
  {
    batch: z
      .array(z.unknown(), {
        error: (i) => (i.input === undefined ? 'is missing' : 'is not an array'),
      })
      .min(1, { error: 'is empty' }),
    context: jsonObjectSchema,
    sentAt: instantSchema.nullish(),
  },
  { error: 'is not a JSON object' },
);

/**
 * Checks a `/v1/batch` body: its size, then each message (the batch context merged in), in order.
 */
function readBatch(body: unknown, raw: Buffer): Received[] {
  if (body instanceof Refusal) throw body;
  const parsed = batchSchema.safeParse(body, { reportInput: true });
  if (!parsed.success) throw badBatch(firstProblem(parsed.error, '(body)'));
  const { batch, context, sentAt } = parsed.data;
  const sizes = batch.map((message) => Buffer.byteLength(JSON.stringify(message) ?? ''));
  if (raw.length > BATCH_LIMIT_BYTES) throw tooLargeBatch(raw.length, sizes);
  return batch.map((input, index) => {
    const where = `batch[${index}]`;
    const size = sizes[index] ?? 0;
    if (size > MESSAGE_LIMIT_BYTES) throw tooLargeMessage(where, size);
    // Merged before the check, so what the batch context brings is checked as part of the message.
    const merged = context ? withContext(input, context) : input;
    const checked = checkMessage(merged, 'http');
    if (!checked.ok) throw new Refusal(400, `${where}: ${describeProblem(checked.problem)}`);
    return accept({ ...checked.message, sentAt: checked.message.sentAt ?? sentAt }, merged);
  });
}

/** Checks the body of `/v1/<type>`: one message, whose type the route gives. */
function readSingle(body: unknown, type: MessageType, raw: Buffer): Received {
  if (body instanceof Refusal) throw body;
  if (raw.length > MESSAGE_LIMIT_BYTES) throw tooLargeMessage('message', raw.length);
  if (!isPlainObject(body)) throw new Refusal(400, 'message: is not a JSON object');
  const given = body['type'];
  if (given !== undefined && given !== type) {
    const problem = {
      field: 'type',
      value: given,
      problem: `is not "${type}" (sent to /v1/${type})`,
    };
    throw new Refusal(400, `message: ${describeProblem(problem)}`);
  }
  const input = { ...body, type };
  const checked = checkMessage(input, 'http');
  if (!checked.ok) throw new Refusal(400, `message: ${describeProblem(checked.problem)}`);
  return accept(checked.message, input);
}

/**
 * The row of a checked message, with what its contract needs. A message without `messageId` gets
 * a generated one (`pops-` and a random UUID): it is stored, but a resend of it cannot be
 * recognized as a duplicate.
 */
function accept(message: SegmentMessage, received: unknown): Received {
  const row = eventRow({ ...message, messageId: message.messageId ?? `pops-${randomUUID()}` });
  return { row, fields: message, message: storableMessage(received, message) };
}

/**
 * The message with the batch context under its own; a context that is no object is left to the
 * check.
 */
function withContext(message: unknown, context: Record<string, unknown>): unknown {
  if (!isPlainObject(message)) return message;
  const own = message['context'] ?? {};
  return isPlainObject(own) ? { ...message, context: mergeContext(context, own) } : message;
}

/** `base` with `own` laid over it: own keys win; where both hold an object, they merge deeply. */
function mergeContext(
  base: Record<string, unknown>,
  own: Record<string, unknown>,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(own)) {
    const under = merged[key];
    merged[key] = isPlainObject(under) && isPlainObject(value) ? mergeContext(under, value) : value;
  }
  return merged;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function badBatch(problem: MessageProblem): Refusal {
  return new Refusal(400, `body: ${describeProblem(problem)}`);
}

function tooLargeMessage(where: string, size: number): Refusal {
  return new Refusal(
    400,
    `${where}: is ${size} bytes, over the 32 KB limit of a message (${MESSAGE_LIMIT_BYTES} bytes)`,
  );
}

/** Names the first message at which the messages, counted in order, pass the batch limit. */
function tooLargeBatch(total: number, sizes: readonly number[]): Refusal {
  const over = `the batch is ${total} bytes, over the 500 KB limit (${BATCH_LIMIT_BYTES} bytes)`;
  let sum = 0;
  const index = sizes.findIndex((size) => (sum += size + 1) > BATCH_LIMIT_BYTES);
  if (index < 0) return new Refusal(400, `batch: ${over}, outside its messages`);
  return new Refusal(400, `batch[${index}]: ${over}; it passes the limit at this message`);
}

/**
 * Stores a request in one transaction: its messages are judged by the active contracts of the
 * source (one query, for the batch's track events), those that keep theirs (or have none) go into
 * `events`, and the others into the quarantine (but for duplicates of stored events, which are
 * dropped). Returns how many events were new, and the tally of the quarantined.
 */
async function storeBatch(
  pool: Pool,
  { traits, rules }: IngestSettings,
  source: string,
  receivedAt: Date,
  received: readonly Received[],
): Promise<{ stored: number; quarantine: QuarantineTally }> {
  return withTransaction(pool, async (client) => {
    // Messages of deleted persons are dropped, counted but not kept anywhere.
    const messages = await droppedByTombstones(client, source, receivedAt, received, rules);
    const events = trackEvents(messages.map((m) => m.fields));
    const contracts = await activeContracts(client, source, events);
    const rows: EventRow[] = [];
    const kept: QuarantineRow[] = [];
    for (const { row, fields, message } of messages) {
      const breach = judge(contracts, fields);
      if (breach === null) rows.push(row);
      else kept.push({ messageId: row.message_id, event: row.event ?? '', breach, message });
    }
    const stored = await storeEvents(client, source, receivedAt, rows);
    // Consent from identify traits, and the addresses to send to, sealed.
    const ingested = messages.map(({ row, fields }) => ({ row, fields, at: receivedAt }));
    await captureFromMessages(client, traits, source, ingested, stored);
    const duplicates = await storeQuarantined(client, source, receivedAt, kept);
    const quarantine = new QuarantineTally();
    for (const q of kept) {
      if (!duplicates.has(q.messageId)) quarantine.add(q.event, q.breach.reasons);
    }
    return { stored: stored.size, quarantine };
  });
}

/**
 * Inserts the rows in one statement, in batch order, skipping messageIds already stored; returns
 * the messageIds that were new. `ts` is corrected for the sender's clock as the Segment spec says:
 * receivedAt - (sentAt - timestamp) when both were sent, the timestamp as sent when sentAt was not,
 * receivedAt when there was no timestamp. The difference is taken in seconds (exact to
 * the microsecond), so no calendar or time-zone arithmetic enters it.
 */
async function storeEvents(
  client: PoolClient,
  source: string,
  receivedAt: Date,
  rows: readonly EventRow[],
): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const result = await client.query<{ message_id: string }>(
    `insert into events (message_id, source, type, event, person_id, user_id, anonymous_id,
                         previous_id, item_id, ts, received_at, original_timestamp, sent_at,
                         properties, traits, context)
     select r.message_id, $2::text, r.type, r.event, r.person_id, r.user_id, r.anonymous_id,
            r.previous_id, r.item_id,
            case
              when r.original_timestamp is null then $3::timestamptz
              when r.sent_at is null then r.original_timestamp
              else $3::timestamptz - make_interval(
                secs => extract(epoch from r.sent_at - r.original_timestamp)::double precision)
            end,
            $3::timestamptz, r.original_timestamp, r.sent_at,
            r.properties::jsonb, r.traits::jsonb, r.context::jsonb
       from jsonb_array_elements($1::jsonb) with ordinality as e(row, n)
            cross join lateral jsonb_to_record(e.row) as r(
              message_id text, type text, event text, person_id text, user_id text,
              anonymous_id text, previous_id text, item_id text, original_timestamp timestamptz,
              sent_at timestamptz, properties text, traits text, context text)
      order by e.n
     on conflict (message_id) do nothing
     returning message_id`,
    [JSON.stringify(rows), source, receivedAt],
  );
  return new Set(result.rows.map((r) => r.message_id));
}
