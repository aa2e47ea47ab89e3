-- Up Migration
-- The identity graph: persons, the identifiers that resolve to them, which person each event was
-- attributed to, merge history, conflicts (identifiers a rule kept out of a merge), and how far
-- mergeIdentities has read `events`. Forward-only.
--
-- Writers: only the identity code, always under the identity advisory lock (domain/identity/store.ts),
-- which is also what assigns person ids (max + 1, in the order persons are created).

-- A person is never deleted by a merge: the merged one points at the person it was merged into, and
-- every person points at its canonical person (itself while it is not merged). `merged_into` keeps
-- the merge tree that unmerge needs; `canonical_id` is that tree flattened, so a lookup is one hop.
create table persons (
  id bigint primary key check (id > 0),
  canonical_id bigint not null references persons (id),
  merged_into bigint references persons (id),
  -- The event time of the earliest event attributed to the person: "older" when choosing a survivor.
  first_seen_at timestamptz not null,
  first_event_id bigint not null,
  created_at timestamptz not null default now(),
  merged_at timestamptz,
  check ((merged_into is null) = (canonical_id = id)),
  check ((merged_into is null) = (merged_at is null))
);
create index persons_canonical on persons (canonical_id);

-- One row per distinct normalized identifier. `person_id` is the person it joined when first seen
-- and never changes; its current person is persons.canonical_id of that row.
create table identifiers (
  type text not null,
  value text not null check (length(value) between 1 and 512),
  person_id bigint not null references persons (id),
  first_seen_at timestamptz not null,
  first_event_id bigint not null,
  primary key (type, value)
);
create index identifiers_person on identifiers (person_id);

-- The person each event was attributed to when it was resolved (events whose identifiers were all
-- junk have no row). Its current person is persons.canonical_id of that row: re-pointing is lazy.
create table event_persons (
  event_id bigint primary key,
  person_id bigint not null references persons (id)
);
create index event_persons_person on event_persons (person_id);

-- Every merge of two persons, with the message that caused it and the figures that decided it.
create table identity_merges (
  id bigserial primary key,
  merged_from bigint not null references persons (id),
  merged_into bigint not null references persons (id),
  event_id bigint not null,
  message_id text not null,
  decisions jsonb not null,
  workflow_id text not null,
  run_id text not null,
  chunk_after bigint not null,
  merged_at timestamptz not null default now(),
  unique (event_id, merged_from),
  check (merged_from <> merged_into)
);
create index identity_merges_from on identity_merges (merged_from);
create index identity_merges_into on identity_merges (merged_into);

-- An identifier that a message carried but a limit kept out of its merge: the event was attributed
-- without it, and it stayed with (or founded) the person named here.
create table identity_conflicts (
  id bigserial primary key,
  event_id bigint not null,
  message_id text not null,
  identifier_type text not null,
  identifier_value text not null,
  identifier_person_id bigint not null references persons (id),
  attributed_person_id bigint not null references persons (id),
  reason text not null,
  rule jsonb not null,
  workflow_id text not null,
  run_id text not null,
  chunk_after bigint not null,
  recorded_at timestamptz not null default now(),
  unique (event_id, identifier_type, identifier_value)
);
create index identity_conflicts_identifier on identity_conflicts (identifier_type, identifier_value);

-- How far identity resolution has read `events`: every event with id <= last_event_id is resolved.
-- One row, 'events' (a global watermark on events.id); the name leaves room for more streams.
create table identity_watermarks (
  name text primary key,
  last_event_id bigint not null check (last_event_id >= 0),
  updated_at timestamptz not null default now()
);
insert into identity_watermarks (name, last_event_id) values ('events', 0);

-- The ledger of resolved chunks, written in the same transaction as the graph and the watermark:
-- a retried chunk finds its row and returns the same summary instead of resolving again.
create table identity_chunks (
  after_event_id bigint primary key,
  through_event_id bigint not null,
  summary jsonb not null,
  rules jsonb not null,
  rules_sha256 text not null,
  workflow_id text not null,
  run_id text not null,
  resolved_at timestamptz not null default now(),
  check (through_event_id > after_event_id)
);
