/**
 * `npm run bench -- campaigns [--persons N]`: one campaign run to a local SMTP sink (smtp-server in
 * this process, accepting everything, counting messages per recipient), sent by a worker in its
 * own process with a pooled transport (POPS_SMTP_MAX_CONNECTIONS 10, no rate limit). Once about a
 * third has gone, that worker is SIGKILLed and a second worker process finishes the run. Reported:
 * messages/s before the kill and after the restart (each over its own sending window), the gap
 * (Temporal retries the batch after its 30 s heartbeat timeout), and exactly-once on the same
 * run: no recipient with two messages, every `sent` row's message received once, `unknown` rows
 * (sends in flight at the kill) counted. A fresh database on the embedded defaults.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { openRuntime } from '../cli/runtime.js';
import { createPool, type Pool } from '../common/db.js';
import { queueName } from '../common/queues.js';
import { campaignSchema } from '../domain/campaigns/definition.js';
import { campaignWorkflowId } from '../domain/campaigns/names.js';
import { putCampaign } from '../domain/campaigns/store.js';
import { featureDefinitionSchema } from '../domain/features/definition.js';
import { registerFeatures } from '../domain/features/registry.js';
import { recordConsent } from '../domain/privacy/consent.js';
import { setEmailAddress } from '../domain/privacy/contacts.js';
import type { RunCampaignResult } from '../workflows/runCampaign.js';
import { workflowsPath } from '../workers/bundle.js';
import { freshDatabase } from './database.js';

export const CAMPAIGN_DEFAULTS = { persons: 10_000 } as const;

type Line = (name: string, value: string, goal?: string) => void;

const progress = (message: string) =>
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

/** The sink: accepts every message, counting each recipient and stamping each arrival. */
async function startSink() {
  const perRecipient = new Map<string, number>();
  const arrivals: number[] = [];
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    logger: false,
    onData(stream, session, callback) {
      stream.on('data', () => undefined);
      stream.on('end', () => {
        for (const r of session.envelope.rcptTo) {
          perRecipient.set(r.address, (perRecipient.get(r.address) ?? 0) + 1);
        }
        arrivals.push(performance.now());
        callback();
      });
    },
  });
  // A client that dies mid-session resets its connection: not this server's failure.
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    url: `smtp://127.0.0.1:${port}/?ignoreTLS=1`,
    perRecipient,
    arrivals,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function seed(pool: Pool, persons: number): Promise<void> {
  const feature = featureDefinitionSchema.parse({
    name: 'person_days_since_last_rating',
    version: 1,
    entity: 'person',
    source: { events: { event: 'rated' } },
    aggregation: { fn: 'days_since_last' },
    windows: ['lifetime'],
    type: 'float',
    owner: 'bench',
    description: 'days since the last rating',
    freshnessSla: '26h',
  });
  await registerFeatures(pool, [feature], 'bench');
  const ids = Array.from({ length: persons }, (_, i) => `b${i}`);
  await pool.query(
    `insert into feature_online (name, version, entity_id, ts, vals)
     select $1, 1, 'unresolved:' || id, now(), array[30::float8] from unnest($2::text[]) as id`,
    [feature.name, ids],
  );
  for (let i = 0; i < ids.length; i += 32) {
    await Promise.all(
      ids.slice(i, i + 32).map(async (id) => {
        await setEmailAddress(pool, `unresolved:${id}`, `${id}@sink.example`, 'bench');
        await recordConsent(pool, {
          identifier: { type: 'user_id', value: id },
          purpose: 'marketing',
          granted: true,
          source: 'bench',
          actor: 'bench',
          at: new Date(Date.now() - 60_000),
        });
      }),
    );
  }
}

function spawnWorker(env: Record<string, string>): Promise<ChildProcess> {
  const script = fileURLToPath(new URL('../test/fixtures/worker-process.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker process exited early with ${code}`)));
  });
}

function rate(arrivals: readonly number[]): number {
  if (arrivals.length < 2) return 0;
  const span = ((arrivals.at(-1) ?? 0) - (arrivals[0] ?? 0)) / 1000;
  return span > 0 ? (arrivals.length - 1) / span : 0;
}

/** Runs the benchmark; see the module comment. */
export async function benchCampaigns(options: { persons: number }, line: Line): Promise<void> {
  const rt = await openRuntime();
  const db = await freshDatabase(rt, 'campaigns');
  const pool = createPool(db.url);
  const sink = await startSink();
  const prefix = `bench-c-${randomBytes(3).toString('hex')}`;
  // Both worker processes load one prebuilt workflow bundle.
  const bundle = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('WARN') });
  const bundlePath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-c-')), 'wf.js');
  fs.writeFileSync(bundlePath, bundle.code);
  const env = {
    POPS_TEST_BUNDLE: bundlePath,
    POPS_TEST_DB_URL: db.url,
    POPS_TEST_TEMPORAL: rt.services.temporalAddress,
    POPS_TEST_PREFIX: prefix,
    POPS_SMTP_URL: sink.url,
    POPS_SMTP_MAX_CONNECTIONS: '10',
    POPS_SMTP_RATE: '0',
  };
  const children: ChildProcess[] = [];
  try {
    progress(`seeding ${options.persons} persons (feature value, address, consent)`);
    await seed(pool, options.persons);
    const campaign = campaignSchema.parse({
      name: 'bench',
      audience: { where: [{ feature: 'person_days_since_last_rating', between: [14, 60] }] },
      schedule: { cron: '0 10 * * *', timeZone: 'UTC' },
      sender: 'bench@shop.example',
      subject: 'Hello {{person.key}}',
      template: {
        html: '<p>Hello {{person.key}}</p><p><a href="{{unsubscribeUrl}}">unsubscribe</a></p>',
        text: 'Hello {{person.key}}\nUnsubscribe: {{unsubscribeUrl}}',
      },
    });
    await putCampaign(pool, { campaign, origin: 'bench', actor: 'bench' });
    progress('worker process 1 starting (workflow bundle)');
    const first = await spawnWorker(env);
    children.push(first);
    const fireTime = new Date(Math.floor(Date.now() / 1000) * 1000);
    const handle = await rt.client.workflow.start('runCampaign', {
      workflowId: campaignWorkflowId('bench', fireTime),
      taskQueue: queueName(prefix, 'orchestration'),
      args: [{ campaign: 'bench', fireTime: fireTime.toISOString(), batchSize: 2000 }],
    });
    const killAt = Math.floor(options.persons / 3);
    while (sink.arrivals.length < killAt) await new Promise((r) => setTimeout(r, 5));
    first.kill('SIGKILL');
    const killedAt = performance.now();
    const beforeKill = [...sink.arrivals];
    progress(`killed worker 1 after ${beforeKill.length} messages; worker 2 starting`);
    children.push(await spawnWorker(env));
    const result = (await handle.result()) as RunCampaignResult;
    // Messages of the killed worker's last sockets can still land just after the kill: worker 2's
    // window starts after a second's quiet.
    const after = sink.arrivals.filter((t) => t > killedAt + 1000);
    const { rows } = await pool.query<{ status: string; n: number }>(
      `select status, count(*)::int as n from campaign_sends where campaign = 'bench' group by 1`,
    );
    const counts = Object.fromEntries(rows.map((r) => [r.status, r.n]));
    const twice = [...sink.perRecipient.values()].filter((n) => n > 1).length;
    const sentRows = await pool.query<{ person_key: string }>(
      `select person_key from campaign_sends where campaign = 'bench' and status = 'sent'`,
    );
    const sentMissing = sentRows.rows.filter(
      (r) => sink.perRecipient.get(`${r.person_key.slice(11)}@sink.example`) !== 1,
    ).length;

    line(
      'campaign sends/s, worker 1 (10 pooled conn.)',
      rate(beforeKill).toFixed(0),
      'goal >= 500',
    );
    line('campaign sends/s, worker 2 after the crash', rate(after).toFixed(0), 'goal >= 500');
    line(
      'recovery gap after SIGKILL (s)',
      (((after[0] ?? killedAt) - killedAt) / 1000).toFixed(1),
      'heartbeat timeout 30 s',
    );
    line('messages received / persons', `${sink.arrivals.length} / ${options.persons}`);
    line(
      'ledger sent / unknown / other',
      `${counts['sent'] ?? 0} / ${counts['unknown'] ?? 0} / ` +
        `${options.persons - (counts['sent'] ?? 0) - (counts['unknown'] ?? 0)}`,
    );
    line('recipients with 2+ messages', String(twice), 'must be 0');
    line('sent rows without exactly one message', String(sentMissing), 'must be 0');
    line('run status', result.status);
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await sink.close();
    await pool.end();
    await db.drop();
    await rt.close();
  }
}
