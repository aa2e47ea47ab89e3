import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportError, importEvents } from '../ingest/events.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const TRACK = {
  type: 'track',
  messageId: 'm-track',
  timestamp: '2024-03-01T10:00:00.123Z',
  userId: 'u1',
  anonymousId: 'a1',
  event: 'Product Viewed',
  properties: { item_id: 42, price: 9.5 },
  context: { ip: '203.0.113.9' },
};
const IDENTIFY = {
  type: 'identify',
  messageId: 'm-identify',
  timestamp: '2024-03-01T12:00:00+02:00',
  userId: 'u1',
  traits: { plan: 'pro' },
};
const ALIAS = {
  type: 'alias',
  messageId: 'm-alias',
  timestamp: '2024-03-01T10:05:00Z',
  userId: 'u1',
  previousId: 'a1',
};
const PAGE = {
  type: 'page',
  messageId: 'm-page',
  timestamp: '2024-03-02T08:00:00-05:00',
  anonymousId: 'a2',
  properties: { product_id: 'sku-1', path: '/p/sku-1' },
};

let db: TestDatabase;
let tmp: string;
let files = 0;

beforeAll(async () => {
  db = await createTestDatabase('import-events');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pops-events-'));
});

afterAll(async () => {
  await db.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Writes the lines (objects as JSON, strings as they are) to a new NDJSON file. */
async function ndjson(lines: ReadonlyArray<object | string>): Promise<string> {
  files += 1;
  const file = path.join(tmp, `events-${files}.ndjson`);
  const text = lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line)));
  await fs.writeFile(file, `${text.join('\n')}\n`);
  return file;
}

async function eventCount(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>('select count(*)::int as n from events');
  return rows[0]?.n ?? -1;
}

/** Imports the lines, expects an ImportError and that no event was kept. */
async function rejected(lines: ReadonlyArray<object | string>): Promise<ImportError> {
  const file = await ndjson(lines);
  const before = await eventCount();
  const error = await importEvents(db.pool, file).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ImportError);
  expect(await eventCount()).toBe(before);
  return error as ImportError;
}

describe('importing Segment messages', () => {
  it('maps track, identify, alias and page lines to events, skipping blank lines', async () => {
    const file = await ndjson([TRACK, IDENTIFY, '', '   ', ALIAS, PAGE]);

    const result = await importEvents(db.pool, file);

    expect(result).toMatchObject({ source: 'segment', read: 4, inserted: 4 });
    const { rows } = await db.pool.query(
      `select message_id, source, type, event, person_id, user_id, anonymous_id, previous_id,
              item_id, ts, properties, traits, context
         from events where source = 'segment' order by ts`,
    );
    const none = { event: null, previous_id: null, item_id: null, traits: null, context: null };
    expect(rows).toEqual([
      {
        ...none,
        message_id: 'm-identify',
        source: 'segment',
        type: 'identify',
        person_id: 'u1',
        user_id: 'u1',
        anonymous_id: null,
        ts: new Date('2024-03-01T10:00:00Z'),
        properties: {},
        traits: { plan: 'pro' },
      },
      {
        ...none,
        message_id: 'm-track',
        source: 'segment',
        type: 'track',
        event: 'Product Viewed',
        person_id: 'u1',
        user_id: 'u1',
        anonymous_id: 'a1',
        item_id: '42',
        ts: new Date('2024-03-01T10:00:00.123Z'),
        properties: { item_id: 42, price: 9.5 },
        context: { ip: '203.0.113.9' },
      },
      {
        ...none,
        message_id: 'm-alias',
        source: 'segment',
        type: 'alias',
        person_id: 'u1',
        user_id: 'u1',
        anonymous_id: null,
        previous_id: 'a1',
        ts: new Date('2024-03-01T10:05:00Z'),
        properties: {},
      },
      {
        ...none,
        message_id: 'm-page',
        source: 'segment',
        type: 'page',
        person_id: 'a2',
        user_id: null,
        anonymous_id: 'a2',
        item_id: 'sku-1',
        ts: new Date('2024-03-02T13:00:00Z'),
        properties: { product_id: 'sku-1', path: '/p/sku-1' },
      },
    ]);
  });

  it('adds nothing when the same file is imported again', async () => {
    const file = await ndjson([
      { ...TRACK, messageId: 'again-1' },
      { ...PAGE, messageId: 'again-2' },
    ]);
    await importEvents(db.pool, file, { source: 'again' });
    const before = await eventCount();

    const again = await importEvents(db.pool, file, { source: 'again' });

    expect(again).toMatchObject({ source: 'again', read: 2, inserted: 0 });
    expect(await eventCount()).toBe(before);
  });

  it('keeps tabs, backslashes and line breaks inside values intact', async () => {
    const tricky = 'tab\there \\ back\nline';
    const file = await ndjson([
      { ...TRACK, messageId: 'tricky', event: tricky, properties: { note: tricky } },
    ]);

    await importEvents(db.pool, file, { source: 'tricky' });

    const { rows } = await db.pool.query(
      `select event, properties from events where message_id = 'tricky'`,
    );
    expect(rows).toEqual([{ event: tricky, properties: { note: tricky } }]);
  });
});

describe('a malformed Segment file', () => {
  it('says messageId is needed to deduplicate, after good lines, and keeps nothing', async () => {
    const { messageId: _, ...noId } = TRACK;

    const error = await rejected([{ ...IDENTIFY, messageId: 'ok-1' }, '', noId]);

    expect(error).toMatchObject({ line: 3, field: 'messageId', value: undefined });
    expect(error.message).toMatch(/line 3: field "messageId" is missing: .*deduplicates/);
  });

  it('rejects a timestamp without a zone', async () => {
    const naive = '2024-03-01T10:00:00';

    const error = await rejected([{ ...TRACK, messageId: 'naive', timestamp: naive }]);

    expect(error).toMatchObject({ line: 1, field: 'timestamp', value: naive });
    expect(error.message).toMatch(/^events-\d+\.ndjson line 1: field "timestamp": ".+" is not/);
  });

  it('needs a userId or an anonymousId', async () => {
    const error = await rejected([{ ...PAGE, messageId: 'nobody', anonymousId: undefined }]);

    expect(error).toMatchObject({ line: 1, field: 'userId' });
    expect(error.message).toMatch(/anonymousId/);
  });

  it('names a type that is not track, identify, alias or page', async () => {
    const error = await rejected([{ ...TRACK, messageId: 'screen', type: 'screen' }]);

    expect(error).toMatchObject({ line: 1, field: 'type', value: 'screen' });
  });

  it('needs an event on a track message and a previousId on an alias', async () => {
    const track = await rejected([{ ...TRACK, messageId: 'no-event', event: undefined }]);
    const alias = await rejected([{ ...ALIAS, messageId: 'no-previous', previousId: undefined }]);

    expect(track).toMatchObject({ line: 1, field: 'event' });
    expect(alias).toMatchObject({ line: 1, field: 'previousId' });
  });

  it('names the nested field path of a bad property', async () => {
    const properties = { item_id: { id: 1 } };

    const error = await rejected([{ ...TRACK, messageId: 'nested', properties }]);

    expect(error).toMatchObject({ line: 1, field: 'properties.item_id', value: { id: 1 } });
  });

  it('names a line that is not JSON', async () => {
    const error = await rejected([TRACK, '{"type": "track",']);

    expect(error).toMatchObject({ line: 2, field: '(line)' });
  });

  it('rejects U+0000 and lone surrogates, which PostgreSQL cannot store', async () => {
    const nul = { note: 'a\u0000b' };
    const half = { nested: { note: 'x\ud800y' } };

    const nulError = await rejected([{ ...TRACK, messageId: 'nul', properties: nul }]);
    const halfError = await rejected([TRACK, { ...IDENTIFY, messageId: 'half', traits: half }]);

    expect(nulError).toMatchObject({ line: 1, field: 'properties.note' });
    expect(halfError).toMatchObject({ line: 2, field: 'traits.nested.note' });
  });
});
