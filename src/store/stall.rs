//! What the store is doing right now and for how long: the operations under way, so that a store
//! that stops finishing them (a disk that no longer answers fsync, a PostgreSQL server that takes
//! connections but never commits) turns `/readyz` unready and is named in `cordon_store_stalled`,
//! while `/healthz`, which shares no lock with the store, keeps answering.
//!
//! Each backend registers an operation when it starts one ([`Pending::begin`]) and the guard it
//! gets back ends it when dropped. Nothing here is on a hot path beyond one short mutex hold per
//! operation (the embedded store registers once per group commit, not per request).
//!
//! # The test-only hold
//!
//! With `CORDON_TEST_HOLD_STORE=<file>` in the environment, every store operation waits, once
//! registered, for as long as that file exists. The burst tests use it to hold the store the way a
//! dead disk would and check what an operator sees (tests/burst.rs). The server logs a warning at
//! start when it is set; nothing else reads the variable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The environment variable that names the test-only hold file.
pub const HOLD_VAR: &str = "CORDON_TEST_HOLD_STORE";

/// What a store can have under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The embedded store writing one group.
    Write,
    /// The embedded store making what it wrote durable.
    Fsync,
    /// PostgreSQL: from the wait for a pooled connection to its release.
    Query,
    /// PostgreSQL: one transaction of batched run writes.
    RunBatch,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Write,
        Operation::Fsync,
        Operation::Query,
        Operation::RunBatch,
    ];

    /// The name `/readyz`, the logs and `cordon_store_stalled{operation}` use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Write => "write",
            Operation::Fsync => "fsync",
            Operation::Query => "query",
            Operation::RunBatch => "run batch",
        }
    }
}

/// The oldest operation under way.
#[derive(Debug, Clone, PartialEq)]
pub struct Oldest {
    pub operation: Operation,
    /// How long it has been under way.
    pub age: Duration,
}

/// The operations a store has under way.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    under_way: Mutex<HashMap<u64, (Operation, Instant)>>,
}

impl Pending {
    /// Registers `operation` as under way until the guard is dropped.
    pub fn begin(&self, operation: Operation) -> Guard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (operation, Instant::now()));
        Guard { pending: self, id }
    }

    /// The operation under way for the longest, if any.
    pub fn oldest(&self) -> Option<Oldest> {
        let now = Instant::now();
        self.under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min_by_key(|(_, since)| *since)
            .map(|(operation, since)| Oldest {
                operation: *operation,
                age: now.saturating_duration_since(*since),
            })
    }
}

/// Ends its operation when dropped.
pub struct Guard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.pending
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The hold file named by [`HOLD_VAR`], read once.
pub fn hold_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(HOLD_VAR).map(PathBuf::from))
        .as_ref()
}

const HOLD_POLL: Duration = Duration::from_millis(20);

/// Waits while the hold file exists (a thread of the embedded store's own).
pub fn hold_blocking() {
    if let Some(file) = hold_file() {
        while file.exists() {
            std::thread::sleep(HOLD_POLL);
        }
    }
}

/// Waits while the hold file exists (a task).
pub async fn hold() {
    if let Some(file) = hold_file() {
        while file.exists() {
            tokio::time::sleep(HOLD_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_operation_under_way_is_reported_until_it_ends() {
        let pending = Pending::default();
        assert_eq!(pending.oldest(), None);
        let first = pending.begin(Operation::Fsync);
        std::thread::sleep(Duration::from_millis(5));
        let second = pending.begin(Operation::Write);
        let oldest = pending.oldest().unwrap();
        assert_eq!(oldest.operation, Operation::Fsync);
        assert!(oldest.age >= Duration::from_millis(5), "{oldest:?}");
        drop(first);
        assert_eq!(pending.oldest().unwrap().operation, Operation::Write);
        drop(second);
        assert_eq!(pending.oldest(), None);
    }
}
