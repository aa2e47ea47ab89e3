import { describe, expect, it } from 'vitest';
import { parseOrFail } from '../common/failures.js';
import {
  identifierExtractor,
  type IdentityEventRow,
  junkFilter,
  normalizeEmail,
} from '../domain/identity/identifiers.js';
import { identityRulesSchema, withoutLimits } from '../domain/identity/rules.js';

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
        { type: 'email', value: 'ann@example.org' },
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

    expect(both.identifiers).toEqual([{ type: 'email', value: 'a@b.co' }]);
    expect(contextOnly.identifiers).toEqual([{ type: 'email', value: 'c@d.co' }]);
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

describe('email normalization', () => {
  it.each([
    ['  Alice@Example.COM ', 'alice@example.com'],
    ['first.last+tag@sub.example.co.uk', 'first.last+tag@sub.example.co.uk'],
  ])('%j becomes %j', (raw, normalized) => {
    expect(normalizeEmail(raw)).toBe(normalized);
  });

  it.each(['alice', 'alice@', '@example.com', 'alice@example', 'a b@example.com', 'a@@b.com'])(
    '%j is not an email',
    (raw) => {
      expect(normalizeEmail(raw)).toBeNull();
    },
  );
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
