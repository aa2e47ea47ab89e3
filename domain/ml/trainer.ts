/**
 * Resumable, deterministic training of the ranking model. After each epoch the caller receives a
 * checkpoint (weights + Adam state); resuming from it in a fresh process reproduces, bit for bit on
 * the same backend, the weights an uninterrupted run would have reached.
 *
 * Two choices make that exact: each epoch's shuffle comes from a PRNG seeded by (seed, epoch)
 * alone, and Adam is implemented here rather than taken from tfjs. tfjs's AdamOptimizer keeps
 * beta^t as a float32 running product but recomputes it with pow() in setWeights(), so a resumed
 * run drifts from an uninterrupted one in the last bits.
 */
import os from 'node:os';
import type { LayersModel, NamedTensorMap, Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import { z } from 'zod';
import type { Tf } from './backend.js';
import { buildModel } from './model.js';
import { mulberry32 } from '../../common/random.js';

/** Hyperparameters of one training run; a checkpoint only resumes a run with the same ones. */
export interface TrainOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  hiddenUnits: number[];
}

/** Reported after each completed epoch; `state` is the checkpoint to resume after it. */
export interface EpochReport {
  /** 1-based number of the epoch just completed. */
  epoch: number;
  /** Mean training log loss over the epoch's examples, measured while training. */
  loss: number;
  /** Model weights, Adam moments and step, and the run's hyperparameters (see encodeCheckpoint). */
  state: Buffer;
}

/** A checkpoint to continue from: the epoch it was taken after and its `state`. */
export interface ResumePoint {
  epoch: number;
  state: Buffer;
}

/** The inputs of `trainModel`. */
export interface TrainArgs {
  tf: Tf;
  /** n × dim row-major features, already standardized. */
  x: Float32Array;
  /** n labels, 0 or 1. */
  y: Float32Array;
  n: number;
  dim: number;
  options: TrainOptions;
  resumeFrom?: ResumePoint;
  /** Awaited after each epoch; the caller heartbeats and saves the checkpoint here. */
  onEpochEnd: (report: EpochReport) => Promise<void>;
  /** Polled between batches; when it returns true, training stops with TrainingCancelled. */
  isCancelled?: () => boolean;
}

/** What `trainModel` returns; the caller owns (and must dispose) the model. */
export interface TrainResult {
  model: LayersModel;
  epochsRun: number;
  resumedFromEpoch: number;
  finalLoss: number;
  /** Examples trained per second of training time, excluding the onEpochEnd callbacks. */
  examplesPerSecond: number;
}

/** Thrown by trainModel when isCancelled() turns true; the last checkpoint saved remains valid. */
export class TrainingCancelled extends Error {
  constructor(readonly epoch: number) {
    super(`training cancelled during epoch ${epoch}`);
    this.name = 'TrainingCancelled';
  }
}

/**
 * Adam's constants as in Kingma & Ba (2015) and Keras; epsilon is added to sqrt(v) before the
 * bias-corrected step size is applied (the "epsilon hat" form TensorFlow uses).
 */
export const ADAM = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 } as const;

const CHECKPOINT_FORMAT = 'pops-train-checkpoint/1';

/** Everything a run's checkpoints must agree on, besides the weight shapes. */
interface RunIdentity {
  n: number;
  dim: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  hiddenUnits: number[];
}

const RUN_IDENTITY_KEYS = ['n', 'dim', 'batchSize', 'learningRate', 'seed', 'hiddenUnits'] as const;

const checkpointHeader = z.object({
  format: z.literal(CHECKPOINT_FORMAT),
  n: z.number().int(),
  dim: z.number().int(),
  batchSize: z.number().int(),
  learningRate: z.number(),
  seed: z.number().int(),
  hiddenUnits: z.array(z.number().int()),
  epoch: z.number().int().min(0),
  adamStep: z.number().int().min(0),
  // JSON has no NaN: a diverged loss is written as null.
  loss: z.number().nullable(),
  shapes: z.array(z.array(z.number().int().min(0))),
});

type CheckpointHeader = z.infer<typeof checkpointHeader>;

/** The model, its trainable variables, Adam's moments and step count, and the last epoch loss. */
interface TrainingState {
  model: LayersModel;
  weights: Variable[];
  m: Variable[];
  v: Variable[];
  adamStep: number;
  loss: number;
}

/** One mini-batch gathered from the shuffled rows. */
interface Batch {
  rows: number;
  features: Float32Array;
  labels: Float32Array;
}

/**
 * Trains the MLP with Adam on log loss, epoch by epoch, from scratch or from a checkpoint.
 * Throws when the inputs are inconsistent, the checkpoint belongs to another run, or on
 * cancellation (TrainingCancelled); the model is disposed in each of those cases.
 */
export async function trainModel(args: TrainArgs): Promise<TrainResult> {
  const { tf, n, dim, options } = args;
  assertTrainArgs(args);

  const model = buildModel(tf, dim, { hiddenUnits: options.hiddenUnits, seed: options.seed });
  const identity: RunIdentity = { n, dim, ...runOptions(options) };
  let state: TrainingState | undefined;
  try {
    state = startState(tf, model, identity, args.resumeFrom);
    const startEpoch = args.resumeFrom?.epoch ?? 0;
    let trainingMs = 0;

    for (let epoch = startEpoch + 1; epoch <= options.epochs; epoch++) {
      const started = performance.now();
      state.loss = await runEpoch(args, state, epoch);
      trainingMs += performance.now() - started;
      const checkpoint = encodeCheckpoint(identity, state, epoch);
      await args.onEpochEnd({ epoch, loss: state.loss, state: checkpoint });
    }

    const epochsRun = options.epochs - startEpoch;
    return {
      model,
      epochsRun,
      resumedFromEpoch: startEpoch,
      finalLoss: state.loss,
      examplesPerSecond: trainingMs > 0 ? (epochsRun * n) / (trainingMs / 1000) : 0,
    };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    if (state) tf.dispose([...state.m, ...state.v]);
  }
}

/** The order in which an epoch visits the n rows; depends on (seed, epoch) and nothing else. */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const random = mulberry32(mix32(seed, epoch));
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const swap = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = swap;
  }
  return order;
}

/** murmur3's finalizer over (seed, epoch): neighbouring epochs get unrelated PRNG streams. */
function mix32(seed: number, epoch: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch >>> 0, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

async function runEpoch(args: TrainArgs, state: TrainingState, epoch: number): Promise<number> {
  const { tf, x, y, n, dim, options } = args;
  const order = epochPermutation(n, options.seed, epoch);
  const losses: Scalar[] = [];
  try {
    for (let start = 0; start < n; start += options.batchSize) {
      // Yield so that a cancellation delivered with a heartbeat response can arrive mid-epoch.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (args.isCancelled?.()) throw new TrainingCancelled(epoch);

      const batch = gatherBatch(x, y, dim, order.subarray(start, start + options.batchSize));
      losses.push(trainStep(tf, state, batch, dim, options.learningRate));
    }
    return await meanLoss(tf, losses, options.batchSize, n);
  } finally {
    tf.dispose(losses);
  }
}

function gatherBatch(x: Float32Array, y: Float32Array, dim: number, rows: Uint32Array): Batch {
  const features = new Float32Array(rows.length * dim);
  const labels = new Float32Array(rows.length);
  rows.forEach((row, i) => {
    features.set(x.subarray(row * dim, (row + 1) * dim), i * dim);
    labels[i] = y[row] ?? 0;
  });
  return { rows: rows.length, features, labels };
}

/** One forward/backward pass and Adam update; returns the batch's mean loss as a kept scalar. */
function trainStep(
  tf: Tf,
  state: TrainingState,
  batch: Batch,
  dim: number,
  learningRate: number,
): Scalar {
  return tf.tidy(() => {
    const xs = tf.tensor2d(batch.features, [batch.rows, dim]);
    const ys = tf.tensor2d(batch.labels, [batch.rows, 1]);
    const { value, grads } = tf.variableGrads(() => {
      const output = state.model.apply(xs, { training: true });
      if (!(output instanceof tf.Tensor)) throw new Error('the model must have one tensor output');
      return tf.losses.logLoss<Tensor, Scalar>(ys, output);
    }, state.weights);
    applyAdam(tf, state, grads, learningRate);
    return value;
  });
}

function applyAdam(
  tf: Tf,
  state: TrainingState,
  grads: NamedTensorMap,
  learningRate: number,
): void {
  const { beta1, beta2, epsilon } = ADAM;
  state.adamStep += 1;
  // The bias corrections are computed in float64 from the step count, so they are the same
  // numbers whether the run was resumed or not.
  const t = state.adamStep;
  const stepSize = (learningRate * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t);

  state.weights.forEach((w, i) => {
    const g = grads[w.name];
    const m = state.m[i];
    const v = state.v[i];
    if (!g || !m || !v) throw new Error(`no gradient or Adam moment for ${w.name}`);
    m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
    v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
    w.assign(tf.sub(w, tf.mul(tf.div(m, tf.add(tf.sqrt(v), epsilon)), stepSize)));
  });
}

/** Mean loss per example: every batch but the last holds batchSize rows. */
async function meanLoss(tf: Tf, losses: Scalar[], batchSize: number, n: number): Promise<number> {
  const stacked = tf.stack(losses);
  try {
    const values = await stacked.data();
    let sum = 0;
    values.forEach((loss, b) => (sum += loss * Math.min(batchSize, n - b * batchSize)));
    return sum / n;
  } finally {
    stacked.dispose();
  }
}

function startState(
  tf: Tf,
  model: LayersModel,
  identity: RunIdentity,
  resumeFrom: ResumePoint | undefined,
): TrainingState {
  const weights = model.trainableWeights.map((w) => {
    const value = w.read();
    if (value instanceof tf.Variable) return value as Variable;
    throw new Error(`model weight ${w.name} is not a variable`);
  });
  if (!resumeFrom) {
    const zeros = () => weights.map((w) => tf.tidy(() => tf.variable(tf.zerosLike(w), false)));
    return { model, weights, m: zeros(), v: zeros(), adamStep: 0, loss: NaN };
  }

  const { header, values } = decodeCheckpoint(resumeFrom.state);
  assertResumable(header, identity, resumeFrom.epoch, weights);
  const restored = splitValues(values, header.shapes);
  weights.forEach((w, i) =>
    tf.tidy(() => w.assign(tf.tensor(restored[i] ?? [], w.shape as number[]))),
  );
  const moments = (offset: number) =>
    weights.map((w, i) =>
      tf.tidy(() => tf.variable(tf.tensor(restored[offset + i] ?? [], w.shape as number[]), false)),
    );
  const m = moments(weights.length);
  const v = moments(2 * weights.length);
  return { model, weights, m, v, adamStep: header.adamStep, loss: header.loss ?? NaN };
}

/**
 * The checkpoint layout: a uint32 LE byte length, that many bytes of JSON header (format, run
 * identity, epoch, Adam step, loss, shapes), then float32 LE values: every weight, then every
 * first moment, then every second moment, each in the model's trainable-weight order.
 */
function encodeCheckpoint(identity: RunIdentity, state: TrainingState, epoch: number): Buffer {
  assertLittleEndian();
  const header: CheckpointHeader = {
    format: CHECKPOINT_FORMAT,
    ...identity,
    epoch,
    adamStep: state.adamStep,
    loss: Number.isFinite(state.loss) ? state.loss : null,
    shapes: state.weights.map((w) => [...w.shape]),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);

  const tensors = [...state.weights, ...state.m, ...state.v];
  const values = tensors.map((t) => {
    const data = t.dataSync<'float32'>();
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  });
  return Buffer.concat([length, json, ...values]);
}

function decodeCheckpoint(state: Buffer): { header: CheckpointHeader; values: Float32Array } {
  assertLittleEndian();
  const length = state.length >= 4 ? state.readUInt32LE(0) : -1;
  if (length < 0 || 4 + length > state.length) {
    throw new Error(`training checkpoint is truncated (${state.length} bytes)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(state.subarray(4, 4 + length).toString('utf8'));
  } catch (error) {
    throw new Error(`training checkpoint header is not JSON: ${String(error)}`);
  }
  const parsed = checkpointHeader.safeParse(json);
  if (!parsed.success) {
    throw new Error(`training checkpoint header is invalid: ${parsed.error.message}`);
  }

  const body = state.subarray(4 + length);
  if (body.length % 4 !== 0) throw new Error('training checkpoint values are not float32');
  // Copy into a fresh buffer: a Float32Array view needs a 4-byte-aligned offset.
  return { header: parsed.data, values: new Float32Array(new Uint8Array(body).buffer) };
}

function assertResumable(
  header: CheckpointHeader,
  identity: RunIdentity,
  epoch: number,
  weights: Variable[],
): void {
  if (header.epoch !== epoch) {
    throw new Error(`resumeFrom.epoch is ${epoch}; the checkpoint was taken after ${header.epoch}`);
  }
  for (const key of RUN_IDENTITY_KEYS) {
    const [was, now] = [JSON.stringify(header[key]), JSON.stringify(identity[key])];
    if (was !== now) {
      throw new Error(`checkpoint was trained with ${key}=${was}; this run has ${key}=${now}`);
    }
  }

  const [was, now] = [header.shapes, weights.map((w) => w.shape)].map((s) => JSON.stringify(s));
  if (was !== now) {
    throw new Error(`checkpoint weight shapes ${was} differ from the model's ${now}`);
  }
}

/** Cuts the flat values into 3 × shapes.length arrays (weights, first, second moments). */
function splitValues(values: Float32Array, shapes: number[][]): Float32Array[] {
  const sizes = shapes.map((shape) => shape.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (values.length !== 3 * total) {
    throw new Error(`training checkpoint holds ${values.length} values; expected ${3 * total}`);
  }

  const parts: Float32Array[] = [];
  let offset = 0;
  for (const size of [...sizes, ...sizes, ...sizes]) {
    parts.push(values.subarray(offset, offset + size));
    offset += size;
  }
  return parts;
}

function runOptions(options: TrainOptions): Omit<RunIdentity, 'n' | 'dim'> {
  const { batchSize, learningRate, seed, hiddenUnits } = options;
  return { batchSize, learningRate, seed, hiddenUnits: [...hiddenUnits] };
}

function assertTrainArgs(args: TrainArgs): void {
  const { x, y, n, dim, options, resumeFrom } = args;
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(dim) || dim < 1) {
    throw new Error(`trainModel needs n >= 1 rows and dim >= 1 features; got n=${n}, dim=${dim}`);
  }
  if (x.length !== n * dim) {
    throw new Error(`x holds ${x.length} values; expected n × dim = ${n * dim}`);
  }
  if (y.length !== n) throw new Error(`y holds ${y.length} labels; expected n = ${n}`);
  const badLabel = y.findIndex((label) => label !== 0 && label !== 1);
  if (badLabel >= 0) throw new Error(`label must be 0 or 1; got ${y[badLabel]} at row ${badLabel}`);

  for (const key of ['epochs', 'batchSize'] as const) {
    if (!Number.isSafeInteger(options[key]) || options[key] < 1) {
      throw new Error(`${key} must be a positive integer; got ${options[key]}`);
    }
  }
  if (!(options.learningRate > 0 && Number.isFinite(options.learningRate))) {
    throw new Error(`learningRate must be a positive number; got ${options.learningRate}`);
  }
  if (resumeFrom && !(resumeFrom.epoch >= 0 && resumeFrom.epoch <= options.epochs)) {
    throw new Error(`resumeFrom.epoch must be in [0, ${options.epochs}]; got ${resumeFrom.epoch}`);
  }
}

function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('training checkpoints need a little-endian host');
}
