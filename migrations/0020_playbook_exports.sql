-- Up Migration
-- The DPO export of an incident keeps its digest and row count only: the list itself is
-- incident_scope, read when the export is fetched, so a person deleted later (privacy deletion
-- walks incident_scope by person key) is gone from the list too. Forward-only.
alter table incident_exports drop column csv;
