-- Up Migration
-- The foundation: events, items, the append-only audit log, training sets, checkpoints and the
-- model registry. Forward-only: node-pg-migrate runs each file once, inside its own transaction.

create table events (
  id bigserial primary key,
  message_id text not null unique,
  source text not null,
  type text not null check (type in ('track', 'identify', 'alias', 'page')),
  event text,
  person_id text not null,
  user_id text,
  anonymous_id text,
  previous_id text,
  item_id text,
  ts timestamptz not null,
  received_at timestamptz not null default now(),
  properties jsonb not null default '{}'::jsonb,
  traits jsonb,
  context jsonb
);
create index events_source_event_ts on events (source, event, ts);
create index events_person_ts on events (person_id, ts);

create table items (
  source text not null,
  item_id text not null,
  title text,
  genres text[] not null default '{}',
  primary key (source, item_id)
);

-- Every decision of every workflow, hash-chained: hash = sha256(prev_hash || canonical json of the row).
create table audit_log (
  seq bigint primary key,
  at timestamptz not null,
  actor text not null,
  action text not null,
  subject text not null,
  workflow_id text,
  run_id text,
  idempotency_key text unique,
  inputs jsonb not null default '{}'::jsonb,
  outputs jsonb not null default '{}'::jsonb,
  prev_hash text not null,
  hash text not null
);
create index audit_log_subject on audit_log (subject, seq);
create index audit_log_workflow on audit_log (workflow_id, seq);

create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'audit_log is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege';
end;
$$;
create trigger audit_log_no_update before update or delete on audit_log
  for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
  for each statement execute function audit_log_is_append_only();

-- A model is declared once with the event source it learns from; versions are registered by retraining.
create table models (
  name text primary key,
  source text not null,
  description text not null default '',
  created_at timestamptz not null default now(),
  created_by text not null
);

create table training_sets (
  set_key text primary key,
  model text not null references models (name),
  source text not null,
  train_from timestamptz not null,
  train_until timestamptz not null,
  validate_until timestamptz not null,
  features text[] not null,
  train_rows integer not null,
  validate_rows integer not null,
  created_at timestamptz not null default now()
);

create table training_examples (
  set_key text not null references training_sets (set_key),
  event_id bigint not null,
  split text not null check (split in ('train', 'validate')),
  person_id text not null,
  item_id text not null,
  ts timestamptz not null,
  rating real not null,
  label smallint not null check (label in (0, 1)),
  features real[] not null,
  primary key (set_key, event_id)
);

-- The latest completed epoch of a training run; a retried activity resumes from here.
create table training_checkpoints (
  run_key text primary key,
  epoch integer not null,
  total_epochs integer not null,
  state bytea not null,
  loss double precision,
  updated_at timestamptz not null default now()
);

create table model_artifacts (
  sha256 text primary key,
  topology jsonb not null,
  weight_specs jsonb not null,
  weights bytea not null,
  preprocessing jsonb not null,
  created_at timestamptz not null default now()
);

-- What one training run produced, keyed by the run, so a retried step finds it instead of training again.
create table training_results (
  run_key text primary key,
  artifact_sha256 text not null references model_artifacts (sha256),
  backend text not null,
  epochs integer not null,
  examples_per_second double precision not null,
  final_loss double precision,
  resumed_from_epoch integer not null default 0,
  created_at timestamptz not null default now()
);

create table model_versions (
  model text not null references models (name),
  version integer not null check (version > 0),
  run_key text not null unique,
  artifact_sha256 text not null references model_artifacts (sha256),
  set_key text not null references training_sets (set_key),
  backend text not null,
  code_commit text,
  features text[] not null,
  metrics jsonb not null,
  baseline_metrics jsonb not null,
  data_range jsonb not null,
  row_counts jsonb not null,
  reason text not null,
  workflow_id text not null,
  run_id text not null,
  created_by text not null,
  created_at timestamptz not null default now(),
  primary key (model, version)
);
