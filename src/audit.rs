//! The tamper-evident audit log: every decision a person made and everything a run did, in order,
//! each entry carrying the hash of the one before it.
//!
//! The entries, their hashing and the chain check are the model's ([`crate::model::audit`]),
//! re-exported here where callers have always named them; the store keeps the log
//! ([`crate::store::Store::append_audit`], `audit_verify`, `audit_entries`), in a sled tree or a
//! PostgreSQL table (`store::sled_audit`, `store::postgres_audit`).

pub use crate::model::audit::*;
