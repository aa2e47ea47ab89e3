/**
 * The condition that finds a request's rows in a person table (rowsOfSubjectSql) reads the
 * subject once per statement, not once per row: a deletion of a person with 40,000 events among
 * 200,000 took 380 s when every row searched the subject's arrays (now 0.6 s; npm run bench --
 * privacy). Checked by the plan PostgreSQL makes, since tests are not timed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { personTables, rowsOfSubjectSql } from '../domain/privacy/subject.js';
import { createTestDatabase, type TestDatabase } from './support.js';

const REQUEST = `delete-${'c'.repeat(24)}`;
const EVENTS = 20_000;

interface PlanNode {
  'Node Type': string;
  'Parent Relationship'?: string;
  'Subplan Name'?: string;
  'Relation Name'?: string;
  Filter?: string;
  Plans?: PlanNode[];
}

/** Every node of a plan, depth first. */
function nodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodes)];
}

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('privacy-subject-plan');
  // Events 1..5000 are sent by user 'heavy'; the subject also lists events 19001..20000 by id.
  await db.pool.query(
    `insert into events (id, message_id, source, type, event, person_id, user_id, ts, received_at)
     select g, 'm-' || g, 'web', 'track', 'x', u, u, now(), now()
       from (select g, case when g <= 5000 then 'heavy' else 'o' || g end as u
               from generate_series(1, $1::int) g) sent`,
    [EVENTS],
  );
  await db.pool.query(
    `insert into privacy_requests (id, kind, identifier_hash, requested_by, status)
     values ($1, 'delete', repeat('c', 64), 'test', 'running')`,
    [REQUEST],
  );
  await db.pool.query(
    `insert into privacy_subjects values ($1, '{}', '{unresolved:heavy}', '{heavy}', '[]',
       (select array_agg(g::bigint) from generate_series(19001, 20000) g), '{}', '{}', '{}')`,
    [REQUEST],
  );
  await db.pool.query('analyze events');
}, 120_000);

afterAll(async () => {
  await db?.close();
});

describe('rowsOfSubjectSql', () => {
  const events = personTables().find((t) => t.table === 'events');
  if (!events) throw new Error('no events in the person tables');

  it('selects the rows of the subject by any of its columns, and only those', async () => {
    const { rows } = await db.pool.query<{ n: number; lo: string; hi: string }>(
      `select count(*)::int as n, min(id)::text as lo, max(id)::text as hi
         from events t where ${rowsOfSubjectSql(events)} and t.id <= 5000`,
      [REQUEST],
    );
    expect(rows[0]).toEqual({ n: 5000, lo: '1', hi: '5000' });
    const all = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from events t where ${rowsOfSubjectSql(events)}`,
      [REQUEST],
    );
    expect(all.rows[0]?.n).toBe(6000);
  });

  it('reads the subject as hashed subplans, never once per row', async () => {
    const { rows } = await db.pool.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(
      `explain (format json) delete from events t where ${rowsOfSubjectSql(events)}`,
      [REQUEST],
    );
    const plan = rows[0]?.['QUERY PLAN'][0]?.Plan;
    if (!plan) throw new Error('no plan');
    const scan = nodes(plan).find((n) => n['Relation Name'] === 'events' && n.Filter);
    const filter = scan?.Filter ?? '';
    // One subplan per column of events (id, person_id, user_id, anonymous_id), each hashed.
    expect(filter.match(/hashed SubPlan \d+/g)).toHaveLength(events.columns.length);
    expect(filter.match(/(?<!hashed )SubPlan \d+/g)).toBeNull();
  });

  it('selects nothing for a request without a subject', async () => {
    const { rows } = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from events t where ${rowsOfSubjectSql(events)}`,
      [`delete-${'d'.repeat(24)}`],
    );
    expect(rows[0]?.n).toBe(0);
  });
});
