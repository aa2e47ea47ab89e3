/**
 * verify_serving: proves a surface serves a version by asking the decider for decisions, the same
 * code path as POST /v1/decide (domain/decide/decider.ts: routing table, bucketing, the version's
 * artifact loaded and scored). Run in the worker rather than as an HTTP call so that it works
 * wherever a playbook runs (`pops playbook run` with in-process workers has no API); a playbook
 * that should also check a running API adds an `http` step against /v1/decide (rollback-model does
 * when `api_url` is given). Probe persons are `playbook-probe:<incident>:<n>`, anonymous; their
 * decisions are logged as exposures like any other (with that person id, easy to leave out).
 */
import type { Pool } from '../../common/db.js';
import type { Logger } from '../../common/logger.js';
import { Decider, decideRequestSchema } from '../decide/decider.js';

const deciders = new Map<Pool, Decider>();

/** One decider per pool for the life of the worker (its model cache is what makes it quick). */
function deciderFor(pool: Pool, log: Logger): Decider {
  let d = deciders.get(pool);
  if (!d) {
    d = new Decider({ pool, log });
    deciders.set(pool, d);
  }
  return d;
}

/** Closes the deciders (flushing their exposures); for worker shutdown and tests. */
export async function closeDeciders(): Promise<void> {
  const all = [...deciders.values()];
  deciders.clear();
  await Promise.allSettled(all.map((d) => d.close()));
}

export interface Verified {
  surface: string;
  version: number;
  probes: number;
  /** Decisions by the version that answered them ('rules (<cause>)' for a fallback). */
  served: Record<string, number>;
  /** The routing generation the decider served under (the surface's latest). */
  generation: number;
}

/** Thrown when a probe was answered by another version or by the rules (retryable). */
export class NotServingError extends Error {}

/**
 * Asks `probes` decisions of each surface (the one named, or every surface of the model) once the
 * decider has loaded the surface's latest generation, and requires every one from `version`
 * without a fallback.
 */
export async function verifyServing(
  pool: Pool,
  log: Logger,
  v: { incident: string; surface?: string; model?: string; version: number; probes: number },
): Promise<{ version: number; surfaces: Verified[] }> {
  const { rows } = await pool.query<{ name: string; generation: number }>(
    `select name, generation::int as generation from surfaces
      where ($1::text is null or name = $1) and ($2::text is null or model = $2) order by name`,
    [v.surface ?? null, v.model ?? null],
  );
  if (rows.length === 0) {
    throw new NotServingError(
      `no surface matches ${JSON.stringify({ surface: v.surface, model: v.model })}`,
    );
  }
  const surfaces: Verified[] = [];
  for (const s of rows) surfaces.push(await verifySurface(pool, log, v, s.name, s.generation));
  return { version: v.version, surfaces };
}

async function verifySurface(
  pool: Pool,
  log: Logger,
  v: { incident: string; version: number; probes: number },
  surface: string,
  generation: number,
): Promise<Verified> {
  const decider = deciderFor(pool, log);
  // A surface not loaded here yet counts as loaded: its first decision reads the table fresh.
  if (!(await decider.waitForGeneration(surface, generation, 5000))) {
    throw new NotServingError(
      `the decider did not load generation ${generation} of ${surface} in 5 s`,
    );
  }
  // Asked at once, as concurrent requests reach a server.
  const decisions = await Promise.all(
    Array.from({ length: v.probes }, (_, n) =>
      decider.decide(
        decideRequestSchema.parse({
          surface,
          anonymousId: `playbook-probe:${v.incident}:${n}`,
          k: 3,
        }),
      ),
    ),
  );
  const served: Record<string, number> = {};
  for (const d of decisions) {
    const key = d.fallback ? `rules (${d.fallback})` : `v${d.version ?? '?'}`;
    served[key] = (served[key] ?? 0) + 1;
  }
  const wrong = decisions.filter((d) => d.version !== v.version || d.fallback !== null);
  if (wrong.length > 0) {
    throw new NotServingError(
      `${surface}: ${wrong.length} of ${decisions.length} probe decisions were not served by` +
        ` version ${v.version} (${JSON.stringify(served)})`,
    );
  }
  return {
    surface,
    version: v.version,
    probes: decisions.length,
    served,
    generation: decider.servedGeneration(surface) ?? generation,
  };
}
