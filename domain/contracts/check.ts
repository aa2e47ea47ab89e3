/**
 * Judging a message's properties by a contract. Pure: no I/O, so workflow code may import it.
 * Values are taken as JSON typed them and never converted: `"4"` is a string, not a number, and
 * `1` is not `true`. Each property yields at most one reason per rule; a value of the wrong type
 * is judged by nothing else.
 */
import type { ContractSchema, PropertySchema } from './definition.js';

/** The rules a value can break; `additionalProperties` is a property the contract denies. */
export const RULES = [
  'required',
  'type',
  'enum',
  'min',
  'max',
  'maxLength',
  'additionalProperties',
] as const;

/** One of RULES. */
export type Rule = (typeof RULES)[number];

/**
 * Why a message breaks its contract: the property's path in the message (`properties.rating`),
 * the rule, what the rule expects, and what came (the value as JSON text, cut at 80 characters,
 * or `missing`).
 */
export interface Reason {
  path: string;
  rule: Rule;
  expected: string;
  got: string;
}

/** The reasons `properties` breaks `contract`, declared properties first; [] when it keeps it. */
export function checkProperties(
  contract: ContractSchema,
  properties: Readonly<Record<string, unknown>> | null | undefined,
): Reason[] {
  const given = properties ?? {};
  const reasons: Reason[] = [];
  for (const [name, declared] of Object.entries(contract.properties)) {
    const path = `properties.${name}`;
    if (Object.hasOwn(given, name)) {
      reasons.push(...checkValue(path, declared, given[name]));
    } else if (declared.required) {
      reasons.push({ path, rule: 'required', expected: 'present', got: MISSING });
    }
  }
  if (contract.additionalProperties === 'deny') {
    for (const [name, value] of Object.entries(given)) {
      if (Object.hasOwn(contract.properties, name)) continue;
      const expected = 'no property the contract does not declare';
      reasons.push({
        path: `properties.${name}`,
        rule: 'additionalProperties',
        expected,
        got: shown(value),
      });
    }
  }
  return reasons;
}

const MISSING = 'missing';

function checkValue(path: string, declared: PropertySchema, value: unknown): Reason[] {
  if (value === null && declared.nullable) return [];
  if (!hasType(declared.type, value)) {
    return [{ path, rule: 'type', expected: declared.type, got: shown(value) }];
  }
  const reasons: Reason[] = [];
  const reason = (rule: Rule, expected: string, got = shown(value)) =>
    reasons.push({ path, rule, expected, got });
  if ('enum' in declared && declared.enum !== undefined) {
    const allowed: readonly unknown[] = declared.enum;
    if (!allowed.includes(value)) reason('enum', `one of ${allowed.map(shown).join(', ')}`);
  }
  if (typeof value === 'number' && 'min' in declared) {
    if (declared.min !== undefined && value < declared.min) reason('min', `>= ${declared.min}`);
    if (declared.max !== undefined && value > declared.max) reason('max', `<= ${declared.max}`);
  }
  if (typeof value === 'string' && 'maxLength' in declared && declared.maxLength !== undefined) {
    const length = codePoints(value);
    if (length > declared.maxLength) {
      const expected = `at most ${characters(declared.maxLength)}`;
      reason('maxLength', expected, `${shown(value)} (${characters(length)})`);
    }
  }
  return reasons;
}

function hasType(type: PropertySchema['type'], value: unknown): boolean {
  switch (type) {
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
  }
}

function characters(n: number): string {
  return n === 1 ? '1 character' : `${n} characters`;
}

function codePoints(value: string): number {
  let n = 0;
  for (const _ of value) n += 1;
  return n;
}

/** A value as JSON text, cut at 80 characters; a string shows its quotes, so `"4"` is not `4`. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? `(${typeof value})`;
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** `properties.rating (type): expected number, got "4"`. */
export function describeReason({ path, rule, expected, got }: Reason): string {
  return `${path} (${rule}): expected ${expected}, got ${got}`;
}
