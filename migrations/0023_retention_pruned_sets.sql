-- Up Migration
-- What retention (domain/privacy/retention.ts) has deleted of a set's rows. A set's own counts
-- (training_sets.train_rows and validate_rows, drift_sets.row_count) stay as the set was built:
-- they are what a model version trained on (model_versions.row_counts says the same). These
-- columns say how many of those rows retention removed since, and when it last did, so the rows
-- left are the built count minus the pruned one, and a set with pruned_at set cannot be rebuilt
-- or re-read as it was. Forward-only.
alter table training_sets
  add column pruned_train_rows integer not null default 0,
  add column pruned_validate_rows integer not null default 0,
  add column pruned_at timestamptz;
alter table drift_sets
  add column pruned_rows integer not null default 0,
  add column pruned_at timestamptz;
