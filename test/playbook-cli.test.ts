/**
 * `pops playbook` and `pops incident` as a responder runs them, in child processes against the
 * test servers: plan changes nothing; run starts rollback-model with workers in its own process,
 * prints the timeline as it grows, waits for the close approval (the initiator's own is refused,
 * exit 2) and ends when another person approves; incident show prints the postmortem draft. The
 * model is copied from one trained on MovieLens (users 1..150).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getAliases } from '../domain/registry.js';
import { popsRunner } from './cli-support.js';
import { type Harness, startHarness } from './harness.js';
import { fixtureModel, trainBase, waitingAt } from './playbook-support.js';
import { movieLensSlice } from './retrain-support.js';
import { testQueuePrefix } from './support.js';

let h: Harness;
const suffix = Math.random().toString(36).slice(2, 8);
const base = `pbcli-${suffix}`;
// Queues no harness worker polls: only the CLI's own workers run the playbook.
const prefix = testQueuePrefix('pb-cli-own');
const pops = popsRunner(() => ({ DATABASE_URL: h.db.url, POPS_TASK_QUEUE_PREFIX: prefix }));

beforeAll(async () => {
  h = await startHarness('playbook-cli');
  const slice = movieLensSlice(150);
  await trainBase(h.db.pool, h.client, h.prefix, slice.dir, `ml-${base}`, base);
}, 900_000);

afterAll(async () => {
  await h?.close();
});

describe('pops playbook', () => {
  it('lists, plans without changing anything, runs, refuses the initiator, closes', async () => {
    const model = `${base}-m`;
    await fixtureModel(h.db.pool, base, model);
    const id = `cli-${suffix}`;

    const list = await pops(['playbook', 'list']);
    expect(list).toMatchObject({ code: 0, stderr: '' });
    expect(list.stdout).toMatch(/rollback-model\s+1\s+8\s+\S*model,/);

    const plan = await pops(['playbook', 'plan', 'rollback-model', '--param', `model=${model}`]);
    expect(plan).toMatchObject({ code: 0 });
    expect(plan.stdout).toContain('rollback-model v1 — dry run, nothing is changed');
    expect(plan.stdout).toContain(`rollback: ${model} production v2 → v1`);
    expect(plan.stdout).toMatch(/6\s+page\s+notify\s+skipped \(when params.webhook != ''\)/);
    expect(await getAliases(h.db.pool, model)).toEqual({ production: 2, previous: 1 });

    const bad = await pops(['playbook', 'plan', 'rollback-model', '--param', 'modle=x']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('modle: is not a parameter of rollback-model (got "x")');
    expect(bad.stderr).toContain('model: is required (a string, no default) (got missing)');

    const running = pops(
      ['playbook', 'run', 'rollback-model', '--param', `model=${model}`, '--incident', id],
      { POPS_ACTOR: 'alice' },
    );
    await waitingAt(h.client, id, 'close', 600_000);
    expect(await getAliases(h.db.pool, model)).toEqual({ production: 1 });

    const status = await pops(['playbook', 'status', id]);
    expect(status).toMatchObject({ code: 0 });
    expect(status.stdout).toMatch(/close\s+approval\s+running/);
    expect(status.stdout).toContain('waiting: close, approved by nobody of quorum 1');

    const own = await pops(['playbook', 'approve', id, '--reason', 'done'], {
      POPS_ACTOR: 'alice',
    });
    expect(own.code).toBe(2);
    expect(own.stderr).toContain(`alice started incident ${id} and may not approve its steps`);
    const ok = await pops(['playbook', 'approve', id, '--reason', 'v1 serves'], {
      POPS_ACTOR: 'bob',
    });
    expect(ok).toMatchObject({ code: 0 });

    const done = await running;
    expect(done).toMatchObject({ code: 0 });
    expect(done.stdout).toContain(`started rollback-model v1 for incident ${id}`);
    expect(done.stdout).toMatch(/rollback \(rollback_model\) ended \[ok\] by pops/);
    expect(done.stdout).toMatch(/verify \(verify_serving\) ended \[ok\] by pops/);
    expect(done.stdout).toContain(`waiting for approval of close (quorum 1;`);
    expect(done.stdout).toMatch(/close \(approval\) ended \[ok\] by bob: approved by bob/);
    expect(done.stdout.trimEnd().endsWith('run resolved')).toBe(true);

    const show = await pops(['incident', 'show', id, '--markdown']);
    expect(show).toMatchObject({ code: 0 });
    expect(show.stdout).toContain(`# Incident ${id}: rollback-model`);
    expect(show.stdout).toContain('| Status | resolved |');
    expect(show.stdout).toContain('| Opened by | alice |');

    // POPS_TEST_OUTPUT_DIR=<dir> keeps what the commands printed (the examples of
    // docs/playbooks.md).
    const out = process.env['POPS_TEST_OUTPUT_DIR'];
    if (out) {
      for (const [name, r] of Object.entries({ list, plan, bad, status, own, run: done, show })) {
        fs.writeFileSync(path.join(out, `${name}.txt`), `${r.stdout}${r.stderr}`);
      }
    }
  }, 900_000);
});
