import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditTrail } from '../domain/audit.js';
import {
  featureDefinitionSchema,
  type FeatureDefinitionInput,
  sourceTables,
} from '../domain/features/definition.js';
import { loadFeatureFile } from '../domain/features/file.js';
import { listFeatures, registerFeatures, showFeature } from '../domain/features/registry.js';
import { describeZodError } from '../common/failures.js';
import { popsRunner } from './cli-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const EXAMPLE = path.join(import.meta.dirname, '../config/features.example.yaml');
let db: TestDatabase;
// The command line gets a database of its own: the registry tests above fill this one.
let cliDb: TestDatabase;
const pops = popsRunner(() => ({ DATABASE_URL: cliDb.url, POPS_ACTOR: 'feature-tester' }));

beforeAll(async () => {
  db = await createTestDatabase('feature-registry');
  cliDb = await createTestDatabase('feature-cli');
});
afterAll(async () => {
  await db.close();
  await cliDb.close();
});

const base: FeatureDefinitionInput = {
  name: 'person_rating_count',
  version: 1,
  entity: 'person',
  source: { events: { event: 'rated' } },
  aggregation: { fn: 'count' },
  windows: ['7d', 'lifetime'],
  type: 'int',
  default: 0,
  owner: 'ml',
  description: 'ratings in the window',
  freshnessSla: '1d',
};

function problem(input: unknown): string {
  const result = featureDefinitionSchema.safeParse(input);
  return result.success ? 'ok' : describeZodError(result.error, input);
}

function yamlFile(text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-features-'));
  const file = path.join(dir, 'features.yaml');
  fs.writeFileSync(file, text);
  return file;
}

describe('feature definitions', () => {
  it('take durations in seconds and fill the default', () => {
    const parsed = featureDefinitionSchema.parse({ ...base, ttl: '90d', default: undefined });
    expect(parsed.freshnessSla).toBe(86_400);
    expect(parsed.ttl).toBe(90 * 86_400);
    expect(parsed.default).toBeNull();
  });

  it('refuse what cannot be computed, naming the field and the value', () => {
    expect(problem({ ...base, type: 'float' })).toBe(
      'type: must be int for aggregation count (got "float")',
    );
    expect(problem({ ...base, aggregation: { fn: 'mean' } })).toContain('aggregation.of');
    expect(problem({ ...base, aggregation: { fn: 'median', of: 'x' } })).toContain(
      'aggregation.fn: is not an aggregation',
    );
    expect(problem({ ...base, windows: ['7d', '7d'] })).toBe(
      'windows: has a window twice (got ["7d","7d"])',
    );
    expect(problem({ ...base, windows: ['1w'] })).toContain('windows.0: ');
    expect(problem({ ...base, default: 1.5 })).toBe('default: is not a int (got 1.5)');
    expect(problem({ ...base, freshnessSla: '1 day' })).toContain(
      'freshnessSla: is not a duration like 30m, 6h or 7d (got "1 day")',
    );
    expect(problem({ ...base, source: { sql: 'delete from events' } })).toContain('source');
    expect(problem({ ...base, colour: 'red' })).toContain('Unrecognized key: "colour"');
    expect(problem({ ...base, name: 'Person Count' })).toContain('name: is not a feature name');
  });

  it('name the tables they read, for lineage', () => {
    const sql = featureDefinitionSchema.parse({
      ...base,
      source: {
        sql: 'select p.canonical_id as entity_id, e.ts, 1 as value from events e join event_canonical_persons p on p.event_id = e.id',
      },
    });
    expect(sourceTables(sql)).toEqual(['event_canonical_persons', 'events']);
    expect(sourceTables(featureDefinitionSchema.parse(base))).toEqual(['events']);
  });

  it('load from a YAML file, and an error names the file, the index, the name and the field', () => {
    expect(loadFeatureFile(EXAMPLE).map((f) => `${f.name}@${f.version}`)).toEqual([
      'person_rating_count@1',
      'person_mean_rating@1',
      'person_positive_rate@1',
      'item_popularity@1',
      'person_days_since_last_rating@1',
      'item_mean_rating@1',
      'item_positive_rate@1',
    ]);
    const bad = yamlFile(
      'features:\n  - {name: a, version: 1}\n  - {name: b, version: 0, entity: person}\n',
    );
    expect(() => loadFeatureFile(bad)).toThrow(`${bad}: features[0] (a): entity:`);
    const twice = yamlFile(`features:\n  - ${JSON.stringify(base)}\n  - ${JSON.stringify(base)}\n`);
    expect(() => loadFeatureFile(twice)).toThrow(
      `${twice}: features[1] (person_rating_count): person_rating_count@1 is declared twice`,
    );
    expect(() => loadFeatureFile(yamlFile('feature: []\n'))).toThrow('Unrecognized key');
  });
});

describe('the feature registry', () => {
  it("keeps a version's computation, updates its metadata in place, and keeps old versions readable", async () => {
    const v1 = featureDefinitionSchema.parse(base);
    expect(await registerFeatures(db.pool, [v1], 'ann')).toEqual([
      { name: 'person_rating_count', version: 1, registration: 'created' },
    ]);
    expect((await registerFeatures(db.pool, [v1], 'ann'))[0]?.registration).toBe('unchanged');
    const owned = featureDefinitionSchema.parse({ ...base, owner: 'growth' });
    expect((await registerFeatures(db.pool, [owned], 'bob'))[0]?.registration).toBe('updated');

    const changed = featureDefinitionSchema.parse({ ...base, windows: ['30d'] });
    await expect(registerFeatures(db.pool, [changed], 'bob')).rejects.toThrow(
      'feature person_rating_count version 1 is registered with another computation;' +
        ' a changed computation needs a new version (declare version 2)',
    );
    const v2 = featureDefinitionSchema.parse({ ...base, version: 2, windows: ['30d'] });
    expect((await registerFeatures(db.pool, [v2], 'bob'))[0]?.registration).toBe('created');

    const versions = await showFeature(db.pool, 'person_rating_count');
    expect(versions.map((v) => [v.version, v.definition.windows, v.definition.owner])).toEqual([
      [2, ['30d'], 'ml'],
      [1, ['7d', 'lifetime'], 'growth'],
    ]);
    expect(await listFeatures(db.pool)).toEqual([
      {
        name: 'person_rating_count',
        latest: 2,
        versions: 2,
        entity: 'person',
        owner: 'ml',
        sourceTables: ['events'],
        lastBackfill: null,
        latestSnapshot: null,
        freshness: 'never backfilled',
      },
    ]);
    const trail = await auditTrail(db.pool, { subject: 'feature/person_rating_count/1' });
    expect(trail.map((r) => [r.action, r.actor])).toEqual([
      ['feature.created', 'ann'],
      ['feature.updated', 'bob'],
    ]);
  });

  it('registers a file all or nothing', async () => {
    const fresh = featureDefinitionSchema.parse({ ...base, name: 'fresh_feature' });
    const conflicting = featureDefinitionSchema.parse({ ...base, windows: ['90d'] });
    await expect(registerFeatures(db.pool, [fresh, conflicting], 'ann')).rejects.toThrow(
      'another computation',
    );
    expect(await showFeature(db.pool, 'fresh_feature')).toEqual([]);
  });

  it('is driven from the command line', async () => {
    const registered = await pops(['features', 'register', EXAMPLE, '--json']);
    expect(registered.code).toBe(0);
    expect(JSON.parse(registered.stdout)).toMatchObject({
      features: [
        { name: 'person_rating_count', registration: 'created' },
        { name: 'person_mean_rating', registration: 'created' },
        { name: 'person_positive_rate', registration: 'created' },
        { name: 'item_popularity', registration: 'created' },
        { name: 'person_days_since_last_rating', registration: 'created' },
        { name: 'item_mean_rating', registration: 'created' },
        { name: 'item_positive_rate', registration: 'created' },
      ],
    });
    const shown = await pops(['features', 'show', 'person_mean_rating']);
    expect(shown.stdout).toContain('person_mean_rating version 1 (person, float)');
    expect(shown.stdout).toContain('computes mean(rating) over 30d, lifetime; default null;');
    expect(shown.stdout).toContain('lineage: reads events; never backfilled');
    expect(shown.stdout).toContain('by feature-tester');
    const missing = await pops(['features', 'show', 'nope']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('feature "nope" is not registered');
    const bad = await pops(['features', 'register', yamlFile('features: [{name: x}]\n')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('features[0] (x): version:');
  });
});
