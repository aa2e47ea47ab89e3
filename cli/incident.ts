/**
 * `pops incident list|show|export`: incidents and their timelines. `show --markdown` prints a
 * postmortem draft; `export` writes the affected list a privacy playbook stored for the DPO.
 */
import fs from 'node:fs';
import { incidentReport } from '../client/playbooks.js';
import { incidentMarkdown, timelineText } from '../domain/playbooks/markdown.js';
import { getExport, listIncidents } from '../domain/playbooks/store.js';
import { print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

/** `pops incident list`. */
export async function listCommand(options: Record<string, unknown>): Promise<void> {
  const rt = await openDatabase();
  try {
    const all = await listIncidents(rt.pool);
    print(options['json'] === true, all, () =>
      table(
        ['incident', 'severity', 'status', 'playbook', 'opened by', 'opened', 'title'],
        all.map((i) => [
          i.id,
          i.severity,
          i.status,
          `${i.playbook} v${i.playbookVersion}`,
          i.openedBy,
          i.openedAt,
          i.title.slice(0, 50),
        ]),
      ),
    );
  } finally {
    await rt.close();
  }
}

/** `pops incident show <id> [--markdown]`. */
export async function showCommand(id: string, options: Record<string, unknown>): Promise<void> {
  const rt = await openDatabase();
  try {
    const report = await incidentReport(rt.pool, id);
    if (options['markdown'] === true) {
      process.stdout.write(incidentMarkdown(report));
      return;
    }
    const i = report.incident;
    print(options['json'] === true, report, () =>
      [
        `incident ${i.id} (${i.severity}, ${i.status}): ${i.title}`,
        `playbook ${i.playbook} v${i.playbookVersion}, opened by ${i.openedBy} at ${i.openedAt}` +
          `${i.closedAt ? `, closed ${i.closedAt}` : ''}`,
        `scope: ${report.scope.persons} persons, ${report.scope.decisions} decisions`,
        '',
        timelineText(report.timeline),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops incident export <id> --out <file>`: the stored affected list (CSV). */
export async function exportCommand(id: string, options: Record<string, unknown>): Promise<void> {
  const out = options['out'];
  if (typeof out !== 'string' || out === '') throw new UsageError('--out <file> is required');
  const rt = await openDatabase();
  try {
    const stored = await getExport(rt.pool, id);
    if (!stored) throw new UsageError(`incident ${id} has no export (no export_scope step ran)`);
    fs.writeFileSync(out, stored.csv, { mode: 0o600 });
    print(
      options['json'] === true,
      { file: out, rows: stored.rows, sha256: stored.sha256 },
      () => `wrote ${stored.rows} rows to ${out} (sha256 ${stored.sha256})`,
    );
  } finally {
    await rt.close();
  }
}
