/**
 * The playbook tables (migrations/0017_playbooks.sql): registered playbooks, incidents, their
 * append-only timeline, the persons in scope, the DPO export and the outbound-call ledger. Every
 * write has a natural key, so an activity that retries one repeats nothing.
 */
import { createHash } from 'node:crypto';
import type { Queryable } from '../../common/db.js';
import { InputError } from '../../common/failures.js';
import type { Playbook } from './definition.js';
import type { PlaybookSource } from './file.js';

/** Thrown when a playbook or incident cannot be written or found as asked. */
export class PlaybookRefusal extends InputError {
  constructor(
    readonly kind: 'not_found' | 'conflict' | 'validation',
    message: string,
  ) {
    super(message);
  }
}

export interface StoredPlaybook {
  name: string;
  version: number;
  description: string;
  definition: Playbook;
  sha256: string;
  registeredBy: string;
  registeredAt: string;
}

interface PlaybookRow {
  name: string;
  version: number;
  description: string;
  definition: Playbook;
  sha256: string;
  registered_by: string;
  registered_at: Date;
}

const playbookOf = (r: PlaybookRow): StoredPlaybook => ({
  name: r.name,
  version: r.version,
  description: r.description,
  definition: r.definition,
  sha256: r.sha256,
  registeredBy: r.registered_by,
  registeredAt: r.registered_at.toISOString(),
});

/**
 * Registers a playbook version; the same text again changes nothing (registered: false), other
 * text under a registered name and version is refused (a version is never rewritten).
 */
export async function registerPlaybook(
  db: Queryable,
  src: PlaybookSource,
  actor: string,
): Promise<{ registered: boolean; playbook: StoredPlaybook }> {
  const p = src.playbook;
  const inserted = await db.query<PlaybookRow>(
    `insert into playbooks (name, version, description, definition, source, sha256, registered_by)
     values ($1, $2, $3, $4::jsonb, $5, $6, $7)
     on conflict (name, version) do nothing returning *`,
    [p.name, p.version, p.description, JSON.stringify(p), src.text, src.sha256, actor],
  );
  if (inserted.rows[0]) return { registered: true, playbook: playbookOf(inserted.rows[0]) };
  const existing = await getPlaybook(db, p.name, p.version);
  if (!existing) throw new Error(`playbook ${p.name} v${p.version} vanished`);
  if (existing.sha256 !== src.sha256) {
    throw new PlaybookRefusal(
      'conflict',
      `playbook ${p.name} version ${p.version} is already registered with other text` +
        ` (from ${src.source}); give the change a new version`,
    );
  }
  return { registered: false, playbook: existing };
}

/** A playbook version, or its latest when `version` is left out. */
export async function getPlaybook(
  db: Queryable,
  name: string,
  version?: number,
): Promise<StoredPlaybook | undefined> {
  const { rows } = await db.query<PlaybookRow>(
    `select * from playbooks where name = $1 and ($2::int is null or version = $2)
      order by version desc limit 1`,
    [name, version ?? null],
  );
  return rows[0] ? playbookOf(rows[0]) : undefined;
}

/** The latest version of every playbook. */
export async function listPlaybooks(db: Queryable): Promise<StoredPlaybook[]> {
  const { rows } = await db.query<PlaybookRow>(
    `select distinct on (name) * from playbooks order by name, version desc`,
  );
  return rows.map(playbookOf);
}

export const INCIDENT_STATUSES = [
  'open',
  'mitigating',
  'awaiting-approval',
  'compensating',
  'resolved',
  'failed',
  'aborted',
] as const;
export type IncidentStatus = (typeof INCIDENT_STATUSES)[number];
export const CLOSED: ReadonlySet<IncidentStatus> = new Set(['resolved', 'failed', 'aborted']);

export interface Incident {
  id: string;
  title: string;
  severity: string;
  status: IncidentStatus;
  surface: string | null;
  playbook: string;
  playbookVersion: number;
  params: Record<string, unknown>;
  workflowId: string;
  runId: string | null;
  openedBy: string;
  openedAt: string;
  updatedAt: string;
  closedAt: string | null;
}

interface IncidentRow {
  id: string;
  title: string;
  severity: string;
  status: IncidentStatus;
  surface: string | null;
  playbook: string;
  playbook_version: number;
  params: Record<string, unknown>;
  workflow_id: string;
  run_id: string | null;
  opened_by: string;
  opened_at: Date;
  updated_at: Date;
  closed_at: Date | null;
}

const incidentOf = (r: IncidentRow): Incident => ({
  id: r.id,
  title: r.title,
  severity: r.severity,
  status: r.status,
  surface: r.surface,
  playbook: r.playbook,
  playbookVersion: r.playbook_version,
  params: r.params,
  workflowId: r.workflow_id,
  runId: r.run_id,
  openedBy: r.opened_by,
  openedAt: r.opened_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
  closedAt: r.closed_at?.toISOString() ?? null,
});

export interface NewIncident {
  id: string;
  title: string;
  severity: string;
  surface: string | null;
  playbook: string;
  playbookVersion: number;
  params: Record<string, unknown>;
  workflowId: string;
  openedBy: string;
}

/**
 * Opens the incident (or answers it as it is when the same id was opened already, so a retried
 * start opens nothing twice).
 */
export async function openIncident(db: Queryable, i: NewIncident): Promise<Incident> {
  await db.query(
    `insert into incidents (id, title, severity, surface, playbook, playbook_version, params,
       workflow_id, opened_by)
     values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) on conflict (id) do nothing`,
    [
      i.id,
      i.title,
      i.severity,
      i.surface,
      i.playbook,
      i.playbookVersion,
      JSON.stringify(i.params),
      i.workflowId,
      i.openedBy,
    ],
  );
  const found = await getIncident(db, i.id);
  if (!found) throw new Error(`incident ${i.id} vanished`);
  return found;
}

export async function getIncident(db: Queryable, id: string): Promise<Incident | undefined> {
  const { rows } = await db.query<IncidentRow>('select * from incidents where id = $1', [id]);
  return rows[0] ? incidentOf(rows[0]) : undefined;
}

export async function listIncidents(db: Queryable, limit = 50): Promise<Incident[]> {
  const { rows } = await db.query<IncidentRow>(
    'select * from incidents order by opened_at desc limit $1',
    [limit],
  );
  return rows.map(incidentOf);
}

/** Sets the incident's status (and its run id once known); a closed incident stays closed. */
export async function setIncidentStatus(
  db: Queryable,
  id: string,
  status: IncidentStatus,
  runId?: string,
): Promise<void> {
  await db.query(
    `update incidents set status = $2, run_id = coalesce($3, run_id), updated_at = now(),
            closed_at = case when $4 then coalesce(closed_at, now()) else closed_at end
      where id = $1 and closed_at is null`,
    [id, status, runId ?? null, CLOSED.has(status)],
  );
}

export const TIMELINE_KINDS = [
  'run-started',
  'step-started',
  'step-ended',
  'step-skipped',
  'approval',
  'escalation',
  'compensation-started',
  'compensation-ended',
  'note',
  'abort-requested',
  'run-ended',
] as const;
export type TimelineKind = (typeof TIMELINE_KINDS)[number];

/** One timeline entry, as the workflow keeps it and the table stores it. */
export interface TimelineEntry {
  seq: number;
  kind: TimelineKind;
  stepId: string | null;
  stepType: string | null;
  outcome: string | null;
  message: string;
  summary: Record<string, unknown>;
  actor: string;
  at: string;
}

/** Appends entries under `<runKey>/<seq>`; a retried append writes nothing twice. */
export async function appendTimeline(
  db: Queryable,
  incident: string,
  runKey: string,
  entries: readonly TimelineEntry[],
): Promise<void> {
  if (entries.length === 0) return;
  await db.query(
    `insert into incident_timeline
       (incident_id, entry_key, seq, kind, step_id, step_type, outcome, message, summary, actor, at)
     select $1, $2 || '/' || e.seq, e.seq, e.kind, e.step_id, e.step_type, e.outcome, e.message,
            e.summary, e.actor, e.at
       from jsonb_to_recordset($3::jsonb) as e(seq int, kind text, step_id text, step_type text,
            outcome text, message text, summary jsonb, actor text, at timestamptz)
     on conflict (entry_key) do nothing`,
    [
      incident,
      runKey,
      JSON.stringify(
        entries.map((e) => ({
          seq: e.seq,
          kind: e.kind,
          step_id: e.stepId,
          step_type: e.stepType,
          outcome: e.outcome,
          message: e.message,
          summary: e.summary,
          actor: e.actor,
          at: e.at,
        })),
      ),
    ],
  );
}

/** The stored timeline of an incident, in order. */
export async function incidentTimeline(db: Queryable, incident: string): Promise<TimelineEntry[]> {
  const { rows } = await db.query<{
    seq: number;
    kind: TimelineKind;
    step_id: string | null;
    step_type: string | null;
    outcome: string | null;
    message: string;
    summary: Record<string, unknown>;
    actor: string;
    at: Date;
  }>('select * from incident_timeline where incident_id = $1 order by at, seq, id', [incident]);
  return rows.map((r) => ({
    seq: r.seq,
    kind: r.kind,
    stepId: r.step_id,
    stepType: r.step_type,
    outcome: r.outcome,
    message: r.message,
    summary: r.summary,
    actor: r.actor,
    at: r.at.toISOString(),
  }));
}

/** The persons in an incident's scope and the decisions that exposed them. */
export async function scopeCounts(
  db: Queryable,
  incident: string,
): Promise<{ persons: number; decisions: number }> {
  const { rows } = await db.query<{ persons: number; decisions: number }>(
    `select count(*)::int as persons, coalesce(sum(decisions), 0)::int as decisions
       from incident_scope where incident_id = $1`,
    [incident],
  );
  return rows[0] ?? { persons: 0, decisions: 0 };
}

/** The person keys of an incident's scope, sorted. */
export async function scopePersons(db: Queryable, incident: string): Promise<string[]> {
  const { rows } = await db.query<{ person_key: string }>(
    'select person_key from incident_scope where incident_id = $1 order by person_key',
    [incident],
  );
  return rows.map((r) => r.person_key);
}

/** The CSV of an incident's scope (person key, decisions, surfaces, versions, first, last). */
export async function scopeCsv(
  db: Queryable,
  incident: string,
): Promise<{ csv: string; rows: number }> {
  const { rows } = await db.query<{
    person_key: string;
    decisions: number;
    surfaces: string[];
    versions: number[];
    first_at: Date;
    last_at: Date;
  }>('select * from incident_scope where incident_id = $1 order by person_key', [incident]);
  const cell = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const lines = rows.map((r) =>
    [
      cell(r.person_key),
      String(r.decisions),
      cell(r.surfaces.join(' ')),
      cell(r.versions.join(' ')),
      r.first_at.toISOString(),
      r.last_at.toISOString(),
    ].join(','),
  );
  const csv = ['person_key,decisions,surfaces,versions,first_exposed,last_exposed', ...lines]
    .join('\n')
    .concat('\n');
  return { csv, rows: rows.length };
}

/**
 * Records the scope's export once per (incident, step): its row count and the digest of its CSV
 * (the list itself stays in incident_scope, see migration 0020). Answers what is recorded.
 */
export async function storeExport(
  db: Queryable,
  incident: string,
  stepId: string,
): Promise<{ rows: number; sha256: string; bytes: number }> {
  const { csv, rows } = await scopeCsv(db, incident);
  const sha256 = createHash('sha256').update(csv).digest('hex');
  await db.query(
    `insert into incident_exports (incident_id, step_id, rows, sha256)
     values ($1, $2, $3, $4) on conflict (incident_id, step_id) do nothing`,
    [incident, stepId, rows, sha256],
  );
  const stored = await getExport(db, incident, stepId);
  if (!stored) throw new Error(`export of ${incident} vanished`);
  return { rows: stored.rows, sha256: stored.sha256, bytes: Buffer.byteLength(stored.csv) };
}

/**
 * An incident's export (of one step, or its latest): the CSV read now from incident_scope, the
 * rows and digest recorded when it was made (they differ once a person in it was deleted).
 */
export async function getExport(
  db: Queryable,
  incident: string,
  stepId?: string,
): Promise<{ stepId: string; rows: number; csv: string; sha256: string } | undefined> {
  const { rows } = await db.query<{ step_id: string; rows: number; sha256: string }>(
    `select step_id, rows, sha256 from incident_exports
      where incident_id = $1 and ($2::text is null or step_id = $2)
      order by created_at desc limit 1`,
    [incident, stepId ?? null],
  );
  const r = rows[0];
  if (!r) return undefined;
  const { csv } = await scopeCsv(db, incident);
  return { stepId: r.step_id, rows: r.rows, csv, sha256: r.sha256 };
}
