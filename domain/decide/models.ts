/**
 * Serving models, loaded once per version and kept in the process: a small LRU of versions (the
 * routes of a surface name one or two, a routing change a third). A load reads the version's
 * feature list (model_versions.features, `name@version:window`), its artifact, and the feature
 * definitions, and checks that each feature has been published to the online store at least once;
 * a failed load is remembered for FAILED_LOAD_RETRY_MS, so a broken version costs one attempt per
 * interval instead of one per request. Scoring runs through TensorFlow.js on the process's
 * backend when that is native or wasm, else through the plain-JS Dense pass (domain/decide/dense.ts).
 * The backend is the process's one (domain/ml/backend.ts: one per process, shared with training):
 * the API is given POPS_TRAIN_BACKEND so that serving never picks another than the workers'.
 */
import { readArtifact } from '../../activities/training.js';
import type { Pool } from '../../common/db.js';
import type { FeatureDefinition } from '../features/definition.js';
import { loadDefinitions } from '../features/registry.js';
import { type BackendPreference, loadTensorflow } from '../ml/backend.js';
import { fromArtifact, type ModelArtifact, type Scorer } from '../ml/model.js';
import { splitFeature } from '../drift/store.js';
import { getVersion } from '../registry.js';
import { compileDense } from './dense.js';

/** Versions kept loaded per process. */
export const MODEL_CACHE_SIZE = 4;
/** How long a failed load is answered from memory before it is tried again. */
export const FAILED_LOAD_RETRY_MS = 5000;

/** Why a version cannot decide: the model itself, or the features it reads. */
export class ServingUnavailable extends Error {
  constructor(
    readonly cause: 'model-unavailable' | 'features-unavailable',
    message: string,
  ) {
    super(message);
  }
}

/** One column of a version's feature vector. */
export interface Column {
  /** `name@version:window`. */
  feature: string;
  definition: FeatureDefinition;
  /** The window's position in the definition's windows. */
  window: number;
}

/** A version ready to score. */
export interface LoadedModel {
  model: string;
  version: number;
  columns: Column[];
  scorer: Scorer;
  /** 'dense' (plain JS) or the TensorFlow.js backend. */
  engine: string;
}

interface Slot {
  loading: Promise<LoadedModel>;
  failedAt?: number;
}

/** The per-process cache of loaded versions; see the module comment. */
export class ModelCache {
  private readonly slots = new Map<string, Slot>();

  constructor(
    private readonly pool: Pool,
    private readonly backend: BackendPreference = 'auto',
    private readonly capacity = MODEL_CACHE_SIZE,
  ) {}

  /** The loaded version, loading it once; rejects with ServingUnavailable. */
  get(model: string, version: number): Promise<LoadedModel> {
    const key = `${model}@${version}`;
    const slot = this.slots.get(key);
    if (
      slot &&
      (slot.failedAt === undefined || Date.now() - slot.failedAt < FAILED_LOAD_RETRY_MS)
    ) {
      this.slots.delete(key);
      this.slots.set(key, slot); // most recently used last
      return slot.loading;
    }
    const fresh: Slot = { loading: this.load(model, version) };
    fresh.loading.catch(() => {
      fresh.failedAt = Date.now();
    });
    this.slots.set(key, fresh);
    this.evict();
    return fresh.loading;
  }

  /** The loaded (or failed) versions, least recently used first. */
  keys(): string[] {
    return [...this.slots.keys()];
  }

  /** Disposes every loaded scorer. */
  async close(): Promise<void> {
    const slots = [...this.slots.values()];
    this.slots.clear();
    await Promise.all(slots.map((s) => s.loading.then((m) => m.scorer.dispose()).catch(() => 0)));
  }

  private evict(): void {
    while (this.slots.size > this.capacity) {
      const [oldest] = this.slots.keys();
      if (oldest === undefined) return;
      const slot = this.slots.get(oldest);
      this.slots.delete(oldest);
      // Scoring is synchronous, so no request holds the scorer across this point.
      void slot?.loading.then((m) => m.scorer.dispose()).catch(() => undefined);
    }
  }

  private async load(model: string, version: number): Promise<LoadedModel> {
    const found = await getVersion(this.pool, model, version);
    if (!found) {
      throw new ServingUnavailable(
        'model-unavailable',
        `model "${model}" has no version ${version}`,
      );
    }
    const columns = await this.columns(found.features, `${model} v${version}`);
    let scorer: Scorer;
    let engine: string;
    try {
      const artifact = await readArtifact(this.pool, found.artifactSha256);
      const names = artifact.preprocessing.featureNames;
      if (names.join('\n') !== found.features.join('\n')) {
        throw new Error(`artifact features [${names.join(', ')}] differ from the version's`);
      }
      ({ scorer, engine } = await this.scorerOf(artifact));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new ServingUnavailable(
        'model-unavailable',
        `${model} v${version}: artifact not loaded: ${why}`,
      );
    }
    return { model, version, columns, scorer, engine };
  }

  /**
   * TensorFlow.js where its backend is native or wasm (SIMD kernels: about 0.15 ms of CPU for 100
   * candidates); the plain-JS Dense pass on the cpu backend (several times faster than it) or when
   * TensorFlow.js cannot load.
   */
  private async scorerOf(artifact: ModelArtifact): Promise<{ scorer: Scorer; engine: string }> {
    const loaded = await loadTensorflow(this.backend).catch(() => undefined);
    if (loaded && loaded.backend !== 'cpu') {
      return { scorer: await fromArtifact(loaded.tf, artifact), engine: loaded.backend };
    }
    const dense = compileDense(artifact);
    if (dense) return { scorer: dense, engine: 'dense' };
    if (!loaded) throw new Error('TensorFlow.js is not available and the artifact is not Dense');
    return { scorer: await fromArtifact(loaded.tf, artifact), engine: loaded.backend };
  }

  /** The version's feature columns, each registered and published online at least once. */
  private async columns(features: readonly string[], what: string): Promise<Column[]> {
    try {
      const parts = features.map(splitFeature);
      const definitions = await loadDefinitions(this.pool, parts);
      const columns = parts.map((p, i) => {
        const definition = definitions[i] as FeatureDefinition;
        const window = definition.windows.indexOf(p.window);
        if (window < 0) throw new Error(`feature ${features[i]} has no window "${p.window}"`);
        return { feature: features[i] as string, definition, window };
      });
      const unique = [...new Map(parts.map((p) => [`${p.name}@${p.version}`, p])).values()];
      const { rows } = await this.pool.query<{ name: string; version: number }>(
        `select f.name, f.version from unnest($1::text[], $2::int[]) as f(name, version)
          where not exists (select 1 from feature_online o
                             where o.name = f.name and o.version = f.version)`,
        [unique.map((p) => p.name), unique.map((p) => p.version)],
      );
      if (rows.length > 0) {
        const names = rows.map((r) => `${r.name}@${r.version}`).join(', ');
        throw new Error(`no online values of ${names} (backfill or materialize them)`);
      }
      return columns;
    } catch (err) {
      if (err instanceof ServingUnavailable) throw err;
      const why = err instanceof Error ? err.message : String(err);
      throw new ServingUnavailable('features-unavailable', `${what}: ${why}`);
    }
  }
}
