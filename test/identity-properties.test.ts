import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pool } from '../common/db.js';
import { mulberry32 } from '../common/random.js';
import { withoutLimits } from '../domain/identity/rules.js';
import {
  DEFAULT_RULES,
  importMessages,
  inTimeOrder,
  type Message,
  message,
  networkxComponents,
  peopleStream,
  resetGraph,
  resolveAll,
  shuffled,
  storedConflicts,
  storedPartition,
} from './identity-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('identity-properties');
});

afterAll(async () => {
  await db.close();
});

/**
 * Random messages over a fixed pool of identifiers, each carrying up to one of each kind (the
 * message format allows no more), and the edges they imply: every pair within a message.
 */
function randomGraph(seed: number, count: number) {
  const random = mulberry32(seed);
  const any = (prefix: string, n: number) => `${prefix}${Math.floor(random() * n)}`;
  const messages: Message[] = [];
  const nodes = new Set<string>();
  const edges: Array<[string, string]> = [];
  for (let i = 0; i < count; i += 1) {
    const userId = random() < 0.3 ? any('u', 150) : undefined;
    const anonymousId = random() < 0.7 || userId === undefined ? any('a', 300) : undefined;
    const deviceId = random() < 0.4 ? any('d', 100) : undefined;
    const email = random() < 0.15 ? `${any('e', 80)}@x.io` : undefined;
    const inContext = random() < 0.5;
    messages.push(
      message({
        id: `g${seed}-${i}`,
        at: Math.floor(random() * 50_000),
        userId,
        anonymousId,
        deviceId,
        ...(inContext ? { contextEmail: email } : { email }),
      }),
    );
    const ids = [
      userId && `user_id:${userId}`,
      anonymousId && `anonymous_id:${anonymousId}`,
      deviceId && `device_id:${deviceId}`,
      email && `email:${email}`,
    ].filter((id): id is string => typeof id === 'string');
    for (const id of ids) nodes.add(id);
    for (let a = 0; a < ids.length; a += 1) {
      for (let b = a + 1; b < ids.length; b += 1) edges.push([ids[a] as string, ids[b] as string]);
    }
  }
  return { messages, nodes: [...nodes], edges };
}

/** The graph as rows that do not depend on events.id, for comparing runs of different arrivals. */
async function graphByMessage(pool: Pool) {
  const persons = await pool.query(
    'select id, canonical_id, merged_into, first_seen_at from persons order by id',
  );
  const identifiers = await pool.query(
    'select type, value, person_id, first_seen_at from identifiers order by type, value',
  );
  const merges = await pool.query(
    'select merged_from, merged_into, message_id, decisions from identity_merges order by id',
  );
  return { persons: persons.rows, identifiers: identifiers.rows, merges: merges.rows };
}

describe('identity resolution as a property of the edges', () => {
  it('equals the connected components of networkx when limits are lifted, in any arrival order', async () => {
    const graph = randomGraph(3, 420);
    const expected = networkxComponents(graph.nodes, graph.edges);
    // The oracle's answer is not trivial: many components, some of them large.
    expect(expected.length).toBeGreaterThan(100);
    expect(Math.max(...expected.map((c) => c.length))).toBeGreaterThanOrEqual(10);

    for (const seed of [1, 2, 3]) {
      await resetGraph(db.pool);
      await importMessages(db.pool, shuffled(graph.messages, seed));

      await resolveAll(db.pool, withoutLimits(DEFAULT_RULES), 97);

      expect(await storedPartition(db.pool)).toEqual(expected);
    }
  });

  it('with the default limits, gives the true partition and the same graph for shuffled arrivals in one chunk', async () => {
    const stream = peopleStream(11, 40, 8);
    expect(stream.expectedConflicts.length).toBeGreaterThan(0);
    let first: Awaited<ReturnType<typeof graphByMessage>> | undefined;

    for (const order of [
      inTimeOrder(stream.messages),
      ...[4, 5, 6, 7].map((s) => shuffled(stream.messages, s)),
    ]) {
      await resetGraph(db.pool);
      await importMessages(db.pool, order);

      await resolveAll(db.pool, DEFAULT_RULES, 10_000);

      expect(await storedPartition(db.pool)).toEqual(stream.expected);
      expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
      const graph = await graphByMessage(db.pool);
      first ??= graph;
      expect(graph).toEqual(first);
    }
  });

  it('with the default limits, messages arriving in time order give the true partition in chunks of 37', async () => {
    const stream = peopleStream(12, 40, 8);
    await resetGraph(db.pool);
    await importMessages(db.pool, inTimeOrder(stream.messages));

    const chunks = await resolveAll(db.pool, DEFAULT_RULES, 37);

    expect(chunks.length).toBe(Math.floor(stream.messages.length / 37) + 1);
    expect(await storedPartition(db.pool)).toEqual(stream.expected);
    expect(await storedConflicts(db.pool)).toEqual(stream.expectedConflicts);
  });
});
