/**
 * How the CLI speaks: human text or `--json` on stdout, logs on stderr, progress bars on stderr
 * only when it is a terminal, and exit codes: 0 done, 1 failed, 2 bad input.
 */
import fs from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { ZodError, type z } from 'zod';
import { rootCause } from '../client/retrain.js';
import { describeZodError, InputError } from '../common/failures.js';

/** Thrown for bad command-line input; the CLI exits 2 with the message. */
export class UsageError extends InputError {}

/** Parses CLI values with zod, or throws a UsageError naming each wrong option. */
export function parseArgs<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    throw new UsageError(`invalid arguments: ${describeZodError(result.error, input)}`);
  }
  return result.data;
}

/**
 * Refuses an output file that cannot be written (its folder missing or not writable, or a folder
 * in its place), naming the option, before a command does work whose result would be lost.
 */
export function checkWritable(file: string, option = '--out'): void {
  const problem = (() => {
    if (fs.existsSync(file)) {
      if (fs.statSync(file).isDirectory()) return 'is a folder';
      return canWrite(file) ? null : 'is not writable';
    }
    const folder = path.dirname(path.resolve(file));
    if (!fs.existsSync(folder)) return `its folder ${folder} does not exist`;
    return canWrite(folder) ? null : `its folder ${folder} is not writable`;
  })();
  if (problem) throw new UsageError(`${option} ${file}: ${problem}`);
}

function canWrite(where: string): boolean {
  try {
    fs.accessSync(where, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Prints `value` as JSON, or the human text. */
export function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

export interface Progress {
  update(value: number, total?: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

/** A progress bar on stderr when it is a terminal (and not --json); otherwise nothing. */
export function progressBar(label: string, enabled: boolean, unit = ''): Progress {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total}${unit} {detail}`,
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(1, 0, { detail: '' });
  return {
    update(value, total, payload) {
      if (total !== undefined) bar.setTotal(total);
      bar.update(value, payload ?? {});
    },
    stop: () => bar.stop(),
  };
}

/** Turns an error into the message and exit code the CLI ends with. */
export function exitFor(err: unknown): { message: string; code: number } {
  if (err instanceof InputError) {
    return { message: err.message, code: 2 };
  }
  if (err instanceof ZodError) return { message: describeZodError(err, undefined), code: 2 };
  const message = err instanceof Error ? err.message : String(err);
  const root = rootCause(err);
  const type = (root as { type?: string }).type;
  const code = type === 'ValidationFailure' || type === 'NotFoundFailure' ? 2 : 1;
  return { message: root.message === message ? message : `${message}: ${root.message}`, code };
}

/** Formats a table of rows with aligned columns. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
