import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseOrFail } from '../common/failures.js';
import {
  identifierExtractor,
  type IdentityEventRow,
  junkFilter,
  normalizeEmail,
  normalizePhone,
  storedValue,
} from '../domain/identity/identifiers.js';
import { identityRulesSchema, withoutLimits } from '../domain/identity/rules.js';
import { hashedValueOf } from './support.js';

const rules = identityRulesSchema.parse({});
const extract = identifierExtractor(rules);

function row(over: Partial<IdentityEventRow>): IdentityEventRow {
  return {
    id: 1,
    messageId: 'm1',
    ts: new Date('2024-01-01T00:00:00Z'),
    userId: null,
    anonymousId: null,
    previousId: null,
    traits: null,
    context: null,
    properties: null,
    ...over,
  };
}

describe('identifier extraction', () => {
  it('reads user, email, anonymous and device ids, highest priority first', () => {
    const found = extract(
      row({
        anonymousId: 'anon-1',
        userId: 'user-1',
        context: { device: { id: 'dev-1' }, ip: '203.0.113.9' },
        traits: { email: 'Ann@Example.org' },
      }),
    );

    expect(found).toEqual({
      identifiers: [
        { type: 'user_id', value: 'user-1' },
        { type: 'email', value: hashedValueOf('email', 'ann@example.org') },
        { type: 'anonymous_id', value: 'anon-1' },
        { type: 'device_id', value: 'dev-1' },
      ],
      rejected: 0,
    });
  });

  it('reads the email of a track call from context.traits, once when both places agree', () => {
    const both = extract(
      row({ traits: { email: 'a@b.co' }, context: { traits: { email: ' A@B.CO' } } }),
    );
    const contextOnly = extract(row({ context: { traits: { email: 'c@d.co' } } }));

    expect(both.identifiers).toEqual([{ type: 'email', value: hashedValueOf('email', 'a@b.co') }]);
    expect(contextOnly.identifiers).toEqual([
      { type: 'email', value: hashedValueOf('email', 'c@d.co') },
    ]);
  });

  it('reads phones from traits and context.traits, hashed, below emails', () => {
    const found = extract(
      row({
        anonymousId: 'a',
        traits: { phone: '+44 (20) 7946-0958', email: 'p@q.io' },
        context: { traits: { phone: 442079460958 } },
      }),
    );

    expect(found).toEqual({
      identifiers: [
        { type: 'email', value: hashedValueOf('email', 'p@q.io') },
        { type: 'phone', value: hashedValueOf('phone', '+442079460958') },
        { type: 'phone', value: hashedValueOf('phone', '442079460958') },
        { type: 'anonymous_id', value: 'a' },
      ],
      rejected: 0,
    });
  });

  it('takes values hashed at ingestion as they are, and blocks them by their hash', () => {
    const hashed = hashedValueOf('email', 'shared@example.com');
    const blocking = identifierExtractor(
      identityRulesSchema.parse({ blockList: ['Shared@Example.com'] }),
    );

    expect(extract(row({ traits: { email: hashed } })).identifiers).toEqual([
      { type: 'email', value: hashed },
    ]);
    expect(blocking(row({ traits: { email: hashed } }))).toEqual({ identifiers: [], rejected: 1 });
    expect(blocking(row({ traits: { email: 'shared@example.com' } }))).toEqual({
      identifiers: [],
      rejected: 1,
    });
    expect(extract(row({ traits: { email: '[invalid]' } }))).toEqual({
      identifiers: [],
      rejected: 1,
    });
  });

  it('types an alias previousId as anonymous_id, or as user_id when configured', () => {
    const alias = row({ userId: 'u1', previousId: 'before' });
    const asUser = identifierExtractor(identityRulesSchema.parse({ aliasPreviousIdAs: 'user_id' }));

    expect(extract(alias).identifiers).toEqual([
      { type: 'user_id', value: 'u1' },
      { type: 'anonymous_id', value: 'before' },
    ]);
    expect(asUser(alias).identifiers).toEqual([
      { type: 'user_id', value: 'u1' },
      { type: 'user_id', value: 'before' },
    ]);
  });

  it('trims values, keeps the case of ids and reads numeric device ids as text', () => {
    const found = extract(row({ userId: '  User-7 ', context: { device: { id: 42 } } }));

    expect(found.identifiers).toEqual([
      { type: 'user_id', value: 'User-7' },
      { type: 'device_id', value: '42' },
    ]);
  });

  it('rejects junk, invalid emails, non-scalar and over-long values, counting them', () => {
    const found = extract(
      row({
        userId: 'GUEST',
        anonymousId: ' NaN ',
        traits: { email: 'not-an-email' },
        context: { device: { id: { nested: true } }, traits: { email: 'x'.repeat(600) + '@a.co' } },
      }),
    );

    expect(found).toEqual({ identifiers: [], rejected: 5 });
  });

  it('reads custom types from their configured path', () => {
    const custom = identifierExtractor(
      identityRulesSchema.parse({
        custom: {
          crm_id: { from: 'traits', path: 'crm.id', priority: 90, maxValues: 1, windowDays: null },
        },
      }),
    );

    const found = custom(row({ anonymousId: 'a', traits: { crm: { id: 'C-1' } } }));

    expect(found.identifiers).toEqual([
      { type: 'crm_id', value: 'C-1' },
      { type: 'anonymous_id', value: 'a' },
    ]);
  });
});

describe('junk values', () => {
  const isJunk = junkFilter(['test-device', 'Shared-Kiosk']);

  it.each([
    '',
    '  ',
    'null',
    'NULL',
    'undefined',
    'None',
    'nan',
    '0',
    '-1',
    'anonymous',
    'Guest',
    '[object Object]',
    '00000000-0000-0000-0000-000000000000',
    '00000000000000000000000000000000',
    '{00000000-0000-0000-0000-000000000000}',
    'TEST-DEVICE',
    'shared-kiosk',
  ])('%j is junk', (value) => {
    expect(isJunk(value)).toBe(true);
  });

  it.each(['u1', '00', '1', 'guest-42', '00000000-0000-0000-0000-000000000001', 'nullable'])(
    '%j is an identifier',
    (value) => {
      expect(isJunk(value)).toBe(false);
    },
  );
});

describe('phone normalization', () => {
  it.each([
    ['+1 (415) 555-0100', '+14155550100'],
    ['0044 20 7946 0958', '+442079460958'],
    [' 415.555.0100 ', '4155550100'],
    ['5550100', '5550100'],
    ['(415) 555-0109', '4155550109'],
  ])('%j becomes %j', (raw, normalized) => {
    expect(normalizePhone(raw)).toBe(normalized);
  });

  it.each(['555-010', '+1234567890123456', '0000000000', 'call 4155550100', '415-555-0100 x2', ''])(
    '%j is not a phone number',
    (raw) => {
      expect(normalizePhone(raw)).toBeNull();
    },
  );
});

describe('stored values', () => {
  it('hashes emails and phones with HMAC-SHA256 as python does, other types in clear', () => {
    const key = process.env['POPS_PII_HMAC_KEY'] ?? '';
    const oracle = execFileSync('python3', [
      '-c',
      'import hmac,hashlib,sys; k=bytes.fromhex(sys.argv[1]);' +
        ' print(hmac.new(k, b"email\\x00ann@example.org", hashlib.sha256).hexdigest())',
      key,
    ])
      .toString()
      .trim();

    expect(storedValue('email', ' Ann@Example.ORG ')).toBe(`h1:${oracle}`);
    expect(storedValue('email', `h1:${oracle}`)).toBe(`h1:${oracle}`);
    expect(storedValue('email', 'nope')).toBeNull();
    expect(storedValue('user_id', ' u1 ')).toBe('u1');
  });
});

describe('email normalization', () => {
  it.each([
    ['  Alice@Example.COM ', 'alice@example.com'],
    ['first.last+tag@sub.example.co.uk', 'first.last+tag@sub.example.co.uk'],
    // NFD (U followed by a combining diaeresis) is stored as NFC.
    ['J\u0055\u0308rgen@Example.de', 'j\u00fcrgen@example.de'],
  ])('%j becomes %j', (raw, normalized) => {
    expect(normalizeEmail(raw)).toBe(normalized);
  });

  it.each([
    'alice',
    'alice@',
    '@example.com',
    'alice@example',
    'a b@example.com',
    'a@@b.com',
    'a\u0000b@x.io',
  ])('%j is not an email', (raw) => {
    expect(normalizeEmail(raw)).toBeNull();
  });
});

describe('identity rules', () => {
  it('has the documented defaults', () => {
    expect(rules).toMatchObject({
      user_id: { priority: 100, maxValues: 1, windowDays: null },
      email: { priority: 80, maxValues: 5, windowDays: 365 },
      anonymous_id: { priority: 40, maxValues: 5, windowDays: 7 },
      device_id: { priority: 20, maxValues: 10, windowDays: 30 },
      custom: {},
      blockList: [],
      aliasPreviousIdAs: 'anonymous_id',
    });
  });

  it('overrides one field of a built-in type and keeps the others', () => {
    const parsed = identityRulesSchema.parse({ email: { maxValues: 2 } });

    expect(parsed.email).toEqual({ priority: 80, maxValues: 2, windowDays: 365 });
    expect(identityRulesSchema.parse(parsed)).toEqual(parsed);
  });

  it('names the field and value of a bad rule', () => {
    const bad = () =>
      parseOrFail(identityRulesSchema, { device_id: { maxValues: 0 } }, 'identity rules');

    expect(bad).toThrow(/device_id\.maxValues: .*\(got 0\)/);
  });

  it('refuses a custom type named like a built-in one', () => {
    const rule = { from: 'traits', path: 'x', priority: 1, maxValues: null, windowDays: null };

    const parse = (custom: object) => () => parseOrFail(identityRulesSchema, { custom }, 'rules');

    expect(parse({ email: rule })).toThrow(/custom\.email: is a built-in type/);
    expect(parse({ 'Bad Name': rule })).toThrow(/custom\.Bad Name: type names are lowercase/);
  });

  it('lifts every limit, keeping priorities', () => {
    const lifted = withoutLimits(rules);

    expect(lifted.user_id).toEqual({ priority: 100, maxValues: null, windowDays: null });
    expect(lifted.device_id.maxValues).toBeNull();
  });
});
