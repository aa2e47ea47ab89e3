/**
 * The ranking model: feature standardization, a seeded MLP with a sigmoid output, and the
 * self-describing artifact a trained model is stored as. The artifact is content-addressed: its
 * sha256 covers everything that determines a prediction, so equal hashes mean equal scores.
 */
import { createHash } from 'node:crypto';
import type { io, LayersModel, Tensor } from '@tensorflow/tfjs';
import { canonicalJson } from '../../common/canonical-json.js';
import type { Tf } from './backend.js';

/**
 * Below this standard deviation a feature counts as constant: dividing by the floor maps it to 0
 * instead of dividing by zero.
 */
export const STD_FLOOR = 1e-6;

/** Rows scored per tensor in `predict`; bounds memory for large candidate sets. */
export const PREDICT_BATCH_ROWS = 8192;

/** Per-feature standardization fitted on the training rows: x' = (x - mean) / std. */
export interface Preprocessing {
  featureNames: string[];
  mean: number[];
  std: number[];
}

/** The shape of the MLP and the seed of its initial weights. */
export interface ModelShape {
  hiddenUnits: number[];
  seed: number;
}

/** One weight tensor in `ModelArtifact.weights`, in storage order. */
export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
}

/** A trained model as stored: enough to rebuild it in any process, with a content hash. */
export interface ModelArtifact {
  /** The tfjs-layers model topology (Keras JSON format). */
  topology: unknown;
  weightSpecs: WeightSpec[];
  /** The weights of `weightSpecs`, concatenated, little-endian float32. */
  weights: Buffer;
  preprocessing: Preprocessing;
  /** See `artifactSha256`. */
  sha256: string;
}

/** A loaded model that scores raw (not yet standardized) feature rows. */
export interface Scorer {
  readonly featureNames: readonly string[];
  /** Probabilities for n row-major rows of `featureNames.length` raw features. */
  predict(x: Float32Array, n: number): Float32Array;
  dispose(): void;
}

/**
 * Fits standardization on n row-major rows of x (population std, floored at STD_FLOOR).
 * Throws when the shape is inconsistent or a feature value is not finite.
 */
export function fitPreprocessing(
  featureNames: string[],
  x: Float32Array,
  n: number,
): Preprocessing {
  const d = featureNames.length;
  assertMatrix(x, n, d);
  if (n === 0) throw new Error('fitPreprocessing needs at least one row; got 0');

  const mean = new Array<number>(d).fill(0);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) mean[j] = (mean[j] ?? 0) + finiteFeature(featureNames, x, i, j);
  }
  for (let j = 0; j < d; j++) mean[j] = (mean[j] ?? 0) / n;

  // A second pass over centered values avoids the cancellation of sum(x^2) - n * mean^2.
  const sumSquares = new Array<number>(d).fill(0);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const centered = (x[i * d + j] ?? 0) - (mean[j] ?? 0);
      sumSquares[j] = (sumSquares[j] ?? 0) + centered * centered;
    }
  }

  const std = sumSquares.map((s) => Math.max(STD_FLOOR, Math.sqrt(s / n)));
  return { featureNames: [...featureNames], mean, std };
}

/** Returns a standardized copy of n row-major rows; x itself is left untouched. */
export function applyPreprocessing(
  preprocessing: Preprocessing,
  x: Float32Array,
  n: number,
): Float32Array {
  const { featureNames, mean, std } = preprocessing;
  const d = featureNames.length;
  assertMatrix(x, n, d);

  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const k = i * d + j;
      out[k] = ((x[k] ?? 0) - (mean[j] ?? 0)) / (std[j] ?? 1);
    }
  }
  return out;
}

/**
 * An MLP of Dense relu layers and one sigmoid unit. Layer names and initializer seeds are fixed,
 * so two builds with the same arguments have identical topology and identical initial weights
 * (kernels Glorot-uniform with seed + layer index, biases zero).
 */
export function buildModel(tf: Tf, inputDim: number, shape: ModelShape): LayersModel {
  assertPositiveInteger('inputDim', inputDim);
  shape.hiddenUnits.forEach((units, i) => assertPositiveInteger(`hiddenUnits[${i}]`, units));
  if (!Number.isSafeInteger(shape.seed)) {
    throw new Error(`seed must be an integer; got ${shape.seed}`);
  }

  const model = tf.sequential({ name: 'pops_ranker' });
  const units = [...shape.hiddenUnits, 1];
  units.forEach((width, i) => {
    const isOutput = i === units.length - 1;
    model.add(
      tf.layers.dense({
        name: isOutput ? 'score' : `hidden_${i + 1}`,
        units: width,
        activation: isOutput ? 'sigmoid' : 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: shape.seed + i }),
        ...(i === 0 ? { inputShape: [inputDim] } : {}),
      }),
    );
  });
  return model;
}

/** Serializes a model and its preprocessing into a ModelArtifact with its sha256. */
export async function toArtifact(
  tf: Tf,
  model: LayersModel,
  preprocessing: Preprocessing,
): Promise<ModelArtifact> {
  let saved: io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (!saved?.modelTopology || !saved.weightSpecs || !saved.weightData) {
    throw new Error('tfjs model.save produced no topology or weights');
  }

  const parts = {
    topology: saved.modelTopology,
    weightSpecs: saved.weightSpecs.map(({ name, shape, dtype }) => ({ name, shape, dtype })),
    weights: Buffer.from(tf.io.CompositeArrayBuffer.join(saved.weightData)),
    // A copy with exactly the hashed fields, so later edits or extra properties cannot drift.
    preprocessing: {
      featureNames: [...preprocessing.featureNames],
      mean: [...preprocessing.mean],
      std: [...preprocessing.std],
    },
  };
  return { ...parts, sha256: artifactSha256(parts) };
}

/**
 * The artifact's content hash: sha256 of the RFC 8785 canonical JSON of
 * `{ format, topology, weightSpecs, preprocessing, weightsSha256 }`, where weightsSha256 is the
 * hex sha256 of the weight bytes. Hashing the weights separately keeps the JSON small.
 */
export function artifactSha256(parts: Omit<ModelArtifact, 'sha256'>): string {
  const canonical = canonicalJson({
    format: 'pops-model/1',
    topology: parts.topology,
    weightSpecs: parts.weightSpecs,
    preprocessing: parts.preprocessing,
    weightsSha256: sha256Hex(parts.weights),
  });
  return sha256Hex(canonical);
}

/**
 * Rebuilds a model from its artifact and wraps it as a Scorer that standardizes raw features.
 * Throws as loadModel does.
 */
export async function fromArtifact(tf: Tf, artifact: ModelArtifact): Promise<Scorer> {
  return makeScorer(tf, await loadModel(tf, artifact), artifact.preprocessing);
}

/**
 * Rebuilds the tfjs model of an artifact, in memory. Throws when the sha256 does not match the
 * content, or the artifact is not one this module wrote.
 */
export async function loadModel(tf: Tf, artifact: ModelArtifact): Promise<LayersModel> {
  const actual = artifactSha256(artifact);
  if (actual !== artifact.sha256) {
    throw new Error(`model artifact sha256 mismatch: stored ${artifact.sha256}, content ${actual}`);
  }

  return tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: topologyObject(artifact.topology),
      weightSpecs: artifact.weightSpecs.map(float32Spec),
      weightData: new Uint8Array(artifact.weights).buffer,
    }),
  );
}

function makeScorer(tf: Tf, model: LayersModel, preprocessing: Preprocessing): Scorer {
  const d = preprocessing.featureNames.length;
  const scoreBatch = (batch: Float32Array, rows: number): Float32Array => {
    const scores = tf.tidy(() => {
      const output = model.predict(tf.tensor2d(batch, [rows, d]), { batchSize: rows });
      return singleOutput(output);
    });
    try {
      return scores.dataSync<'float32'>();
    } finally {
      scores.dispose();
    }
  };

  return {
    featureNames: preprocessing.featureNames,
    predict(x: Float32Array, n: number): Float32Array {
      const standardized = applyPreprocessing(preprocessing, x, n);
      const out = new Float32Array(n);
      for (let start = 0; start < n; start += PREDICT_BATCH_ROWS) {
        const rows = Math.min(PREDICT_BATCH_ROWS, n - start);
        out.set(scoreBatch(standardized.subarray(start * d, (start + rows) * d), rows), start);
      }
      return out;
    },
    dispose: () => model.dispose(),
  };
}

function singleOutput(output: Tensor | Tensor[]): Tensor {
  if (Array.isArray(output)) throw new Error(`expected one model output; got ${output.length}`);
  return output.reshape([-1]);
}

function topologyObject(topology: unknown): object {
  if (topology === null || typeof topology !== 'object' || Array.isArray(topology)) {
    throw new Error('model artifact topology must be a JSON object');
  }
  return topology;
}

function float32Spec(spec: WeightSpec): { name: string; shape: number[]; dtype: 'float32' } {
  if (spec.dtype !== 'float32') {
    throw new Error(`model weight ${spec.name} has dtype ${spec.dtype}; only float32 is supported`);
  }
  return { name: spec.name, shape: spec.shape, dtype: 'float32' };
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function assertMatrix(x: Float32Array, n: number, d: number): void {
  if (!Number.isSafeInteger(n) || n < 0 || x.length !== n * d) {
    throw new Error(`expected ${n} rows × ${d} features = ${n * d} values; got ${x.length}`);
  }
}

function assertPositiveInteger(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`${what} must be a positive integer; got ${value}`);
  }
}

function finiteFeature(featureNames: string[], x: Float32Array, row: number, col: number): number {
  const value = x[row * featureNames.length + col] ?? NaN;
  if (!Number.isFinite(value)) {
    const name = featureNames[col];
    throw new Error(`feature ${name} is ${value} at row ${row}; fill missing values first`);
  }
  return value;
}
