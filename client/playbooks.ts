/**
 * Client-side operations on playbooks, shared by the CLI and the HTTP API: register playbooks (the
 * shipped ones in playbooks/ on first use), plan a run (dry run), start one for an incident (or
 * attach to the one running), vote, abort, and read an incident with its live state and timeline.
 */
import { randomBytes } from 'node:crypto';
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import type { Queryable } from '../common/db.js';
import { queueName } from '../common/queues.js';
import { argsProblems, playbookWorkflowId } from '../domain/playbooks/definition.js';
import { loadPlaybookDir, parsePlaybookText } from '../domain/playbooks/file.js';
import { type IncidentReport } from '../domain/playbooks/markdown.js';
import { type Plan, planRun } from '../domain/playbooks/plan.js';
import {
  ABORT_SIGNAL,
  type AbortRequest,
  APPROVAL_SIGNAL,
  type ApprovalVote,
  type RunRequest,
  type RunResult,
  runInputSchema,
  type RunState,
  TIMELINE_QUERY,
} from '../domain/playbooks/run.js';
import {
  CLOSED,
  getExport,
  getIncident,
  getPlaybook,
  incidentTimeline,
  type Incident,
  openIncident,
  PlaybookRefusal,
  registerPlaybook,
  scopeCounts,
  type StoredPlaybook,
} from '../domain/playbooks/store.js';
import { rollbackRefusal } from '../domain/registry.js';
import { getAliases } from '../domain/registry-aliases.js';
import { runningRollouts } from '../domain/playbooks/effects.js';

/** Registers the playbooks shipped in playbooks/ (a no-op for those already registered). */
export async function registerShipped(db: Queryable, actor: string): Promise<StoredPlaybook[]> {
  const out: StoredPlaybook[] = [];
  for (const src of loadPlaybookDir()) out.push((await registerPlaybook(db, src, actor)).playbook);
  return out;
}

/** A definition's largest text: its step outputs and timeline must fit Temporal's payloads. */
const MAX_DEFINITION_CHARS = 200_000;

/** Registers a playbook from YAML text; `source` names it in errors. */
export async function registerPlaybookText(
  db: Queryable,
  text: string,
  source: string,
  actor: string,
): Promise<{ registered: boolean; playbook: StoredPlaybook }> {
  if (text.length > MAX_DEFINITION_CHARS) {
    throw new PlaybookRefusal(
      'validation',
      `${source}: a playbook is at most ${MAX_DEFINITION_CHARS} characters (got ${text.length})`,
    );
  }
  return registerPlaybook(db, parsePlaybookText(text, source), actor);
}

async function stored(db: Queryable, name: string, version?: number): Promise<StoredPlaybook> {
  const found = await getPlaybook(db, name, version);
  if (found) return found;
  const which = version === undefined ? '' : ` version ${version}`;
  throw new PlaybookRefusal('not_found', `playbook "${name}"${which} is not registered`);
}

/** What a run is asked with, before defaults. */
export interface RunAsk {
  playbook: string;
  version?: number;
  params: Record<string, unknown>;
  incident: { id?: string; title?: string; severity?: string; surface?: string | null };
  initiator: string;
}

/** A new incident id: `inc-<yyyymmdd>-<6 hex>`. */
export function newIncidentId(now = new Date()): string {
  const day = now.toISOString().slice(0, 10).replace(/-/g, '');
  return `inc-${day}-${randomBytes(3).toString('hex')}`;
}

/**
 * Refuses, before any run, arguments that parameters resolved to a value their step cannot take
 * (a `number` parameter of 1.5 as a version), naming the step, the argument and the value: the
 * load-time check of every step's arguments, run again on the resolved values.
 */
function checkResolvedArgs(plan: Plan): void {
  const problems = plan.steps
    .filter((step) => step.branch === 'runs')
    .flatMap((step) => argsProblems(step.type, step.args).map((p) => `step ${step.id}: ${p}`));
  if (problems.length > 0) throw new PlaybookRefusal('validation', problems.join('; '));
}

/** The dry run: resolved parameters, steps, branches, and what the first effects would touch. */
export async function planPlaybook(
  db: Queryable,
  ask: RunAsk,
): Promise<Plan & { preview: string[] }> {
  const p = await stored(db, ask.playbook, ask.version);
  const plan = planRun(p.definition, ask.params, { ...ask.incident, initiator: ask.initiator });
  checkResolvedArgs(plan);
  const preview: string[] = [];
  for (const step of plan.steps) {
    if (step.branch === 'skipped') continue;
    const a = step.args as Record<string, unknown>;
    if (step.type === 'freeze_rollouts') {
      const running = await runningRollouts(db, {
        surface: typeof a['surface'] === 'string' ? a['surface'] : undefined,
        model: typeof a['model'] === 'string' ? a['model'] : undefined,
      });
      preview.push(
        `${step.id}: would pause ` +
          (running.map((r) => r.surface).join(', ') || 'no running rollout'),
      );
    }
    if (step.type === 'rollback_model' && typeof a['model'] === 'string') {
      const to = typeof a['to_version'] === 'number' ? a['to_version'] : undefined;
      const refusal = await rollbackRefusal(db, a['model'], to);
      const aliases = await getAliases(db, a['model']);
      preview.push(
        refusal
          ? `${step.id}: would be refused: ${refusal.message}`
          : `${step.id}: ${a['model']} production v${aliases['production'] ?? '-'} →` +
              ` v${to ?? aliases['previous'] ?? '?'}`,
      );
    }
  }
  return { ...plan, preview };
}

export interface StartedRun {
  incident: string;
  workflowId: string;
  runId: string;
  attached: boolean;
  params: Record<string, unknown>;
  version: number;
}

/**
 * Starts the playbook for the incident (opening it), or attaches to the run the incident already
 * has. Refused: an unknown playbook, parameters that do not fit, an incident that is closed or
 * runs another playbook.
 */
export async function startPlaybookRun(
  client: Client,
  db: Queryable,
  prefix: string,
  ask: RunAsk,
): Promise<StartedRun> {
  const p = await stored(db, ask.playbook, ask.version);
  const id = ask.incident.id ?? newIncidentId();
  const planned = planRun(p.definition, ask.params, {});
  checkResolvedArgs(planned);
  const params = planned.params;
  const input: RunRequest = runInputSchema.parse({
    playbook: p.name,
    version: p.version,
    params,
    incident: {
      id,
      title: ask.incident.title ?? `${p.name} (${JSON.stringify(params).slice(0, 200)})`,
      severity: ask.incident.severity ?? 'sev2',
      surface: ask.incident.surface ?? null,
    },
    initiator: ask.initiator,
  });
  const workflowId = playbookWorkflowId(id);
  const existing = await getIncident(db, id);
  if (existing && (existing.playbook !== p.name || existing.playbookVersion !== p.version)) {
    throw new PlaybookRefusal(
      'conflict',
      `incident ${id} runs ${existing.playbook} v${existing.playbookVersion},` +
        ` not ${p.name} v${p.version}`,
    );
  }
  if (existing && CLOSED.has(existing.status)) {
    throw new PlaybookRefusal('conflict', `incident ${id} is ${existing.status}; open a new one`);
  }
  await openIncident(db, {
    id,
    title: input.incident.title,
    severity: input.incident.severity,
    surface: input.incident.surface,
    playbook: p.name,
    playbookVersion: p.version,
    params,
    workflowId,
    openedBy: ask.initiator,
  });
  const running = await client.workflow
    .getHandle(workflowId)
    .describe()
    .then(
      (d) => (d.status.name === 'RUNNING' ? d.runId : undefined),
      () => undefined,
    );
  const handle = await client.workflow.start('runPlaybook', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    // A run that failed (its incident still open) may be run again; a finished one may not.
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
  });
  const described = await handle.describe();
  return {
    incident: id,
    workflowId,
    runId: described.runId,
    attached: running !== undefined && described.runId === running,
    params,
    version: p.version,
  };
}

/** The run's live state (the query), or undefined when no worker answers or it is gone. */
export async function liveState(client: Client, incident: string): Promise<RunState | undefined> {
  try {
    return await client.workflow
      .getHandle(playbookWorkflowId(incident))
      .query<RunState>(TIMELINE_QUERY);
  } catch {
    return undefined;
  }
}

/** The incident, its stored timeline, scope and export (no Temporal needed). */
export async function incidentReport(db: Queryable, id: string): Promise<IncidentReport> {
  const incident = await getIncident(db, id);
  if (!incident) throw new PlaybookRefusal('not_found', `incident "${id}" does not exist`);
  const exported = await getExport(db, id);
  return {
    incident,
    timeline: await incidentTimeline(db, id),
    scope: await scopeCounts(db, id),
    export: exported ? { rows: exported.rows, sha256: exported.sha256 } : null,
  };
}

async function runningIncident(client: Client, db: Queryable, id: string): Promise<Incident> {
  const incident = await getIncident(db, id);
  if (!incident) throw new PlaybookRefusal('not_found', `incident "${id}" does not exist`);
  try {
    const d = await client.workflow.getHandle(incident.workflowId).describe();
    if (d.status.name === 'RUNNING') return incident;
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  throw new PlaybookRefusal(
    'conflict',
    `incident ${id} has no running playbook (${incident.status})`,
  );
}

/**
 * Sends a vote to the incident's run (a signal, kept until its approval step waits). The
 * initiator's own approval is refused here when every approval step of the playbook wants
 * another person; the workflow checks each vote again against its step.
 */
export async function votePlaybook(
  client: Client,
  db: Queryable,
  id: string,
  vote: ApprovalVote,
): Promise<{ workflowId: string }> {
  const incident = await runningIncident(client, db, id);
  const p = await stored(db, incident.playbook, incident.playbookVersion);
  const approvals = p.definition.steps.filter(
    (s) => s.type === 'approval' && (vote.step === undefined || s.id === vote.step),
  );
  if (approvals.length === 0) {
    throw new PlaybookRefusal(
      'validation',
      `${p.name} has no approval step${vote.step ? ` "${vote.step}"` : ''}`,
    );
  }
  const distinct = approvals.every((s) => s.with['distinct_from_initiator'] !== false);
  if (vote.decision === 'approve' && distinct && vote.by === incident.openedBy) {
    throw new PlaybookRefusal(
      'validation',
      `${vote.by} started incident ${id} and may not approve its steps`,
    );
  }
  await client.workflow.getHandle(incident.workflowId).signal(APPROVAL_SIGNAL, vote);
  return { workflowId: incident.workflowId };
}

/** Asks the incident's run to abort: it stops and compensates its completed steps. */
export async function abortPlaybook(
  client: Client,
  db: Queryable,
  id: string,
  request: AbortRequest,
): Promise<{ workflowId: string }> {
  const incident = await runningIncident(client, db, id);
  await client.workflow.getHandle(incident.workflowId).signal(ABORT_SIGNAL, request);
  return { workflowId: incident.workflowId };
}

/** Waits for the incident's run to end. */
export async function waitForRun(client: Client, incident: string): Promise<RunResult> {
  return client.workflow.getHandle(playbookWorkflowId(incident)).result() as Promise<RunResult>;
}
