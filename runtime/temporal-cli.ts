/**
 * Finds or obtains the Temporal CLI that runs the embedded dev server. The routes, in order:
 * POPS_TEMPORAL_CLI, `temporal` on PATH, the pops cache folder, `go install` into that cache. (The
 * SDK's own download is the last route; it is taken in temporal-server.ts because it starts the
 * server rather than handing back a path.) One log line says which route was taken.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/logger.js';

export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';

export type CliRoute = 'env' | 'path' | 'cache' | 'go-install';

export interface ResolvedCli {
  path: string;
  route: CliRoute;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** The cache folder's copy of the CLI (whether or not it exists yet). */
export function cachedCliPath(cacheDir: string): string {
  return path.join(cacheDir, 'bin', 'temporal');
}

/**
 * Builds the CLI with `go install` into the cache. Takes minutes the first time (it compiles the
 * Temporal server); later calls find the cached binary and return at once.
 */
export function goInstallCli(cacheDir: string, log: Logger): string | undefined {
  const go = onPath('go');
  if (!go) return undefined;
  const bin = path.dirname(cachedCliPath(cacheDir));
  fs.mkdirSync(bin, { recursive: true });
  log.info(
    { module: TEMPORAL_CLI_MODULE, into: bin },
    'building the Temporal CLI with go install (first time takes minutes)',
  );
  // Said whatever the log level: one-shot commands log warnings only, and the build is silent.
  process.stderr.write(
    `pops: building the Temporal CLI (go install ${TEMPORAL_CLI_MODULE}) into ${bin};` +
      ' once, about 5-7 minutes on 2 cores\n',
  );
  const result = spawnSync(go, ['install', TEMPORAL_CLI_MODULE], {
    env: { ...process.env, GOBIN: bin, CGO_ENABLED: '0' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (result.status !== 0) {
    log.warn(
      { status: result.status, error: result.error?.message },
      'go install of the Temporal CLI failed',
    );
    return undefined;
  }
  const built = cachedCliPath(cacheDir);
  return isExecutable(built) ? built : undefined;
}

/** Returns the CLI by the first route that works, or undefined when none of them does. */
export function resolveTemporalCli(options: {
  explicit?: string;
  cacheDir: string;
  log: Logger;
}): ResolvedCli | undefined {
  const { explicit, cacheDir, log } = options;
  if (explicit) {
    if (!isExecutable(explicit)) {
      throw new Error(
        `POPS_TEMPORAL_CLI=${JSON.stringify(explicit)}: no executable file at that path`,
      );
    }
    return { path: explicit, route: 'env' };
  }
  const fromPath = onPath('temporal');
  if (fromPath) return { path: fromPath, route: 'path' };
  const cached = cachedCliPath(cacheDir);
  if (isExecutable(cached)) return { path: cached, route: 'cache' };
  const built = goInstallCli(cacheDir, log);
  if (built) return { path: built, route: 'go-install' };
  return undefined;
}
