-- Up Migration
-- Drift monitoring (issue 5). Forward-only.
--
-- A monitor is configured per model (its zod schema is domain/drift/config.ts) and runs on a Temporal
-- Schedule `drift/<model>`. Every run stores its whole report; the decision (retrain or not, and why)
-- is a column of the same row, so "why did this model retrain" is answered from this table.

create table drift_monitors (
  model text primary key references models (name),
  config jsonb not null,
  created_by text not null,
  created_at timestamptz not null default now(),
  updated_by text not null,
  updated_at timestamptz not null default now()
);

-- Bin edges (numeric features) or categories (categorical ones) are frozen with the model version
-- the first time a run needs them: every later run against that version bins the same way.
create table drift_bin_edges (
  model text not null,
  version integer not null,
  feature text not null,
  kind text not null check (kind in ('numeric', 'categorical', 'binary')),
  edges double precision[] not null,
  created_at timestamptz not null default now(),
  primary key (model, version, feature),
  foreign key (model, version) references model_versions (model, version)
);

-- The point-in-time rows a run compared (kept in pit_set_rows under this key), written once.
create table drift_sets (
  set_key text primary key,
  range_from timestamptz not null,
  -- Exclusive: rows with range_from <= ts < range_to.
  range_to timestamptz not null,
  row_count integer not null,
  built_at timestamptz not null default now()
);

create table drift_runs (
  id bigserial primary key,
  -- The monitorDrift execution (`workflowId/runId`): a retried activity finds its row.
  run_key text not null unique,
  model text not null references models (name),
  version integer not null,
  reference jsonb not null,
  current jsonb not null,
  report jsonb not null,
  drifted boolean not null,
  -- One of: retrain-requested, consecutive-short, cooldown, no-drift, insufficient-data,
  -- observe-only. Null until decided.
  decision text,
  decision_reason text,
  consecutive integer,
  retrain_workflow_id text,
  retrain_run_id text,
  retrain_attached boolean,
  requested_by text not null,
  created_at timestamptz not null default now(),
  decided_at timestamptz,
  foreign key (model, version) references model_versions (model, version)
);
create index drift_runs_by_model on drift_runs (model, id desc);
