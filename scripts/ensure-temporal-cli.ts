/**
 * Finds or builds the Temporal CLI by the same routes the embedded server uses, so CI (and a first
 * `npm test`) does not spend its first minutes compiling inside a test hook. Prints the route.
 */
import { loadConfig } from '../common/config.js';
import { logger } from '../common/logger.js';
import { resolveTemporalCli } from '../runtime/temporal-cli.js';

const config = loadConfig();
const found = resolveTemporalCli({
  explicit: config.POPS_TEMPORAL_CLI,
  cacheDir: config.POPS_CACHE_DIR,
  log: logger(),
});
if (!found) {
  process.stderr.write(
    'no Temporal CLI: install Go (for go install), put temporal on PATH,' +
      ' or set POPS_TEMPORAL_CLI\n',
  );
  process.exit(1);
}
process.stdout.write(`temporal cli: ${found.path} (route: ${found.route})\n`);
