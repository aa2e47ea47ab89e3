/**
 * A model for people, as `pops models show` prints it: its aliases, its versions with their metrics
 * and links (training set and row counts, feature versions, drift run, validation, code commit,
 * artifact), and the history of its aliases, newest first.
 */
import type { ValidationReport } from '../domain/validation.js';
import type { AliasMove, ModelVersion, ModelView } from '../domain/registry.js';
import { table } from './output.js';

/** The versions' metrics, one row each. */
export function versionTable(versions: readonly ModelVersion[]): string {
  return table(
    [
      'version',
      'created',
      'auc',
      'base auc',
      'ndcg@10',
      'log loss',
      'train',
      'validate',
      'trained until',
      'backend',
      'commit',
    ],
    versions.map((v) => [
      v.version,
      v.createdAt.slice(0, 19),
      v.metrics.auc.toFixed(4),
      v.baselineMetrics.auc.toFixed(4),
      v.metrics.ndcgAt10.toFixed(4),
      v.metrics.logLoss.toFixed(4),
      v.rowCounts.train,
      v.rowCounts.validate,
      v.dataRange.trainUntil.slice(0, 19),
      v.backend,
      (v.codeCommit ?? '').slice(0, 12),
    ]),
  );
}

/**
 * A validation report in one line: the verdict, against which production version, the
 * candidate's AUC, and each judged difference (or the reasons it failed).
 */
export function validationSummary(v: Pick<ModelVersion, 'validation' | 'blessed'>): string {
  if (v.blessed === null && v.validation === null) return 'not validated';
  const verdict =
    v.blessed === true ? 'blessed' : v.blessed === false ? 'not blessed' : 'no verdict';
  if (v.validation === null || v.validation === undefined) return verdict;
  const report = v.validation as Partial<ValidationReport>;
  if (!report.candidate) {
    const raw = JSON.stringify(v.validation);
    return `${verdict}; ${raw.length > 120 ? `${raw.slice(0, 119)}…` : raw}`;
  }
  const against = report.productionVersion
    ? `against production v${report.productionVersion}`
    : 'no production to compare with';
  const diffs = (report.differences ?? []).map(
    (d) =>
      `${d.metric} ${d.estimate >= 0 ? '+' : ''}${d.estimate.toFixed(4)}` +
      ` [${d.low.toFixed(4)}, ${d.high.toFixed(4)}]${d.pass ? '' : ' FAIL'}`,
  );
  return [
    `${verdict} ${against}: AUC ${report.candidate.auc.toFixed(4)}`,
    ...diffs,
    // The differences say why they fail; other reasons (the AUC minimum) are added.
    ...(report.reasons ?? []).filter((r) => !/ difference /.test(r)),
  ].join('; ');
}

/** What one version links to, as indented lines. */
export function versionLinks(v: ModelVersion, aliases: readonly string[] = []): string {
  const r = v.dataRange;
  const named = aliases.length > 0 ? ` (${aliases.join(', ')})` : '';
  return [
    `version ${v.version}${named}, by ${v.createdBy}: ${v.reason}`,
    `  training set  ${v.setKey}`,
    `                train ${v.rowCounts.train} rows [${r.trainFrom}, ${r.trainUntil}),` +
      ` validate ${v.rowCounts.validate} rows [${r.trainUntil}, ${r.validateUntil}]`,
    `  features      ${v.features.join(', ')}`,
    `  drift run     ${v.driftRunId ?? '-'}`,
    `  validation    ${validationSummary(v)}`,
    `  code commit   ${v.codeCommit ?? '-'}`,
    `  artifact      sha256 ${v.artifactSha256}`,
    `  workflow      ${v.workflowId} (run ${v.runId})`,
  ].join('\n');
}

const versionText = (n: number | null) => (n === null ? '-' : String(n));

/** Alias moves as a table, in the order given. */
export function historyTable(history: readonly AliasMove[]): string {
  return table(
    ['at', 'alias', 'from → to', 'by', 'reason', 'workflow'],
    history.map((m) => [
      m.at.slice(0, 19),
      m.alias,
      `${versionText(m.fromVersion)} → ${versionText(m.toVersion)}`,
      m.actor,
      m.reason,
      m.workflowId ?? '-',
    ]),
  );
}

/** The aliases pointing at each version. */
function aliasesByVersion(aliases: Record<string, number>): Map<number, string[]> {
  const byVersion = new Map<number, string[]>();
  for (const [alias, version] of Object.entries(aliases)) {
    byVersion.set(version, [...(byVersion.get(version) ?? []), alias]);
  }
  return byVersion;
}

/** A whole model (or the given versions of it) for people. */
export function describeModel(view: ModelView, versions = view.versions): string {
  const named = aliasesByVersion(view.aliases);
  const aliases = Object.entries(view.aliases).map(([a, v]) => `${a} → ${v}`);
  const lines = [
    `model ${view.model} over source ${view.source}`,
    `aliases: ${aliases.length > 0 ? aliases.join(', ') : 'none'}`,
  ];
  if (versions.length === 0) {
    lines.push(`no versions yet (pops retrain --model ${view.model} --reason …)`);
    return lines.join('\n');
  }
  lines.push('', versionTable(versions), '');
  lines.push(...versions.map((v) => versionLinks(v, named.get(v.version))));
  if (versions === view.versions && view.history.length > 0) {
    lines.push('', 'alias history (newest first):', historyTable(view.history));
  }
  return lines.join('\n');
}

/** One alias move in words. */
export function describeMove(m: AliasMove): string {
  return (
    `model ${m.model}: ${m.alias} ${versionText(m.fromVersion)} → ${versionText(m.toVersion)}` +
    ` (by ${m.actor}: ${m.reason})`
  );
}
