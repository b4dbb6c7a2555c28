-- Keys remembered for a while, to refuse a second use (src/store/mod.rs, `remember_once`): SNS
-- MessageIds for the length of the SNS timestamp window, so a replayed delivery is refused after a
-- restart and on every replica. Rows whose `until` has passed are pruned as new keys come.
CREATE TABLE once (
    namespace text NOT NULL,
    key       text NOT NULL,
    until     timestamptz NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX once_until ON once (until);
