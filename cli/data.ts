/** `pops import …` and `pops models …`: commands needing PostgreSQL only. */
import fs from 'node:fs';
import { z } from 'zod';
import type { ReasonCount } from '../domain/contracts/quarantine.js';
import { consentTraitsFromEnv } from '../domain/privacy/consent-traits.js';
import { modelNameSchema } from '../domain/retrain.js';
import { declareModel, listModels, showModel } from '../domain/registry.js';
import { importEvents } from '../ingest/events.js';
import { importMovieLens } from '../ingest/movielens.js';
import { describeModel } from './model-view.js';
import { parseArgs, print, progressBar, table, UsageError } from './output.js';
import { configuredIdentityRules, openDatabase } from './runtime.js';

/** Fails as bad input when the path does not exist (before any service starts). */
function mustExist(what: string, target: string): void {
  if (!fs.existsSync(target)) {
    throw new UsageError(`${what} ${JSON.stringify(target)}: no such file or directory`);
  }
}

const sourceName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, 'letters, digits, dot, dash, underscore');

/** `pops import movielens <dir>`. */
export async function importMovieLensCommand(
  dir: string,
  options: { source?: string; json?: boolean },
) {
  const source = options.source === undefined ? undefined : parseArgs(sourceName, options.source);
  mustExist('<dir>', dir);
  const rt = await openDatabase();
  const bar = progressBar('importing ratings', !options.json, ' bytes');
  try {
    const result = await importMovieLens(rt.pool, dir, {
      ...(source ? { source } : {}),
      identityRules: configuredIdentityRules(),
      onProgress: (p) => bar.update(p.bytes, p.totalBytes, { detail: `${p.rows} rows` }),
    });
    bar.stop();
    print(Boolean(options.json), result, () =>
      [
        `imported source "${result.source}" in ${result.seconds.toFixed(2)} s`,
        `  ratings: ${result.ratings.read} read, ${result.ratings.inserted} new` +
          (result.ratings.dropped > 0
            ? `, ${result.ratings.dropped} of deleted persons dropped`
            : ''),
        `  movies:  ${result.movies.read} read, ${result.movies.inserted} new`,
      ].join('\n'),
    );
  } finally {
    bar.stop();
    await rt.close();
  }
}

/** `pops import events <file.ndjson>`. */
export async function importEventsCommand(
  file: string,
  options: { source?: string; json?: boolean },
) {
  const source = options.source === undefined ? undefined : parseArgs(sourceName, options.source);
  mustExist('<file>', file);
  const rt = await openDatabase();
  const bar = progressBar('importing events', !options.json, ' bytes');
  try {
    const result = await importEvents(rt.pool, file, {
      ...(source ? { source } : {}),
      consentTraits: consentTraitsFromEnv(rt.config.POPS_CONSENT_TRAITS),
      identityRules: configuredIdentityRules(),
      onProgress: (p) => bar.update(p.bytes, p.totalBytes, { detail: `${p.rows} rows` }),
    });
    bar.stop();
    const stored = result.read - result.inserted - result.quarantined - result.dropped;
    print(Boolean(options.json), result, () =>
      [
        `read ${result.read} events, ${result.inserted} new (into source "${result.source}"), ` +
          `${stored} already stored (deduplicated on messageId),` +
          (result.dropped > 0 ? ` ${result.dropped} of deleted persons dropped,` : '') +
          ` in ${result.seconds.toFixed(2)} s`,
        ...quarantineLines(result.quarantined, result.quarantineReasons),
      ].join('\n'),
    );
  } finally {
    bar.stop();
    await rt.close();
  }
}

/** What an import says about the messages that broke their contract (nothing when none did). */
function quarantineLines(quarantined: number, reasons: readonly ReasonCount[]): string[] {
  if (quarantined === 0) return [];
  return [
    `${quarantined} broke their event's contract and are quarantined, not stored` +
      ' (pops quarantine list):',
    ...reasons.map(
      (r) => `  ${r.messages} × ${r.event}: ${r.path} (${r.rule}): expected ${r.expected}`,
    ),
  ];
}

/** `pops models create <name> --source <source>`. */
export async function createModelCommand(
  name: string,
  options: { source: string; description?: string; json?: boolean },
) {
  const model = parseArgs(modelNameSchema, name);
  const source = parseArgs(sourceName, options.source);
  const rt = await openDatabase();
  try {
    const declared = await declareModel(rt.pool, {
      name: model,
      source,
      ...(options.description ? { description: options.description } : {}),
      createdBy: rt.config.POPS_ACTOR,
    });
    if (!declared.created && declared.source !== source) {
      throw new UsageError(`model "${model}" is already declared with source "${declared.source}"`);
    }
    print(Boolean(options.json), { name: model, source, created: declared.created }, () =>
      declared.created
        ? `declared model ${model} over source ${source}`
        : `model ${model} already declared`,
    );
  } finally {
    await rt.close();
  }
}

/** `pops models list`. */
export async function listModelsCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const models = await listModels(rt.pool);
    print(Boolean(options.json), { models }, () =>
      models.length === 0
        ? 'no models declared (pops models create <name> --source <source>)'
        : table(
            ['model', 'source', 'latest', 'versions'],
            models.map((m) => [
              m.name,
              m.source,
              m.latestVersion === 0 ? '-' : m.latestVersion,
              m.versions,
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

/**
 * `pops models show <name> [--version N]`: aliases, versions with their links, and the alias
 * history (newest first); with --version, that version alone.
 */
export async function showModelCommand(
  name: string,
  options: { version?: string; json?: boolean },
) {
  const model = parseArgs(modelNameSchema, name);
  const version =
    options.version === undefined
      ? undefined
      : parseArgs(z.coerce.number().int().positive().max(2_147_483_647), options.version);
  const rt = await openDatabase();
  try {
    const view = await showModel(rt.pool, model);
    if (!view) throw new UsageError(`model "${model}" is not declared`);
    const found = view.versions.filter((v) => version === undefined || v.version === version);
    if (version !== undefined && found.length === 0) {
      throw new UsageError(`model "${model}" has no version ${version}`);
    }
    print(Boolean(options.json), version === undefined ? view : found[0], () =>
      describeModel(view, version === undefined ? view.versions : found),
    );
  } finally {
    await rt.close();
  }
}
