/**
 * The retraining job's contract: its input (validated by zod in the workflow, the CLI and the API
 * alike), its progress as the `progress` query reports it, and its result.
 */
import { z } from 'zod';
import { modelNameSchema, plainText } from './names.js';
import { canarySettingsSchema } from './rollout/config.js';
import { type ValidationReport, validationThresholdsSchema } from './validation.js';

export { modelNameSchema, plainText };

const isoInstant = z.iso.datetime({
  offset: true,
  message: 'must be an ISO-8601 instant with a zone',
});

export const trainingOptionsSchema = z.object({
  epochs: z.number().int().min(1).max(200).default(8),
  batchSize: z.number().int().min(16).max(8192).default(512),
  learningRate: z.number().positive().max(1).default(0.005),
  hiddenUnits: z.array(z.number().int().min(1).max(1024)).min(1).max(4).default([64, 32]),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .default(42),
});

/**
 * A feature the model trains on: a registered feature, its version (the latest when left out) and
 * one of its windows, `name[@version]:window`.
 */
export const trainingFeatureSchema = z
  .string()
  .regex(
    /^[a-z][a-z0-9_]{0,62}(@[1-9][0-9]{0,6})?:(lifetime|[1-9][0-9]{0,3}d)$/,
    'is not a training feature: name[@version]:window, e.g. item_popularity:lifetime',
  );

/**
 * The features a model trains on unless its retraining says otherwise: those of
 * config/features.example.yaml. The popularity baseline scores by `item_popularity:lifetime`,
 * which every feature list must hold.
 */
export const DEFAULT_TRAINING_FEATURES = [
  'person_rating_count:lifetime',
  'person_rating_count:30d',
  'person_mean_rating:lifetime',
  'person_positive_rate:90d',
  'person_days_since_last_rating:lifetime',
  'item_popularity:lifetime',
  'item_popularity:7d',
  'item_mean_rating:lifetime',
  'item_positive_rate:lifetime',
] as const;
export const POPULARITY_FEATURE = { name: 'item_popularity', window: 'lifetime' } as const;

export const retrainInputSchema = z
  .object({
    model: modelNameSchema,
    features: z
      .array(trainingFeatureSchema)
      .min(1)
      .max(100)
      .refine((f) => new Set(f).size === f.length, { error: 'has a feature twice' })
      .refine((f) => f.some((x) => /^item_popularity(@\d+)?:lifetime$/.test(x)), {
        error: 'must hold item_popularity:lifetime (the popularity baseline scores by it)',
      })
      .default([...DEFAULT_TRAINING_FEATURES]),
    reason: plainText(500),
    requestedBy: plainText(200).default('unknown'),
    trainUntil: isoInstant.optional(),
    validateUntil: isoInstant.optional(),
    training: trainingOptionsSchema.default(trainingOptionsSchema.parse({})),
    /** How long a silent training attempt is presumed dead before it is retried elsewhere. */
    heartbeatTimeoutSeconds: z.number().int().min(10).max(3600).default(30),
    /** The drift run that asked for this retraining (its id in drift_runs), if one did. */
    driftRunId: z
      .string()
      .regex(/^[1-9][0-9]{0,17}$/, 'is not a drift run id')
      .optional(),
    /** How the candidate is judged against production (domain/validation.ts). */
    validation: validationThresholdsSchema.default(validationThresholdsSchema.parse({})),
    /**
     * `approval`: a blessed candidate waits for an `approvePromotion` signal before `production`
     * moves to it. `canary`: a blessed candidate is rolled out on `canary.surface` by a
     * rolloutModel workflow (rollout/<surface>) that promotes it at 100% or rolls it back; the
     * retraining ends once that rollout has started. `none`: train, validate, register; no move.
     */
    promotion: z.enum(['approval', 'canary', 'none']).default('approval'),
    /** The rollout of a blessed candidate under promotion `canary`. */
    canary: canarySettingsSchema.optional(),
    /** How long a blessed candidate waits for approval before the run ends without promoting. */
    approvalTimeoutHours: z
      .number()
      .min(0.001)
      .max(24 * 90)
      .default(24 * 7),
  })
  .refine(
    (v) =>
      !v.trainUntil || !v.validateUntil || Date.parse(v.trainUntil) < Date.parse(v.validateUntil),
    {
      message: 'trainUntil must be before validateUntil',
      path: ['trainUntil'],
    },
  )
  .refine((v) => (v.promotion === 'canary') === (v.canary !== undefined), {
    message: 'is the rollout of promotion "canary": set both, or neither',
    path: ['canary'],
  });

export type RetrainInput = z.input<typeof retrainInputSchema>;
export type RetrainRequest = z.output<typeof retrainInputSchema>;
export type TrainingOptions = z.output<typeof trainingOptionsSchema>;

export const RETRAIN_STAGES = [
  'starting',
  'backfilling-features',
  'building-training-set',
  'training',
  'evaluating',
  'registering',
  'validating',
  'awaiting-approval',
  'promoting',
  'done',
] as const;
export type RetrainStage = (typeof RETRAIN_STAGES)[number];

export interface RetrainProgress {
  stage: RetrainStage;
  /** Once registered: the candidate's version, and once validated: whether it is blessed. */
  version?: number;
  blessed?: boolean;
  epoch: number;
  epochs: number;
  loss?: number;
}

/** The signal a training activity sends its workflow after each epoch (best effort). */
export const EPOCH_SIGNAL = 'trainingEpoch';

export interface EpochProgress {
  epoch: number;
  epochs: number;
  loss: number;
}

export interface EvaluationMetrics {
  auc: number;
  logLoss: number;
  ndcgAt10: number;
  examples: number;
  users: number;
}

export interface TrainingSetSummary {
  setKey: string;
  source: string;
  trainFrom: string;
  trainUntil: string;
  validateUntil: string;
  trainRows: number;
  validateRows: number;
  features: string[];
}

export interface RetrainResult {
  model: string;
  version: number;
  artifactSha256: string;
  backend: string;
  metrics: EvaluationMetrics;
  baseline: EvaluationMetrics;
  trainingSet: TrainingSetSummary;
  examplesPerSecond: number;
  resumedFromEpoch: number;
  validation: ValidationReport;
  promotion: PromotionOutcome;
}

/** What became of a candidate after validation. */
export interface PromotionOutcome {
  outcome:
    | 'promoted'
    | 'not-blessed'
    | 'rejected'
    | 'timed-out'
    | 'not-requested'
    | 'canary-started'
    | 'canary-refused';
  /** Under promotion `canary`: the rollout workflow that owns the candidate's promotion. */
  rollout?: string;
  by?: string;
  reason?: string;
  from?: number | null;
  to?: number;
}

/** The signals that decide a blessed candidate's promotion. */
export const APPROVE_SIGNAL = 'approvePromotion';
export const REJECT_SIGNAL = 'rejectPromotion';
export const promotionDecisionSchema = z.strictObject({
  by: plainText(200),
  reason: plainText(500),
});
export type PromotionDecision = z.output<typeof promotionDecisionSchema>;

/** The workflow id that owns retraining of one model: a second request attaches to it. */
export function retrainWorkflowId(model: string): string {
  return `retrain/${model}`;
}
