/**
 * The contract of a surface's routing table and mode, shared by the decision server, the API, the
 * CLI and the rollout workflow: names, routes and their rules, modes, and the change request.
 * Pure (zod only), so workflow code may import it.
 */
import { z } from 'zod';
import { modelNameSchema, plainText } from '../names.js';
import { versionNumberSchema } from '../rollback.js';

/** Basis points of a surface's traffic: routes' weights sum to this. */
export const FULL_WEIGHT_BP = 10_000;

/** Surfaces are named like models: lowercase letters, digits, dot, dash, underscore. */
export const surfaceNameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,62}$/,
    'is not a surface name: lowercase letters, digits, dot, dash, underscore; 1-63 chars',
  );

/**
 * normal: the routed version decides. conservative and rules-only: the rules answer (popular
 * items the person has not consumed) and the exposure records the mode as the fallback's cause.
 */
export const SURFACE_MODES = ['normal', 'conservative', 'rules-only'] as const;
export type SurfaceMode = (typeof SURFACE_MODES)[number];
export const surfaceModeSchema = z.enum(SURFACE_MODES, {
  error: `is not a mode (${SURFACE_MODES.join(', ')})`,
});

export const ROUTE_ROLES = ['stable', 'canary'] as const;

export const routeSchema = z.object({
  version: versionNumberSchema,
  role: z.enum(ROUTE_ROLES, { error: `is not a role (${ROUTE_ROLES.join(', ')})` }),
  weightBp: z.number().int().min(0).max(FULL_WEIGHT_BP),
});

/**
 * A surface's routes: one stable, at most one canary, distinct versions, weights summing to 10000.
 */
export const routesSchema = z
  .array(routeSchema)
  .min(1)
  .max(2)
  .superRefine((routes, ctx) => {
    const stables = routes.filter((r) => r.role === 'stable').length;
    if (stables !== 1) {
      ctx.addIssue({ code: 'custom', message: `need exactly one stable route; got ${stables}` });
    }
    if (new Set(routes.map((r) => r.version)).size !== routes.length) {
      ctx.addIssue({ code: 'custom', message: 'routes name the same version twice' });
    }
    const total = routes.reduce((sum, r) => sum + r.weightBp, 0);
    if (total !== FULL_WEIGHT_BP) {
      ctx.addIssue({
        code: 'custom',
        message: `weights must sum to ${FULL_WEIGHT_BP} bp; got ${total}`,
      });
    }
  });

export type Route = z.output<typeof routeSchema>;

/** Who changes a surface and why; changeKey makes a retried change record nothing twice. */
const byWhom = {
  surface: surfaceNameSchema,
  actor: plainText(200),
  reason: plainText(500),
  workflowId: z.string().min(1).max(1000).nullish(),
  changeKey: z.string().min(1).max(1000).nullish(),
};

export const setRoutesSchema = z.object({ ...byWhom, routes: routesSchema });
export const setModeSchema = z.object({ ...byWhom, mode: surfaceModeSchema });

const filterValue = plainText(200);
/** What a surface never shows: items by id, and items of any of the genres (exact, as imported). */
export const surfaceFiltersSchema = z.strictObject({
  excludeItems: z
    .array(filterValue)
    .max(10_000)
    .default([])
    .transform((v) => [...new Set(v)].sort()),
  excludeGenres: z
    .array(filterValue)
    .max(200)
    .default([])
    .transform((v) => [...new Set(v)].sort()),
});
export type SurfaceFilters = z.output<typeof surfaceFiltersSchema>;
export const setFiltersSchema = z.object({ ...byWhom, filters: surfaceFiltersSchema });
export type SetFiltersRequest = z.input<typeof setFiltersSchema>;
export const createSurfaceSchema = z.object({
  name: surfaceNameSchema,
  model: modelNameSchema,
  actor: plainText(200),
  reason: plainText(500).default('surface created'),
});

export type SetRoutesRequest = z.input<typeof setRoutesSchema>;
export type SetModeRequest = z.input<typeof setModeSchema>;
export type CreateSurfaceRequest = z.input<typeof createSurfaceSchema>;
