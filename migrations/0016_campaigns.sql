-- Up Migration
-- Lifecycle email campaigns (issue 8). Forward-only. Written by domain/campaigns/* for the
-- runCampaign, sendNotice and measureCampaignLift workflows; read by pops campaign and
-- /v1/campaigns. No table here holds an email address: persons are person keys (as the feature
-- store keys them) and the address is asked of domain/privacy/contacts.ts at send time.

-- A campaign's definition (domain/campaigns/definition.ts, after zod) and whether it is paused.
create table campaigns (
  name text primary key,
  definition jsonb not null,
  -- Where the definition came from: `file:<path>` or `api`.
  origin text not null,
  paused boolean not null default false,
  paused_reason text,
  updated_by text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- One row per fire time of a campaign (a notice is the campaign `notice:<id>` at the epoch). The
-- definition is the one the run started with, so an edit never changes a run half way.
create table campaign_runs (
  campaign text not null,
  fire_time timestamptz not null,
  workflow_id text not null,
  definition jsonb not null,
  status text not null default 'running'
    check (status in ('running', 'completed', 'late', 'failed')),
  -- How late the run began (ms after its fire time), and the limit it was held to.
  late_by_ms bigint not null default 0,
  max_lateness_ms bigint,
  audience_size integer,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (campaign, fire_time)
);

-- The audience of a run as it was snapshotted at its start, numbered for batches.
create table campaign_audience (
  campaign text not null,
  fire_time timestamptz not null,
  seq integer not null,
  person_key text not null,
  holdout boolean not null,
  time_zone text not null,
  -- Where the zone came from: `event` (the latest event's context.timezone), `trait`, `default`.
  zone_source text not null,
  -- The audience features' values that admitted the person, by `name@version:window`.
  features jsonb not null default '{}'::jsonb,
  primary key (campaign, fire_time, seq),
  unique (campaign, fire_time, person_key),
  foreign key (campaign, fire_time) references campaign_runs (campaign, fire_time)
);

-- The send ledger: one row per (campaign, fire time, person), written BEFORE the message is
-- handed to SMTP (status pending) and marked after. A pending row found by a later attempt is an
-- unknown outcome and is never sent again (at-most-once for marketing mail).
create table campaign_sends (
  campaign text not null,
  fire_time timestamptz not null,
  person_key text not null,
  holdout boolean not null default false,
  status text not null check (status in
    ('pending', 'sent', 'failed', 'unknown', 'would_send', 'skipped', 'held')),
  -- Why: a skip's gate (no_consent, suppressed, capped, quiet_hours, no_address, render_error),
  -- a failure's SMTP answer, `unknown`'s cause.
  reason text,
  -- Held by quiet hours (behaviour hold) or the person's local send time: when it may go.
  release_at timestamptz,
  message_id text,
  smtp_response text,
  attempts integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (campaign, fire_time, person_key)
);
create index campaign_sends_held on campaign_sends (campaign, fire_time, release_at)
  where status = 'held';
create index campaign_sends_person on campaign_sends (person_key);

-- Frequency-cap slots: one per marketing message reserved to a person, across campaigns. Reserved
-- (under a per-person advisory lock) before the ledger row, deleted again when the send fails.
create table campaign_cap_slots (
  person_key text not null,
  campaign text not null,
  fire_time timestamptz not null,
  reserved_at timestamptz not null,
  primary key (person_key, campaign, fire_time)
);
create index campaign_cap_slots_recent on campaign_cap_slots (person_key, reserved_at);

-- Persons suppressed under a key (an incident id): no campaign mail while the row is not lifted.
create table campaign_suppressions (
  key text not null,
  person_key text not null,
  reason text not null,
  actor text not null,
  created_at timestamptz not null default now(),
  lifted_at timestamptz,
  lifted_by text,
  primary key (key, person_key)
);
create index campaign_suppressions_person on campaign_suppressions (person_key)
  where lifted_at is null;

-- The persons a notice (sendNotice, issue 7's notify step) goes to.
create table notice_audiences (
  notice_id text not null,
  person_key text not null,
  primary key (notice_id, person_key)
);

-- Stored reports: a run's (sent, held out, skipped by reason) and lift reports per horizon.
create table campaign_reports (
  campaign text not null,
  fire_time timestamptz not null,
  kind text not null check (kind in ('run', 'lift')),
  horizon_days integer not null default 0,
  report jsonb not null,
  created_at timestamptz not null default now(),
  primary key (campaign, fire_time, kind, horizon_days)
);
