-- Up Migration
-- Point-in-time training sets read from the offline store (feature_values): one row per label row
-- of a set, with one value per requested feature in the order requested (null: missing and no
-- default). Written by domain/features/point-in-time.ts, whose header states how each value is
-- chosen. Forward-only.
create table pit_set_rows (
  set_key text not null,
  row_id bigint not null,
  -- The label row's own time (before any asOf cap).
  ts timestamptz not null,
  person_key text,
  item_key text,
  label double precision,
  vals double precision[] not null,
  primary key (set_key, row_id)
);
