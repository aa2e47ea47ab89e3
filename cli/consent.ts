/**
 * `pops consent show|set|defaults|set-default`: a person's consent per purpose, read and recorded
 * from the command line as PUT/GET /v1/consent do over HTTP (domain/privacy/consent.ts): the state
 * the latest event over all their merged identifiers says (else the purpose's default), the
 * history, and a change recorded once for all its purposes. The history is the record of changes,
 * with the actor (the token's name under POPS_TOKEN, else POPS_ACTOR); a change of a default is
 * audited.
 */
import { z } from 'zod';
import {
  changeConsentDefault,
  CONSENT_PURPOSES,
  consentAtSchema,
  consentDefaults,
  ConsentInputError,
  consentOf,
  type ConsentPurpose,
  recordConsentChoices,
  consentSourceSchema,
} from '../domain/privacy/consent.js';
import { identifierHashes, tombstonesAmong } from '../domain/privacy/tombstones.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { identifierArg, refuseUnknownType } from './privacy.js';
import { openDatabase } from './runtime.js';

const PURPOSES = CONSENT_PURPOSES.join(', ');

/** `a,b` → the purposes named, each one of CONSENT_PURPOSES (the unknown ones are named). */
const purposeList = z.string().transform((text, ctx) => {
  const named = text.split(',').map((p) => p.trim());
  const unknown = named.filter((p) => !(CONSENT_PURPOSES as readonly string[]).includes(p));
  if (unknown.includes('')) {
    ctx.addIssue({
      code: 'custom',
      message: `an empty purpose (a stray comma?); give ${PURPOSES}`,
    });
  } else if (unknown.length > 0) {
    const shown = unknown.map((p) => JSON.stringify(p.length > 40 ? `${p.slice(0, 40)}…` : p));
    ctx.addIssue({
      code: 'custom',
      message: `no such purpose ${shown.join(', ')}; give ${PURPOSES}`,
    });
  }
  return named as ConsentPurpose[];
});

const identifier = identifierArg.refine(
  (id) => id.value.trim().length > 0 && id.value.length <= 512,
  'the value must be 1 to 512 characters',
);
const showArgs = z.object({ identifier, json: z.boolean().default(false) });
const setArgs = z
  .object({
    identifier,
    grant: purposeList.optional(),
    withdraw: purposeList.optional(),
    source: consentSourceSchema.default('cli'),
    at: consentAtSchema.optional(),
    json: z.boolean().default(false),
  })
  .refine((a) => a.grant || a.withdraw, {
    message: 'name at least one purpose with --grant or --withdraw',
    path: ['grant'],
  })
  .refine((a) => !(a.grant ?? []).some((p) => (a.withdraw ?? []).includes(p)), {
    message: 'a purpose cannot be both granted and withdrawn',
    path: ['withdraw'],
  });

function asUsage(err: unknown): unknown {
  return err instanceof ConsentInputError ? new UsageError(err.message) : err;
}

const DELETED =
  'this identifier was deleted (tombstoned): nothing is recorded for it, the defaults apply';

const word = (granted: boolean) => (granted ? 'granted' : 'withdrawn');

/** `pops consent show <type:value>`: the person's state per purpose and its history. */
export async function showCommand(id: string, options: Record<string, unknown>) {
  const args = parseArgs(showArgs, { ...options, identifier: id });
  refuseUnknownType(args.identifier);
  const rt = await openDatabase();
  try {
    const view = await consentOf(rt.pool, args.identifier).catch((err: unknown) => {
      throw asUsage(err);
    });
    const hashes = identifierHashes([args.identifier]);
    const deleted = (await tombstonesAmong(rt.pool, hashes)).size > 0;
    print(args.json, { ...view, deleted }, () =>
      [
        ...(deleted ? [DELETED] : []),
        `person ${view.personKey}`,
        table(
          ['purpose', 'state', 'from'],
          CONSENT_PURPOSES.map((p) => {
            const s = view.purposes[p];
            return [p, word(s.granted), s.at ? `event at ${s.at.toISOString()}` : s.from];
          }),
        ),
        '',
        view.history.length === 0
          ? 'no consent events'
          : table(
              ['effective at', 'identifier', 'purpose', 'state', 'source', 'actor'],
              view.history.map((e) => [
                e.effectiveAt.toISOString(),
                `${e.identifier.type}:${e.identifier.value}`,
                e.purpose,
                word(e.granted),
                e.source,
                e.actor,
              ]),
            ),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops consent set <type:value> [--grant p,…] [--withdraw p,…]`: one change, all or none. */
export async function setCommand(id: string, options: Record<string, unknown>) {
  const args = parseArgs(setArgs, { ...options, identifier: id });
  refuseUnknownType(args.identifier);
  const purposes: Partial<Record<ConsentPurpose, boolean>> = {};
  for (const p of args.grant ?? []) purposes[p] = true;
  for (const p of args.withdraw ?? []) purposes[p] = false;
  const rt = await openDatabase();
  try {
    const result = await recordConsentChoices(rt.pool, {
      identifier: args.identifier,
      purposes,
      source: args.source,
      actor: rt.config.POPS_ACTOR,
      at: args.at,
    }).catch((err: unknown) => {
      throw asUsage(err);
    });
    print(args.json, result, () =>
      result.dropped
        ? 'nothing recorded: this identifier was deleted (tombstoned)'
        : Object.entries(result.changed)
            .map(([p, changed]) => {
              const state = word(purposes[p as ConsentPurpose] ?? false);
              return `${p}: ${changed ? state : `already ${state}, nothing recorded`}`;
            })
            .join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops consent defaults`: what applies to a person without a consent event, per purpose. */
export async function defaultsCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const defaults = await consentDefaults(rt.pool);
    print(Boolean(options.json), { defaults }, () =>
      table(
        ['purpose', 'default'],
        CONSENT_PURPOSES.map((p) => [p, word(defaults[p])]),
      ),
    );
  } finally {
    await rt.close();
  }
}

const setDefaultArgs = z
  .object({
    purpose: z.enum(CONSENT_PURPOSES),
    state: z.enum(['granted', 'withdrawn']),
    json: z.boolean().default(false),
  })
  .refine((a) => !(a.purpose === 'marketing' && a.state === 'granted'), {
    message: 'marketing is opt-in, its default cannot be granted',
    path: ['state'],
  });

/** `pops consent set-default <purpose> granted|withdrawn`: an audited change of a default. */
export async function setDefaultCommand(
  purpose: string,
  state: string,
  options: Record<string, unknown>,
) {
  const args = parseArgs(setDefaultArgs, { ...options, purpose, state });
  const rt = await openDatabase();
  try {
    const granted = args.state === 'granted';
    const changed = await changeConsentDefault(
      rt.pool,
      args.purpose,
      granted,
      rt.config.POPS_ACTOR,
    );
    print(args.json, { purpose: args.purpose, granted, changed }, () =>
      changed
        ? `${args.purpose}: the default is ${args.state} now (audited)`
        : `${args.purpose}: the default already was ${args.state}, nothing changed`,
    );
  } finally {
    await rt.close();
  }
}
