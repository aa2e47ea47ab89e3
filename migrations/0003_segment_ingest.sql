-- Up Migration
-- Segment-compatible HTTP ingestion: what a sender said about time, and the write keys that let a
-- sender write into one event source. Forward-only.

-- `ts` is the corrected event time. These keep what the sender said: its `timestamp` (before the
-- clock-skew correction) and its `sentAt`. Null on rows stored before this migration, and
-- `original_timestamp` is null on a live message that carried no timestamp (ts is then its
-- receipt time).
alter table events add column original_timestamp timestamptz;
alter table events add column sent_at timestamptz;

-- A write key is shown once, when it is created; only its sha256 is kept. The prefix is the key's
-- first characters, not secret, so that a key can be listed, recognized and revoked by it.
create table write_keys (
  prefix text primary key check (prefix ~ '^wk_[A-Za-z0-9_-]{8}$'),
  key_sha256 text not null unique check (key_sha256 ~ '^[0-9a-f]{64}$'),
  source text not null check (source ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  created_at timestamptz not null default now(),
  created_by text not null,
  revoked_at timestamptz,
  revoked_by text,
  check ((revoked_at is null) = (revoked_by is null))
);
create index write_keys_source on write_keys (source);
