/**
 * Contracts from a YAML (or JSON) file: `contracts:` and a list of contracts. Every contract is
 * validated; an error names the file, the contract's index and event, the field and the value.
 * Not for workflow code: it reads the file system.
 */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { describeZodError, InputError } from '../../common/failures.js';
import { type ContractDefinition, contractDefinitionSchema, sourceLabel } from './definition.js';

/** Thrown for a file that cannot be read or holds an invalid contract. */
export class ContractFileError extends InputError {
  override name = 'ContractFileError';
}

const fileSchema = z.strictObject({ contracts: z.array(z.unknown()).min(1).max(1000) });

/** The contracts in `file`, validated, in file order; a repeated (event, source, version) fails. */
export function loadContractFile(file: string): ContractDefinition[] {
  let raw: unknown;
  try {
    raw = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ContractFileError(`${file}: cannot read it as YAML (${(err as Error).message})`);
  }
  const top = fileSchema.safeParse(raw);
  if (!top.success) throw new ContractFileError(`${file}: ${describeZodError(top.error, raw)}`);
  const seen = new Set<string>();
  return top.data.contracts.map((entry, i) => {
    const parsed = contractDefinitionSchema.safeParse(entry);
    const label = `${file}: contracts[${i}]${named(entry)}`;
    if (!parsed.success) {
      throw new ContractFileError(`${label}: ${describeZodError(parsed.error, entry)}`);
    }
    const { event, source, version } = parsed.data;
    const key = `${event} (source ${sourceLabel(source)}) version ${version}`;
    if (seen.has(key)) throw new ContractFileError(`${label}: ${key} is declared twice`);
    seen.add(key);
    return parsed.data;
  });
}

function named(entry: unknown): string {
  const event = (entry as { event?: unknown } | null)?.event;
  return typeof event === 'string' ? ` (${event})` : '';
}
