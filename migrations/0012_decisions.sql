-- Up Migration
-- Decision serving and canary rollouts (issue 6). Forward-only. Written by domain/decide/surfaces.ts
-- (routes, modes) and domain/decide/exposures.ts (exposures, outcomes); read by the rollout workflow.
--
-- A surface (a place that asks for decisions: a home page row, an email block) serves one model.
-- Its routing table gives each serving version a weight in basis points (0..10000, summing to
-- 10000 over the surface). A person is bucketed by a salted hash of their person id into 0..9999;
-- the canary version takes buckets [0, canary weight), so a person in the canary at 5% stays in it
-- at 10% (sticky), and everyone else gets the stable version.
create table surfaces (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
  model text not null references models (name),
  -- normal: the routed version decides; conservative and rules-only: the rules answer
  -- (popular items the person has not consumed), with the fallback recorded.
  mode text not null default 'normal' check (mode in ('normal', 'conservative', 'rules-only')),
  salt text not null,
  -- Bumped by every routing or mode change, in the same transaction: servers poll it and reload.
  generation bigint not null default 1,
  created_by text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- The target of surface_routes' (surface, model) key: a route serves a version of the surface's model.
  unique (name, model)
);

-- The routing table. At most one stable and one canary (unique role); at the end of every
-- transaction a surface has exactly one stable route and its weights sum to 10000 (a deferred
-- constraint trigger checks it, so a change replaces the routes inside one transaction).
create table surface_routes (
  surface text not null,
  model text not null,
  version integer not null,
  role text not null check (role in ('stable', 'canary')),
  weight_bp integer not null check (weight_bp between 0 and 10000),
  primary key (surface, version),
  unique (surface, role),
  foreign key (surface, model) references surfaces (name, model),
  foreign key (model, version) references model_versions (model, version)
);

create function surface_routes_are_whole() returns trigger language plpgsql as $$
declare
  s text := coalesce(new.surface, old.surface);
  stables integer;
  total bigint;
begin
  if not exists (select 1 from surfaces where name = s) then
    return null;
  end if;
  select count(*) filter (where role = 'stable'), coalesce(sum(weight_bp), 0)
    into stables, total from surface_routes where surface = s;
  if stables <> 1 or total <> 10000 then
    raise exception 'surface %: routes need exactly one stable route and weights summing to 10000 (found % stable, % bp)',
      s, stables, total using errcode = 'check_violation';
  end if;
  return null;
end;
$$;
create constraint trigger surface_routes_whole after insert or update or delete on surface_routes
  deferrable initially deferred for each row execute function surface_routes_are_whole();

-- Every routing or mode change, append-only (who, why, which workflow), for the timeline. The row
-- holds the surface's routes and mode after the change, under the generation the change produced.
create table routing_changes (
  id bigserial primary key,
  surface text not null references surfaces (name),
  generation bigint not null,
  -- [{ "version": 3, "role": "stable", "weightBp": 9500 }, ...]
  routes jsonb not null,
  mode text not null,
  actor text not null,
  reason text not null,
  workflow_id text,
  -- Idempotence: an activity retried with the same key records nothing twice (and changes nothing).
  change_key text unique,
  -- The change's transaction start (now()); the change is visible to servers from its commit on.
  at timestamptz not null default now(),
  unique (surface, generation)
);

create function routing_changes_are_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'routing_changes is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege';
end;
$$;
create trigger routing_changes_no_update before update or delete on routing_changes
  for each row execute function routing_changes_are_append_only();
create trigger routing_changes_no_truncate before truncate on routing_changes
  for each statement execute function routing_changes_are_append_only();

-- One row per decision served, written behind the response in batches (so `at` is set by the
-- server when the decision started, not when the row was flushed). arm and version are the
-- assignment: the arm the person's bucket routed to and its version, kept when that version failed
-- and the rules answered instead (fallback says why, error says it failed while scoring), so an
-- arm's figures count its failures. arm 'rules' (version null): nothing was routed, because the
-- surface's mode is not normal or the server's routing table was too old to trust.
create table exposures (
  decision_id uuid primary key,
  surface text not null references surfaces (name),
  person_id text not null,
  version integer,
  arm text not null check (arm in ('stable', 'canary', 'rules')),
  -- The surface generation the decision was routed under.
  generation bigint not null,
  -- The items returned, best first, and their scores (the rules' scores are popularity counts).
  items text[] not null,
  scores real[] not null check (cardinality(scores) = cardinality(items)),
  latency_ms real not null,
  fallback text,
  -- The model failed while scoring (the rules answered instead).
  error boolean not null default false,
  at timestamptz not null,
  check ((arm = 'rules') = (version is null))
);
create index exposures_by_surface_time on exposures (surface, at);

-- Outcomes of a decision's items; (decision, item, type) once, so a repeated report is a no-op.
create table outcomes (
  id bigserial primary key,
  decision_id uuid not null references exposures (decision_id),
  item_id text not null,
  type text not null check (type in ('click', 'convert', 'dismiss')),
  at timestamptz not null default now(),
  unique (decision_id, item_id, type)
);
