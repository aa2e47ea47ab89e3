/**
 * retrainModel: bring its registry features up to date (a materializeFeatures child), build a
 * point-in-time training set from them, train, evaluate against a popularity baseline on the later
 * time slice, register a version, and audit each step. Workflow code: no I/O, clocks
 * or randomness; every effect is an activity keyed by this run, so a retry or a replay repeats
 * nothing.
 */
import {
  defineQuery,
  defineSignal,
  executeChild,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { prefixOf, queueName } from '../common/queues.js';
import {
  EPOCH_SIGNAL,
  type EpochProgress,
  type RetrainInput,
  type RetrainProgress,
  type RetrainResult,
  retrainInputSchema,
} from '../domain/retrain.js';
import { partitionUnitFor } from '../domain/features/backfill.js';
import type { backfillFeatures } from './backfillFeatures.js';

export const progressQuery = defineQuery<RetrainProgress>('progress');
export const epochSignal = defineSignal<[EpochProgress]>(EPOCH_SIGNAL);

/** Retrains one model end to end; see the module comment. */
export async function retrainModel(raw: RetrainInput): Promise<RetrainResult> {
  const input = parseOrFail(retrainInputSchema, raw, 'retrainModel input');
  const { workflowId, runId, taskQueue } = workflowInfo();
  const prefix = prefixOf(taskQueue);
  const retry = ACTIVITY_RETRY;

  const local = proxyActivities<Activities>({
    startToCloseTimeout: '2 minutes',
    retry,
  });
  const sql = proxyActivities<Activities>({
    startToCloseTimeout: '1 hour',
    heartbeatTimeout: '30s',
    retry,
  });
  const heavy = proxyActivities<Activities>({
    taskQueue: queueName(prefix, 'training'),
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: `${input.heartbeatTimeoutSeconds}s`,
    retry,
  });

  const progress: RetrainProgress = { stage: 'starting', epoch: 0, epochs: input.training.epochs };
  setHandler(progressQuery, () => progress);
  setHandler(epochSignal, (p) => {
    if (p.epoch > progress.epoch) {
      Object.assign(progress, { epoch: p.epoch, epochs: p.epochs, loss: p.loss });
    }
  });

  const subject = `model/${input.model}`;
  const audit = (
    action: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown> = {},
  ) => local.recordAudit({ actor: input.requestedBy, action, subject, inputs, outputs });

  const model = await local.lookupModel(input.model);
  await audit('retrain.started', {
    reason: input.reason,
    training: input.training,
    source: model.source,
  });

  const runKey = `${workflowId}/${runId}`;
  progress.stage = 'backfilling-features';
  const features = await local.resolveTrainingFeatures(input.features);
  const range = await local.planTrainingRange({
    source: model.source,
    ...(input.trainUntil ? { trainUntil: input.trainUntil } : {}),
    ...(input.validateUntil ? { validateUntil: input.validateUntil } : {}),
  });
  // A label at t reads the snapshot of the day before t's: those days, from the first label's.
  const from = dayBefore(range.trainFrom);
  const to = dayBefore(range.validateUntil);
  const refs = [
    ...new Map(
      features.map((f) => [`${f.name}@${f.version}`, { name: f.name, version: f.version }]),
    ).values(),
  ];
  const backfill = await executeChild<typeof backfillFeatures>('backfillFeatures', {
    workflowId: `${runKey}/features`,
    args: [
      {
        features: refs,
        from,
        to,
        partition: partitionUnitFor(from, to),
        requestedBy: input.requestedBy,
        reason: `training set of ${input.model}`,
      },
    ],
  });
  await audit('retrain.features-backfilled', { features, from, to }, { ...backfill });

  progress.stage = 'building-training-set';
  const trainingSet = await sql.buildTrainingSet({
    setKey: runKey,
    model: input.model,
    source: model.source,
    features,
    trainUntil: range.trainUntil,
    validateUntil: range.validateUntil,
  });
  await audit('retrain.training-set-built', { source: model.source }, { ...trainingSet });

  progress.stage = 'training';
  const trained = await heavy.trainModel({
    runKey,
    setKey: trainingSet.setKey,
    options: input.training,
  });
  progress.epoch = trained.epochs;
  await audit('retrain.trained', { options: input.training }, { ...trained });

  progress.stage = 'evaluating';
  const evaluation = await heavy.evaluateModel({
    setKey: trainingSet.setKey,
    artifactSha256: trained.artifactSha256,
  });
  await audit('retrain.evaluated', { artifactSha256: trained.artifactSha256 }, { ...evaluation });

  progress.stage = 'registering';
  const version = await local.registerModelVersion({
    model: input.model,
    runKey,
    artifactSha256: trained.artifactSha256,
    trainingSet,
    backend: trained.backend,
    metrics: evaluation.model,
    baselineMetrics: evaluation.baseline,
    reason: input.reason,
    workflowId,
    runId,
    createdBy: input.requestedBy,
  });
  await audit(
    'model.version-registered',
    { runKey },
    { version, artifactSha256: trained.artifactSha256 },
  );

  progress.stage = 'done';
  log.info('retrain finished', { model: input.model, version, auc: evaluation.model.auc });
  return {
    model: input.model,
    version,
    artifactSha256: trained.artifactSha256,
    backend: trained.backend,
    metrics: evaluation.model,
    baseline: evaluation.baseline,
    trainingSet,
    examplesPerSecond: trained.examplesPerSecond,
    resumedFromEpoch: trained.resumedFromEpoch,
  };
}

/** The UTC day before the instant's day, `YYYY-MM-DD`. */
function dayBefore(instant: string): string {
  const midnight = Math.floor(Date.parse(instant) / 86_400_000) * 86_400_000;
  return new Date(midnight - 86_400_000).toISOString().slice(0, 10);
}
