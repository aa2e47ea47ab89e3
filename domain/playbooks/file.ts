/**
 * Playbook files: YAML in `playbooks/` (the ones pops ships) or given by path, parsed and validated
 * (definition.ts). A YAML syntax error names the file, line and column.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { type Playbook, PlaybookError, validatePlaybook } from './definition.js';

/** The directory of the playbooks pops ships. */
export const SHIPPED_DIR = fileURLToPath(new URL('../../playbooks', import.meta.url));

/** A playbook with the text it came from. */
export interface PlaybookSource {
  playbook: Playbook;
  text: string;
  sha256: string;
  source: string;
}

/** Parses and validates playbook text; `source` names it in errors. */
export function parsePlaybookText(text: string, source: string): PlaybookSource {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    const e = err as Error & { linePos?: Array<{ line: number; col: number }> };
    const at = e.linePos?.[0];
    const where = at ? ` at line ${at.line}, column ${at.col}` : '';
    throw new PlaybookError(source, [`YAML${where}: ${e.message.split('\n')[0] ?? e.message}`]);
  }
  const playbook = validatePlaybook(doc, source);
  return { playbook, text, sha256: createHash('sha256').update(text).digest('hex'), source };
}

/** Reads one playbook file. */
export function loadPlaybookFile(file: string): PlaybookSource {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new PlaybookError(file, [`cannot be read: ${(err as Error).message}`]);
  }
  return parsePlaybookText(text, file);
}

/** Every `*.yaml` / `*.yml` playbook of a directory, by file name. */
export function loadPlaybookDir(dir = SHIPPED_DIR): PlaybookSource[] {
  const files = fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  return files.map((f) => loadPlaybookFile(path.join(dir, f)));
}
