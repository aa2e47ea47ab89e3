/**
 * validateCandidate and what it needs: the production version to compare with, and the scores of
 * both models on the candidate's validation split (domain/validation.ts states the rule). The
 * report is stored with the candidate; validating again overwrites it with the same figures
 * (scoring and the seeded bootstrap are deterministic).
 */
import type { Queryable } from '../common/db.js';
import { FAILURE_TYPES, failure } from '../common/failures.js';
import { loadTensorflow } from '../domain/ml/backend.js';
import { fromArtifact } from '../domain/ml/model.js';
import { recordValidation } from '../domain/registry.js';
import { loadExamples } from '../domain/training-set.js';
import {
  type ValidationReport,
  type ValidationThresholds,
  compareCandidate,
} from '../domain/validation.js';
import { type ActivityDeps, withHeartbeat } from './deps.js';
import { readArtifact } from './training.js';

export interface ProductionVersion {
  version: number;
  setKey: string;
  artifactSha256: string;
  features: string[];
}

/** The version the `production` alias points at, unless it is `except`; null when none. */
export async function productionOf(
  db: Queryable,
  model: string,
  except?: number,
): Promise<ProductionVersion | null> {
  const { rows } = await db.query<{
    version: number;
    set_key: string;
    artifact_sha256: string;
    features: string[];
  }>(
    `select v.version, v.set_key, v.artifact_sha256, v.features
       from model_aliases a join model_versions v on v.model = a.model and v.version = a.version
      where a.model = $1 and a.alias = 'production' and ($2::int is null or v.version <> $2)`,
    [model, except ?? null],
  );
  const r = rows[0];
  return r
    ? {
        version: r.version,
        setKey: r.set_key,
        artifactSha256: r.artifact_sha256,
        features: r.features,
      }
    : null;
}

/** Builds the orchestration-queue lookups of validation. */
export function validationLookupActivities({ pool }: ActivityDeps) {
  return {
    /** The production version a candidate is compared with (never the candidate itself). */
    async productionVersion(input: { model: string; candidate: number }) {
      return productionOf(pool, input.model, input.candidate);
    },
  };
}

/** Builds validateCandidate (training queue: it scores with TensorFlow.js). */
export function validationActivities({ pool, log, trainBackend }: ActivityDeps) {
  return {
    /**
     * Scores the candidate and production on the candidate's validation split (production reads
     * its own features of the same rows from `production.setKey`), compares, and stores the report
     * with the candidate.
     */
    async validateCandidate(input: {
      model: string;
      candidate: { version: number; setKey: string; artifactSha256: string };
      production: { version: number; setKey: string; artifactSha256: string } | null;
      thresholds: ValidationThresholds;
    }): Promise<ValidationReport> {
      return withHeartbeat(async () => {
        const { tf, backend } = await loadTensorflow(trainBackend, log);
        const slice = await loadExamples(pool, input.candidate.setKey, 'validate');
        const score = async (sha: string, setKey: string) => {
          const rows =
            setKey === input.candidate.setKey
              ? slice
              : await loadExamples(pool, setKey, 'validate');
          if (rows.n !== slice.n || rows.persons.some((p, i) => p !== slice.persons[i])) {
            throw failure(
              FAILURE_TYPES.conflict,
              `validation rows of ${setKey} (${rows.n}) are not the candidate's (${slice.n})`,
            );
          }
          const scorer = await fromArtifact(tf, await readArtifact(pool, sha));
          try {
            return scorer.predict(rows.x, rows.n);
          } finally {
            scorer.dispose();
          }
        };
        const candidate = await score(input.candidate.artifactSha256, input.candidate.setKey);
        const production = input.production
          ? {
              version: input.production.version,
              scores: await score(input.production.artifactSha256, input.production.setKey),
            }
          : null;
        const report = await compareCandidate(
          { persons: slice.persons, items: slice.items, labels: slice.y, ratings: slice.rating },
          candidate,
          production,
          input.thresholds,
        );
        await recordValidation(pool, {
          model: input.model,
          version: input.candidate.version,
          validation: report,
          blessed: report.blessed,
        });
        log.info(
          {
            model: input.model,
            version: input.candidate.version,
            blessed: report.blessed,
            backend,
          },
          'candidate validated',
        );
        return report;
      });
    },
  };
}
