/**
 * `npm run bench -- playbook [--runs N]`: the rollback-model playbook from its start to the
 * previous version serving, without the approval wait. A model is trained on a MovieLens slice
 * (users 1..150) and promoted; each run copies it into a model of its own whose production is
 * version 2 (previous 1, the same artifact) on a surface, starts rollback-model for a new incident
 * with the closing vote sent at once (kept by the workflow until its approval step waits), and
 * measures, on one clock, from the start request to the end of the `verify` step (the decider has
 * answered 20 probe decisions from version 1) and to the run's end. In-process workers on the
 * embedded defaults (or DATABASE_URL / TEMPORAL_ADDRESS), a fresh database, its own task queues.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPlaybookRun, votePlaybook, registerShipped } from '../client/playbooks.js';
import { startRetrain, waitForRetrain } from '../client/retrain.js';
import { openRuntime, type Runtime, runWorkers } from '../cli/runtime.js';
import { createPool, type Pool } from '../common/db.js';
import { createSurface } from '../domain/decide/surfaces.js';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { registerFeatures } from '../domain/features/registry.js';
import { incidentTimeline } from '../domain/playbooks/store.js';
import { closeDeciders } from '../domain/playbooks/verify.js';
import { declareModel, promoteVersion } from '../domain/registry.js';
import { retrainInputSchema } from '../domain/retrain.js';
import { importMovieLens } from '../ingest/movielens.js';
import { freshDatabase } from './database.js';

export const PLAYBOOK_DEFAULTS = { runs: 7 } as const;

const progress = (message: string) =>
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

function slice(data: string, maxUser: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-playbook-'));
  const lines = fs.readFileSync(path.join(data, 'ratings.csv'), 'utf8').trimEnd().split('\n');
  const kept = lines.slice(1).filter((l) => Number(l.split(',')[0]) <= maxUser);
  fs.writeFileSync(path.join(dir, 'ratings.csv'), `${[lines[0], ...kept].join('\n')}\n`);
  fs.copyFileSync(path.join(data, 'movies.csv'), path.join(dir, 'movies.csv'));
  return dir;
}

/** A model with versions 1 and 2 (the base's version 1), production 2, served on a surface. */
async function copyModel(pool: Pool, base: string, name: string): Promise<void> {
  await declareModel(pool, { name, source: 'bench', createdBy: 'bench' });
  for (const version of [1, 2]) {
    await pool.query(
      `insert into model_versions
       select (jsonb_populate_record(null::model_versions, to_jsonb(v) || jsonb_build_object(
                 'model', $2::text, 'version', $3::int, 'run_key', $4::text))).*
         from model_versions v where model = $1 and version = 1`,
      [base, name, version, `${name}/v${version}`],
    );
    await promoteVersion(pool, {
      model: name,
      version,
      actor: 'bench',
      reason: 'bench',
      workflowId: null,
      moveKey: `${name}/promote/${version}`,
    });
  }
  await createSurface(pool, { name: `${name}-s`, model: name, actor: 'bench', reason: 'bench' });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};

/** Runs the benchmark and prints its lines. */
export async function benchPlaybook(
  options: { runs: number; data: string },
  line: (name: string, value: string, goal?: string) => void,
): Promise<void> {
  const rt = await openRuntime();
  const db = await freshDatabase(rt, 'playbook');
  const pool = createPool(db.url);
  const bench: Runtime = { ...rt, pool, prefix: `bench-pb-${randomBytes(3).toString('hex')}` };
  const workers = await runWorkers(bench);
  try {
    await importMovieLens(pool, slice(options.data, 150), { source: 'bench' });
    await declareModel(pool, { name: 'bench-base', source: 'bench', createdBy: 'bench' });
    await registerFeatures(pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), 'bench');
    await registerShipped(pool, 'bench');
    progress('training the base model (users 1..150, 2 epochs)');
    const run = await startRetrain(
      rt.client,
      bench.prefix,
      retrainInputSchema.parse({
        model: 'bench-base',
        reason: 'bench',
        requestedBy: 'bench',
        trainUntil: '2004-01-01T00:00:00Z',
        validateUntil: '2005-01-01T00:00:00Z',
        training: { epochs: 2 },
      }),
    );
    await rt.client.workflow
      .getHandle(run.workflowId, run.runId)
      .signal('approvePromotion', { by: 'bench', reason: 'bench' });
    await waitForRetrain(rt.client, run.workflowId, run.runId);

    const serving: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < options.runs; i++) {
      const model = `bench-m${i}`;
      await copyModel(pool, 'bench-base', model);
      const incident = `bench-${randomBytes(3).toString('hex')}`;
      const t0 = Date.now();
      await startPlaybookRun(rt.client, pool, bench.prefix, {
        playbook: 'rollback-model',
        params: { model },
        incident: { id: incident, title: 'bench' },
        initiator: 'bench',
      });
      await votePlaybook(rt.client, pool, incident, {
        decision: 'approve',
        by: 'bench-approver',
        reason: 'bench: no approval wait',
        step: 'close',
      });
      const result: unknown = await rt.client.workflow.getHandle(`playbook/${incident}`).result();
      const done = Date.now();
      const verify = (await incidentTimeline(pool, incident)).find(
        (e) => e.kind === 'step-ended' && e.stepId === 'verify' && e.outcome === 'ok',
      );
      if (!verify || (result as { status: string }).status !== 'resolved') {
        throw new Error(`run ${incident} did not resolve with a verified rollback`);
      }
      serving.push(Date.parse(verify.at) - t0);
      total.push(done - t0);
      progress(`run ${i + 1}: previous version serving after ${serving.at(-1)} ms`);
      await sleep(200);
    }
    const ms = (x: number) => `${Math.round(x).toLocaleString('en')} ms`;
    line(
      `start → previous version serving, median (${options.runs})`,
      ms(median(serving)),
      '< 2 s',
    );
    line('start → previous version serving, max', ms(Math.max(...serving)), '< 2 s');
    line('start → run resolved (vote sent early), median', ms(median(total)));
    line('first run (model load in the worker)', ms(serving[0] ?? 0));
  } finally {
    await workers.stop();
    await closeDeciders();
    await pool.end();
    await db.drop();
    await rt.close();
  }
}
