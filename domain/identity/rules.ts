/**
 * Identity rules: per identifier type, a priority and a limit of distinct values per person, plus a
 * block list of junk values. Validated with zod wherever they enter (workflow input, activity).
 * Pure data and zod only: the workflow bundle imports this module.
 *
 * Defaults, and why:
 * - `user_id`: priority 100, at most 1 per person, for ever. A user id is the account; two accounts
 *   are two people until someone says otherwise.
 * - `email`: priority 80, at most 5 first seen within 365 days. People change and add
 *   addresses, slowly.
 * - `phone`: priority 60, at most 3 first seen within 365 days. A number is personal, but a
 *   household's landline is shared and numbers are recycled, so it ranks below an email.
 * - `anonymous_id`: priority 40, at most 5 first seen within 7 days. A cookie per browser and
 *   device; a burst beyond that in a week is a shared machine or a bot.
 * - `device_id`: priority 20, at most 10 first seen within 30 days. Lowest priority: a device is
 *   the identifier most often shared (family tablets, kiosks), so it is the first dropped from a
 *   merge.
 */
import { z } from 'zod';

export const BUILTIN_TYPES = ['user_id', 'email', 'phone', 'anonymous_id', 'device_id'] as const;
export type BuiltinType = (typeof BUILTIN_TYPES)[number];

// Strict: a misspelled key (`priorty`) is an error, not a silently kept default.
const limitRuleSchema = z.strictObject({
  /**
   * Higher wins: when a merge would breach a limit, the message's lowest-priority identifiers go.
   */
  priority: z.number().int().min(0).max(1000),
  /** Distinct values of this type one person may hold; null: no limit. */
  maxValues: z.number().int().min(1).max(1_000_000).nullable(),
  /** Only values first seen less than this many days before the message count; null: all count. */
  windowDays: z.number().positive().max(36_500).nullable(),
});

export type LimitRule = z.output<typeof limitRuleSchema>;

export const DEFAULT_LIMITS: Readonly<Record<BuiltinType, LimitRule>> = {
  user_id: { priority: 100, maxValues: 1, windowDays: null },
  email: { priority: 80, maxValues: 5, windowDays: 365 },
  phone: { priority: 60, maxValues: 3, windowDays: 365 },
  anonymous_id: { priority: 40, maxValues: 5, windowDays: 7 },
  device_id: { priority: 20, maxValues: 10, windowDays: 30 },
};

/** A built-in type's rule: any field given overrides the default. */
function builtinRule(type: BuiltinType) {
  return limitRuleSchema
    .partial()
    .default({})
    .transform((given): LimitRule => ({ ...DEFAULT_LIMITS[type], ...given }));
}

const TYPE_NAME = /^[a-z][a-z0-9_]{0,39}$/;

/**
 * A type declared in config, read from a dotted path inside the event's traits, context or
 * properties.
 */
const customTypeSchema = limitRuleSchema.extend({
  from: z.enum(['traits', 'context', 'properties']),
  path: z
    .string()
    .regex(/^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/, 'a dotted path of keys, e.g. crm.id'),
});

export type CustomType = z.output<typeof customTypeSchema>;

export const identityRulesSchema = z.strictObject({
  user_id: builtinRule('user_id'),
  email: builtinRule('email'),
  phone: builtinRule('phone'),
  anonymous_id: builtinRule('anonymous_id'),
  device_id: builtinRule('device_id'),
  custom: z
    .record(z.string(), customTypeSchema)
    .refine((types) => Object.keys(types).length <= 50, 'at most 50 custom types')
    .superRefine((types, ctx) => {
      for (const name of Object.keys(types)) {
        const problem = (BUILTIN_TYPES as readonly string[]).includes(name)
          ? 'is a built-in type; configure it under its own key'
          : TYPE_NAME.test(name)
            ? null
            : 'type names are lowercase letters, digits and underscores, 1-40 chars';
        if (problem) ctx.addIssue({ code: 'custom', path: [name], message: problem });
      }
    })
    .default({}),
  /** Values that never link anything, compared trimmed and case-insensitively, for every type. */
  // Bounded so that the rules fit in a workflow input (Temporal refuses messages over 4 MB).
  blockList: z.array(z.string().trim().min(1).max(512)).max(1000).default([]),
  /**
   * The type of an alias message's previousId. Segment allows either an anonymous id or an earlier
   * user id there; pops reads it as an anonymous id unless told otherwise.
   */
  aliasPreviousIdAs: z.enum(['anonymous_id', 'user_id']).default('anonymous_id'),
});

/** Rules as given (every field optional). */
export type IdentityRulesInput = z.input<typeof identityRulesSchema>;
/** Rules after validation, every default filled in. */
export type IdentityRules = z.output<typeof identityRulesSchema>;

/** The rule of an identifier type (built-in or custom), or undefined for an unknown type. */
export function ruleOf(rules: IdentityRules, type: string): LimitRule | undefined {
  if ((BUILTIN_TYPES as readonly string[]).includes(type)) return rules[type as BuiltinType];
  return rules.custom[type];
}

/** Every type the rules know, built-in first. */
export function typesOf(rules: IdentityRules): string[] {
  return [...BUILTIN_TYPES, ...Object.keys(rules.custom)];
}

/** Why `type` is no identifier type of the rules (naming those it knows), or null if it is one. */
export function unknownTypeProblem(rules: IdentityRules, type: string): string | null {
  const types = typesOf(rules);
  if (types.includes(type)) return null;
  return `${JSON.stringify(type)} is no identifier type of the identity rules (${types.join(', ')})`;
}

/** The same rules with every limit lifted: resolution becomes plain connected components. */
export function withoutLimits(rules: IdentityRules): IdentityRules {
  const lift = <R extends LimitRule>(rule: R): R => ({ ...rule, maxValues: null });
  return {
    ...rules,
    user_id: lift(rules.user_id),
    email: lift(rules.email),
    phone: lift(rules.phone),
    anonymous_id: lift(rules.anonymous_id),
    device_id: lift(rules.device_id),
    custom: Object.fromEntries(Object.entries(rules.custom).map(([k, v]) => [k, lift(v)])),
  };
}
