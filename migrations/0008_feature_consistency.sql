-- Up Migration
-- Consistency checks of the online store against the offline store, and the index that point-in-time
-- reads of one entity need. Forward-only.

-- The latest snapshot of one entity at or before an instant (offline-at-t reads, the consistency
-- check, training labels): the primary key leads with ts, which serves partition scans, not these.
create index if not exists feature_values_by_entity on feature_values (name, version, entity_id, ts);

-- One consistency check (one workflow run): what it was asked, and its totals once it finished.
create table feature_consistency_checks (
  workflow_id text not null,
  run_id text not null,
  features jsonb not null,
  sample integer not null check (sample > 0),
  requested_by text not null,
  reason text not null,
  status text not null default 'running' check (status in ('running', 'completed')),
  checked integer,
  mismatches integer,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (workflow_id, run_id)
);

-- Per feature version of a check: the instant both stores were read at (one snapshot of the
-- database), how many sampled entities were compared, and how many window values differed.
create table feature_consistency_results (
  workflow_id text not null,
  run_id text not null,
  name text not null,
  version integer not null,
  compared_at timestamptz not null,
  checked integer not null,
  mismatches integer not null,
  mismatched_entities integer not null,
  primary key (workflow_id, run_id, name, version),
  foreign key (workflow_id, run_id) references feature_consistency_checks (workflow_id, run_id),
  foreign key (name, version) references feature_versions (name, version)
);

-- Each window value that differed: the online value and the offline-at-compared_at value (JSON:
-- a number, a boolean or null), with the snapshot time each came from.
create table feature_consistency_mismatches (
  workflow_id text not null,
  run_id text not null,
  name text not null,
  version integer not null,
  entity_id text not null,
  feature_window text not null,
  online jsonb,
  offline jsonb,
  online_ts timestamptz,
  offline_ts timestamptz,
  primary key (workflow_id, run_id, name, version, entity_id, feature_window),
  foreign key (workflow_id, run_id, name, version)
    references feature_consistency_results (workflow_id, run_id, name, version)
);
