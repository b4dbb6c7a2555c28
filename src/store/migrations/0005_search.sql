-- Search (src/search, docs/search.md): one row per alert and incident, written in the same
-- transaction as the record (put_alert, put_incident in src/store/postgres.rs) and rebuilt by
-- `cordon reindex`. The terms and words are computed by Cordon (src/search/doc.rs), the same
-- code the embedded store's index uses, so a query matches the same records on both backends.
--
-- After upgrading a database that already holds alerts, run `cordon reindex` once: rows are
-- written as records are, and the records stored before this migration have none yet.
--
-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension since PostgreSQL 13: the
-- database owner may create it. An extension is the database's, not a schema's: it is created in
-- `public` unless the database has it already, and its operator class is named by the schema it
-- is in (below), so Cordon's tables may live in any schema.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

CREATE TABLE search_docs (
    -- `a:<alert id>` or `i:<incident id>`.
    key         text COLLATE "C" PRIMARY KEY,
    doc_type    text NOT NULL,
    id          text COLLATE "C" NOT NULL,
    -- The record the row describes: pruning the record prunes its row.
    alert_id    text COLLATE "C" REFERENCES alerts (id) ON DELETE CASCADE,
    incident_id text COLLATE "C" REFERENCES incidents (id) ON DELETE CASCADE,
    -- An alert's observed_at, an incident's created_at, in Unix milliseconds.
    at          bigint NOT NULL,
    -- Orders rows of the same time, as the embedded index does (first 8 bytes of SHA-256 of key).
    tie         bigint NOT NULL,
    severity    bigint NOT NULL,
    -- `field=value` terms, lowercased: exact terms through the GIN index (`terms @> ARRAY[...]`).
    terms       text[] NOT NULL,
    -- The same terms, one per line between line breaks: prefix terms (`source:fal*`) through the
    -- trigram index (`terms_text LIKE '%\nsource=fal%'`).
    terms_text  text NOT NULL,
    -- Free-text tokens as lexemes (`array_to_tsvector`, never re-parsed).
    words       tsvector NOT NULL
);
CREATE INDEX search_docs_by_time ON search_docs (at DESC, tie DESC);
CREATE INDEX search_docs_by_severity ON search_docs (severity, at);
CREATE INDEX search_docs_terms ON search_docs USING gin (terms);
DO $$
DECLARE
    trgm_schema text;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX search_docs_terms_trgm ON search_docs USING gin (terms_text %I.gin_trgm_ops)',
        trgm_schema);
END $$;
CREATE INDEX search_docs_words ON search_docs USING gin (words);
CREATE INDEX search_docs_by_alert ON search_docs (alert_id) WHERE alert_id IS NOT NULL;
CREATE INDEX search_docs_by_incident ON search_docs (incident_id) WHERE incident_id IS NOT NULL;
