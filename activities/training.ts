/**
 * CPU-heavy activities on the training queue: train (checkpointing every epoch, so a retry after a
 * crash resumes from the last completed epoch) and evaluate against the popularity baseline.
 */
import { Context } from '@temporalio/activity';
import type { Pool } from '../common/db.js';
import { FAILURE_TYPES, failure } from '../common/failures.js';
import { auc, logLoss, ndcgAtK } from '../domain/metrics.js';
import { loadTensorflow } from '../domain/ml/backend.js';
import {
  applyPreprocessing,
  fitPreprocessing,
  fromArtifact,
  type ModelArtifact,
  type Preprocessing,
  toArtifact,
  type WeightSpec,
} from '../domain/ml/model.js';
import { type ResumePoint, trainModel as train } from '../domain/ml/trainer.js';
import {
  EPOCH_SIGNAL,
  type EpochProgress,
  type EvaluationMetrics,
  POPULARITY_FEATURE,
  type TrainingOptions,
} from '../domain/retrain.js';
import { type ExampleMatrix, loadExamples } from '../domain/training-set.js';
import { type ActivityDeps, callerWorkflow, withHeartbeat } from './deps.js';

export interface TrainInput {
  runKey: string;
  setKey: string;
  options: TrainingOptions;
}

export interface TrainOutput {
  artifactSha256: string;
  backend: string;
  epochs: number;
  examplesPerSecond: number;
  finalLoss: number;
  resumedFromEpoch: number;
}

interface ResultRow {
  artifact_sha256: string;
  backend: string;
  epochs: number;
  examples_per_second: number;
  final_loss: number;
  resumed_from_epoch: number;
}

function output(row: ResultRow): TrainOutput {
  return {
    artifactSha256: row.artifact_sha256,
    backend: row.backend,
    epochs: row.epochs,
    examplesPerSecond: row.examples_per_second,
    finalLoss: row.final_loss,
    resumedFromEpoch: row.resumed_from_epoch,
  };
}

async function loadCheckpoint(pool: Pool, runKey: string): Promise<ResumePoint | undefined> {
  const found = await pool.query<{ epoch: number; state: Buffer }>(
    'select epoch, state from training_checkpoints where run_key = $1',
    [runKey],
  );
  return found.rows[0];
}

async function saveCheckpoint(
  pool: Pool,
  runKey: string,
  epoch: number,
  epochs: number,
  state: Buffer,
  loss: number,
) {
  await pool.query(
    `insert into training_checkpoints (run_key, epoch, total_epochs, state, loss)
     values ($1, $2, $3, $4, $5)
     on conflict (run_key) do update
       set epoch = excluded.epoch, state = excluded.state, loss = excluded.loss,
       updated_at = now()
     where training_checkpoints.epoch < excluded.epoch`,
    [runKey, epoch, epochs, state, loss],
  );
}

async function saveArtifact(pool: Pool, artifact: ModelArtifact): Promise<void> {
  await pool.query(
    `insert into model_artifacts (sha256, topology, weight_specs, weights, preprocessing)
     values ($1, $2::jsonb, $3::jsonb, $4, $5::jsonb) on conflict (sha256) do nothing`,
    [
      artifact.sha256,
      JSON.stringify(artifact.topology),
      JSON.stringify(artifact.weightSpecs),
      artifact.weights,
      JSON.stringify(artifact.preprocessing),
    ],
  );
}

/** Reads an artifact back; throws NotFoundFailure when the hash is unknown. */
export async function readArtifact(pool: Pool, sha256: string): Promise<ModelArtifact> {
  const found = await pool.query<{
    topology: unknown;
    weight_specs: WeightSpec[];
    weights: Buffer;
    preprocessing: Preprocessing;
  }>(
    'select topology, weight_specs, weights, preprocessing from model_artifacts where sha256 = $1',
    [sha256],
  );
  const row = found.rows[0];
  if (!row) throw failure(FAILURE_TYPES.notFound, `model artifact ${sha256} not found`);
  return {
    sha256,
    topology: row.topology,
    weightSpecs: row.weight_specs,
    weights: row.weights,
    preprocessing: row.preprocessing,
  };
}

function metricsOf(
  data: ExampleMatrix,
  scores: Float32Array,
  probabilities: Float32Array,
): EvaluationMetrics {
  const ndcg = ndcgAtK({ groups: data.persons, items: data.items, relevance: data.rating, scores });
  return {
    auc: auc(data.y, scores),
    logLoss: logLoss(data.y, probabilities),
    ndcgAt10: ndcg.ndcg,
    examples: data.n,
    users: ndcg.groups,
  };
}

/**
 * The popularity baseline: score = the item's number of ratings before t; its probability is the
 * positive rate of training examples in the same popularity decile (so its log loss is meaningful).
 */
function popularityBaseline(
  train: ExampleMatrix,
  validate: ExampleMatrix,
): { scores: Float32Array; probabilities: Float32Array } {
  const index = train.names.findIndex((n) =>
    new RegExp(`^${POPULARITY_FEATURE.name}@\\d+:${POPULARITY_FEATURE.window}$`).test(n),
  );
  if (index < 0) {
    throw new Error(`the training set has no ${POPULARITY_FEATURE.name}:lifetime for the baseline`);
  }
  const column = (m: ExampleMatrix) =>
    Float32Array.from({ length: m.n }, (_, i) => m.x[i * m.dim + index] ?? 0);
  const trainPop = column(train);
  const edges = Array.from(trainPop).sort((a, b) => a - b);
  const bins = 10;
  const cut = Array.from(
    { length: bins - 1 },
    (_, k) => edges[Math.floor(((k + 1) * edges.length) / bins)] ?? 0,
  );
  const binOf = (v: number) => cut.filter((c) => v >= c).length;
  const positives = new Array<number>(bins).fill(1);
  const totals = new Array<number>(bins).fill(2); // Laplace smoothing: no empty bin predicts 0 or 1
  trainPop.forEach((v, i) => {
    const b = binOf(v);
    positives[b] = (positives[b] ?? 0) + (train.y[i] ?? 0);
    totals[b] = (totals[b] ?? 0) + 1;
  });
  const scores = column(validate);
  const probabilities = scores.map((v) => {
    const b = binOf(v);
    return (positives[b] ?? 1) / (totals[b] ?? 2);
  });
  return { scores, probabilities };
}

/** Builds the training-queue activities. */
export function trainingActivities({ pool, log, trainBackend, temporal }: ActivityDeps) {
  return {
    /**
     * Trains the run's model; resumes from its last checkpoint; a finished run returns its result.
     */
    async trainModel(input: TrainInput): Promise<TrainOutput> {
      const done = await pool.query<ResultRow>(
        'select * from training_results where run_key = $1',
        [input.runKey],
      );
      if (done.rows[0]) return output(done.rows[0]);

      const ctx = Context.current();
      const { tf, backend } = await loadTensorflow(trainBackend, log);
      const data = await loadExamples(pool, input.setKey, 'train');
      const preprocessing = fitPreprocessing(data.names, data.x, data.n);
      const x = applyPreprocessing(preprocessing, data.x, data.n);
      const resumeFrom = await loadCheckpoint(pool, input.runKey);
      if (resumeFrom) {
        log.info(
          { runKey: input.runKey, epoch: resumeFrom.epoch },
          'resuming training from checkpoint',
        );
      }
      const { workflowId } = callerWorkflow();
      const beat = setInterval(() => ctx.heartbeat({ epoch: resumeFrom?.epoch ?? 0 }), 1000);
      try {
        const result = await train({
          tf,
          x,
          y: data.y,
          n: data.n,
          dim: data.dim,
          options: input.options,
          ...(resumeFrom ? { resumeFrom } : {}),
          isCancelled: () => ctx.cancellationSignal.aborted,
          onEpochEnd: async (report) => {
            await saveCheckpoint(
              pool,
              input.runKey,
              report.epoch,
              input.options.epochs,
              report.state,
              report.loss,
            );
            ctx.heartbeat({ epoch: report.epoch, loss: report.loss });
            const progress: EpochProgress = {
              epoch: report.epoch,
              epochs: input.options.epochs,
              loss: report.loss,
            };
            await temporal?.workflow
              .getHandle(workflowId)
              .signal(EPOCH_SIGNAL, progress)
              .catch((err: Error) => log.warn({ err: err.message }, 'progress signal failed'));
            log.info(
              { runKey: input.runKey, epoch: report.epoch, loss: report.loss, backend },
              'epoch trained',
            );
          },
        });
        const artifact = await toArtifact(tf, result.model, preprocessing);
        result.model.dispose();
        await saveArtifact(pool, artifact);
        const saved = await pool.query<ResultRow>(
          `insert into training_results (run_key, artifact_sha256, backend, epochs,
               examples_per_second, final_loss,
             resumed_from_epoch)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (run_key) do update set run_key = excluded.run_key
           returning *`,
          [
            input.runKey,
            artifact.sha256,
            backend,
            input.options.epochs,
            result.examplesPerSecond,
            result.finalLoss,
            result.resumedFromEpoch,
          ],
        );
        return output(saved.rows[0] as ResultRow);
      } finally {
        clearInterval(beat);
      }
    },

    /** Scores the validation split with the model and the popularity baseline. */
    async evaluateModel(input: { setKey: string; artifactSha256: string }): Promise<{
      model: EvaluationMetrics;
      baseline: EvaluationMetrics;
    }> {
      return withHeartbeat(async () => {
        const { tf } = await loadTensorflow(trainBackend, log);
        const artifact = await readArtifact(pool, input.artifactSha256);
        const train = await loadExamples(pool, input.setKey, 'train');
        const validate = await loadExamples(pool, input.setKey, 'validate');
        const scorer = await fromArtifact(tf, artifact);
        try {
          const probabilities = scorer.predict(validate.x, validate.n);
          const baseline = popularityBaseline(train, validate);
          return {
            model: metricsOf(validate, probabilities, probabilities),
            baseline: metricsOf(validate, baseline.scores, baseline.probabilities),
          };
        } finally {
          scorer.dispose();
        }
      });
    },
  };
}
