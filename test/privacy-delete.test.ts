import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  deletePersonData,
  exportBundle,
  exportPersonData,
  privacyWorkflowId,
  waitForRequest,
} from '../client/privacy.js';
import { auditTrail, verifyAudit } from '../domain/audit.js';
import { setEmailAddress } from '../domain/privacy/contacts.js';
import { PERSON_TABLES } from '../domain/privacy/person-tables.js';
import { openRequest } from '../domain/privacy/requests.js';
import { ratedLabelsSql } from '../domain/training-set.js';
import { createWriteKey } from '../ingest/write-keys.js';
import { popsRunner } from './cli-support.js';
import { spawnWorker } from './fixtures/spawn-worker.js';
import { type Harness, startHarness } from './harness.js';
import { resolveAll } from './identity-support.js';
import { personMessages, postBatch, scanEveryTable } from './privacy-support.js';
import { startWorkers } from './retrain-support.js';
import { hashedValueOf, testQueuePrefix } from './support.js';

let h: Harness;
let writeKey: string;

/** Person ids start far from every other sequence, so that a bigint match means a reference. */
const FIRST_PERSON = 9_000_001;

interface Who {
  tag: string;
  user: string;
  anon: string;
  anon2: string;
  email: string;
}
const who = (tag: string): Who => ({
  tag,
  user: `${tag}-user-q7k`,
  anon: `${tag}-anon-x3m`,
  anon2: `${tag}-anon-z9p`,
  email: `${tag}.Person.Q7K@Example.org`,
});
/**
 * What must not be left: the raw ids, the address in clear and in its stored form, the name (the
 * tombstone keeps the bare hash, without the `h1:` of a stored value, by design).
 */
const needles = (w: Who) => [
  w.user,
  w.anon,
  w.anon2,
  w.email,
  hashedValueOf('email', w.email.toLowerCase()),
  `Name ${w.tag}`,
];

async function personOf(userId: string): Promise<number[]> {
  const { rows } = await h.db.pool.query<{ id: number }>(
    `select p.id from persons p
      where p.canonical_id = (select q.canonical_id from identifiers i
                                join persons q on q.id = i.person_id
                               where i.type = 'user_id' and i.value = $1)
      order by p.id`,
    [userId],
  );
  return rows.map((r) => r.id);
}

/** Ingests a person, resolves identities, and gives them rows in the privacy and feature tables. */
async function seedPerson(w: Who): Promise<number[]> {
  await postBatch(h.base, writeKey, personMessages(w));
  await resolveAll(h.db.pool);
  const ids = await personOf(w.user);
  const key = String(ids[0]);
  await setEmailAddress(h.db.pool, key, w.email, 'test');
  const consent = await h.fetch(`${h.base}/v1/consent`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      identifier: { type: 'email', value: w.email },
      purposes: { analytics: true },
    }),
  });
  expect(consent.status).toBe(200);
  const { rows } = await h.db.pool.query<{ id: number }>(
    `select id from events where message_id = $1`,
    [`${w.tag}-2`],
  );
  await h.db.pool.query(
    `insert into pit_set_rows (set_key, row_id, ts, person_key, item_key, label, vals)
     values ('set-' || $1, $2, now(), $3, 'i1', 1, '{0.5}')`,
    [w.tag, rows[0]?.id, key],
  );
  for (const entity of [key, `${key}|i1`, `unresolved:${w.anon}`]) {
    await h.db.pool.query(
      `insert into feature_online (name, version, entity_id, ts, vals) values ('f_test', 1, $1, now(), '{1}')`,
      [entity],
    );
    await h.db.pool.query(
      `insert into feature_values (name, version, ts, entity_id, vals) values ('f_test', 1, now(), $1, '{1}')`,
      [entity],
    );
  }
  return ids;
}

beforeAll(async () => {
  h = await startHarness('privacy-delete', { api: true });
  writeKey = (await createWriteKey(h.db.pool, 'web', 'tester')).key;
  await h.db.pool.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     values ($1, $1, null, now(), 0, null)`,
    [FIRST_PERSON - 1],
  );
  await h.db.pool.query(
    `insert into feature_versions (name, version, entity, value_type, definition, computation_sha256,
                                   owner, description, freshness_sla_seconds, registered_by)
     values ('f_test', 1, 'person', 'float', '{}', 'x', 'o', 'd', 60, 't')`,
  );
  await postBatch(h.base, writeKey, personMessages(who('keep')));
}, 120_000);

afterAll(async () => {
  await h?.close();
});

describe('exportPersonData and deletePersonData', () => {
  const doomed = who('gone');
  let ids: number[] = [];

  it('exports everything about the person across their merged identifiers', async () => {
    ids = await seedPerson(doomed);
    // identify (user + anon), alias (anon2 into user): one person of two merged nodes.
    expect(ids.length).toBe(2);
    expect(ids[0]).toBeGreaterThanOrEqual(FIRST_PERSON);
    const started = await exportPersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'anonymous_id', value: doomed.anon2 },
      requestedBy: 'dpo',
    });
    const request = await waitForRequest(h.client, h.db.pool, started);
    expect(request?.status).toBe('done');
    const bundle = (await exportBundle(h.db.pool, started.requestId)) as Record<
      string,
      Record<string, unknown[]>
    >;
    expect(bundle['events']?.['events']).toHaveLength(5);
    const types = (bundle['identifiers']?.['identifiers'] as Array<{ type: string; value: string }>)
      .map((i) => `${i.type}:${i.value}`)
      .sort();
    expect(types).toEqual(
      [
        `anonymous_id:${doomed.anon}`,
        `anonymous_id:${doomed.anon2}`,
        `email:${hashedValueOf('email', doomed.email.toLowerCase())}`,
        `user_id:${doomed.user}`,
      ].sort(),
    );
    // Marketing from the identify traits (user and anonymous id), analytics over the API (email).
    expect(bundle['consents']?.['consent_events']).toHaveLength(3);
    // Two addresses: sealed at ingestion under `unresolved:<user>`, and set here under the person.
    expect(bundle['contacts']?.['contacts']).toHaveLength(2);
    expect(bundle['profile']?.['persons']).toHaveLength(2);
    expect(bundle['features']?.['feature_online']).toHaveLength(3);
    expect(bundle['training']?.['pit_set_rows']).toHaveLength(1);
  }, 120_000);

  it('deletes every row of the person: a scan of every table finds nothing', async () => {
    const asked = await h.fetch(`${h.base}/v1/privacy/deletions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        identifier: { type: 'email', value: doomed.email },
        reason: 'erasure request 4711',
      }),
    });
    expect(asked.status).toBe(202);
    const started = (await asked.json()) as {
      requestId: string;
      workflowId: string;
      runId: string;
    };
    expect(started.workflowId).toBe(privacyWorkflowId(started.requestId));
    const request = await waitForRequest(h.client, h.db.pool, { ...started, state: 'created' });
    expect(request).toMatchObject({ status: 'done', requestedBy: 'api-test', foundNothing: false });
    // Hand-counted: 5 events, 4 identifiers, 2 persons, 3 consents, 2 addresses, the earlier
    // export bundle.
    expect(request?.counts).toMatchObject({
      events: 5,
      identifiers: 4,
      persons: 2,
      consent_events: 3,
      contacts: 2,
      feature_online: 3,
      feature_values: 3,
      pit_set_rows: 1,
      privacy_exports: 1,
      tombstones: 4,
    });

    expect(await scanEveryTable(h.db.pool, needles(doomed), ids)).toEqual([]);
    // The other person is whole.
    const kept = await h.db.pool.query(
      `select count(*)::int as n from events where user_id = 'keep-user-q7k' or anonymous_id like 'keep-%'`,
    );
    expect(kept.rows[0]).toEqual({ n: 5 });

    const audit = await auditTrail(h.db.pool, { subject: `privacy-request/${started.requestId}` });
    expect(audit.map((r) => r.action)).toEqual(['privacy.person-deleted']);
    expect(audit[0]?.outputs).toMatchObject({ counts: { events: 5 } });
    expect(audit[0]?.workflowId).toBe(privacyWorkflowId(started.requestId));
    expect((await verifyAudit(h.db.pool)).ok).toBe(true);

    // A second request for the same identifier is the same, finished request.
    const again = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'user_id', value: doomed.user },
      reason: 'again',
      requestedBy: 'dpo',
    });
    expect(again.state).toBe('done');
  }, 120_000);

  it('drops what still arrives for the deleted identifiers, so nothing re-creates the person', async () => {
    const late = personMessages(doomed).map((m) => ({
      ...(m as Record<string, unknown>),
      messageId: `late-${(m as { messageId: string }).messageId}`,
    }));
    await postBatch(h.base, writeKey, late);
    await resolveAll(h.db.pool);
    expect(await scanEveryTable(h.db.pool, needles(doomed), ids)).toEqual([]);
    const dropped = await h.db.pool.query(
      'select sum(messages)::int as n from privacy_dropped_messages',
    );
    expect(dropped.rows[0]).toEqual({ n: 5 });
    const labels = await h.db.pool.query(
      `select count(*)::int as n from (${ratedLabelsSql('web', new Date(0), new Date(), 'inclusive')}) l`,
    );
    // Only the kept person's two ratings remain to train on.
    expect(labels.rows[0]).toEqual({ n: 2 });
  }, 120_000);

  it('marks the sets it took rows from, and never gives its person ids again', async () => {
    const newest = who('newest');
    const deleted = await seedPerson(newest);
    const top = await h.db.pool.query<{ max: number }>('select max(id) as max from persons');
    expect(Math.max(...deleted)).toBe(top.rows[0]?.max);
    // A training set of three examples, two of them the person's (one train, one validate), and
    // a drift set of the person's point-in-time row that seedPerson stored.
    await h.db.pool.query(`insert into models (name, source, created_by) values ('m', 'web', 't')`);
    await h.db.pool.query(
      `insert into training_sets (set_key, model, source, train_from, train_until,
         validate_until, features, train_rows, validate_rows)
       values ('ts-newest', 'm', 'web', now() - interval '9 days', now() - interval '1 day', now(),
               '{f@1:lifetime}', 2, 1)`,
    );
    for (const [id, split, person] of [
      [1, 'train', String(deleted[0])],
      [2, 'validate', String(deleted[0])],
      [3, 'train', 'someone-else'],
    ] as const) {
      await h.db.pool.query(
        `insert into training_examples
           (set_key, event_id, split, person_id, item_id, ts, rating, label, features)
         values ('ts-newest', $1, $2, $3, 'i1', now(), 5, 1, '{0.5}')`,
        [id, split, person],
      );
    }
    await h.db.pool.query(
      `insert into drift_sets (set_key, range_from, range_to, row_count)
       values ('set-newest', now() - interval '9 days', now(), 1)`,
    );
    const started = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'user_id', value: newest.user },
      reason: 'erasure',
      requestedBy: 'dpo',
    });
    expect((await waitForRequest(h.client, h.db.pool, started))?.status).toBe('done');
    // The sets keep their built counts and say what went, as retention's pruning does.
    const sets = await h.db.pool.query(
      `select pruned_train_rows, pruned_validate_rows, pruned_at is not null as pruned
         from training_sets where set_key = 'ts-newest'`,
    );
    expect(sets.rows).toEqual([{ pruned_train_rows: 1, pruned_validate_rows: 1, pruned: true }]);
    const drift = await h.db.pool.query(
      `select pruned_rows, pruned_at is not null as pruned from drift_sets
        where set_key = 'set-newest'`,
    );
    expect(drift.rows).toEqual([{ pruned_rows: 1, pruned: true }]);
    const left = await h.db.pool.query(
      `select person_id from training_examples where set_key = 'ts-newest'`,
    );
    expect(left.rows).toEqual([{ person_id: 'someone-else' }]);
    // max(id) + 1 would now be the first of the deleted ids again.
    const next = who('next');
    await postBatch(h.base, writeKey, personMessages(next));
    await resolveAll(h.db.pool);
    const nextIds = await personOf(next.user);
    expect(nextIds).toHaveLength(2);
    expect(Math.min(...nextIds)).toBe(Math.max(...deleted) + 1);
  }, 120_000);
});

describe('a worker killed in the middle of a deletion', () => {
  it('finishes on retry with every table deleted once, and nothing left', async () => {
    const crashed = who('crash');
    const ids = await seedPerson(crashed);
    const prefix = testQueuePrefix('privacy-crash');
    const doomedWorker = await spawnWorker(h.db.url, prefix);
    onTestFinished(() => doomedWorker.stop());
    // feature_online's step waits on this lock: the worker dies while it holds the steps before.
    const holder = await h.db.pool.connect();
    await holder.query('begin');
    await holder.query('lock table feature_online in access exclusive mode');
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await holder.query('commit');
      holder.release();
    };
    onTestFinished(release);

    const started = await deletePersonData(h.client, h.db.pool, prefix, {
      identifier: { type: 'user_id', value: crashed.user },
      reason: 'crash test',
      requestedBy: 'dpo',
    });
    const steps = async () =>
      (
        await h.db.pool.query<{ n: number }>(
          'select count(*)::int as n from privacy_request_steps where request_id = $1',
          [started.requestId],
        )
      ).rows[0]?.n ?? 0;
    // tombstones, widen and every table before feature_online: then it blocks on feature_online.
    const before = 2 + PERSON_TABLES.findIndex((t) => t.table === 'feature_online');
    for (let i = 0; i < 600 && (await steps()) < before; i++) await sleep(100);
    expect(await steps()).toBe(before);
    await sleep(500);
    await doomedWorker.stop();
    await release();

    const workers = await startWorkers(h.db.pool, prefix, h.client);
    try {
      const request = await waitForRequest(h.client, h.db.pool, started);
      expect(request?.status).toBe('done');
      expect(request?.counts).toMatchObject({ events: 5, identifiers: 4, feature_online: 3 });
    } finally {
      await workers.stop();
    }
    const ledger = await h.db.pool.query<{ step: string }>(
      'select step from privacy_request_steps where request_id = $1',
      [started.requestId],
    );
    expect(new Set(ledger.rows.map((r) => r.step)).size).toBe(ledger.rows.length);
    expect(await scanEveryTable(h.db.pool, needles(crashed), ids)).toEqual([]);
  }, 240_000);
});

describe('messages stored while a deletion opens', () => {
  it('are deleted too: the subject widens after the tombstones to what came before', async () => {
    const late = who('late');
    const ids = await seedPerson(late);
    // The request opens and captures its subject; before its workflow writes the tombstones, two
    // messages carrying the address arrive from new anonymous ids (ingestion still takes them).
    await openRequest(h.db.pool, {
      kind: 'delete',
      identifier: { type: 'email', value: late.email },
      reason: 'race',
      requestedBy: 'dpo',
    });
    const extra = ['late-extra-anon-1', 'late-extra-anon-2'];
    await postBatch(
      h.base,
      writeKey,
      extra.map((anonymousId, i) => ({
        type: 'track',
        event: 'Viewed',
        messageId: `late-extra-${i}`,
        anonymousId,
        context: { traits: { email: late.email } },
        timestamp: '2026-11-02T00:00:00Z',
      })),
    );
    expect(
      (await h.db.pool.query('select 1 from events where anonymous_id = any($1)', [extra]))
        .rowCount,
    ).toBe(2);
    const started = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'email', value: late.email },
      reason: 'race',
      requestedBy: 'dpo',
    });
    expect(started.state).toBe('attached');
    const request = await waitForRequest(h.client, h.db.pool, started);
    expect(request?.status).toBe('done');
    // The person's 4 identifiers, then the two senders found when the subject widened.
    expect(request?.counts).toMatchObject({ events: 7, tombstones: 6 });
    expect(await scanEveryTable(h.db.pool, [...needles(late), ...extra], ids)).toEqual([]);
  }, 180_000);
});

describe('pops privacy delete and export of an identifier pops never saw', () => {
  it('say that nothing was found (the deletion still tombstones it)', async () => {
    const pops = popsRunner(() => ({
      DATABASE_URL: h.db.url,
      POPS_TASK_QUEUE_PREFIX: testQueuePrefix('privacy-cli'),
    }));
    const gone = await pops([
      'privacy',
      'delete',
      'email:never-seen@example.com',
      '--reason',
      'test',
    ]);
    expect(gone.code).toBe(0);
    expect(gone.stdout).toContain('tombstones: 1');
    expect(gone.stdout).toContain('no data of this identifier was found');
    const tombstone = await h.db.pool.query(
      `select count(*)::int as n from privacy_tombstones where identifier_hash = $1`,
      [hashedValueOf('email', 'never-seen@example.com').slice(3)],
    );
    expect(tombstone.rows[0]).toEqual({ n: 1 });
    // The API's request state says so too.
    const asked = await h.fetch(`${h.base}/v1/privacy/deletions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        identifier: { type: 'user_id', value: 'never-seen-either' },
        reason: 'test',
      }),
    });
    expect(asked.status).toBe(202);
    const started = (await asked.json()) as { requestId: string; workflowId: string };
    await h.client.workflow.getHandle(started.workflowId).result();
    const state = await h.fetch(`${h.base}/v1/privacy/requests/${started.requestId}`);
    expect(await state.json()).toMatchObject({ status: 'done', foundNothing: true });
    const empty = await pops(['privacy', 'export', 'user_id:does-not-exist']);
    expect(empty.code).toBe(0);
    expect(empty.stderr).toContain('no data of this identifier was found; the bundle is empty');
    // A type the identity rules do not know (a typo) is refused, by the CLI and the API.
    const typo = await pops(['privacy', 'delete', 'userid:someone', '--reason', 'typo']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('"userid" is no identifier type of the identity rules (');
    for (const route of ['deletions', 'exports']) {
      const refused = await h.fetch(`${h.base}/v1/privacy/${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          identifier: { type: 'foo', value: 'x' },
          ...(route === 'deletions' ? { reason: 'r' } : {}),
        }),
      });
      expect(refused.status).toBe(400);
      expect(await refused.text()).toContain('identifier.type: \\"foo\\" is no identifier type');
    }
    const known = await pops(['privacy', 'export', `user_id:${who('keep').user}`]);
    expect(known.code).toBe(0);
    expect(known.stderr).not.toContain('no data');
  }, 180_000);
});

describe('a deletion before any merge has run', () => {
  it('takes the ids and addresses the next merge would join, and tombstones them', async () => {
    // identify (user + anon, the email), a track of anon2, alias anon2 -> user, a track of the
    // user carrying the email: none resolved. Asked by the user id alone.
    const early = who('early');
    await postBatch(h.base, writeKey, personMessages(early));
    const started = await deletePersonData(h.client, h.db.pool, h.prefix, {
      identifier: { type: 'user_id', value: early.user },
      reason: 'erasure',
      requestedBy: 'dpo',
    });
    const request = await waitForRequest(h.client, h.db.pool, started);
    expect(request).toMatchObject({ status: 'done', foundNothing: false });
    // All five events; the user id, the anonymous id, the alias's previous id (as either type)
    // and the email.
    expect(request?.counts).toMatchObject({ events: 5, tombstones: 5 });
    expect(await scanEveryTable(h.db.pool, needles(early), [])).toEqual([]);

    const dropped = async () =>
      (
        await h.db.pool.query<{ n: number }>(
          'select coalesce(sum(messages), 0)::int as n from privacy_dropped_messages',
        )
      ).rows[0]?.n ?? 0;
    const before = await dropped();
    // A new anonymous id with the deleted address, and the previous id sending again: dropped.
    await postBatch(h.base, writeKey, [
      {
        type: 'identify',
        messageId: 'early-9',
        anonymousId: 'early-new',
        traits: { email: early.email },
      },
      { type: 'track', messageId: 'early-10', anonymousId: early.anon2, event: 'Viewed' },
    ]);
    expect(await dropped()).toBe(before + 2);
    expect(await scanEveryTable(h.db.pool, needles(early), [])).toEqual([]);
  }, 120_000);
});
