/**
 * What a CLI command runs on: configuration, the services (configured or embedded), a pool, a
 * Temporal client, and, when asked, workers in this process. `close()` undoes all of it in order.
 */
import type { Client } from '@temporalio/client';
import { type Config, loadConfig } from '../common/config.js';
import { createPool, type Pool } from '../common/db.js';
import { type Logger, logger } from '../common/logger.js';
import { QUEUE_KINDS, type QueueKind, queueName } from '../common/queues.js';
import { connectClient, connectWorker, installTemporalLogging } from '../common/temporal.js';
import { loadIdentityRules } from '../domain/identity/rules-file.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import { startServices, type Services } from '../runtime/services.js';
import { createWorkers, runWorkers as run, type RunningWorkers } from '../workers/create.js';

export interface Runtime {
  config: Config;
  log: Logger;
  services: Services;
  pool: Pool;
  client: Client;
  prefix: string;
  close(): Promise<void>;
}

export type DbRuntime = Omit<Runtime, 'client'>;

/**
 * The identity rules of POPS_IDENTITY_RULES (the defaults when unset), read before any service
 * starts so that a bad file fails at once. Throws RulesFileError naming the file and the field.
 */
export function configuredIdentityRules(): IdentityRules {
  return loadIdentityRules(loadConfig().POPS_IDENTITY_RULES);
}

/** Brings up configuration and PostgreSQL only, for commands that never touch Temporal. */
export async function openDatabase(): Promise<DbRuntime> {
  const config = loadConfig();
  const log = logger(config.LOG_LEVEL);
  const services = await startServices(config, log, { temporal: false });
  const pool = createPool(services.databaseUrl);
  return {
    config,
    log,
    services,
    pool,
    prefix: config.POPS_TASK_QUEUE_PREFIX,
    async close() {
      await pool.end();
      await services.stop();
    },
  };
}

/** Brings up configuration, services, pool and client. */
export async function openRuntime(): Promise<Runtime> {
  const config = loadConfig();
  const log = logger(config.LOG_LEVEL);
  const services = await startServices(config, log);
  const pool = createPool(services.databaseUrl);
  let client: Client;
  try {
    client = await connectClient(config, {
      address: services.temporalAddress,
      namespace: config.TEMPORAL_NAMESPACE,
    });
  } catch (err) {
    await pool.end();
    await services.stop();
    throw err;
  }
  return {
    config,
    log,
    services,
    pool,
    client,
    prefix: config.POPS_TASK_QUEUE_PREFIX,
    async close() {
      await client.connection.close();
      await pool.end();
      await services.stop();
    },
  };
}

/** Runs workers for the given queues in this process until `stop()`. */
export async function runWorkers(
  rt: Runtime,
  queues: readonly QueueKind[] = QUEUE_KINDS,
): Promise<RunningWorkers> {
  installTemporalLogging(rt.log);
  const connection = await connectWorker(rt.config, {
    address: rt.services.temporalAddress,
    namespace: rt.config.TEMPORAL_NAMESPACE,
  });
  const workers = await createWorkers({
    connection,
    namespace: rt.config.TEMPORAL_NAMESPACE,
    prefix: rt.prefix,
    queues,
    pool: rt.pool,
    log: rt.log,
    trainBackend: rt.config.POPS_TRAIN_BACKEND,
    client: rt.client,
  });
  const polling = workers.map((w) => w.options.taskQueue);
  if (polling.length > 0) rt.log.info({ queues: polling }, 'workers running');
  return run(workers, connection);
}

/** Whether some worker polls the orchestration queue (so a started workflow will make progress). */
export async function hasPollers(rt: Runtime): Promise<boolean> {
  const response = await rt.client.workflowService.describeTaskQueue({
    namespace: rt.config.TEMPORAL_NAMESPACE,
    taskQueue: { name: queueName(rt.prefix, 'orchestration') },
    taskQueueType: 1, // workflow tasks
  });
  return (response.pollers ?? []).length > 0;
}
