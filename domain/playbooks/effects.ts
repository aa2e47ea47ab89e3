/**
 * The effects of playbook steps on the rest of pops, each keyed so that a retry repeats nothing:
 * running rollouts to freeze, surfaces routed to a rolled-back version (and back), a surface's
 * mode (and back), the persons in scope, feature quality over a range, and outbound HTTP calls
 * through the playbook_effects ledger.
 */
import type { Pool, Queryable } from '../../common/db.js';
import type { Route } from '../decide/routing.js';
import { getSurface, setMode, setRoutes } from '../decide/surfaces.js';

/** The running rollouts on a surface or on every surface of a model. */
export async function runningRollouts(
  db: Queryable,
  where: { surface?: string | undefined; model?: string | undefined },
): Promise<Array<{ surface: string; workflowId: string }>> {
  const { rows } = await db.query<{ surface: string; workflow_id: string }>(
    `select surface, workflow_id from rollouts
      where state = 'running' and ($1::text is null or surface = $1)
        and ($2::text is null or model = $2)
      order by surface`,
    [where.surface ?? null, where.model ?? null],
  );
  return rows.map((r) => ({ surface: r.surface, workflowId: r.workflow_id }));
}

export interface Rerouted {
  surface: string;
  generation: number;
  /** The routes before, for compensation. */
  previous: Route[];
}

/**
 * Routes every surface of the model to `version` alone, each change keyed `<key>/<surface>`. A
 * surface already serving only that version is left as it is (and not listed).
 */
export async function rerouteModel(
  pool: Pool,
  r: {
    model: string;
    version: number;
    key: string;
    actor: string;
    reason: string;
    workflowId: string;
  },
): Promise<Rerouted[]> {
  const { rows } = await pool.query<{ name: string }>(
    'select name from surfaces where model = $1 order by name',
    [r.model],
  );
  const done: Rerouted[] = [];
  for (const { name } of rows) {
    const changeKey = `${r.key}/${name}`;
    const recorded = await pool.query<{ generation: number }>(
      'select generation from routing_changes where change_key = $1',
      [changeKey],
    );
    const previous = recorded.rows[0]
      ? await routesBefore(pool, name, recorded.rows[0].generation)
      : ((await getSurface(pool, name))?.routes ?? []);
    const result = await setRoutes(pool, {
      surface: name,
      routes: [{ version: r.version, role: 'stable', weightBp: 10_000 }],
      actor: r.actor,
      reason: r.reason,
      workflowId: r.workflowId,
      changeKey,
    });
    if (result.change) done.push({ surface: name, generation: result.change.generation, previous });
  }
  return done;
}

/** The routes a surface had just before the change that produced `generation`. */
async function routesBefore(db: Queryable, surface: string, generation: number): Promise<Route[]> {
  const { rows } = await db.query<{ routes: Route[] }>(
    `select routes from routing_changes where surface = $1 and generation < $2
      order by generation desc limit 1`,
    [surface, generation],
  );
  return rows[0]?.routes ?? [];
}

/** Puts routes back (compensation), keyed like any change. */
export async function restoreRoutes(
  pool: Pool,
  r: { surfaces: Rerouted[]; key: string; actor: string; reason: string; workflowId: string },
): Promise<Array<{ surface: string; generation: number }>> {
  const out: Array<{ surface: string; generation: number }> = [];
  for (const s of r.surfaces) {
    if (s.previous.length === 0) continue;
    const result = await setRoutes(pool, {
      surface: s.surface,
      routes: s.previous,
      actor: r.actor,
      reason: r.reason,
      workflowId: r.workflowId,
      changeKey: `${r.key}/${s.surface}`,
    });
    out.push({ surface: s.surface, generation: result.surface.generation });
  }
  return out;
}

/**
 * Sets a surface's mode under changeKey and answers the mode before (from the change history
 * when a retry finds the change already made) and the generation in force.
 */
export async function setModeKeyed(
  pool: Pool,
  m: {
    surface: string;
    mode: string;
    changeKey: string;
    actor: string;
    reason: string;
    workflowId: string;
  },
): Promise<{ surface: string; from: string; to: string; generation: number; changed: boolean }> {
  const before = await getSurface(pool, m.surface);
  const result = await setMode(pool, { ...m, mode: m.mode as 'normal' });
  let from: string = before?.mode ?? 'normal';
  if (result.change && !result.changed) {
    const prior = await pool.query<{ mode: string }>(
      `select mode from routing_changes where surface = $1 and generation < $2
        order by generation desc limit 1`,
      [m.surface, result.change.generation],
    );
    from = prior.rows[0]?.mode ?? 'normal';
  }
  return {
    surface: m.surface,
    from,
    to: m.mode,
    generation: result.surface.generation,
    changed: result.changed || result.change !== null,
  };
}

/**
 * Writes the persons exposed to a version (of a model, on a surface) and/or in a window into the
 * incident's scope, one row per person with its decisions; rows already there are kept, so a
 * retry adds nothing. Answers the scope's counts after.
 */
export async function writeScope(
  db: Queryable,
  s: {
    incident: string;
    stepId: string;
    surface?: string | undefined;
    model?: string | undefined;
    version?: number | undefined;
    from?: string | undefined;
    to?: string | undefined;
  },
): Promise<{ persons: number; decisions: number; surfaces: string[] }> {
  await db.query(
    `insert into incident_scope
       (incident_id, person_key, decisions, surfaces, versions, first_at, last_at, step_id)
     select $1, e.person_id, count(*)::int, array_agg(distinct e.surface order by e.surface),
            array_remove(array_agg(distinct e.version order by e.version), null),
            min(e.at), max(e.at), $2
       from exposures e join surfaces s on s.name = e.surface
      where ($3::text is null or e.surface = $3)
        and ($4::text is null or s.model = $4)
        and ($5::int is null or e.version = $5)
        and ($6::timestamptz is null or e.at >= $6)
        and ($7::timestamptz is null or e.at < $7)
      group by e.person_id
     on conflict (incident_id, person_key) do nothing`,
    [
      s.incident,
      s.stepId,
      s.surface ?? null,
      s.model ?? null,
      s.version ?? null,
      s.from ?? null,
      s.to ?? null,
    ],
  );
  const { rows } = await db.query<{ persons: number; decisions: number; surfaces: string[] }>(
    `select count(*)::int as persons, coalesce(sum(decisions), 0)::int as decisions,
            coalesce(array(select distinct unnest(surfaces) from incident_scope
                            where incident_id = $1 order by 1), '{}') as surfaces
       from incident_scope where incident_id = $1`,
    [s.incident],
  );
  return rows[0] ?? { persons: 0, decisions: 0, surfaces: [] };
}

/** The quality of each feature's partitions over [from, to]: counts by status, days missing. */
export async function featureQuality(
  db: Queryable,
  q: { features: string[]; from: string; to: string },
): Promise<Array<{ feature: string; ok: number; warn: number; fail: number; missing: number }>> {
  const out = [];
  for (const ref of q.features) {
    const [name, version] = ref.split('@');
    const { rows } = await db.query<{ ok: number; warn: number; fail: number; days: number }>(
      `select count(*) filter (where p.quality_status = 'ok')::int as ok,
              count(*) filter (where p.quality_status = 'warn')::int as warn,
              count(*) filter (where p.quality_status = 'fail')::int as fail,
              (select count(*)::int from generate_series($3::date, $4::date, '1 day') d) as days
         from feature_partitions p
        where p.name = $1 and p.version = $2 and p.day between $3::date and $4::date`,
      [name, Number(version), q.from, q.to],
    );
    const r = rows[0] ?? { ok: 0, warn: 0, fail: 0, days: 0 };
    out.push({
      feature: ref,
      ok: r.ok,
      warn: r.warn,
      fail: r.fail,
      missing: r.days - r.ok - r.warn - r.fail,
    });
  }
  return out;
}

export interface Delivery {
  effectKey: string;
  incident: string;
  stepId: string;
  kind: string;
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: unknown;
  okStatus: number[];
  timeoutMs: number;
  /** The worker's environment variable holding a bearer token (read here, never recorded). */
  authEnv?: string;
}

export interface Delivered {
  status: number;
  body: unknown;
  attempts: number;
  /** True when a completed call was found in the ledger and nothing was sent. */
  replayed: boolean;
}

/** Thrown when the endpoint answered a status that is not a success (retryable). */
export class DeliveryError extends Error {}

/**
 * One outbound call through the ledger: a completed call is answered from it; otherwise the row
 * is written (or its attempts counted) before the call, which carries `Idempotency-Key:
 * <effectKey>` so a receiver can drop a repeat after an interrupted attempt.
 */
export async function deliver(db: Queryable, d: Delivery): Promise<Delivered> {
  const row = await db.query<{ status: string; response: Delivered | null; attempts: number }>(
    `insert into playbook_effects (effect_key, incident_id, step_id, kind, attempts)
     values ($1, $2, $3, $4, 1)
     on conflict (effect_key) do update
       set attempts = playbook_effects.attempts + case when playbook_effects.status = 'done'
                                                  then 0 else 1 end,
           updated_at = now()
     returning status, response, attempts`,
    [d.effectKey, d.incident, d.stepId, d.kind],
  );
  const ledger = row.rows[0];
  if (ledger?.status === 'done' && ledger.response) return { ...ledger.response, replayed: true };
  const token = d.authEnv ? process.env[d.authEnv] : undefined;
  const response = await fetch(d.url, {
    method: d.method,
    headers: {
      'content-type': 'application/json',
      'idempotency-key': d.effectKey,
      ...d.headers,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(d.body !== undefined && d.method !== 'GET' ? { body: JSON.stringify(d.body) } : {}),
    signal: AbortSignal.timeout(d.timeoutMs),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    body = text.slice(0, 2000);
  }
  if (!d.okStatus.includes(response.status)) {
    throw new DeliveryError(
      `${d.method} ${d.url} answered ${response.status}: ${text.slice(0, 200)}`,
    );
  }
  const delivered: Delivered = {
    status: response.status,
    body,
    attempts: ledger?.attempts ?? 1,
    replayed: false,
  };
  await db.query(
    `update playbook_effects set status = 'done', response = $2::jsonb, updated_at = now()
      where effect_key = $1`,
    [d.effectKey, JSON.stringify(delivered)],
  );
  return delivered;
}
