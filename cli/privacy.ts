/**
 * The privacy side of `pops serve` at start (consent defaults from the environment, the consent
 * mapping of Segment messages, the first admin token), the CLI's role check, and the
 * `pops privacy delete|export|rotate-key|reseal|minimize|retention` commands.
 */
import fs from 'node:fs';
import { z } from 'zod';
import {
  deletePersonData,
  ensureRetentionSchedule,
  RETENTION_SCHEDULE_ID,
  startRetention,
  exportBundle,
  exportPersonData,
  type StartedRequest,
  waitForRequest,
} from '../client/privacy.js';
import { changeConsentDefault } from '../domain/privacy/consent.js';
import { type ConsentTraitMap, consentTraitsFromEnv } from '../domain/privacy/consent-traits.js';
import { CLI_ROLES } from '../api/roles.js';
import { authenticateToken, type Role } from '../domain/privacy/tokens.js';
import { resealContacts } from '../domain/privacy/contacts.js';
import {
  addResults,
  auditMinimized,
  MINIMIZED_TABLES,
  minimizeStoredPii,
} from '../domain/privacy/minimize-stored.js';
import { retentionPolicies } from '../domain/privacy/retention.js';
import type { RetentionResult } from '../workflows/enforceRetention.js';
import { rotateFieldKey } from '../domain/privacy/keys.js';
import { SubjectInputError } from '../domain/privacy/subject.js';
import { unknownTypeProblem } from '../domain/identity/rules.js';
import { plainText } from '../domain/retrain.js';
import { checkWritable, parseArgs, print, UsageError } from './output.js';
import {
  configuredIdentityRules,
  openDatabase,
  openRuntime,
  type Runtime,
  runWorkers,
} from './runtime.js';
import { bootstrapAdminToken } from './tokens.js';

/**
 * Applies POPS_CONSENT_DEFAULT_* (an audited change when it changes a default), creates the first
 * admin token on the first start, and returns the consent mapping of Segment identify messages and
 * the lines that show that token (null when tokens existed).
 */
export async function preparePrivacy(
  rt: Runtime,
): Promise<{ consentTraits: ConsentTraitMap; firstToken: string | null }> {
  const consentTraits = consentTraitsFromEnv(rt.config.POPS_CONSENT_TRAITS);
  const api = `http://${rt.config.POPS_HTTP_HOST}:${rt.config.POPS_HTTP_PORT}`;
  const firstToken = await bootstrapAdminToken(rt.pool, api);
  const wanted = [
    ['personalization', rt.config.POPS_CONSENT_DEFAULT_PERSONALIZATION],
    ['analytics', rt.config.POPS_CONSENT_DEFAULT_ANALYTICS],
  ] as const;
  for (const [purpose, value] of wanted) {
    if (value === undefined) continue;
    const granted = value === 'granted';
    if (await changeConsentDefault(rt.pool, purpose, granted, 'config')) {
      rt.log.info({ purpose, granted }, 'consent default set from the environment');
    }
  }
  const policies = retentionPolicies(rt.config.POPS_RETENTION);
  await ensureRetentionSchedule(
    rt.client,
    rt.prefix,
    { policies, requestedBy: `schedule/${RETENTION_SCHEDULE_ID}` },
    rt.config.POPS_RETENTION_EVERY,
  );
  if (policies.length > 0) {
    rt.log.info({ policies, every: rt.config.POPS_RETENTION_EVERY }, 'retention is scheduled');
  } else {
    rt.log.info('retention is off: POPS_RETENTION is not set, so no table has a policy');
  }
  return { consentTraits, firstToken };
}

/**
 * Refuses the command unless POPS_TOKEN is a live token whose role CLI_ROLES allows for it (the
 * longest listed prefix of its words; unlisted: admin only). A guard rail, not a boundary: the CLI
 * holds the database and Temporal credentials, and whoever has those can do everything.
 */
export async function checkCliRole(words: string): Promise<void> {
  const rt = await openDatabase();
  try {
    const who = await authenticateToken(rt.pool, rt.config.POPS_TOKEN ?? '');
    if (who === null) throw new UsageError('POPS_TOKEN: the token is not known or was revoked');
    const parts = words.split(' ');
    let roles: readonly Role[] = ['admin'];
    for (let n = parts.length; n > 0; n--) {
      const listed = CLI_ROLES[parts.slice(0, n).join(' ')];
      if (listed) {
        roles = listed;
        break;
      }
    }
    if (who.role !== 'admin' && !roles.includes(who.role)) {
      throw new UsageError(
        `role ${who.role} may not run pops ${words} (needs ${roles.join(', ')})`,
      );
    }
    // The token's name is the actor the command's audit rows record, as for API requests.
    process.env['POPS_ACTOR'] = who.name;
  } finally {
    await rt.close();
  }
}

/** A `type:value` argument naming an identifier. */
export const identifierArg = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,63}:.+$/, 'give type:value, e.g. user_id:u1 or email:ann@example.com')
  .transform((text) => {
    const at = text.indexOf(':');
    return { type: text.slice(0, at), value: text.slice(at + 1) };
  });
/** A request naming a type the identity rules do not know (a typo) is refused, exit 2. */
export function refuseUnknownType(identifier: { type: string; value: string }): void {
  const problem = unknownTypeProblem(configuredIdentityRules(), identifier.type);
  if (problem) throw new UsageError(`<identifier> ${identifier.type}:…: ${problem}`);
}

const deleteArgs = z.object({
  identifier: identifierArg,
  reason: plainText(500),
  wait: z.boolean().default(true),
  json: z.boolean().default(false),
});
const exportArgs = z.object({
  identifier: identifierArg,
  out: z.string().min(1).optional(),
  json: z.boolean().default(false),
});

/** Runs a request's workflow to its end, with workers of this process beside any others. */
async function runToEnd(rt: Runtime, started: StartedRequest) {
  const local = await runWorkers(rt);
  try {
    return await waitForRequest(rt.client, rt.pool, started);
  } finally {
    await local.stop();
  }
}

const NOTHING_DELETED =
  'no data of this identifier was found (no person, no event carries it); it is tombstoned all' +
  ' the same, so messages that carry it are dropped from now on';

function describeCounts(counts: Record<string, number>): string {
  const rows = Object.entries(counts).filter(([, n]) => n > 0);
  if (rows.length === 0) return '  (no rows)';
  return rows.map(([table, n]) => `  ${table}: ${n}`).join('\n');
}

/** `pops privacy delete <type:value> --reason R [--no-wait]`. */
export async function deleteCommand(identifier: string, options: Record<string, unknown>) {
  const args = parseArgs(deleteArgs, { ...options, identifier });
  refuseUnknownType(args.identifier);
  const rt = await openRuntime();
  try {
    const started = await deletePersonData(rt.client, rt.pool, rt.prefix, {
      identifier: args.identifier,
      reason: args.reason,
      requestedBy: rt.config.POPS_ACTOR,
    });
    const state = started.state === 'done' ? 'already deleted' : started.state;
    const head = `${state}: request ${started.requestId} (workflow ${started.workflowId})`;
    if (!args.wait) {
      print(args.json, started, () => head);
      return;
    }
    const request = await runToEnd(rt, started);
    print(args.json, { ...started, request }, () =>
      [
        head,
        `deleted (audited, tombstoned):`,
        describeCounts(request?.counts ?? {}),
        ...(request?.foundNothing ? [NOTHING_DELETED] : []),
      ].join('\n'),
    );
  } catch (err) {
    throw err instanceof SubjectInputError ? new UsageError(err.message) : err;
  } finally {
    await rt.close();
  }
}

/** `pops privacy export <type:value> [--out file]`: the bundle to a file or stdout. */
export async function exportCommand(identifier: string, options: Record<string, unknown>) {
  const args = parseArgs(exportArgs, { ...options, identifier });
  refuseUnknownType(args.identifier);
  if (args.out) checkWritable(args.out);
  const rt = await openRuntime();
  try {
    const started = await exportPersonData(rt.client, rt.pool, rt.prefix, {
      identifier: args.identifier,
      requestedBy: rt.config.POPS_ACTOR,
    });
    const request = await runToEnd(rt, started);
    const bundle = (await exportBundle(rt.pool, started.requestId)) ?? {};
    const text = `${JSON.stringify(bundle, null, 2)}\n`;
    if (request?.foundNothing) {
      process.stderr.write('pops: no data of this identifier was found; the bundle is empty\n');
    }
    if (!args.out) {
      process.stdout.write(text);
      return;
    }
    fs.writeFileSync(args.out, text, { mode: 0o600 });
    print(args.json, { ...started, request, out: args.out }, () =>
      [
        `exported request ${started.requestId} to ${args.out} (audited):`,
        describeCounts(request?.counts ?? {}),
      ].join('\n'),
    );
  } catch (err) {
    throw err instanceof SubjectInputError ? new UsageError(err.message) : err;
  } finally {
    await rt.close();
  }
}

/** `pops privacy rotate-key`: a new field key seals from now on; the old ones still open. */
export async function rotateKeyCommand(options: { json?: boolean }) {
  const id = rotateFieldKey();
  print(Boolean(options.json), { current: id }, () =>
    [
      `field key ${id} is current: new addresses are sealed with it, older ones open with theirs.`,
      'restart pops serve and the workers so every process seals with it, then re-seal the',
      'stored addresses with the new key: npx pops privacy reseal',
    ].join('\n'),
  );
}

/** `pops privacy reseal`: every address sealed with the current field key. */
export async function resealCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const resealed = await resealContacts(rt.pool);
    print(
      Boolean(options.json),
      { resealed },
      () => `resealed ${resealed} addresses with the current key`,
    );
  } finally {
    await rt.close();
  }
}

/**
 * `pops privacy minimize`: rewrites the emails and phones that earlier versions stored in clear
 * (audited). The start-up of this very command already does it; what that did is counted too.
 */
export async function minimizeCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const now = await minimizeStoredPii(rt.pool, { log: rt.log });
    await auditMinimized(rt.pool, rt.config.POPS_ACTOR, now);
    const result = addResults(rt.services.minimized, now);
    print(Boolean(options.json), result, () =>
      [
        'rewritten to the stored form (hashed, or sealed for contacts; audited):',
        ...MINIMIZED_TABLES.map((table) => `  ${table}: ${result.rewritten[table]}`),
        `addresses of events sealed into contacts: ${result.sealed}`,
        `conflicts (clear rows left: their hashed form exists; see the log): ${result.conflicts}`,
        'identifier rows whose value is no email or phone, left as they are (in events such' +
          ` values become [invalid]): ${result.skipped}`,
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/**
 * What goes with a table's rows without being counted under its own policy: a training example
 * and its point-in-time row are one label row, counted under the table whose policy took it.
 */
const GOES_WITH: Readonly<Record<string, string>> = {
  training_examples: ', with the point-in-time rows they were built from',
  pit_set_rows: ', with the training examples built from them',
};
const ONE_LABEL_ROW =
  '  (a training example and its point-in-time row are one label row, counted once: under the' +
  ' policy that took it)';

/** `pops privacy retention`: enforces POPS_RETENTION now and prints what it deleted. */
export async function retentionCommand(options: { json?: boolean }) {
  const rt = await openRuntime();
  try {
    const policies = retentionPolicies(rt.config.POPS_RETENTION);
    if (policies.length === 0) {
      throw new UsageError(
        'POPS_RETENTION is not set: no table has a retention policy' +
          ' (e.g. POPS_RETENTION=events=400d)',
      );
    }
    const started = await startRetention(rt.client, rt.prefix, {
      policies,
      requestedBy: rt.config.POPS_ACTOR,
    });
    const local = await runWorkers(rt);
    try {
      const handle = rt.client.workflow.getHandle(started.workflowId, started.runId);
      const result = (await handle.result()) as RetentionResult;
      print(Boolean(options.json), { ...started, ...result }, () =>
        [
          `${started.workflowId} (audited):`,
          ...policies.map(
            (p) =>
              `  ${p.table}: ${result.deleted[p.table] ?? 0} rows older than ${p.keepDays} days` +
              ` (before ${result.cutoffs[p.table] ?? '?'})${GOES_WITH[p.table] ?? ''}`,
          ),
          ...(policies.some((p) => p.table in GOES_WITH) ? [ONE_LABEL_ROW] : []),
        ].join('\n'),
      );
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}
