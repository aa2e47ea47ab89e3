/**
 * monitorDrift: one drift run of one model. Plans the run (the watched version, the reference
 * and current windows), backfills the feature days the windows need (a backfillFeatures child),
 * builds the current sample, computes and stores the report, decides with hysteresis and
 * cooldown, audits the decision, and, when it says so, starts (or attaches to) the model's one
 * retraining. Runs on the model's Schedule `drift/<model>` and on demand. Workflow code: no I/O,
 * clocks or randomness; effects are activities keyed by this run.
 */
import { executeChild, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { prefixOf, queueName } from '../common/queues.js';
import { type MonitorDriftInput, monitorDriftInputSchema } from '../domain/drift/config.js';
import type { Decision } from '../domain/drift/runs.js';
import { partitionUnitFor } from '../domain/features/backfill.js';
import type { backfillFeatures } from './backfillFeatures.js';

export interface MonitorDriftResult {
  model: string;
  version: number;
  driftRunId: number;
  drifted: boolean;
  driftedFeatures: string[];
  decision: Decision;
  retrain: { workflowId: string; runId: string; attached: boolean } | null;
}

/** One drift run; see the module comment. */
export async function monitorDrift(raw: MonitorDriftInput): Promise<MonitorDriftResult> {
  const input = parseOrFail(monitorDriftInputSchema, raw, 'monitorDrift input');
  const { workflowId, runId, taskQueue, startTime } = workflowInfo();
  const at = input.at ?? startTime.toISOString();
  const local = proxyActivities<Activities>({
    startToCloseTimeout: '2 minutes',
    retry: ACTIVITY_RETRY,
  });
  const sql = proxyActivities<Activities>({
    startToCloseTimeout: '1 hour',
    heartbeatTimeout: '30s',
    retry: ACTIVITY_RETRY,
  });
  const heavy = proxyActivities<Activities>({
    taskQueue: queueName(prefixOf(taskQueue), 'training'),
    startToCloseTimeout: '1 hour',
    heartbeatTimeout: '30s',
    retry: ACTIVITY_RETRY,
  });
  const subject = `model/${input.model}`;
  const audit = (
    action: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown>,
  ) => local.recordAudit({ actor: input.requestedBy, action, subject, inputs, outputs });

  const plan = await local.planDrift({ ...input, at });
  if (plan.backfill) {
    const { from, to } = plan.backfill;
    await executeChild<typeof backfillFeatures>('backfillFeatures', {
      workflowId: `${workflowId}/${runId}/features`,
      args: [
        {
          features: [...new Set(plan.version.features.map((f) => f.replace(/:.*$/, '')))].map(
            (ref) => {
              const [name, version] = ref.split('@');
              return { name: name as string, version: Number(version) };
            },
          ),
          from,
          to,
          partition: partitionUnitFor(from, to),
          requestedBy: input.requestedBy,
          reason: `drift run of ${input.model}`,
        },
      ],
    });
  }
  await sql.buildDriftSamples(plan);
  const report = await heavy.computeDriftReport(plan);
  const decision = await local.decideDrift({ runKey: plan.runKey, config: plan.config, at });
  await audit(
    'drift.decided',
    {
      version: plan.version.version,
      via: plan.version.via,
      reference: report.reference,
      current: report.current,
      config: plan.config,
    },
    {
      driftRunId: report.id,
      drifted: report.drifted,
      driftedFeatures: report.driftedFeatures,
      ...decision,
    },
  );

  let retrain: MonitorDriftResult['retrain'] = null;
  if (decision.decision === 'retrain-requested') {
    retrain = await local.requestRetrain({
      runKey: plan.runKey,
      driftRunId: report.id,
      model: input.model,
      features: plan.version.features,
      requestedBy: `drift/${input.model}`,
      ...(plan.config.canary ? { canary: plan.config.canary } : {}),
    });
    await audit('drift.retrain-requested', { driftRunId: report.id }, { ...retrain });
  }
  return {
    model: input.model,
    version: plan.version.version,
    driftRunId: report.id,
    drifted: report.drifted,
    driftedFeatures: report.driftedFeatures,
    decision,
    retrain,
  };
}
