/**
 * A plain-JavaScript forward pass of a ranking artifact, for serving on a process whose
 * TensorFlow.js backend is the plain-JS cpu one: the artifacts domain/ml/model.ts writes are a
 * Sequential stack of Dense layers (relu, then one sigmoid unit), and scoring 100 candidates
 * through tfjs-cpu costs 1.5 to 3 ms of per-call overhead, these loops about 0.5 ms (the wasm
 * backend, when the process has it, about 0.15 ms: domain/decide/models.ts prefers it). The
 * weights are the artifact's float32 values; sums run in float64, so a score differs from the
 * model's own (fromArtifact) by float32 rounding only (test/decide.test.ts compares them). An
 * artifact of any other shape is not compiled here (undefined).
 */
import { artifactSha256, type ModelArtifact, type Scorer } from '../ml/model.js';

type Activation = 'relu' | 'sigmoid' | 'linear';

interface Layer {
  inputs: number;
  units: number;
  /** Row-major [inputs, units], as tfjs stores a Dense kernel. */
  kernel: Float32Array;
  bias: Float32Array;
  activation: Activation;
}

interface DenseConfig {
  name?: unknown;
  units?: unknown;
  activation?: unknown;
  use_bias?: unknown;
}

function denseConfigs(topology: unknown): DenseConfig[] | undefined {
  const t = topology as { class_name?: unknown; config?: { layers?: unknown } } | null;
  if (!t || t.class_name !== 'Sequential' || !Array.isArray(t.config?.layers)) return undefined;
  const layers = t.config.layers as Array<{ class_name?: unknown; config?: DenseConfig }>;
  if (layers.some((l) => l.class_name !== 'Dense' || !l.config)) return undefined;
  return layers.map((l) => l.config as DenseConfig);
}

function isActivation(value: unknown): value is Activation {
  return value === 'relu' || value === 'sigmoid' || value === 'linear';
}

/** The artifact's weights by name, as float32 views of its buffer. */
function weightsOf(artifact: ModelArtifact): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const bytes = new Uint8Array(artifact.weights);
  let offset = 0;
  for (const spec of artifact.weightSpecs) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size * 4);
    for (let i = 0; i < size; i++) data[i] = view.getFloat32(i * 4, true);
    out.set(spec.name, { shape: spec.shape, data });
    offset += size * 4;
  }
  if (offset !== bytes.length) return new Map();
  return out;
}

function layersOf(artifact: ModelArtifact): Layer[] | undefined {
  const configs = denseConfigs(artifact.topology);
  if (!configs || configs.length === 0) return undefined;
  if (artifact.weightSpecs.some((s) => s.dtype !== 'float32')) return undefined;
  const weights = weightsOf(artifact);
  let inputs = artifact.preprocessing.featureNames.length;
  const layers: Layer[] = [];
  for (const c of configs) {
    if (typeof c.name !== 'string' || typeof c.units !== 'number' || !isActivation(c.activation)) {
      return undefined;
    }
    const kernel = weights.get(`${c.name}/kernel`);
    const bias = c.use_bias === false ? undefined : weights.get(`${c.name}/bias`);
    if (!kernel || kernel.shape[0] !== inputs || kernel.shape[1] !== c.units) return undefined;
    if (c.use_bias !== false && (!bias || bias.shape[0] !== c.units)) return undefined;
    layers.push({
      inputs,
      units: c.units,
      kernel: kernel.data,
      bias: bias?.data ?? new Float32Array(c.units),
      activation: c.activation,
    });
    inputs = c.units;
  }
  return inputs === 1 ? layers : undefined;
}

/**
 * A Scorer computing the artifact's predictions in plain JavaScript, or undefined when the
 * artifact is not a Sequential stack of Dense layers ending in one unit. Throws when the sha256
 * does not match the content (as loadModel does).
 */
export function compileDense(artifact: ModelArtifact): Scorer | undefined {
  const actual = artifactSha256(artifact);
  if (actual !== artifact.sha256) {
    throw new Error(`model artifact sha256 mismatch: stored ${artifact.sha256}, content ${actual}`);
  }
  const layers = layersOf(artifact);
  if (!layers) return undefined;
  const { featureNames, mean, std } = artifact.preprocessing;
  const d = featureNames.length;
  // Scratch rows per layer, reused: predict is synchronous, so no two calls share them at once.
  let scratch: Float64Array[] = [];
  let capacity = 0;

  return {
    featureNames,
    predict(x: Float32Array, n: number): Float32Array {
      if (!Number.isSafeInteger(n) || n < 0 || x.length !== n * d) {
        throw new Error(`expected ${n} rows × ${d} features = ${n * d} values; got ${x.length}`);
      }
      if (n > capacity) {
        capacity = Math.max(n, 2 * capacity, 128);
        scratch = [d, ...layers.map((l) => l.units)].map((w) => new Float64Array(capacity * w));
      }
      let input = standardize(x, n, d, mean, std, scratch[0] ?? new Float64Array(n * d));
      for (let i = 0; i < layers.length; i++) {
        const layer = layers[i] as Layer;
        const out = scratch[i + 1] ?? new Float64Array(n * layer.units);
        forward(layer, input, n, out);
        input = out;
      }
      return Float32Array.from(input.subarray(0, n));
    },
    dispose: () => undefined,
  };
}

/** (x - mean) / std per column, as applyPreprocessing does it: in float64, kept as float32. */
function standardize(
  x: Float32Array,
  n: number,
  d: number,
  mean: readonly number[],
  std: readonly number[],
  out: Float64Array,
): Float64Array {
  for (let j = 0; j < d; j++) {
    const m = mean[j] ?? 0;
    const s = std[j] ?? 1;
    for (let i = 0; i < n; i++) out[i * d + j] = Math.fround(((x[i * d + j] ?? 0) - m) / s);
  }
  return out;
}

/** One Dense layer over n rows into out: activation(input · kernel + bias). */
function forward(layer: Layer, input: Float64Array, n: number, out: Float64Array): void {
  const { inputs, units, kernel, bias } = layer;
  const relu = layer.activation === 'relu';
  for (let i = 0; i < n; i++) {
    const row = i * inputs;
    const o = i * units;
    for (let k = 0; k < units; k++) out[o + k] = bias[k] ?? 0;
    for (let j = 0; j < inputs; j++) {
      const v = input[row + j] ?? 0;
      if (v === 0) continue; // relu zeros, often half of a hidden layer
      const base = j * units;
      for (let k = 0; k < units; k++) out[o + k] = (out[o + k] ?? 0) + v * (kernel[base + k] ?? 0);
    }
    if (relu) {
      for (let k = 0; k < units; k++) {
        const v = out[o + k] ?? 0;
        out[o + k] = v > 0 ? v : 0;
      }
    }
  }
  if (layer.activation === 'sigmoid') {
    for (let i = 0; i < n * units; i++) out[i] = 1 / (1 + Math.exp(-(out[i] ?? 0)));
  }
}
