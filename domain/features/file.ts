/**
 * Feature definitions from a YAML (or JSON) file: `features:` and a list of definitions. Every
 * definition is validated; an error names the file, the definition's index and name, the field and
 * the value. Not for workflow code: it reads the file system.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { describeZodError, InputError } from '../../common/failures.js';
import { type FeatureDefinition, featureDefinitionSchema } from './definition.js';

/** Thrown for a file that cannot be read or holds an invalid definition. */
export class FeatureFileError extends InputError {
  override name = 'FeatureFileError';
}

const fileSchema = z.strictObject({ features: z.array(z.unknown()).min(1).max(1000) });

/** The definitions in `file`, validated, in file order; duplicates of (name, version) refused. */
export function loadFeatureFile(file: string): FeatureDefinition[] {
  let raw: unknown;
  try {
    raw = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FeatureFileError(`${file}: cannot read it as YAML (${(err as Error).message})`);
  }
  const top = fileSchema.safeParse(raw);
  if (!top.success) throw new FeatureFileError(`${file}: ${describeZodError(top.error, raw)}`);
  const seen = new Set<string>();
  return top.data.features.map((entry, i) => {
    const parsed = featureDefinitionSchema.safeParse(entry);
    const label = `${file}: features[${i}]${named(entry)}`;
    if (!parsed.success) {
      throw new FeatureFileError(`${label}: ${describeZodError(parsed.error, entry)}`);
    }
    const key = `${parsed.data.name}@${parsed.data.version}`;
    if (seen.has(key)) throw new FeatureFileError(`${label}: ${key} is declared twice`);
    seen.add(key);
    return parsed.data;
  });
}

function named(entry: unknown): string {
  const name = (entry as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? ` (${name})` : '';
}

/** config/features.example.yaml: the features the demo registers and models train on by default. */
export const EXAMPLE_FEATURES_FILE = fileURLToPath(
  new URL('../../config/features.example.yaml', import.meta.url),
);
