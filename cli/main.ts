/**
 * The `pops` command line. Each command lives in its own module, loaded only when it runs (so
 * `--help` does not load TensorFlow or the Temporal SDK); this file only wires them.
 */
import { Command, CommanderError } from 'commander';
import { exitFor } from './output.js';

type Action = (...args: never[]) => Promise<void>;

/** Defers loading a command's module until the command runs. */
function lazy<M, K extends keyof M>(load: () => Promise<M>, name: K) {
  return async (...args: unknown[]) => {
    const module = await load();
    await (module[name] as Action)(...(args as never[]));
  };
}

const data = () => import('./data.js');
const retrain = () => import('./retrain.js');
const serve = () => import('./serve.js');
const demo = () => import('./demo.js');

const program = new Command('pops')
  .description('personalization ops: durable, audited jobs on Temporal and PostgreSQL')
  .showHelpAfterError()
  .exitOverride();

// One-shot commands keep stderr to warnings unless LOG_LEVEL says otherwise; services log at info.
program.hook('preAction', (_program, action) => {
  const longLived = ['serve', 'worker'].includes(action.name());
  if (!process.env['LOG_LEVEL']) process.env['LOG_LEVEL'] = longLived ? 'info' : 'warn';
});

program
  .command('demo')
  .description(
    'import data (simulated, or --data <MovieLens dir>), retrain a model, print the report',
  )
  .option('--data <dir>', 'a MovieLens-format directory (ratings.csv, optional movies.csv)')
  .option('--epochs <n>', 'training epochs')
  .option('--json', 'machine-readable output')
  .action(lazy(demo, 'demoCommand'));

program
  .command('serve')
  .description('run every worker and the HTTP API until Ctrl-C')
  .action(lazy(serve, 'serveCommand'));

program
  .command('worker')
  .description('run the workers of one task queue until Ctrl-C')
  .requiredOption('--queue <kind>', 'orchestration | training | io | all')
  .action(lazy(serve, 'workerCommand'));

const importCmd = program.command('import').description('import data into the event store');
importCmd
  .command('movielens <dir>')
  .description('import ratings.csv (and movies.csv) of a MovieLens-format directory')
  .option('--source <name>', 'source name (default: the directory name)')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'importMovieLensCommand'));
importCmd
  .command('events <file>')
  .description('import Segment-spec messages from an NDJSON file (deduplicated on messageId)')
  .option('--source <name>', 'source name', 'segment')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'importEventsCommand'));

program
  .command('retrain')
  .description('retrain a model (attaches to the running retraining of that model, if any)')
  .requiredOption('--model <name>', 'the model')
  .requiredOption('--reason <text>', 'why it retrains (audited)')
  .option('--train-until <instant>', 'end of the training window (ISO-8601 with zone)')
  .option('--validate-until <instant>', 'end of the validation window (ISO-8601 with zone)')
  .option('--epochs <n>', 'training epochs')
  .option('--wait', 'wait for the result, showing progress')
  .option('--json', 'machine-readable output')
  .action(lazy(retrain, 'retrainCommand'));

program
  .command('status <workflowId>')
  .description('status, progress and result of a workflow (exit 1 if it failed)')
  .option('--json', 'machine-readable output')
  .action(lazy(retrain, 'statusCommand'));

const models = program.command('models').description('the model registry');
models
  .command('create <name>')
  .description('declare a model over an event source')
  .requiredOption('--source <source>', 'the event source it learns from')
  .option('--description <text>')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'createModelCommand'));
models
  .command('list')
  .description('declared models with their latest version')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'listModelsCommand'));
models
  .command('show <name>')
  .description("a model's versions with metrics, data range and provenance")
  .option('--version <n>', 'one version')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'showModelCommand'));

program
  .command('audit')
  .description('the audit log')
  .command('verify')
  .description('walk the hash chain; report the first row that does not match (exit 1)')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'verifyAuditCommand'));

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
