-- Up Migration
-- The feature store: daily tiles, the offline store (daily snapshots), the online store, and the
-- bookkeeping of backfills and incremental materialization. Forward-only.
--
-- Time model (every reader applies it the same way): a snapshot stamped `ts` (a UTC midnight) holds
-- the value computed from source rows with time < ts, that is, rows of UTC days before ts. A point-in-time
-- read at instant t takes the latest snapshot with ts <= t (inclusive), provided t - ts <= ttl.

-- Per feature version, entity and UTC day: the partial aggregates of that day's source rows. Only the
-- columns the aggregation needs are filled in.
create table feature_tiles (
  name text not null,
  version integer not null,
  day date not null,
  entity_id text not null,
  n bigint not null check (n > 0),
  total double precision,
  hits bigint,
  last_ts timestamptz,
  last_value double precision,
  distinct_values text[],
  primary key (name, version, day, entity_id),
  foreign key (name, version) references feature_versions (name, version)
);
create index feature_tiles_entity on feature_tiles (name, version, entity_id, day);

-- The offline store: one row per feature version, snapshot time and entity whose value changed at
-- that snapshot (it had source rows that day, or rows left one of its windows). `vals` has one value
-- per window, in the definition's order; null is missing.
create table feature_values (
  name text not null,
  version integer not null,
  ts timestamptz not null,
  entity_id text not null,
  vals double precision[] not null,
  primary key (name, version, ts, entity_id),
  foreign key (name, version) references feature_versions (name, version)
);

-- The online store: the latest snapshot per feature version and entity. A write only replaces a
-- value of the same or an older time (guarded by ts), so an old backfill never overwrites a newer value.
create table feature_online (
  name text not null,
  version integer not null,
  entity_id text not null,
  ts timestamptz not null,
  vals double precision[] not null,
  written_at timestamptz not null default now(),
  primary key (name, version, entity_id),
  foreign key (name, version) references feature_versions (name, version)
);

-- A backfill run (one per workflow id) and the partitions it computed.
create table feature_backfills (
  id text primary key,
  features jsonb not null,
  from_day date not null,
  to_day date not null,
  partition_unit text not null check (partition_unit in ('day', 'week', 'month', 'year')),
  requested_by text not null,
  reason text not null,
  status text not null default 'running' check (status in ('running', 'completed', 'failed')),
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  check (from_day <= to_day)
);

-- One row per feature version and snapshot day computed: what was written and its quality figures.
create table feature_partitions (
  name text not null,
  version integer not null,
  day date not null,
  backfill_id text not null,
  tile_rows integer not null,
  value_rows integer not null,
  quality jsonb not null default '{}'::jsonb,
  quality_status text not null default 'ok' check (quality_status in ('ok', 'warn', 'fail')),
  computed_at timestamptz not null default now(),
  primary key (name, version, day),
  foreign key (name, version) references feature_versions (name, version)
);

-- Incremental materialization: per feature version, how far events have been taken in (by their
-- received_at) and the last snapshot day closed by the watermark.
create table feature_materializations (
  name text not null,
  version integer not null,
  received_through timestamptz not null,
  closed_through date not null,
  updated_at timestamptz not null default now(),
  primary key (name, version),
  foreign key (name, version) references feature_versions (name, version)
);

-- Late events are found by the time they arrived.
create index events_received_at on events (received_at);
-- A tile partition reads one event name over a day, whatever its source.
create index events_event_ts on events (event, ts);
