/**
 * A deliberately broken candidate for canary demos and tests: a version's artifact with the
 * values of each weight tensor permuted by a seeded shuffle (same topology, same preprocessing,
 * same shapes: it loads and scores, badly), stored as a new artifact under its own content hash
 * and registered as a new version of the model.
 */
import { readArtifact } from '../../activities/training.js';
import type { Pool } from '../../common/db.js';
import { seededRandom } from '../decide/replay.js';
import { artifactSha256, type ModelArtifact } from '../ml/model.js';
import { getVersion, type ModelVersion, registerVersion } from '../registry.js';

/** The artifact with each float32 tensor's values shuffled (Fisher–Yates, seeded). */
export function shuffledWeights(artifact: ModelArtifact, seed: number): ModelArtifact {
  const random = seededRandom(seed);
  const bytes = Buffer.from(artifact.weights); // a copy
  const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  let offset = 0;
  for (const spec of artifact.weightSpecs) {
    if (spec.dtype !== 'float32') throw new Error(`weight ${spec.name} is ${spec.dtype}`);
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const tensor = values.subarray(offset, offset + size);
    for (let i = tensor.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      const t = tensor[i] as number;
      tensor[i] = tensor[j] as number;
      tensor[j] = t;
    }
    offset += size;
  }
  if (offset !== values.length) throw new Error('the weight specs do not cover the weights');
  const parts = {
    topology: artifact.topology,
    weightSpecs: artifact.weightSpecs,
    weights: bytes,
    preprocessing: artifact.preprocessing,
  };
  return { ...parts, sha256: artifactSha256(parts) };
}

/**
 * Registers a new version of `model` whose artifact is version `from`'s with shuffled weights;
 * again with the same seed, it answers the version registered the first time.
 */
export async function registerShuffledVersion(
  pool: Pool,
  options: { model: string; from: number; seed: number; actor: string },
): Promise<ModelVersion> {
  const source = await getVersion(pool, options.model, options.from);
  if (!source) throw new Error(`${options.model} has no version ${options.from}`);
  const broken = shuffledWeights(await readArtifact(pool, source.artifactSha256), options.seed);
  await pool.query(
    `insert into model_artifacts (sha256, topology, weight_specs, weights, preprocessing)
     values ($1, $2::jsonb, $3::jsonb, $4, $5::jsonb) on conflict (sha256) do nothing`,
    [
      broken.sha256,
      JSON.stringify(broken.topology),
      JSON.stringify(broken.weightSpecs),
      broken.weights,
      JSON.stringify(broken.preprocessing),
    ],
  );
  const models = await pool.query<{ source: string }>('select source from models where name = $1', [
    options.model,
  ]);
  return registerVersion(pool, {
    model: options.model,
    runKey: `shuffled/${options.model}/v${options.from}/seed-${options.seed}`,
    artifactSha256: broken.sha256,
    trainingSet: {
      setKey: source.setKey,
      source: models.rows[0]?.source ?? '',
      ...source.dataRange,
      trainRows: source.rowCounts.train,
      validateRows: source.rowCounts.validate,
      features: source.features,
    },
    backend: source.backend,
    codeCommit: source.codeCommit,
    metrics: source.metrics,
    baselineMetrics: source.baselineMetrics,
    reason: `version ${options.from} with its weights shuffled (seed ${options.seed}): a broken candidate`,
    workflowId: 'shuffled-weights',
    runId: `seed-${options.seed}`,
    createdBy: options.actor,
  });
}
