//! The durable outbox: what Cordon owes other systems (chat cards and their updates, ticket
//! creations, comments and transitions) is written to the store before it is sent, and a worker
//! delivers it with retries. An outage of the other side delays deliveries and loses none; a
//! restart picks up where the last process stopped.
//!
//! Entries with the same `key` (a ticket, a chat card) are delivered one at a time in the order
//! they were pushed; a failing entry holds back the ones behind it on its key and no others.
//! Deliverers make each delivery idempotent in effect (look up before create, idempotency keys),
//! since a crash after the other side acted and before the entry was removed repeats it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::HeaderMap;
use tokio::sync::Notify;

pub use crate::failure::Failure;
pub use crate::model::outbox::OutboxEntry;
use crate::store::{Store, StoreError};

/// Why a delivery failed: what happened, in words for the operator, and its [`Failure`] class,
/// which decides what the worker does with the entry: a permanent failure sets it aside, anything
/// else tries it again after `Retry-After` or a backoff. Refused credentials are tried again too:
/// an operator fixes them, after which the entries must still go out, in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    pub failure: Failure,
}

impl DeliveryError {
    pub fn new(failure: Failure, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            failure,
        }
    }

    pub fn retry(message: impl Into<String>) -> DeliveryError {
        DeliveryError::new(Failure::Retryable, message)
    }

    pub fn retry_after(message: impl Into<String>, after: Duration) -> DeliveryError {
        DeliveryError::new(
            Failure::RateLimited {
                retry_after: Some(after),
            },
            message,
        )
    }

    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError::new(Failure::Permanent, message)
    }

    /// The error for an HTTP answer (`{what} answered {status}`), `None` for a success; classed by
    /// [`Failure::from_response`].
    pub fn from_response(status: u16, headers: &HeaderMap, what: &str) -> Option<DeliveryError> {
        let failure = Failure::from_response(status, headers)?;
        Some(DeliveryError::new(
            failure,
            format!("{what} answered {status}"),
        ))
    }

    /// Never going to work (a 400, a 404 on a deleted ticket): the entry is set aside.
    pub fn is_permanent(&self) -> bool {
        self.failure == Failure::Permanent
    }
}

/// Delivers entries of one target.
#[async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError>;
}

/// The named lease of the replica delivering the outbox, on a store replicas share.
const OUTBOX_LEASE: &str = "outbox";

/// How often the outbox is looked at on a shared store.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// The worker. Push with [`Outbox::push`]; it wakes and delivers.
pub struct Outbox {
    store: Arc<dyn Store>,
    deliverers: std::sync::RwLock<BTreeMap<String, Arc<dyn Deliver>>>,
    wake: Arc<Notify>,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Outbox {
    /// Starts the worker (inside a runtime). Entries left by an earlier process are delivered too.
    pub fn start(store: Arc<dyn Store>) -> Arc<Outbox> {
        Outbox::start_with(store, Duration::from_secs(1), Duration::from_secs(300))
    }

    /// As [`Outbox::start`], with the backoff bounds (tests use short ones).
    pub fn start_with(store: Arc<dyn Store>, base: Duration, max: Duration) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            store,
            deliverers: std::sync::RwLock::new(BTreeMap::new()),
            wake: Arc::new(Notify::new()),
            base_backoff: base,
            max_backoff: max,
        });
        tokio::spawn(Outbox::run(Arc::downgrade(&outbox), outbox.wake.clone()));
        outbox
    }

    /// Sets the deliverer of `target`; entries for a target with no deliverer wait for one.
    pub fn register(&self, target: &str, deliverer: Arc<dyn Deliver>) {
        if let Ok(mut all) = self.deliverers.write() {
            all.insert(target.to_owned(), deliverer);
        }
        self.wake.notify_one();
    }

    /// Records entries durably, then wakes the worker. Once this returns, they will be delivered.
    pub async fn push(&self, entries: Vec<OutboxEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.store.outbox_push(entries).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Entries not yet delivered (dead ones included), oldest first.
    pub async fn pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store.outbox_pending().await
    }

    fn deliverer(&self, target: &str) -> Option<Arc<dyn Deliver>> {
        self.deliverers.read().ok()?.get(target).cloned()
    }

    /// The worker holds the outbox weakly, so it ends when the server drops the outbox (and the
    /// store with it).
    async fn run(this: Weak<Outbox>, wake: Arc<Notify>) {
        loop {
            let notified = wake.notified();
            let Some(outbox) = this.upgrade() else { return };
            let wait = match outbox.round().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox could not read the store; trying again");
                    Some(Duration::from_secs(1))
                }
            };
            drop(outbox);
            let wait = wait.unwrap_or(Duration::from_secs(5));
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// One pass: the first live entry of every key is tried if due. Returns how long until the
    /// next one is due.
    async fn round(&self) -> Result<Option<Duration>, StoreError> {
        if self.store.shared() {
            // One replica at a time delivers, holding the outbox lease; entries other replicas
            // push do not wake it, so it looks again every second. The others try for the lease
            // as often, and one of them takes over within a lease's time of its holder dying.
            if !self.store.lease(OUTBOX_LEASE).await? {
                return Ok(Some(SHARED_POLL));
            }
            return Ok(Some(
                self.deliver_round()
                    .await?
                    .map_or(SHARED_POLL, |d| d.min(SHARED_POLL)),
            ));
        }
        self.deliver_round().await
    }

    async fn deliver_round(&self) -> Result<Option<Duration>, StoreError> {
        let pending = self.store.outbox_pending().await?;
        let mut seen = HashSet::new();
        let mut heads = Vec::new();
        for entry in pending {
            if entry.dead || !seen.insert(entry.key.clone()) {
                continue;
            }
            heads.push(entry);
        }
        let now = Utc::now();
        let mut next: Option<Duration> = None;
        let mut sooner = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        let mut tasks = Vec::new();
        for entry in heads {
            if let Some(at) = entry.next_at
                && at > now
            {
                sooner((at - now).to_std().unwrap_or_default());
                continue;
            }
            let Some(deliverer) = self.deliverer(&entry.target) else {
                continue;
            };
            // Keys are delivered side by side, so a slow system holds back only its own entries.
            tasks.push(tokio::spawn(async move {
                (deliverer.deliver(&entry).await, entry)
            }));
        }
        let delivered = tasks.len();
        for task in tasks {
            let Ok((result, mut entry)) = task.await else {
                continue;
            };
            match result {
                Ok(()) => self.store.outbox_remove(&entry.id).await?,
                Err(error) => {
                    entry.attempts += 1;
                    entry.last_error = Some(error.message.clone());
                    if error.is_permanent() {
                        entry.dead = true;
                        tracing::error!(target = %entry.target, key = %entry.key, kind = %entry.kind, error = %error, "an outbox entry failed for good and is set aside");
                    } else {
                        let backoff = error
                            .failure
                            .retry_after()
                            .unwrap_or_else(|| self.backoff(entry.attempts));
                        entry.next_at = Some(
                            Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default(),
                        );
                        sooner(backoff);
                        tracing::warn!(target = %entry.target, key = %entry.key, kind = %entry.kind, attempts = entry.attempts, retry_in = ?backoff, error = %error, "delivery failed; will retry");
                    }
                    self.store.outbox_save(&entry).await?;
                }
            }
        }
        if delivered > 0 {
            // Deliveries may have unblocked the next entries of their keys.
            return Ok(Some(Duration::ZERO));
        }
        Ok(next)
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use std::sync::Mutex;

    use super::*;
    use crate::config::{GroupingConfig, StoreConfig};
    use crate::store::SledStore;

    /// Records deliveries; fails the first `fail` attempts of each entry with `error`.
    struct Recorder {
        delivered: Mutex<Vec<String>>,
        attempts: Mutex<BTreeMap<String, u32>>,
        fail: u32,
        error: DeliveryError,
    }

    #[async_trait]
    impl Deliver for Recorder {
        async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(entry.id.clone()).or_default();
            *n += 1;
            if *n <= self.fail {
                return Err(self.error.clone());
            }
            let text = entry.payload.as_str().unwrap_or_default().to_owned();
            self.delivered.lock().unwrap().push(text);
            Ok(())
        }
    }

    fn recorder(fail: u32, error: DeliveryError) -> Arc<Recorder> {
        Arc::new(Recorder {
            delivered: Mutex::default(),
            attempts: Mutex::default(),
            fail,
            error,
        })
    }

    fn store(dir: &std::path::Path) -> Arc<dyn Store> {
        let config = StoreConfig {
            path: dir.join("store"),
            ..StoreConfig::default()
        };
        Arc::new(SledStore::open(&config, &GroupingConfig::default()).unwrap())
    }

    /// An outbox on a new store, with backoffs from `base_ms` to `max_ms` milliseconds.
    fn started(base_ms: u64, max_ms: u64) -> (tempfile::TempDir, Arc<dyn Store>, Arc<Outbox>) {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let outbox = Outbox::start_with(
            store.clone(),
            Duration::from_millis(base_ms),
            Duration::from_millis(max_ms),
        );
        (dir, store, outbox)
    }

    fn entries(key: &str, texts: &[&str]) -> Vec<OutboxEntry> {
        texts
            .iter()
            .map(|t| OutboxEntry::new("t", key, "note", Value::String((*t).to_owned())))
            .collect()
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn failures_delay_deliveries_in_order_and_lose_none() {
        let (_dir, store, outbox) = started(20, 80);
        let target = recorder(3, DeliveryError::retry("down"));
        outbox.register("t", target.clone());
        outbox
            .push(entries("a", &["a1", "a2", "a3"]))
            .await
            .unwrap();
        outbox.push(entries("b", &["b1"])).await.unwrap();
        until("all delivered", || {
            target.delivered.lock().unwrap().len() == 4
        })
        .await;
        let delivered = target.delivered.lock().unwrap().clone();
        let of_a: Vec<&String> = delivered.iter().filter(|d| d.starts_with('a')).collect();
        assert_eq!(of_a, ["a1", "a2", "a3"], "in order per key, none twice");
        until("forgotten", || {
            futures_now(store.outbox_pending()).is_some_and(|p| p.unwrap().is_empty())
        })
        .await;
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_a_permanent_error_sets_the_entry_aside() {
        let (_dir, store, outbox) = started(1, 5);
        let slow = recorder(
            1,
            DeliveryError::retry_after("429", Duration::from_millis(300)),
        );
        outbox.register("t", slow.clone());
        let started = std::time::Instant::now();
        outbox.push(entries("k", &["x"])).await.unwrap();
        until("delivered after the wait", || {
            slow.delivered.lock().unwrap().len() == 1
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );

        let broken = recorder(u32::MAX, DeliveryError::permanent("400 bad request"));
        outbox.register("t", broken.clone());
        outbox.push(entries("k", &["y"])).await.unwrap();
        until("set aside", || {
            futures_now(store.outbox_pending())
                .and_then(|p| p.ok())
                .is_some_and(|p| p.len() == 1 && p[0].dead)
        })
        .await;
        // A dead entry no longer holds its key back.
        let fine = recorder(0, DeliveryError::retry("unused"));
        outbox.register("t", fine.clone());
        outbox.push(entries("k", &["z"])).await.unwrap();
        until("the next one goes", || {
            fine.delivered.lock().unwrap().len() == 1
        })
        .await;
        let pending = store.outbox_pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].last_error.as_deref(), Some("400 bad request"));
    }

    #[tokio::test]
    async fn refused_credentials_hold_entries_until_fixed_and_lose_none() {
        let (_dir, store, outbox) = started(10, 20);
        let refusing = recorder(3, DeliveryError::new(Failure::Auth, "401 from Jira"));
        outbox.register("t", refusing.clone());
        outbox.push(entries("k", &["x", "y"])).await.unwrap();
        until("delivered once the credentials work", || {
            refusing.delivered.lock().unwrap().len() == 2
        })
        .await;
        assert_eq!(*refusing.delivered.lock().unwrap(), ["x", "y"]);
        until("none set aside", || {
            futures_now(store.outbox_pending()).is_some_and(|p| p.unwrap().is_empty())
        })
        .await;
    }

    #[tokio::test]
    async fn entries_survive_a_restart_and_go_out_once_a_deliverer_is_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = store(dir.path());
            let outbox = Outbox::start(store.clone());
            outbox.push(entries("k", &["kept"])).await.unwrap();
            store.close().await.unwrap();
            // The worker may be in the middle of a round, holding the store; the database can
            // be opened again once it lets go.
            let held = Arc::downgrade(&store);
            drop((outbox, store));
            until("the first worker lets go of the store", || {
                held.strong_count() == 0
            })
            .await;
        }
        let store = store(dir.path());
        let outbox = Outbox::start(store.clone());
        let target = recorder(0, DeliveryError::retry("unused"));
        outbox.register("t", target.clone());
        until("delivered after the restart", || {
            target.delivered.lock().unwrap().as_slice() == ["kept"]
        })
        .await;
    }

    /// Polls a store future once on a throwaway runtime-free executor (the sled store answers at
    /// once for reads).
    fn futures_now<F: std::future::Future>(future: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        }
    }
}
