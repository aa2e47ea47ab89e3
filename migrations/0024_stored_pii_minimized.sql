-- Up Migration
-- When the start-up rewrite of emails and phones that earlier versions stored in clear
-- (domain/privacy/minimize-stored.ts) last found nothing left to do but what it leaves on purpose
-- (conflicts, values that are no email or phone). Ingestion never stores them in clear, so later
-- starts skip the probes, which scan `events` and the quarantine; `pops privacy minimize` always
-- runs the whole pass. One row at most.
create table stored_pii_minimized (
  only_row boolean primary key default true check (only_row),
  done_at timestamptz not null default now()
);
