/** The one activity through which every workflow decision reaches the audit log. */
import { appendAudit, auditKey } from '../domain/audit.js';
import { type ActivityDeps, callerWorkflow } from './deps.js';

export interface AuditInput {
  actor: string;
  action: string;
  subject: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  /** Tells two rows of one action in one run apart (for example per epoch); default ''. */
  step?: string;
}

/** Builds the audit activity. */
export function auditActivities({ pool, clock }: ActivityDeps) {
  return {
    /** Appends one audit row for the calling workflow; a retry returns the row already written. */
    async recordAudit(input: AuditInput): Promise<{ seq: number; hash: string }> {
      const { workflowId, runId } = callerWorkflow();
      const idempotencyKey = auditKey(workflowId, runId, input.action, input.step);
      const row = await appendAudit(pool, { ...input, workflowId, runId, idempotencyKey }, clock());
      return { seq: row.seq, hash: row.hash };
    },
  };
}
