//! The embedded store on sled, with group commit on one store thread.
//!
//! One thread, the store thread, owns every write and every fsync: alerts, runs, incident changes,
//! outbox entries, small values and audit entries all arrive as jobs on one channel. The thread
//! takes everything queued (up to [`MAX_JOBS`]), decides dedup and grouping for the whole group
//! with one consistent view, writes it as one atomic batch, then fsyncs and only then answers the
//! requests that must be durable. While it fsyncs, new requests queue, so the next group is larger:
//! under load one fsync covers hundreds of requests, which is how intake stays durable without
//! paying an fsync per alert; at low load a group is one request and the latency is one fsync.
//! Writes that need not be durable at once (a pure step's state, a "matched" marker) are answered
//! once written and fsynced with the next group, or after [`IDLE_FLUSH`] of quiet. sled recovers a
//! prefix of its log, so a later group is never durable without an earlier one.
//!
//! # Why one thread (docs/storage.md has the measurements)
//!
//! sled 0.34 guards its log with a global reader-writer lock: `apply_batch` and transactions take
//! it exclusively, every other operation and every flush shares it, and a flush holds its share
//! until the log is on disk. The log reaches disk through sled's own thread pool. When flushes came
//! from many places at once (`flush_async` from tokio workers for the outbox, values and audit, the
//! flusher thread, sled's periodic flusher), the pool's threads filled with flushes each holding
//! the shared lock and waiting for the log, an exclusive write queued behind them, sled's periodic
//! flusher queued behind that writer, and the log write they all waited for never ran: the server
//! hung for good, and since the exclusive writes ran on tokio workers, so did `/healthz` and
//! SIGTERM. Here no flush is ever concurrent with an exclusive write (the same thread does both),
//! sled's periodic flusher is off, `flush_async` is never called, and no tokio worker writes.
//! Reads still run on the callers' threads and never wait for more than one write.
//!
//! Keys in the one tree (`v1`): `a:<alert id>` alert, `i:<incident id>` incident, `d:<dedup key>`
//! the alert id a dedup key points at, `e:<entity>` the incident an entity points at, and
//! `x:<incident id>/<alert id>` the incident's alerts. Ids are UUIDv7 strings, so key order is
//! arrival order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::retention::{self as rules, KindStats, PruneBatch, PruneKind, PruneRequest, StoreStats};
use super::sled_audit::AuditLog;
use super::stall::{self, Operation, Pending};
use super::{
    Accepted, AlertQuery, IncidentFilter, IncidentQuery, Record, RunQuery, Store, StoreError,
};
use crate::alert::{Alert, Incident};
use crate::config::{GroupingConfig, StoreConfig};
use crate::model::audit::{AuditEntry, NewEntry, VerifyReport};
use crate::model::grouping::{Grouping, Placement};
use crate::model::outbox::OutboxEntry;
use crate::model::run::Run;
use crate::telemetry::Metrics;

/// The most requests one group commit takes.
const MAX_JOBS: usize = 1024;

/// How long written but not yet durable changes wait for a quiet moment before they are fsynced.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// At most this many expired remembered keys are pruned per [`Store::remember_once`] call.
const PRUNE_PER_CALL: usize = 64;

/// Where a request waits for its answer.
type Reply = oneshot::Sender<Result<Vec<Accepted>, StoreError>>;

/// One request to the writer.
enum Job {
    /// Alerts to dedup, group and store.
    Ingest {
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
        reply: Reply,
    },
    /// A new run, unless its concurrency key is taken by an active run (answered with that run's
    /// id) or the alert already started this playbook (answered with that run's id); and its
    /// audit entries.
    CreateRun {
        run: Box<Run>,
        audit: Vec<NewEntry>,
        /// Answered after the fsync ([`Store::create_run_for_alert`] says when it need not be).
        durable: bool,
        reply: oneshot::Sender<Result<Option<String>, StoreError>>,
    },
    /// A run's new state, and its audit entries; a finished run frees its concurrency key.
    SaveRun {
        durable: bool,
        run: Box<Run>,
        audit: Vec<NewEntry>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The alert's runs are created: forget its pending-match marker.
    Matched {
        alert_id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Sets `values.<key>` on an incident, or adds evidence records to it.
    IncidentValue {
        incident_id: String,
        update: IncidentUpdate,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A change to the outbox.
    Outbox {
        change: OutboxChange,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A small value (`namespace\0key`).
    /// A small value set, or forgotten (`None`).
    Meta {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Audit entries of their own.
    Audit {
        entries: Vec<NewEntry>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A blast-radius slot under `key`, taken if fewer than `max` were in the window.
    Slot {
        key: String,
        max: u32,
        window: Duration,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// One batch of retention's pruning (answered once written: a prune lost to a crash is
    /// done again by the next pass).
    Prune {
        request: Box<PruneRequest>,
        reply: oneshot::Sender<Result<PruneBatch, StoreError>>,
    },
    /// A key to remember until a time, unless it is remembered already (`namespace\0key`).
    Once {
        key: Vec<u8>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

/// A change to the outbox tree.
enum OutboxChange {
    Push(Vec<OutboxEntry>),
    Save(Box<OutboxEntry>),
    Remove(String),
}

/// A change to an incident made by a playbook or a person.
enum IncidentUpdate {
    Value(String, serde_json::Value),
    Evidence(Vec<serde_json::Value>),
    Status(crate::alert::IncidentStatus),
}

/// A job's answer, sent once its writes are fsynced.
enum Answer {
    Ingest(Reply, Vec<Accepted>),
    Created(
        oneshot::Sender<Result<Option<String>, StoreError>>,
        Option<String>,
    ),
    Done(oneshot::Sender<Result<(), StoreError>>),
    /// A yes or no (a slot taken or not).
    Decided(oneshot::Sender<Result<bool, StoreError>>, bool),
    /// Whether a key was new ([`Job::Once`]).
    Once(oneshot::Sender<Result<bool, StoreError>>, bool),
    /// What a batch of pruning did.
    Pruned(oneshot::Sender<Result<PruneBatch, StoreError>>, PruneBatch),
    /// Already answered (refused on its own, without failing the group).
    Answered,
}

impl Answer {
    fn ok(self) {
        match self {
            Answer::Ingest(reply, accepted) => drop(reply.send(Ok(accepted))),
            Answer::Created(reply, existing) => drop(reply.send(Ok(existing))),
            Answer::Done(reply) => drop(reply.send(Ok(()))),
            Answer::Decided(reply, yes) => drop(reply.send(Ok(yes))),
            Answer::Once(reply, first) => drop(reply.send(Ok(first))),
            Answer::Pruned(reply, batch) => drop(reply.send(Ok(batch))),
            Answer::Answered => {}
        }
    }

    fn fail(self, error: &str) {
        let e = || StoreError::Backend(error.to_owned());
        match self {
            Answer::Ingest(reply, _) => drop(reply.send(Err(e()))),
            Answer::Created(reply, _) => drop(reply.send(Err(e()))),
            Answer::Done(reply) => drop(reply.send(Err(e()))),
            Answer::Decided(reply, _) => drop(reply.send(Err(e()))),
            Answer::Once(reply, _) => drop(reply.send(Err(e()))),
            Answer::Pruned(reply, _) => drop(reply.send(Err(e()))),
            Answer::Answered => {}
        }
    }
}

impl Job {
    /// Whether the job is answered only after the fsync.
    fn durable(&self) -> bool {
        match self {
            Job::Ingest { .. }
            | Job::Outbox { .. }
            | Job::Meta { .. }
            | Job::Once { .. }
            | Job::Audit { .. }
            | Job::Slot { .. } => true,
            Job::IncidentValue {
                update: IncidentUpdate::Status(_),
                ..
            } => true,
            Job::SaveRun { durable, .. } | Job::CreateRun { durable, .. } => *durable,
            Job::Matched { .. } | Job::IncidentValue { .. } | Job::Prune { .. } => false,
        }
    }

    fn fail(self, error: &str) {
        let e = || StoreError::Backend(error.to_owned());
        match self {
            Job::Ingest { reply, .. } => drop(reply.send(Err(e()))),
            Job::CreateRun { reply, .. } => drop(reply.send(Err(e()))),
            Job::Slot { reply, .. } => drop(reply.send(Err(e()))),
            Job::SaveRun { reply, .. }
            | Job::Matched { reply, .. }
            | Job::IncidentValue { reply, .. }
            | Job::Outbox { reply, .. }
            | Job::Meta { reply, .. }
            | Job::Audit { reply, .. } => drop(reply.send(Err(e()))),
            Job::Once { reply, .. } => drop(reply.send(Err(e()))),
            Job::Prune { reply, .. } => drop(reply.send(Err(e()))),
        }
    }
}

/// The embedded store.
pub struct SledStore {
    /// The database, for its size on disk (`cordon store stats`).
    db: sled::Db,
    tree: sled::Tree,
    /// Outbox entries by id (ids are time-ordered), and small values by `namespace\0key`.
    outbox: sled::Tree,
    meta: sled::Tree,
    audit: Arc<AuditLog>,
    queue: RwLock<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    ready: Arc<AtomicBool>,
    pending: Arc<Pending>,
    /// The search index beside the database (src/search/index.rs), when it is kept.
    index: Option<Arc<crate::search::index::SledIndex>>,
}

impl SledStore {
    /// A run creation for the store thread, answered after the fsync when `durable`.
    async fn create(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
        durable: bool,
    ) -> Result<Option<String>, StoreError> {
        let run = Box::new(run.clone());
        self.ask(|reply| Job::CreateRun {
            run,
            audit,
            durable,
            reply,
        })
        .await
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        let queue = self.queue.read().map_err(|_| StoreError::Closed)?.clone();
        let queue = queue.ok_or(StoreError::Closed)?;
        queue.send(job).await.map_err(|_| StoreError::Closed)
    }

    /// Sends the job `make` builds around a reply channel and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Opens (or creates) the store at `config.path` and starts its writer.
    pub fn open(config: &StoreConfig, grouping: &GroupingConfig) -> Result<SledStore, StoreError> {
        SledStore::open_with_metrics(config, grouping, None)
    }

    /// As [`SledStore::open`], recording flush latency and group sizes in `metrics`.
    pub fn open_with_metrics(
        config: &StoreConfig,
        grouping: &GroupingConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<SledStore, StoreError> {
        SledStore::open_with_options(config, grouping, metrics, true)
    }

    /// As [`SledStore::open_with_metrics`]; `search_index: false` keeps no search index (for
    /// measuring what the index costs intake, `benches/search.rs`: [`Store::search`] then fails).
    pub fn open_with_options(
        config: &StoreConfig,
        grouping: &GroupingConfig,
        metrics: Option<Arc<Metrics>>,
        search_index: bool,
    ) -> Result<SledStore, StoreError> {
        let db = open_db(&config.path, config.cache_mb)?;
        let tree = db.open_tree("v1").map_err(backend)?;
        let outbox = db.open_tree("outbox").map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let slots = db.open_tree("slots").map_err(backend)?;
        let once = db.open_tree("once").map_err(backend)?;
        let audit = Arc::new(AuditLog::open(&db).map_err(|e| StoreError::Backend(e.to_string()))?);
        let index = if search_index {
            let folder = crate::search::index::folder_for(&config.path);
            let progress = Arc::new(crate::search::index::Progress::default());
            let index = crate::search::index::SledIndex::open(&folder, tree.clone(), progress)
                .map_err(|e| match e {
                    crate::search::index::IndexError::Tantivy(
                        tantivy::TantivyError::LockFailure(..),
                    ) => StoreError::Locked(folder.display().to_string()),
                    other => StoreError::Backend(other.to_string()),
                })?;
            let index = Arc::new(index);
            index
                .spawn()
                .map_err(|e| StoreError::Backend(format!("cannot start the index thread: {e}")))?;
            Some(index)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(MAX_JOBS * 4);
        let ready = Arc::new(AtomicBool::new(true));
        let pending = Arc::new(Pending::default());
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            outbox: outbox.clone(),
            meta: meta.clone(),
            slots,
            once,
            audit: audit.clone(),
            grouping: Grouping::from(grouping),
            ready: ready.clone(),
            pending: pending.clone(),
            metrics,
            search: index.as_ref().map(|i| i.progress()),
            logged: std::cell::Cell::new(0),
            trimmed: std::cell::Cell::new(0),
        };
        let handle = std::thread::Builder::new()
            .name("cordon-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the store thread: {e}")))?;
        Ok(SledStore {
            db,
            tree,
            outbox,
            meta,
            audit,
            queue: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            ready,
            pending,
            index,
        })
    }

    /// Every stored record, for copying the store elsewhere ([`super::migrate`]): the main tree
    /// in key order, then the outbox, the small values and the audit log. Each decoded record is
    /// checked to be one the store wrote; anything else is [`StoreError::Corrupt`].
    pub fn records(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        let main = self.tree.iter().filter_map(|row| {
            let (key, value) = match row {
                Ok(row) => row,
                Err(e) => return Some(Err(backend(e))),
            };
            main_record(&key, &value).transpose()
        });
        let outbox = self.outbox.iter().map(|row| {
            let (_, value) = row.map_err(backend)?;
            decode(&value).map(Record::Outbox)
        });
        let meta = self.meta.iter().map(|row| {
            let (key, value) = row.map_err(backend)?;
            let text = String::from_utf8_lossy(&key);
            let (namespace, key) = text
                .split_once('\0')
                .ok_or_else(|| StoreError::Corrupt("a value key without a namespace".into()))?;
            Ok(Record::Meta {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
                value: decode(&value)?,
            })
        });
        let audit = self.audit.stored().map(|row| {
            let (seq, stored) = row.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let stored = String::from_utf8(stored)
                .map_err(|_| StoreError::Corrupt(format!("audit entry {seq} is not UTF-8")))?;
            Ok(Record::Audit { seq, stored })
        });
        main.chain(outbox).chain(meta).chain(audit)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.tree.get(key).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// The record a key of the main tree holds; `None` for the incident-to-alert index, which the
/// alerts themselves say again.
fn main_record(key: &[u8], value: &[u8]) -> Result<Option<Record>, StoreError> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let unknown = || StoreError::Corrupt(format!("an unknown key `{}`", text(key)));
    let record = if let Some(id) = key.strip_prefix(b"ra:") {
        let (alert_id, playbook) = text(id)
            .split_once('/')
            .map(|(a, p)| (a.to_owned(), p.to_owned()))
            .ok_or_else(unknown)?;
        Record::RunForAlert {
            alert_id,
            playbook,
            run_id: text(value),
        }
    } else {
        let (prefix, rest) =
            key.split_at(key.iter().position(|b| *b == b':').ok_or_else(unknown)? + 1);
        match prefix {
            b"a:" => Record::Alert(decode(value)?),
            b"m:" => Record::PendingMatch {
                alert_id: text(rest),
            },
            b"d:" => Record::DedupKey {
                dedup_key: text(rest),
                alert_id: text(value),
            },
            b"i:" => Record::Incident(decode(value)?),
            b"e:" => Record::Entity {
                entity: text(rest),
                incident_id: text(value),
            },
            b"r:" => Record::Run(decode(value)?),
            b"w:" => Record::Unfinished { run_id: text(rest) },
            b"k:" => {
                let (playbook, key) = text(rest)
                    .split_once('\0')
                    .map(|(p, k)| (p.to_owned(), k.to_owned()))
                    .ok_or_else(unknown)?;
                Record::RunKey {
                    playbook,
                    key,
                    run_id: text(value),
                }
            }
            b"x:" => return Ok(None),
            // The search index's change log (src/search/index.rs).
            b"s:" => return Ok(None),
            _ => return Err(unknown()),
        }
    };
    Ok(Some(record))
}

/// A slot key's time (milliseconds, stored with the sign bit flipped so keys sort by time).
fn slot_time(stored: u64) -> i64 {
    (stored ^ (1 << 63)) as i64
}

fn meta_key(namespace: &str, key: &str) -> Vec<u8> {
    [namespace.as_bytes(), b"\0", key.as_bytes()].concat()
}

fn open_db(path: &PathBuf, cache_mb: u64) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
        .mode(sled::Mode::HighThroughput)
        // The store thread makes every write durable itself (see the module notes): sled's
        // periodic flusher would be one more holder of the log lock.
        .flush_every_ms(None)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::Locked(path.display().to_string())
            }
            other => backend(other),
        })
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our own types always serialize to JSON.
    serde_json::to_vec(value).unwrap_or_default()
}

fn alert_key(id: &str) -> Vec<u8> {
    [b"a:", id.as_bytes()].concat()
}

fn incident_key(id: &str) -> Vec<u8> {
    [b"i:", id.as_bytes()].concat()
}

#[async_trait]
impl Store for SledStore {
    async fn ingest(
        &self,
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, StoreError> {
        self.ask(|reply| Job::Ingest { alerts, now, reply }).await
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        self.get(&alert_key(id))
    }

    async fn alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut out = Vec::new();
        if let Some(incident) = &query.incident_id {
            for entry in self.tree.scan_prefix(format!("x:{incident}/")).rev() {
                let (key, _) = entry.map_err(backend)?;
                let id = key.rsplit(|b| *b == b'/').next().unwrap_or_default();
                if let Some(alert) = self.get::<Alert>(&[b"a:", id].concat())?
                    && query.source.as_ref().is_none_or(|s| *s == alert.source)
                {
                    out.push(alert);
                }
                if out.len() >= limit {
                    break;
                }
            }
            return Ok(out);
        }
        for entry in self.tree.scan_prefix(b"a:").rev() {
            let (_, bytes) = entry.map_err(backend)?;
            let alert: Alert = decode(&bytes)?;
            if query.source.as_ref().is_none_or(|s| *s == alert.source) {
                out.push(alert);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.get(&incident_key(id))
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"i:").rev() {
            let (_, bytes) = entry.map_err(backend)?;
            let incident: Incident = decode(&bytes)?;
            if query.status.is_none_or(|s| s == incident.status) {
                out.push(incident);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn incident_page(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let end = match &filter.before {
            Some(id) => std::ops::Bound::Excluded(format!("i:{id}").into_bytes()),
            None => std::ops::Bound::Excluded(b"i;".to_vec()),
        };
        let range = (std::ops::Bound::Included(b"i:".to_vec()), end);
        // Free text: an ASCII record that does not hold the text anywhere cannot match, and is
        // skipped without decoding it (the search reads every incident when few match).
        let needle = filter
            .text
            .as_deref()
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .filter(|t| !t.contains(['"', '\\']));
        let finder = needle.as_deref().map(memchr::memmem::Finder::new);
        let mut lowered = Vec::new();
        let mut out = Vec::new();
        for entry in self.tree.range::<Vec<u8>, _>(range).rev() {
            let (_, bytes) = entry.map_err(backend)?;
            if let Some(finder) = &finder
                && bytes.is_ascii()
            {
                lowered.clear();
                lowered.extend(bytes.iter().map(u8::to_ascii_lowercase));
                if finder.find(&lowered).is_none() {
                    continue;
                }
            }
            let incident: Incident = decode(&bytes)?;
            if filter.admits(&incident) {
                out.push(incident);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn create_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
    ) -> Result<Option<String>, StoreError> {
        self.create(run, audit, true).await
    }

    async fn create_run_for_alert(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
    ) -> Result<Option<String>, StoreError> {
        self.create(run, audit, false).await
    }

    async fn save_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let audit = audit
            .into_iter()
            .map(|e| match e.run_id {
                Some(_) => e,
                None => e.run(run.id.clone()),
            })
            .collect();
        let run = Box::new(run.clone());
        self.ask(|reply| Job::SaveRun {
            durable,
            run,
            audit,
            reply,
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        self.get(&run_key(id))
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"r:").rev() {
            let (_, bytes) = entry.map_err(backend)?;
            let run: Run = decode(&bytes)?;
            let keep = query.status.is_none_or(|s| s == run.status)
                && query.playbook.as_ref().is_none_or(|p| *p == run.playbook)
                && query
                    .incident_id
                    .as_ref()
                    .is_none_or(|i| Some(i) == run.incident_id.as_ref());
            if keep {
                out.push(run);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(b"w:")
            .map(|e| {
                e.map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    async fn pending_matches(&self) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(b"m:")
            .map(|e| {
                e.map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    async fn matched(&self, alert_id: &str) -> Result<(), StoreError> {
        let alert_id = alert_id.to_owned();
        self.ask(|reply| Job::Matched { alert_id, reply }).await
    }

    async fn set_incident_value(
        &self,
        incident_id: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        let update = IncidentUpdate::Value(key.to_owned(), value);
        self.update_incident(incident_id, update).await
    }

    async fn add_evidence(
        &self,
        incident_id: &str,
        records: Vec<serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.update_incident(incident_id, IncidentUpdate::Evidence(records))
            .await
    }

    async fn set_incident_status(
        &self,
        incident_id: &str,
        status: crate::alert::IncidentStatus,
    ) -> Result<(), StoreError> {
        self.update_incident(incident_id, IncidentUpdate::Status(status))
            .await
    }

    async fn outbox_push(&self, entries: Vec<OutboxEntry>) -> Result<(), StoreError> {
        let change = OutboxChange::Push(entries);
        self.ask(|reply| Job::Outbox { change, reply }).await
    }

    async fn outbox_pending(&self) -> Result<Vec<crate::model::outbox::OutboxEntry>, StoreError> {
        self.outbox
            .iter()
            .map(|item| {
                let (_, bytes) = item.map_err(backend)?;
                decode(&bytes)
            })
            .collect()
    }

    async fn outbox_save(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let change = OutboxChange::Save(Box::new(entry.clone()));
        self.ask(|reply| Job::Outbox { change, reply }).await
    }

    async fn outbox_remove(&self, id: &str) -> Result<(), StoreError> {
        let change = OutboxChange::Remove(id.to_owned());
        self.ask(|reply| Job::Outbox { change, reply }).await
    }

    async fn meta_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        match self.meta.get(meta_key(namespace, key)).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn meta_put(
        &self,
        namespace: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        let (key, value) = (meta_key(namespace, key), Some(encode(&value)));
        self.ask(|reply| Job::Meta { key, value, reply }).await
    }

    async fn meta_list(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let prefix = meta_key(namespace, "");
        let mut values = Vec::new();
        for item in self.meta.scan_prefix(&prefix) {
            let (key, bytes) = item.map_err(backend)?;
            let key = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            values.push((key, decode(&bytes)?));
        }
        Ok(values)
    }

    async fn meta_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let key = meta_key(namespace, key);
        self.ask(|reply| Job::Meta {
            key,
            value: None,
            reply,
        })
        .await
    }

    async fn take_slot(
        &self,
        key: &str,
        max: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.ask(|reply| Job::Slot {
            key,
            max,
            window,
            now,
            reply,
        })
        .await
    }

    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let key = meta_key(namespace, key);
        self.ask(|reply| Job::Once {
            key,
            until,
            now,
            reply,
        })
        .await
    }

    async fn append_audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        self.ask(|reply| Job::Audit { entries, reply }).await
    }

    async fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        self.audit
            .verify()
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    async fn audit_entries(
        &self,
        run_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        match run_id {
            Some(id) => self.audit.for_run(id),
            None => self.audit.list(None, limit),
        }
        .map_err(|e| StoreError::Backend(e.to_string()))
    }

    async fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        self.audit
            .entry(seq)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    async fn prune(&self, request: &PruneRequest) -> Result<PruneBatch, StoreError> {
        let request = Box::new(request.clone());
        self.ask(|reply| Job::Prune { request, reply }).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (db, tree, outbox, meta, audit) = (
            self.db.clone(),
            self.tree.clone(),
            self.outbox.clone(),
            self.meta.clone(),
            self.audit.clone(),
        );
        // A full read of every tree: on a blocking thread, never a runtime worker.
        tokio::task::spawn_blocking(move || sled_stats(&db, &tree, &outbox, &meta, &audit))
            .await
            .map_err(|e| StoreError::Backend(format!("the stats reader stopped: {e}")))?
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.queue.read().map(|q| q.is_some()).unwrap_or(false)
    }

    fn oldest_pending(&self) -> Option<stall::Oldest> {
        self.pending.oldest()
    }

    fn queued(&self) -> usize {
        self.queue
            .read()
            .ok()
            .and_then(|q| q.as_ref().map(|q| q.max_capacity() - q.capacity()))
            .unwrap_or(0)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Dropping the sender lets the store thread finish what is queued, fsync, then stop.
        if let Ok(mut queue) = self.queue.write() {
            queue.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            // Joined on a thread of its own, not the runtime's blocking pool: a store thread stuck
            // in the disk must not keep the runtime from shutting down (the caller bounds this).
            let (done, joined) = oneshot::channel();
            std::thread::spawn(move || drop(done.send(handle.join())));
            joined
                .await
                .map_err(|_| StoreError::Backend("the store thread was lost".into()))?
                .map_err(|_| StoreError::Backend("the store thread panicked".into()))?;
        }
        if let Some(index) = &self.index {
            index.stop();
        }
        Ok(())
    }

    async fn search(
        &self,
        request: &crate::search::Request,
    ) -> Result<Vec<crate::search::HitRef>, StoreError> {
        let index = self.search_index()?;
        let request = request.clone();
        tokio::task::spawn_blocking(move || index.search(&request))
            .await
            .map_err(|_| StoreError::Backend("the search was lost".into()))?
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    async fn reindex(&self) -> Result<u64, StoreError> {
        let index = self.search_index()?;
        tokio::task::spawn_blocking(move || index.rebuild())
            .await
            .map_err(|_| StoreError::Backend("the reindex was lost".into()))?
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

impl SledStore {
    fn search_index(&self) -> Result<Arc<crate::search::index::SledIndex>, StoreError> {
        self.index
            .clone()
            .ok_or_else(|| StoreError::Backend("this store keeps no search index".into()))
    }
}

impl SledStore {
    async fn update_incident(
        &self,
        incident_id: &str,
        update: IncidentUpdate,
    ) -> Result<(), StoreError> {
        let incident_id = incident_id.to_owned();
        self.ask(|reply| Job::IncidentValue {
            incident_id,
            update,
            reply,
        })
        .await
    }
}

/// The store thread's state.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
    /// Blast-radius slots: `<key>\0<taken at, ms, sign bit flipped><unique id>`, big-endian, so
    /// a key's slots are in time order.
    slots: sled::Tree,
    /// Remembered keys: `k:<namespace>\0<key>` → until (Unix ms, big-endian), and the expiry
    /// index `t:<until><namespace>\0<key>` that pruning walks in time order.
    once: sled::Tree,
    audit: Arc<AuditLog>,
    grouping: Grouping,
    ready: Arc<AtomicBool>,
    pending: Arc<Pending>,
    metrics: Option<Arc<Metrics>>,
    /// Told the last logged change once it is fsynced, when a search index is kept.
    search: Option<Arc<crate::search::index::Progress>>,
    /// The last change-log sequence written.
    logged: std::cell::Cell<u64>,
    /// The change log is deleted up to here (the committed index holds it).
    trimmed: std::cell::Cell<u64>,
}

impl Writer {
    /// Takes groups of jobs off `rx` until every sender is gone, then fsyncs what is left.
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        // Only to wait for the next job with a time limit while changes are waiting to be fsynced.
        let clock = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(clock) => clock,
            Err(e) => {
                tracing::error!(error = %e, "the store thread cannot start; requests answered 503");
                self.ready.store(false, Ordering::Relaxed);
                return;
            }
        };
        let mut unflushed = false;
        loop {
            let first = if unflushed {
                match clock.block_on(async { tokio::time::timeout(IDLE_FLUSH, rx.recv()).await }) {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(_) => {
                        self.fsync(Vec::new());
                        unflushed = false;
                        continue;
                    }
                }
            } else {
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if let Some(metrics) = &self.metrics {
                metrics.store_group_size.observe(jobs.len() as f64);
            }
            let durable = {
                let _write = self.pending.begin(Operation::Write);
                stall::hold_blocking();
                self.write(jobs)
            };
            match durable {
                Some(answers) if !answers.is_empty() => {
                    self.fsync(answers);
                    unflushed = false;
                }
                Some(_) => unflushed = true,
                None => {}
            }
        }
        if unflushed {
            self.fsync(Vec::new());
        }
    }

    /// Writes one group: every job's changes, the main tree's as one atomic batch. Answers the
    /// jobs that need not wait for the fsync and gives back those that must; `None` when the group
    /// failed (every job is answered with the error then).
    fn write(&self, jobs: Vec<Job>) -> Option<Vec<Answer>> {
        let mut group = Group {
            tree: &self.tree,
            writes: HashMap::new(),
            audit: Vec::new(),
        };
        let mut answers = Vec::with_capacity(jobs.len());
        let mut written_only = Vec::new();
        let mut failed: Option<String> = None;
        for job in jobs {
            if let Some(error) = &failed {
                job.fail(error);
                continue;
            }
            let durable = job.durable();
            match self.apply(&mut group, job) {
                Ok(answer) if durable => answers.push(answer),
                Ok(answer) => written_only.push(answer),
                Err((answer, e)) => {
                    answer.fail(&e.to_string());
                    failed = Some(e.to_string());
                }
            }
        }
        let result = match failed {
            Some(e) => Err(StoreError::Backend(e)),
            None => {
                let audit = std::mem::take(&mut group.audit);
                self.log_changes(&mut group)
                    .and_then(|()| self.append_audit(audit))
                    .and_then(|()| group.commit())
            }
        };
        match result {
            Ok(()) => {
                for answer in written_only {
                    answer.ok();
                }
                Some(answers)
            }
            Err(e) => {
                tracing::error!(error = %e, requests = answers.len(), "store write failed; requests answered 503");
                self.ready.store(false, Ordering::Relaxed);
                for answer in answers.into_iter().chain(written_only) {
                    answer.fail(&e.to_string());
                }
                None
            }
        }
    }

    /// Makes everything written so far durable, then answers `answers`.
    fn fsync(&self, answers: Vec<Answer>) {
        let result = {
            let _fsync = self.pending.begin(Operation::Fsync);
            let started = Instant::now();
            let result = self.db.flush();
            if let Some(metrics) = &self.metrics {
                metrics
                    .store_flush_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            result
        };
        match result {
            Ok(_) => {
                self.ready.store(true, Ordering::Relaxed);
                // Before answering: a search made once an ingest returned sees its alerts.
                if let Some(search) = &self.search {
                    search.durable(self.logged.get());
                }
                for answer in answers {
                    answer.ok();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store fsync failed; requests answered 503");
                self.ready.store(false, Ordering::Relaxed);
                for answer in answers {
                    answer.fail(&e.to_string());
                }
            }
        }
    }

    /// Decides one job into the group's writes.
    fn apply(&self, group: &mut Group<'_>, job: Job) -> Result<Answer, (Answer, StoreError)> {
        match job {
            Job::Ingest { alerts, now, reply } => {
                let mut accepted = Vec::with_capacity(alerts.len());
                for alert in alerts {
                    match self.place(group, alert, now) {
                        Ok(a) => accepted.push(a),
                        Err(e) => return Err((Answer::Ingest(reply, Vec::new()), e)),
                    }
                }
                Ok(Answer::Ingest(reply, accepted))
            }
            Job::CreateRun {
                run, audit, reply, ..
            } => {
                group.audit.extend(audit);
                match self.create_run(group, *run) {
                    Ok(existing) => Ok(Answer::Created(reply, existing)),
                    Err(e) => Err((Answer::Created(reply, None), e)),
                }
            }
            Job::SaveRun {
                run, audit, reply, ..
            } => {
                group.audit.extend(audit);
                done(reply, self.save_run(group, &run))
            }
            Job::Outbox { change, reply } => done(reply, self.change_outbox(change)),
            Job::Meta { key, value, reply } => done(
                reply,
                match value {
                    Some(value) => self.meta.insert(key, value),
                    None => self.meta.remove(key),
                }
                .map(drop)
                .map_err(backend),
            ),
            Job::Audit { entries, reply } => {
                group.audit.extend(entries);
                done(reply, Ok(()))
            }
            Job::Slot {
                key,
                max,
                window,
                now,
                reply,
            } => match self.take_slot(&key, max, window, now) {
                Ok(taken) => Ok(Answer::Decided(reply, taken)),
                Err(e) => Err((Answer::Decided(reply, false), e)),
            },
            Job::Once {
                key,
                until,
                now,
                reply,
            } => match self.remember_once(&key, until, now) {
                Ok(first) => Ok(Answer::Once(reply, first)),
                Err(e) => Err((Answer::Once(reply, false), e)),
            },
            Job::Prune { request, reply } => match self.prune(group, &request) {
                Ok(batch) => Ok(Answer::Pruned(reply, batch)),
                Err(e) => Err((Answer::Pruned(reply, PruneBatch::default()), e)),
            },
            Job::Matched { alert_id, reply } => {
                group.delete([b"m:", alert_id.as_bytes()].concat());
                Ok(Answer::Done(reply))
            }
            Job::IncidentValue {
                incident_id,
                update,
                reply,
            } => {
                let k = incident_key(&incident_id);
                match group.get::<Incident>(&k) {
                    Ok(Some(mut incident)) => {
                        match update {
                            IncidentUpdate::Value(key, value) => {
                                incident.values.insert(key, value);
                            }
                            IncidentUpdate::Evidence(records) => incident.evidence.extend(records),
                            IncidentUpdate::Status(status) => incident.status = status,
                        }
                        incident.updated_at = Utc::now();
                        group.put(k, &incident);
                        Ok(Answer::Done(reply))
                    }
                    // This request's mistake alone: the rest of the group is written.
                    Ok(None) => {
                        let missing = format!("no incident `{incident_id}`");
                        drop(reply.send(Err(StoreError::Backend(missing))));
                        Ok(Answer::Answered)
                    }
                    Err(e) => Err((Answer::Done(reply), e)),
                }
            }
        }
    }

    /// One batch of pruning, decided on the group's view (so a repeat or a status change
    /// written earlier in the same group counts) and written with the group.
    fn prune(&self, group: &mut Group<'_>, r: &PruneRequest) -> Result<PruneBatch, StoreError> {
        use std::ops::Bound;
        let mut batch = PruneBatch::default();
        if r.kind == PruneKind::Outbox {
            let start = match &r.after {
                Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
                None => Bound::Unbounded,
            };
            let end = Bound::Included(r.bound.as_bytes().to_vec());
            let mut last = None;
            for row in self.outbox.range((start, end)).take(r.limit) {
                let (key, value) = row.map_err(backend)?;
                batch.examined += 1;
                last = Some(String::from_utf8_lossy(&key).into_owned());
                let entry: OutboxEntry = decode(&value)?;
                if rules::outbox_expired(&entry, r.cutoff) {
                    self.outbox.remove(&key).map_err(backend)?;
                    batch.pruned += 1;
                }
            }
            batch.next = last.filter(|_| batch.examined as usize == r.limit);
            return Ok(batch);
        }
        let prefix: &[u8] = match r.kind {
            PruneKind::RawPayloads | PruneKind::Alerts => b"a:",
            PruneKind::Incidents | PruneKind::Evidence => b"i:",
            PruneKind::Runs => b"r:",
            PruneKind::Outbox => unreachable!("handled above"),
        };
        let start = match &r.after {
            Some(after) => Bound::Excluded([prefix, after.as_bytes()].concat()),
            None => Bound::Included(prefix.to_vec()),
        };
        let end = Bound::Included([prefix, r.bound.as_bytes()].concat());
        let keys: Vec<sled::IVec> = self
            .tree
            .range((start, end))
            .keys()
            .take(r.limit)
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for key in &keys {
            batch.examined += 1;
            match r.kind {
                PruneKind::RawPayloads => {
                    if let Some(mut alert) = group.get::<Alert>(key)?
                        && rules::raw_expired(&alert, r.cutoff)
                    {
                        rules::clear_raw(&mut alert);
                        group.put(key.to_vec(), &alert);
                        batch.pruned += 1;
                    }
                }
                PruneKind::Alerts => {
                    if let Some(alert) = group.get::<Alert>(key)? {
                        let incident = group.get::<Incident>(&incident_key(&alert.incident_id))?;
                        if rules::alert_expired(&alert, incident.as_ref(), r.cutoff) {
                            self.forget_alert(group, &alert)?;
                            batch.pruned += 1;
                        }
                    }
                }
                PruneKind::Incidents => {
                    if let Some(incident) = group.get::<Incident>(key)?
                        && rules::incident_expired(&incident, r.cutoff)
                    {
                        let members: Vec<sled::IVec> = self
                            .tree
                            .scan_prefix(format!("x:{}/", incident.id))
                            .keys()
                            .collect::<Result<_, _>>()
                            .map_err(backend)?;
                        for member in members {
                            let id = member.rsplit(|b| *b == b'/').next().unwrap_or_default();
                            if let Some(alert) = group.get::<Alert>(&[b"a:", id].concat())? {
                                self.forget_alert(group, &alert)?;
                            }
                            group.delete(member.to_vec());
                        }
                        if let Some(entity) = &incident.entity {
                            let pointer = [b"e:", entity.as_bytes()].concat();
                            if group.get_raw(&pointer)?.as_deref() == Some(incident.id.as_bytes()) {
                                group.delete(pointer);
                            }
                        }
                        group.delete(key.to_vec());
                        batch.pruned += 1;
                    }
                }
                PruneKind::Evidence => {
                    if let Some(mut incident) = group.get::<Incident>(key)? {
                        let removed = rules::prune_evidence(&mut incident, r.cutoff);
                        if removed > 0 {
                            group.put(key.to_vec(), &incident);
                            batch.pruned += removed;
                        }
                    }
                }
                PruneKind::Runs => {
                    if let Some(run) = group.get::<Run>(key)?
                        && rules::run_expired(&run, r.cutoff)
                    {
                        if let Some(alert) = &run.alert_id {
                            let marker = format!("ra:{alert}/{}", run.playbook).into_bytes();
                            if group.get_raw(&marker)?.as_deref() == Some(run.id.as_bytes()) {
                                group.delete(marker);
                            }
                        }
                        let held = concurrency_key(&run.playbook, &run.concurrency_key);
                        if group.get_raw(&held)?.as_deref() == Some(run.id.as_bytes()) {
                            group.delete(held);
                        }
                        group.delete(format!("w:{}", run.id).into_bytes());
                        group.delete(key.to_vec());
                        batch.pruned += 1;
                    }
                }
                PruneKind::Outbox => {}
            }
        }
        if keys.len() == r.limit {
            batch.next = keys
                .last()
                .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(batch)
    }

    /// Deletes an alert and every key that points at it.
    fn forget_alert(&self, group: &mut Group<'_>, alert: &Alert) -> Result<(), StoreError> {
        group.delete(alert_key(&alert.id));
        group.delete(format!("x:{}/{}", alert.incident_id, alert.id).into_bytes());
        group.delete([b"m:", alert.id.as_bytes()].concat());
        let dedup = [b"d:", alert.dedup_key.as_bytes()].concat();
        if group.get_raw(&dedup)?.as_deref() == Some(alert.id.as_bytes()) {
            group.delete(dedup);
        }
        for marker in self.tree.scan_prefix(format!("ra:{}/", alert.id)).keys() {
            group.delete(marker.map_err(backend)?.to_vec());
        }
        Ok(())
    }

    /// Adds to the group a change-log entry naming the alerts and incidents it writes or deletes,
    /// for the search index to pick up once the group is durable (src/search/index.rs).
    /// And deletes, in the same batch, the log entries the committed index holds.
    fn log_changes(&self, group: &mut Group<'_>) -> Result<(), StoreError> {
        let Some(search) = &self.search else {
            return Ok(());
        };
        let mut changed: Vec<&[u8]> = group
            .writes
            .keys()
            .filter(|k| crate::search::index::is_indexed_key(k))
            .map(Vec::as_slice)
            .collect();
        if !changed.is_empty() {
            changed.sort();
            // One entry for the group: its keys, a line each.
            let keys = changed.join(&b'\n');
            // From 1: the index's "nothing indexed yet" is 0.
            let seq = self.db.generate_id().map_err(backend)? + 1;
            group.put_raw(crate::search::index::log_key(seq), keys);
            self.logged.set(seq);
        }
        let indexed = search.indexed();
        if indexed > self.trimmed.get() {
            let from = crate::search::index::log_key(self.trimmed.get().saturating_add(1));
            for key in self
                .tree
                .range(from..=crate::search::index::log_key(indexed))
                .keys()
            {
                group.delete(key.map_err(backend)?.to_vec());
            }
            self.trimmed.set(indexed);
        }
        Ok(())
    }

    /// Appends audit entries: written at once (the chain is its own tree), made durable by the
    /// group's fsync with everything else.
    fn append_audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.audit
            .append_batch(entries)
            .map(drop)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Takes a slot under `key` if fewer than `max` are in the window, forgetting older ones.
    /// Only the store thread writes, so the count and the insert are one step.
    fn take_slot(
        &self,
        key: &str,
        max: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let prefix = [key.as_bytes(), b"\0"].concat();
        let since = now.timestamp_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut expired = sled::Batch::default();
        let mut held = 0u64;
        for row in self.slots.scan_prefix(&prefix) {
            let (k, _) = row.map_err(backend)?;
            let at = k
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|b| b.try_into().ok())
                .map(|b| slot_time(u64::from_be_bytes(b)))
                .unwrap_or(i64::MIN);
            if at <= since {
                expired.remove(k);
            } else {
                held += 1;
            }
        }
        let free = held < u64::from(max);
        if free {
            let id = self.db.generate_id().map_err(backend)?;
            let at = (now.timestamp_millis() as u64) ^ (1 << 63);
            expired.insert(
                [prefix.as_slice(), &at.to_be_bytes(), &id.to_be_bytes()].concat(),
                &[][..],
            );
        }
        self.slots.apply_batch(expired).map_err(backend)?;
        Ok(free)
    }

    /// Remembers `key` until `until` unless it is remembered past `now`; prunes what expired.
    /// Only the store thread writes, so the check and the write cannot interleave with another's.
    fn remember_once(
        &self,
        key: &[u8],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let millis = |t: DateTime<Utc>| t.timestamp_millis().max(0) as u64;
        let now_ms = millis(now);
        // Pruning is bounded per call so one call never walks a large backlog at once.
        let mut batch = sled::Batch::default();
        let end = [b"t:".as_slice(), &(now_ms + 1).to_be_bytes()].concat();
        for row in self.once.range(b"t:".to_vec()..end).take(PRUNE_PER_CALL) {
            let (index, _) = row.map_err(backend)?;
            batch.remove(index.clone());
            batch.remove([b"k:".as_slice(), &index[10..]].concat());
        }
        self.once.apply_batch(batch).map_err(backend)?;
        let k = [b"k:".as_slice(), key].concat();
        if let Some(stored) = self.once.get(&k).map_err(backend)? {
            let stored_until = stored
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if stored_until > now_ms {
                return Ok(false);
            }
            self.once
                .remove([b"t:".as_slice(), &stored_until.to_be_bytes(), key].concat())
                .map_err(backend)?;
        }
        let until_ms = millis(until);
        let mut batch = sled::Batch::default();
        batch.insert(k, until_ms.to_be_bytes().to_vec());
        batch.insert(
            [b"t:".as_slice(), &until_ms.to_be_bytes(), key].concat(),
            Vec::new(),
        );
        self.once.apply_batch(batch).map_err(backend)?;
        Ok(true)
    }

    fn change_outbox(&self, change: OutboxChange) -> Result<(), StoreError> {
        match change {
            OutboxChange::Push(entries) => {
                let mut batch = sled::Batch::default();
                for entry in &entries {
                    batch.insert(entry.id.as_bytes(), encode(entry));
                }
                self.outbox.apply_batch(batch)
            }
            OutboxChange::Save(entry) => self
                .outbox
                .insert(entry.id.as_bytes(), encode(&*entry))
                .map(drop),
            OutboxChange::Remove(id) => self.outbox.remove(id.as_bytes()).map(drop),
        }
        .map_err(backend)
    }

    fn create_run(&self, group: &mut Group<'_>, run: Run) -> Result<Option<String>, StoreError> {
        let marker = match &run.alert_id {
            Some(alert) => {
                let marker = format!("ra:{alert}/{}", run.playbook).into_bytes();
                if let Some(existing) = group.get_raw(&marker)? {
                    return Ok(Some(String::from_utf8_lossy(&existing).into_owned()));
                }
                Some(marker)
            }
            None => None,
        };
        let key = concurrency_key(&run.playbook, &run.concurrency_key);
        if let Some(active) = group.get_raw(&key)? {
            let active_key = [b"r:", active.as_slice()].concat();
            if let Some(existing) = group.get::<Run>(&active_key)?
                && !existing.status.is_finished()
            {
                // The alert is taken care of by the active run: asking again answers that run,
                // which exists (the marker must not name a run that was never created).
                if let Some(marker) = marker {
                    group.put_raw(marker, existing.id.as_bytes().to_vec());
                }
                return Ok(Some(existing.id));
            }
        }
        if let Some(marker) = marker {
            group.put_raw(marker, run.id.as_bytes().to_vec());
        }
        group.put_raw(key, run.id.as_bytes().to_vec());
        group.put_raw(format!("w:{}", run.id).into_bytes(), Vec::new());
        group.put(run_key(&run.id), &run);
        Ok(None)
    }

    fn save_run(&self, group: &mut Group<'_>, run: &Run) -> Result<(), StoreError> {
        group.put(run_key(&run.id), run);
        if run.status.is_finished() {
            group.delete(format!("w:{}", run.id).into_bytes());
            let key = concurrency_key(&run.playbook, &run.concurrency_key);
            if group.get_raw(&key)?.as_deref() == Some(run.id.as_bytes()) {
                group.delete(key);
            }
        }
        Ok(())
    }

    /// Dedups `alert` or files it into an incident ([`Grouping`] decides), recording the writes in
    /// `group`.
    fn place(
        &self,
        group: &mut Group<'_>,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<Accepted, StoreError> {
        let dedup_key = [b"d:", alert.dedup_key.as_bytes()].concat();
        let mut earlier = None;
        if let Some(existing_id) = group.get_raw(&dedup_key)?
            && let Some(existing) = group.get::<Alert>(&[b"a:", existing_id.as_slice()].concat())?
            && let Some(incident) = group.get::<Incident>(&incident_key(&existing.incident_id))?
        {
            earlier = Some((existing, incident));
        }
        let placed = match self.grouping.repeat(&alert, earlier, now) {
            Some(placed) => placed,
            None => {
                let mut latest = None;
                if let Some(entity) = alert.entity_key()
                    && let Some(incident_id) =
                        group.get_raw(&[b"e:", entity.as_bytes()].concat())?
                {
                    latest = group.get::<Incident>(&[b"i:", incident_id.as_slice()].concat())?;
                }
                self.grouping.file(alert, latest, now)
            }
        };
        if let Placement::Repeat { alert, incident } = &placed {
            group.put(alert_key(&alert.id), alert);
            group.put(incident_key(&incident.id), incident);
            return Ok(placed.accepted());
        }
        if let Some(earlier) = placed.follows() {
            group.put(alert_key(&earlier.id), earlier);
        }
        let (alert, incident) = (placed.alert(), placed.incident());
        if let Some((entity, incident_id)) = placed.new_entity_incident() {
            group.put_raw(
                [b"e:", entity.as_bytes()].concat(),
                incident_id.as_bytes().to_vec(),
            );
        }
        // Until the engine has created this alert's runs; a restart finds it here.
        group.put_raw([b"m:", alert.id.as_bytes()].concat(), Vec::new());
        group.put_raw(dedup_key, alert.id.as_bytes().to_vec());
        group.put_raw(
            format!("x:{}/{}", incident.id, alert.id).into_bytes(),
            Vec::new(),
        );
        group.put(alert_key(&alert.id), alert);
        group.put(incident_key(&incident.id), incident);
        Ok(placed.accepted())
    }
}

/// The answer of a job whose reply is only "done", or the error that fails its group.
fn done(
    reply: oneshot::Sender<Result<(), StoreError>>,
    result: Result<(), StoreError>,
) -> Result<Answer, (Answer, StoreError)> {
    match result {
        Ok(()) => Ok(Answer::Done(reply)),
        Err(e) => Err((Answer::Done(reply), e)),
    }
}

/// The writes of one group commit (`None` deletes), read back before they reach the tree.
struct Group<'a> {
    tree: &'a sled::Tree,
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The group's audit entries, in the order of its jobs: appended in one batch before the
    /// group's writes, so every state written has its entries before it.
    audit: Vec<NewEntry>,
}

impl Group<'_> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get_raw(key)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(encode(value)));
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Writes the group as one atomic batch.
    fn commit(self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch).map_err(backend)
    }
}

fn run_key(id: &str) -> Vec<u8> {
    [b"r:", id.as_bytes()].concat()
}

fn concurrency_key(playbook: &str, key: &str) -> Vec<u8> {
    format!("k:{playbook}\u{0}{key}").into_bytes()
}

/// Counts and sizes per kind, read from every tree.
fn sled_stats(
    db: &sled::Db,
    tree: &sled::Tree,
    outbox: &sled::Tree,
    meta: &sled::Tree,
    audit: &AuditLog,
) -> Result<StoreStats, StoreError> {
    let mut counts: Vec<(&str, u64, u64)> = [
        "alerts",
        "raw_payloads",
        "incidents",
        "evidence",
        "runs",
        "outbox",
        "outbox_dead",
        "audit",
        "meta",
    ]
    .iter()
    .map(|k| (*k, 0, 0))
    .collect();
    let mut add = |kind: &str, count: u64, bytes: u64| {
        if let Some(row) = counts.iter_mut().find(|(k, _, _)| *k == kind) {
            row.1 += count;
            row.2 += bytes;
        }
    };
    for row in tree.iter() {
        let (key, value) = row.map_err(backend)?;
        let size = value.len() as u64;
        if key.starts_with(b"a:") {
            add("alerts", 1, size);
            let alert: Alert = decode(&value)?;
            if rules::holds_raw(&alert) {
                add("raw_payloads", 1, alert.raw.get().len() as u64);
            }
        } else if key.starts_with(b"i:") {
            add("incidents", 1, size);
            let incident: Incident = decode(&value)?;
            add(
                "evidence",
                incident.evidence.len() as u64,
                rules::evidence_bytes(&incident),
            );
        } else if key.starts_with(b"r:") {
            add("runs", 1, size);
        }
    }
    for row in outbox.iter() {
        let (_, value) = row.map_err(backend)?;
        let entry: OutboxEntry = decode(&value)?;
        let kind = if entry.dead { "outbox_dead" } else { "outbox" };
        add(kind, 1, value.len() as u64);
    }
    for row in meta.iter() {
        let (_, value) = row.map_err(backend)?;
        add("meta", 1, value.len() as u64);
    }
    for row in audit.stored() {
        let (_, stored) = row.map_err(|e| StoreError::Corrupt(e.to_string()))?;
        add("audit", 1, stored.len() as u64);
    }
    Ok(StoreStats {
        backend: "sled".into(),
        kinds: counts
            .into_iter()
            .map(|(kind, count, bytes)| KindStats {
                kind: kind.into(),
                count,
                bytes,
            })
            .collect(),
        on_disk_bytes: db.size_on_disk().map_err(backend)?,
    })
}
