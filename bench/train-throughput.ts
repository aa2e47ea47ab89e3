/**
 * Training throughput of the ranking MLP on synthetic data: examples per second for one epoch
 * of the production shape ([64, 32] hidden units, batch 512) on ~80,000 rows × 9 features.
 * Run alone with `npx tsx bench/train-throughput.ts [auto|tensorflow|wasm|cpu]`; the backend
 * defaults to POPS_TRAIN_BACKEND, then auto. One backend per process, as in the worker.
 */
import { pathToFileURL } from 'node:url';
import { type BackendName, type BackendPreference, loadTensorflow } from '../domain/ml/backend.js';
import { applyPreprocessing, fitPreprocessing } from '../domain/ml/model.js';
import { mulberry32 } from '../common/random.js';
import { trainModel } from '../domain/ml/trainer.js';

/** The size and shape of one throughput measurement. */
export interface ThroughputOptions {
  preference: BackendPreference;
  rows: number;
  features: number;
  hiddenUnits: number[];
  batchSize: number;
}

/** A throughput figure and the backend it was measured on. */
export interface ThroughputResult {
  backend: BackendName;
  examplesPerSecond: number;
}

/** Rows of features with labels drawn from a fixed logistic rule, so a model can learn them. */
export interface SyntheticData {
  x: Float32Array;
  y: Float32Array;
  featureNames: string[];
}

const DEFAULTS: ThroughputOptions = {
  preference: 'auto',
  rows: 80_000,
  features: 9,
  hiddenUnits: [64, 32],
  batchSize: 512,
};

/**
 * n rows of d ≥ 4 features, feature j ~ Normal(j, (j + 1)²), and a 0/1 label drawn with
 * P(y = 1) = sigmoid(2·z0 − 1.5·z1 + z2·z3), zj being feature j standardized. The z2·z3 term
 * makes the rule non-linear, so a hidden layer helps; the same seed gives the same data.
 */
export function syntheticLogisticData(n: number, d: number, seed: number): SyntheticData {
  if (d < 4) throw new Error(`syntheticLogisticData needs d >= 4 features; got ${d}`);
  const random = mulberry32(seed);
  // Box–Muller; 1 - random() keeps the log's argument in (0, 1].
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());

  const x = new Float32Array(n * d);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: d }, normal);
    z.forEach((value, j) => (x[i * d + j] = value * (j + 1) + j));
    const [z0 = 0, z1 = 0, z2 = 0, z3 = 0] = z;
    const logit = 2 * z0 - 1.5 * z1 + z2 * z3;
    y[i] = random() < 1 / (1 + Math.exp(-logit)) ? 1 : 0;
  }
  return { x, y, featureNames: Array.from({ length: d }, (_, j) => `f${j}`) };
}

/** Trains one epoch on synthetic data and returns examples per second of training. */
export async function measureTrainThroughput(
  options: Partial<ThroughputOptions> = {},
): Promise<ThroughputResult> {
  const { preference, rows, features, hiddenUnits, batchSize } = { ...DEFAULTS, ...options };
  const { tf, backend } = await loadTensorflow(preference);
  const data = syntheticLogisticData(rows, features, 1);
  const x = applyPreprocessing(fitPreprocessing(data.featureNames, data.x, rows), data.x, rows);

  const result = await trainModel({
    tf,
    x,
    y: data.y,
    n: rows,
    dim: features,
    options: { epochs: 1, batchSize, learningRate: 1e-3, seed: 1, hiddenUnits },
    onEpochEnd: async () => {},
  });
  result.model.dispose();
  return { backend, examplesPerSecond: result.examplesPerSecond };
}

function preferenceFrom(value: string | undefined): BackendPreference {
  const choices = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
  const found = choices.find((choice) => choice === (value ?? 'auto'));
  if (!found) throw new Error(`backend must be one of ${choices.join(', ')}; got ${value}`);
  return found;
}

async function main(): Promise<void> {
  const preference = preferenceFrom(process.argv[2] ?? process.env['POPS_TRAIN_BACKEND']);
  const { backend, examplesPerSecond } = await measureTrainThroughput({ preference });
  const { rows, features, hiddenUnits, batchSize } = DEFAULTS;
  const setup = `${rows} rows × ${features} features, MLP [${hiddenUnits.join(', ')}]`;
  console.log(
    `train throughput on ${backend} (${setup}, batch ${batchSize}): ` +
      `${Math.round(examplesPerSecond)} examples/s`,
  );
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) await main();
