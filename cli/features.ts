/** `pops features register|list|show`: the feature registry. */
import fs from 'node:fs';
import { z } from 'zod';
import { loadFeatureFile } from '../domain/features/file.js';
import { listFeatures, registerFeatures, showFeature } from '../domain/features/registry.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

/** `pops features register <file.yaml>`: all of the file's definitions, or none. */
export async function registerFeaturesCommand(file: string, options: { json?: boolean }) {
  if (!fs.existsSync(file)) {
    throw new UsageError(`<file> ${JSON.stringify(file)}: no such file or directory`);
  }
  const definitions = loadFeatureFile(file);
  const rt = await openDatabase();
  try {
    const results = await registerFeatures(rt.pool, definitions, rt.config.POPS_ACTOR);
    print(Boolean(options.json), { features: results }, () =>
      results.map((r) => `${r.name} version ${r.version}: ${r.registration}`).join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops features list`. */
export async function listFeaturesCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const features = await listFeatures(rt.pool);
    print(Boolean(options.json), { features }, () =>
      features.length === 0
        ? 'no features registered (pops features register config/features.example.yaml)'
        : table(
            [
              'feature',
              'latest',
              'versions',
              'entity',
              'owner',
              'reads',
              'values through',
              'freshness',
            ],
            features.map((f) => [
              f.name,
              f.latest,
              f.versions,
              f.entity,
              f.owner,
              f.sourceTables.join(','),
              f.latestSnapshot ?? '-',
              f.freshness,
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

const showArgs = z.object({
  name: z.string(),
  version: z
    .string()
    .regex(/^[1-9][0-9]{0,6}$/, 'is not a version (a positive whole number)')
    .transform(Number)
    .optional(),
  json: z.boolean().default(false),
});

/** `pops features show <name> [--version N]`. */
export async function showFeatureCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(showArgs, { ...options, name });
  const rt = await openDatabase();
  try {
    const versions = await showFeature(rt.pool, args.name, args.version);
    if (versions.length === 0) {
      const which = args.version ? ` version ${args.version}` : '';
      throw new UsageError(`feature ${JSON.stringify(args.name)}${which} is not registered`);
    }
    print(args.json, { versions }, () =>
      versions
        .map((v) => {
          const d = v.definition;
          const agg =
            'of' in d.aggregation ? `${d.aggregation.fn}(${d.aggregation.of})` : d.aggregation.fn;
          return [
            `${v.name} version ${v.version} (${d.entity}, ${d.type}): ${d.description}`,
            `  computes ${agg} over ${d.windows.join(', ')}; default ${String(d.default)};` +
              ` ttl ${d.ttl === undefined ? 'none' : `${d.ttl} s`}`,
            `  owner ${d.owner}; freshness SLA ${d.freshnessSla} s; registered ${v.registeredAt}` +
              ` by ${v.registeredBy}`,
            `  lineage: reads ${v.lineage.sourceTables.join(', ')}; ${v.lineage.freshness}` +
              (v.lineage.latestSnapshot ? `; values through ${v.lineage.latestSnapshot}` : ''),
            ...(v.lineage.lastBackfill
              ? [
                  `  last backfill ${v.lineage.lastBackfill.id} (${v.lineage.lastBackfill.status});` +
                    ` ${v.lineage.partitions.computed} days computed,` +
                    ` ${v.lineage.partitions.warned} warned, ${v.lineage.partitions.failed} failed`,
                ]
              : []),
            `  computation sha256 ${v.computationSha256.slice(0, 12)}…`,
          ].join('\n');
        })
        .join('\n\n'),
    );
  } finally {
    await rt.close();
  }
}
