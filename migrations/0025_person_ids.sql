-- Up Migration
-- Person ids are never given twice. They were max(persons.id) + 1, so after a privacy deletion of
-- the newest person the next person took the deleted one's id, and whatever still named it outside
-- PostgreSQL (an export bundle handed out, Temporal history, a workflow id, a canary bucket)
-- pointed at someone else. The sequence person_ids holds the highest person id ever deleted (a
-- counter, like the sequence of a serial column, not a row of anyone); identity resolution, which
-- numbers a chunk's new persons itself under the graph lock, starts above it and above every
-- stored id. A statement trigger moves it on every deletion of persons, whoever runs it. It is
-- not moved by inserts, so a resolution chunk rolled back and run again gives the same ids. A
-- deletion rolled back after the trigger may leave a gap, never a reuse. Forward-only.
create sequence person_ids as bigint;

create function raise_person_ids() returns trigger language plpgsql as $$
begin
  perform setval('person_ids', f.top)
     from (select max(id) as top from gone) f
    where f.top > (select case when is_called then last_value else 0 end from person_ids);
  return null;
end $$;

create trigger persons_raise_ids after delete on persons
  referencing old table as gone
  for each statement execute function raise_person_ids();
