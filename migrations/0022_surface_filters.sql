-- Up Migration
-- A surface's business filters (issue 6): items and genres it never shows, applied by the decision
-- server to the model's answer and to the rules' alike. Changed like routes and modes: one
-- transaction that bumps the generation (servers reload within a second) and records the change.
alter table surfaces add column filters jsonb not null default '{"excludeItems": [], "excludeGenres": []}';
-- The filters after each change; null on the changes recorded before filters existed.
alter table routing_changes add column filters jsonb;
