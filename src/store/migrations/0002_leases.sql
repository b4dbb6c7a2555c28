-- Leases, for several replicas on one database (src/store/postgres.rs, "Replicas").
--
-- A run is advanced only by the replica holding its lease (`lease_owner` until `lease_until`);
-- replicas renew their leases while they live, so a dead replica's runs are free once its leases
-- run out. `due_at` is when the run next has work to do (now for a run in progress or ready, its
-- wake time while it waits, NULL when finished or held for a person): what replicas claim.
ALTER TABLE runs
    ADD COLUMN due_at      timestamptz,
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_until timestamptz;
UPDATE runs SET due_at = now() WHERE unfinished;
CREATE INDEX runs_due ON runs (due_at) WHERE unfinished;

-- Alerts waiting to be matched are claimed the same way, so replicas share the matching.
ALTER TABLE alerts
    ADD COLUMN match_owner text,
    ADD COLUMN match_until timestamptz;

-- Named leases for work one replica does at a time (delivering the outbox).
CREATE TABLE leases (
    name  text PRIMARY KEY,
    owner text NOT NULL,
    until timestamptz NOT NULL
);
