/**
 * The rollout tables (migrations/0013_rollouts.sql): a rollout's row and its tick decisions, and
 * the one statement that sums a step's exposures and outcomes per arm over persons. Writes are
 * keyed (rollout key, decision key), so a retried activity writes nothing twice.
 */
import type { Queryable } from '../../common/db.js';
import type { HoldReason, RolloutOutcome, RolloutRequest, TickSummary } from './config.js';
import { type ArmSums, emptyArm, EVENTS, type TickAnalysis } from './judge.js';

/** A rollout's stored row. */
export interface StoredRollout {
  rolloutKey: string;
  workflowId: string;
  surface: string;
  model: string;
  version: number;
  stableVersion: number;
  config: RolloutRequest;
  state: 'running' | 'promoted' | 'rolled-back';
  phase: string;
  stepIndex: number;
  weightBp: number;
  hold: { reason: HoldReason; by: string; detail: string } | null;
  requestedBy: string;
  startedAt: string;
  updatedAt: string;
  endedAt: string | null;
  outcome: RolloutOutcome | null;
  breachDecisionId: number | null;
  rollbackGeneration: number | null;
  rollbackLatencyMs: number | null;
}

interface RolloutRow {
  rollout_key: string;
  workflow_id: string;
  surface: string;
  model: string;
  version: number;
  stable_version: number;
  config: RolloutRequest;
  state: StoredRollout['state'];
  phase: string;
  step_index: number;
  weight_bp: number;
  hold: StoredRollout['hold'];
  requested_by: string;
  started_at: Date;
  updated_at: Date;
  ended_at: Date | null;
  outcome: RolloutOutcome | null;
  breach_decision_id: number | null;
  rollback_generation: number | null;
  rollback_latency_ms: number | null;
}

function rolloutOf(r: RolloutRow): StoredRollout {
  return {
    rolloutKey: r.rollout_key,
    workflowId: r.workflow_id,
    surface: r.surface,
    model: r.model,
    version: r.version,
    stableVersion: r.stable_version,
    config: r.config,
    state: r.state,
    phase: r.phase,
    stepIndex: r.step_index,
    weightBp: r.weight_bp,
    hold: r.hold,
    requestedBy: r.requested_by,
    startedAt: r.started_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    endedAt: r.ended_at?.toISOString() ?? null,
    outcome: r.outcome,
    breachDecisionId: r.breach_decision_id,
    rollbackGeneration: r.rollback_generation,
    rollbackLatencyMs: r.rollback_latency_ms,
  };
}

/** The rollout stored under this key, or undefined. */
export async function getRollout(db: Queryable, key: string): Promise<StoredRollout | undefined> {
  const { rows } = await db.query<RolloutRow>('select * from rollouts where rollout_key = $1', [
    key,
  ]);
  return rows[0] ? rolloutOf(rows[0]) : undefined;
}

/** The surface's latest rollouts, newest first (the running one, if any, is the first). */
export async function listRollouts(
  db: Queryable,
  surface: string,
  limit = 20,
): Promise<StoredRollout[]> {
  const { rows } = await db.query<RolloutRow>(
    `select * from rollouts where surface = $1
      order by (state = 'running') desc, started_at desc limit $2`,
    [surface, limit],
  );
  return rows.map(rolloutOf);
}

/**
 * Inserts the rollout's row, or returns the one already there. The partial unique index refuses a
 * second running rollout of the surface (a `23505` error the caller turns into a conflict).
 */
export async function insertRollout(
  db: Queryable,
  r: {
    rolloutKey: string;
    workflowId: string;
    config: RolloutRequest;
    stableVersion: number;
  },
): Promise<StoredRollout> {
  await db.query(
    `insert into rollouts (rollout_key, workflow_id, surface, model, version, stable_version,
         config, requested_by)
     values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
     on conflict (rollout_key) do nothing`,
    [
      r.rolloutKey,
      r.workflowId,
      r.config.surface,
      r.config.model,
      r.config.version,
      r.stableVersion,
      JSON.stringify(r.config),
      r.config.requestedBy,
    ],
  );
  const stored = await getRollout(db, r.rolloutKey);
  if (!stored) throw new Error(`rollout ${r.rolloutKey} vanished after its insert`);
  return stored;
}

/** Where a running rollout stands (phase, step, weight, hold); ended rollouts keep their end. */
export async function updateRolloutProgress(
  db: Queryable,
  key: string,
  p: {
    phase: string;
    stepIndex: number;
    weightBp: number;
    hold: StoredRollout['hold'];
  },
): Promise<void> {
  await db.query(
    `update rollouts set phase = $2, step_index = $3, weight_bp = $4, hold = $5::jsonb,
            updated_at = now()
      where rollout_key = $1 and state = 'running'`,
    [key, p.phase, p.stepIndex, p.weightBp, p.hold === null ? null : JSON.stringify(p.hold)],
  );
}

/** Ends the rollout with its outcome (once: a second call changes nothing). */
export async function endRollout(db: Queryable, key: string, outcome: RolloutOutcome) {
  const rolledBack = outcome.outcome === 'rolled-back';
  await db.query(
    `update rollouts set state = $2, phase = $2, outcome = $3::jsonb, ended_at = now(),
            updated_at = now(), hold = null,
            weight_bp = case when $2 = 'promoted' then 10000 else 0 end,
            breach_decision_id = $4, rollback_generation = $5, rollback_latency_ms = $6
      where rollout_key = $1 and state = 'running'`,
    [
      key,
      outcome.outcome,
      JSON.stringify(outcome),
      rolledBack ? outcome.breachDecisionId : null,
      rolledBack ? outcome.generation : null,
      rolledBack ? outcome.latencyMs : null,
    ],
  );
}

/** The step's window and tick a decision belongs to. */
export interface DecisionPlace {
  rolloutKey: string;
  decisionKey: string;
  stepIndex: number;
  stepPercent: number;
  tick: number;
  windowGeneration: number;
  windowFrom: string;
}

interface DecisionRow {
  id: number;
  step_index: number;
  tick: number;
  decision: TickSummary['decision'];
  reason: string;
  enough: boolean;
  weight_bp: number;
  srm: TickAnalysis['srm'];
  arms: TickAnalysis['arms'];
  guardrails: TickAnalysis['guardrails'];
  window_generation: number;
  window_from: Date;
  detected_at: Date;
  decided_at: Date;
}

function summaryOf(r: DecisionRow): TickSummary {
  return {
    decisionId: r.id,
    stepIndex: r.step_index,
    tick: r.tick,
    decision: r.decision,
    reason: r.reason,
    decidedAt: r.decided_at.toISOString(),
    detectedAtMs: r.detected_at.getTime(),
    analysis: {
      weightBp: r.weight_bp,
      windowGeneration: r.window_generation,
      windowFrom: r.window_from.toISOString(),
      enough: r.enough,
      srm: r.srm,
      arms: r.arms,
      guardrails: r.guardrails,
    },
  };
}

/** The decision recorded under this key, or undefined. */
export async function recordedDecision(
  db: Queryable,
  decisionKey: string,
): Promise<TickSummary | undefined> {
  const { rows } = await db.query<DecisionRow>(
    'select * from rollout_decisions where decision_key = $1',
    [decisionKey],
  );
  return rows[0] ? summaryOf(rows[0]) : undefined;
}

/** Records a tick's decision (or returns the one already recorded under its key). */
export async function insertDecision(
  db: Queryable,
  place: DecisionPlace,
  a: Pick<TickAnalysis, 'weightBp' | 'srm' | 'arms' | 'guardrails' | 'enough' | 'reason'> & {
    decision: TickSummary['decision'];
  },
  detectedAt: Date,
): Promise<TickSummary> {
  await db.query(
    `insert into rollout_decisions (rollout_key, decision_key, step_index, step_percent,
         weight_bp, tick, window_generation, window_from, decision, reason, enough, srm, arms,
         guardrails, detected_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15)
     on conflict (decision_key) do nothing`,
    [
      place.rolloutKey,
      place.decisionKey,
      place.stepIndex,
      place.stepPercent,
      a.weightBp,
      place.tick,
      place.windowGeneration,
      place.windowFrom,
      a.decision,
      a.reason,
      a.enough,
      JSON.stringify(a.srm),
      JSON.stringify(a.arms),
      JSON.stringify(a.guardrails),
      detectedAt,
    ],
  );
  const stored = await recordedDecision(db, place.decisionKey);
  if (!stored) throw new Error(`decision ${place.decisionKey} vanished after its insert`);
  return stored;
}

/** The rollout's decisions, newest first. */
export async function listDecisions(
  db: Queryable,
  rolloutKey: string,
  limit = 50,
): Promise<TickSummary[]> {
  const { rows } = await db.query<DecisionRow>(
    'select * from rollout_decisions where rollout_key = $1 order by id desc limit $2',
    [rolloutKey, limit],
  );
  return rows.map(summaryOf);
}

/** Which exposures a step's tick analyzes. */
export interface StepWindow {
  surface: string;
  stableVersion: number;
  canaryVersion: number;
  /** Exposures routed under this generation or a later one, that started at or after `from`. */
  generation: number;
  from: string;
  /** The latency_p99 guardrail's limit, if there is one. */
  limitMs: number | null;
}

interface ArmRow {
  arm: 'stable' | 'canary';
  persons: number;
  n: number;
  n2: number;
  p99: number | null;
  [column: string]: number | string | null;
}

/**
 * Per-arm sums over persons of a step's window, in one statement: each exposure's clicks and
 * conversions (outcome rows; one per item and type), then per person N and each event count Y,
 * then per arm persons, ΣN, ΣN², and ΣY, ΣY², ΣN·Y of every event, with the arm's p99 latency.
 * Only exposures assigned to the two versions count (arm 'rules', routed to nothing, does not).
 */
export async function armSums(
  db: Queryable,
  w: StepWindow,
): Promise<{ stable: ArmSums; canary: ArmSums }> {
  const sums = EVENTS.map(
    (e) => `sum(${e}) as ${e}_y, sum(${e} * ${e}) as ${e}_y2, sum(n * ${e}) as ${e}_ny`,
  ).join(',\n           ');
  const { rows } = await db.query<ArmRow>(
    `with windowed as (
       select decision_id, person_id, arm, latency_ms, error, fallback
         from exposures
        where surface = $1 and generation >= $2 and at >= $3::timestamptz
          and ((arm = 'stable' and version = $4) or (arm = 'canary' and version = $5))
     ), outcome_counts as (
       select o.decision_id,
              count(*) filter (where o.type = 'click') as clicks,
              count(*) filter (where o.type = 'convert') as conversions
         from outcomes o join windowed w using (decision_id)
        group by o.decision_id
     ), per_person as (
       select w.arm, w.person_id,
              count(*)::float8 as n,
              coalesce(sum(c.clicks), 0)::float8 as clicks,
              coalesce(sum(c.conversions), 0)::float8 as conversions,
              (count(*) filter (where w.error))::float8 as errors,
              (count(*) filter (where w.fallback is not null))::float8 as fallbacks,
              (count(*) filter (where w.latency_ms > $6::float8))::float8 as slow
         from windowed w left join outcome_counts c using (decision_id)
        group by w.arm, w.person_id
     ), latency as (
       select arm, percentile_cont(0.99) within group (order by latency_ms) as p99
         from windowed group by arm
     )
     select p.arm, count(*)::float8 as persons, sum(n) as n, sum(n * n) as n2,
            ${sums},
            max(l.p99) as p99
       from per_person p join latency l using (arm)
      group by p.arm`,
    [w.surface, w.generation, w.from, w.stableVersion, w.canaryVersion, w.limitMs],
  );
  const result = { stable: emptyArm(), canary: emptyArm() };
  for (const row of rows) {
    const arm = result[row.arm];
    arm.persons = Number(row.persons);
    arm.n = Number(row.n);
    arm.n2 = Number(row.n2);
    arm.p99Ms = row.p99 === null ? null : Number(row.p99);
    for (const e of EVENTS) {
      arm.events[e] = {
        y: Number(row[`${e}_y`]),
        y2: Number(row[`${e}_y2`]),
        ny: Number(row[`${e}_ny`]),
      };
    }
  }
  return result;
}
