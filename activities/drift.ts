/**
 * Drift monitoring activities. Orchestration queue: plan a run (the watched version, its windows,
 * the feature days to backfill first), build the point-in-time samples, decide, and request one
 * retraining. Training queue: compute the report (statistics in TypeScript over value counts that
 * PostgreSQL groups; scores from the model on the same rows). Each writes under the run's key, so
 * a retry repeats nothing.
 */
import { Context } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { FAILURE_TYPES, failure } from '../common/failures.js';
import { prefixOf, queueName } from '../common/queues.js';
import type { DriftConfig, MonitorDriftInput, Reference } from '../domain/drift/config.js';
import { driftConfigSchema, monitorDriftInputSchema } from '../domain/drift/config.js';
import { type DriftRow, type FeatureSamples, judgeFeatures } from '../domain/drift/judge.js';
import {
  type Decision,
  type DriftReport,
  type PerformanceCheck,
  type StoredRun,
  decideRun,
  insertRun,
  recordRetrain,
  runByKey,
} from '../domain/drift/runs.js';
import { weightedSample } from '../domain/drift/stats.js';
import {
  type SampleRef,
  type WatchedVersion,
  buildDriftSet,
  featureDefinitions,
  freezeBins,
  frozenBins,
  getMonitor,
  loadRows,
  loadSides,
  missingDays,
  watchedVersion,
} from '../domain/drift/store.js';
import { auc, logLoss } from '../domain/metrics.js';
import { loadTensorflow } from '../domain/ml/backend.js';
import { fromArtifact } from '../domain/ml/model.js';
import { type RetrainRequest, retrainInputSchema, retrainWorkflowId } from '../domain/retrain.js';
import type { CanarySettings } from '../domain/rollout/config.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';
import { readArtifact } from './training.js';

const DAY = 86_400_000;

export interface SampleWindow {
  kind: Reference['kind'] | 'current';
  from: string;
  /** Exclusive. */
  to: string;
  sample: SampleRef;
}

export interface DriftPlan {
  runKey: string;
  model: string;
  requestedBy: string;
  at: string;
  config: DriftConfig;
  version: WatchedVersion;
  reference: SampleWindow;
  current: SampleWindow;
  /** Feature days without a snapshot, to backfill before the samples are built. */
  backfill: { from: string; to: string } | null;
}

export interface DriftOutcome {
  id: number;
  drifted: boolean;
  driftedFeatures: string[];
  insufficient: boolean;
  reference: StoredRun['reference'];
  current: StoredRun['current'];
}

/** Builds the drift activities of the orchestration queue. */
export function driftActivities({ pool, log, temporal }: ActivityDeps) {
  return {
    /** Resolves what a run compares; fails (not retried) when the model has nothing to watch. */
    async planDrift(raw: MonitorDriftInput & { at: string }): Promise<DriftPlan> {
      const input = monitorDriftInputSchema.parse(raw);
      const config = input.config ?? (await getMonitor(pool, input.model)) ?? defaults();
      const version = await watchedVersion(pool, input.model);
      if (!version) {
        throw failure(
          FAILURE_TYPES.notFound,
          `model "${input.model}" has no version to watch (retrain it first)`,
        );
      }
      const { workflowId, runId } = callerWorkflow();
      const runKey = `${workflowId}/${runId}`;
      const end = await currentEnd(pool, config, version.source, raw.at);
      // Windows past the run's day would backfill days that have not happened (and mark features
      // computed through them).
      const limit = Date.parse(raw.at) + DAY;
      const reachesFuture = (to: string, field: string) => {
        if (Date.parse(to) > limit) {
          throw failure(
            FAILURE_TYPES.validation,
            `${field} ${to} is after the run's time ${raw.at}`,
          );
        }
      };
      reachesFuture(end.toISOString(), 'current.end');
      if (config.reference.kind === 'range') reachesFuture(config.reference.to, 'reference.to');
      const current: SampleWindow = {
        kind: 'current',
        from: new Date(end.getTime() - config.current.days * DAY).toISOString(),
        to: end.toISOString(),
        sample: { setKey: `${runKey}/current` },
      };
      const reference = referenceWindow(config.reference, version, current, runKey);
      const spans = [current, ...(reference.kind === 'training' ? [] : [reference])];
      const gaps: Array<{ from: string; to: string }> = [];
      for (const w of spans) {
        const gap = await missingDays(pool, version.features, dayBefore(w.from), lastDay(w.to));
        if (gap) gaps.push(gap);
      }
      const backfill = gaps.length
        ? {
            from: gaps.map((g) => g.from).sort()[0] as string,
            to: gaps
              .map((g) => g.to)
              .sort()
              .reverse()[0] as string,
          }
        : null;
      return {
        runKey,
        model: input.model,
        requestedBy: input.requestedBy,
        at: raw.at,
        config,
        version,
        reference,
        current,
        backfill,
      };
    },

    /** Writes the point-in-time rows of the windows that are not the training set's. */
    async buildDriftSamples(plan: DriftPlan): Promise<{ reference: number; current: number }> {
      return withHeartbeat(async () => {
        const build = (w: SampleWindow) =>
          buildDriftSet(pool, {
            setKey: w.sample.setKey,
            source: plan.version.source,
            from: new Date(w.from),
            to: new Date(w.to),
            features: plan.version.features,
          });
        const current = await build(plan.current);
        const reference = plan.reference.kind === 'training' ? -1 : await build(plan.reference);
        return { reference, current };
      });
    },

    /** Decides the stored run (hysteresis and cooldown); deciding again returns the decision. */
    async decideDrift(input: {
      runKey: string;
      config: DriftConfig;
      at: string;
    }): Promise<Decision> {
      return decideRun(pool, input.runKey, input.config, new Date(input.at));
    },

    /**
     * Starts `retrain/<model>`, or attaches to the one running, and records it on the run. Two
     * monitors that fire together start one retraining: the id is the model's.
     */
    async requestRetrain(input: {
      runKey: string;
      driftRunId: number;
      model: string;
      features: string[];
      requestedBy: string;
      /** Where a blessed candidate is rolled out; without it, it waits for an approval. */
      canary?: CanarySettings;
    }): Promise<{ workflowId: string; runId: string; attached: boolean }> {
      const run = await runByKey(pool, input.runKey);
      if (run?.retrain) return run.retrain;
      if (!temporal) throw new Error('requestRetrain needs a Temporal client in its worker');
      const { workflowId: callerId } = callerWorkflow();
      const prefix = prefixOf(Context.current().info.taskQueue);
      const request: RetrainRequest = retrainInputSchema.parse({
        model: input.model,
        features: input.features,
        reason: `drift run ${input.driftRunId} of ${input.model}`,
        requestedBy: input.requestedBy,
        driftRunId: String(input.driftRunId),
        ...(input.canary ? { promotion: 'canary', canary: input.canary } : {}),
      });
      const workflowId = retrainWorkflowId(input.model);
      let started: { workflowId: string; runId: string; attached: boolean };
      try {
        const handle = await temporal.workflow.start('retrainModel', {
          workflowId,
          taskQueue: queueName(prefix, 'orchestration'),
          args: [request],
          workflowIdConflictPolicy: 'FAIL',
          workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        });
        started = { workflowId, runId: handle.firstExecutionRunId, attached: false };
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        const running = await temporal.workflow.getHandle(workflowId).describe();
        started = { workflowId, runId: running.runId, attached: true };
      }
      await recordRetrain(pool, input.runKey, started);
      log.info(
        { model: input.model, caller: callerId, ...started },
        'retraining requested by drift',
      );
      return (await runByKey(pool, input.runKey))?.retrain ?? started;
    },
  };
}

/** Builds the drift activity of the training queue (it scores with the model). */
export function driftReportActivities({ pool, log, trainBackend }: ActivityDeps) {
  return {
    /** Computes and stores the run's report; a retry returns the stored one. */
    async computeDriftReport(plan: DriftPlan): Promise<DriftOutcome> {
      const stored = await runByKey(pool, plan.runKey);
      if (stored) return outcome(stored);
      return withHeartbeat(async () => {
        const { version, config } = plan;
        const dim = version.features.length;
        const definitions = await featureDefinitions(pool, version.features);
        const [refSides, curSides] = [
          await loadSides(pool, plan.reference.sample, dim),
          await loadSides(pool, plan.current.sample, dim),
        ];
        const frozen = await frozenBins(pool, plan.model, version.version);
        const samples: FeatureSamples[] = version.features.map((feature, k) => ({
          feature,
          type:
            definitions[k]?.type === 'bool'
              ? 'bool'
              : definitions[k]?.type === 'int'
                ? 'int'
                : 'float',
          reference: refSides[k] as FeatureSamples['reference'],
          current: curSides[k] as FeatureSamples['current'],
          ...(frozen.get(feature) ? { frozen: frozen.get(feature) } : {}),
        }));
        const notes: string[] = [];
        let performance: PerformanceCheck | null = null;
        if (config.prediction) {
          const scored = await scoreBoth({ pool, log, trainBackend }, plan, dim);
          log.info({ backend: scored.backend }, 'drift: scored both samples with the model');
          samples.push({
            feature: 'prediction',
            type: 'float',
            reference: { sample: weightedSample(scored.reference), missing: 0 },
            current: { sample: weightedSample(scored.current), missing: 0 },
            ...(frozen.get('prediction') ? { frozen: frozen.get('prediction') } : {}),
          });
          performance = performanceOf(plan, scored.current, scored.labels);
        } else {
          notes.push('prediction drift and the performance check are off in this config');
        }
        const judged = judgeFeatures(samples, config);
        await freezeBins(pool, plan.model, version.version, judged.toFreeze);
        const features = judged.rows.filter((r) => r.feature !== 'prediction');
        const prediction =
          judged.rows.find((r) => r.feature === 'prediction' && r.kind !== 'missing') ?? null;
        const drifted = (r: DriftRow) => r.decision === 'drift';
        const report: DriftReport = {
          alpha: config.alpha,
          features,
          prediction,
          performance,
          driftedFeatures: [...new Set(judged.rows.filter(drifted).map((r) => r.feature))],
          insufficient: judged.rows.every((r) => r.decision === 'not-judged'),
          notes,
        };
        const run = await insertRun(pool, {
          runKey: plan.runKey,
          model: plan.model,
          version: version.version,
          reference: {
            kind: plan.reference.kind,
            from: plan.reference.from,
            to: plan.reference.to,
            rows: refSides[0] ? refSides[0].sample.n + refSides[0].missing : 0,
          },
          current: {
            from: plan.current.from,
            to: plan.current.to,
            rows: curSides[0] ? curSides[0].sample.n + curSides[0].missing : 0,
          },
          report,
          drifted: report.driftedFeatures.length > 0 || (performance?.degraded ?? false),
          requestedBy: plan.requestedBy,
        });
        return outcome(run);
      });
    },
  };
}

function outcome(run: StoredRun): DriftOutcome {
  return {
    id: run.id,
    drifted: run.drifted,
    driftedFeatures: run.report.driftedFeatures,
    insufficient: run.report.insufficient,
    reference: run.reference,
    current: run.current,
  };
}

/**
 * The watched version's scores on both samples (missing values as 0, as it trained), and the
 * current sample's labels (null when some row has none yet).
 */
async function scoreBoth(
  { pool, log, trainBackend }: Pick<ActivityDeps, 'pool' | 'log' | 'trainBackend'>,
  plan: DriftPlan,
  dim: number,
): Promise<{
  reference: Float32Array;
  current: Float32Array;
  labels: Float32Array | null;
  backend: string;
}> {
  const { tf, backend } = await loadTensorflow(trainBackend, log);
  const scorer = await fromArtifact(tf, await readArtifact(pool, plan.version.artifactSha256));
  try {
    const ref = await loadRows(pool, plan.reference.sample, dim);
    const cur = await loadRows(pool, plan.current.sample, dim);
    return {
      reference: scorer.predict(ref.x, ref.n),
      current: scorer.predict(cur.x, cur.n),
      labels: cur.hasLabels ? cur.labels : null,
      backend,
    };
  } finally {
    scorer.dispose();
  }
}

function performanceOf(
  plan: DriftPlan,
  scores: Float32Array,
  labels: Float32Array | null,
): PerformanceCheck {
  const { validation } = plan.version;
  const limits = plan.config.performance;
  const base = {
    rows: scores.length,
    validationAuc: validation.auc,
    validationLogLoss: validation.logLoss,
    degraded: false,
  };
  if (!labels) return { ...base, judged: false, reason: 'the current window has no labels yet' };
  const positives = labels.reduce((a, b) => a + b, 0);
  if (scores.length < limits.minRows || positives === 0 || positives === scores.length) {
    return {
      ...base,
      judged: false,
      reason:
        `${scores.length} labelled rows (${positives} positive);` +
        ` ${limits.minRows} with both classes are needed`,
    };
  }
  const a = auc(labels, scores);
  const l = logLoss(labels, scores);
  const aucDrop = validation.auc - a;
  const lossRise = l - validation.logLoss;
  const degraded = aucDrop > limits.maxAucDrop || lossRise > limits.maxLogLossRise;
  return {
    ...base,
    judged: true,
    auc: a,
    logLoss: l,
    degraded,
    reason:
      `AUC ${a.toFixed(4)} vs validation ${validation.auc.toFixed(4)}` +
      ` (drop ${aucDrop.toFixed(4)}, limit ${limits.maxAucDrop}); ` +
      `log loss ${l.toFixed(4)} vs ${validation.logLoss.toFixed(4)}` +
      ` (rise ${lossRise.toFixed(4)}, limit ${limits.maxLogLossRise})`,
  };
}

function defaults(): DriftConfig {
  return driftConfigSchema.parse({});
}

/** Where the current window ends (exclusive): the run's time, an instant, or after the data. */
async function currentEnd(
  pool: ActivityDeps['pool'],
  config: DriftConfig,
  source: string,
  at: string,
): Promise<Date> {
  const end = config.current.end;
  if (end === 'now') return new Date(at);
  if (end !== 'latest') return new Date(end);
  const { rows } = await pool.query<{ last: Date | null }>(
    `select max(ts) as last from events where source = $1 and type = 'track' and event = 'rated'`,
    [source],
  );
  const last = rows[0]?.last;
  if (!last) {
    throw failure(FAILURE_TYPES.insufficientData, `source "${source}" has no rated events`);
  }
  return new Date(last.getTime() + 1);
}

function referenceWindow(
  reference: Reference,
  version: WatchedVersion,
  current: SampleWindow,
  runKey: string,
): SampleWindow {
  const from = Date.parse(current.from);
  const to = Date.parse(current.to);
  const set = { setKey: `${runKey}/reference` };
  switch (reference.kind) {
    case 'training':
      return {
        kind: 'training',
        from: version.trainFrom,
        to: version.trainUntil,
        sample: { setKey: version.setKey, before: version.trainUntil, immutable: true },
      };
    case 'last-cycle': {
      const shift = reference.cycleDays * DAY;
      return {
        kind: 'last-cycle',
        from: new Date(from - shift).toISOString(),
        to: new Date(to - shift).toISOString(),
        sample: set,
      };
    }
    case 'rolling':
      return {
        kind: 'rolling',
        from: new Date(from - reference.days * DAY).toISOString(),
        to: current.from,
        sample: set,
      };
    case 'range':
      return { kind: 'range', from: reference.from, to: reference.to, sample: set };
  }
}

/** The UTC day before the instant's day. */
function dayBefore(instant: string): string {
  return new Date(Math.floor(Date.parse(instant) / DAY) * DAY - DAY).toISOString().slice(0, 10);
}

/** The UTC day holding the last instant before `to` (exclusive), minus one: its snapshot's day. */
function lastDay(to: string): string {
  return dayBefore(new Date(Date.parse(to) - 1).toISOString());
}
