-- Up Migration
-- The feature registry: every version of every declared feature. A version's computation (entity,
-- source, aggregation, windows, type, default) never changes once registered: a change is a new
-- version, and the old one stays readable. Owner, description and freshness SLA may be updated in
-- place. Forward-only.
create table feature_versions (
  name text not null check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  version integer not null check (version > 0),
  entity text not null check (entity in ('person', 'item', 'person_item')),
  value_type text not null check (value_type in ('float', 'int', 'bool')),
  -- The whole definition as declared (validated), and the sha256 of its computation part.
  definition jsonb not null,
  computation_sha256 text not null,
  owner text not null,
  description text not null,
  freshness_sla_seconds integer not null check (freshness_sla_seconds > 0),
  registered_at timestamptz not null default now(),
  registered_by text not null,
  updated_at timestamptz not null default now(),
  primary key (name, version)
);
