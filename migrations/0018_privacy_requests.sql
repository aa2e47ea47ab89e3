-- Up Migration
-- Data subject requests (export and deletion) and the tombstones of deleted identifiers.
-- Forward-only.

-- One row per request. The identifier is kept only as its keyed hash (HMAC-SHA256, key of
-- domain/privacy/keys.ts): a request id is that hash's first characters and the kind, so a second
-- request for the same identifier is the same request (its workflow attaches).
create table privacy_requests (
  id text primary key check (id ~ '^(delete|export)-[0-9a-f]{24}$'),
  kind text not null check (kind in ('delete', 'export')),
  identifier_hash text not null check (identifier_hash ~ '^[0-9a-f]{64}$'),
  reason text not null default '',
  requested_by text not null,
  status text not null default 'pending' check (status in ('pending', 'running', 'done')),
  -- Rows deleted or exported per table, once done.
  counts jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  finished_at timestamptz
);

-- What the request is about, captured once before anything is deleted (a retried step must find
-- the same rows after the identifiers that led to them are gone). Holds personal data: deleted
-- when the request is done.
create table privacy_subjects (
  request_id text primary key references privacy_requests (id),
  person_ids bigint[] not null,
  person_keys text[] not null,
  raw_ids text[] not null,
  identifiers jsonb not null,
  event_ids bigint[] not null,
  message_ids text[] not null,
  decision_ids uuid[] not null,
  identifier_hashes text[] not null
);

-- The ledger of a request's steps: a retried step finds its row and returns the same count.
create table privacy_request_steps (
  request_id text not null references privacy_requests (id),
  step text not null,
  rows integer not null,
  done_at timestamptz not null default now(),
  primary key (request_id, step)
);

-- A deleted identifier, by keyed hash: ingestion drops messages that carry one, so a deleted
-- person is not re-created by events still on their way.
create table privacy_tombstones (
  identifier_hash text primary key check (identifier_hash ~ '^[0-9a-f]{64}$'),
  request_id text not null references privacy_requests (id),
  created_at timestamptz not null default now()
);

-- The bundle of an export request (personal data: retention deletes it, and a deletion of the
-- person deletes it too, found by identifier hash).
create table privacy_exports (
  request_id text primary key references privacy_requests (id),
  identifier_hashes text[] not null,
  bundle jsonb not null,
  created_at timestamptz not null default now()
);
create index privacy_exports_hashes on privacy_exports using gin (identifier_hashes);

-- Ingestion dropped messages of tombstoned identifiers, counted per day and source (no content).
create table privacy_dropped_messages (
  day date not null,
  source text not null,
  messages bigint not null,
  primary key (day, source)
);
