import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mulberry32 } from '../common/random.js';
import { auditTrail } from '../domain/audit.js';
import { withoutLimits } from '../domain/identity/rules.js';
import { showPerson } from '../domain/identity/show.js';
import {
  type GraphEditBy,
  remergeIdentity,
  UnmergeRefusal,
  unmergeIdentity,
} from '../domain/identity/unmerge.js';
import {
  DEFAULT_RULES,
  importMessages,
  inTimeOrder,
  type Message,
  message,
  networkxComponents,
  normalizePartition,
  peopleStream,
  personOf,
  resetGraph,
  resolveAll,
  shuffled,
  storedConflicts,
  storedPartition,
} from './identity-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;
let edits = 0;

beforeAll(async () => {
  db = await createTestDatabase('identity-unmerge');
});

afterAll(async () => {
  await db.close();
});

beforeEach(async () => {
  await resetGraph(db.pool);
});

/** A distinct caller for each edit, as distinct workflow runs would be. */
function by(reason = 'test'): GraphEditBy {
  edits += 1;
  return { reason, requestedBy: 'tester', workflowId: `wf-${edits}`, runId: `run-${edits}` };
}

async function personRows() {
  const { rows } = await db.pool.query<Record<string, unknown>>(
    'select id, canonical_id, merged_into, merged_at, first_seen_at from persons order by id',
  );
  return rows;
}

async function mergeIdOf(messageId: string): Promise<number> {
  const { rows } = await db.pool.query<{ id: number }>(
    'select id from identity_merges where message_id = $1',
    [messageId],
  );
  if (rows.length !== 1) throw new Error(`expected one merge of ${messageId}, got ${rows.length}`);
  return rows[0]?.id ?? 0;
}

/** Events per canonical person, keyed by one identifier of that person. */
async function eventsOf(type: string, value: string): Promise<string[]> {
  const person = await personOf(db.pool, type, value);
  const { rows } = await db.pool.query<{ message_id: string }>(
    `select e.message_id from event_canonical_persons c join events e on e.id = c.event_id
      where c.person_id = $1 order by e.message_id`,
    [person],
  );
  return rows.map((r) => r.message_id);
}

describe('unmerging a merge', () => {
  // a1 (t0) and u1 (t1) meet in m3: one person. d1 joins through a1 (m5), e1 through u1 (m6), and
  // d2 through u1 (m8) after founding its own person (m7).
  const story = [
    message({ id: 'm1', at: 0, anonymousId: 'a1' }),
    message({ id: 'm2', at: 1, userId: 'u1' }),
    message({ id: 'm3', at: 2, userId: 'u1', anonymousId: 'a1' }),
    message({ id: 'm4', at: 3, userId: 'ux', deviceId: 'd1' }),
    message({ id: 'm5', at: 4, anonymousId: 'a1', deviceId: 'd1' }),
    message({ id: 'm6', at: 5, type: 'identify', userId: 'u1', email: 'e1@example.com' }),
    message({ id: 'm7', at: 6, anonymousId: 'a2', deviceId: 'd2' }),
    message({ id: 'm8', at: 7, userId: 'u1', deviceId: 'd2' }),
  ];

  it('resolves the story as worked out by hand before anything is undone', async () => {
    await importMessages(db.pool, story);
    await resolveAll(db.pool);
    // m5 would bring ux (through d1) to u1's person: two user ids, so d1 stays with ux.
    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([
        [
          'anonymous_id:a1',
          'user_id:u1',
          'email:e1@example.com',
          'anonymous_id:a2',
          'device_id:d2',
        ],
        ['user_id:ux', 'device_id:d1'],
      ]),
    );
    expect(await storedConflicts(db.pool)).toEqual(['m5|device_id:d1']);
  });

  it('keeps later merges on the side they linked through, and events with their identifiers', async () => {
    // Without the ux device: ux and u1 would breach user_id's limit, which is another test's point.
    const messages = story.filter((m) => m.messageId !== 'm4');
    await importMessages(db.pool, messages);
    await resolveAll(db.pool);
    const a1Person = await personOf(db.pool, 'anonymous_id', 'a1');
    const u1Node = (await showPerson(db.pool, { type: 'user_id', value: 'u1' }))?.lookedUp.node;

    const result = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf('m3') }, by());

    // By hand: m3 joined {a1} and {u1}. After it, d1 linked through a1 (m5); e1 (m6) and the
    // person of a2 and d2 (m8) linked through u1. So the sides are these:
    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([
        ['anonymous_id:a1', 'device_id:d1'],
        ['user_id:u1', 'email:e1@example.com', 'anonymous_id:a2', 'device_id:d2'],
      ]),
    );
    // a1 was first seen earliest: its side keeps the canonical id; u1's side gets u1's person.
    expect(await personOf(db.pool, 'anonymous_id', 'a1')).toBe(a1Person);
    expect(result).toMatchObject({ canonicalBefore: a1Person, keptPerson: a1Person });
    expect(await personOf(db.pool, 'user_id', 'u1')).toBe(u1Node);
    expect(result.splitPerson).toBe(u1Node);
    // Events follow the highest-priority identifier they carried: user_id over anonymous_id over
    // device_id. m3 carried u1 and a1, so it went with u1.
    expect(await eventsOf('anonymous_id', 'a1')).toEqual(['m1', 'm5']);
    expect(await eventsOf('user_id', 'u1')).toEqual(['m2', 'm3', 'm6', 'm7', 'm8']);
  });

  it('keeps the two sides apart when a later message would join them again, recording the conflict', async () => {
    await importMessages(db.pool, story.slice(0, 3));
    await resolveAll(db.pool);
    const unmerge = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf('m3') }, by());
    await importMessages(db.pool, [
      message({ id: 'again', at: 10, userId: 'u1', anonymousId: 'a1' }),
      message({ id: 'fresh', at: 11, userId: 'u1', anonymousId: 'a9' }),
    ]);
    await resolveAll(db.pool);

    expect(await storedPartition(db.pool)).toEqual(
      normalizePartition([['anonymous_id:a1'], ['user_id:u1', 'anonymous_id:a9']]),
    );
    expect(await storedConflicts(db.pool)).toEqual(['again|anonymous_id:a1']);
    const { rows } = await db.pool.query<{ reason: string; rule: unknown }>(
      'select reason, rule from identity_conflicts',
    );
    expect(rows).toEqual([
      {
        reason: `would join the two persons that unmerge ${unmerge.unmergeId} separated`,
        rule: { breaches: [{ kind: 'unmerged', unmergeId: unmerge.unmergeId }] },
      },
    ]);
    expect(await eventsOf('user_id', 'u1')).toEqual(['again', 'fresh', 'm2', 'm3']);
  });

  it('is undone exactly by a remerge, and then nothing keeps the sides apart', async () => {
    await importMessages(db.pool, story);
    await resolveAll(db.pool);
    const before = await personRows();
    const partition = await storedPartition(db.pool);

    const unmerge = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf('m3') }, by());
    expect(await storedPartition(db.pool)).not.toEqual(partition);
    const remerge = await remergeIdentity(db.pool, unmerge.unmergeId, by('it was right'));

    expect(remerge).toMatchObject({ exact: true, canonicalPerson: unmerge.canonicalBefore });
    expect(await personRows()).toEqual(before);
    expect(await storedPartition(db.pool)).toEqual(partition);
    // The merge is active again, so it can be undone again.
    const again = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf('m3') }, by());
    expect(again.unmergeId).toBeGreaterThan(unmerge.unmergeId);
  });

  it('undoes the merge of a person given by id, and refuses what cannot be done', async () => {
    await importMessages(db.pool, story.slice(0, 3));
    await resolveAll(db.pool);
    const u1Node = (await showPerson(db.pool, { type: 'user_id', value: 'u1' }))?.lookedUp.node;
    const canonical = await personOf(db.pool, 'user_id', 'u1');

    await expect(unmergeIdentity(db.pool, { personId: canonical ?? 0 }, by())).rejects.toThrow(
      `personId: person ${canonical} has no merge into another person to undo`,
    );
    const done = await unmergeIdentity(db.pool, { personId: u1Node ?? 0 }, by());
    expect(done.mergeId).toBe(await mergeIdOf('m3'));
    await expect(unmergeIdentity(db.pool, { mergeId: done.mergeId }, by())).rejects.toThrow(
      `merge ${done.mergeId} is already undone (unmerge ${done.unmergeId})`,
    );
    await expect(unmergeIdentity(db.pool, { mergeId: 999 }, by())).rejects.toThrow(
      'mergeId: merge 999 does not exist',
    );
    await remergeIdentity(db.pool, done.unmergeId, by());
    const twice = remergeIdentity(db.pool, done.unmergeId, by());
    await expect(twice).rejects.toBeInstanceOf(UnmergeRefusal);
    await expect(twice).rejects.toThrow(`unmerge ${done.unmergeId} is already reverted`);
  });

  it('returns the recorded result when the same run asks again', async () => {
    await importMessages(db.pool, story.slice(0, 3));
    await resolveAll(db.pool);
    const caller = by();
    const first = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf('m3') }, caller);
    const rows = await personRows();
    const retried = await unmergeIdentity(db.pool, { mergeId: first.mergeId }, caller);
    expect(retried).toEqual({ ...first, replayed: true });
    expect(await personRows()).toEqual(rows);
    // The audit row was written in the unmerge's own transaction, once.
    const trail = await auditTrail(db.pool, { workflowId: caller.workflowId });
    const { replayed: _replayed, ...outputs } = first;
    expect(trail.map((r) => [r.action, r.actor, r.inputs, r.outputs])).toEqual([
      ['identity.unmerged', 'tester', { mergeId: first.mergeId, reason: 'test' }, outputs],
    ]);
  });
});

/**
 * A random forest over identifiers of several types, as two-identifier messages in shuffled order.
 * In a forest every message joins two persons that were apart, so each message is one merge.
 */
function forest(seed: number, size: number) {
  const random = mulberry32(seed);
  const types = ['user_id', 'anonymous_id', 'device_id', 'email'] as const;
  const nodes = Array.from({ length: size }, (_, i) => {
    const type = types[Math.floor(random() * types.length)] ?? 'anonymous_id';
    const value = type === 'email' ? `p${seed}-${i}@example.com` : `${type[0]}${seed}-${i}`;
    return { type, value, key: `${type}:${value}` };
  });
  const node = (i: number) => {
    const found = nodes[i];
    if (!found) throw new Error(`forest: no node ${i}`);
    return found;
  };
  // A pair is a valid message when it has a user or anonymous id, and two of a type only as an
  // alias.
  const fits = (a: (typeof nodes)[number], b: (typeof nodes)[number]) => {
    const ids = [a.type, b.type];
    if (a.type === b.type) return a.type === 'anonymous_id';
    return ids.includes('user_id') || ids.includes('anonymous_id');
  };
  const edges: Array<[number, number]> = [];
  for (let i = 1; i < size; i += 1) {
    if (random() < 0.15) continue; // a new tree
    const candidates = [...Array(i).keys()].filter((j) => fits(node(i), node(j)));
    const j = candidates[Math.floor(random() * candidates.length)];
    if (j !== undefined) edges.push([j, i]);
  }
  const messages: Message[] = [];
  const singles = new Set(nodes.map((_, i) => i));
  edges.forEach(([a, b], k) => {
    singles.delete(a);
    singles.delete(b);
    messages.push(pairMessage(`f${seed}-e${k}`, k * 7, node(a), node(b)));
  });
  // Identifiers in no edge still appear once, alone (only user and anonymous ids can).
  for (const i of singles) {
    const n = node(i);
    if (n.type === 'user_id' || n.type === 'anonymous_id') {
      messages.push(pairMessage(`f${seed}-s${i}`, i * 3 + 1, n));
    }
  }
  const present = new Set(messages.flatMap((m) => m['keys'] as string[]));
  return {
    messages: shuffled(messages, seed + 1).map(({ keys: _keys, ...m }) => m as Message),
    nodes: nodes.map((n) => n.key).filter((k) => present.has(k)),
    edges: edges.map(([a, b], k) => ({ id: `f${seed}-e${k}`, a: node(a).key, b: node(b).key })),
  };
}

function pairMessage(
  id: string,
  at: number,
  a: { type: string; value: string; key: string },
  b?: { type: string; value: string; key: string },
): Message {
  const fields: Record<string, string> = {};
  let type: 'track' | 'alias' = 'track';
  for (const n of b ? [a, b] : [a]) {
    if (n.type === 'anonymous_id' && fields['anonymousId']) {
      type = 'alias';
      fields['previousId'] = n.value;
    } else {
      const field = { user_id: 'userId', anonymous_id: 'anonymousId', device_id: 'deviceId' }[
        n.type as 'user_id'
      ];
      fields[field ?? 'email'] = n.value;
    }
  }
  const m = message({ id, at, type, ...fields });
  return { ...m, keys: b ? [a.key, b.key] : [a.key] };
}

describe('unmerge as a property of the links', () => {
  for (const seed of [1, 2, 3]) {
    it(`on a random forest (seed ${seed}), leaves the networkx components of the links not undone, and remerges exactly`, async () => {
      const rules = withoutLimits(DEFAULT_RULES);
      const f = forest(seed, 90);
      await importMessages(db.pool, f.messages);
      await resolveAll(db.pool, rules, 25);
      const everything = networkxComponents(
        f.nodes,
        f.edges.map((e) => [e.a, e.b]),
      );
      expect(await storedPartition(db.pool)).toEqual(everything);
      const before = await personRows();

      // Only links between two known persons are merges; a new identifier just joins.
      const { rows } = await db.pool.query<{ message_id: string }>(
        'select message_id from identity_merges',
      );
      const merged = new Set(rows.map((r) => r.message_id));
      expect(merged.size).toBeGreaterThan(5);
      const random = mulberry32(seed * 31);
      const undone = shuffled(
        f.edges.filter((e) => merged.has(e.id)),
        seed * 7,
      ).slice(0, 6 + Math.floor(random() * 6));
      const unmerges: number[] = [];
      for (const edge of undone) {
        const u = await unmergeIdentity(db.pool, { mergeId: await mergeIdOf(edge.id) }, by());
        unmerges.push(u.unmergeId);
      }
      const left = f.edges.filter((e) => !undone.includes(e));
      expect(await storedPartition(db.pool)).toEqual(
        networkxComponents(
          f.nodes,
          left.map((e) => [e.a, e.b]),
        ),
      );

      for (const id of unmerges.reverse()) {
        expect((await remergeIdentity(db.pool, id, by())).exact).toBe(true);
      }
      expect(await storedPartition(db.pool)).toEqual(everything);
      expect(await personRows()).toEqual(before);
    });
  }

  it('with the default limits, every merge of a generated stream can be undone and redone exactly', async () => {
    const stream = peopleStream(5, 12, 3);
    await importMessages(db.pool, inTimeOrder(stream.messages));
    await resolveAll(db.pool, DEFAULT_RULES, 30);
    const before = await personRows();
    const { rows } = await db.pool.query<{ id: number }>('select id from identity_merges');
    expect(rows.length).toBeGreaterThan(10);
    for (const { id } of rows) {
      const u = await unmergeIdentity(db.pool, { mergeId: id }, by());
      const split = await storedPartition(db.pool);
      // One group of the partition became two, and nothing else changed.
      expect(split.length).toBe(stream.expected.length + 1);
      await remergeIdentity(db.pool, u.unmergeId, by());
      expect(await personRows()).toEqual(before);
    }
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
  });
});
