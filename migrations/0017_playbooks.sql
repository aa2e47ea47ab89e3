-- Up Migration
-- Incident playbooks (issue 7). Forward-only. Written by domain/playbooks/store.ts for the
-- runPlaybook workflow (one per incident, workflow id playbook/<incident>); read by pops playbook
-- status, pops incident show and the /v1/playbooks and /v1/incidents routes.

-- A registered playbook: its parsed definition (after zod) and the YAML it came from. A name and
-- version are registered once; the same text again is a no-op, other text under them a conflict.
create table playbooks (
  name text not null check (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  version integer not null check (version between 1 and 1000000),
  description text not null,
  definition jsonb not null,
  source text not null,
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  registered_by text not null,
  registered_at timestamptz not null default now(),
  primary key (name, version)
);

-- One incident, opened by the start of its playbook run; status follows the run.
create table incidents (
  id text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  title text not null,
  severity text not null check (severity in ('sev1', 'sev2', 'sev3', 'sev4')),
  status text not null default 'open' check (status in (
    'open', 'mitigating', 'awaiting-approval', 'compensating', 'resolved', 'failed', 'aborted')),
  surface text,
  playbook text not null,
  playbook_version integer not null,
  -- The parameters after defaults and types were applied.
  params jsonb not null,
  workflow_id text not null,
  run_id text,
  opened_by text not null,
  opened_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  closed_at timestamptz,
  foreign key (playbook, playbook_version) references playbooks (name, version)
);

-- The run's timeline, append-only: each step's start and end (outcome, outputs summary), approvals
-- and refusals, compensations, notes. entry_key (`<run key>/<sequence>`) makes a retried append a
-- no-op. `at` is the workflow's time of the entry (replay-stable), recorded_at the row's commit.
create table incident_timeline (
  id bigserial primary key,
  incident_id text not null references incidents (id),
  entry_key text not null unique,
  seq integer not null,
  kind text not null check (kind in (
    'run-started', 'step-started', 'step-ended', 'step-skipped', 'approval', 'escalation',
    'compensation-started', 'compensation-ended', 'note', 'abort-requested', 'run-ended')),
  step_id text,
  step_type text,
  outcome text,
  message text not null default '',
  summary jsonb not null default '{}'::jsonb,
  actor text not null,
  at timestamptz not null,
  recorded_at timestamptz not null default now()
);
create index incident_timeline_by_incident on incident_timeline (incident_id, seq, id);

create function incident_timeline_is_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'incident_timeline is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege';
end;
$$;
create trigger incident_timeline_no_update before update or delete on incident_timeline
  for each row execute function incident_timeline_is_append_only();
create trigger incident_timeline_no_truncate before truncate on incident_timeline
  for each statement execute function incident_timeline_is_append_only();

-- The persons an incident affected (identify_scope): person key as exposures store it, with the
-- decisions that exposed them, over which surfaces and versions, first and last.
create table incident_scope (
  incident_id text not null references incidents (id),
  person_key text not null,
  decisions integer not null check (decisions >= 0),
  surfaces text[] not null,
  versions integer[] not null,
  first_at timestamptz not null,
  last_at timestamptz not null,
  step_id text not null,
  primary key (incident_id, person_key)
);

-- The affected list handed to the DPO (export_scope): the CSV itself, kept with its digest.
create table incident_exports (
  incident_id text not null references incidents (id),
  step_id text not null,
  rows integer not null,
  csv text not null,
  sha256 text not null,
  created_at timestamptz not null default now(),
  primary key (incident_id, step_id)
);

-- Outbound calls of playbook steps (notify webhooks, http): a row is written before the call and
-- completed after it, under the step's effect key; a retry after a completed call sends nothing,
-- one after an interrupted call sends again with the same Idempotency-Key header.
create table playbook_effects (
  effect_key text primary key,
  incident_id text not null references incidents (id),
  step_id text not null,
  kind text not null,
  attempts integer not null default 0,
  status text not null default 'sending' check (status in ('sending', 'done')),
  response jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
