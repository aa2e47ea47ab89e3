import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../api/server.js';
import { describeZodError } from '../common/failures.js';
import { logger } from '../common/logger.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { checkProperties, type Reason } from '../domain/contracts/check.js';
import {
  type ContractDefinitionInput,
  contractDefinitionSchema,
  schemaOf,
} from '../domain/contracts/definition.js';
import { loadContractFile } from '../domain/contracts/file.js';
import { quarantineCounts } from '../domain/contracts/quarantine.js';
import { activeContracts, listContracts, registerContracts } from '../domain/contracts/registry.js';
import { importEvents } from '../ingest/events.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { popsRunner } from './cli-support.js';
import {
  createTestDatabase,
  testQueuePrefix,
  testTemporalClient,
  type TestDatabase,
} from './support.js';

const EXAMPLE = path.join(import.meta.dirname, '../config/contracts.example.yaml');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-contracts-'));
let files = 0;

let db: TestDatabase;
// The command line gets a database of its own, so its counts start from nothing.
let cliDb: TestDatabase;
let client: Client;
let api: ReturnType<typeof buildApi>;
let base: string;
let webKey: string;
let appKey: string;
const pops = popsRunner(() => ({ DATABASE_URL: cliDb.url, POPS_ACTOR: 'contract-tester' }));

beforeAll(async () => {
  db = await createTestDatabase('contracts');
  cliDb = await createTestDatabase('contracts-cli');
  client = await testTemporalClient();
  api = buildApi({
    pool: db.pool,
    temporal: client,
    queuePrefix: testQueuePrefix('contracts'),
    log: logger('silent'),
    actor: 'api-test',
  });
  base = await api.listen({ host: '127.0.0.1', port: 0 });
  webKey = (await createWriteKey(db.pool, 'web', 'tester')).key;
  appKey = (await createWriteKey(db.pool, 'app', 'tester')).key;
});

afterAll(async () => {
  await api.close();
  await client.connection.close();
  await db.close();
  await cliDb.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const rated: ContractDefinitionInput = {
  event: 'rated',
  version: 1,
  owner: 'ml',
  properties: { rating: { type: 'number', required: true, min: 0.5, max: 5 } },
};

const viewed: ContractDefinitionInput = {
  event: 'Product Viewed',
  version: 1,
  owner: 'web',
  additionalProperties: 'deny',
  properties: {
    item_id: { type: 'string', required: true, maxLength: 8 },
    price: { type: 'number', min: 0 },
    currency: { type: 'string', enum: ['EUR', 'USD'] },
    quantity: { type: 'integer', min: 1 },
    gift: { type: 'boolean', nullable: true },
  },
};

function writeFile(name: string, text: string): string {
  files += 1;
  const file = path.join(tmp, `${files}-${name}`);
  fs.writeFileSync(file, text);
  return file;
}

function problem(input: unknown): string {
  const result = contractDefinitionSchema.safeParse(input);
  return result.success ? 'ok' : describeZodError(result.error, input);
}

const type = (p: string, expected: string, got: string): Reason => ({
  path: `properties.${p}`,
  rule: 'type',
  expected,
  got,
});

describe('checking properties against a contract', () => {
  const contract = schemaOf(contractDefinitionSchema.parse(viewed));

  it('passes a message that keeps it, and never converts a value', () => {
    expect(checkProperties(contract, { item_id: 'sku-1', price: 0, quantity: 3 })).toEqual([]);
    expect(checkProperties(contract, { item_id: 'sku-1', gift: null })).toEqual([]);
    expect(checkProperties(contract, { item_id: 7 })).toEqual([type('item_id', 'string', '7')]);
    expect(checkProperties(contract, { item_id: 'a', price: '4' })).toEqual([
      type('price', 'number', '"4"'),
    ]);
    expect(checkProperties(contract, { item_id: 'a', quantity: 1.5, gift: 'true' })).toEqual([
      type('quantity', 'integer', '1.5'),
      type('gift', 'boolean', '"true"'),
    ]);
    expect(checkProperties(contract, { item_id: 'a', price: null, gift: 1 })).toEqual([
      type('price', 'number', 'null'),
      type('gift', 'boolean', '1'),
    ]);
  });

  it('names the rule, what it expects and what came', () => {
    expect(
      checkProperties(contract, {
        price: -1,
        currency: 'eur',
        quantity: 0,
        colour: { r: 1 },
      }),
    ).toEqual([
      { path: 'properties.item_id', rule: 'required', expected: 'present', got: 'missing' },
      { path: 'properties.price', rule: 'min', expected: '>= 0', got: '-1' },
      { path: 'properties.currency', rule: 'enum', expected: 'one of "EUR", "USD"', got: '"eur"' },
      { path: 'properties.quantity', rule: 'min', expected: '>= 1', got: '0' },
      {
        path: 'properties.colour',
        rule: 'additionalProperties',
        expected: 'no property the contract does not declare',
        got: '{"r":1}',
      },
    ]);
    expect(checkProperties(contract, { item_id: 'sku-123456' })).toEqual([
      {
        path: 'properties.item_id',
        rule: 'maxLength',
        expected: 'at most 8 characters',
        got: '"sku-123456" (10 characters)',
      },
    ]);
    // Characters are code points: eight emoji are eight characters, not sixteen.
    expect(checkProperties(contract, { item_id: '😀'.repeat(8) })).toEqual([]);
    const allowing = schemaOf(contractDefinitionSchema.parse(rated));
    expect(checkProperties(allowing, { rating: 5, item_id: 3 })).toEqual([]);
    expect(checkProperties(allowing, undefined)).toEqual([
      { path: 'properties.rating', rule: 'required', expected: 'present', got: 'missing' },
    ]);
  });
});

describe('contract definitions', () => {
  it('refuse what cannot be checked, naming the field and the value', () => {
    const property = (p: unknown) => problem({ ...rated, properties: { rating: p } });
    expect(property({ type: 'float' })).toBe(
      'properties.rating.type: is not a property: type is one of number, integer, string,' +
        ' boolean (got "float")',
    );
    expect(property({ type: 'number', maxLength: 3 })).toContain(
      'properties.rating: Unrecognized key: "maxLength"',
    );
    expect(property({ type: 'number', min: 5, max: 1 })).toBe(
      'properties.rating.min: has min above max (got 5)',
    );
    expect(property({ type: 'string', enum: ['a', 'a'] })).toBe(
      'properties.rating.enum: has a value twice (got ["a","a"])',
    );
    expect(property({ type: 'integer', enum: [1, 1.5] })).toContain('properties.rating.enum.1: ');
    expect(property({ type: 'number', required: 'yes' })).toContain(
      'properties.rating.required: Invalid input: expected boolean, received string (got "yes")',
    );
    expect(problem({ ...rated, additionalProperties: 'forbid' })).toBe(
      'additionalProperties: is not allow or deny (got "forbid")',
    );
    expect(problem({ ...rated, source: 'a source' })).toContain('source: is not a source name');
    expect(problem({ ...rated, colour: 'red' })).toContain('Unrecognized key: "colour"');
    expect(problem({ ...rated, owner: undefined })).toContain('owner: ');
  });

  it('load from YAML; an error names the file, the index, the event and the field', () => {
    expect(loadContractFile(EXAMPLE)).toEqual([
      contractDefinitionSchema.parse({
        ...rated,
        owner: 'ml-platform',
        description: "A person's rating of an item, on MovieLens's scale of half stars.",
        additionalProperties: 'allow',
      }),
    ]);
    const bad = writeFile(
      'bad.yaml',
      'contracts:\n  - event: rated\n    version: 1\n    owner: ml\n' +
        '    properties: { rating: { type: num } }\n',
    );
    expect(() => loadContractFile(bad)).toThrow(
      `${bad}: contracts[0] (rated): properties.rating.type: is not a property: type is one of` +
        ' number, integer, string, boolean (got "num")',
    );
    const twice = writeFile(
      'twice.yaml',
      `contracts:\n  - ${JSON.stringify(rated)}\n  - ${JSON.stringify(rated)}\n`,
    );
    expect(() => loadContractFile(twice)).toThrow(
      `${twice}: contracts[1] (rated): rated (source *) version 1 is declared twice`,
    );
    expect(() => loadContractFile(writeFile('top.yaml', 'contract: []\n'))).toThrow(
      'Unrecognized key: "contract"',
    );
    expect(() => loadContractFile(writeFile('yaml.yaml', 'contracts: [\n'))).toThrow(
      'cannot read it as YAML',
    );
  });
});

describe('the contract registry', () => {
  it('registers idempotently, audits changes, refuses a new schema under a version', async () => {
    const v1 = contractDefinitionSchema.parse(rated);
    const created = { event: 'rated', source: null, version: 1, registration: 'created' };
    expect(await registerContracts(db.pool, [v1], 'ann')).toEqual([created]);
    expect(await registerContracts(db.pool, [v1], 'ann')).toEqual([
      { ...created, registration: 'unchanged' },
    ]);
    const owned = contractDefinitionSchema.parse({ ...rated, owner: 'growth' });
    expect((await registerContracts(db.pool, [owned], 'bob'))[0]?.registration).toBe('updated');

    const changed = contractDefinitionSchema.parse({ ...rated, additionalProperties: 'deny' });
    await expect(registerContracts(db.pool, [changed], 'bob')).rejects.toThrow(
      'contract rated (source *) version 1 is registered with another schema; a changed schema' +
        ' needs a new version (declare version 2)',
    );
    const trail = await auditTrail(db.pool, { subject: 'contract/rated/*/1' });
    expect(trail.map((r) => [r.action, r.actor])).toEqual([
      ['contract.created', 'ann'],
      ['contract.updated', 'bob'],
    ]);
    expect(trail[0]?.inputs).toMatchObject({ contract: { event: 'rated', version: 1 } });
  });

  it('registers a file all or nothing', async () => {
    const fresh = contractDefinitionSchema.parse({ ...rated, event: 'fresh' });
    const conflicting = contractDefinitionSchema.parse({ ...rated, properties: {} });
    await expect(registerContracts(db.pool, [fresh, conflicting], 'ann')).rejects.toThrow(
      'another schema',
    );
    expect((await listContracts(db.pool)).map((c) => c.event)).toEqual(['rated']);
  });

  it("judges by the source's own contract, else every source's, the latest version", async () => {
    await registerContracts(
      db.pool,
      [
        contractDefinitionSchema.parse(viewed),
        contractDefinitionSchema.parse({ ...viewed, version: 2, additionalProperties: 'allow' }),
        contractDefinitionSchema.parse({
          ...viewed,
          source: 'app',
          additionalProperties: 'allow',
          properties: {},
        }),
      ],
      'ann',
    );
    const web = await activeContracts(db.pool, 'web');
    expect([...web.values()].map((c) => [c.event, c.source, c.version])).toEqual([
      ['Product Viewed', null, 2],
      ['rated', null, 1],
    ]);
    const app = await activeContracts(db.pool, 'app', ['Product Viewed', 'Signed In']);
    expect([...app.values()].map((c) => [c.event, c.source, c.version])).toEqual([
      ['Product Viewed', 'app', 1],
    ]);
    expect(await activeContracts(db.pool, 'web', [])).toEqual(new Map());
    // Back to the deny contract for the ingestion tests below.
    await registerContracts(
      db.pool,
      [contractDefinitionSchema.parse({ ...viewed, version: 3 })],
      'ann',
    );
  });
});

interface Answer {
  status: number;
  body: { success?: boolean; quarantined?: number; error?: { message: string } };
}

async function post(route: string, body: unknown, key = webKey): Promise<Answer> {
  const response = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}`,
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Answer['body'] };
}

async function stored(prefix: string) {
  const { rows } = await db.pool.query<{ message_id: string; properties: unknown }>(
    `select message_id, properties from events where message_id like $1 || '%' order by id`,
    [prefix],
  );
  return rows;
}

async function quarantined(prefix: string) {
  const { rows } = await db.pool.query<{
    message_id: string;
    source: string;
    event: string;
    version: number;
    reasons: Reason[];
    message: Record<string, unknown>;
  }>(
    `select q.message_id, q.source, q.event, c.version, q.reasons, q.message
       from quarantined_events q join event_contracts c on c.id = q.contract_id
      where q.message_id like $1 || '%' order by q.id`,
    [prefix],
  );
  return rows;
}

const track = (messageId: string, event: string, properties: Record<string, unknown>) => ({
  type: 'track',
  messageId,
  userId: 'u-1',
  event,
  properties,
});

describe('Segment ingestion under contracts', () => {
  const batch = [
    track('h-good-rating', 'rated', { rating: 4.5, item_id: 'm-1' }),
    track('h-string-rating', 'rated', { rating: '4', item_id: 'm-2' }),
    track('h-missing-rating', 'rated', { item_id: 'm-3' }),
    track('h-high-rating', 'rated', { rating: 7 }),
    track('h-good-view', 'Product Viewed', { item_id: 'sku-1', currency: 'EUR', gift: null }),
    track('h-unknown-property', 'Product Viewed', { item_id: 'sku-2', colour: 'red' }),
    track('h-wrong-enum', 'Product Viewed', { item_id: 'sku-3', currency: 'eur' }),
    track('h-no-contract', 'Signed In', { rating: 'whatever' }),
    { type: 'identify', messageId: 'h-identify', userId: 'u-1', traits: { rating: 'x' } },
  ];

  it('quarantines a malformed message with its reason, stores the good, answers 200', async () => {
    const answer = await post('/v1/batch', { batch, context: { app: { name: 'web' } } });

    expect(answer).toEqual({ status: 200, body: { success: true, quarantined: 5 } });
    expect(await stored('h-')).toEqual([
      { message_id: 'h-good-rating', properties: { rating: 4.5, item_id: 'm-1' } },
      {
        message_id: 'h-good-view',
        properties: { item_id: 'sku-1', currency: 'EUR', gift: null },
      },
      { message_id: 'h-no-contract', properties: { rating: 'whatever' } },
      { message_id: 'h-identify', properties: {} },
    ]);
    const kept = await quarantined('h-');
    expect(kept.map((q) => [q.message_id, q.source, q.event, q.version, q.reasons])).toEqual([
      ['h-string-rating', 'web', 'rated', 1, [type('rating', 'number', '"4"')]],
      [
        'h-missing-rating',
        'web',
        'rated',
        1,
        [{ path: 'properties.rating', rule: 'required', expected: 'present', got: 'missing' }],
      ],
      [
        'h-high-rating',
        'web',
        'rated',
        1,
        [{ path: 'properties.rating', rule: 'max', expected: '<= 5', got: '7' }],
      ],
      [
        'h-unknown-property',
        'web',
        'Product Viewed',
        3,
        [
          {
            path: 'properties.colour',
            rule: 'additionalProperties',
            expected: 'no property the contract does not declare',
            got: '"red"',
          },
        ],
      ],
      [
        'h-wrong-enum',
        'web',
        'Product Viewed',
        3,
        [
          {
            path: 'properties.currency',
            rule: 'enum',
            expected: 'one of "EUR", "USD"',
            got: '"eur"',
          },
        ],
      ],
    ]);
    // The message as the sender sent it, the batch context merged in; the "4" is still a string.
    expect(kept[0]?.message).toEqual({ ...batch[1], context: { app: { name: 'web' } } });
  });

  it('counts the quarantine by event and reason, and a resent batch adds nothing', async () => {
    const again = await post('/v1/batch', { batch });
    expect(again).toEqual({ status: 200, body: { success: true, quarantined: 5 } });
    expect(await stored('h-')).toHaveLength(4);
    expect(await quarantined('h-')).toHaveLength(5);

    const counts = await quarantineCounts(db.pool);
    expect(counts.byEvent.map((e) => [e.event, e.messages])).toEqual([
      ['rated', 3],
      ['Product Viewed', 2],
    ]);
    expect(counts.byReason.map((r) => [r.event, r.path, r.rule, r.messages])).toEqual([
      ['Product Viewed', 'properties.colour', 'additionalProperties', 1],
      ['Product Viewed', 'properties.currency', 'enum', 1],
      ['rated', 'properties.rating', 'max', 1],
      ['rated', 'properties.rating', 'required', 1],
      ['rated', 'properties.rating', 'type', 1],
    ]);
    const rated = await quarantineCounts(db.pool, 'rated');
    expect(rated.byEvent).toHaveLength(1);
    expect(rated.byReason).toHaveLength(3);
  });

  it("drops a broken resend of a stored message, and judges by the source's contract", async () => {
    // Stored above when it kept the contract; a resend that breaks it is a duplicate, dropped.
    const dup = await post('/v1/track', track('h-good-rating', 'rated', { rating: 'five' }));
    expect(dup).toEqual({ status: 200, body: { success: true, quarantined: 0 } });
    expect(await quarantined('h-good-rating')).toEqual([]);

    // The app source has its own Product Viewed contract, which declares nothing and allows all.
    const app = await post(
      '/v1/track',
      track('h-app-view', 'Product Viewed', { colour: 'red' }),
      appKey,
    );
    expect(app).toEqual({ status: 200, body: { success: true, quarantined: 0 } });
    expect(await stored('h-app-view')).toHaveLength(1);

    const single = await post('/v1/track', track('h-single', 'rated', { rating: 0 }));
    expect(single).toEqual({ status: 200, body: { success: true, quarantined: 1 } });
    expect((await quarantined('h-single'))[0]?.reasons).toEqual([
      { path: 'properties.rating', rule: 'min', expected: '>= 0.5', got: '0' },
    ]);
    expect(await verifyAudit(db.pool)).toMatchObject({ ok: true });
  });
});

describe('importing events under contracts', () => {
  const lines = [
    { ...track('f-good', 'rated', { rating: 3 }), timestamp: '2024-01-01T00:00:00Z' },
    { ...track('f-string', 'rated', { rating: '3' }), timestamp: '2024-01-01T00:00:01Z' },
    { ...track('f-none', 'rated', {}), timestamp: '2024-01-01T00:00:02Z', extra: 'kept' },
    { ...track('f-free', 'Signed In', { any: 'thing' }), timestamp: '2024-01-01T00:00:03Z' },
  ];

  it('quarantines in the same transaction, and a re-import adds nothing', async () => {
    const file = writeFile('events.ndjson', `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);

    const result = await importEvents(db.pool, file, { source: 'files' });

    expect(result).toMatchObject({ source: 'files', read: 4, inserted: 2, quarantined: 2 });
    expect(result.quarantineReasons).toEqual([
      {
        event: 'rated',
        path: 'properties.rating',
        rule: 'required',
        expected: 'present',
        messages: 1,
      },
      { event: 'rated', path: 'properties.rating', rule: 'type', expected: 'number', messages: 1 },
    ]);
    expect((await stored('f-')).map((r) => r.message_id)).toEqual(['f-good', 'f-free']);
    const kept = await quarantined('f-');
    expect(kept.map((q) => [q.message_id, q.source, q.reasons.map((r) => r.rule)])).toEqual([
      ['f-string', 'files', ['type']],
      ['f-none', 'files', ['required']],
    ]);
    // Whole, as read: even a field the message check does not know.
    expect(kept[1]?.message).toEqual(lines[2]);

    const again = await importEvents(db.pool, file, { source: 'files' });
    expect(again).toMatchObject({ read: 4, inserted: 0, quarantined: 2 });
    expect(await quarantined('f-')).toHaveLength(2);
  });

  it('keeps the message as checked when its unchecked fields cannot be stored', async () => {
    const line =
      '{"type":"track","messageId":"f-nul","userId":"u-1","event":"rated",' +
      '"timestamp":"2024-01-01T00:00:00Z","properties":{"rating":"x"},"junk":"\\u0000"}';
    const result = await importEvents(db.pool, writeFile('nul.ndjson', `${line}\n`), {
      source: 'files',
    });
    expect(result).toMatchObject({ read: 1, inserted: 0, quarantined: 1 });
    const kept = await quarantined('f-nul');
    expect(kept[0]?.message).toEqual({
      type: 'track',
      messageId: 'f-nul',
      userId: 'u-1',
      event: 'rated',
      timestamp: '2024-01-01T00:00:00Z',
      properties: { rating: 'x' },
    });
  });

  it('is rolled back whole when a line is bad, quarantine included', async () => {
    const bad = {
      ...track('f-rolled', 'rated', { rating: 'x' }),
      timestamp: '2024-01-01T00:00:00Z',
    };
    const file = writeFile('bad.ndjson', `${JSON.stringify(bad)}\n{"type":"track"}\n`);
    await expect(importEvents(db.pool, file, { source: 'files' })).rejects.toThrow('line 2');
    expect(await quarantined('f-rolled')).toEqual([]);
  });
});

describe('the command line', () => {
  it('registers contracts, imports under them, and lists the quarantine', async () => {
    const registered = await pops(['contracts', 'register', EXAMPLE, '--json']);
    expect(registered.code).toBe(0);
    expect(JSON.parse(registered.stdout)).toEqual({
      contracts: [{ event: 'rated', source: null, version: 1, registration: 'created' }],
    });
    const again = await pops(['contracts', 'register', EXAMPLE]);
    expect(again.stdout).toBe('rated (source *) version 1: unchanged\n');

    const file = writeFile(
      'cli.ndjson',
      [
        { ...track('c-good', 'rated', { rating: 0.5 }), timestamp: '2024-01-01T00:00:00Z' },
        { ...track('c-bad', 'rated', { rating: '4' }), timestamp: '2024-01-01T00:00:01Z' },
        { ...track('c-low', 'rated', { rating: 0.4 }), timestamp: '2024-01-01T00:00:02Z' },
      ]
        .map((l) => JSON.stringify(l))
        .join('\n'),
    );
    const imported = await pops(['import', 'events', file, '--source', 'cli']);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('read 3 events, 1 new (into source "cli"), 0 already stored');
    expect(imported.stdout).toContain(
      "2 broke their event's contract and are quarantined, not stored (pops quarantine list):\n" +
        '  1 × rated: properties.rating (min): expected >= 0.5\n' +
        '  1 × rated: properties.rating (type): expected number\n',
    );

    const listed = await pops(['quarantine', 'list', '--json']);
    expect(listed.code).toBe(0);
    const quarantine = JSON.parse(listed.stdout) as {
      byEvent: Array<{ event: string; messages: number }>;
      byReason: Array<{ rule: string; messages: number }>;
      recent: Array<{ messageId: string; message: unknown }>;
    };
    expect(quarantine.byEvent).toMatchObject([{ event: 'rated', messages: 2 }]);
    expect(quarantine.byReason.map((r) => [r.rule, r.messages])).toEqual([
      ['min', 1],
      ['type', 1],
    ]);
    expect(quarantine.recent.map((r) => r.messageId).sort()).toEqual(['c-bad', 'c-low']);

    const human = await pops(['quarantine', 'list', '--event', 'rated', '--limit', '1']);
    expect(human.stdout).toContain('latest 1:');
    expect(human.stdout).toMatch(/properties\.rating \((min|type)\): expected/);
    const none = await pops(['quarantine', 'list', '--event', 'Signed In']);
    expect(none.stdout).toBe('nothing quarantined for event "Signed In"\n');

    const contracts = await pops(['contracts', 'list']);
    expect(contracts.stdout).toMatch(/rated\s+\*\s+1\s+1\s+rating\s+allow\s+ml-platform\s+2/);
  });

  it('refuses a bad contract file or option, naming the field and the value (exit 2)', async () => {
    const bad = writeFile(
      'cli-bad.yaml',
      'contracts:\n  - {event: rated, version: 1, owner: ml, additionalProperties: never,' +
        ' properties: {}}\n',
    );
    const refused = await pops(['contracts', 'register', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      'contracts[0] (rated): additionalProperties: is not allow or deny (got "never")',
    );
    const limit = await pops(['quarantine', 'list', '--limit', 'lots']);
    expect(limit.code).toBe(2);
    expect(limit.stderr).toContain('limit: is not a number of rows (1-9999) (got "lots")');
    const missing = await pops(['contracts', 'register', path.join(tmp, 'nope.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file or directory');
  });
});
