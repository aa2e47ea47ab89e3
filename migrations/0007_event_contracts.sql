-- Up Migration
-- Data contracts: the declared property schema of a track event (for every source, or for one),
-- and the quarantine, where a message that breaks its event's contract is kept with the reasons
-- instead of landing in `events`. Nothing is coerced: a message is stored as it came, or kept
-- aside. Forward-only.

-- Every version of every contract. A version's schema (its properties and additionalProperties)
-- never changes once registered: a change is a new version. Owner and description may change in
-- place. The active contract of an event for a source is the highest version declared for that
-- source, or else the highest declared for every source (source null).
create table event_contracts (
  id bigserial primary key,
  event text not null check (event <> ''),
  source text check (source ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  version integer not null check (version > 0),
  -- `{additionalProperties, properties}` as declared (validated), and the sha256 of its canonical
  -- JSON.
  schema jsonb not null,
  schema_sha256 text not null check (schema_sha256 ~ '^[0-9a-f]{64}$'),
  owner text not null,
  description text,
  registered_at timestamptz not null default now(),
  registered_by text not null,
  updated_at timestamptz not null default now(),
  unique nulls not distinct (event, source, version)
);

-- A message that broke its contract, whole, as the sender sent it (the batch context merged in),
-- with the contract that judged it and why: `reasons` is a non-empty array of
-- `{path, rule, expected, got}` (`got` is the received value as JSON text, or `missing`). One row
-- per messageId; a message already stored in `events` is never quarantined.
create table quarantined_events (
  id bigserial primary key,
  message_id text not null unique,
  source text not null,
  event text not null,
  contract_id bigint not null references event_contracts (id),
  message jsonb not null,
  reasons jsonb not null
    check (jsonb_typeof(reasons) = 'array' and jsonb_array_length(reasons) > 0),
  received_at timestamptz not null default now()
);
create index quarantined_events_event_received on quarantined_events (event, received_at desc);
create index quarantined_events_received on quarantined_events (received_at desc);

-- How many quarantined messages broke each rule of each event's contracts.
create view quarantine_reason_counts as
select q.event, r.reason ->> 'path' as path, r.reason ->> 'rule' as rule,
       r.reason ->> 'expected' as expected, count(*)::int as messages,
       max(q.received_at) as last_received_at
  from quarantined_events q
       cross join lateral jsonb_array_elements(q.reasons) as r(reason)
 group by 1, 2, 3, 4;
