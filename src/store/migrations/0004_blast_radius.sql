-- Blast-radius slots (src/actions/guardrails.rs): one row per side-effect call a limit counted, so
-- the count survives restarts and replicas share one count. A slot is taken under an advisory
-- lock on its key (`take_slot` in src/store/postgres.rs): count the rows in the window, insert one
-- if fewer than the limit. Rows older than the window are deleted as slots are taken.
CREATE TABLE blast_radius_slots (
    id       bigserial PRIMARY KEY,
    key      text NOT NULL,
    taken_at timestamptz NOT NULL
);
CREATE INDEX blast_radius_slots_by_key ON blast_radius_slots (key, taken_at);

-- Discord interaction ids were kept one record each in `meta`, never deleted; they are now kept in
-- a ring of a few records (`ring:<n>`, src/chat/discord/inbound.rs). The old records go.
DELETE FROM meta WHERE namespace = 'chat.discord.seen' AND key NOT LIKE 'ring:%';
