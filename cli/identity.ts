/** `pops identity show|unmerge|remerge`: read the identity graph and edit it by hand. */
import { z } from 'zod';
import {
  editResult,
  startRemerge,
  startUnmerge,
  type StartedEdit,
} from '../client/identity-edits.js';
import { remergeInputSchema, unmergeInputSchema } from '../domain/identity/edits.js';
import { unknownTypeProblem } from '../domain/identity/rules.js';
import { type PersonView, parseLookup, showPerson } from '../domain/identity/show.js';
import {
  type RemergeResult,
  remergeRefusal,
  type UnmergeRefusal,
  type UnmergeResult,
  unmergeRefusal,
} from '../domain/identity/unmerge.js';
import { parseArgs, print, table, UsageError } from './output.js';
import {
  configuredIdentityRules,
  openDatabase,
  openRuntime,
  type Runtime,
  runWorkers,
} from './runtime.js';

/** `pops identity show <type:value | personId>`. */
export async function showIdentityCommand(identifier: string, options: { json?: boolean }) {
  const lookup = parseLookup(identifier.trim());
  if (!lookup) {
    throw new UsageError(
      `<identifier> ${JSON.stringify(identifier)}: give type:value (e.g. email:ann@example.com,` +
        ' user_id:42, anonymous_id:abc, device_id:xyz) or a person id',
    );
  }
  const problem = 'type' in lookup && unknownTypeProblem(configuredIdentityRules(), lookup.type);
  if (problem) throw new UsageError(`<identifier> ${JSON.stringify(identifier)}: ${problem}`);
  const rt = await openDatabase();
  try {
    const view = await showPerson(rt.pool, lookup);
    if (!view) throw new UsageError(`<identifier> ${JSON.stringify(identifier)}: not in the graph`);
    print(Boolean(options.json), view, () => describePerson(view));
  } finally {
    await rt.close();
  }
}

/** A person for people: identifiers, merges, unmerges, conflicts. */
export function describePerson(view: PersonView): string {
  const lines = [
    `person ${view.personId}: first seen ${view.firstSeenAt}, ${view.events} events,` +
      ` ${view.identifiers.length} identifiers, made of persons ${view.nodes.join(', ')}`,
    '',
    table(
      ['type', 'value', 'first seen', 'person'],
      view.identifiers.map((i) => [i.type, i.value, i.firstSeenAt, i.node]),
    ),
  ];
  if (view.merges.length > 0) {
    lines.push('', 'merges:');
    lines.push(
      table(
        ['merge', 'merged', 'into', 'via', 'message', 'at', 'state'],
        view.merges.map((m) => [
          m.mergeId,
          m.mergedFrom,
          m.mergedInto,
          `${m.fromNode}-${m.intoNode}`,
          m.messageId,
          m.mergedAt,
          m.undoneBy === null ? 'active' : `undone by unmerge ${m.undoneBy}`,
        ]),
      ),
    );
  }
  if (view.unmerges.length > 0) {
    lines.push('', 'unmerges:');
    for (const u of view.unmerges) {
      const state = u.revertedAt ? `reverted ${u.revertedAt}: ${u.revertedReason}` : 'standing';
      lines.push(
        `  unmerge ${u.unmergeId} of merge ${u.mergeId} by ${u.requestedBy} at ${u.unmergedAt}:` +
          ` persons ${u.keptPerson} and ${u.splitPerson} (${state}); reason: ${u.reason}`,
      );
    }
  }
  if (view.conflicts.length > 0) {
    lines.push('', 'conflicts (identifiers a rule kept out of a merge):');
    lines.push(
      table(
        ['type', 'value', 'message', 'kept with', 'event went to', 'reason'],
        view.conflicts.map((c) => [
          c.type,
          c.value,
          c.messageId,
          c.identifierPerson,
          c.attributedPerson,
          c.reason,
        ]),
      ),
    );
  }
  return lines.join('\n');
}

// Digits only: `1e1` or `0x5` must not quietly name merge 10 or 5.
const idArg = z
  .string()
  .regex(/^[1-9][0-9]{0,14}$/, 'is not an id (a positive whole number)')
  .transform(Number);
const editArgs = z.object({ reason: z.string(), json: z.boolean().default(false) });

/** Runs an edit to its end on workers in this process (beside any others), and prints it. */
async function runEdit<R extends UnmergeResult | RemergeResult>(
  check: (rt: Runtime) => Promise<UnmergeRefusal | undefined>,
  start: (rt: Runtime) => Promise<StartedEdit>,
  json: boolean,
  describe: (result: R) => string,
): Promise<void> {
  const rt = await openRuntime();
  try {
    // A request that can only fail is refused before a workflow starts: not found is bad input.
    const refusal = await check(rt);
    if (refusal) throw refusal.kind === 'not_found' ? new UsageError(refusal.message) : refusal;
    const started = await start(rt);
    const local = await runWorkers(rt, ['orchestration']);
    try {
      const result = await editResult<R>(rt.client, started);
      print(json, { ...started, result }, () => describe(result));
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** `pops identity unmerge <mergeId> --reason R`. */
export async function unmergeCommand(mergeId: string, options: Record<string, unknown>) {
  const id = parseArgs(z.object({ mergeId: idArg }), { mergeId }).mergeId;
  const args = parseArgs(editArgs, options);
  parseArgs(unmergeInputSchema, { mergeId: id, reason: args.reason });
  await runEdit<UnmergeResult>(
    (rt) => unmergeRefusal(rt.pool, { mergeId: id }),
    (rt) =>
      startUnmerge(rt.client, rt.prefix, {
        mergeId: id,
        reason: args.reason,
        requestedBy: rt.config.POPS_ACTOR,
      }),
    args.json,
    (r) =>
      `unmerge ${r.unmergeId}: merge ${r.mergeId} undone; person ${r.keptPerson}` +
      ` (${r.keptPersons} person rows) and person ${r.splitPerson} (${r.splitPersons})` +
      ` are apart again${r.replayed ? ' (already done by this request)' : ''}`,
  );
}

/** `pops identity remerge <unmergeId> --reason R`. */
export async function remergeCommand(unmergeId: string, options: Record<string, unknown>) {
  const id = parseArgs(z.object({ unmergeId: idArg }), { unmergeId }).unmergeId;
  const args = parseArgs(editArgs, options);
  parseArgs(remergeInputSchema, { unmergeId: id, reason: args.reason });
  await runEdit<RemergeResult>(
    (rt) => remergeRefusal(rt.pool, id),
    (rt) =>
      startRemerge(rt.client, rt.prefix, {
        unmergeId: id,
        reason: args.reason,
        requestedBy: rt.config.POPS_ACTOR,
      }),
    args.json,
    (r) =>
      `unmerge ${r.unmergeId} reverted: merge ${r.mergeId} stands again; person` +
      ` ${r.canonicalPerson}${r.exact ? ' (restored exactly as it was)' : ''}`,
  );
}
