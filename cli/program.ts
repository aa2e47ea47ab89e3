/**
 * The `pops` commands. Each command lives in its own module, loaded only when it runs (so `--help`
 * does not load TensorFlow or the Temporal SDK); this file only wires them, and cli/main.ts runs
 * them. Importing it runs nothing (test/cli-roles.test.ts walks the commands).
 */
import { Command } from 'commander';

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
const rollout = () => import('./rollout.js');
const identity = () => import('./identity.js');
const identityMerge = () => import('./identity-merge.js');
const writeKeys = () => import('./write-keys.js');
const features = () => import('./features.js');
const featureCheck = () => import('./feature-check.js');
const contracts = () => import('./contracts.js');
const backfill = () => import('./backfill.js');
const modelsCli = () => import('./models.js');
const drift = () => import('./drift.js');
const surfaces = () => import('./surfaces.js');
const simulate = () => import('./simulate.js');
const campaign = () => import('./campaign.js');
const tokens = () => import('./tokens.js');
const audit = () => import('./audit.js');
const privacyCli = () => import('./privacy.js');
const consentCli = () => import('./consent.js');

export const program = new Command('pops')
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
  .option(
    '--canary',
    'instead: roll out a good and a broken candidate under replayed traffic (cli/demo-canary.ts)',
  )
  .option(
    '--campaign',
    'instead: the win-back campaign on the demo data: run, report, lift (cli/campaign-demo.ts)',
  )
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
  .option(
    '--features <list>',
    'name[@version]:window,… (default: the example features; item_popularity:lifetime required)',
  )
  .option('--wait', 'wait for the result (or, if blessed, for the approval), showing progress')
  .option('--promote', 'approve up front: production moves to the candidate if it is blessed')
  .option('--canary <surface>', 'roll a blessed candidate out on the surface (rollout/<surface>)')
  .option('--canary-file <yaml>', 'rollout settings for --canary (steps, bake, guardrails, …)')
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
  .description("a model's aliases, versions with metrics and links, and alias history")
  .option('--version <n>', 'one version')
  .option('--json', 'machine-readable output')
  .action(lazy(data, 'showModelCommand'));
models
  .command('rollback <name>')
  .description("point production back at the previous version (or --to's), through a workflow")
  .option('--to <version>', 'the version to return to (default: the one `previous` points at)')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--wait', 'wait for it (runs workers in this process)')
  .option('--json', 'machine-readable output')
  .action(lazy(modelsCli, 'rollbackCommand'));
models
  .command('approve <name>')
  .description('approve the blessed candidate of the running retraining: production moves to it')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--no-wait', 'send the approval and return (the workers of npm start act on it)')
  .option('--json', 'machine-readable output')
  .action(lazy(drift, 'approveCommand'));
models
  .command('reject <name>')
  .description('reject the candidate of the running retraining: production stays')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--no-wait', 'send the rejection and return (the workers of npm start act on it)')
  .option('--json', 'machine-readable output')
  .action(lazy(drift, 'rejectCommand'));
models
  .command('alias <name> <alias> <version>')
  .description('point a custom alias at a version (none removes it; not production; audited)')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(modelsCli, 'aliasCommand'));

const driftCmd = program.command('drift').description('drift monitors and their reports');
const driftSettings = (c: Command) =>
  c
    .option('--file <yaml>', 'a drift config file (README: "Drift monitors"); flags override it')
    .option(
      '--reference <ref>',
      'training | last-cycle:<days> | rolling:<days> | range:<from>..<to>',
    )
    .option('--window-days <n>', 'days in the current window (default 7)')
    .option('--current-end <end>', 'now | latest (after the last event) | an ISO-8601 instant')
    .option('--consecutive <k>', 'drifted runs in a row before a retraining (default 2)')
    .option('--cooldown-hours <h>', 'no new retraining within this time of the last (default 24)')
    .option('--alpha <a>', 'false discovery rate of the Benjamini-Hochberg step (default 0.05)')
    .option('--observe-only', 'report and decide, never retrain')
    .option('--json', 'machine-readable output');
driftSettings(
  driftCmd
    .command('monitor <model>')
    .description("store a model's drift monitor and schedule it (Temporal Schedule drift/<model>)")
    .option('--every <interval>', 'how often: 30m, 1h (default), 1d'),
).action(lazy(drift, 'monitorCommand'));
driftSettings(
  driftCmd
    .command('run <model>')
    .description('one drift run now, with the stored monitor config and these flags')
    .option('--at <instant>', 'the instant "now" stands for')
    .option('--wait', 'wait and print the report (runs workers in this process)'),
).action(lazy(drift, 'runCommand'));
driftCmd
  .command('show <model>')
  .description('a drift report: per feature method, statistic, p-value, effect, floor, decision')
  .option('--run <id>', 'a run id (default: the latest)')
  .option('--json', 'the report with its histograms')
  .action(lazy(drift, 'showCommand'));
driftCmd
  .command('list <model>')
  .description("a model's latest drift runs with their decisions, and its schedule")
  .option('--json', 'machine-readable output')
  .action(lazy(drift, 'listCommand'));

const rolloutCmd = program
  .command('rollout')
  .description(
    'canary rollouts of a model version on a surface, judged and rolled back on their own',
  );
rolloutCmd
  .command('start')
  .description(
    'start (or attach to) the rollout of a version on a surface (workflow rollout/<surface>)',
  )
  .option(
    '--file <yaml>',
    'a YAML file of rolloutModel input fields (domain/rollout/config.ts); flags override it',
  )
  .option('--model <name>', 'the model')
  .option('--version <n>', 'the version rolled out')
  .option('--surface <name>', 'the surface')
  .option('--steps <list>', 'canary percent per step, ending at 100 (default 1,5,25,50,100)')
  .option('--bake <list>', 'bake per step: one duration for all (30m) or one per step')
  .option('--every <duration>', 'analysis interval (default 1m)')
  .option('--min-sample <n>', 'persons per arm before business guardrails judge (default 1000)')
  .option('--max-extensions <n>', 'bakes added for too little data before pausing (default 2)')
  .option(
    '--guardrails <list>',
    'metric:margin,… e.g. ctr:0,error_rate:0.005,latency_p99:250ms (default error_rate, ctr)',
  )
  .option('--gates <list>', 'steps (percent) that wait for pops rollout approve')
  .option('--alpha <a>', 'false-rollback budget of the whole rollout (default 0.05)')
  .option('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(rollout, 'startCommand'));
rolloutCmd
  .command('status <surface>')
  .description('step, weight, time in step, hold, latest statistics and decisions')
  .option('--decisions <n>', 'latest decisions listed (default 10)')
  .option('--json', 'machine-readable output')
  .action(lazy(rollout, 'statusCommand'));
for (const [name, what] of [
  ['pause', 'hold the rollout where it is (guardrails still roll back)'],
  ['resume', 'resume a paused or held rollout (a held step starts a new window)'],
  ['abort', 'roll back now: the surface routes to its stable version alone'],
] as const) {
  rolloutCmd
    .command(`${name} <surface>`)
    .description(what)
    .requiredOption('--reason <text>', 'why (audited)')
    .option('--json', 'machine-readable output')
    .action(lazy(rollout, `${name}Command`));
}
rolloutCmd
  .command('approve <surface>')
  .description('approve the gate before a step (default: the next gate)')
  .option('--step <percent>', 'the gated step')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(rollout, 'approveCommand'));

const auditCmd = program.command('audit').description('the audit log');
auditCmd
  .command('list')
  .description('audit rows, newest first: who did what, to what, when (filters combine)')
  .option('--action <action>', 'an action, or a prefix ending in * (privacy.*)')
  .option('--actor <actor>', 'who: a token name, a user, pops')
  .option('--subject <subject>', 'what it was about, e.g. model/pops-sim-ranker')
  .option('--workflow <id>', 'the workflow id that wrote it')
  .option('--since <instant>', 'at or after (ISO-8601)')
  .option('--until <instant>', 'before (ISO-8601)')
  .option('--before <seq>', 'only rows before this seq (the next page)')
  .option('--limit <n>', 'at most this many rows (1-1000, default 100)')
  .option('--json', 'machine-readable output')
  .action(lazy(audit, 'listCommand'));
auditCmd
  .command('show <seq>')
  .description('one audit row whole: inputs, outputs, workflow, idempotency key, hashes')
  .option('--json', 'machine-readable output')
  .action(lazy(audit, 'showCommand'));
auditCmd
  .command('verify')
  .description('walk the hash chain; report the first row that does not match (exit 1)')
  .option('--checkpoint <file|url>', 'also check checkpoints kept elsewhere (detects a cut end)')
  .option('--json', 'machine-readable output')
  .action(lazy(audit, 'verifyCommand'));
auditCmd
  .command('checkpoint')
  .description("the chain's head (seq, hash), printed or appended to a file to keep elsewhere")
  .option('--out <file>', 'append it as a JSON line to this file')
  .option('--json', 'machine-readable output')
  .action(lazy(audit, 'checkpointCommand'));

const identityCmd = program
  .command('identity')
  .description('the identity graph: persons and merges');
identityCmd
  .command('show <identifier>')
  .description(
    'the person of an identifier (type:value, or a person id): identifiers, merges, conflicts',
  )
  .option('--json', 'machine-readable output')
  .action(lazy(identity, 'showIdentityCommand'));
identityCmd
  .command('unmerge <mergeId>')
  .description('split a person back into the persons that a merge joined (audited)')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(identity, 'unmergeCommand'));
identityCmd
  .command('remerge <unmergeId>')
  .description('undo an unmerge: join the two persons again (audited)')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(identity, 'remergeCommand'));
identityCmd
  .command('merge')
  .description('resolve the events written since the last merge now (attaches to a running one)')
  .option('--wait', 'wait for it to finish (runs workers in-process if none is running)')
  .option('--json', 'machine-readable output')
  .action(lazy(identityMerge, 'mergeCommand'));
identityCmd
  .command('schedule')
  .description('create or update the Temporal Schedule that runs mergeIdentities (every minute)')
  .option('--every <interval>', 'how often, e.g. 1m, 5m, 1h (default: as it is, or 1m when new)')
  .option('--pause', 'pause the schedule')
  .option('--unpause', 'unpause the schedule')
  .option('--json', 'machine-readable output')
  .action(lazy(identityMerge, 'scheduleCommand'));

const writeKeysCmd = program
  .command('write-keys')
  .description('Segment write keys for the HTTP ingestion endpoints');
writeKeysCmd
  .command('create')
  .description('create a write key for a source (printed once)')
  .requiredOption('--source <name>', 'the event source the key writes to')
  .option('--json', 'machine-readable output')
  .action(lazy(writeKeys, 'createWriteKeyCommand'));
writeKeysCmd
  .command('list')
  .description('write keys (their prefixes), sources and state')
  .option('--json', 'machine-readable output')
  .action(lazy(writeKeys, 'listWriteKeysCommand'));
writeKeysCmd
  .command('revoke <prefix>')
  .description('revoke a write key')
  .option('--json', 'machine-readable output')
  .action(lazy(writeKeys, 'revokeWriteKeyCommand'));

const featuresCmd = program.command('features').description('the feature registry');
featuresCmd
  .command('register <file>')
  .description('register the feature definitions of a YAML file (all or none; audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(features, 'registerFeaturesCommand'));
featuresCmd
  .command('list')
  .description('registered features with their latest version')
  .option('--json', 'machine-readable output')
  .action(lazy(features, 'listFeaturesCommand'));
featuresCmd
  .command('show <name>')
  .description("a feature's versions: definition, owner, lineage")
  .option('--version <n>', 'one version')
  .option('--json', 'machine-readable output')
  .action(lazy(features, 'showFeatureCommand'));
featuresCmd
  .command('check')
  .description('compare a sample of the online store with the offline store (audited)')
  .option('--features <list>', 'comma-separated name or name@version (default: every feature)')
  .option('--sample <n>', 'entities sampled per feature version (default 1000)')
  .option('--reason <text>', 'why, for the audit log')
  .option('--wait', 'wait and print the mismatches, exit 1 if any (runs workers in this process)')
  .option('--json', 'machine-readable output')
  .action(lazy(featureCheck, 'checkFeaturesCommand'));

featuresCmd
  .command('materialize')
  .description(
    'one incremental step: compute the days closed since the last, and those late events fall on',
  )
  .option('--features <list>', 'comma-separated name or name@version (default: every feature)')
  .option('--lateness <duration>', 'how long after a day ends its events may arrive (default 1h)')
  .option('--partition <unit>', 'days per activity: day, week, month or year (default by range)')
  .option('--wait', 'wait for it (runs workers in this process)')
  .option('--json', 'machine-readable output')
  .action(lazy(backfill, 'materializeCommand'));

const backfillCmd = program
  .command('backfill')
  .description('backfill features into the offline and online stores');
backfillCmd
  .command('start')
  .description('start (or attach to) a backfill of features over a range of UTC days')
  .requiredOption('--features <list>', 'comma-separated name or name@version')
  .requiredOption('--from <day>', 'first day, YYYY-MM-DD (inclusive)')
  .requiredOption('--to <day>', 'last day, YYYY-MM-DD (inclusive)')
  .option('--partition <unit>', 'days per activity: day, week, month or year', 'day')
  .option('--parallelism <n>', 'partitions computed at once (default 4)')
  .option('--reason <text>', 'why, for the audit log')
  .option('--wait', 'watch it to the end (runs workers in this process)')
  .option('--json', 'machine-readable output')
  .action(lazy(backfill, 'startBackfillCommand'));
backfillCmd
  .command('status <id>')
  .description("a backfill's progress: partitions done, rows/s, ETA")
  .option('--watch', 'follow it to the end with a progress bar')
  .option('--json', 'machine-readable output')
  .action(lazy(backfill, 'backfillStatusCommand'));

const contractsCmd = program
  .command('contracts')
  .description('data contracts: the declared properties of track events');
contractsCmd
  .command('register <file>')
  .description('register the contracts of a YAML file (all or none; audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(contracts, 'registerContractsCommand'));
contractsCmd
  .command('list')
  .description('registered contracts with their latest (judging) version')
  .option('--json', 'machine-readable output')
  .action(lazy(contracts, 'listContractsCommand'));

program
  .command('quarantine')
  .description('messages kept aside because they broke their contract')
  .command('list')
  .description('quarantined messages: counts by event and reason, then the latest')
  .option('--event <name>', 'one event')
  .option('--limit <n>', 'latest messages shown (default 20)')
  .option('--json', 'machine-readable output')
  .action(lazy(contracts, 'listQuarantineCommand'));

const surfacesCmd = program
  .command('surfaces')
  .description('decision surfaces: routing tables (stable and canary versions), modes, filters');
surfacesCmd
  .command('create <name>')
  .description("create a surface serving the model's production version at 100%")
  .requiredOption('--model <name>', 'the model it serves')
  .option('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(surfaces, 'createCommand'));
surfacesCmd
  .command('show <name>')
  .description("a surface's routes, mode, generation and latest routing changes")
  .option('--json', 'machine-readable output')
  .action(lazy(surfaces, 'showCommand'));
surfacesCmd
  .command('mode <name> <mode>')
  .description('set the mode: normal | conservative | rules-only (the last two: rules answer)')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(surfaces, 'modeCommand'));
surfacesCmd
  .command('filters <name>')
  .description('business filters: items and genres the surface never shows (model and rules)')
  .option('--exclude-items <list>', 'item ids, comma-separated (replaces the list)')
  .option('--exclude-genres <list>', 'genres, comma-separated, as imported (replaces the list)')
  .option('--clear', 'remove every filter')
  .requiredOption('--reason <text>', 'why (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(surfaces, 'filtersCommand'));

const simulateCmd = program.command('simulate').description('simulated load on a running pops');
simulateCmd
  .command('traffic')
  .description(
    'replay held-out MovieLens ratings against /v1/decide: a person clicks what they rated >= 4',
  )
  .requiredOption('--surface <name>', 'the surface asked')
  .requiredOption('--rate <r>', 'requests per second')
  .option('--duration <d>', 'how long (default 60s)')
  .option('--data <dir>', 'a MovieLens directory to read the held-out ratings from')
  .option(
    '--holdout-from <instant>',
    "held-out ratings start here (default: the production version's validateUntil)",
  )
  .option('--api <url>', 'the API called (default http://127.0.0.1:8080)')
  .option('--serve', 'start an API in this process instead of calling one')
  .option('--k <n>', 'items per decision (default 10)')
  .option('--seed <n>', 'the seed that draws persons (default 1)')
  .option('--json', 'machine-readable output')
  .action(lazy(simulate, 'trafficCommand'));

const playbookCli = () => import('./playbook.js');
const incidentCli = () => import('./incident.js');
const collectParam = (v: string, prev: string[] = []) => [...prev, v];
const playbookCmd = program
  .command('playbook')
  .description('incident playbooks (playbooks/*.yaml)');
const playbookRunOptions = (c: Command) =>
  c
    .option('--version <n>', 'the playbook version (default: the latest)')
    .option('--param <name=value>', 'a parameter (repeat for more)', collectParam, [])
    .option('--incident <id>', 'the incident id (default: a new inc-<date>-<hex>)')
    .option('--title <text>', "the incident's title")
    .option('--severity <sev>', 'sev1 | sev2 (default) | sev3 | sev4')
    .option('--surface <name>', 'the surface the incident is about')
    .option('--json', 'machine-readable output');
playbookCmd
  .command('list')
  .description('registered playbooks (the shipped ones are registered on first use)')
  .option('--json', 'machine-readable output')
  .action(lazy(playbookCli, 'listCommand'));
playbookCmd
  .command('register <file>')
  .description('register a playbook YAML file (checked first; a version is never rewritten)')
  .option('--json', 'machine-readable output')
  .action(lazy(playbookCli, 'registerCommand'));
playbookRunOptions(
  playbookCmd
    .command('plan <name>')
    .description('dry run: resolved parameters, the steps, the branches taken; changes nothing'),
).action(lazy(playbookCli, 'planCommand'));
playbookRunOptions(
  playbookCmd
    .command('run <name>')
    .description('run a playbook for an incident (workflow playbook/<incident>) and follow it')
    .option('--no-wait', 'start it and return (the workers of npm start run it)'),
).action(lazy(playbookCli, 'runCommand'));
playbookCmd
  .command('status <incident>')
  .description("the run's steps, the approval waiting and the timeline")
  .option('--json', 'machine-readable output')
  .action(lazy(playbookCli, 'statusCommand'));
for (const [verb, what] of [
  ['approve', 'approve the waiting (or --step) approval step'],
  ['reject', 'reject the waiting (or --step) approval step'],
  ['abort', 'abort the run: it stops and undoes its completed steps in reverse'],
] as const) {
  playbookCmd
    .command(`${verb} <incident>`)
    .description(what)
    .requiredOption('--reason <text>', 'why (recorded in the timeline)')
    .option('--step <id>', 'the approval step (default: the next one to wait)')
    .option('--json', 'machine-readable output')
    .action(lazy(playbookCli, `${verb}Command`));
}
const incidentCmd = program.command('incident').description('incidents and their timelines');
incidentCmd
  .command('list')
  .description('the latest incidents')
  .option('--json', 'machine-readable output')
  .action(lazy(incidentCli, 'listCommand'));
incidentCmd
  .command('show <id>')
  .description('an incident with its timeline; --markdown prints a postmortem draft')
  .option('--markdown', 'postmortem-style Markdown')
  .option('--json', 'machine-readable output')
  .action(lazy(incidentCli, 'showCommand'));
incidentCmd
  .command('export <id>')
  .description('write the affected list a privacy playbook stored for the DPO (CSV)')
  .requiredOption('--out <file>', 'where to write it')
  .option('--json', 'machine-readable output')
  .action(lazy(incidentCli, 'exportCommand'));

const tokensCmd = program
  .command('tokens')
  .description('API tokens and their roles (admin, mlops, marketer, responder, auditor, ingest)');
tokensCmd
  .command('create')
  .description('create a token (printed once; only its hash is kept; audited)')
  .requiredOption('--role <role>', 'admin, mlops, marketer, responder, auditor or ingest')
  .requiredOption('--name <name>', 'who or what holds it (recorded as the actor)')
  .option('--json', 'machine-readable output')
  .action(lazy(tokens, 'createTokenCommand'));
tokensCmd
  .command('list')
  .description('tokens (their ids), roles, names and state; never a token')
  .option('--json', 'machine-readable output')
  .action(lazy(tokens, 'listTokensCommand'));
tokensCmd
  .command('revoke <id>')
  .description('revoke a token (refused by the API within a second; audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(tokens, 'revokeTokenCommand'));

const privacyCmd = program
  .command('privacy')
  .description('data subject requests: delete or export everything about a person');
privacyCmd
  .command('delete <identifier>')
  .description('delete every row of the person of type:value across tables (tombstoned; audited)')
  .requiredOption('--reason <text>', 'why (audited; write no personal data here)')
  .option('--no-wait', 'start it and return')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'deleteCommand'));
privacyCmd
  .command('export <identifier>')
  .description('everything about the person of type:value as one JSON bundle (audited)')
  .option('--out <file>', 'write the bundle here (mode 600) instead of stdout')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'exportCommand'));
privacyCmd
  .command('rotate-key')
  .description('make a new field key current for sealing addresses (old keys still open)')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'rotateKeyCommand'));
privacyCmd
  .command('reseal')
  .description('seal every stored address with the current field key (after rotate-key)')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'resealCommand'));
privacyCmd
  .command('minimize')
  .description('hash the emails and phones earlier versions stored in clear (runs at start too)')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'minimizeCommand'));
privacyCmd
  .command('retention')
  .description('delete now the rows older than POPS_RETENTION says, per table (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(privacyCli, 'retentionCommand'));

const consentCmd = program
  .command('consent')
  .description('consent per person and purpose (personalization, marketing, analytics)');
consentCmd
  .command('show <identifier>')
  .description("the consent of type:value's person per purpose, with its history")
  .option('--json', 'machine-readable output')
  .action(lazy(consentCli, 'showCommand'));
consentCmd
  .command('set <identifier>')
  .description('record consent choices for type:value, in one transaction (all or none)')
  .option('--grant <purposes>', 'purposes granted, comma-separated (e.g. marketing,analytics)')
  .option('--withdraw <purposes>', 'purposes withdrawn, comma-separated')
  .option('--source <source>', 'where the choice came from (kept in the history)', 'cli')
  .option('--at <instant>', 'when it took effect (ISO 8601 with offset; default now)')
  .option('--json', 'machine-readable output')
  .action(lazy(consentCli, 'setCommand'));
consentCmd
  .command('defaults')
  .description('what applies per purpose to a person without a consent event')
  .option('--json', 'machine-readable output')
  .action(lazy(consentCli, 'defaultsCommand'));
consentCmd
  .command('set-default <purpose> <state>')
  .description('set what applies to persons without a choice: granted or withdrawn (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(consentCli, 'setDefaultCommand'));

// With POPS_TOKEN set, a command runs only when that token's role may run it (api/roles.ts).
program.hook('preAction', async (_program, action) => {
  if (!process.env['POPS_TOKEN']) return;
  const { checkCliRole } = await privacyCli();
  await checkCliRole(commandWords(action));
});

/** The words of a command below `pops`, e.g. `tokens create`. */
function commandWords(command: Command): string {
  const words: string[] = [];
  for (let c: Command | null = command; c && c.parent; c = c.parent) words.unshift(c.name());
  return words.join(' ');
}

const campaignCmd = program
  .command('campaign')
  .description('lifecycle email campaigns: scheduled, consent-gated, capped, sent once, with lift');
campaignCmd
  .command('define <files...>')
  .description('store the campaign of each YAML file and create or update its schedule (audited)')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'defineCommand'));
campaignCmd
  .command('list')
  .description('campaigns, their schedules, pause state, holdout and cap')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'listCommand'));
campaignCmd
  .command('show <name>')
  .description('a campaign: definition, schedule (next fire times) and recent runs')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'showCommand'));
campaignCmd
  .command('preview <name> <person>')
  .description(
    'what a person (email:…, user_id:…, a person id, unresolved:<id>) would get now,' +
      ' or why not',
  )
  .option('--at <instant>', 'judge at this instant instead of now')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'previewCommand'));
campaignCmd
  .command('test-send <name> <address>')
  .description('mail the message, marked [test], to an address (recorded in no run)')
  .option('--person <key>', 'render it as this person would get it')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'testSendCommand'));
for (const [name, description] of [
  ['pause', 'stop the schedule and the runs in flight (before their next chunk)'],
  ['resume', 'resume the schedule and paused runs'],
] as const) {
  campaignCmd
    .command(`${name} <name>`)
    .description(description)
    .requiredOption('--reason <text>', 'why (audited)')
    .option('--json', 'machine-readable output')
    .action(lazy(campaign, `${name}Command`));
}
campaignCmd
  .command('trigger <name>')
  .description('run one fire time now (or --at), waiting for its report unless --no-wait')
  .option('--at <instant>', 'the fire time (default now); past maxLateness it is recorded late')
  .option('--no-wait', 'start it and return')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'triggerCommand'));
campaignCmd
  .command('backfill <name>')
  .description('have the schedule start every fire time in [--from, --to]')
  .requiredOption('--from <instant>', 'start of the range')
  .requiredOption('--to <instant>', 'end of the range')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'backfillCommand'));
campaignCmd
  .command('report <name>')
  .description('recent runs: sent, held out, skipped by reason, failed, unknown; lift reports')
  .option('--runs <n>', 'how many runs (default 5)')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'reportCommand'));
campaignCmd
  .command('lift <name>')
  .description('measure a run: return rate of sent vs holdout over a horizon, 95% interval')
  .requiredOption('--run <instant>', 'the run, by its fire time')
  .requiredOption('--horizon <days>', 'days after the fire time that count')
  .option('--json', 'machine-readable output')
  .action(lazy(campaign, 'liftCommand'));
