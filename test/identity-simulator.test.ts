import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simulateSegmentTraffic } from '../domain/identity/simulator.js';
import { importEvents } from '../ingest/events.js';
import { resolveAll } from './identity-support.js';
import { createTestDatabase, type TestDatabase } from './support.js';

let db: TestDatabase;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-traffic-'));

beforeAll(async () => {
  db = await createTestDatabase('identity-simulator');
});

afterAll(async () => {
  await db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function count(sql: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(sql);
  return rows[0]?.n ?? -1;
}

describe("the demo's simulated traffic", () => {
  it('is the same for the same seed, and resolves to the persons it was made of', async () => {
    const file = path.join(dir, 'a.ndjson');
    const options = { people: 40, visitors: 7, sharedTablets: 3, seed: 5 };
    const written = simulateSegmentTraffic(file, options);
    simulateSegmentTraffic(path.join(dir, 'b.ndjson'), options);
    expect(fs.readFileSync(path.join(dir, 'b.ndjson'), 'utf8')).toBe(fs.readFileSync(file, 'utf8'));

    // Counted from the file, not from pops: every browser (anon-<person>-<k>) is first seen alone
    // on a page, founding a person. At the first sign-in the user id joins that person; each later
    // browser's person merges into it at its sign-in. Devices and emails just join.
    const messages = fs
      .readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { anonymousId?: string });
    expect(messages).toHaveLength(written.messages);
    const browsers = new Set(
      messages.flatMap((m) => (m.anonymousId?.startsWith('anon-') ? [m.anonymousId] : [])),
    );

    await importEvents(db.pool, file, { source: 'sim-web' });
    await resolveAll(db.pool);
    expect(await count('select count(*)::int as n from persons where canonical_id = id')).toBe(
      options.people + options.visitors,
    );
    expect(await count('select count(*)::int as n from identity_merges')).toBe(
      browsers.size - options.people,
    );
    // The second account on each family tablet is kept off it.
    expect(await count('select count(*)::int as n from identity_conflicts')).toBe(
      options.sharedTablets,
    );
    expect(
      await count(
        `select count(distinct p.canonical_id)::int as n from identifiers i
           join persons p on p.id = i.person_id where i.type = 'user_id'`,
      ),
    ).toBe(options.people);
  });
});
