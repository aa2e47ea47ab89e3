/**
 * Campaign definitions from YAML (or JSON) files: one campaign per file, its fields at the top.
 * An error names the file, the field and the value. Not for workflow code: it reads files.
 */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describeZodError, InputError } from '../../common/failures.js';
import { type Campaign, campaignSchema } from './definition.js';

/** Thrown for a file that cannot be read or holds an invalid campaign. */
export class CampaignFileError extends InputError {
  override name = 'CampaignFileError';
}

/** The campaign in `file`, validated. */
export function loadCampaignFile(file: string): Campaign {
  let raw: unknown;
  try {
    raw = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CampaignFileError(`${file}: cannot read it as YAML (${(err as Error).message})`);
  }
  return parseCampaign(raw, file);
}

/** A campaign from parsed input, or a CampaignFileError naming `where`, the field and value. */
export function parseCampaign(raw: unknown, where: string): Campaign {
  const parsed = campaignSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CampaignFileError(`${where}: ${describeZodError(parsed.error, raw)}`);
  }
  return parsed.data;
}
