/**
 * Exposure logging off the hot path, and outcomes. A decision's exposure row goes into an
 * in-process write-behind buffer; the response does not wait for it. The buffer is written in
 * batches (one insert statement) every FLUSH_INTERVAL_MS, or as soon as FLUSH_ROWS rows wait, and
 * once more on shutdown (`close`). A batch that fails stays buffered and is retried on the next
 * tick, so a database outage delays rows instead of losing them, up to MAX_BUFFERED_ROWS (past
 * that the oldest rows are dropped, counted and logged: serving must not stop for logging).
 *
 * Crash window: rows still buffered when the process dies without `close` (a kill -9, an OOM, a
 * machine loss) are lost: normally the last FLUSH_INTERVAL_MS (50 ms) of decisions plus the batch
 * being written, and during a database outage everything buffered since it began. Inserts are
 * `on conflict do nothing` on the decision id, so a batch retried after a lost commit
 * acknowledgement is written once.
 *
 * Outcomes: an outcome names a decision; one still buffered in this process is flushed first,
 * so its outcome is never refused as unknown. A decision made by another process that has not
 * flushed yet is waited for once (one flush interval and a margin) before it counts as unknown.
 * An outcome of a decision for a deleted identifier (fallback DELETED_CAUSE) stores nothing.
 */
import type { Pool, Queryable } from '../../common/db.js';
import type { Logger } from '../../common/logger.js';

/** How often buffered exposures are written. */
export const FLUSH_INTERVAL_MS = 50;
/** A batch is written at once when this many rows wait. */
export const FLUSH_ROWS = 500;
/** Past this many buffered rows (a long database outage), the oldest are dropped. */
export const MAX_BUFFERED_ROWS = 200_000;
/** After a failed batch, the next timed flush waits this long. */
const RETRY_AFTER_MS = 1000;

export type Arm = 'stable' | 'canary' | 'rules';

/** The fallback of a decision whose request named a tombstoned (deleted) identifier. */
export const DELETED_CAUSE = 'identifier-deleted';
/**
 * The person id such a decision's exposure is logged under: no person key is spelled so, and it
 * names no one, so the row counts for the rollout without tying anything to the deleted id.
 */
export const DELETED_PERSON = 'deleted';

/** One decision served, as exposures stores it. */
export interface Exposure {
  decisionId: string;
  surface: string;
  personId: string;
  version: number | null;
  arm: Arm;
  generation: number;
  items: string[];
  scores: number[];
  latencyMs: number;
  fallback: string | null;
  error: boolean;
  /** When the decision started. */
  at: Date;
}

export const OUTCOME_TYPES = ['click', 'convert', 'dismiss'] as const;
export type OutcomeType = (typeof OUTCOME_TYPES)[number];

/** What recording an outcome found. */
export type OutcomeResult =
  | { status: 'recorded' | 'duplicate' }
  /** The decision was for a deleted identifier: nothing is stored. */
  | { status: 'dropped' }
  | { status: 'unknown-decision' }
  | { status: 'unknown-item'; items: string[] };

/** Counters of the buffer, for logs and tests. */
export interface BufferStats {
  buffered: number;
  written: number;
  dropped: number;
  failedFlushes: number;
}

/** The write-behind buffer of exposure rows; see the module comment. */
export class ExposureBuffer {
  private rows: Exposure[] = [];
  /** Decision ids buffered or being written, until their batch commits. */
  private readonly pending = new Set<string>();
  /** Batches are written one after another: each flush waits for the ones before it. */
  private chain: Promise<void> = Promise.resolve();
  /** Flushes asked for and not settled: the timer adds none while one is. */
  private queued = 0;
  /** After a failed batch, the timer waits until then (ms) before it tries again. */
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly counts = { written: 0, dropped: 0, failedFlushes: 0 };

  constructor(
    private readonly pool: Pool,
    private readonly log?: Logger,
  ) {
    this.timer = setInterval(() => this.tick(), FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  /**
   * Buffers one exposure; never waits and never throws for the database. After `close` (a request
   * finishing during shutdown) the row is written on its own instead.
   */
  add(exposure: Exposure): void {
    if (this.closed) {
      void insertExposures(this.pool, [exposure]).catch((err: unknown) =>
        this.log?.error({ err, decisionId: exposure.decisionId }, 'late exposure not written'),
      );
      return;
    }
    this.rows.push(exposure);
    this.pending.add(exposure.decisionId);
    if (this.rows.length > MAX_BUFFERED_ROWS) this.dropOldest(this.rows.length - MAX_BUFFERED_ROWS);
    if (this.rows.length >= FLUSH_ROWS && this.queued === 0) {
      void this.flush().catch(() => undefined);
    }
  }

  private tick(): void {
    if (this.queued > 0 || this.rows.length === 0 || Date.now() < this.retryAt) return;
    void this.flush().catch(() => undefined);
  }

  /** Whether the decision is buffered or being written here (not yet committed). */
  has(decisionId: string): boolean {
    return this.pending.has(decisionId);
  }

  stats(): BufferStats {
    return { buffered: this.pending.size, ...this.counts };
  }

  /**
   * Writes everything buffered now (after any batch in flight); resolves when it is committed.
   * Rejects when a batch fails (its rows stay buffered for the next try).
   */
  async flush(): Promise<void> {
    this.queued += 1;
    const next = this.chain.then(() => this.writeBuffered());
    this.chain = next.then(
      () => void (this.queued -= 1),
      () => void (this.queued -= 1),
    );
    return next;
  }

  /** Stops the timer and flushes what is left; a final failure is logged and thrown. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private async writeBuffered(): Promise<void> {
    if (this.rows.length === 0) return;
    const batch = this.rows;
    this.rows = [];
    try {
      await insertExposures(this.pool, batch);
      this.counts.written += batch.length;
      for (const e of batch) this.pending.delete(e.decisionId);
    } catch (err) {
      this.counts.failedFlushes += 1;
      this.retryAt = Date.now() + RETRY_AFTER_MS;
      this.rows = [...batch, ...this.rows];
      if (this.rows.length > MAX_BUFFERED_ROWS) {
        this.dropOldest(this.rows.length - MAX_BUFFERED_ROWS);
      }
      this.log?.warn(
        { err, rows: batch.length, buffered: this.rows.length },
        'exposure batch not written; kept for the next flush',
      );
      throw err;
    }
  }

  private dropOldest(n: number): void {
    const dropped = this.rows.splice(0, n);
    for (const e of dropped) this.pending.delete(e.decisionId);
    this.counts.dropped += dropped.length;
    this.log?.error(
      { dropped: dropped.length, total: this.counts.dropped },
      'exposure buffer full: oldest rows dropped',
    );
  }
}

/** Inserts exposures in one statement; a decision id already stored is skipped. */
export async function insertExposures(db: Queryable, rows: readonly Exposure[]): Promise<void> {
  if (rows.length === 0) return;
  await db.query(
    `insert into exposures
       (decision_id, surface, person_id, version, arm, generation, items, scores, latency_ms,
        fallback, error, at)
     select x.decision_id, x.surface, x.person_id, x.version, x.arm, x.generation,
            array(select jsonb_array_elements_text(x.items)),
            array(select v::real from jsonb_array_elements_text(x.scores) as v),
            x.latency_ms, x.fallback, x.error, x.at
       from jsonb_to_recordset($1::jsonb) as x(
              decision_id uuid, surface text, person_id text, version integer, arm text,
              generation bigint, items jsonb, scores jsonb, latency_ms real, fallback text,
              error boolean, at timestamptz)
     on conflict (decision_id) do nothing`,
    [
      JSON.stringify(
        rows.map((e) => ({
          decision_id: e.decisionId,
          surface: e.surface,
          person_id: e.personId,
          version: e.version,
          arm: e.arm,
          generation: e.generation,
          items: e.items,
          scores: e.scores,
          latency_ms: e.latencyMs,
          fallback: e.fallback,
          error: e.error,
          at: e.at.toISOString(),
        })),
      ),
    ],
  );
}

/** How long an outcome for a decision unknown here waits for another process's flush. */
export const OUTCOME_GRACE_MS = 2 * FLUSH_INTERVAL_MS + 50;

/**
 * Records an outcome of one of the decision's items, once per (decision, item, type): a repeat
 * answers `duplicate`. A decision buffered in this process is flushed first; see the module
 * comment for one that is not known yet.
 */
export async function recordOutcome(
  pool: Pool,
  buffer: ExposureBuffer | undefined,
  outcome: { decisionId: string; itemId: string; type: OutcomeType },
): Promise<OutcomeResult> {
  if (buffer?.has(outcome.decisionId)) await buffer.flush();
  const first = await insertOutcome(pool, outcome);
  if (first.status !== 'unknown-decision') return first;
  await new Promise((resolve) => setTimeout(resolve, OUTCOME_GRACE_MS));
  if (buffer?.has(outcome.decisionId)) await buffer.flush();
  return insertOutcome(pool, outcome);
}

async function insertOutcome(
  db: Queryable,
  o: { decisionId: string; itemId: string; type: OutcomeType },
): Promise<OutcomeResult> {
  const { rows } = await db.query<{
    items: string[] | null;
    deleted: boolean;
    inserted: number;
  }>(
    `with d as (select decision_id, items, fallback is not distinct from $4 as deleted
                  from exposures where decision_id = $1::uuid),
          ins as (
            insert into outcomes (decision_id, item_id, type)
            select decision_id, $2, $3 from d where $2 = any(d.items) and not d.deleted
            on conflict (decision_id, item_id, type) do nothing
            returning 1)
     select (select items from d) as items, coalesce((select deleted from d), false) as deleted,
            (select count(*) from ins)::int as inserted`,
    [o.decisionId, o.itemId, o.type, DELETED_CAUSE],
  );
  const row = rows[0];
  if (!row?.items) return { status: 'unknown-decision' };
  if (row.deleted) return { status: 'dropped' };
  if (!row.items.includes(o.itemId)) return { status: 'unknown-item', items: row.items };
  return { status: row.inserted > 0 ? 'recorded' : 'duplicate' };
}
