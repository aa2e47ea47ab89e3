-- Up Migration
-- The value counts of a drift sample that never changes (a model version's training rows), kept
-- after the first run that reads them: every later run against that version groups only its
-- current window. values and counts are little-endian float64 arrays (values ascending). Forward-only.
create table drift_sample_cache (
  sample_key text not null,
  feature_index integer not null,
  value_bytes bytea not null,
  count_bytes bytea not null,
  missing double precision not null,
  created_at timestamptz not null default now(),
  primary key (sample_key, feature_index)
);
