/** The `pops` command line. Each command lives in its own module; this file only wires them. */
import { Command } from 'commander';
import { createModelCommand, importEventsCommand, importMovieLensCommand, listModelsCommand, showModelCommand, verifyAuditCommand } from './data.js';
import { demoCommand } from './demo.js';
import { exitFor } from './output.js';
import { retrainCommand, statusCommand } from './retrain.js';
import { serveCommand, workerCommand } from './serve.js';

const program = new Command('pops')
  .description('personalization ops: durable, audited jobs on Temporal and PostgreSQL')
  .showHelpAfterError();

program
  .command('demo')
  .description('import data (simulated, or --data <MovieLens dir>), retrain a model, print the report')
  .option('--data <dir>', 'a MovieLens-format directory (ratings.csv, optional movies.csv)')
  .option('--epochs <n>', 'training epochs')
  .option('--json', 'machine-readable output')
  .action(demoCommand);

program.command('serve').description('run every worker and the HTTP API until Ctrl-C').action(serveCommand);

program
  .command('worker')
  .description('run the workers of one task queue')
  .requiredOption('--queue <kind>', 'orchestration | training | io | all')
  .action(workerCommand);

const importCmd = program.command('import').description('import data into the event store');
importCmd
  .command('movielens <dir>')
  .description('import ratings.csv (and movies.csv) of a MovieLens-format directory')
  .option('--source <name>', 'source name (default: the directory name)')
  .option('--json', 'machine-readable output')
  .action(importMovieLensCommand);
importCmd
  .command('events <file>')
  .description('import Segment-spec messages from an NDJSON file')
  .option('--source <name>', 'source name', 'segment')
  .option('--json', 'machine-readable output')
  .action(importEventsCommand);

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
  .action(retrainCommand);

program
  .command('status <workflowId>')
  .description('status, progress and result of a workflow')
  .option('--json', 'machine-readable output')
  .action(statusCommand);

const models = program.command('models').description('the model registry');
models
  .command('create <name>')
  .description('declare a model over an event source')
  .requiredOption('--source <source>', 'the event source it learns from')
  .option('--description <text>')
  .option('--json', 'machine-readable output')
  .action(createModelCommand);
models.command('list').option('--json', 'machine-readable output').action(listModelsCommand);
models
  .command('show <name>')
  .option('--version <n>', 'one version')
  .option('--json', 'machine-readable output')
  .action(showModelCommand);

program
  .command('audit')
  .description('the audit log')
  .command('verify')
  .description('walk the hash chain; report the first row that does not match')
  .option('--json', 'machine-readable output')
  .action(verifyAuditCommand);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const { message, code } = exitFor(err);
  process.stderr.write(`pops: ${message}\n`);
  process.exitCode = code;
}
