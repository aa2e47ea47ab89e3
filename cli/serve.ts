/** `pops serve` (every worker and the API) and `pops worker --queue …` (one queue's workers). */
import { z } from 'zod';
import { buildApi } from '../api/server.js';
import { ensureMaterializeSchedule } from '../client/backfill.js';
import { ensureDriftSchedules } from '../client/drift.js';
import { describeMergeSchedule, ensureMergeSchedule } from '../client/identity.js';
import { stateDir } from '../common/config.js';
import { QUEUE_KINDS, type QueueKind } from '../common/queues.js';
import { catcherForServe } from '../domain/campaigns/capture.js';
import { parseArgs } from './output.js';
import { preparePrivacy } from './privacy.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import { configuredIdentityRules, openRuntime, type Runtime, runWorkers } from './runtime.js';

/** Resolves when the process is asked to stop (Ctrl-C or SIGTERM). */
function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    // The handlers stay installed: a second Ctrl-C (npm and tsx forward the signal too) must not
    // kill the process with Node's default handler halfway through stopping the embedded servers.
    let first: string | undefined;
    const on = (signal: string) => () => {
      if (first) return;
      first = signal;
      resolve(signal);
    };
    process.on('SIGINT', on('SIGINT'));
    process.on('SIGTERM', on('SIGTERM'));
  });
}

/**
 * Has the schedule of identity merges exist, unless POPS_IDENTITY_MERGE_EVERY is `off` (then an
 * existing one is left alone, with a warning when it still runs).
 */
async function scheduleIdentityMerges(rt: Runtime, rules: IdentityRules): Promise<void> {
  const every = rt.config.POPS_IDENTITY_MERGE_EVERY;
  if (every === 'off') {
    const existing = await describeMergeSchedule(rt.client);
    if (existing && !existing.paused) {
      rt.log.warn(
        { schedule: existing.scheduleId, every: existing.every },
        'POPS_IDENTITY_MERGE_EVERY is off but the identity merge schedule exists and runs;' +
          ' pause it with: pops identity schedule --pause',
      );
    }
    return;
  }
  const state = await ensureMergeSchedule(rt.client, rt.prefix, {
    rules,
    ...(every ? { every } : {}),
  });
  rt.log.info(
    { schedule: state.scheduleId, every: state.every, paused: state.paused },
    'identity merges are scheduled',
  );
}

/** Has the schedule of incremental feature materialization exist, unless it is `off`. */
async function scheduleMaterialization(rt: Runtime): Promise<void> {
  const every = rt.config.POPS_FEATURES_MATERIALIZE_EVERY;
  if (every === 'off') return;
  await ensureMaterializeSchedule(rt.client, rt.prefix, every);
  rt.log.info({ every: every ?? '15m' }, 'feature materialization is scheduled');
}

/** `pops serve`: every worker and the API in one process until Ctrl-C. */
export async function serveCommand(): Promise<void> {
  const identityRules = configuredIdentityRules();
  const rt = await openRuntime();
  // Campaign mail goes to a local catcher (.eml files) unless POPS_SMTP_URL names a server.
  const catcher = await catcherForServe(rt.config, stateDir(rt.config), rt.log);
  const workers = await runWorkers(rt);
  let privacy: Awaited<ReturnType<typeof preparePrivacy>>;
  try {
    privacy = await preparePrivacy(rt);
    await scheduleIdentityMerges(rt, identityRules);
    await scheduleMaterialization(rt);
    const watched = await ensureDriftSchedules(rt.pool, rt.client, rt.prefix);
    if (watched.length) rt.log.info({ models: watched }, 'drift monitors are scheduled');
  } catch (err) {
    await workers.stop();
    await catcher?.close();
    await rt.close();
    throw err;
  }
  const api = buildApi({
    pool: rt.pool,
    temporal: rt.client,
    queuePrefix: rt.prefix,
    log: rt.log,
    actor: 'api',
    identityRules,
    consentTraits: privacy.consentTraits,
  });
  await api.listen({ host: rt.config.POPS_HTTP_HOST, port: rt.config.POPS_HTTP_PORT });
  rt.log.info(
    {
      api: `http://${rt.config.POPS_HTTP_HOST}:${rt.config.POPS_HTTP_PORT}`,
      temporalUi: rt.services.temporalUiUrl,
    },
    'pops is serving; Ctrl-C stops it',
  );
  // To the terminal only: a token is a secret, and logs are kept and shipped.
  if (privacy.firstToken) process.stdout.write(`${privacy.firstToken}\n`);
  const signal = await untilSignal();
  rt.log.info({ signal }, 'stopping');
  await api.close();
  await workers.stop();
  await catcher?.close();
  await rt.close();
}

const queueArg = z.enum([...QUEUE_KINDS, 'all']);

/** `pops worker --queue <orchestration|training|io|all>`. */
export async function workerCommand(options: { queue: string }): Promise<void> {
  const { queue } = parseArgs(z.object({ queue: queueArg }), options);
  const queues: readonly QueueKind[] = queue === 'all' ? QUEUE_KINDS : [queue];
  const rt = await openRuntime();
  const workers = await runWorkers(rt, queues);
  if (workers.workers.length === 0) {
    process.stdout.write(`queue ${queue} has nothing to run yet; no worker started\n`);
    await workers.stop();
    await rt.close();
    return;
  }
  const signal = await untilSignal();
  rt.log.info({ signal }, 'stopping');
  await workers.stop();
  await rt.close();
}
