-- Up Migration
-- Field encryption of the addresses campaigns send to, and the runs of retention enforcement.
-- Forward-only.

-- contacts.email_sealed is `v1.<key id>.<iv>.<ciphertext and tag>` (AES-256-GCM, base64url; the
-- person key is the additional data, so a sealed address cannot be moved to another row). The
-- plain `email` column is emptied by every write; rows written before this migration keep it until
-- `pops privacy reseal` seals them.
alter table contacts add column email_sealed text;
alter table contacts add column key_id text;
alter table contacts alter column email drop not null;
alter table contacts add constraint contacts_one_form
  check ((email is null) <> (email_sealed is null));
alter table contacts add constraint contacts_key_id check ((email_sealed is null) = (key_id is null));
create index contacts_key_id on contacts (key_id);

-- One row per table per retention run: how many rows older than the policy were deleted.
create table retention_runs (
  run_key text not null,
  table_name text not null,
  keep_days integer not null check (keep_days > 0),
  cutoff timestamptz not null,
  deleted bigint not null,
  done_at timestamptz not null default now(),
  primary key (run_key, table_name)
);
