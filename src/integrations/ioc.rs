//! Local indicator feeds (CSV, STIX 2.1), matched in memory.
