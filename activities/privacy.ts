/**
 * The activities of data subject requests (domain/privacy/requests.ts): each step is keyed by its
 * request and table in a ledger, so a retry after a crash returns what the first attempt did.
 */
import {
  deleteTableRows,
  exportTableRows,
  finishRequest,
  startRequest,
  widenAndTombstone,
  writeTombstones,
} from '../domain/privacy/requests.js';
import { enforceTable } from '../domain/privacy/retention.js';
import { Context } from '@temporalio/activity';
import { type ActivityDeps, withHeartbeat } from './deps.js';

export interface PrivacyStepInput {
  requestId: string;
  table: string;
  /** Deletes the table's rows again, as its own step (see derivedBeforeEvents). */
  sweep?: boolean;
}

/** Builds the privacy request activities. */
export function privacyActivities({ pool }: ActivityDeps) {
  return {
    /** Marks the request running; the tables its steps walk (none when it is done already). */
    privacyStart: (input: { requestId: string }): Promise<string[]> =>
      withHeartbeat(() => startRequest(pool, input.requestId)),
    /** Tombstones the subject's identifiers so that ingestion drops what still arrives. */
    privacyTombstone: (input: { requestId: string }): Promise<number> =>
      withHeartbeat(() => writeTombstones(pool, input.requestId)),
    /** Widens the subject to what arrived before its tombstones; the tombstones that adds. */
    privacyWiden: (input: { requestId: string }): Promise<number> =>
      withHeartbeat(() => widenAndTombstone(pool, input.requestId)),
    /** Deletes one table's rows of the subject; the count. */
    privacyDeleteTable: (input: PrivacyStepInput): Promise<number> =>
      withHeartbeat(() =>
        deleteTableRows(pool, input.requestId, input.table, { sweep: input.sweep ?? false }),
      ),
    /** Adds one table's rows of the subject to the bundle; the count. */
    privacyExportTable: (input: PrivacyStepInput): Promise<number> =>
      withHeartbeat(() => exportTableRows(pool, input.requestId, input.table)),
    /** Deletes a table's rows older than the cutoff, in batches; the run's total for the table. */
    enforceRetentionTable: (input: {
      runKey: string;
      table: string;
      keepDays: number;
      cutoff: string;
    }): Promise<number> =>
      enforceTable(pool, { ...input, cutoff: new Date(input.cutoff) }, () =>
        Context.current().heartbeat(),
      ),
    /** Audits the counts, forgets the subject, marks the request done. */
    privacyFinish: (input: { requestId: string; counts: Record<string, number> }): Promise<void> =>
      withHeartbeat(() =>
        finishRequest(
          pool,
          input.requestId,
          input.counts,
          Context.current().info.workflowExecution?.workflowId,
        ),
      ),
  };
}
