/**
 * `pops playbook list|register|plan|run|status|approve|reject|abort`: the incident playbooks. `run`
 * starts the playbook for an incident and, unless --no-wait, runs workers in this process and
 * prints the timeline as it grows until the run ends (an approval step waits for `pops playbook
 * approve <incident>` from another shell).
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import {
  abortPlaybook,
  incidentReport,
  liveState,
  planPlaybook,
  registerPlaybookText,
  registerShipped,
  type RunAsk,
  startPlaybookRun,
  votePlaybook,
} from '../client/playbooks.js';
import { type Parameter, paramFromText } from '../domain/playbooks/definition.js';
import { timelineText } from '../domain/playbooks/markdown.js';
import type { RunState } from '../domain/playbooks/run.js';
import { getPlaybook, listPlaybooks } from '../domain/playbooks/store.js';
import { plainText } from '../domain/retrain.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { hasPollers, openDatabase, openRuntime, runWorkers } from './runtime.js';

const runArgs = z.object({
  version: z.coerce.number().int().min(1).optional(),
  param: z.array(z.string()).default([]),
  incident: z.string().optional(),
  title: plainText(300).optional(),
  severity: z.enum(['sev1', 'sev2', 'sev3', 'sev4']).optional(),
  surface: z.string().optional(),
  wait: z.boolean().default(true),
  json: z.boolean().default(false),
});

function paramsOf(pairs: string[], declared: Record<string, Parameter>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--param ${JSON.stringify(pair)} is not name=value`);
    const name = pair.slice(0, eq);
    out[name] = paramFromText(declared[name], pair.slice(eq + 1));
  }
  return out;
}

async function askOf(
  db: Parameters<typeof getPlaybook>[0],
  name: string,
  args: z.output<typeof runArgs>,
  initiator: string,
): Promise<RunAsk> {
  const p = await getPlaybook(db, name, args.version);
  return {
    playbook: name,
    ...(args.version !== undefined ? { version: args.version } : {}),
    params: paramsOf(args.param, p?.definition.parameters ?? {}),
    incident: {
      ...(args.incident ? { id: args.incident } : {}),
      ...(args.title ? { title: args.title } : {}),
      ...(args.severity ? { severity: args.severity } : {}),
      ...(args.surface ? { surface: args.surface } : {}),
    },
    initiator,
  };
}

/** `pops playbook list`. */
export async function listCommand(options: Record<string, unknown>): Promise<void> {
  const json = options['json'] === true;
  const rt = await openDatabase();
  try {
    await registerShipped(rt.pool, rt.config.POPS_ACTOR);
    const all = await listPlaybooks(rt.pool);
    print(json, all, () =>
      table(
        ['playbook', 'version', 'steps', 'parameters', 'description'],
        all.map((p) => [
          p.name,
          p.version,
          p.definition.steps.length,
          Object.keys(p.definition.parameters).join(','),
          p.description.split('\n')[0]?.slice(0, 70) ?? '',
        ]),
      ),
    );
  } finally {
    await rt.close();
  }
}

/** `pops playbook register <file>`. */
export async function registerCommand(file: string, options: Record<string, unknown>) {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
  const rt = await openDatabase();
  try {
    const r = await registerPlaybookText(rt.pool, text, file, rt.config.POPS_ACTOR);
    print(
      options['json'] === true,
      r,
      () =>
        `${r.registered ? 'registered' : 'already registered'}` +
        ` ${r.playbook.name} v${r.playbook.version}`,
    );
  } finally {
    await rt.close();
  }
}

/** `pops playbook plan <name> [--param k=v]…`: the dry run. */
export async function planCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(runArgs, options);
  const rt = await openDatabase();
  try {
    await registerShipped(rt.pool, rt.config.POPS_ACTOR);
    const plan = await planPlaybook(
      rt.pool,
      await askOf(rt.pool, name, args, rt.config.POPS_ACTOR),
    );
    print(args.json, plan, () =>
      [
        `${plan.playbook} v${plan.version} — dry run, nothing is changed`,
        `parameters: ${JSON.stringify(plan.params)}`,
        '',
        table(
          ['#', 'step', 'type', 'branch', 'on failure', 'undo', 'arguments'],
          plan.steps.map((s, i) => [
            i + 1,
            s.id,
            s.type,
            s.when ? `${s.branch} (when ${s.when})` : s.branch,
            s.onFailure,
            s.undo ? 'yes' : '',
            JSON.stringify(s.args).slice(0, 80),
          ]),
        ),
        ...(plan.preview.length > 0 ? ['', ...plan.preview] : []),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops playbook run <name> [--param k=v]… [--incident id] [--no-wait]`. */
export async function runCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(runArgs, options);
  const rt = await openRuntime();
  try {
    await registerShipped(rt.pool, rt.config.POPS_ACTOR);
    const ask = await askOf(rt.pool, name, args, rt.config.POPS_ACTOR);
    const started = await startPlaybookRun(rt.client, rt.pool, rt.prefix, ask);
    const line =
      `${started.attached ? 'attached to' : 'started'} ${name} v${started.version}` +
      ` for incident ${started.incident} (${started.workflowId})`;
    if (!args.wait) {
      if (!(await hasPollers(rt))) {
        rt.log.warn('no worker polls the orchestration queue; start one with: npm start');
      }
      print(args.json, started, () => line);
      return;
    }
    if (!args.json) process.stdout.write(`${line}\n`);
    const local = await runWorkers(rt);
    try {
      const end = await follow(rt.client, started.incident, args.json);
      const handle = rt.client.workflow.getHandle(started.workflowId);
      const result = (await handle.result()) as { status: string };
      print(args.json, { ...started, result, state: end }, () => `run ${result.status}`);
      if (result.status !== 'resolved') process.exitCode = 1;
    } finally {
      await local.stop();
    }
  } finally {
    await rt.close();
  }
}

/** Prints new timeline entries until the run ends; answers the last state. */
async function follow(
  client: Parameters<typeof liveState>[0],
  incident: string,
  quiet: boolean,
): Promise<RunState | undefined> {
  let shown = 0;
  let last: RunState | undefined;
  let waitingFor: string | null = null;
  for (;;) {
    const state = await liveState(client, incident);
    if (state) {
      last = state;
      const fresh = state.timeline.slice(shown);
      shown = state.timeline.length;
      if (!quiet && fresh.length > 0) process.stdout.write(`${timelineText(fresh)}\n`);
      const w = state.waiting;
      if (!quiet && w && w.step !== waitingFor) {
        process.stdout.write(
          `waiting for approval of ${w.step} (quorum ${w.quorum}` +
            `${w.approvers.length > 0 ? `, approvers ${w.approvers.join(', ')}` : ''};` +
            ` until ${w.deadline}): pops playbook approve ${incident} --reason …\n`,
        );
      }
      waitingFor = w?.step ?? null;
      if (['resolved', 'failed', 'aborted'].includes(state.status)) return state;
    }
    const d = await client.workflow.getHandle(`playbook/${incident}`).describe();
    if (d.status.name !== 'RUNNING') return last;
    await sleep(250);
  }
}

const voteArgs = z.object({
  step: z.string().optional(),
  reason: plainText(1000),
  json: z.boolean().default(false),
});

async function vote(
  incident: string,
  options: Record<string, unknown>,
  decision: 'approve' | 'reject',
) {
  const args = parseArgs(voteArgs, options);
  const rt = await openRuntime();
  try {
    const sent = await votePlaybook(rt.client, rt.pool, incident, {
      decision,
      by: rt.config.POPS_ACTOR,
      reason: args.reason,
      ...(args.step ? { step: args.step } : {}),
    });
    print(
      args.json,
      { ...sent, decision },
      () =>
        `${decision} by ${rt.config.POPS_ACTOR} sent to ${sent.workflowId}` +
        ' (counted when its approval step waits; pops playbook status shows it)',
    );
  } finally {
    await rt.close();
  }
}

/** `pops playbook approve <incident> --reason R [--step S]`. */
export async function approveCommand(incident: string, options: Record<string, unknown>) {
  await vote(incident, options, 'approve');
}

/** `pops playbook reject <incident> --reason R [--step S]`. */
export async function rejectCommand(incident: string, options: Record<string, unknown>) {
  await vote(incident, options, 'reject');
}

/** `pops playbook abort <incident> --reason R`: stop and compensate. */
export async function abortCommand(incident: string, options: Record<string, unknown>) {
  const args = parseArgs(voteArgs, options);
  const rt = await openRuntime();
  try {
    const sent = await abortPlaybook(rt.client, rt.pool, incident, {
      by: rt.config.POPS_ACTOR,
      reason: args.reason,
    });
    print(args.json, sent, () => `abort sent to ${sent.workflowId}`);
  } finally {
    await rt.close();
  }
}

/** `pops playbook status <incident>`: the live state when a worker answers, else the tables. */
export async function statusCommand(incident: string, options: Record<string, unknown>) {
  const json = options['json'] === true;
  const rt = await openRuntime();
  try {
    const report = await incidentReport(rt.pool, incident);
    const live = await liveState(rt.client, incident);
    print(json, { ...report, live: live ?? null }, () =>
      [
        `incident ${incident}: ${report.incident.status} (${report.incident.playbook}` +
          ` v${report.incident.playbookVersion})`,
        ...(live
          ? [
              table(
                ['step', 'type', 'outcome'],
                live.steps.map((s) => [s.id, s.type, s.outcome]),
              ),
            ]
          : []),
        ...(live?.waiting
          ? [
              `waiting: ${live.waiting.step}, approved by ` +
                (live.waiting.approvedBy.join(', ') || 'nobody') +
                ` of quorum ${live.waiting.quorum}, until ${live.waiting.deadline}`,
            ]
          : []),
        ...(live && live.buffered > 0 ? [`votes buffered for later steps: ${live.buffered}`] : []),
        '',
        timelineText(report.timeline),
      ].join('\n'),
    );
    // Like `pops status` of a failed workflow, and `pops playbook run` of a run that did not
    // resolve.
    if (report.incident.status === 'failed') process.exitCode = 1;
  } finally {
    await rt.close();
  }
}
