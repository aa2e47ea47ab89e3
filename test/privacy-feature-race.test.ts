import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Pool, type PoolClient, withTransaction } from '../common/db.js';
import { buildDriftSet } from '../domain/drift/store.js';
import type { FeatureDefinition } from '../domain/features/definition.js';
import { snapshotTime, writeSnapshots, writeTiles } from '../domain/features/materialize.js';
import { publishOnline } from '../domain/features/online.js';
import { buildPointInTimeSet } from '../domain/features/point-in-time.js';
import { registerFeatures } from '../domain/features/registry.js';
import { FEATURE_WRITE_LOCK, lockFeatureWrites } from '../domain/features/write-lock.js';
import { derivedBeforeEvents, PERSON_TABLES } from '../domain/privacy/person-tables.js';
import {
  deleteTableRows,
  finishRequest,
  getRequest,
  openRequest,
  startRequest,
  widenAndTombstone,
  writeTombstones,
} from '../domain/privacy/requests.js';
import { declareModel } from '../domain/registry.js';
import { materializeExamples, ratedLabelsSql } from '../domain/training-set.js';
import { insertEvents, type RatedEvent, testDefinitions } from './feature-support.js';
import { type Harness, startHarness } from './harness.js';

let h: Harness;
/** p_count: events per person over 1d, 7d and lifetime. */
let f: FeatureDefinition;

const DAYS = ['2026-03-01', '2026-03-02', '2026-03-03'];
const FROM = DAYS[0] as string;
const TO = DAYS[DAYS.length - 1] as string;
const FEATURE_TABLES = [
  'feature_tiles',
  'feature_values',
  'feature_online',
  'feature_consistency_mismatches',
];
/** The sets' tables, computed from events and snapshots: after the feature tables. */
const SET_TABLES = ['pit_set_rows', 'training_examples'];

/** `perDay` rated events of `person` on each of DAYS, at noon plus i minutes. */
function eventsOf(person: string, perDay: number): RatedEvent[] {
  return DAYS.flatMap((day) =>
    Array.from({ length: perDay }, (_, i) => ({
      messageId: `${person}-${day}-${i}`,
      person,
      item: `i${i % 3}`,
      ts: new Date(Date.parse(`${day}T12:00:00Z`) + i * 60_000),
      rating: 3,
      genre: 'drama',
    })),
  );
}

/**
 * One materialization of DAYS as the backfill activities write it (tiles, then snapshots and the
 * online store), each in its own transaction under the feature write lock.
 */
async function materialize(pool: Pool): Promise<void> {
  await withTransaction(pool, async (client) => {
    await lockFeatureWrites(client);
    await writeTiles(client, f, FROM, TO);
  });
  await withTransaction(pool, async (client) => {
    await lockFeatureWrites(client);
    await writeSnapshots(client, f, FROM, TO, { base: true });
    await publishOnline(client, f, {
      fromTs: new Date(snapshotTime(FROM)),
      untilTs: new Date(snapshotTime(TO)),
    });
  });
}

let builds = 0;

/**
 * A drift set and a training set over DAYS, as monitorDrift and retrainModel build them (each in
 * its own transaction, recorded with its rows).
 */
async function buildSets(pool: Pool): Promise<void> {
  builds++;
  const from = new Date(`${FROM}T00:00:00Z`);
  const until = new Date(`${TO}T23:59:59Z`);
  await buildDriftSet(pool, {
    setKey: `race-drift-${builds}`,
    source: 'test',
    from,
    to: until,
    features: [`${f.name}@${f.version}:lifetime`],
  });
  const setKey = `race-train-${builds}`;
  const range = { trainFrom: from, trainUntil: new Date(`${TO}T00:00:00Z`), validateUntil: until };
  await withTransaction(pool, async (client) => {
    await client.query(
      `insert into training_sets (set_key, model, source, train_from, train_until, validate_until,
         features, train_rows, validate_rows)
       values ($1, 'race-model', 'test', $2, $3, $4, $5, 0, 0)`,
      [setKey, range.trainFrom, range.trainUntil, range.validateUntil, [`${f.name}:lifetime`]],
    );
    await materializeExamples(client, setKey, 'test', range, [
      { definition: f, window: 'lifetime' },
    ]);
  });
}

/** The person key's rows in the sets' tables. */
async function setRows(key: string): Promise<Record<string, number>> {
  const { rows } = await h.db.pool.query<{ pit: number; examples: number }>(
    `select (select count(*)::int from pit_set_rows where person_key = $1) as pit,
            (select count(*)::int from training_examples where person_id = $1) as examples`,
    [key],
  );
  return { pit_set_rows: rows[0]?.pit ?? -1, training_examples: rows[0]?.examples ?? -1 };
}

/** The rows of each feature table keyed by the entity. */
async function featureRows(key: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of FEATURE_TABLES) {
    const { rows } = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from ${table} where entity_id = $1`,
      [key],
    );
    out[table] = rows[0]?.n ?? 0;
  }
  return out;
}

/** The lifetime count the online store serves for the key (undefined: no row). */
async function onlineLifetime(key: string): Promise<number | undefined> {
  const { rows } = await h.db.pool.query<{ vals: number[] }>(
    `select vals from feature_online where name = $1 and version = $2 and entity_id = $3`,
    [f.name, f.version, key],
  );
  return rows[0]?.vals[f.windows.indexOf('lifetime')];
}

/** Opens a deletion of the user id and writes its tombstones; its id and its tables in order. */
async function openDeletion(user: string): Promise<{ id: string; tables: string[] }> {
  const { request } = await openRequest(h.db.pool, {
    kind: 'delete',
    identifier: { type: 'user_id', value: user },
    reason: 'race test',
    requestedBy: 'dpo',
  });
  const tables = await startRequest(h.db.pool, request.id);
  await writeTombstones(h.db.pool, request.id);
  await widenAndTombstone(h.db.pool, request.id);
  return { id: request.id, tables };
}

beforeAll(async () => {
  h = await startHarness('privacy-feature-race');
  const found = testDefinitions().find((d) => d.name === 'p_count');
  if (!found) throw new Error('p_count is not a test feature');
  f = found;
  await registerFeatures(h.db.pool, [f], 'tests');
  await declareModel(h.db.pool, { name: 'race-model', source: 'test', createdBy: 'tests' });
}, 120_000);

afterAll(async () => {
  await h?.close();
});

describe('a materialization and set builds between the steps of a deletion', () => {
  it('write nothing of the person that the deletion leaves behind', async () => {
    await insertEvents(h.db.pool, [...eventsOf('race-user', 10), ...eventsOf('race-keep', 4)]);
    await materialize(h.db.pool);
    await buildSets(h.db.pool);
    // A drift set and a training set take the person's 30 rated events each (one example each).
    expect(await setRows('unresolved:race-user')).toEqual({
      pit_set_rows: 60,
      training_examples: 30,
    });
    // Before: the person's lifetime count is every event of theirs (10 a day over 3 days).
    expect(await onlineLifetime('unresolved:race-user')).toBe(30);
    expect(await featureRows('unresolved:race-user')).toEqual({
      feature_tiles: 3,
      feature_values: 3,
      feature_online: 1,
      feature_consistency_mismatches: 0,
    });

    const { id, tables } = await openDeletion('race-user');
    // The derived tables come after what they are computed from.
    expect(tables.indexOf('feature_tiles')).toBeGreaterThan(tables.indexOf('events'));
    expect(tables.slice(-6)).toEqual([...FEATURE_TABLES, ...SET_TABLES]);
    const counts: Record<string, number> = {};
    for (const table of tables) {
      counts[table] = await deleteTableRows(h.db.pool, id, table);
      // A scheduled materialization runs in every gap, the tester's (after event_persons) too, and
      // a drift monitor and a retrain build their sets.
      await materialize(h.db.pool);
      await buildSets(h.db.pool);
    }
    await finishRequest(h.db.pool, id, counts);

    expect((await getRequest(h.db.pool, id))?.status).toBe('done');
    expect(await featureRows('unresolved:race-user')).toEqual({
      feature_tiles: 0,
      feature_values: 0,
      feature_online: 0,
      feature_consistency_mismatches: 0,
    });
    // The materialization after the events step rewrote the days without the person's tiles and
    // snapshots; the online store keeps a row until its step deletes it.
    expect(counts).toMatchObject({ events: 30, feature_tiles: 0, feature_values: 0 });
    expect(counts['feature_online']).toBe(1);
    // The other person's features are still computed from their 12 events.
    expect(await onlineLifetime('unresolved:race-keep')).toBe(12);
    // No set keeps a row of the person; every set built in a gap before the events step took
    // them (two sets a build), and the set steps deleted those too.
    expect(await setRows('unresolved:race-user')).toEqual({
      pit_set_rows: 0,
      training_examples: 0,
    });
    const before = tables.indexOf('events') + 1;
    expect(counts['pit_set_rows']).toBe(60 * before);
    expect(counts['training_examples']).toBe(30 * before);
    // The last training set still has the other person's 12 examples.
    const kept = await h.db.pool.query<{ n: number }>(
      `select count(*)::int as n from training_examples where person_id = $1 and set_key = $2`,
      ['unresolved:race-keep', `race-train-${builds}`],
    );
    expect(kept.rows[0]?.n).toBe(12);
  }, 120_000);
});

/**
 * Runs every step of deletion `id` while `write` holds a derived write open: it reads the
 * person's rows before the events step and commits only once the first derived step (the feature
 * tiles) waits on the feature write lock (a condition polled, not a delay hoped for). Returns the
 * counts of the steps.
 */
async function deleteAcrossOpenWrite(
  id: string,
  tables: readonly string[],
  write: (client: PoolClient) => Promise<unknown>,
): Promise<Record<string, number>> {
  const writer = await h.db.pool.connect();
  let open = true;
  try {
    await writer.query('begin');
    await write(writer);
    const counts: Record<string, number> = {};
    const derived = tables.indexOf('feature_tiles');
    for (const table of tables.slice(0, derived)) {
      counts[table] = await deleteTableRows(h.db.pool, id, table);
    }
    const step = deleteTableRows(h.db.pool, id, 'feature_tiles');
    for (let i = 0; i < 300 && !(await waitsOnFeatureLock(h.db.pool)); i++) await sleep(50);
    expect(await waitsOnFeatureLock(h.db.pool)).toBe(true);
    await writer.query('commit');
    open = false;
    counts['feature_tiles'] = await step;
    for (const table of tables.slice(derived + 1)) {
      counts[table] = await deleteTableRows(h.db.pool, id, table);
    }
    await finishRequest(h.db.pool, id, counts);
    return counts;
  } finally {
    if (open) await writer.query('rollback');
    writer.release();
  }
}

describe("a feature write in flight during a derived table's step", () => {
  it('commits first: the step waits for it and deletes what it wrote', async () => {
    await insertEvents(h.db.pool, eventsOf('inflight-user', 5));
    await materialize(h.db.pool);
    const { id, tables } = await openDeletion('inflight-user');

    // A tile write reads the person's events (still there) and holds its transaction open.
    const counts = await deleteAcrossOpenWrite(id, tables, async (writer) => {
      await lockFeatureWrites(writer);
      await writeTiles(writer, f, FROM, TO);
    });
    expect(counts['events']).toBe(15);
    // The writer's tiles (one per day) were committed before the step read: all deleted.
    expect(counts['feature_tiles']).toBe(3);
    expect(await featureRows('unresolved:inflight-user')).toEqual({
      feature_tiles: 0,
      feature_values: 0,
      feature_online: 0,
      feature_consistency_mismatches: 0,
    });
  }, 120_000);
});

describe("a set build in flight during the sets' step", () => {
  it('commits first: the step waits for it and deletes what it wrote', async () => {
    await insertEvents(h.db.pool, eventsOf('setbuild-user', 4));
    await materialize(h.db.pool);
    const { id, tables } = await openDeletion('setbuild-user');

    // A drift set's build reads the person's events (still there) and holds its transaction open;
    // the first derived step (the feature tables come before the sets') waits for it.
    const labels = ratedLabelsSql(
      'test',
      new Date(`${FROM}T00:00:00Z`),
      new Date(`${TO}T23:59:59Z`),
      'exclusive',
    );
    const counts = await deleteAcrossOpenWrite(id, tables, (builder) =>
      buildPointInTimeSet(builder, {
        setKey: 'inflight-drift',
        labels,
        features: [{ definition: f, window: 'lifetime' }],
      }),
    );
    expect(counts['events']).toBe(12);
    // The build's 12 rows of the person were committed before the sets' step: all deleted.
    expect(counts['pit_set_rows']).toBe(12);
    expect(await setRows('unresolved:setbuild-user')).toEqual({
      pit_set_rows: 0,
      training_examples: 0,
    });
  }, 120_000);
});

describe("a set row keyed by the person's earlier canonical key", () => {
  it('is found by its event (row_id) and deleted', async () => {
    await insertEvents(h.db.pool, eventsOf('unmerged-user', 2));
    await materialize(h.db.pool);
    await buildSets(h.db.pool);
    // As if the user had been merged into person 424242 when the sets were built, and unmerged
    // since: their rows carry that key, which the deletion's subject no longer has.
    const moved = await h.db.pool.query(
      `update pit_set_rows set person_key = '424242' where person_key = 'unresolved:unmerged-user'`,
    );
    expect(moved.rowCount).toBe(12);
    const { id, tables } = await openDeletion('unmerged-user');
    const counts: Record<string, number> = {};
    for (const table of tables) counts[table] = await deleteTableRows(h.db.pool, id, table);
    await finishRequest(h.db.pool, id, counts);
    expect(counts['pit_set_rows']).toBe(12);
    const left = await h.db.pool.query(`select 1 from pit_set_rows where person_key = '424242'`);
    expect(left.rowCount).toBe(0);
  }, 120_000);
});

describe('a deletion started by the earlier order (feature tables first)', () => {
  it('deletes the feature tables again at its end, as sweep steps', async () => {
    await insertEvents(h.db.pool, eventsOf('early-user', 6));
    await materialize(h.db.pool);
    const { id, tables } = await openDeletion('early-user');
    // The list an earlier version's privacyStart returned (recorded in its workflow's history).
    const rest = tables.filter((t) => !FEATURE_TABLES.includes(t));
    const at = rest.indexOf('exposures') + 1;
    const earlier = [
      ...rest.slice(0, at),
      'feature_online',
      'feature_values',
      'feature_tiles',
      'feature_consistency_mismatches',
      ...rest.slice(at),
    ];
    const counts: Record<string, number> = {};
    for (const table of earlier) {
      counts[table] = await deleteTableRows(h.db.pool, id, table);
      // Between the feature steps and events: the person's features are written back.
      if (table === 'event_persons') await materialize(h.db.pool);
    }
    expect(await onlineLifetime('unresolved:early-user')).toBe(18);
    const sweep = derivedBeforeEvents(earlier);
    expect(sweep).toEqual(FEATURE_TABLES);
    const swept: Record<string, number> = {};
    for (const table of sweep) {
      swept[table] = await deleteTableRows(h.db.pool, id, table, { sweep: true });
    }
    // A retried sweep step returns its count and deletes nothing more.
    expect(await deleteTableRows(h.db.pool, id, 'feature_online', { sweep: true })).toBe(1);
    await finishRequest(h.db.pool, id, counts);
    // What the materialization wrote back: a tile and a snapshot a day, one online row.
    expect(swept).toEqual({
      feature_tiles: 3,
      feature_values: 3,
      feature_online: 1,
      feature_consistency_mismatches: 0,
    });
    expect(await featureRows('unresolved:early-user')).toEqual({
      feature_tiles: 0,
      feature_values: 0,
      feature_online: 0,
      feature_consistency_mismatches: 0,
    });
  }, 120_000);
});

describe('derivedBeforeEvents', () => {
  it('names the feature tables of a list in the earlier order, in derivation order', () => {
    const earlier = [
      'privacy_exports',
      'feature_online',
      'feature_values',
      'feature_tiles',
      'feature_consistency_mismatches',
      'event_persons',
      'events',
      'persons',
    ];
    expect(derivedBeforeEvents(earlier)).toEqual(FEATURE_TABLES);
    expect(derivedBeforeEvents(PERSON_TABLES.map((t) => t.table))).toEqual([]);
  });

  it("names the sets' tables of a list where they came before events, apart", () => {
    // The order before the sets' tables moved after events: feature tables already last.
    const earlier = [
      'privacy_exports',
      'pit_set_rows',
      'training_examples',
      'event_persons',
      'events',
      'persons',
      ...FEATURE_TABLES,
    ];
    expect(derivedBeforeEvents(earlier, 'features')).toEqual([]);
    expect(derivedBeforeEvents(earlier, 'training')).toEqual(SET_TABLES);
    expect(
      derivedBeforeEvents(
        PERSON_TABLES.map((t) => t.table),
        'training',
      ),
    ).toEqual([]);
  });
});

/** Whether a session waits for the feature write lock. */
async function waitsOnFeatureLock(pool: Pool): Promise<boolean> {
  const { rows } = await pool.query<{ n: number }>(
    `select count(*)::int as n from pg_locks
      where locktype = 'advisory' and not granted and classid = 0 and objid = $1 and objsubid = 1`,
    [FEATURE_WRITE_LOCK],
  );
  return (rows[0]?.n ?? 0) > 0;
}
