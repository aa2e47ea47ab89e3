-- Up Migration
-- The model registry's aliases and the links of a version. An alias (`production`, `candidate`,
-- `previous` or a custom name) points at one version of its model; every move of an alias is one
-- row of model_alias_history, written in the same transaction as the move and never changed
-- afterwards. A move is keyed by its move_key, so a retried move finds its row and changes nothing.
-- Written by domain/registry-aliases.ts. Forward-only.

create table model_aliases (
  model text not null references models (name),
  -- Named like models: lowercase letters, digits, dot, dash, underscore.
  alias text not null check (alias ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
  version integer not null,
  updated_at timestamptz not null default now(),
  updated_by text not null,
  -- The move that put the alias where it points (a row of model_alias_history).
  move_key text not null,
  primary key (model, alias),
  foreign key (model, version) references model_versions (model, version)
);
create index model_aliases_version on model_aliases (model, version);

create table model_alias_history (
  id bigserial primary key,
  model text not null references models (name),
  alias text not null check (alias ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
  -- Null: the alias did not exist before (from) or was removed (to).
  from_version integer,
  to_version integer,
  -- What moved it: a registration (candidate), a promotion, a rollback, or a move by hand. A
  -- rollback reads the promotions of production to find the version before the one it restores.
  kind text not null check (kind in ('register', 'promote', 'rollback', 'move')),
  actor text not null,
  reason text not null,
  workflow_id text,
  move_key text not null unique,
  at timestamptz not null default now(),
  foreign key (model, from_version) references model_versions (model, version),
  foreign key (model, to_version) references model_versions (model, version)
);
create index model_alias_history_alias on model_alias_history (model, alias, id);

create function model_alias_history_is_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'model_alias_history is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege';
end;
$$;
create trigger model_alias_history_no_update before update or delete on model_alias_history
  for each row execute function model_alias_history_is_append_only();
create trigger model_alias_history_no_truncate before truncate on model_alias_history
  for each statement execute function model_alias_history_is_append_only();

-- The links of a version beyond its training set, features, code commit and artifact: the drift run
-- that triggered its retraining, and its validation report with the verdict (null: not validated).
alter table model_versions add column drift_run_id text;
alter table model_versions add column validation jsonb;
alter table model_versions add column blessed boolean;
