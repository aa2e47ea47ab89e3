import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticLogisticData } from '../bench/train-throughput.js';
import { auc } from '../domain/metrics.js';
import { loadTensorflow, type Tf } from '../domain/ml/backend.js';
import {
  applyPreprocessing,
  buildModel,
  fitPreprocessing,
  fromArtifact,
  loadModel,
  type Preprocessing,
  toArtifact,
} from '../domain/ml/model.js';
import {
  type EpochReport,
  type TrainOptions,
  TrainingCancelled,
  trainModel,
} from '../domain/ml/trainer.js';

const N = 2_000;
const DIM = 5;
const OPTIONS: TrainOptions = {
  epochs: 4,
  batchSize: 64,
  learningRate: 0.01,
  seed: 7,
  hiddenUnits: [16, 8],
};

let tf: Tf;
let preprocessing: Preprocessing;
let x: Float32Array;
let y: Float32Array;

beforeAll(async () => {
  ({ tf } = await loadTensorflow('cpu'));
  const train = syntheticLogisticData(N, DIM, 1);
  preprocessing = fitPreprocessing(train.featureNames, train.x, N);
  x = applyPreprocessing(preprocessing, train.x, N);
  y = train.y;
});

/** Trains with OPTIONS, keeping every epoch report; `from` resumes after that report. */
async function train(overrides: Partial<TrainOptions> = {}, from?: EpochReport) {
  const reports: EpochReport[] = [];
  const tensorCounts: number[] = [];
  const result = await trainModel({
    tf,
    x,
    y,
    n: N,
    dim: DIM,
    options: { ...OPTIONS, ...overrides },
    // A copy, as if the checkpoint had been stored and read back by another process.
    resumeFrom: from && { epoch: from.epoch, state: Buffer.from(from.state) },
    onEpochEnd: async (report) => {
      reports.push(report);
      tensorCounts.push(tf.memory().numTensors);
    },
  });
  return { ...result, reports, tensorCounts };
}

function weightsOf(model: { getWeights(): { dataSync(): ArrayLike<number> }[] }): number[][] {
  return model.getWeights().map((w) => Array.from(w.dataSync()));
}

describe('trainModel', () => {
  it('resumed from the epoch-2 checkpoint, ends bit-identical to an uninterrupted run', async () => {
    const straight = await train();
    const firstHalf = await train({ epochs: 2 });
    const checkpoint = firstHalf.reports[1];
    if (!checkpoint) throw new Error('expected a report after epoch 2');
    const resumed = await train({}, checkpoint);

    expect(resumed.resumedFromEpoch).toBe(2);
    expect(resumed.epochsRun).toBe(2);
    expect(resumed.reports.map((r) => r.epoch)).toEqual([3, 4]);
    expect(weightsOf(resumed.model)).toEqual(weightsOf(straight.model));
    // The whole checkpoint (weights, Adam moments and step) matches too, byte for byte.
    expect(resumed.reports[1]?.state.equals(straight.reports[3]?.state ?? Buffer.alloc(0))).toBe(
      true,
    );
    expect(resumed.finalLoss).toBe(straight.finalLoss);

    for (const run of [straight, firstHalf, resumed]) run.model.dispose();
  });

  it('learns the logistic rule: held-out AUC above 0.8 and a falling loss', async () => {
    const before = tf.memory().numTensors;
    const run = await train();
    const losses = run.reports.map((r) => r.loss);
    expect(losses[3]).toBeLessThan(losses[0] ?? 0);
    expect(run.examplesPerSecond).toBeGreaterThan(0);

    const heldOut = syntheticLogisticData(5_000, DIM, 2);
    const scorer = await fromArtifact(tf, await toArtifact(tf, run.model, preprocessing));
    expect(auc(heldOut.y, scorer.predict(heldOut.x, 5_000))).toBeGreaterThan(0.8);

    scorer.dispose();
    run.model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('holds the same number of tensors after every epoch', async () => {
    const run = await train({ epochs: 5 });
    expect(new Set(run.tensorCounts).size).toBe(1);
    run.model.dispose();
  });

  it('refuses a checkpoint from a run with other hyperparameters, naming the difference', async () => {
    const first = await train({ epochs: 1 });
    const checkpoint = first.reports[0];
    if (!checkpoint) throw new Error('expected a report after epoch 1');
    first.model.dispose();
    const before = tf.memory().numTensors;

    await expect(train({ learningRate: 0.02 }, checkpoint)).rejects.toThrow(
      /checkpoint was trained with learningRate=0.01; this run has learningRate=0.02/,
    );
    await expect(train({}, { ...checkpoint, epoch: 2 })).rejects.toThrow(
      /resumeFrom.epoch is 2; the checkpoint was taken after 1/,
    );
    expect(tf.memory().numTensors).toBe(before);
  });

  it('stops with TrainingCancelled when asked to, leaving no tensors behind', async () => {
    const before = tf.memory().numTensors;
    let polls = 0;
    const run = trainModel({
      tf,
      x,
      y,
      n: N,
      dim: DIM,
      options: OPTIONS,
      onEpochEnd: async () => {},
      isCancelled: () => ++polls > 40,
    });
    await expect(run).rejects.toBeInstanceOf(TrainingCancelled);
    await expect(run).rejects.toThrow(/cancelled during epoch 2/);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('the model artifact', () => {
  it('builds identical models from the same seed', () => {
    const a = buildModel(tf, DIM, { hiddenUnits: [4, 3], seed: 11 });
    const b = buildModel(tf, DIM, { hiddenUnits: [4, 3], seed: 11 });
    const c = buildModel(tf, DIM, { hiddenUnits: [4, 3], seed: 12 });
    expect(weightsOf(a)).toEqual(weightsOf(b));
    expect(weightsOf(a)).not.toEqual(weightsOf(c));
    for (const model of [a, b, c]) model.dispose();
  });

  it('round-trips to the same predictions and the same sha256', async () => {
    const run = await train({ epochs: 1 });
    const artifact = await toArtifact(tf, run.model, preprocessing);
    const raw = syntheticLogisticData(300, DIM, 3).x;

    const direct = tf.tidy(() => {
      const input = tf.tensor2d(applyPreprocessing(preprocessing, raw, 300), [300, DIM]);
      const output = run.model.predict(input);
      if (Array.isArray(output)) throw new Error('expected one model output');
      return Array.from(output.dataSync());
    });
    const scorer = await fromArtifact(tf, artifact);
    expect(Array.from(scorer.predict(raw, 300))).toEqual(direct);

    const reloaded = await loadModel(tf, artifact);
    const again = await toArtifact(tf, reloaded, preprocessing);
    expect(again.sha256).toBe(artifact.sha256);
    expect(again.weights.equals(artifact.weights)).toBe(true);
    expect(artifact.sha256).toMatch(/^[0-9a-f]{64}$/);

    for (const disposable of [scorer, reloaded, run.model]) disposable.dispose();
  });

  it('refuses an artifact whose content does not match its sha256', async () => {
    const model = buildModel(tf, DIM, { hiddenUnits: [4], seed: 1 });
    const artifact = await toArtifact(tf, model, preprocessing);
    model.dispose();
    const weights = Buffer.from(artifact.weights);
    weights[0] = (weights[0] ?? 0) ^ 1;

    await expect(fromArtifact(tf, { ...artifact, weights })).rejects.toThrow(
      /sha256 mismatch: stored [0-9a-f]{64}, content [0-9a-f]{64}/,
    );
    const shifted = { ...preprocessing, mean: preprocessing.mean.map((m) => m + 1) };
    await expect(fromArtifact(tf, { ...artifact, preprocessing: shifted })).rejects.toThrow(
      /sha256 mismatch/,
    );
  });
});
