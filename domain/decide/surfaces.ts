/**
 * Surfaces and their routing tables (migrations/0012_decisions.sql): creation, route and mode
 * changes, and reads. Every change runs in one transaction under the surface's row lock: it
 * replaces the routes or the mode, bumps `generation` (which decision servers poll, see
 * domain/decide/decider.ts), appends one routing_changes row with who, why and which workflow, and
 * audits. A change whose changeKey is already recorded changes nothing and answers what was
 * recorded, so an activity that retries it repeats nothing; a change to what is already in force
 * records nothing either.
 */
import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { describeZodError, InputError } from '../../common/failures.js';
import { appendAuditIn } from '../audit.js';
import { PRODUCTION } from '../rollback.js';
import {
  createSurfaceSchema,
  type CreateSurfaceRequest,
  FULL_WEIGHT_BP,
  type Route,
  setFiltersSchema,
  type SetFiltersRequest,
  setModeSchema,
  type SetModeRequest,
  setRoutesSchema,
  type SetRoutesRequest,
  type SurfaceFilters,
  type SurfaceMode,
} from './routing.js';

/** Thrown for a surface change that cannot be made as asked; the message names the value. */
export class SurfaceRefusal extends InputError {
  constructor(
    readonly kind: 'validation' | 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

/** A surface as stored, with its routes (stable first). */
export interface Surface {
  name: string;
  model: string;
  mode: SurfaceMode;
  salt: string;
  generation: number;
  routes: Route[];
  /** What the surface never shows (domain/decide/routing.ts surfaceFiltersSchema). */
  filters: SurfaceFilters;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** One recorded routing or mode change: the routes and mode after it, under its generation. */
export interface RoutingChange {
  id: number;
  surface: string;
  generation: number;
  routes: Route[];
  mode: SurfaceMode;
  /** The filters after the change (absent on changes recorded before filters existed). */
  filters?: SurfaceFilters;
  actor: string;
  reason: string;
  workflowId: string | null;
  changeKey: string | null;
  at: string;
}

/** What a change answers: the surface after it, and whether this call changed anything. */
export interface ChangeResult {
  surface: Surface;
  changed: boolean;
  /** The change recorded (by this call or, for a repeated changeKey, by the first); null: none. */
  change: RoutingChange | null;
}

interface SurfaceRow {
  name: string;
  model: string;
  mode: SurfaceMode;
  salt: string;
  generation: number;
  filters: SurfaceFilters;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

interface ChangeRow {
  id: number;
  surface: string;
  generation: number;
  routes: Route[];
  mode: SurfaceMode;
  filters: SurfaceFilters | null;
  actor: string;
  reason: string;
  workflow_id: string | null;
  change_key: string | null;
  at: Date;
}

function parsed<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new SurfaceRefusal(
    'validation',
    `invalid ${what}: ${describeZodError(result.error, input)}`,
  );
}

function changeOf(row: ChangeRow): RoutingChange {
  return {
    id: row.id,
    surface: row.surface,
    generation: row.generation,
    routes: row.routes,
    mode: row.mode,
    ...(row.filters ? { filters: row.filters } : {}),
    actor: row.actor,
    reason: row.reason,
    workflowId: row.workflow_id,
    changeKey: row.change_key,
    at: row.at.toISOString(),
  };
}

/** Stable first, then the canary: the order every reader sees. */
function ordered(routes: readonly Route[]): Route[] {
  return [...routes].sort((a, b) => (a.role === b.role ? 0 : a.role === 'stable' ? -1 : 1));
}

async function routesOf(db: Queryable, surface: string): Promise<Route[]> {
  const { rows } = await db.query<Route>(
    `select version, role, weight_bp as "weightBp" from surface_routes where surface = $1`,
    [surface],
  );
  return ordered(rows);
}

function surfaceOf(row: SurfaceRow, routes: Route[]): Surface {
  return {
    name: row.name,
    model: row.model,
    mode: row.mode,
    salt: row.salt,
    generation: row.generation,
    routes,
    filters: row.filters,
    createdBy: row.created_by,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** The surface with its routes, or undefined. */
export async function getSurface(db: Queryable, name: string): Promise<Surface | undefined> {
  const { rows } = await db.query<SurfaceRow>('select * from surfaces where name = $1', [name]);
  const row = rows[0];
  return row ? surfaceOf(row, await routesOf(db, name)) : undefined;
}

/** Every surface's generation (what decision servers poll). */
export async function surfaceGenerations(db: Queryable): Promise<Map<string, number>> {
  const { rows } = await db.query<{ name: string; generation: number }>({
    name: 'pops-surface-generations',
    text: 'select name, generation from surfaces',
  });
  return new Map(rows.map((r) => [r.name, r.generation]));
}

/** Every surface, by name. */
export async function listSurfaces(db: Queryable): Promise<Surface[]> {
  const { rows } = await db.query<SurfaceRow>('select * from surfaces order by name');
  return Promise.all(rows.map(async (row) => surfaceOf(row, await routesOf(db, row.name))));
}

/** The surface's routing and mode changes, newest first. */
export async function routingChanges(
  db: Queryable,
  surface: string,
  limit = 100,
): Promise<RoutingChange[]> {
  const { rows } = await db.query<ChangeRow>(
    'select * from routing_changes where surface = $1 order by generation desc limit $2',
    [surface, limit],
  );
  return rows.map(changeOf);
}

/**
 * Creates a surface serving its model's `production` version at 10000 bp, mode normal, with a
 * random salt. Creating it again for the same model changes nothing (changed: false). Refused:
 * a bad name, an undeclared model, a model without a production version, a name taken by another
 * model's surface.
 */
export async function createSurface(pool: Pool, raw: CreateSurfaceRequest): Promise<ChangeResult> {
  const input = parsed(createSurfaceSchema, raw, 'surface');
  return withTransaction(pool, async (client) => {
    await client.query('select pg_advisory_xact_lock(hashtext($1))', [`surface/${input.name}`]);
    const existing = await getSurface(client, input.name);
    if (existing) {
      if (existing.model !== input.model) {
        throw new SurfaceRefusal(
          'conflict',
          `surface "${input.name}" already serves model "${existing.model}", not "${input.model}"`,
        );
      }
      return { surface: existing, changed: false, change: null };
    }
    const production = await productionVersion(client, input.model);
    const salt = randomBytes(16).toString('hex');
    await client.query(
      `insert into surfaces (name, model, mode, salt, generation, created_by)
       values ($1, $2, 'normal', $3, 1, $4)`,
      [input.name, input.model, salt, input.actor],
    );
    const routes: Route[] = [{ version: production, role: 'stable', weightBp: FULL_WEIGHT_BP }];
    await insertRoutes(client, input.name, input.model, routes);
    const change = await recordChange(client, {
      surface: input.name,
      generation: 1,
      routes,
      mode: 'normal',
      actor: input.actor,
      reason: input.reason,
      workflowId: null,
      changeKey: null,
    });
    await audit(client, 'surface.created', change, { model: input.model });
    const surface = await getSurface(client, input.name);
    if (!surface) throw new Error(`surface ${input.name} vanished inside its own transaction`);
    return { surface, changed: true, change };
  });
}

async function productionVersion(client: PoolClient, model: string): Promise<number> {
  const declared = await client.query('select 1 from models where name = $1', [model]);
  if ((declared.rowCount ?? 0) === 0) {
    throw new SurfaceRefusal('not_found', `model "${model}" is not declared`);
  }
  const { rows } = await client.query<{ version: number }>(
    'select version from model_aliases where model = $1 and alias = $2',
    [model, PRODUCTION],
  );
  const version = rows[0]?.version;
  if (version === undefined) {
    throw new SurfaceRefusal(
      'conflict',
      `model "${model}" has no ${PRODUCTION} version to serve yet (promote one first)`,
    );
  }
  return version;
}

/**
 * Replaces the surface's routes, in one transaction: one stable route, at most one canary, weights
 * summing to 10000 bp, versions of the surface's model. Bumps the generation and records the
 * change; see the module comment for repeated keys and changes to what is in force.
 */
export async function setRoutes(pool: Pool, raw: SetRoutesRequest): Promise<ChangeResult> {
  const input = parsed(setRoutesSchema, raw, 'routes');
  const routes = ordered(input.routes);
  return change(pool, input, async (client, surface) => {
    if (sameRoutes(surface.routes, routes)) return undefined;
    await requireVersions(client, surface.model, routes);
    await client.query('delete from surface_routes where surface = $1', [surface.name]);
    await insertRoutes(client, surface.name, surface.model, routes);
    return { routes, mode: surface.mode, action: 'surface.routed' };
  });
}

/** Sets the surface's mode (normal | conservative | rules-only), recorded like a route change. */
export async function setMode(pool: Pool, raw: SetModeRequest): Promise<ChangeResult> {
  const input = parsed(setModeSchema, raw, 'mode');
  return change(pool, input, async (client, surface) => {
    if (surface.mode === input.mode) return undefined;
    await client.query('update surfaces set mode = $2 where name = $1', [surface.name, input.mode]);
    return { routes: surface.routes, mode: input.mode, action: 'surface.mode-set' };
  });
}

/** Replaces the surface's business filters, recorded like a route change. */
export async function setFilters(pool: Pool, raw: SetFiltersRequest): Promise<ChangeResult> {
  const input = parsed(setFiltersSchema, raw, 'filters');
  return change(pool, input, async (client, surface) => {
    if (JSON.stringify(surface.filters) === JSON.stringify(input.filters)) return undefined;
    await client.query('update surfaces set filters = $2::jsonb where name = $1', [
      surface.name,
      JSON.stringify(input.filters),
    ]);
    return {
      routes: surface.routes,
      mode: surface.mode,
      filters: input.filters,
      action: 'surface.filters-set',
    };
  });
}

type ChangeInput =
  | z.output<typeof setRoutesSchema>
  | z.output<typeof setModeSchema>
  | z.output<typeof setFiltersSchema>;

/**
 * The frame of every change: lock the surface, answer a recorded changeKey, apply, bump the
 * generation, record and audit. `apply` returns undefined when the change is already in force.
 */
async function change(
  pool: Pool,
  input: ChangeInput,
  apply: (
    client: PoolClient,
    surface: Surface,
  ) => Promise<
    { routes: Route[]; mode: SurfaceMode; filters?: SurfaceFilters; action: string } | undefined
  >,
): Promise<ChangeResult> {
  return withTransaction(pool, async (client) => {
    const locked = await client.query<SurfaceRow>(
      'select * from surfaces where name = $1 for update',
      [input.surface],
    );
    const row = locked.rows[0];
    if (!row) throw new SurfaceRefusal('not_found', `surface "${input.surface}" does not exist`);
    const current = surfaceOf(row, await routesOf(client, row.name));
    if (input.changeKey) {
      const done = await recordedChange(client, input.changeKey, input.surface);
      if (done) return { surface: current, changed: false, change: done };
    }
    const applied = await apply(client, current);
    if (!applied) return { surface: current, changed: false, change: null };
    const bumped = await client.query<{ generation: number }>(
      `update surfaces set generation = generation + 1, updated_at = now()
        where name = $1 returning generation`,
      [row.name],
    );
    const generation = bumped.rows[0]?.generation ?? row.generation + 1;
    const recorded = await recordChange(client, {
      surface: row.name,
      generation,
      routes: applied.routes,
      mode: applied.mode,
      filters: applied.filters ?? current.filters,
      actor: input.actor,
      reason: input.reason,
      workflowId: input.workflowId ?? null,
      changeKey: input.changeKey ?? null,
    });
    await audit(client, applied.action, recorded, {
      fromGeneration: row.generation,
      fromRoutes: current.routes,
      fromMode: current.mode,
      ...(applied.filters ? { fromFilters: current.filters } : {}),
    });
    const after = await getSurface(client, row.name);
    if (!after) throw new Error(`surface ${row.name} vanished inside its own transaction`);
    return { surface: after, changed: true, change: recorded };
  });
}

async function recordedChange(
  client: PoolClient,
  key: string,
  surface: string,
): Promise<RoutingChange | undefined> {
  const { rows } = await client.query<ChangeRow>(
    'select * from routing_changes where change_key = $1',
    [key],
  );
  const row = rows[0];
  if (!row) return undefined;
  if (row.surface !== surface) {
    throw new SurfaceRefusal(
      'conflict',
      `change key ${JSON.stringify(key)} already changed surface "${row.surface}", not "${surface}"`,
    );
  }
  return changeOf(row);
}

function sameRoutes(a: readonly Route[], b: readonly Route[]): boolean {
  const key = (routes: readonly Route[]) =>
    JSON.stringify(ordered(routes).map((r) => [r.version, r.role, r.weightBp]));
  return key(a) === key(b);
}

async function requireVersions(client: PoolClient, model: string, routes: Route[]) {
  const versions = routes.map((r) => r.version);
  const { rows } = await client.query<{ version: number }>(
    'select version from model_versions where model = $1 and version = any($2::int[])',
    [model, versions],
  );
  const found = new Set(rows.map((r) => r.version));
  const missing = versions.filter((v) => !found.has(v));
  if (missing.length > 0) {
    throw new SurfaceRefusal(
      'not_found',
      `model "${model}" has no version ${missing.join(', ')} (routes.version)`,
    );
  }
}

async function insertRoutes(client: PoolClient, surface: string, model: string, routes: Route[]) {
  await client.query(
    `insert into surface_routes (surface, model, version, role, weight_bp)
     select $1, $2, r.version, r.role, r.weight_bp
       from unnest($3::int[], $4::text[], $5::int[]) as r(version, role, weight_bp)`,
    [
      surface,
      model,
      routes.map((r) => r.version),
      routes.map((r) => r.role),
      routes.map((r) => r.weightBp),
    ],
  );
}

async function recordChange(
  client: PoolClient,
  c: Omit<RoutingChange, 'id' | 'at'>,
): Promise<RoutingChange> {
  const { rows } = await client.query<ChangeRow>(
    `insert into routing_changes
       (surface, generation, routes, mode, filters, actor, reason, workflow_id, change_key)
     values ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8, $9)
     returning *`,
    [
      c.surface,
      c.generation,
      JSON.stringify(c.routes),
      c.mode,
      c.filters ? JSON.stringify(c.filters) : null,
      c.actor,
      c.reason,
      c.workflowId,
      c.changeKey,
    ],
  );
  const row = rows[0];
  if (!row) throw new Error('routing_changes insert returned no row');
  return changeOf(row);
}

async function audit(
  client: PoolClient,
  action: string,
  c: RoutingChange,
  before: Record<string, unknown>,
): Promise<void> {
  await appendAuditIn(client, {
    actor: c.actor,
    action,
    subject: `surface/${c.surface}`,
    workflowId: c.workflowId,
    idempotencyKey: c.changeKey ? `surface/${c.surface}/${c.changeKey}` : null,
    inputs: { reason: c.reason, ...before },
    outputs: { generation: c.generation, routes: c.routes, mode: c.mode, filters: c.filters },
  });
}
