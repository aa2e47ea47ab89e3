/**
 * Data contracts: the declared properties of a track event (their types, which are required, the
 * values allowed) and whether undeclared properties are allowed. Validated by zod wherever they
 * enter; pure data and zod only, so workflow code may import it.
 *
 * A version's schema (`schemaOf`) is fixed once registered: a change to it needs a new version
 * (domain/contracts/registry.ts). The rules a message is judged by are in check.ts.
 */
import { z } from 'zod';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../../common/text.js';
import { plainText } from '../retrain.js';

/** The JSON types a property may be declared with; `integer` is a number without a fraction. */
export const PROPERTY_TYPES = ['number', 'integer', 'string', 'boolean'] as const;

/** A property key as senders write it: any text but what PostgreSQL cannot store. */
const propertyKey = z
  .string()
  .min(1, { error: 'is an empty property name' })
  .max(200, { error: 'is a property name over 200 characters' })
  .refine((v) => !UNSTORABLE_TEXT.test(v), { error: UNSTORABLE_PROBLEM })
  // An object key zod would assign through the prototype's setter, dropping the declaration.
  .refine((v) => v !== '__proto__', { error: 'is not a property name pops can declare' });

const shared = {
  /** A message without it breaks the contract. */
  required: z.boolean().default(false),
  /** Whether `null` is a value; otherwise null is a value of the wrong type, like any other. */
  nullable: z.boolean().default(false),
  description: plainText(2000).optional(),
};

const unique = <T>(values: readonly T[]) => new Set(values).size === values.length;

/** `min` and `max` bound numbers, inclusive. */
function numeric<T extends 'number' | 'integer'>(type: T, value: z.ZodNumber) {
  return z
    .strictObject({
      type: z.literal(type),
      ...shared,
      enum: z
        .array(value)
        .min(1)
        .max(1000)
        .refine(unique, { error: 'has a value twice' })
        .optional(),
      min: z.number().optional(),
      max: z.number().optional(),
    })
    .refine((p) => p.min === undefined || p.max === undefined || p.min <= p.max, {
      error: 'has min above max',
      path: ['min'],
    });
}

const stringProperty = z.strictObject({
  type: z.literal('string'),
  ...shared,
  enum: z
    .array(z.string())
    .min(1)
    .max(1000)
    .refine(unique, { error: 'has a value twice' })
    .optional(),
  /** At most this many characters (Unicode code points). */
  maxLength: z.number().int().min(0).max(1_000_000).optional(),
});

const booleanProperty = z.strictObject({ type: z.literal('boolean'), ...shared });

const propertySchema = z.discriminatedUnion(
  'type',
  [
    numeric('number', z.number()),
    numeric('integer', z.number().int()),
    stringProperty,
    booleanProperty,
  ],
  { error: `is not a property: type is one of ${PROPERTY_TYPES.join(', ')}` },
);

/** The source a contract is for (events.source), as write keys and imports name them. */
const sourceName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'is not a source name (letters, digits, . _ -)');

export const contractDefinitionSchema = z.strictObject({
  /** The `event` of the track messages it governs, e.g. `rated` or `Product Viewed`. */
  event: plainText(200),
  /** Only messages written into this source; every source when left out. */
  source: sourceName.optional(),
  version: z.number().int().min(1).max(1_000_000),
  owner: plainText(200),
  description: plainText(2000).optional(),
  /** `deny`: a property the contract does not declare breaks it. */
  additionalProperties: z
    .enum(['allow', 'deny'], { error: 'is not allow or deny' })
    .default('allow'),
  properties: z
    .record(propertyKey, propertySchema, { error: 'is not a map of property names to schemas' })
    .refine((p) => Object.keys(p).length <= 500, { error: 'declares more than 500 properties' }),
});

/** A contract as declared. */
export type ContractDefinitionInput = z.input<typeof contractDefinitionSchema>;
/** A contract after validation (defaults filled in). */
export type ContractDefinition = z.output<typeof contractDefinitionSchema>;
/** One declared property. */
export type PropertySchema = z.output<typeof propertySchema>;

/** What a version fixes and messages are judged by: never who owns it. */
export interface ContractSchema {
  additionalProperties: 'allow' | 'deny';
  properties: Record<string, PropertySchema>;
}

/** The part of a definition that a version fixes. */
export function schemaOf(c: ContractDefinition): ContractSchema {
  return { additionalProperties: c.additionalProperties, properties: c.properties };
}

/** How a contract's source is shown and audited: its name, or `*` for every source. */
export function sourceLabel(source: string | null | undefined): string {
  return source ?? '*';
}
