-- Up Migration
-- Unmerge. Each merge records the two persons whose identifiers carried the link (`from_node` in
-- the merged side, `into_node` in the surviving side). A person's active merges then form a
-- spanning tree over the persons it is made of, and undoing one merge cuts that tree into exactly
-- the two sides it joined; later merges stay on the side they linked through. Forward-only.

-- Merges written before this migration linked roots to roots, which is a spanning tree too.
alter table identity_merges add column from_node bigint references persons (id);
alter table identity_merges add column into_node bigint references persons (id);
update identity_merges set from_node = merged_from, into_node = merged_into;
alter table identity_merges alter column from_node set not null;
alter table identity_merges alter column into_node set not null;
create index identity_merges_from_node on identity_merges (from_node);
create index identity_merges_into_node on identity_merges (into_node);

-- An undone merge. While it is not reverted, the two sides stay apart: a message that would join
-- them again drops its lower-priority identifiers and records a conflict, as a breached limit does.
create table identity_unmerges (
  id bigserial primary key,
  merge_id bigint not null references identity_merges (id),
  from_node bigint not null references persons (id),
  into_node bigint not null references persons (id),
  -- The canonical person before, the side that kept it, and the other side's new canonical person.
  canonical_before bigint not null references persons (id),
  kept_person bigint not null references persons (id),
  split_person bigint not null references persons (id),
  kept_persons integer not null,
  split_persons integer not null,
  -- Person rows as they were before the unmerge, so that a remerge can restore them exactly.
  persons_before jsonb not null,
  -- The newest merge id when the unmerge was made: a remerge restores exactly only if no merge since
  -- touched either side.
  last_merge_id bigint not null,
  reason text not null,
  requested_by text not null,
  workflow_id text not null,
  run_id text not null,
  unmerged_at timestamptz not null default now(),
  reverted_at timestamptz,
  reverted_reason text,
  reverted_by text,
  reverted_workflow_id text,
  reverted_run_id text,
  -- Whether the remerge restored the person rows exactly (nothing had touched either side since).
  reverted_exact boolean,
  unique (workflow_id, run_id)
);
create index identity_unmerges_from_node on identity_unmerges (from_node) where reverted_at is null;
create index identity_unmerges_into_node on identity_unmerges (into_node) where reverted_at is null;
-- At most one active unmerge of a merge.
create unique index identity_unmerges_active on identity_unmerges (merge_id) where reverted_at is null;

alter table identity_merges add column undone_by bigint references identity_unmerges (id);

-- Re-pointing is lazy: events keep the person they were attributed to, and this view gives each
-- event's current (canonical) person.
create view event_canonical_persons as
  select ep.event_id, p.canonical_id as person_id
    from event_persons ep
    join persons p on p.id = ep.person_id;
