/**
 * Structured logging for everything outside workflow code (workflows use the SDK's replay-aware `log`).
 * Messages are constant strings; the facts go in attributes.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger | undefined;

/** The process-wide logger; logs to stderr so that `--json` output on stdout stays parseable. */
export function logger(level: string = process.env['LOG_LEVEL'] ?? 'info'): Logger {
  root ??= pino({ level, base: { app: 'pops' } }, pino.destination({ fd: 2, sync: true }));
  return root;
}
