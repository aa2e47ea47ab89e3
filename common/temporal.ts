/**
 * Connection options for Temporal, shared by clients and workers: address, namespace, and the mTLS
 * or API-key settings a Temporal Cloud or self-hosted cluster needs.
 */
import fs from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { Config } from './config.js';

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
    ...(cert && key ? { clientCertPair: { crt: fs.readFileSync(cert), key: fs.readFileSync(key) } } : {}),
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
