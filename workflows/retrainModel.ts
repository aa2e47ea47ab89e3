/**
 * retrainModel: bring its registry features up to date (a backfillFeatures child), build a
 * point-in-time training set from them, train, evaluate against a popularity baseline on the later
 * time slice, register a version (alias `candidate`), validate it against the `production` version
 * on the same slice (validateCandidate), and, when blessed, wait for an approval signal before
 * `production` moves to it. Not blessed, rejected or not approved in time: production is
 * untouched and the run ends with the reason. Every step is audited. Workflow code: no I/O, clocks
 * or randomness; every effect is an activity keyed by this run, so a retry or a replay repeats
 * nothing.
 */
import {
  condition,
  defineQuery,
  defineSignal,
  executeChild,
  log,
  ParentClosePolicy,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import { ACTIVITY_RETRY, parseOrFail } from '../common/failures.js';
import { prefixOf, queueName } from '../common/queues.js';
import {
  APPROVE_SIGNAL,
  EPOCH_SIGNAL,
  type EpochProgress,
  type PromotionDecision,
  type PromotionOutcome,
  REJECT_SIGNAL,
  promotionDecisionSchema,
  type RetrainInput,
  type RetrainProgress,
  type RetrainRequest,
  type RetrainResult,
  retrainInputSchema,
} from '../domain/retrain.js';
import { type RolloutInput, rolloutWorkflowId } from '../domain/rollout/config.js';
import { partitionUnitFor } from '../domain/features/backfill.js';
import type { backfillFeatures } from './backfillFeatures.js';

export const progressQuery = defineQuery<RetrainProgress>('progress');
export const epochSignal = defineSignal<[EpochProgress]>(EPOCH_SIGNAL);
export const approveSignal = defineSignal<[PromotionDecision]>(APPROVE_SIGNAL);
export const rejectSignal = defineSignal<[PromotionDecision]>(REJECT_SIGNAL);

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
  // A decision that arrives before the candidate waits for it is kept, not lost; the first counts.
  let decision: { approved: boolean; by: string; reason: string } | undefined;
  const decide = (approved: boolean) => (raw: PromotionDecision) => {
    const parsed = promotionDecisionSchema.safeParse(raw);
    if (!parsed.success) {
      log.warn('promotion signal refused', { issues: parsed.error.issues.map((i) => i.message) });
      return;
    }
    decision ??= { approved, ...parsed.data };
  };
  setHandler(approveSignal, decide(true));
  setHandler(rejectSignal, decide(false));

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
  const refs = uniqueRefs(features);
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
    driftRunId: input.driftRunId ?? null,
  });
  progress.version = version;
  await audit(
    'model.version-registered',
    { runKey },
    { version, artifactSha256: trained.artifactSha256 },
  );

  progress.stage = 'validating';
  const production = await local.productionVersion({ model: input.model, candidate: version });
  // Same features: production scores the candidate's own validation rows.
  let productionSetKey = trainingSet.setKey;
  if (production && !sameFeatures(production.features, trainingSet.features)) {
    // Production learned from other features: it reads its own, of the same rows.
    const productionFeatures = production.features.map(splitFeature);
    await executeChild<typeof backfillFeatures>('backfillFeatures', {
      workflowId: `${runKey}/production-features`,
      args: [
        {
          features: uniqueRefs(productionFeatures),
          from,
          to,
          partition: partitionUnitFor(from, to),
          requestedBy: input.requestedBy,
          reason: `validation of ${input.model} v${version} against production`,
        },
      ],
    });
    const set = await sql.buildTrainingSet({
      setKey: `${runKey}/production`,
      model: input.model,
      source: model.source,
      features: productionFeatures,
      trainUntil: range.trainUntil,
      validateUntil: range.validateUntil,
    });
    productionSetKey = set.setKey;
  }
  const validation = await heavy.validateCandidate({
    model: input.model,
    candidate: { version, setKey: trainingSet.setKey, artifactSha256: trained.artifactSha256 },
    production: production
      ? {
          version: production.version,
          setKey: productionSetKey,
          artifactSha256: production.artifactSha256,
        }
      : null,
    thresholds: input.validation,
  });
  progress.blessed = validation.blessed;
  await audit(
    'model.validated',
    { version, productionVersion: production?.version ?? null, thresholds: input.validation },
    {
      blessed: validation.blessed,
      reasons: validation.reasons,
      candidate: validation.candidate,
      production: validation.production,
      differences: validation.differences,
    },
  );

  let promotion: PromotionOutcome;
  if (!validation.blessed) {
    promotion = { outcome: 'not-blessed', reason: validation.reasons.join('; ') };
  } else if (input.promotion === 'none') {
    promotion = { outcome: 'not-requested' };
  } else if (input.promotion === 'canary') {
    progress.stage = 'promoting';
    promotion = await startCanary(input, version, workflowId);
    await audit(
      `model.${promotion.outcome}`,
      { version, surface: input.canary?.surface },
      {
        ...promotion,
      },
    );
  } else {
    progress.stage = 'awaiting-approval';
    const arrived = await condition(
      () => decision !== undefined,
      Math.round(input.approvalTimeoutHours * 3_600_000),
    );
    if (!arrived || !decision) {
      promotion = {
        outcome: 'timed-out',
        reason: `no approval in ${input.approvalTimeoutHours} h`,
      };
      await audit('model.approval-timed-out', { version }, { ...promotion });
    } else if (!decision.approved) {
      promotion = { outcome: 'rejected', by: decision.by, reason: decision.reason };
      await local.recordAudit({
        actor: decision.by,
        action: 'model.promotion-rejected',
        subject,
        inputs: { version, reason: decision.reason },
        outputs: {},
      });
    } else {
      progress.stage = 'promoting';
      const moved = await local.promoteModelVersion({
        model: input.model,
        version,
        actor: decision.by,
        reason: decision.reason,
        workflowId,
        moveKey: `${runKey}/promote`,
      });
      promotion = { outcome: 'promoted', by: decision.by, reason: decision.reason, ...moved };
      await local.recordAudit({
        actor: decision.by,
        action: 'model.promoted',
        subject,
        inputs: { version, reason: decision.reason, approvedFor: input.requestedBy },
        outputs: { ...moved },
      });
    }
  }

  progress.stage = 'done';
  log.info('retrain finished', {
    model: input.model,
    version,
    auc: evaluation.model.auc,
    blessed: validation.blessed,
    promotion: promotion.outcome,
  });
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
    validation,
    promotion,
  };
}

/**
 * Hands a blessed candidate to a canary rollout on its surface (rollout/<surface>, which outlives
 * this run and promotes or rolls back on its own). The start is a workflow command, so a replay
 * repeats nothing; a surface with a rollout already running refuses it.
 */
async function startCanary(
  input: RetrainRequest,
  version: number,
  retrainId: string,
): Promise<PromotionOutcome> {
  const canary = input.canary;
  if (!canary) throw new Error('promotion "canary" needs its canary settings');
  const rollout = rolloutWorkflowId(canary.surface);
  const args: RolloutInput = {
    ...canary,
    model: input.model,
    version,
    requestedBy: input.requestedBy,
    reason: `${canary.reason}: the blessed candidate v${version} of ${retrainId}`,
  };
  try {
    await startChild('rolloutModel', {
      workflowId: rollout,
      args: [args],
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
    return { outcome: 'canary-started', rollout, reason: args.reason };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    return {
      outcome: 'canary-refused',
      rollout,
      reason:
        `${rollout} is already running (one rollout per surface);` +
        ` v${version} is not rolled out`,
    };
  }
}

function sameFeatures(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((f, i) => f === b[i]);
}

/** `name@version:window` as a training feature. */
function splitFeature(f: string): { name: string; version: number; window: string } {
  const [ref = '', window = ''] = f.split(':');
  const [name = '', v = '0'] = ref.split('@');
  return { name, version: Number(v), window };
}

function uniqueRefs(features: ReadonlyArray<{ name: string; version: number }>) {
  return [
    ...new Map(
      features.map((f) => [`${f.name}@${f.version}`, { name: f.name, version: f.version }]),
    ).values(),
  ];
}

/** The UTC day before the instant's day, `YYYY-MM-DD`. */
function dayBefore(instant: string): string {
  const midnight = Math.floor(Date.parse(instant) / 86_400_000) * 86_400_000;
  return new Date(midnight - 86_400_000).toISOString().slice(0, 10);
}
