/**
 * Shared by the playbook tests: one trained model per file (MovieLens users 1..150, promoted),
 * copied into a fresh model per test whose production is version 2 (previous 1, the same artifact)
 * and which a surface serves; a loopback webhook that counts hits and distinct idempotency keys;
 * and helpers to run a playbook and wait for its state.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@temporalio/client';
import { liveState, registerPlaybookText, startPlaybookRun } from '../client/playbooks.js';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import type { Pool } from '../common/db.js';
import { createSurface } from '../domain/decide/surfaces.js';
import type { RunResult, RunState } from '../domain/playbooks/run.js';
import { declareModel, promoteVersion } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { prepareModel } from './retrain-support.js';

/** Trains version 1 of `model` on the slice and promotes it. */
export async function trainBase(
  pool: Pool,
  client: Client,
  prefix: string,
  dir: string,
  source: string,
  model: string,
): Promise<void> {
  await prepareModel(pool, dir, source, model);
  const run = await startRetrain(
    client,
    prefix,
    retrainInputSchema.parse({
      model,
      reason: 'playbook tests',
      requestedBy: 'tester',
      trainUntil: '2004-01-01T00:00:00Z',
      validateUntil: '2005-01-01T00:00:00Z',
      training: { epochs: 2 },
    }),
  );
  await client.workflow
    .getHandle(run.workflowId, run.runId)
    .signal('approvePromotion', { by: 'lead', reason: 'first model' });
  const result = await waitForRetrain(client, run.workflowId, run.runId);
  if (result.promotion.outcome !== 'promoted') throw new Error('base model not promoted');
}

/**
 * A model `name` over the base model's source with versions 1 and 2 (the base's version 1 row),
 * production 2 and previous 1, and a surface `<name>-s` serving version 2.
 */
export async function fixtureModel(pool: Pool, base: string, name: string): Promise<string> {
  const source = await pool.query<{ source: string }>('select source from models where name = $1', [
    base,
  ]);
  await declareModel(pool, { name, source: source.rows[0]?.source ?? '', createdBy: 'tester' });
  for (const version of [1, 2]) {
    await pool.query(
      `insert into model_versions
       select (jsonb_populate_record(null::model_versions, to_jsonb(v) || jsonb_build_object(
                 'model', $2::text, 'version', $3::int, 'run_key', $4::text))).*
         from model_versions v where model = $1 and version = 1`,
      [base, name, version, `${name}/v${version}`],
    );
  }
  for (const version of [1, 2]) {
    await promoteVersion(pool, {
      model: name,
      version,
      actor: 'tester',
      reason: 'fixture',
      workflowId: null,
      moveKey: `${name}/promote/${version}`,
    });
  }
  const surface = `${name}-s`;
  await createSurface(pool, { name: surface, model: name, actor: 'tester', reason: 'fixture' });
  return surface;
}

export interface Webhook {
  url: string;
  hits: Array<{ key: string; body: unknown }>;
  /** Distinct Idempotency-Key values received. */
  keys(): Set<string>;
  /** Holds the next request unanswered until `release()` (for crash tests). */
  hold(): { received: Promise<void>; release(): void };
  close(): Promise<void>;
}

/** An HTTP server on loopback that records every request and answers 200. */
export async function startWebhook(): Promise<Webhook> {
  const hits: Webhook['hits'] = [];
  let held: { resolveReceived: () => void; wait: Promise<void> } | undefined;
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const key = String(req.headers['idempotency-key'] ?? '');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // Recorded as text.
      }
      hits.push({ key, body });
      const answer = () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: true }));
      };
      if (held) {
        const h = held;
        held = undefined;
        h.resolveReceived();
        void h.wait.then(answer, answer);
      } else {
        answer();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    hits,
    keys: () => new Set(hits.map((h) => h.key)),
    hold() {
      let resolveReceived = () => undefined as void;
      const received = new Promise<void>((r) => (resolveReceived = r));
      let release = () => undefined as void;
      const wait = new Promise<void>((r) => (release = r));
      held = { resolveReceived, wait };
      return { received, release };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Polls `probe` until it answers something truthy; fails naming `what` after the timeout. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | false | null>,
  ms = 120_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(
    `timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`,
  );
}

/** Registers YAML and starts it for a new incident; answers the incident id. */
export async function runText(
  client: Client,
  pool: Pool,
  prefix: string,
  yaml: string,
  params: Record<string, unknown>,
  incident: string,
  initiator = 'alice',
): Promise<string> {
  const { playbook } = await registerPlaybookText(pool, yaml, `${incident}.yaml`, 'tester');
  await startPlaybookRun(client, pool, prefix, {
    playbook: playbook.name,
    version: playbook.version,
    params,
    incident: { id: incident, title: `test ${incident}` },
    initiator,
  });
  return incident;
}

/** Waits until the run waits at approval step `step` (answers the state). */
export function waitingAt(
  client: Client,
  incident: string,
  step: string,
  ms = 120_000,
): Promise<RunState> {
  return until(
    `${incident} waiting at ${step}`,
    async () => {
      const s = await liveState(client, incident);
      return s?.waiting?.step === step ? s : undefined;
    },
    ms,
  );
}

/** The run's result. */
export function resultOf(client: Client, incident: string): Promise<RunResult> {
  return client.workflow.getHandle(`playbook/${incident}`).result() as Promise<RunResult>;
}
