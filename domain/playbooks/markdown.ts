/**
 * An incident as a postmortem draft in Markdown: the facts table, parameters, the timeline (UTC,
 * each step's start and end with its outcome and actor), approvals, compensation, the scope and
 * empty sections for what people add (root cause, follow-ups). Also the plain-text timeline that
 * `pops incident show` prints. Pure.
 */
import type { Incident, TimelineEntry } from './store.js';

export interface IncidentReport {
  incident: Incident;
  timeline: TimelineEntry[];
  scope: { persons: number; decisions: number };
  export: { rows: number; sha256: string } | null;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const time = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

function duration(from: string, to: string | null): string {
  if (!to) return 'ongoing';
  const s = Math.round((Date.parse(to) - Date.parse(from)) / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function event(e: TimelineEntry): string {
  switch (e.kind) {
    case 'step-started':
      return 'started';
    case 'step-ended':
      return 'ended';
    case 'step-skipped':
      return 'skipped';
    case 'compensation-started':
      return 'undo started';
    case 'compensation-ended':
      return 'undo ended';
    case 'run-started':
    case 'run-ended':
    case 'approval':
    case 'escalation':
    case 'note':
    case 'abort-requested':
      return e.kind;
  }
}

/** The postmortem draft. */
export function incidentMarkdown(r: IncidentReport): string {
  const i = r.incident;
  const lines: string[] = [
    `# Incident ${i.id}: ${i.title}`,
    '',
    '| | |',
    '|---|---|',
    `| Severity | ${i.severity} |`,
    `| Status | ${i.status} |`,
    `| Surface | ${i.surface ?? '-'} |`,
    `| Playbook | ${i.playbook} v${i.playbookVersion} (workflow \`${i.workflowId}\`) |`,
    `| Opened by | ${cell(i.openedBy)} |`,
    `| Opened | ${time(i.openedAt)} |`,
    `| Closed | ${i.closedAt ? time(i.closedAt) : '-'} |`,
    `| Duration | ${duration(i.openedAt, i.closedAt)} |`,
    '',
    '## Parameters',
    '',
    ...Object.entries(i.params).map(([k, v]) => `- \`${k}\` = \`${JSON.stringify(v)}\``),
    '',
    '## Timeline (UTC)',
    '',
    '| Time | Step | Event | Outcome | Actor | Details |',
    '|---|---|---|---|---|---|',
    ...r.timeline.map(
      (e) =>
        `| ${time(e.at)} | ${e.stepId ?? ''}${e.stepType ? ` (${e.stepType})` : ''} | ` +
        `${event(e)} | ${e.outcome ?? ''} | ${cell(e.actor)} | ${cell(e.message)} |`,
    ),
    '',
    '## Impact',
    '',
    `- Persons in scope: ${r.scope.persons}; decisions that exposed them: ${r.scope.decisions}`,
    ...(r.export
      ? [`- Affected list exported for the DPO: ${r.export.rows} rows, sha256 ${r.export.sha256}`]
      : []),
    '',
    '## Approvals',
    '',
    ...listOr(
      r.timeline
        .filter((e) => e.kind === 'approval' || e.kind === 'escalation')
        .map((e) => `- ${time(e.at)} ${e.stepId ?? ''}: ${e.outcome ?? ''} — ${e.message}`),
      '- none',
    ),
    '',
    '## Compensation',
    '',
    ...listOr(r.timeline.filter((e) => e.kind === 'compensation-ended').map(undoLine), '- none'),
    '',
    '## Root cause',
    '',
    '_To be written._',
    '',
    '## Follow-ups',
    '',
    '- [ ] _To be written._',
    '',
  ];
  return lines.join('\n');
}

function undoLine(e: TimelineEntry): string {
  return `- ${e.stepId ?? ''} (${e.stepType ?? ''}): ${e.outcome ?? ''} — ${e.message}`;
}

function listOr(items: string[], empty: string): string[] {
  return items.length > 0 ? items : [empty];
}

/** The plain-text timeline: one line per entry. */
export function timelineText(entries: readonly TimelineEntry[]): string {
  return entries
    .map((e) => {
      const step = e.stepId ? ` ${e.stepId}${e.stepType ? ` (${e.stepType})` : ''}` : '';
      const outcome = e.outcome ? ` [${e.outcome}]` : '';
      return `${time(e.at)}${step} ${event(e)}${outcome} by ${e.actor}: ${e.message}`;
    })
    .join('\n');
}
