/**
 * `pops simulate traffic --surface S --rate R [--duration 60s] [--data <MovieLens dir>]
 * [--holdout-from <instant>] [--api <url> | --serve]`: replays held-out MovieLens interactions
 * against `POST /v1/decide` (domain/decide/replay.ts) and prints requests, decisions, clicks and
 * CTR per arm, and errors. The held-out period starts at --holdout-from, by default at the end of
 * the validation window of the surface model's production version. The held-out ratings come from
 * --data's ratings.csv, else from the model's event source. --serve starts an API in this process
 * on a loopback port instead of calling a running one (--api, default http://127.0.0.1:8080).
 */
import { z } from 'zod';
import { buildApi } from '../api/server.js';
import { withEphemeralToken } from '../domain/privacy/tokens.js';
import {
  describeReplay,
  heldOutFromCsv,
  heldOutFromEvents,
  type ReplayPerson,
  replayTraffic,
} from '../domain/decide/replay.js';
import { getSurface } from '../domain/decide/surfaces.js';
import { getAliases, getVersion } from '../domain/registry.js';
import { durationMs, durationSchema, surfaceNameSchema } from '../domain/rollout/config.js';
import { parseArgs, print, UsageError } from './output.js';
import { type DbRuntime, openDatabase, openRuntime, type Runtime } from './runtime.js';

const trafficArgs = z.object({
  surface: surfaceNameSchema,
  rate: z.coerce.number().gt(0).max(100_000),
  duration: durationSchema.default('60s'),
  data: z.string().optional(),
  holdoutFrom: z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), 'must be an instant (ISO 8601)')
    .optional(),
  api: z.url().default('http://127.0.0.1:8080'),
  serve: z.boolean().default(false),
  k: z.coerce.number().int().min(1).max(100).default(10),
  seed: z.coerce.number().int().default(1),
  json: z.boolean().default(false),
});

/** The held-out persons of a surface, and the holdout instant used. */
export async function heldOutFor(
  db: DbRuntime['pool'],
  surface: string,
  options: { data?: string | undefined; holdoutFrom?: string | undefined },
): Promise<{ persons: ReplayPerson[]; holdoutFrom: Date }> {
  const found = await getSurface(db, surface);
  if (!found) throw new UsageError(`surface "${surface}" does not exist (pops surfaces create)`);
  let from = options.holdoutFrom ? new Date(options.holdoutFrom) : undefined;
  if (!from) {
    const production = (await getAliases(db, found.model))['production'];
    const version = production ? await getVersion(db, found.model, production) : undefined;
    if (!version) {
      throw new UsageError(
        `model "${found.model}" has no production version: name the period with --holdout-from`,
      );
    }
    from = new Date(version.dataRange.validateUntil);
  }
  let persons: ReplayPerson[];
  if (options.data) {
    persons = heldOutFromCsv(options.data, from);
  } else {
    const { rows } = await db.query<{ source: string }>(
      'select source from models where name = $1',
      [found.model],
    );
    persons = await heldOutFromEvents(db, rows[0]?.source ?? '', from);
  }
  if (persons.length === 0) {
    throw new UsageError(
      `no ratings at or after ${from.toISOString()} to replay` +
        (options.data
          ? ''
          : ` in model ${found.model}'s event source: pass --data <MovieLens dir>`),
    );
  }
  return { persons, holdoutFrom: from };
}

/** `pops simulate traffic`; see the module comment. */
export async function trafficCommand(options: Record<string, unknown>): Promise<void> {
  const args = parseArgs(trafficArgs, options);
  const full: Runtime | undefined = args.serve ? await openRuntime() : undefined;
  const rt: DbRuntime = full ?? (await openDatabase());
  let api: ReturnType<typeof buildApi> | undefined;
  try {
    const { persons, holdoutFrom } = await heldOutFor(rt.pool, args.surface, args);
    let base = args.api.replace(/\/$/, '');
    if (full) {
      api = buildApi({
        pool: rt.pool,
        temporal: full.client,
        queuePrefix: rt.prefix,
        log: rt.log,
        actor: rt.config.POPS_ACTOR,
        trainBackend: rt.config.POPS_TRAIN_BACKEND,
      });
      base = await api.listen({ host: '127.0.0.1', port: 0 });
    }
    const run = (token: string | undefined) =>
      replayTraffic({
        api: base,
        token,
        surface: args.surface,
        persons,
        rate: args.rate,
        durationMs: durationMs(args.duration),
        k: args.k,
        seed: args.seed,
      });
    // An API of this process gets a token for the run; another one, the caller's POPS_TOKEN.
    const report = full
      ? await withEphemeralToken(rt.pool, 'ingest', 'simulate-traffic', run)
      : await run(rt.config.POPS_TOKEN);
    print(
      args.json,
      {
        surface: args.surface,
        holdoutFrom: holdoutFrom.toISOString(),
        persons: persons.length,
        ...report,
      },
      () =>
        [
          `replayed ${persons.length} held-out persons (ratings from ${holdoutFrom.toISOString()})` +
            ` against ${base}/v1/decide, surface ${args.surface}, at ${args.rate}/s asked`,
          describeReplay(report),
          ...(report.decisions === 0 && report.errors > 0 && !full
            ? [`no decision answered: is the API running at ${base}? (npm start, or --serve)`]
            : []),
        ].join('\n'),
    );
  } finally {
    await api?.close();
    await rt.close();
  }
}
