/**
 * `npm run bench -- privacy [--events N] [--persons N] [--before]`: an export and a deletion of one
 * heavy person among many. The heavy person sends N events (default 40,000: half anonymously, half
 * as a user with their email in context.traits, joined by an identify); each of `persons` others
 * (default 2,000) sends an identify and 80 events. All are imported as NDJSON and resolved by
 * mergeIdentities. Measured, in a fresh database with in-process workers: the export's and the
 * deletion's wall time from start to done (the deletion's includes its fixed 5 s wait before it
 * widens the subject), its slowest steps from its ledger, and against them the floor: a plain
 * `delete from events` of the same rows by their ids (rolled back). `--before` also times the
 * per-row predicate the deletion used until it was rewritten, on the events table only (slow:
 * minutes at the default size).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { deletePersonData, exportPersonData, waitForRequest } from '../client/privacy.js';
import { requestMerge, waitForMerge } from '../client/identity.js';
import { openRuntime, type Runtime, runWorkers } from '../cli/runtime.js';
import { createPool, type Pool } from '../common/db.js';
import { rowsOfSubjectSql, personTables } from '../domain/privacy/subject.js';
import { importEvents } from '../ingest/events.js';
import { freshDatabase } from './database.js';

export const PRIVACY_DEFAULTS = { events: 40_000, persons: 2_000 } as const;

/** Events of each other person (besides their identify). */
const OTHER_EVENTS = 80;

const progress = (message: string) =>
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

const at = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();

/** The NDJSON lines of one person: an identify, then `count` ratings, half anonymous. */
function personLines(tag: string, count: number, out: string[]): void {
  const user = `u-${tag}`;
  const anon = `a-${tag}`;
  const email = `${tag}@example.com`;
  out.push(
    JSON.stringify({
      type: 'identify',
      messageId: `${tag}-0`,
      userId: user,
      anonymousId: anon,
      timestamp: at(0),
      traits: { email },
    }),
  );
  for (let i = 1; i <= count; i++) {
    const who =
      i % 2 === 0 ? { anonymousId: anon } : { userId: user, context: { traits: { email } } };
    out.push(
      JSON.stringify({
        type: 'track',
        messageId: `${tag}-${i}`,
        event: 'rated',
        timestamp: at(i),
        properties: { item_id: `i${i % 500}`, rating: 1 + (i % 5) },
        ...who,
      }),
    );
  }
}

function writeData(options: { events: number; persons: number }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-bench-privacy-'));
  const file = path.join(dir, 'events.ndjson');
  const lines: string[] = [];
  personLines('heavy', options.events, lines);
  for (let p = 0; p < options.persons; p++) personLines(`p${p}`, OTHER_EVENTS, lines);
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** Milliseconds of one statement in a transaction that is rolled back; and its row count. */
async function timedRolledBack(pool: Pool, sql: string, params: unknown[]) {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const t0 = performance.now();
    const result = await client.query(sql, params);
    const ms = performance.now() - t0;
    await client.query('rollback');
    return { ms, rows: result.rowCount ?? 0 };
  } finally {
    client.release();
  }
}

/** The per-row predicate deletions used before (each row searched the subject's arrays). */
const BEFORE_EVENTS_SQL = `select count(*) from events t where exists (
  select 1 from privacy_subjects s where s.request_id = $1 and (t.id = any(s.event_ids)
    or t.person_id = any(s.raw_ids) or t.user_id = any(s.raw_ids)
    or t.anonymous_id = any(s.raw_ids)))`;

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** Runs the benchmark and prints its lines. */
export async function benchPrivacy(
  options: { events: number; persons: number; before: boolean },
  line: (name: string, value: string, goal?: string) => void,
): Promise<void> {
  const rt = await openRuntime();
  const db = await freshDatabase(rt, 'privacy');
  const pool = createPool(db.url);
  const bench: Runtime = { ...rt, pool, prefix: `bench-pv-${randomBytes(3).toString('hex')}` };
  const workers = await runWorkers(bench);
  try {
    const file = writeData(options);
    progress(`importing ${file}`);
    const imported = await importEvents(pool, file, { source: 'bench' });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    progress('resolving identities');
    await waitForMerge(rt.client, await requestMerge(rt.client, bench.prefix));
    line('events stored', imported.inserted.toLocaleString('en'));

    const heavy = { type: 'user_id', value: 'u-heavy' };
    const heavyEvents = await pool.query<{ id: string }>(
      `select id from events where user_id = 'u-heavy' or anonymous_id = 'a-heavy'`,
    );
    const ids = heavyEvents.rows.map((r) => r.id);
    const floor = await timedRolledBack(pool, 'delete from events where id = any($1::bigint[])', [
      ids,
    ]);
    line("the heavy person's events", floor.rows.toLocaleString('en'));
    line('floor: delete those events by id', seconds(floor.ms));
    if (options.before) await compareBefore(pool, ids, line);

    let t0 = performance.now();
    const exported = await exportPersonData(rt.client, pool, bench.prefix, {
      identifier: heavy,
      requestedBy: 'bench',
    });
    await waitForRequest(rt.client, pool, exported);
    line('export, start to done', seconds(performance.now() - t0));

    t0 = performance.now();
    const deleted = await deletePersonData(rt.client, pool, bench.prefix, {
      identifier: heavy,
      reason: 'bench',
      requestedBy: 'bench',
    });
    const request = await waitForRequest(rt.client, pool, deleted);
    const wall = performance.now() - t0;
    line('deletion, start to done', seconds(wall), 'of which 5 s is its wait before widening');
    line(
      'deletion without that wait / floor (one table)',
      `${((wall - 5000) / floor.ms).toFixed(1)}x`,
    );
    await slowestSteps(pool, deleted.requestId, line);

    const left = await pool.query<{ heavy: number; others: number }>(
      `select count(*) filter (where user_id = 'u-heavy' or anonymous_id = 'a-heavy')::int as heavy,
              count(*)::int as others from events`,
    );
    const others = options.persons * (OTHER_EVENTS + 1);
    line('after: events of the heavy person', String(left.rows[0]?.heavy), 'must be 0');
    line('after: events of the others', String(left.rows[0]?.others), `must be ${others}`);
    if (
      request?.status !== 'done' ||
      left.rows[0]?.heavy !== 0 ||
      left.rows[0]?.others !== others
    ) {
      throw new Error(`bench privacy: the deletion did not do its job (${request?.status})`);
    }
  } finally {
    await workers.stop();
    await pool.end();
    await db.drop();
    await rt.close();
  }
}

/** The three slowest steps of a request, by the time between consecutive ledger rows. */
async function slowestSteps(
  pool: Pool,
  requestId: string,
  line: (name: string, value: string, goal?: string) => void,
): Promise<void> {
  const { rows } = await pool.query<{ step: string; rows: number; ms: number }>(
    `select step, rows,
            extract(epoch from done_at - lag(done_at) over (order by done_at)) * 1000 as ms
       from privacy_request_steps where request_id = $1 order by ms desc nulls last limit 3`,
    [requestId],
  );
  for (const r of rows) {
    line(`  step ${r.step} (${r.rows.toLocaleString('en')} rows)`, seconds(Number(r.ms)));
  }
}

/**
 * Times the predicate before and after the rewrite on events, for a subject made of the heavy
 * person's events and raw ids (in a transaction that is rolled back).
 */
async function compareBefore(
  pool: Pool,
  eventIds: string[],
  line: (name: string, value: string, goal?: string) => void,
): Promise<void> {
  const events = personTables().find((t) => t.table === 'events');
  if (!events) throw new Error('bench privacy: no events in the person tables');
  const id = `delete-${'b'.repeat(24)}`;
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query(
      `insert into privacy_requests (id, kind, identifier_hash, requested_by, status)
       values ($1, 'delete', repeat('b', 64), 'bench', 'running')`,
      [id],
    );
    await client.query(
      `insert into privacy_subjects values ($1, '{}', '{}', '{u-heavy,a-heavy}', '[]',
         $2::bigint[], '{}', '{}', '{}')`,
      [id, eventIds],
    );
    const time = async (sql: string) => {
      const t0 = performance.now();
      await client.query(sql, [id]);
      return performance.now() - t0;
    };
    const now = await time(`select count(*) from events t where ${rowsOfSubjectSql(events)}`);
    progress('timing the predicate deletions used before (minutes at the default size)');
    const before = await time(BEFORE_EVENTS_SQL);
    line('events predicate now', seconds(now));
    line('events predicate before the rewrite', seconds(before));
    line('before / now', `${Math.round(before / now).toLocaleString('en')}x`);
  } finally {
    await client.query('rollback');
    client.release();
  }
}
