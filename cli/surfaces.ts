/**
 * `pops surfaces create|show|mode|filters`: decision surfaces, their routing tables, modes and
 * business filters
 * (domain/decide/surfaces.ts). Bad input exits 2 naming the field and the value.
 */
import { z } from 'zod';
import {
  surfaceFiltersSchema,
  surfaceModeSchema,
  surfaceNameSchema,
} from '../domain/decide/routing.js';
import {
  createSurface,
  getSurface,
  routingChanges,
  type RoutingChange,
  type Surface,
  SurfaceRefusal,
  setFilters,
  setMode,
} from '../domain/decide/surfaces.js';
import { modelNameSchema, plainText } from '../domain/retrain.js';
import { parseArgs, print, table } from './output.js';
import { openDatabase } from './runtime.js';

const createArgs = z.object({
  name: surfaceNameSchema,
  model: modelNameSchema,
  reason: plainText(500).optional(),
  json: z.boolean().default(false),
});
const showArgs = z.object({
  name: surfaceNameSchema,
  json: z.boolean().default(false),
});
const modeArgs = z.object({
  name: surfaceNameSchema,
  mode: surfaceModeSchema,
  reason: plainText(500),
  json: z.boolean().default(false),
});

const list = z
  .string()
  .transform((v) => v.split(',').map((x) => x.trim()))
  .optional();
const filtersArgs = z.object({
  name: surfaceNameSchema,
  excludeItems: list,
  excludeGenres: list,
  clear: z.boolean().default(false),
  reason: plainText(500),
  json: z.boolean().default(false),
});

function filtersText(surface: Surface): string {
  const { excludeItems, excludeGenres } = surface.filters;
  if (excludeItems.length === 0 && excludeGenres.length === 0) return 'filters: none';
  return (
    `filters: never shows items ${excludeItems.join(', ') || '-'};` +
    ` never shows genres ${excludeGenres.join(', ') || '-'}`
  );
}

function routesText(surface: Surface): string {
  return table(
    ['version', 'role', 'weight'],
    surface.routes.map((r) => [r.version, r.role, `${(r.weightBp / 100).toFixed(2)}%`]),
  );
}

function changeLine(c: RoutingChange): string {
  const routes = c.routes.map((r) => `v${r.version} ${r.role} ${r.weightBp}bp`).join(', ');
  const by = c.workflowId ? `${c.actor} (${c.workflowId})` : c.actor;
  return `${c.at}  gen ${c.generation}  ${c.mode}  ${routes}  by ${by}: ${c.reason}`;
}

function surfaceText(surface: Surface, changes: RoutingChange[]): string {
  return [
    `surface ${surface.name}: model ${surface.model}, mode ${surface.mode}, generation ${surface.generation}`,
    routesText(surface),
    filtersText(surface),
    ...(changes.length > 0 ? ['changes (newest first):', ...changes.map(changeLine)] : []),
  ].join('\n');
}

function withoutSalt(surface: Surface) {
  const { salt: _salt, ...rest } = surface;
  return rest;
}

/** `pops surfaces create <name> --model M [--reason R]`. */
export async function createCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(createArgs, { ...options, name });
  const rt = await openDatabase();
  try {
    const result = await createSurface(rt.pool, {
      name: args.name,
      model: args.model,
      actor: rt.config.POPS_ACTOR,
      ...(args.reason ? { reason: args.reason } : {}),
    });
    print(args.json, { ...withoutSalt(result.surface), created: result.changed }, () =>
      [
        `${result.changed ? 'created' : 'exists:'} surface ${args.name} serving ${args.model}`,
        routesText(result.surface),
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops surfaces show <name>`: routes, mode, generation and recent changes. */
export async function showCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(showArgs, { ...options, name });
  const rt = await openDatabase();
  try {
    const surface = await getSurface(rt.pool, args.name);
    if (!surface) throw new SurfaceRefusal('not_found', `surface "${args.name}" does not exist`);
    const changes = await routingChanges(rt.pool, args.name, 20);
    print(args.json, { ...withoutSalt(surface), changes }, () => surfaceText(surface, changes));
  } finally {
    await rt.close();
  }
}

/** `pops surfaces mode <name> <normal|conservative|rules-only> --reason R`. */
export async function modeCommand(name: string, mode: string, options: Record<string, unknown>) {
  const args = parseArgs(modeArgs, { ...options, name, mode });
  const rt = await openDatabase();
  try {
    const result = await setMode(rt.pool, {
      surface: args.name,
      mode: args.mode,
      reason: args.reason,
      actor: rt.config.POPS_ACTOR,
    });
    print(args.json, { ...withoutSalt(result.surface), changed: result.changed }, () =>
      result.changed
        ? `surface ${args.name}: mode ${args.mode} (generation ${result.surface.generation})`
        : `surface ${args.name}: already in mode ${args.mode}`,
    );
  } finally {
    await rt.close();
  }
}

/**
 * `pops surfaces filters <name> [--exclude-items a,b] [--exclude-genres G,H] [--clear] --reason R`:
 * replaces the surface's business filters (the lists given; `--clear` empties both).
 */
export async function filtersCommand(name: string, options: Record<string, unknown>) {
  const args = parseArgs(filtersArgs, { ...options, name });
  const rt = await openDatabase();
  try {
    const current = await getSurface(rt.pool, args.name);
    if (!current) throw new SurfaceRefusal('not_found', `surface "${args.name}" does not exist`);
    const filters = parseArgs(
      surfaceFiltersSchema,
      args.clear
        ? {}
        : {
            excludeItems: args.excludeItems ?? current.filters.excludeItems,
            excludeGenres: args.excludeGenres ?? current.filters.excludeGenres,
          },
    );
    const result = await setFilters(rt.pool, {
      surface: args.name,
      filters,
      reason: args.reason,
      actor: rt.config.POPS_ACTOR,
    });
    print(args.json, { ...withoutSalt(result.surface), changed: result.changed }, () =>
      result.changed
        ? `surface ${args.name}: ${filtersText(result.surface)}` +
          ` (generation ${result.surface.generation})`
        : `surface ${args.name}: unchanged, ${filtersText(result.surface)}`,
    );
  } finally {
    await rt.close();
  }
}
