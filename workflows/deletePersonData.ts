/**
 * deletePersonData: deletes every row of one person across the tables of
 * domain/privacy/person-tables.ts and their merged identifiers, after tombstoning the identifiers
 * (ingestion then drops what still arrives) and widening the subject to what arrived while the
 * request opened, and audits the counts without personal data. Its
 * input is the request id only (client/privacy.ts opened the request and captured its subject),
 * so no identifier enters the workflow's history; its id is `privacy/<request id>`. Each table is
 * one ledgered activity: a crash mid-way resumes at the table it was on, and a retried table
 * returns the count it deleted. Workflow code: no I/O, clocks or randomness.
 */
import { patched, proxyActivities, sleep } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY } from '../common/failures.js';
import { derivedBeforeEvents } from '../domain/privacy/person-tables.js';

// Steps heartbeat: one whose worker died is retried after 10 s, not after its 10 minutes.
const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '10 seconds',
  retry: ACTIVITY_RETRY,
});

/** How long ingestion has to commit what it took before the tombstones (short transactions). */
const WIDEN_AFTER = '5 seconds';

export interface PersonDataRequest {
  requestId: string;
}

export interface DeletionResult {
  requestId: string;
  tombstones: number;
  /** Rows deleted per table. */
  counts: Record<string, number>;
}

/** Deletes one person's data; see the module comment. */
export async function deletePersonData(input: PersonDataRequest): Promise<DeletionResult> {
  const { requestId } = input;
  const tables = await act.privacyStart({ requestId });
  const counts: Record<string, number> = {};
  let tombstones = 0;
  if (tables.length > 0) {
    tombstones = await act.privacyTombstone({ requestId });
    // Messages whose ingestion began before the tombstones were written may still be committed
    // after the subject was captured: wait for those to land, then widen the subject to them.
    // (Patched: a deletion started by an earlier version replays without these steps.)
    if (patched('privacy-subject-widened')) {
      await sleep(WIDEN_AFTER);
      tombstones += await act.privacyWiden({ requestId });
    }
    for (const table of tables) {
      counts[table] = await act.privacyDeleteTable({ requestId, table });
    }
    // A deletion started by a version that deleted the feature tables before events (its list is
    // in its history) deletes them again now that their sources are gone: a materialization in
    // between wrote them back. (Patched: a deletion finished before replays without these steps.)
    if (patched('privacy-derived-swept')) {
      for (const table of derivedBeforeEvents(tables, 'features')) {
        counts[table] =
          (counts[table] ?? 0) + (await act.privacyDeleteTable({ requestId, table, sweep: true }));
      }
    }
    // The same for training and drift set rows, which came before events until they too were
    // derived tables. (Patched apart: a deletion past the sweep above replays without these.)
    if (patched('privacy-training-swept')) {
      for (const table of derivedBeforeEvents(tables, 'training')) {
        counts[table] =
          (counts[table] ?? 0) + (await act.privacyDeleteTable({ requestId, table, sweep: true }));
      }
    }
    await act.privacyFinish({ requestId, counts: { ...counts, tombstones } });
  }
  return { requestId, tombstones, counts };
}
