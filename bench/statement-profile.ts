/**
 * Where identity resolution spends its time, measured from outside domain/identity: every pool
 * client's `query` is wrapped, and each statement's wall time (sending, server work, parsing the
 * rows) is added under a name read from its SQL. The gaps between two statements of one
 * transaction are work in this process; the gap before the slice's first lookup is identifier
 * extraction, the gap before the first write is the in-memory resolveChunk.
 */
import type { Pool, PoolClient } from '../common/db.js';

/** Names for the statements of domain/identity/store.ts, matched on whitespace-collapsed SQL. */
const STATEMENTS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^begin$/i, 'begin'],
  [/set_config\('lock_timeout'/, 'settledHorizon: set lock_timeout'],
  [/^lock table events/, 'settledHorizon: lock events in share mode'],
  [/as max from events/, 'settledHorizon: max(events.id)'],
  [/pg_advisory_xact_lock/, 'lockGraph: advisory lock'],
  [/from identity_chunks where/, 'findChunk: ledger lookup'],
  [/from identity_watermarks where/, 'readWatermark'],
  [/from events where id > /, 'readChunkEvents'],
  [/as k\(type, value\)/, 'loadSlice: identifiers of the chunk'],
  [/from persons where id = any/, 'loadSlice: their persons'],
  [/where p\.canonical_id = any/, 'loadSlice: limited-type members'],
  [/as next from persons/, 'loadSlice: next person id'],
  [/from identity_unmerges u/, 'loadSlice: unmerge separations'],
  [/^insert into persons/, 'write: insert persons'],
  [/^update persons p set canonical_id = c\./, 'write: update changed persons'],
  [/p\.canonical_id = m\.old/, 'write: re-point canonical ids'],
  [/^insert into identifiers/, 'write: insert identifiers'],
  [/^update identifiers/, 'write: update identifiers first_seen_at'],
  [/^insert into event_persons/, 'write: insert event_persons'],
  [/^insert into identity_merges/, 'write: insert identity_merges'],
  [/^insert into identity_conflicts/, 'write: insert identity_conflicts'],
  [/^update identity_watermarks/, 'recordChunk: move watermark'],
  [/^insert into identity_chunks/, 'recordChunk: ledger row'],
  [/^commit$/i, 'commit'],
  [/^rollback$/i, 'rollback'],
];

const EXTRACT = 'in memory: extract identifiers';
const RESOLVE = 'in memory: resolveChunk';
const OTHER = 'in memory: between other statements';

/** One line of the profile: a statement or an in-process gap. */
export interface ProfileLine {
  name: string;
  calls: number;
  ms: number;
  rows: number;
}

type Query = (...args: unknown[]) => unknown;
type Result = { rowCount: number | null };
interface Step {
  end: number;
  name: string;
}

/** The name of a statement: its entry in STATEMENTS, or its first words. */
export function statementName(sql: string): string {
  const text = sql.replace(/\s+/g, ' ').trim();
  const found = STATEMENTS.find(([pattern]) => pattern.test(text));
  return found ? found[1] : `other: ${text.slice(0, 48)}`;
}

const writes = (name: string) => name.startsWith('write:') || name.startsWith('recordChunk');

/** The slice is read after extraction; the first write follows the in-memory resolution. */
function gapName(previous: string, next: string): string {
  if (next === 'loadSlice: identifiers of the chunk') return EXTRACT;
  if (writes(next) && !writes(previous)) return RESOLVE;
  return OTHER;
}

/** Accumulates per-statement wall time over the clients of one pool while enabled. */
export class StatementProfile {
  private readonly lines = new Map<string, ProfileLine>();
  private enabled = false;

  /** Wraps every client the pool opens from now on; call before the pool is first used. */
  attach(pool: Pool): void {
    pool.on('connect', (client) => this.wrap(client));
  }

  /** Starts a fresh measurement. */
  start(): void {
    this.lines.clear();
    this.enabled = true;
  }

  /** Stops measuring and returns the lines in the order a chunk runs them, gaps last. */
  stop(): ProfileLine[] {
    this.enabled = false;
    const order = [...STATEMENTS.map(([, name]) => name), EXTRACT, RESOLVE, OTHER];
    const rank = (name: string) => (order.includes(name) ? order.indexOf(name) : order.length);
    return [...this.lines.values()].sort((a, b) => rank(a.name) - rank(b.name));
  }

  private add(name: string, ms: number, rows: number): void {
    const line = this.lines.get(name) ?? { name, calls: 0, ms: 0, rows: 0 };
    line.calls += 1;
    line.ms += ms;
    line.rows += rows;
    this.lines.set(name, line);
  }

  private wrap(client: PoolClient): void {
    const original = client.query.bind(client) as Query;
    let last: Step | null = null;
    const timed: Query = (...args) => {
      const [sql] = args;
      if (!this.enabled || typeof sql !== 'string') return original(...args);
      const name = statementName(sql);
      const start = performance.now();
      if (last) this.add(gapName(last.name, name), start - last.end, 0);
      const done = (result: Result | undefined) => {
        const end = performance.now();
        this.add(name, end - start, result?.rowCount ?? 0);
        last = result && name !== 'commit' && name !== 'rollback' ? { end, name } : null;
      };
      // pool.query passes a callback; the store's code awaits the promise form.
      const callback = args[args.length - 1];
      if (typeof callback === 'function') {
        const inner = callback as (err: unknown, result: Result | undefined) => void;
        const wrapped = (err: unknown, result: Result | undefined) => {
          done(err ? undefined : result);
          inner(err, result);
        };
        return original(...args.slice(0, -1), wrapped);
      }
      const pending = original(...args) as Promise<Result>;
      return pending.then(
        (result) => {
          done(result);
          return result;
        },
        (err: unknown) => {
          done(undefined);
          throw err;
        },
      );
    };
    Object.assign(client, { query: timed });
  }
}
