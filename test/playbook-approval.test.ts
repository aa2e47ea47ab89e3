/**
 * Approval steps of runPlaybook on real Temporal and PostgreSQL: a vote sent before its step waits
 * is kept and counted when it does; a timeout approves, rejects or escalates as the step says (an
 * escalation posts to its webhook once and lets the escalation approvers decide); a quorum of two
 * needs two distinct approvers; the initiator and non-approvers are refused, recorded, and the
 * step keeps waiting; an abort while waiting ends the run aborted. Also: registering through the
 * API (a bad definition is a 400 naming its place, a version is never rewritten).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveState, votePlaybook, abortPlaybook } from '../client/playbooks.js';
import { APPROVAL_SIGNAL } from '../domain/playbooks/run.js';
import { getIncident, incidentTimeline } from '../domain/playbooks/store.js';
import { type Harness, startHarness } from './harness.js';
import {
  resultOf,
  runText,
  startWebhook,
  until,
  waitingAt,
  type Webhook,
} from './playbook-support.js';

let h: Harness;
let hook: Webhook;
let n = 0;
const incident = () => `appr-${++n}-${Math.random().toString(36).slice(2, 6)}`;

function approvalPlaybook(name: string, approval: string, before = ''): string {
  return `name: ${name}
version: 1
description: approval test
parameters:
  approvers: { type: list, default: [bob, carol, dave] }
steps:
${before}  - id: ok
    type: approval
    with:
${approval}
  - id: done
    type: record
    with: { message: "approved by \${steps.ok.by|join(',')}" }
`;
}

const vote = (id: string, by: string, decision: 'approve' | 'reject' = 'approve', step?: string) =>
  h.client.workflow.getHandle(`playbook/${id}`).signal(APPROVAL_SIGNAL, {
    decision,
    by,
    reason: `${by} says ${decision}`,
    ...(step ? { step } : {}),
  });

beforeAll(async () => {
  h = await startHarness('playbook-approval', { api: true });
  hook = await startWebhook();
});

afterAll(async () => {
  await hook?.close();
  await h?.close();
});

describe('approval steps', () => {
  it('keeps a vote sent before its step waits and counts it when the step does', async () => {
    const yaml = approvalPlaybook(
      'early',
      '      approvers: [bob]',
      '  - id: first\n    type: approval\n    with: { approvers: [carol] }\n',
    );
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    await waitingAt(h.client, id, 'first');
    // bob's vote names step ok, which has not started: it is buffered.
    await vote(id, 'bob', 'approve', 'ok');
    const buffered = await until('the buffered vote', async () => {
      const s = await liveState(h.client, id);
      return s && s.buffered === 1 && s.waiting?.step === 'first' && s;
    });
    expect(buffered.waiting?.approvedBy).toEqual([]);
    await vote(id, 'carol', 'approve', 'first');
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    expect(result.steps.map((s) => [s.id, s.outcome])).toEqual([
      ['first', 'ok'],
      ['ok', 'ok'],
      ['done', 'ok'],
    ]);
    const notes = (await incidentTimeline(h.db.pool, id)).filter((e) => e.kind === 'approval');
    expect(notes.map((e) => [e.stepId, e.actor, e.outcome])).toEqual([
      ['first', 'carol', 'approved'],
      ['ok', 'bob', 'approved'],
    ]);
    expect((await getIncident(h.db.pool, id))?.status).toBe('resolved');
  });

  it('approves at the timeout when on_timeout is approve', async () => {
    const yaml = approvalPlaybook('t-approve', '      timeout: 1s\n      on_timeout: approve');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    const ended = (await incidentTimeline(h.db.pool, id)).find(
      (e) => e.kind === 'step-ended' && e.stepId === 'ok',
    );
    expect(ended?.outcome).toBe('ok');
    expect(ended?.summary).toMatchObject({ decision: 'approved', via: 'timeout', by: [] });
  });

  it('rejects at the timeout when on_timeout is reject, and the run stops', async () => {
    const yaml = approvalPlaybook('t-reject', '      timeout: 1s\n      on_timeout: reject');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    const result = await resultOf(h.client, id);
    expect(result).toMatchObject({ status: 'failed', failedStep: 'ok' });
    expect(result.error).toBe('no quorum by the timeout (1s)');
    expect(result.steps.map((s) => s.outcome)).toEqual(['rejected', 'skipped']);
    expect((await getIncident(h.db.pool, id))?.status).toBe('failed');
  });

  it('escalates at the timeout: recorded, posted once, decided by an escalation approver', async () => {
    const yaml = approvalPlaybook(
      't-escalate',
      `      approvers: [bob]\n      timeout: 2s\n      on_timeout: escalate\n` +
        `      escalate_to: [carol]\n      escalate_webhook: ${hook.url}`,
    );
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    await waitingAt(h.client, id, 'ok');
    await vote(id, 'carol');
    await until('carol refused before the escalation', async () =>
      (await incidentTimeline(h.db.pool, id)).some((e) => e.outcome === 'refused'),
    );
    const escalated = await until('the escalation', async () => {
      const s = await liveState(h.client, id);
      return s?.waiting?.escalated && s;
    });
    expect(escalated.waiting?.approvers).toEqual(['bob', 'carol']);
    await vote(id, 'carol');
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    const posted = hook.hits.filter((x) => x.key.endsWith('/ok/escalation'));
    expect(posted).toHaveLength(1);
    expect(posted[0]?.body).toMatchObject({ escalation: { step: 'ok', approvers: ['carol'] } });
    const kinds = (await incidentTimeline(h.db.pool, id))
      .filter((e) => e.stepId === 'ok')
      .map((e) => `${e.kind}:${e.outcome ?? ''}`);
    expect(kinds).toEqual([
      'step-started:',
      'approval:refused',
      'escalation:escalated',
      'approval:approved',
      'step-ended:ok',
    ]);
  });

  it('rejects after an escalation that also times out', async () => {
    const yaml = approvalPlaybook('t-esc-reject', '      timeout: 1s\n      on_timeout: escalate');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('failed');
    expect(result.error).toBe('no quorum by the timeout (1s) after escalation');
  });

  it('needs two distinct approvers for a quorum of two', async () => {
    const yaml = approvalPlaybook(
      'quorum',
      '      approvers: ${params.approvers}\n      quorum: 2',
    );
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    await waitingAt(h.client, id, 'ok');
    await vote(id, 'bob');
    await vote(id, 'bob');
    const one = await until('bob counted once', async () => {
      const s = await liveState(h.client, id);
      const votes = (await incidentTimeline(h.db.pool, id)).filter((e) => e.kind === 'approval');
      return votes.length === 2 && s;
    });
    expect(one.waiting).toMatchObject({ step: 'ok', approvedBy: ['bob'], quorum: 2 });
    await vote(id, 'carol');
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('resolved');
    const ended = (await incidentTimeline(h.db.pool, id)).find(
      (e) => e.kind === 'step-ended' && e.stepId === 'ok',
    );
    expect(ended?.summary).toMatchObject({ decision: 'approved', by: ['bob', 'carol'] });
    expect(ended?.actor).toBe('bob, carol');
  });

  it('refuses the initiator and a non-approver, recorded, and keeps waiting', async () => {
    const yaml = approvalPlaybook('initiator', '      approvers: [alice, bob]');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident(), 'alice');
    await waitingAt(h.client, id, 'ok');
    // The client refuses alice's own approval before sending it...
    await expect(
      votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'alice', reason: 'me' }),
    ).rejects.toThrow(`alice started incident ${id} and may not approve its steps`);
    // ...and the workflow refuses it when it arrives another way.
    await vote(id, 'alice');
    await vote(id, 'eve');
    const refused = await until('two refusals', async () => {
      const r = (await incidentTimeline(h.db.pool, id)).filter((e) => e.outcome === 'refused');
      return r.length === 2 && r;
    });
    expect(refused.map((e) => e.message)).toEqual([
      'approve by alice refused: alice started this run and may not approve it',
      'approve by eve refused: eve is not an approver (alice, bob)',
    ]);
    expect((await liveState(h.client, id))?.waiting?.approvedBy).toEqual([]);
    await votePlaybook(h.client, h.db.pool, id, { decision: 'approve', by: 'bob', reason: 'ok' });
    expect((await resultOf(h.client, id)).status).toBe('resolved');
  });

  it('is decided at once by an approver who rejects', async () => {
    const yaml = approvalPlaybook('reject', '      approvers: [bob, carol]\n      quorum: 2');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    await waitingAt(h.client, id, 'ok');
    await vote(id, 'bob', 'reject');
    const result = await resultOf(h.client, id);
    expect(result).toMatchObject({ status: 'failed', failedStep: 'ok' });
    expect(result.error).toBe('rejected by bob: bob says reject');
  });

  it('ends aborted when aborted while waiting', async () => {
    const yaml = approvalPlaybook('abort', '      approvers: [bob]');
    const id = await runText(h.client, h.db.pool, h.prefix, yaml, {}, incident());
    await waitingAt(h.client, id, 'ok');
    await abortPlaybook(h.client, h.db.pool, id, { by: 'bob', reason: 'false alarm' });
    const result = await resultOf(h.client, id);
    expect(result.status).toBe('aborted');
    expect((await getIncident(h.db.pool, id))?.status).toBe('aborted');
    const last = (await incidentTimeline(h.db.pool, id)).slice(-2).map((e) => e.kind);
    expect(last).toEqual(['abort-requested', 'run-ended']);
  });

  it('registers playbooks through the API: 201, 200 for the same text, 409, 400 naming the place', async () => {
    const post = (yaml: string) =>
      h.fetch(`${h.base}/v1/playbooks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ yaml }),
      });
    const yaml = approvalPlaybook('via-api', '      approvers: [bob]');
    expect((await post(yaml)).status).toBe(201);
    expect((await post(yaml)).status).toBe(200);
    const changed = await post(yaml.replace('approval test', 'approval test, changed'));
    expect(changed.status).toBe(409);
    expect(await changed.json()).toMatchObject({
      error: {
        message: expect.stringContaining('version 1 is already registered with other text'),
      },
    });
    const bad = await post(yaml.replace('type: approval', 'type: aproval'));
    expect(bad.status).toBe(400);
    const { error } = (await bad.json()) as { error: { message: string } };
    expect(error.message).toContain('request body: 1 problem(s)');
    expect(error.message).toContain('step "ok" (steps[0]) type: Invalid option');
    expect(error.message).toContain('(got "aproval")');
  });
});
