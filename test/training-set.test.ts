/**
 * Training sets from registry features: every example's features equal an oracle computed from
 * the ratings themselves (the value at the end of the UTC day before the rating, aged for
 * days_since_last, the feature's default when missing, 0 when still missing), same-day ratings
 * never see each other, and other events and sources never count.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransaction } from '../common/db.js';
import type { FeatureDefinition } from '../domain/features/definition.js';
import { loadFeatureFile } from '../domain/features/file.js';
import { writeSnapshots, writeTiles } from '../domain/features/materialize.js';
import { registerFeatures } from '../domain/features/registry.js';
import { DEFAULT_TRAINING_FEATURES } from '../domain/retrain.js';
import { loadExamples, materializeExamples, type TimeRange } from '../domain/training-set.js';
import { expectedValue, type RatedEvent } from './feature-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const EXAMPLE = path.join(import.meta.dirname, '../config/features.example.yaml');
const DAY = 86_400_000;
let db: TestDatabase;
let definitions: FeatureDefinition[];

interface Rating {
  id: number;
  person: string;
  item: string;
  /** Days (fractional) after 2024-01-01T00:00Z. */
  at: number;
  rating: number;
}
const T0 = Date.parse('2024-01-01T00:00:00Z');

async function seed(source: string, ratings: Rating[]): Promise<void> {
  for (const r of ratings) {
    await db.pool.query(
      `insert into events (id, message_id, source, type, event, person_id, user_id, item_id, ts,
                           properties)
       values ($1, $2, $3, 'track', 'rated', $4, $4, $5, $6, jsonb_build_object('rating', $7::real))`,
      [r.id, `${source}:${r.id}`, source, r.person, r.item, new Date(T0 + r.at * DAY), r.rating],
    );
  }
  // Another event name never counts.
  await db.pool.query(
    `insert into events (message_id, source, type, event, person_id, item_id, ts, properties)
     values ($1, $2, 'track', 'viewed', 'u1', 'i1', $3, '{}')`,
    [`${source}:view`, source, new Date(T0 + DAY)],
  );
}

/** The training features as the set names them, with their definitions. */
function trainingFeatures() {
  return DEFAULT_TRAINING_FEATURES.map((spec) => {
    const [name, window] = spec.split(':') as [string, string];
    return { definition: definitions.find((d) => d.name === name) as FeatureDefinition, window };
  });
}

/** The oracle: what a rating at `ts` should see of each training feature. */
function reference(all: RatedEvent[], r: Rating): number[] {
  const ts = T0 + r.at * DAY;
  const dayBefore = new Date(Math.floor(ts / DAY) * DAY - DAY).toISOString().slice(0, 10);
  const midnight = Math.floor(ts / DAY) * DAY;
  return trainingFeatures().map(({ definition: f, window }) => {
    const key = f.entity === 'person' ? `unresolved:${r.person}` : r.item;
    const v = expectedValue(f, f.windows.indexOf(window), all, key, dayBefore);
    if (v === null) return typeof f.default === 'number' ? f.default : 0;
    return f.aggregation.fn === 'days_since_last' ? v + (ts - midnight) / DAY : v;
  });
}

beforeAll(async () => {
  db = await createTestDatabase('training_set');
  definitions = loadFeatureFile(EXAMPLE);
  await registerFeatures(db.pool, definitions, 'tests');
  await db.pool.query(
    `insert into models (name, source, created_by) values ('tiny', 'tiny', 'test')`,
  );
});
afterAll(async () => {
  await db.close();
});

describe('training sets from registry features', () => {
  it('give each rating what the offline store knew at its time, and nothing of its own day', async () => {
    // u1 rates i1 and i2 at the same instant, and i5 later that day: none sees the others.
    const ratings: Rating[] = [
      { id: 101, person: 'u1', item: 'i1', at: 10.25, rating: 5 },
      { id: 102, person: 'u1', item: 'i2', at: 10.25, rating: 2 },
      { id: 103, person: 'u1', item: 'i5', at: 10.75, rating: 4 },
      { id: 104, person: 'u2', item: 'i1', at: 11.5, rating: 4 },
      { id: 105, person: 'u1', item: 'i5', at: 12.1, rating: 3.5 },
      { id: 106, person: 'u2', item: 'i2', at: 13.9, rating: 1 },
      { id: 107, person: 'u1', item: 'i1', at: 14.0, rating: 4.5 },
      { id: 108, person: 'u3', item: 'i1', at: 45.2, rating: 2 },
      { id: 109, person: 'u1', item: 'i2', at: 46.6, rating: 5 },
    ];
    await seed('tiny', ratings);
    const events: RatedEvent[] = ratings.map((r) => ({
      messageId: String(r.id),
      person: r.person,
      item: r.item,
      ts: new Date(T0 + r.at * DAY),
      rating: r.rating,
      genre: '',
    }));
    const range: TimeRange = {
      trainFrom: new Date(T0 + 10 * DAY),
      trainUntil: new Date(T0 + 13 * DAY),
      validateUntil: new Date(T0 + 47 * DAY),
    };
    const features = trainingFeatures();
    await db.pool.query(
      `insert into training_sets (set_key, model, source, train_from, train_until, validate_until,
         features, train_rows, validate_rows) values ('tiny-set', 'tiny', 'tiny', $1, $2, $3, $4, 0, 0)`,
      [
        range.trainFrom,
        range.trainUntil,
        range.validateUntil,
        features.map((f) => `${f.definition.name}@1:${f.window}`),
      ],
    );
    const counts = await withTransaction(db.pool, async (client) => {
      for (const f of definitions) {
        await writeTiles(client, f, '2024-01-01', '2024-02-20');
        await writeSnapshots(client, f, '2024-01-01', '2024-02-20', { base: true });
      }
      return materializeExamples(client, 'tiny-set', 'tiny', range, features);
    });
    expect(counts).toEqual({ train: 5, validate: 4 });

    const train = await loadExamples(db.pool, 'tiny-set', 'train');
    const validate = await loadExamples(db.pool, 'tiny-set', 'validate');
    expect(train.names).toEqual(DEFAULT_TRAINING_FEATURES.map((s) => s.replace(':', '@1:')));
    const rows = [...Array(train.n).keys()].map((i) => ({ m: train, i }));
    rows.push(...[...Array(validate.n).keys()].map((i) => ({ m: validate, i })));
    // Examples come in (ts, event id) order, as the ratings are listed.
    rows.forEach(({ m, i }, k) => {
      const r = ratings[k] as Rating;
      const got = Array.from(m.x.subarray(i * m.dim, (i + 1) * m.dim));
      const want = reference(events, r);
      got.forEach((v, j) =>
        expect(v, `rating ${r.id} feature ${m.names[j]}`).toBeCloseTo(want[j] ?? NaN, 4),
      );
      expect(m.y[i]).toBe(r.rating >= 4 ? 1 : 0);
    });
    // The same-day ratings of u1 on day 10 see no earlier rating of theirs at all.
    expect(Array.from(train.x.subarray(0, 3))).toEqual([0, 0, 0]);
  });
});
