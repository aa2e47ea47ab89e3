/**
 * Consent carried by Segment `identify` messages: a mapping from each purpose to the paths in the
 * message that may hold the person's choice (`POPS_CONSENT_TRAITS`, JSON; the default below reads
 * `traits.consent.<purpose>` and Segment's consent object
 * `context.consent.categoryPreferences.<purpose>`). A value is a choice when it is a boolean or one
 * of the words below; anything else (absent, a number, an object) says nothing and is ignored.
 */
import { z } from 'zod';
import { describeZodError, InputError } from '../../common/failures.js';
import { CONSENT_PURPOSES, type ConsentPurpose } from './consent.js';

export type ConsentTraitMap = Readonly<Record<ConsentPurpose, readonly string[]>>;

export const DEFAULT_CONSENT_TRAITS: ConsentTraitMap = {
  personalization: [
    'traits.consent.personalization',
    'context.consent.categoryPreferences.personalization',
  ],
  marketing: ['traits.consent.marketing', 'context.consent.categoryPreferences.marketing'],
  analytics: ['traits.consent.analytics', 'context.consent.categoryPreferences.analytics'],
};

const pathSchema = z
  .string()
  .regex(
    /^(traits|context|properties)(\.[A-Za-z0-9_$-]{1,64}){1,8}$/,
    'a dotted path under traits, context or properties',
  );

/** The JSON of POPS_CONSENT_TRAITS: purposes to lists of paths; a purpose left out keeps none. */
export const consentTraitMapSchema = z
  .strictObject({
    personalization: z.array(pathSchema).max(10).optional(),
    marketing: z.array(pathSchema).max(10).optional(),
    analytics: z.array(pathSchema).max(10).optional(),
  })
  .transform((m) => ({
    personalization: m.personalization ?? [],
    marketing: m.marketing ?? [],
    analytics: m.analytics ?? [],
  }));

const GRANTED = new Set(['true', 'yes', 'granted', 'opt-in', 'opted-in', 'allow', 'allowed']);
const DENIED = new Set(['false', 'no', 'denied', 'opt-out', 'opted-out', 'deny', 'revoked']);

function asChoice(value: unknown): boolean | undefined {
  if (typeof value === 'boolean') return value;
  if (typeof value !== 'string') return undefined;
  const word = value.trim().toLowerCase();
  if (GRANTED.has(word)) return true;
  if (DENIED.has(word)) return false;
  return undefined;
}

function at(message: Record<string, unknown>, path: string): unknown {
  let current: unknown = message;
  for (const key of path.split('.')) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/**
 * The choices a message states, per purpose: the first of the purpose's paths that holds a choice.
 */
export function consentChoices(
  message: Record<string, unknown>,
  mapping: ConsentTraitMap = DEFAULT_CONSENT_TRAITS,
): Array<{ purpose: ConsentPurpose; granted: boolean }> {
  const choices: Array<{ purpose: ConsentPurpose; granted: boolean }> = [];
  for (const purpose of CONSENT_PURPOSES) {
    for (const path of mapping[purpose]) {
      const granted = asChoice(at(message, path));
      if (granted === undefined) continue;
      choices.push({ purpose, granted });
      break;
    }
  }
  return choices;
}

/** Parses POPS_CONSENT_TRAITS (unset: the default); the error names the variable and the field. */
export function consentTraitsFromEnv(text: string | undefined): ConsentTraitMap {
  if (text === undefined) return DEFAULT_CONSENT_TRAITS;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new InputError('POPS_CONSENT_TRAITS: is not JSON ({"marketing": ["traits.x"], ...})');
  }
  const parsed = consentTraitMapSchema.safeParse(json);
  if (!parsed.success) {
    throw new InputError(`POPS_CONSENT_TRAITS: ${describeZodError(parsed.error, json)}`);
  }
  return parsed.data;
}
