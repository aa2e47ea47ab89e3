-- Up Migration
-- Privacy and access: consent per identifier and purpose with its history and the defaults that
-- apply without one, the addresses campaigns send to, and the API tokens (hashed) with their roles.
-- Forward-only.

-- Every consent change, as it was recorded: a repeat of the identifier's current state is not
-- written (recordConsent compares first). The consent of a person is the latest row by
-- effective_at over all the identifiers that resolve to it (domain/privacy/consent.ts).
-- identifier_value is stored as identity resolution stores it (a keyed hash for emails and phones
-- once minimization is on), so that the two join.
create table consent_events (
  id bigserial primary key,
  identifier_type text not null check (length(identifier_type) between 1 and 64),
  identifier_value text not null check (length(identifier_value) between 1 and 512),
  purpose text not null check (purpose in ('personalization', 'marketing', 'analytics')),
  granted boolean not null,
  source text not null check (length(source) between 1 and 200),
  actor text not null,
  effective_at timestamptz not null,
  recorded_at timestamptz not null default now()
);
create index consent_events_identifier
  on consent_events (identifier_type, identifier_value, purpose, effective_at desc, id desc);

-- What applies to a person with no consent event for a purpose. Marketing is opt-in: its default
-- can only be "not granted".
create table consent_defaults (
  purpose text primary key check (purpose in ('personalization', 'marketing', 'analytics')),
  granted boolean not null,
  updated_at timestamptz not null default now(),
  updated_by text not null,
  check (purpose <> 'marketing' or not granted)
);
insert into consent_defaults (purpose, granted, updated_by) values
  ('personalization', true, 'migration'),
  ('analytics', true, 'migration'),
  ('marketing', false, 'migration');

-- The address to send to, per person key (as the feature store spells it). Only the privacy code
-- writes it (domain/privacy/contacts.ts).
create table contacts (
  person_key text primary key check (length(person_key) between 1 and 600),
  email text not null,
  source text not null,
  updated_at timestamptz not null default now()
);

-- API tokens: the token is shown once when it is created; only its sha256 is kept. The id is the
-- token's first characters, not secret, so that a token can be listed and revoked by it.
create table api_tokens (
  id text primary key check (id ~ '^pt_[A-Za-z0-9_-]{8}$'),
  token_sha256 text not null unique check (token_sha256 ~ '^[0-9a-f]{64}$'),
  role text not null
    check (role in ('admin', 'mlops', 'marketer', 'responder', 'auditor', 'ingest')),
  name text not null check (length(name) between 1 and 100),
  created_at timestamptz not null default now(),
  created_by text not null,
  revoked_at timestamptz,
  revoked_by text,
  check ((revoked_at is null) = (revoked_by is null))
);
