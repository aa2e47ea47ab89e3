/** `pops contracts register|list` and `pops quarantine list`: data contracts, their quarantine. */
import fs from 'node:fs';
import { z } from 'zod';
import { describeReason } from '../domain/contracts/check.js';
import { sourceLabel } from '../domain/contracts/definition.js';
import { loadContractFile } from '../domain/contracts/file.js';
import { quarantineCounts, recentQuarantined } from '../domain/contracts/quarantine.js';
import { listContracts, registerContracts } from '../domain/contracts/registry.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

/** `pops contracts register <file.yaml>`: all of the file's contracts, or none. */
export async function registerContractsCommand(file: string, options: { json?: boolean }) {
  if (!fs.existsSync(file)) {
    throw new UsageError(`<file> ${JSON.stringify(file)}: no such file or directory`);
  }
  const contracts = loadContractFile(file);
  const rt = await openDatabase();
  try {
    const results = await registerContracts(rt.pool, contracts, rt.config.POPS_ACTOR);
    print(Boolean(options.json), { contracts: results }, () =>
      results
        .map(
          (r) =>
            `${r.event} (source ${sourceLabel(r.source)}) version ${r.version}: ${r.registration}`,
        )
        .join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops contracts list`: each contract's latest version, which is the one that judges. */
export async function listContractsCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const contracts = await listContracts(rt.pool);
    print(Boolean(options.json), { contracts }, () =>
      contracts.length === 0
        ? 'no contracts registered (pops contracts register config/contracts.example.yaml)'
        : table(
            [
              'event',
              'source',
              'latest',
              'versions',
              'properties',
              'undeclared',
              'owner',
              'quarantined',
            ],
            contracts.map((c) => [
              c.event,
              sourceLabel(c.source),
              c.latest,
              c.versions,
              Object.keys(c.schema.properties).join(', ') || '-',
              c.schema.additionalProperties,
              c.owner,
              c.quarantined,
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

const quarantineArgs = z.object({
  event: z.string().min(1).optional(),
  limit: z
    .string()
    .regex(/^[1-9][0-9]{0,3}$/, 'is not a number of rows (1-9999)')
    .transform(Number)
    .default(20),
  json: z.boolean().default(false),
});

/** `pops quarantine list [--event E] [--limit N]`: counts by event and reason, then recent rows. */
export async function listQuarantineCommand(options: Record<string, unknown>) {
  const args = parseArgs(quarantineArgs, options);
  const rt = await openDatabase();
  try {
    const counts = await quarantineCounts(rt.pool, args.event);
    const recent = await recentQuarantined(rt.pool, { event: args.event, limit: args.limit });
    print(args.json, { ...counts, recent }, () => {
      if (counts.byEvent.length === 0) {
        return args.event === undefined
          ? 'nothing quarantined'
          : `nothing quarantined for event ${JSON.stringify(args.event)}`;
      }
      return [
        table(
          ['event', 'messages', 'last received'],
          counts.byEvent.map((e) => [e.event, e.messages, e.lastReceivedAt.slice(0, 19)]),
        ),
        '',
        table(
          ['event', 'property', 'rule', 'expected', 'messages'],
          counts.byReason.map((r) => [r.event, r.path, r.rule, r.expected, r.messages]),
        ),
        '',
        `latest ${recent.length}:`,
        ...recent.map(
          (q) =>
            `${q.receivedAt.slice(0, 19)}  ${q.source}  ${q.event} (contract version` +
            ` ${q.contractVersion})  ${q.messageId}\n` +
            q.reasons.map((r) => `    ${describeReason(r)}`).join('\n'),
        ),
      ].join('\n');
    });
  } finally {
    await rt.close();
  }
}
