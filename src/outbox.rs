//! The durable outbox: what Cordon owes other systems (chat cards and their updates, ticket
//! creations, comments and transitions) is written to the store before it is sent, and a worker
//! delivers it with retries. An outage of the other side delays deliveries and loses none; a
//! restart picks up where the last process stopped.
//!
//! Entries of one target with the same `key` (a ticket, an incident's chat thread) are delivered
//! one at a time in the order they were pushed; a failing entry holds back the ones behind it on
//! its target and key and no others. Deliverers make each delivery idempotent in effect (look up
//! before create, idempotency keys), since a crash after the other side acted and before the entry
//! was removed repeats it.
//!
//! Storms are calmed here too. Kinds registered with [`Outbox::coalesce`] (chat thread notes,
//! ticket comments) go out as one delivery for a run of entries of one key, at most once per
//! interval and key, the entries merged into one message ([`digest`]). And the other side's rate
//! limits are honoured: a 429's `Retry-After` delays the entry (never drops it), and a deliverer
//! that knows a call would break a documented limit says [`DeliveryError::wait`] without calling,
//! which delays the key without counting an attempt ([`pace`]).

pub mod digest;
pub mod pace;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::HeaderMap;
use serde_json::Value;
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
    /// Nothing was sent: a rate limit of the other side (as documented, or as its last 429 said)
    /// leaves no room yet. The entry waits that long without counting an attempt.
    pub not_sent: bool,
}

impl DeliveryError {
    pub fn new(failure: Failure, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            failure,
            not_sent: false,
        }
    }

    /// The call was not made: the other side's rate limit has no room for `after` (see
    /// [`pace`]).
    pub fn wait(message: impl Into<String>, after: Duration) -> DeliveryError {
        DeliveryError {
            not_sent: true,
            ..DeliveryError::retry_after(message, after)
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

/// How the entries of one target and kind are coalesced (see [`Outbox::coalesce`]).
#[derive(Clone, Copy)]
pub struct Coalesce {
    /// At most one delivery of the kind per key this often; what comes in between waits and goes
    /// out together.
    pub every: Duration,
    /// The most entries one delivery stands for (what one message can hold); the rest go in the
    /// next.
    pub most: usize,
    /// The payload standing for a run of entries (oldest first, never empty; one entry's own
    /// payload when alone). An error sets the first entry aside.
    pub merge: fn(&[OutboxEntry]) -> Result<Value, DeliveryError>,
}

/// The named lease of the replica delivering the outbox, on a store replicas share.
const OUTBOX_LEASE: &str = "outbox";

/// How often the outbox is looked at on a shared store.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// A target and key: the entries delivered one at a time, in order.
type Lane = (String, String);

/// The worker. Push with [`Outbox::push`]; it wakes and delivers.
pub struct Outbox {
    store: Arc<dyn Store>,
    deliverers: std::sync::RwLock<BTreeMap<String, Arc<dyn Deliver>>>,
    /// By target and kind.
    coalescing: std::sync::RwLock<HashMap<(String, String), Coalesce>>,
    /// In memory, since a restart may well forget them: until when a lane waits for a rate limit
    /// (nothing was sent), and until when it sends no other coalesced delivery.
    waits: Mutex<HashMap<Lane, Instant>>,
    quiet: Mutex<HashMap<Lane, Instant>>,
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
            coalescing: std::sync::RwLock::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            quiet: Mutex::new(HashMap::new()),
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

    /// Coalesces `target`'s entries of `kind`: a run of them on one key (nothing of another kind
    /// in between) goes out as one delivery of their merged payload, and a key gets at most one
    /// such delivery per `how.every`. Entries wait for that, and are never dropped.
    pub fn coalesce(&self, target: &str, kind: &str, how: Coalesce) {
        if let Ok(mut all) = self.coalescing.write() {
            all.insert((target.to_owned(), kind.to_owned()), how);
        }
    }

    fn coalescing(&self, target: &str, kind: &str) -> Option<Coalesce> {
        self.coalescing
            .read()
            .ok()?
            .get(&(target.to_owned(), kind.to_owned()))
            .copied()
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
        // The live entries of each lane, oldest first.
        let mut lanes: Vec<Vec<OutboxEntry>> = Vec::new();
        let mut lane_of: HashMap<Lane, usize> = HashMap::new();
        for entry in pending {
            if entry.dead {
                continue;
            }
            let lane = (entry.target.clone(), entry.key.clone());
            let i = *lane_of.entry(lane).or_insert_with(|| {
                lanes.push(Vec::new());
                lanes.len() - 1
            });
            lanes[i].push(entry);
        }
        let now = Utc::now();
        let instant = Instant::now();
        let mut next: Option<Duration> = None;
        let mut sooner = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        for held in [&self.waits, &self.quiet] {
            if let Ok(mut held) = held.lock() {
                held.retain(|_, until| *until > instant);
            }
        }
        let mut tasks = Vec::new();
        for lane in lanes {
            let head = &lane[0];
            if let Some(at) = head.next_at
                && at > now
            {
                sooner((at - now).to_std().unwrap_or_default());
                continue;
            }
            let key = (head.target.clone(), head.key.clone());
            if let Some(left) = left(&self.waits, &key, instant) {
                sooner(left);
                continue;
            }
            let Some(deliverer) = self.deliverer(&head.target) else {
                continue;
            };
            let coalesce = self.coalescing(&head.target, &head.kind);
            let batch: Vec<OutboxEntry> = match coalesce {
                None => vec![head.clone()],
                Some(how) => {
                    if let Some(left) = left(&self.quiet, &key, instant) {
                        sooner(left);
                        continue;
                    }
                    // A retry stands for the entries the failed try stood for, no more: the
                    // other side may show that try already, and the deliverer looks for it.
                    let most = head
                        .covers
                        .map_or(how.most, |n| n as usize)
                        .clamp(1, how.most.max(1));
                    lane.iter()
                        .take_while(|e| e.kind == head.kind)
                        .take(most)
                        .cloned()
                        .collect()
                }
            };
            let mut delivery = head.clone();
            let merged = match coalesce {
                Some(how) if batch.len() > 1 => (how.merge)(&batch).map(|p| delivery.payload = p),
                _ => Ok(()),
            };
            let covers = u32::try_from(batch.len()).ok();
            if coalesce.is_some() && batch.len() > 1 && head.covers != covers {
                // Recorded before the call, so that after a crash the retry stands for the same
                // entries as the try the other side may already show.
                let mut head = head.clone();
                head.covers = covers;
                self.store.outbox_save(&head).await?;
            }
            // Lanes are delivered side by side, so a slow system holds back only its own entries.
            tasks.push(tokio::spawn(async move {
                let result = match merged {
                    Ok(()) => deliverer.deliver(&delivery).await,
                    Err(e) => Err(e),
                };
                (result, batch, coalesce)
            }));
        }
        let mut delivered = 0;
        for task in tasks {
            let Ok((result, batch, coalesce)) = task.await else {
                continue;
            };
            let mut entry = batch[0].clone();
            let lane = (entry.target.clone(), entry.key.clone());
            match result {
                Ok(()) => {
                    delivered += 1;
                    for e in &batch {
                        self.store.outbox_remove(&e.id).await?;
                    }
                    if let Some(how) = coalesce
                        && let Ok(mut quiet) = self.quiet.lock()
                    {
                        quiet.insert(lane, Instant::now() + how.every);
                    }
                }
                Err(error) if error.not_sent => {
                    let wait = error.failure.retry_after().unwrap_or(self.base_backoff);
                    if let Ok(mut waits) = self.waits.lock() {
                        waits.insert(lane, Instant::now() + wait);
                    }
                    sooner(wait);
                    tracing::debug!(target = %entry.target, key = %entry.key, kind = %entry.kind, wait = ?wait, reason = %error, "delivery waits for a rate limit");
                }
                Err(error) => {
                    entry.attempts += 1;
                    entry.last_error = Some(error.message.clone());
                    if coalesce.is_some() && batch.len() > 1 {
                        entry.covers = u32::try_from(batch.len()).ok();
                    }
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
            // Deliveries may have unblocked the next entries of their lanes.
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

/// How long `lane` still waits in `held`, if it does.
fn left(held: &Mutex<HashMap<Lane, Instant>>, lane: &Lane, now: Instant) -> Option<Duration> {
    let until = *held.lock().ok()?.get(lane)?;
    (until > now).then(|| until - now)
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

    /// Joins the texts of a run of entries, for a coalesced delivery.
    fn joined(entries: &[OutboxEntry]) -> Result<Value, DeliveryError> {
        let texts: Vec<&str> = entries
            .iter()
            .map(|e| e.payload.as_str().unwrap_or_default())
            .collect();
        Ok(Value::String(texts.join("+")))
    }

    #[tokio::test]
    async fn coalesced_entries_go_out_together_at_most_once_per_interval_and_none_is_lost() {
        let (_dir, store, outbox) = started(10, 50);
        let every = Duration::from_millis(400);
        outbox.coalesce(
            "t",
            "note",
            Coalesce {
                every,
                most: 10,
                merge: joined,
            },
        );
        let target = recorder(0, DeliveryError::retry("unused"));
        outbox.register("t", target.clone());
        outbox.push(entries("inc", &["a1"])).await.unwrap();
        until("the first note, at once", || {
            target.delivered.lock().unwrap().len() == 1
        })
        .await;
        let first = std::time::Instant::now();
        // A storm: notes on two incidents, and an entry of another kind in between on one.
        outbox.push(entries("inc", &["a2", "a3"])).await.unwrap();
        let mut card = entries("inc", &["card"]);
        card[0].kind = "card".into();
        outbox.push(card).await.unwrap();
        outbox.push(entries("inc", &["a4", "a5"])).await.unwrap();
        outbox.push(entries("other", &["b1", "b2"])).await.unwrap();
        until("everything", || target.delivered.lock().unwrap().len() == 5).await;
        let delivered = target.delivered.lock().unwrap().clone();
        // The other incident's notes were not held back by this one's interval.
        assert!(delivered.contains(&"b1+b2".to_owned()), "{delivered:?}");
        let of_inc: Vec<&String> = delivered.iter().filter(|d| !d.starts_with('b')).collect();
        assert_eq!(
            of_inc,
            ["a1", "a2+a3", "card", "a4+a5"],
            "in order, a run of notes as one, none lost"
        );
        assert!(
            first.elapsed() >= every,
            "the second note waited for the interval: {:?}",
            first.elapsed()
        );
        until("forgotten", || {
            futures_now(store.outbox_pending()).is_some_and(|p| p.unwrap().is_empty())
        })
        .await;
    }

    #[tokio::test]
    async fn a_wait_for_a_rate_limit_sends_nothing_and_counts_no_attempt() {
        let (_dir, store, outbox) = started(5, 20);
        let paced = recorder(
            3,
            DeliveryError::wait("no room in the channel", Duration::from_millis(200)),
        );
        outbox.register("t", paced.clone());
        let started = std::time::Instant::now();
        outbox.push(entries("k", &["x"])).await.unwrap();
        until("told to wait twice", || {
            paced.attempts.lock().unwrap().values().any(|n| *n >= 2)
        })
        .await;
        // Waiting is no failed attempt: the stored entry is as it was pushed.
        let pending = store.outbox_pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].attempts,
                &pending[0].last_error,
                pending[0].next_at
            ),
            (0, &None, None)
        );
        until("delivered once there is room", || {
            paced.delivered.lock().unwrap().len() == 1
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(600));
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
