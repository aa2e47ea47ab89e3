-- Up Migration
-- Canary rollouts (issue 6). Forward-only. Written by activities/rollout.ts for the rolloutModel
-- workflow (one per surface, workflow id rollout/<surface>); read by pops rollout status and
-- GET /v1/rollouts/:surface. The routing itself lives in surface_routes (0012).

-- One row per rollout: what it rolls out where, how it is configured, where it stands, how it
-- ended. Keyed by `<workflow id>/<first run id>`, which survives continue-as-new.
create table rollouts (
  rollout_key text primary key,
  workflow_id text not null,
  surface text not null references surfaces (name),
  model text not null,
  version integer not null,
  -- The version that served the surface when the rollout began: what a rollback returns to.
  stable_version integer not null,
  -- The workflow's input after zod (steps, bakes, guardrails, alpha, ...).
  config jsonb not null,
  state text not null default 'running' check (state in ('running', 'promoted', 'rolled-back')),
  -- The workflow's phase when it last wrote (for a status read without a worker).
  phase text not null default 'starting',
  step_index integer not null default 0,
  weight_bp integer not null default 0 check (weight_bp between 0 and 10000),
  -- Why it does not advance: { reason, by, detail }; null while it runs freely.
  hold jsonb,
  requested_by text not null,
  started_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  ended_at timestamptz,
  -- How it ended: promotion (alias move, generation) or rollback (trigger, who, why, latency).
  outcome jsonb,
  -- The tick whose breach rolled it back, the generation of the switch back to stable, and the
  -- time from that tick's decision to the switch's commit (ms).
  breach_decision_id bigint,
  rollback_generation bigint,
  rollback_latency_ms double precision,
  foreign key (model, version) references model_versions (model, version),
  foreign key (model, stable_version) references model_versions (model, version),
  check (version <> stable_version)
);
-- A surface has one rollout running at most, whatever the workflow ids say.
create unique index rollouts_one_running_per_surface on rollouts (surface) where state = 'running';

-- Every analysis tick's decision with the figures that made it: the window analyzed, the
-- sample-ratio test, per-arm persons and exposures, each guardrail's estimates and its confidence
-- sequence interval. `decision_key` (`<rollout key>/step/<i>/tick/<n>`) makes a retried analysis
-- return the row it wrote.
create table rollout_decisions (
  id bigserial primary key,
  rollout_key text not null references rollouts (rollout_key),
  decision_key text not null unique,
  step_index integer not null,
  step_percent double precision not null,
  weight_bp integer not null,
  tick integer not null,
  -- The window: exposures of the surface with generation >= window_generation and at >= window_from.
  window_generation bigint not null,
  window_from timestamptz not null,
  decision text not null check (decision in (
    'collecting', 'continue', 'pass', 'extend', 'pause-insufficient', 'paused', 'srm-hold',
    'routing-changed', 'rollback')),
  reason text not null,
  enough boolean not null,
  srm jsonb not null,
  arms jsonb not null,
  guardrails jsonb not null,
  -- The analyzing worker's clock when it decided (a rollback's latency starts here).
  detected_at timestamptz not null,
  decided_at timestamptz not null default now()
);
create index rollout_decisions_by_rollout on rollout_decisions (rollout_key, id);
