/**
 * The shipped playbooks end to end on real Temporal and PostgreSQL, with the HTTP API: a model
 * trained on MovieLens (users 1..150) is copied into a model per test whose production is version 2
 * (previous 1) on a surface. rollback-model really moves the production alias and /v1/decide serves
 * version 1 afterwards; feature-corruption switches the surface to rules-only, re-backfills and
 * checks the partitions and restores the mode after approval; privacy-incident pauses a campaign,
 * suppresses and exports the persons in scope and waits for two approvers. Compensation undoes the
 * completed steps in reverse and reports an undo that fails.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { incidentReport, votePlaybook } from '../client/playbooks.js';
import { startRollout } from '../client/rollout.js';
import { getSurface, routingChanges } from '../domain/decide/surfaces.js';
import { incidentMarkdown } from '../domain/playbooks/markdown.js';
import { getExport, getIncident, incidentTimeline } from '../domain/playbooks/store.js';
import { aliasHistory, getAliases } from '../domain/registry.js';
import { auditTrail } from '../domain/audit.js';
import { rolloutInputSchema } from '../domain/rollout/config.js';
import { type Harness, startHarness } from './harness.js';
import {
  fixtureModel,
  resultOf,
  runText,
  startWebhook,
  trainBase,
  until,
  waitingAt,
  type Webhook,
} from './playbook-support.js';
import { movieLensSlice } from './retrain-support.js';

/** An answer's body: JSON, or `{ text }` when it is not. */
type Answer = Record<string, unknown> & { incident?: string; text?: string };

let h: Harness;
let hook: Webhook;
const suffix = Math.random().toString(36).slice(2, 8);
const base = `pb-${suffix}`;

async function api(path: string, body?: unknown): Promise<{ status: number; body: Answer }> {
  const response = await h.fetch(`${h.base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  const text = await response.text();
  const parsed: unknown = text.startsWith('{') ? JSON.parse(text) : { text };
  return { status: response.status, body: parsed as Answer };
}

/** Decisions for persons `<tag>-1..n` through the API; waits until their exposures are stored. */
async function traffic(surface: string, tag: string, n: number): Promise<void> {
  for (let i = 1; i <= n; i++) {
    const d = await api('/v1/decide', { surface, anonymousId: `${tag}-${i}`, k: 3 });
    expect(d.status).toBe(200);
  }
  await until('exposures stored', async () => {
    const { rows } = await h.db.pool.query<{ n: number }>(
      `select count(distinct person_id)::int as n from exposures
        where surface = $1 and person_id like $2`,
      [surface, `unresolved:${tag}-%`],
    );
    return (rows[0]?.n ?? 0) >= n;
  });
}

beforeAll(async () => {
  h = await startHarness('playbook', { api: true });
  // The in-process workers' token for verify_api's call of /v1/decide.
  process.env['POPS_PLAYBOOK_API_TOKEN'] = h.token;
  hook = await startWebhook();
  const slice = movieLensSlice(150);
  await trainBase(h.db.pool, h.client, h.prefix, slice.dir, `ml-${base}`, base);
}, 900_000);

afterAll(async () => {
  await hook?.close();
  await h?.close();
});

describe('rollback-model', () => {
  it('freezes, rolls back, proves through /v1/decide that v1 serves, scopes, pages, closes', async () => {
    const model = `${base}-rb`;
    const surface = await fixtureModel(h.db.pool, base, model);
    await traffic(surface, 'before', 6);
    // A rollout running on the surface (v1 as canary): the freeze pauses it.
    const rollout = await startRollout(
      h.client,
      h.prefix,
      rolloutInputSchema.parse({
        model,
        version: 1,
        surface,
        steps: [10, 100],
        bake: '1h',
        analysisEvery: '1s',
        requestedBy: 'tester',
      }),
    );
    await until('the rollout routed', async () =>
      (await getSurface(h.db.pool, surface))?.routes.some((r) => r.role === 'canary'),
    );
    const historyBefore = (await aliasHistory(h.db.pool, model)).length;

    const started = await api('/v1/playbooks/rollback-model/runs', {
      params: { model, webhook: hook.url, api_url: h.base, approvers: ['bob'] },
      incident: { id: `rb-${suffix}`, title: 'v2 recommends badly', severity: 'sev1', surface },
    });
    expect(started.status).toBe(202);
    const id = started.body.incident ?? '';
    await waitingAt(h.client, id, 'close');

    // The production alias really moved: 2 → 1, one rollback row (and previous removed).
    expect(await getAliases(h.db.pool, model)).toEqual({ production: 1 });
    const all = await aliasHistory(h.db.pool, model);
    const moves = all.slice(0, all.length - historyBefore);
    expect(moves.map((m) => [m.alias, m.actor, m.fromVersion, m.toVersion])).toEqual([
      ['previous', 'api-test', 1, null],
      ['production', 'api-test', 2, 1],
    ]);
    expect((await getSurface(h.db.pool, surface))?.routes).toEqual([
      { version: 1, role: 'stable', weightBp: 10_000 },
    ]);
    // The API (a decider of its own, in this process) serves version 1.
    const after = await api('/v1/decide', { surface, anonymousId: 'after-1', k: 3 });
    expect(after.body).toMatchObject({ version: 1, fallback: null, arm: 'stable' });
    // The rollout took the pause (at its next interval), once.
    const paused = await until('the rollout paused', async () => {
      const rows = (await auditTrail(h.db.pool, { subject: `surface/${surface}` })).filter(
        (r) => r.action === 'rollout.paused',
      );
      return rows.length > 0 && rows;
    });
    expect(paused.map((r) => r.actor)).toEqual(['api-test']);

    const report = await incidentReport(h.db.pool, id);
    const ended = (step: string) =>
      report.timeline.find((e) => e.kind === 'step-ended' && e.stepId === step);
    expect(ended('freeze')?.summary).toMatchObject({ count: 1, paused: [{ surface }] });
    expect(ended('verify')?.summary).toMatchObject({
      version: 1,
      surfaces: [{ surface, version: 1, probes: 20, served: { v1: 20 } }],
    });
    expect(ended('verify_api')?.outcome).toBe('ok');
    // Exposed to v2: the six persons of the traffic before (and nobody after the switch).
    expect(ended('scope')?.summary).toMatchObject({ persons: 6, decisions: 6 });
    expect(report.scope).toEqual({ persons: 6, decisions: 6 });
    expect(hook.hits).toHaveLength(1);
    expect(hook.hits[0]?.body).toMatchObject({
      incident: { id, severity: 'sev1' },
      summary: expect.stringContaining('rolled back from v2 to v1; 6 persons were exposed'),
    });

    // The initiator (the API caller) may not close it; bob may.
    await expect(
      votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'api-test', reason: 'x' }),
    ).rejects.toThrow('may not approve');
    await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'bob', reason: 'ok' });
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    expect((await getIncident(h.db.pool, id))?.status).toBe('resolved');

    const md = await api(`/v1/incidents/${id}?format=markdown`);
    expect(md.body.text).toContain(`# Incident ${id}: v2 recommends badly`);
    expect(md.body.text).toContain('| Severity | sev1 |');
    expect(md.body.text).toMatch(
      /\| close \(approval\) \| ended \| ok \| bob \| approved by bob \|/,
    );
    expect(md.body.text).toContain('- Persons in scope: 6; decisions that exposed them: 6');
    expect(md.body.text).toBe(incidentMarkdown(await incidentReport(h.db.pool, id)));
    await h.client.workflow
      .getHandle(rollout.workflowId)
      .signal('abortRollout', { by: 'tester', reason: 'test done' })
      .catch(() => undefined);
  });
});

describe('compensation', () => {
  it('undoes completed steps in reverse, retried and recorded; a failing undo is reported', async () => {
    const model = `${base}-comp`;
    const a = await fixtureModel(h.db.pool, base, model);
    const b = await fixtureModel(h.db.pool, base, `${model}b`);
    // Putting b back into normal mode fails (a trigger refuses it), as an undo may.
    await h.db.pool.query(`
      create or replace function refuse_normal() returns trigger language plpgsql as $$
      begin
        if new.name = '${b}' and new.mode = 'normal' then
          raise exception 'surface ${b} is locked by the test';
        end if;
        return new;
      end $$;
      create trigger refuse_normal before update on surfaces
        for each row execute function refuse_normal();`);
    const yaml = `name: comp-${suffix}
version: 1
description: compensation test
steps:
  - { id: one, type: set_mode, with: { surface: ${a}, mode: conservative } }
  - { id: note, type: record, with: { message: between } }
  - { id: two, type: set_mode, retries: 1, with: { surface: ${b}, mode: rules-only } }
  - id: boom
    type: http
    retries: 0
    on_failure: compensate
    with: { url: 'http://127.0.0.1:9/unreachable', method: GET }
`;
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, `comp-${suffix}`);
    const result = await resultOf(h.client, id);
    await h.db.pool.query('drop trigger refuse_normal on surfaces');
    expect(result).toMatchObject({ status: 'failed', failedStep: 'boom', compensationFailures: 1 });
    expect(result.compensation.map((c) => [c.step, c.outcome])).toEqual([
      ['two', 'failed'],
      ['one', 'ok'],
    ]);
    expect(result.compensation[0]?.error).toContain(`surface ${b} is locked by the test`);
    expect((await getSurface(h.db.pool, a))?.mode).toBe('normal');
    expect((await getSurface(h.db.pool, b))?.mode).toBe('rules-only');
    const timeline = await incidentTimeline(h.db.pool, id);
    expect(
      timeline
        .filter((e) => e.kind.startsWith('compensation'))
        .map((e) => `${e.kind}:${e.stepId}:${e.outcome ?? ''}`),
    ).toEqual([
      'compensation-started:two:',
      'compensation-ended:two:failed',
      'compensation-started:one:',
      'compensation-ended:one:ok',
    ]);
    expect(timeline.at(-1)?.message).toContain('1 compensation(s) FAILED');
    // The undo of two was attempted twice (retries: 1) and changed nothing; one's undo once.
    const changesA = await routingChanges(h.db.pool, a);
    expect(changesA.map((c) => c.mode).slice(0, 2)).toEqual(['normal', 'conservative']);
    expect(changesA.filter((c) => c.changeKey?.includes('/undo'))).toHaveLength(1);
  });
});

describe('feature-corruption', () => {
  it(
    'goes rules-only, re-backfills and checks the partitions, restores the mode on approval',
    {
      timeout: 1_200_000,
    },
    async () => {
      const model = `${base}-fc`;
      const surface = await fixtureModel(h.db.pool, base, model);
      const features = ['person_rating_count@1', 'item_popularity@1'];
      const started = await api('/v1/playbooks/feature-corruption/runs', {
        params: { surface, features, from: '2003-06-01', to: '2003-06-03', approvers: ['bob'] },
        incident: { id: `fc-${suffix}`, title: 'ratings feed doubled events' },
      });
      expect(started.status).toBe(202);
      const id = started.body.incident ?? '';
      // A guard against a hang, not a timing: the backfill recomputes tiles as far back as the
      // windows reach, minutes on the loaded 2-core machine.
      await waitingAt(h.client, id, 'approve_restore', 900_000);
      expect((await getSurface(h.db.pool, surface))?.mode).toBe('rules-only');
      const during = await api('/v1/decide', { surface, anonymousId: 'fc-1', k: 3 });
      expect(during.body).toMatchObject({ version: null, fallback: 'mode-rules-only' });

      const report = await incidentReport(h.db.pool, id);
      const backfill = report.timeline.find(
        (e) => e.kind === 'step-ended' && e.stepId === 'backfill',
      );
      expect(backfill?.summary).toMatchObject({ backfillId: `playbook/${id}/backfill` });
      const { rows } = await h.db.pool.query<{ feature: string; days: number }>(
        `select name || '@' || version as feature, count(*)::int as days from feature_partitions
        where day between '2003-06-01' and '2003-06-03' and quality_status <> 'fail'
          and (name, version) in (('person_rating_count', 1), ('item_popularity', 1))
        group by 1 order by 1`,
      );
      expect(rows).toEqual([
        { feature: 'item_popularity@1', days: 3 },
        { feature: 'person_rating_count@1', days: 3 },
      ]);
      const quality = report.timeline.find(
        (e) => e.kind === 'step-ended' && e.stepId === 'quality',
      );
      expect(
        (quality?.summary['features'] as Array<{ fail: number; missing: number }>).map((f) => [
          f.fail,
          f.missing,
        ]),
      ).toEqual([
        [0, 0],
        [0, 0],
      ]);

      await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'bob', reason: 'ok' });
      expect((await resultOf(h.client, id)).status).toBe('resolved');
      expect((await getSurface(h.db.pool, surface))?.mode).toBe('normal');
      const modes = (await routingChanges(h.db.pool, surface)).map((c) => c.mode);
      expect(modes.slice(0, 3)).toEqual(['normal', 'rules-only', 'normal']);
      await sleep(1100); // the API's routing table is at most 1 s old
      const afterwards = await api('/v1/decide', { surface, anonymousId: 'fc-2', k: 3 });
      expect(afterwards.body).toMatchObject({ version: 2, fallback: null });
    },
  );
});

describe('privacy-incident', () => {
  it('pauses campaigns, suppresses and exports the persons in scope, notifies after two approvals', async () => {
    const model = `${base}-pi`;
    const surface = await fixtureModel(h.db.pool, base, model);
    const from = new Date().toISOString();
    await traffic(surface, 'priv', 4);
    const to = new Date(Date.now() + 1000).toISOString();
    await h.db.pool.query(
      `insert into campaigns (name, definition, origin, updated_by)
       values ($1, '{}'::jsonb, 'api', 'tester')`,
      [`weekly-${suffix}`],
    );
    const started = await api('/v1/playbooks/privacy-incident/runs', {
      params: {
        surface,
        from,
        to,
        campaigns: [`weekly-${suffix}`],
        webhook: hook.url,
        approvers: ['bob', 'carol'],
      },
      incident: { id: `pi-${suffix}`, title: 'consent ignored on a surface' },
    });
    expect(started.status).toBe(202);
    const id = started.body.incident ?? '';
    await waitingAt(h.client, id, 'approve_notice');

    const campaign = await h.db.pool.query<{ paused: boolean }>(
      'select paused from campaigns where name = $1',
      [`weekly-${suffix}`],
    );
    expect(campaign.rows[0]?.paused).toBe(true);
    const suppressed = await h.db.pool.query<{ person_key: string }>(
      `select person_key from campaign_suppressions where key = $1 and lifted_at is null
        order by person_key`,
      [id],
    );
    const persons = [1, 2, 3, 4].map((i) => `unresolved:priv-${i}`);
    expect(suppressed.rows.map((r) => r.person_key)).toEqual(persons);
    const exported = await getExport(h.db.pool, id);
    expect(exported?.rows).toBe(4);
    expect(
      exported?.csv
        .split('\n')
        .slice(1, 5)
        .map((l) => l.split(',')[0]),
    ).toEqual(persons);
    const csv = await api(`/v1/incidents/${id}/export`);
    expect(csv.body.text).toBe(exported?.csv);

    await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'bob', reason: 'ok' });
    await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'carol', reason: 'ok' });
    const result = await resultOf(h.client, id);
    expect(result.steps.map((s) => s.outcome)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok']);
    // The four persons have no address: each is accounted for by sendNotice, none sent.
    const notified = (await incidentTimeline(h.db.pool, id)).find(
      (e) => e.kind === 'step-ended' && e.stepId === 'notify_persons',
    );
    const email = notified?.summary['email'] as {
      audience: number;
      sent: number;
      skipped: Record<string, number>;
      failed: number;
      unknown: number;
    };
    expect(email.audience).toBe(4);
    expect(email.sent).toBe(0);
    const skipped = Object.values(email.skipped).reduce((a, b) => a + b, 0);
    expect(email.sent + skipped + email.failed + email.unknown).toBe(4);
    const audience = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from notice_audiences where notice_id = $1`,
      [`${id}.notify_persons`],
    );
    expect(audience.rows[0]?.n).toBe(4);
  });
});
