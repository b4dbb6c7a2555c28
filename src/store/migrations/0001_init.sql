-- Cordon's PostgreSQL schema, version 1. Applied once, in one transaction, by the first Cordon
-- that starts on the database (see src/store/postgres.rs). Never edit an applied migration: add
-- the next numbered file instead.
--
-- Documents (alerts, incidents, runs, outbox entries, values) are stored as `json`, which keeps
-- the text exactly as written: an alert's `raw` payload stays byte for byte as received. The
-- columns beside them are what queries filter and order on. Ids are UUIDv7 strings compared
-- bytewise (COLLATE "C"), so ordering by id is ordering by arrival, as in the embedded store.

CREATE TABLE alerts (
    id          text COLLATE "C" PRIMARY KEY,
    source      text NOT NULL,
    incident_id text COLLATE "C" NOT NULL,
    -- True until the engine has created the alert's runs; a restart finds it again.
    pending     boolean NOT NULL DEFAULT true,
    doc         json NOT NULL
);
CREATE INDEX alerts_by_source ON alerts (source, id);
CREATE INDEX alerts_by_incident ON alerts (incident_id, id);
CREATE INDEX alerts_pending ON alerts (id) WHERE pending;

-- The latest alert of each dedup key (repeats inside the window count on it).
CREATE TABLE dedup_keys (
    dedup_key text PRIMARY KEY,
    alert_id  text COLLATE "C" NOT NULL
);

CREATE TABLE incidents (
    id     text COLLATE "C" PRIMARY KEY,
    status text NOT NULL,
    doc    json NOT NULL
);
CREATE INDEX incidents_by_status ON incidents (status, id);

-- The latest incident of each entity (alerts about it join it inside the window).
CREATE TABLE entities (
    entity      text PRIMARY KEY,
    incident_id text COLLATE "C" NOT NULL
);

CREATE TABLE runs (
    id          text COLLATE "C" PRIMARY KEY,
    playbook    text NOT NULL,
    status      text NOT NULL,
    incident_id text COLLATE "C",
    -- True from creation until the run is saved finished: the runs to resume after a restart.
    unfinished  boolean NOT NULL,
    doc         json NOT NULL
);
CREATE INDEX runs_by_playbook ON runs (playbook, id);
CREATE INDEX runs_by_incident ON runs (incident_id, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_unfinished ON runs (id) WHERE unfinished;

-- The run an alert started for a playbook: an alert starts each playbook once.
CREATE TABLE run_alerts (
    alert_id text NOT NULL,
    playbook text NOT NULL,
    run_id   text NOT NULL,
    PRIMARY KEY (alert_id, playbook)
);

-- The run holding each playbook's concurrency key.
CREATE TABLE run_keys (
    playbook text NOT NULL,
    key      text NOT NULL,
    run_id   text NOT NULL,
    PRIMARY KEY (playbook, key)
);

CREATE TABLE outbox (
    id  text COLLATE "C" PRIMARY KEY,
    doc json NOT NULL
);

CREATE TABLE meta (
    namespace text NOT NULL,
    key       text NOT NULL,
    value     json NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- The hash-chained audit log: each entry exactly as hashed and written (src/audit.rs), as text
-- so `cordon audit verify` reads what is stored, damage included.
CREATE TABLE audit (
    seq    bigint PRIMARY KEY CHECK (seq > 0),
    run_id text,
    entry  text NOT NULL
);
CREATE INDEX audit_by_run ON audit (run_id, seq);
