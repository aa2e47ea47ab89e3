/** Runs the real `pops` command line in a child process against the test servers. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { inject } from 'vitest';

const run = promisify(execFile);
const CLI = path.join(import.meta.dirname, '../cli/main.ts');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A `pops(args, env?)` runner on the given database and task-queue prefix; it never throws, and
 * returns the exit code with both outputs.
 */
export function popsRunner(base: () => Record<string, string>) {
  return async (args: string[], env: Record<string, string> = {}): Promise<CliResult> => {
    try {
      const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, ...args], {
        env: {
          ...process.env,
          TEMPORAL_ADDRESS: inject('temporalAddress'),
          LOG_LEVEL: 'warn',
          ...base(),
          ...env,
        },
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
}
