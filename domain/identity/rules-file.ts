/**
 * Identity rules from a YAML (or JSON) file, named by POPS_IDENTITY_RULES. The file is validated by
 * the same zod schema as workflow input, so a mistake is reported with the file, the field and the
 * value before any merge starts. Not for workflow code: it reads the file system.
 */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describeZodError, InputError } from '../../common/failures.js';
import { type IdentityRules, identityRulesSchema } from './rules.js';

/**
 * Thrown when the rules file cannot be read or does not hold valid rules; the message says where.
 */
export class RulesFileError extends InputError {
  override name = 'RulesFileError';
}

/** The rules in `file`, defaults filled in; the defaults alone when `file` is undefined. */
export function loadIdentityRules(file: string | undefined): IdentityRules {
  if (file === undefined) return identityRulesSchema.parse({});
  const where = `POPS_IDENTITY_RULES=${JSON.stringify(file)}`;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new RulesFileError(`${where}: cannot read it (${(err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (err) {
    throw new RulesFileError(`${where}: not valid YAML: ${(err as Error).message}`);
  }
  const result = identityRulesSchema.safeParse(raw);
  if (!result.success) {
    throw new RulesFileError(`${where}: ${describeZodError(result.error, raw)}`);
  }
  return result.data;
}
