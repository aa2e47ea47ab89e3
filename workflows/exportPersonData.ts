/**
 * exportPersonData: gathers everything about one person across the tables of
 * domain/privacy/person-tables.ts and their merged identifiers into one JSON bundle
 * (`privacy_exports`, by section and table), and audits the counts. Its input is the request id
 * only (client/privacy.ts opened the request and captured its subject); its id is
 * `privacy/<request id>`. Each table is one ledgered activity, so a crash resumes at the table it
 * was on. Workflow code: no I/O, clocks or randomness.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY } from '../common/failures.js';
import type { PersonDataRequest } from './deletePersonData.js';

// Steps heartbeat: one whose worker died is retried after 10 s, not after its 10 minutes.
const act = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '10 seconds',
  retry: ACTIVITY_RETRY,
});

export interface ExportResult {
  requestId: string;
  /** Rows exported per table. */
  counts: Record<string, number>;
}

/** Exports one person's data; see the module comment. */
export async function exportPersonData(input: PersonDataRequest): Promise<ExportResult> {
  const { requestId } = input;
  const tables = await act.privacyStart({ requestId });
  const counts: Record<string, number> = {};
  for (const table of tables) {
    counts[table] = await act.privacyExportTable({ requestId, table });
  }
  if (tables.length > 0) await act.privacyFinish({ requestId, counts });
  return { requestId, counts };
}
