-- Up Migration
-- A token's name is the actor its audit rows record, so a name is given to one token ever: a
-- revoked token's name could be taken by a new token of another role, and the audit could no
-- longer tell who acted. Before this, names were unique among live tokens only, so a database may
-- hold several tokens of one name (one live at most). Those keep working: all but one of each
-- name (the live one, else the newest) are marked name_reused and left out of the unique index,
-- so that the name stays taken. Forward-only.
alter table api_tokens add column name_reused boolean not null default false;

update api_tokens t set name_reused = true
  from (select id, row_number() over (
                 partition by name order by revoked_at is null desc, created_at desc, id) as n
          from api_tokens) ranked
 where ranked.id = t.id and ranked.n > 1;

create unique index api_tokens_name_once on api_tokens (name) where not name_reused;
