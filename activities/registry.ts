/** Registers model versions; a retried registration returns the version it already made. */
import { registerVersion, type NewVersion } from '../domain/registry.js';
import type { ActivityDeps } from './deps.js';

/** Builds the registry activities. */
export function registryActivities({ pool, codeCommit, log }: ActivityDeps) {
  return {
    /** Registers the run's model version and returns its number. */
    async registerModelVersion(input: Omit<NewVersion, 'codeCommit'>): Promise<number> {
      const version = await registerVersion(pool, { ...input, codeCommit });
      log.info(
        { model: input.model, version: version.version, runKey: input.runKey },
        'model version registered',
      );
      return version.version;
    },
  };
}
