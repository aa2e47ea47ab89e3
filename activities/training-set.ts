/** Builds point-in-time training sets in PostgreSQL, once per retraining run. */
import { type Queryable, withTransaction } from '../common/db.js';
import { FAILURE_TYPES, failure } from '../common/failures.js';
import type { TrainingSetSummary } from '../domain/retrain.js';
import { InputError } from '../common/failures.js';
import type { FeatureDefinition } from '../domain/features/definition.js';
import { loadDefinitions, parseFeatureRef } from '../domain/features/registry.js';
import {
  classCounts,
  defaultRange,
  materializeExamples,
  trainingFeatureName,
} from '../domain/training-set.js';
import { type ActivityDeps, withHeartbeat } from './deps.js';

/** A training feature pinned to a version. */
export interface TrainingFeature {
  name: string;
  version: number;
  window: string;
}

export interface BuildTrainingSetInput {
  setKey: string;
  model: string;
  source: string;
  features: TrainingFeature[];
  trainUntil?: string;
  validateUntil?: string;
}

interface SetRow {
  set_key: string;
  source: string;
  train_from: Date;
  train_until: Date;
  validate_until: Date;
  features: string[];
  train_rows: number;
  validate_rows: number;
}

function summary(row: SetRow): TrainingSetSummary {
  return {
    setKey: row.set_key,
    source: row.source,
    trainFrom: row.train_from.toISOString(),
    trainUntil: row.train_until.toISOString(),
    validateUntil: row.validate_until.toISOString(),
    trainRows: row.train_rows,
    validateRows: row.validate_rows,
    features: row.features,
  };
}

const MIN_ROWS = 20;

/**
 * The set's summary, or an InsufficientDataFailure when a split is too small, or has only one
 * class, to learn from or judge by (AUC needs both).
 */
async function enoughRows(db: Queryable, row: SetRow, model: string): Promise<TrainingSetSummary> {
  if (row.train_rows < MIN_ROWS || row.validate_rows < MIN_ROWS) {
    throw failure(
      FAILURE_TYPES.insufficientData,
      `training set of "${model}" has ${row.train_rows} train` +
        ` and ${row.validate_rows} validation rows;` +
        ` at least ${MIN_ROWS} of each are needed (check trainUntil/validateUntil)`,
    );
  }
  const counts = await classCounts(db, row.set_key);
  for (const split of ['train', 'validate'] as const) {
    const { positive, negative } = counts[split];
    if (positive === 0 || negative === 0) {
      throw failure(
        FAILURE_TYPES.insufficientData,
        `the ${split} split of "${model}" has ${positive} positive` +
          ` and ${negative} negative examples;` +
          ' both classes are needed (check trainUntil/validateUntil)',
      );
    }
  }
  return summary(row);
}

/** Builds the training-set activities. */
export function trainingSetActivities({ pool, log }: ActivityDeps) {
  return {
    /** Materializes the training set under `setKey`; a retry returns the set already written. */
    async buildTrainingSet(input: BuildTrainingSetInput): Promise<TrainingSetSummary> {
      const existing = await pool.query<SetRow>('select * from training_sets where set_key = $1', [
        input.setKey,
      ]);
      if (existing.rows[0]) return enoughRows(pool, existing.rows[0], input.model);
      const range = await defaultRange(pool, input.source, {
        ...(input.trainUntil ? { trainUntil: new Date(input.trainUntil) } : {}),
        ...(input.validateUntil ? { validateUntil: new Date(input.validateUntil) } : {}),
      });
      if (!range) {
        throw failure(
          FAILURE_TYPES.insufficientData,
          `source "${input.source}" has no rated events to train on`,
        );
      }
      const definitions = await loadDefinitions(pool, input.features);
      const features = input.features.map((f, i) => ({
        definition: definitions[i] as FeatureDefinition,
        window: f.window,
      }));
      const row = await withHeartbeat(() =>
        withTransaction(pool, async (client) => {
          await client.query('select pg_advisory_xact_lock(hashtext($1))', [input.setKey]);
          const again = await client.query<SetRow>(
            'select * from training_sets where set_key = $1',
            [input.setKey],
          );
          if (again.rows[0]) return again.rows[0];
          await client.query(
            `insert into training_sets (set_key, model, source, train_from, train_until,
               validate_until,
             features, train_rows, validate_rows)
           values ($1, $2, $3, $4, $5, $6, $7, 0, 0)`,
            [
              input.setKey,
              input.model,
              input.source,
              range.trainFrom,
              range.trainUntil,
              range.validateUntil,
              features.map(trainingFeatureName),
            ],
          );
          const counts = await materializeExamples(
            client,
            input.setKey,
            input.source,
            range,
            features,
          );
          const updated = await client.query<SetRow>(
            `update training_sets set train_rows = $2, validate_rows = $3
              where set_key = $1 returning *`,
            [input.setKey, counts.train, counts.validate],
          );
          return updated.rows[0] as SetRow;
        }),
      );
      log.info(
        { setKey: input.setKey, train: row.train_rows, validate: row.validate_rows },
        'training set built',
      );
      return enoughRows(pool, row, input.model);
    },

    /**
     * Pins `name[@version]:window` specs to registered versions; a NotFoundFailure says how to
     * register what is missing, a ValidationFailure names a window the feature does not have.
     */
    async resolveTrainingFeatures(specs: string[]): Promise<TrainingFeature[]> {
      const parsed = specs.map((spec) => {
        const at = spec.lastIndexOf(':');
        return { ref: parseFeatureRef(spec.slice(0, at)), window: spec.slice(at + 1) };
      });
      let definitions: FeatureDefinition[];
      try {
        definitions = await loadDefinitions(
          pool,
          parsed.map((p) => p.ref),
        );
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        throw failure(
          FAILURE_TYPES.notFound,
          `${err.message}; the default training features are those of` +
            ' config/features.example.yaml (pops features register config/features.example.yaml)',
        );
      }
      return parsed.map((p, i) => {
        const d = definitions[i] as FeatureDefinition;
        if (!d.windows.includes(p.window)) {
          throw failure(
            FAILURE_TYPES.validation,
            `training feature ${JSON.stringify(specs[i])}: ${d.name}@${d.version} has no window` +
              ` ${p.window} (it has ${d.windows.join(', ')})`,
          );
        }
        return { name: d.name, version: d.version, window: p.window };
      });
    },

    /**
     * The training range of the source (the last 20% of its rated events' time validates unless
     * the input says), as ISO instants; an InsufficientDataFailure when it has no rated events.
     */
    async planTrainingRange(input: {
      source: string;
      trainUntil?: string;
      validateUntil?: string;
    }): Promise<{ trainFrom: string; trainUntil: string; validateUntil: string }> {
      const range = await defaultRange(pool, input.source, {
        ...(input.trainUntil ? { trainUntil: new Date(input.trainUntil) } : {}),
        ...(input.validateUntil ? { validateUntil: new Date(input.validateUntil) } : {}),
      });
      if (!range) {
        throw failure(
          FAILURE_TYPES.insufficientData,
          `source "${input.source}" has no rated events to train on`,
        );
      }
      return {
        trainFrom: range.trainFrom.toISOString(),
        trainUntil: range.trainUntil.toISOString(),
        validateUntil: range.validateUntil.toISOString(),
      };
    },

    /** The model's declaration, or a NotFoundFailure that says how to declare it. */
    async lookupModel(name: string): Promise<{ name: string; source: string }> {
      const found = await pool.query<{ name: string; source: string }>(
        'select name, source from models where name = $1',
        [name],
      );
      const row = found.rows[0];
      if (!row) {
        throw failure(
          FAILURE_TYPES.notFound,
          `model "${name}" is not declared; declare it with:` +
            ` pops models create ${name} --source <source>`,
        );
      }
      return row;
    },
  };
}
