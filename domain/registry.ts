/**
 * The model registry: declared models, and versions numbered 1, 2, 3… per model. A version is
 * keyed by the run that produced it, so registering the same run twice returns the first version.
 * Registering points the `candidate` alias at the new version; aliases and their history live in
 * registry-aliases.ts, re-exported here.
 */
import type { Pool, Queryable } from '../common/db.js';
import { withTransaction } from '../common/db.js';
import {
  type AliasMove,
  aliasHistory,
  applyMove,
  getAliases,
  lockModel,
} from './registry-aliases.js';
import type { EvaluationMetrics, TrainingSetSummary } from './retrain.js';
import { CANDIDATE } from './rollback.js';

export {
  type AliasMove,
  aliasHistory,
  getAliases,
  moveAlias,
  moveAliasByHand,
  promoteVersion,
  recordValidation,
  RegistryRefusal,
  rollbackProduction,
  rollbackRefusal,
} from './registry-aliases.js';

export interface ModelVersion {
  model: string;
  version: number;
  runKey: string;
  artifactSha256: string;
  setKey: string;
  backend: string;
  codeCommit: string | null;
  features: string[];
  metrics: EvaluationMetrics;
  baselineMetrics: EvaluationMetrics;
  dataRange: { trainFrom: string; trainUntil: string; validateUntil: string };
  rowCounts: { train: number; validate: number };
  reason: string;
  workflowId: string;
  runId: string;
  createdBy: string;
  createdAt: string;
  /** The drift run that triggered the retraining that made it (null: not triggered by drift). */
  driftRunId: string | null;
  /** Its validation report (null: not validated yet). */
  validation: unknown;
  /** The validation's verdict (null: not validated yet). */
  blessed: boolean | null;
}

export interface NewVersion {
  model: string;
  runKey: string;
  artifactSha256: string;
  trainingSet: TrainingSetSummary;
  backend: string;
  codeCommit: string | null;
  metrics: EvaluationMetrics;
  baselineMetrics: EvaluationMetrics;
  reason: string;
  workflowId: string;
  runId: string;
  createdBy: string;
  /** The drift run that triggered the retraining, if one did. */
  driftRunId?: string | null;
}

interface VersionRow {
  model: string;
  version: number;
  run_key: string;
  artifact_sha256: string;
  set_key: string;
  backend: string;
  code_commit: string | null;
  features: string[];
  metrics: EvaluationMetrics;
  baseline_metrics: EvaluationMetrics;
  data_range: ModelVersion['dataRange'];
  row_counts: ModelVersion['rowCounts'];
  reason: string;
  workflow_id: string;
  run_id: string;
  created_by: string;
  created_at: Date;
  drift_run_id: string | null;
  validation: unknown;
  blessed: boolean | null;
}

function fromRow(row: VersionRow): ModelVersion {
  return {
    model: row.model,
    version: row.version,
    runKey: row.run_key,
    artifactSha256: row.artifact_sha256,
    setKey: row.set_key,
    backend: row.backend,
    codeCommit: row.code_commit,
    features: row.features,
    metrics: row.metrics,
    baselineMetrics: row.baseline_metrics,
    dataRange: row.data_range,
    rowCounts: row.row_counts,
    reason: row.reason,
    workflowId: row.workflow_id,
    runId: row.run_id,
    createdBy: row.created_by,
    createdAt: row.created_at.toISOString(),
    driftRunId: row.drift_run_id,
    validation: row.validation,
    blessed: row.blessed,
  };
}

/**
 * Declares a model over an event source; declaring it again with the same source changes nothing.
 */
export async function declareModel(
  db: Queryable,
  model: { name: string; source: string; description?: string; createdBy: string },
): Promise<{ created: boolean; source: string }> {
  const inserted = await db.query(
    `insert into models (name, source, description, created_by) values ($1, $2, $3, $4)
     on conflict (name) do nothing`,
    [model.name, model.source, model.description ?? '', model.createdBy],
  );
  const found = await db.query<{ source: string }>('select source from models where name = $1', [
    model.name,
  ]);
  return { created: inserted.rowCount === 1, source: found.rows[0]?.source ?? model.source };
}

/**
 * Registers a version and points `candidate` at it (history row keyed `<runKey>/candidate`), or
 * returns the version this run already registered.
 */
export async function registerVersion(pool: Pool, v: NewVersion): Promise<ModelVersion> {
  return withTransaction(pool, async (client) => {
    await lockModel(client, v.model);
    const existing = await client.query<VersionRow>(
      'select * from model_versions where run_key = $1',
      [v.runKey],
    );
    if (existing.rows[0]) return fromRow(existing.rows[0]);
    const set = v.trainingSet;
    const inserted = await client.query<VersionRow>(
      `insert into model_versions (model, version, run_key, artifact_sha256, set_key, backend,
         code_commit, features, metrics, baseline_metrics, data_range, row_counts, reason,
         workflow_id, run_id, created_by, drift_run_id)
       select $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7,
              $8::jsonb, $9::jsonb, $10::jsonb,
              $11::jsonb, $12, $13, $14, $15, $16
         from model_versions where model = $1
       returning *`,
      [
        v.model,
        v.runKey,
        v.artifactSha256,
        set.setKey,
        v.backend,
        v.codeCommit,
        set.features,
        JSON.stringify(v.metrics),
        JSON.stringify(v.baselineMetrics),
        JSON.stringify({
          trainFrom: set.trainFrom,
          trainUntil: set.trainUntil,
          validateUntil: set.validateUntil,
        }),
        JSON.stringify({ train: set.trainRows, validate: set.validateRows }),
        v.reason,
        v.workflowId,
        v.runId,
        v.createdBy,
        v.driftRunId ?? null,
      ],
    );
    const version = fromRow(inserted.rows[0] as VersionRow);
    await applyMove(client, {
      model: v.model,
      alias: CANDIDATE,
      version: version.version,
      kind: 'register',
      actor: v.createdBy,
      reason: `registered version ${version.version}: ${v.reason}`,
      workflowId: v.workflowId,
      moveKey: `${v.runKey}/${CANDIDATE}`,
    });
    return version;
  });
}

/** Every declared model with its latest version number (0 when none). */
export async function listModels(
  db: Queryable,
): Promise<Array<{ name: string; source: string; latestVersion: number; versions: number }>> {
  const result = await db.query<{ name: string; source: string; latest: number; versions: number }>(
    `select m.name, m.source, coalesce(max(v.version), 0)::int as latest,
            count(v.version)::int as versions
       from models m left join model_versions v on v.model = m.name
      group by m.name, m.source order by m.name`,
  );
  return result.rows.map((r) => ({
    name: r.name,
    source: r.source,
    latestVersion: r.latest,
    versions: r.versions,
  }));
}

/** The versions of one model, newest first. */
export async function listVersions(db: Queryable, model: string): Promise<ModelVersion[]> {
  const result = await db.query<VersionRow>(
    'select * from model_versions where model = $1 order by version desc',
    [model],
  );
  return result.rows.map(fromRow);
}

/** One version, or undefined. */
export async function getVersion(
  db: Queryable,
  model: string,
  version: number,
): Promise<ModelVersion | undefined> {
  const result = await db.query<VersionRow>(
    'select * from model_versions where model = $1 and version = $2',
    [model, version],
  );
  return result.rows[0] ? fromRow(result.rows[0]) : undefined;
}

/** Whether the model is declared. */
export async function modelExists(db: Queryable, model: string): Promise<boolean> {
  const result = await db.query('select 1 from models where name = $1', [model]);
  return (result.rowCount ?? 0) > 0;
}

/** A model as `pops models show` and `GET /v1/models/:name` give it: aliases, history, versions. */
export interface ModelView {
  model: string;
  source: string;
  aliases: Record<string, number>;
  /** Alias moves, newest first. */
  history: AliasMove[];
  /** Versions, newest first. */
  versions: ModelVersion[];
}

/** The model's view, or undefined when it is not declared. */
export async function showModel(
  db: Queryable,
  model: string,
  historyLimit = 100,
): Promise<ModelView | undefined> {
  const found = await db.query<{ source: string }>('select source from models where name = $1', [
    model,
  ]);
  const row = found.rows[0];
  if (!row) return undefined;
  return {
    model,
    source: row.source,
    aliases: await getAliases(db, model),
    history: await aliasHistory(db, model, historyLimit),
    versions: await listVersions(db, model),
  };
}
