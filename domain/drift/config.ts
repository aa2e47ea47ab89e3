/**
 * What a drift monitor is told: the model, which sample is the reference, which window is
 * current, the decision rule (significance after Benjamini-Hochberg **and** an effect floor), and
 * the hysteresis that turns drifted windows into one retraining. zod-validated in the CLI, the API
 * and the workflow alike; the defaults are the documented ones (README, "Drift monitors").
 */
import { z } from 'zod';
import { UNSTORABLE_PROBLEM, UNSTORABLE_TEXT } from '../../common/text.js';
import { modelNameSchema, plainText } from '../retrain.js';
import { canarySettingsSchema } from '../rollout/config.js';

const DAY = 86_400_000;
/** Instants pops can store feature days for (1970 to 2199, UTC). */
const isoInstant = z.iso
  .datetime({ offset: true, message: 'must be an ISO-8601 instant with a zone' })
  .refine((v) => Date.parse(v) >= Date.UTC(1970, 0, 1) && Date.parse(v) < Date.UTC(2200, 0, 1), {
    message: 'must lie between 1970 and 2199',
  });

/**
 * The reference sample.
 * - `training` (default): the rows the monitored version trained on (its training set's train
 *   split), with the feature values it learned from.
 * - `last-cycle`: the current window moved back by `cycleDays` ("same period last cycle").
 * - `rolling`: the `days` days just before the current window.
 * - `range`: explicit instants, `from` inclusive, `to` exclusive.
 */
export const referenceSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('training') }),
  z.strictObject({ kind: z.literal('last-cycle'), cycleDays: z.number().int().min(1).max(3660) }),
  z.strictObject({ kind: z.literal('rolling'), days: z.number().int().min(1).max(3660) }),
  z
    .strictObject({ kind: z.literal('range'), from: isoInstant, to: isoInstant })
    .refine((r) => Date.parse(r.from) < Date.parse(r.to), {
      message: 'from must be before to',
      path: ['to'],
    })
    .refine((r) => Date.parse(r.to) - Date.parse(r.from) <= 3660 * DAY, {
      message: 'spans more than 3660 days',
      path: ['to'],
    }),
]);
export type Reference = z.output<typeof referenceSchema>;

/**
 * The current window: the `days` days ending at `end` (exclusive). `end` is `now` (the run's
 * time), `latest` (just after the source's latest event: for replayed or historical data), or an
 * instant (a time-shifted window).
 */
export const currentSchema = z.strictObject({
  days: z.number().int().min(1).max(3660).default(7),
  end: z.union([z.literal('now'), z.literal('latest'), isoInstant]).default('now'),
});
export type Current = z.output<typeof currentSchema>;

export const TESTS = ['ks', 'chi2', 'z'] as const;
export const EFFECTS = ['psi', 'js', 'wasserstein', 'proportion'] as const;
export type TestMethod = (typeof TESTS)[number];
export type EffectMethod = (typeof EFFECTS)[number];

/**
 * Effect floors: a feature drifts only when its effect reaches the floor of the method that judges
 * it, whatever its p-value. PSI 0.2 is the customary "significant shift"; JS distance (base 2)
 * and Wasserstein over the reference std at 0.1; a proportion (binary share, missing rate) moving
 * by 5 points.
 */
export const DEFAULT_FLOORS: Readonly<Record<EffectMethod, number>> = {
  psi: 0.2,
  js: 0.1,
  wasserstein: 0.1,
  proportion: 0.05,
};

/** Per-feature overrides, keyed by `name@version:window` or `name:window`. */
export const featureOverrideSchema = z.strictObject({
  test: z.enum(TESTS).optional(),
  effect: z.enum(EFFECTS).optional(),
  floor: z.number().positive().max(100).optional(),
  bins: z.number().int().min(2).max(100).optional(),
  /** Leave the feature out of the decision (it is still reported). */
  ignore: z.boolean().optional(),
});
export type FeatureOverride = z.output<typeof featureOverrideSchema>;

export const performanceSchema = z.strictObject({
  /** Degraded when the current window's AUC is below the validation AUC by more than this. */
  maxAucDrop: z.number().min(0).max(1).default(0.05),
  /** Degraded when the current window's log loss is above the validation log loss by more. */
  maxLogLossRise: z.number().min(0).max(10).default(0.05),
  /** Labelled rows needed (both classes present) before performance is judged. */
  minRows: z.number().int().min(10).max(10_000_000).default(200),
});

export const driftConfigSchema = z.strictObject({
  reference: referenceSchema.default({ kind: 'training' }),
  current: currentSchema.default(currentSchema.parse({})),
  /** The family-wise false discovery rate of the Benjamini-Hochberg step. */
  alpha: z.number().gt(0).lt(1).default(0.05),
  /** Quantile bins of numeric features (before duplicate edges collapse). */
  bins: z.number().int().min(2).max(100).default(10),
  /** A feature with fewer non-missing rows on either side is reported, not judged. */
  minRows: z.number().int().min(10).max(10_000_000).default(100),
  /** Integer features with at most this many distinct reference values are categorical. */
  maxCategories: z.number().int().min(2).max(1000).default(20),
  /** Numeric features judge PSI from this many rows per side; Wasserstein below it. */
  psiMinRows: z.number().int().min(10).max(10_000_000).default(1000),
  floors: z
    .strictObject({
      psi: z.number().positive().optional(),
      js: z.number().positive().optional(),
      wasserstein: z.number().positive().optional(),
      proportion: z.number().positive().optional(),
    })
    .default({}),
  features: z
    .record(
      z
        .string()
        .max(200)
        .refine((k) => !UNSTORABLE_TEXT.test(k), UNSTORABLE_PROBLEM),
      featureOverrideSchema,
    )
    .refine((o) => Object.keys(o).length <= 500, { message: 'has more than 500 overrides' })
    .default({}),
  /** Judge the production model's score distribution too (needs the model artifact). */
  prediction: z.boolean().default(true),
  performance: performanceSchema.default(performanceSchema.parse({})),
  /** Retraining is requested after this many consecutive drifted runs of one version. */
  consecutive: z.number().int().min(1).max(100).default(2),
  /** No new request within this many hours of the last one. */
  cooldownHours: z
    .number()
    .min(0)
    .max(24 * 365)
    .default(24),
  /** How often the schedule runs, as a Temporal interval ("1h", "30m", "1d"). */
  every: z
    .string()
    .regex(/^[1-9][0-9]{0,5}(s|m|h|d)$/, 'is not an interval such as 30m, 1h or 1d')
    .default('1h'),
  /** Off: runs report and decide, but never start a retraining. */
  trigger: z.boolean().default(true),
  /**
   * The canary rollout a requested retraining hands its blessed candidate to (its surface and
   * settings, domain/rollout/config.ts). Left out, the candidate waits for an approval.
   */
  canary: canarySettingsSchema.optional(),
});
export type DriftConfig = z.output<typeof driftConfigSchema>;
export type DriftConfigInput = z.input<typeof driftConfigSchema>;

/** The input of monitorDrift: the model, and the config (the stored monitor's unless given). */
export const monitorDriftInputSchema = z.strictObject({
  model: modelNameSchema,
  config: driftConfigSchema.optional(),
  /** The instant `now` stands for (the schedule's fire time, or a replay's). */
  at: isoInstant.optional(),
  requestedBy: plainText(200).default('unknown'),
});
export type MonitorDriftInput = z.input<typeof monitorDriftInputSchema>;

/** The schedule (and its workflows' id prefix) that watches one model. */
export function driftScheduleId(model: string): string {
  return `drift/${model}`;
}

/** The effect floor of one method for one feature: its override, the config's, or the default. */
export function floorFor(config: DriftConfig, effect: EffectMethod, override?: FeatureOverride) {
  return override?.floor ?? config.floors[effect] ?? DEFAULT_FLOORS[effect];
}

/** A feature's override by its full name, else by `name:window`. */
export function overrideFor(config: DriftConfig, feature: string): FeatureOverride | undefined {
  return config.features[feature] ?? config.features[feature.replace(/@\d+:/, ':')];
}
