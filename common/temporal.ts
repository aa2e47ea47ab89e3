/**
 * Connection options for Temporal, shared by clients and workers: address, namespace, and the mTLS
 * or API-key settings a Temporal Cloud or self-hosted cluster needs.
 */
import fs from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export interface TemporalTarget {
  address: string;
  namespace: string;
}

function tlsOptions(config: Config) {
  const { TEMPORAL_TLS_CERT: cert, TEMPORAL_TLS_KEY: key, TEMPORAL_TLS_CA: ca } = config;
  if (!cert && !key && !ca && !config.TEMPORAL_API_KEY) return undefined;
  if ((cert && !key) || (key && !cert)) {
    throw new Error('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together');
  }
  return {
    ...(ca ? { serverRootCACertificate: fs.readFileSync(ca) } : {}),
    ...(cert && key
      ? { clientCertPair: { crt: fs.readFileSync(cert), key: fs.readFileSync(key) } }
      : {}),
  };
}

function connectionOptions(config: Config, address: string) {
  const tls = tlsOptions(config);
  return {
    address,
    ...(tls ? { tls } : {}),
    ...(config.TEMPORAL_API_KEY ? { apiKey: config.TEMPORAL_API_KEY } : {}),
  };
}

/** A workflow client on the target. */
export async function connectClient(config: Config, target: TemporalTarget): Promise<Client> {
  const connection = await Connection.connect(connectionOptions(config, target.address));
  return new Client({ connection, namespace: target.namespace });
}

/** A worker connection on the target. */
export function connectWorker(config: Config, target: TemporalTarget): Promise<NativeConnection> {
  return NativeConnection.connect(connectionOptions(config, target.address));
}

let runtimeInstalled = false;

/**
 * Routes the Temporal SDK's own logs (workers, bundler) into pops' logger, at warn and above unless
 * LOG_LEVEL asks for debug. Must run before the first worker or native connection; later calls
 * do nothing.
 */
export function installTemporalLogging(log: Logger): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = log.isLevelEnabled('debug') ? 'DEBUG' : 'WARN';
  const sdk = log.child({ component: 'temporal-sdk' });
  const logger = new DefaultLogger(level, (entry) => {
    // A training or io worker has no workflows by design; the SDK warns about it on every start.
    if (entry.message.startsWith('No workflows registered')) return;
    // Errors would serialize as {}: keep what a reader needs.
    const attributes = Object.fromEntries(
      Object.entries(entry.meta ?? {}).map(([key, value]) => [
        key,
        value instanceof Error
          ? {
              message: value.message,
              type: value.name,
              cause: value.cause instanceof Error ? value.cause.message : undefined,
            }
          : value,
      ]),
    );
    if (entry.level === 'ERROR') sdk.error(attributes, entry.message);
    else if (entry.level === 'WARN') sdk.warn(attributes, entry.message);
    else sdk.debug(attributes, entry.message);
  });
  try {
    Runtime.install({ logger });
  } catch {
    // A runtime already exists in this process (for example one created by the test harness).
  }
}
