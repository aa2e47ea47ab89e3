/**
 * Client-side operations on rollouts, shared by the CLI and the HTTP API: start one (or attach to
 * the one running on the surface), read its status (the workflow's live state when a worker
 * answers, the stored row and decisions always), and send it a person's pause, resume, approve
 * or abort.
 */
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import type { Queryable } from '../common/db.js';
import { InputError } from '../common/failures.js';
import { queueName } from '../common/queues.js';
import {
  ABORT_SIGNAL,
  APPROVE_SIGNAL,
  PAUSE_SIGNAL,
  RESUME_SIGNAL,
  type RolloutAction,
  type RolloutApproval,
  type RolloutRequest,
  type RolloutState,
  rolloutWorkflowId,
  STATE_QUERY,
  type TickSummary,
} from '../domain/rollout/config.js';
import { getSurface } from '../domain/decide/surfaces.js';
import { listDecisions, listRollouts, type StoredRollout } from '../domain/rollout/store.js';

/** Thrown when a rollout cannot be started or signalled as asked; `kind` picks the answer. */
export class RolloutRefusal extends InputError {
  constructor(
    readonly kind: 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

export interface StartedRollout {
  workflowId: string;
  runId: string;
  /** True when a rollout of this version was already running on the surface. */
  attached: boolean;
}

/**
 * Why a rollout request cannot start, checked before its workflow is: the surface, its model, the
 * version, and that the version is not what the surface already serves as stable. Undefined: it
 * may start (a running rollout of the same version is attached to).
 */
export async function rolloutRefusal(
  db: Queryable,
  request: Pick<RolloutRequest, 'surface' | 'model' | 'version'>,
): Promise<RolloutRefusal | undefined> {
  const surface = await getSurface(db, request.surface);
  if (!surface) {
    return new RolloutRefusal('not_found', `surface "${request.surface}" does not exist`);
  }
  if (surface.model !== request.model) {
    return new RolloutRefusal(
      'conflict',
      `surface "${request.surface}" serves model "${surface.model}", not "${request.model}"`,
    );
  }
  const version = await db.query('select 1 from model_versions where model = $1 and version = $2', [
    request.model,
    request.version,
  ]);
  if (!version.rowCount) {
    return new RolloutRefusal(
      'not_found',
      `model "${request.model}" has no version ${request.version}`,
    );
  }
  const stable = surface.routes.find((r) => r.role === 'stable');
  if (stable?.version === request.version && !surface.routes.some((r) => r.role === 'canary')) {
    return new RolloutRefusal(
      'conflict',
      `surface "${request.surface}" already serves version ${request.version} as stable`,
    );
  }
  return undefined;
}

/**
 * Starts the rollout of `request.version` on its surface, or attaches to the one running there
 * when it rolls out the same model version; a running rollout of another version is a conflict.
 */
export async function startRollout(
  client: Client,
  prefix: string,
  request: RolloutRequest,
  db?: Queryable,
): Promise<StartedRollout> {
  const workflowId = rolloutWorkflowId(request.surface);
  const running = await describe(client, workflowId);
  if (running?.status === 'RUNNING') {
    requireSame(request, running);
    return { workflowId, runId: running.runId, attached: true };
  }
  // With the database at hand, a request that cannot start is refused before its workflow is.
  const refusal = db ? await rolloutRefusal(db, request) : undefined;
  if (refusal) throw refusal;
  const handle = await client.workflow.start('rolloutModel', {
    workflowId,
    taskQueue: queueName(prefix, 'orchestration'),
    args: [request],
    memo: { model: request.model, version: request.version },
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  // Another start may have won the race: the one that runs is what this request gets.
  const started = await describe(client, workflowId);
  if (started) requireSame(request, started);
  const runId = started?.runId ?? handle.firstExecutionRunId;
  return { workflowId, runId, attached: runId !== handle.firstExecutionRunId };
}

function requireSame(request: RolloutRequest, running: Described): void {
  const { model, version } = running.memo;
  if (model === request.model && version === request.version) return;
  throw new RolloutRefusal(
    'conflict',
    `surface "${request.surface}" is already rolling out ${model ?? '?'} v${version ?? '?'}` +
      ` (${rolloutWorkflowId(request.surface)}): abort it first`,
  );
}

/** What `pops rollout status` and GET /v1/rollouts/:surface show. */
export interface RolloutStatus {
  surface: string;
  workflowId: string;
  /** The workflow's status (RUNNING, COMPLETED, FAILED, ...), or null if it never ran. */
  workflow: { runId: string; status: string; startTime: string; closeTime?: string } | null;
  /** The live state from the workflow's query, when it runs and a worker answered. */
  live: RolloutState | null;
  /** The latest stored rollout of the surface and its latest decisions, newest first. */
  stored: StoredRollout | null;
  decisions: TickSummary[];
  /** The surface's earlier rollouts, newest first (at most `earlier`, default 10). */
  earlier: StoredRollout[];
}

/** The surface's rollout status; undefined when it never had one. */
export async function rolloutStatus(
  client: Client,
  db: Queryable,
  surface: string,
  options: { decisions?: number; earlier?: number; queryTimeoutMs?: number } = {},
): Promise<RolloutStatus | undefined> {
  const workflowId = rolloutWorkflowId(surface);
  const [stored, ...earlier] = await listRollouts(db, surface, 1 + (options.earlier ?? 10));
  const described = await describe(client, workflowId);
  if (!stored && !described) return undefined;
  const workflow = described ? withoutMemo(described) : null;
  let live: RolloutState | null = null;
  if (workflow?.status === 'RUNNING') {
    live = await withTimeout(
      client.workflow.getHandle(workflowId).query<RolloutState>(STATE_QUERY),
      options.queryTimeoutMs ?? 3000,
    ).catch(() => null);
  }
  const decisions = stored
    ? await listDecisions(db, stored.rolloutKey, options.decisions ?? 20)
    : [];
  return { surface, workflowId, workflow, live, stored: stored ?? null, decisions, earlier };
}

type Described = NonNullable<RolloutStatus['workflow']> & {
  memo: { model?: string; version?: number };
};

async function describe(client: Client, workflowId: string): Promise<Described | null> {
  try {
    const d = await client.workflow.getHandle(workflowId).describe();
    return {
      runId: d.runId,
      status: d.status.name,
      startTime: d.startTime.toISOString(),
      ...(d.closeTime ? { closeTime: d.closeTime.toISOString() } : {}),
      memo: (d.memo ?? {}) as Described['memo'],
    };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

function withoutMemo(d: Described): NonNullable<RolloutStatus['workflow']> {
  const { memo: _memo, ...rest } = d;
  return rest;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** What a person can do to a running rollout. */
export type RolloutCommand = 'pause' | 'resume' | 'approve' | 'abort';

const SIGNALS: Record<RolloutCommand, string> = {
  pause: PAUSE_SIGNAL,
  resume: RESUME_SIGNAL,
  approve: APPROVE_SIGNAL,
  abort: ABORT_SIGNAL,
};

/**
 * Sends the command to the surface's running rollout (a signal: durable even while no worker
 * runs, applied in order at the workflow's next step; an early approval is kept). Refused when no
 * rollout runs there.
 */
export async function signalRollout(
  client: Client,
  surface: string,
  command: RolloutCommand,
  payload: RolloutAction | RolloutApproval,
): Promise<{ workflowId: string; runId: string }> {
  const workflowId = rolloutWorkflowId(surface);
  const workflow = await describe(client, workflowId);
  if (workflow?.status !== 'RUNNING') {
    throw new RolloutRefusal('not_found', `no rollout is running on surface "${surface}"`);
  }
  await client.workflow.getHandle(workflowId, workflow.runId).signal(SIGNALS[command], payload);
  return { workflowId, runId: workflow.runId };
}
