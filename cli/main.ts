/**
 * The `pops` command line: parses the arguments with the commands of cli/program.ts and turns a
 * failure into its message and exit code (2 for bad usage).
 */
import { CommanderError } from 'commander';
import { exitFor } from './output.js';
import { program } from './program.js';

// A reader that stops early (`pops … | head`) closes stdout: the rest of the output is dropped
// and the command still finishes, so the embedded servers it started are stopped.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; every other commander error is a usage error, already printed.
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    const { message, code } = exitFor(err);
    process.stderr.write(`pops: ${message}\n`);
    process.exitCode = code;
  }
}
