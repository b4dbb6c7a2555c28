//! Where alerts and incidents are kept: the [`Store`] trait and its backends.
//!
//! The contract every backend keeps: [`Store::ingest`] returns only once the alerts are durable
//! (on disk, flushed), and deduplication and incident grouping are decided there, atomically with
//! the write, so two replicas or two concurrent requests never split one incident.
//!
//! Backends: [`SledStore`] (embedded, the default) and [`PostgresStore`] (a database several
//! replicas share). Both pass the one behavioural suite in `tests/store_conformance.rs`, and
//! [`migrate`] copies a sled store into PostgreSQL (`cordon migrate`).

pub mod migrate;
mod postgres;
mod postgres_audit;
pub mod retention;
mod sled;
mod sled_audit;
pub mod stall;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use self::postgres::PostgresStore;
pub use self::retention::{KindStats, PruneBatch, PruneKind, PruneRequest, StoreStats};
pub use self::sled::SledStore;
use crate::alert::{Alert, Incident, IncidentStatus};
use crate::config::{GroupingConfig, StoreConfig, StoreKind};
use crate::model::audit::{AuditEntry, NewEntry, VerifyReport};
/// What became of an ingested alert; the model's, named here where it has always been.
pub use crate::model::grouping::Accepted;
use crate::model::run::{Run, RunStatus};

/// Filters for listing alerts (newest first).
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub source: Option<String>,
    pub incident_id: Option<String>,
    pub limit: usize,
}

/// Filters for listing incidents (newest first).
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub status: Option<IncidentStatus>,
    pub limit: usize,
}

/// The console's incident list: every filter of [`IncidentQuery`] and more, newest first, one page
/// at a time. A type of its own rather than more fields on [`IncidentQuery`], whose struct
/// literals elsewhere would each need changing.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    /// The least and greatest severity (0–10), inclusive.
    pub severity_min: Option<u8>,
    pub severity_max: Option<u8>,
    /// One of the incident's sources, exactly.
    pub source: Option<String>,
    /// Part of the incident's entity key, any case.
    pub entity: Option<String>,
    /// Updated at or after / created at or before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `values.assignee` (set by a playbook's `core.set` or a person), exactly.
    pub assignee: Option<String>,
    /// Free text ([`text_matches`]).
    pub text: Option<String>,
    /// A search query with fields (docs/search.md), evaluated on each incident as the search
    /// index would: `status:open severity:>=7 source:aws.guardduty`.
    pub query: Option<crate::search::Expr>,
    /// The cursor: only incidents older than this id (ids sort by creation).
    pub before: Option<String>,
    pub limit: usize,
}

impl IncidentFilter {
    /// Whether `incident` passes every filter but the cursor.
    pub fn admits(&self, incident: &Incident) -> bool {
        self.status.is_none_or(|s| s == incident.status)
            && self.severity_min.is_none_or(|m| incident.severity >= m)
            && self.severity_max.is_none_or(|m| incident.severity <= m)
            && self
                .source
                .as_ref()
                .is_none_or(|s| incident.sources.iter().any(|x| x == s))
            && self.entity.as_ref().is_none_or(|e| {
                incident
                    .entity
                    .as_deref()
                    .is_some_and(|have| contains_folded(have, e))
            })
            && self.since.is_none_or(|t| incident.updated_at >= t)
            && self.until.is_none_or(|t| incident.created_at <= t)
            && self.assignee.as_ref().is_none_or(|a| {
                incident.values.get("assignee").and_then(|v| v.as_str()) == Some(a.as_str())
            })
            && self.text.as_ref().is_none_or(|q| text_matches(incident, q))
            && self
                .query
                .as_ref()
                .is_none_or(|e| e.matches(&crate::search::Doc::from_incident(incident)))
    }
}

/// The list's free-text search: a case-insensitive substring of the title or the entity. The one
/// place text is matched, so a query language can take its place.
pub fn text_matches(incident: &Incident, q: &str) -> bool {
    let q = q.trim();
    q.is_empty()
        || contains_folded(&incident.title, q)
        || incident
            .entity
            .as_deref()
            .is_some_and(|e| contains_folded(e, q))
}

fn contains_folded(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Filters for listing runs (newest first).
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub playbook: Option<String>,
    pub incident_id: Option<String>,
    pub limit: usize,
}

/// Store failures. None of them carries user data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Backend(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// Another process holds the embedded store (only one may open it).
    #[error("the store at {0} is in use by another process")]
    Locked(String),
    /// Another replica holds the run's lease: this one lost it (it stalled past the lease), and
    /// its write is refused so the two never interleave.
    #[error("run `{0}` is leased by another replica")]
    LeaseLost(String),
}

/// One stored record, as [`migrate`] copies it from one backend to another: the documents and
/// the markers that dedup, grouping, run creation and resumption read.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
// One record at a time goes through a migration's stream, so the size of the largest is no cost.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Alert(Alert),
    /// The alert's runs are not created yet.
    PendingMatch {
        alert_id: String,
    },
    /// The latest alert with this dedup key.
    DedupKey {
        dedup_key: String,
        alert_id: String,
    },
    Incident(Incident),
    /// The latest incident about this entity.
    Entity {
        entity: String,
        incident_id: String,
    },
    Run(Run),
    /// The run is not finished (resumed after a restart).
    Unfinished {
        run_id: String,
    },
    /// The run this alert started for this playbook.
    RunForAlert {
        alert_id: String,
        playbook: String,
        run_id: String,
    },
    /// The run holding this playbook's concurrency key.
    RunKey {
        playbook: String,
        key: String,
        run_id: String,
    },
    Outbox(crate::model::outbox::OutboxEntry),
    Meta {
        namespace: String,
        key: String,
        value: serde_json::Value,
    },
    /// An audit entry exactly as stored, so the chain is copied byte for byte.
    Audit {
        seq: u64,
        stored: String,
    },
}

impl Record {
    /// The kind of record, as `cordon migrate` counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Alert(_) => "alerts",
            Record::PendingMatch { .. } => "pending_matches",
            Record::DedupKey { .. } => "dedup_keys",
            Record::Incident(_) => "incidents",
            Record::Entity { .. } => "entities",
            Record::Run(_) => "runs",
            Record::Unfinished { .. } => "unfinished_runs",
            Record::RunForAlert { .. } => "runs_for_alerts",
            Record::RunKey { .. } => "concurrency_keys",
            Record::Outbox(_) => "outbox",
            Record::Meta { .. } => "meta",
            Record::Audit { .. } => "audit",
        }
    }
}

/// The storage behind Cordon.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `alerts` durably, each deduplicated and assigned to an incident; returns only once
    /// they are flushed to disk. `now` is the time windows are measured from.
    async fn ingest(
        &self,
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, StoreError>;
    async fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError>;
    async fn alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>, StoreError>;
    async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;
    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;
    /// One page of incidents the filter admits, newest first, older than its cursor.
    async fn incident_page(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError>;
    /// Creates a run unless its playbook's concurrency key is held by an active run, or its alert
    /// already started that playbook; then answers that run's id and creates nothing. Durable.
    /// The audit entries go in before the run, like [`Store::save_run`]'s (for a run that turns out
    /// to exist already they record the attempt).
    async fn create_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
    ) -> Result<Option<String>, StoreError>;
    /// [`Store::create_run`] for a run an alert started, answered once it is written rather than
    /// durable: the alert stays pending until the engine marks it matched, a later write, so a
    /// creation lost to a crash is made again when the alert is matched at the next start, and
    /// whatever the run does next that matters (a side effect, a wait, its end) is durable and
    /// makes its creation durable with it (a store whose log is written in order).
    async fn create_run_for_alert(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
    ) -> Result<Option<String>, StoreError> {
        self.create_run(run, audit).await
    }
    /// Saves a run's new state with the audit entries that led to it (entries first, so a saved
    /// state always has its entries). A finished run frees its concurrency key. With `durable`, it
    /// returns once the state is fsynced; without, once it is written (a later durable write, or
    /// sled's own flush, makes it durable; a crash before that only repeats pure steps).
    async fn save_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
        durable: bool,
    ) -> Result<(), StoreError>;
    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    /// Runs, newest first.
    async fn runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError>;
    /// Ids of runs not finished (to resume after a restart).
    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError>;
    /// Alerts stored but not yet matched to playbooks (oldest first). On a shared store, at most
    /// a batch of them, claimed for this process for a lease's time, so replicas share the work.
    async fn pending_matches(&self) -> Result<Vec<String>, StoreError>;
    /// Marks an alert's runs as created (not fsynced: a marker lost in a crash only re-matches the
    /// alert, and its runs exist already).
    async fn matched(&self, alert_id: &str) -> Result<(), StoreError>;
    /// Sets `values.<key>` on an incident (`core.set`); made durable with the run's next durable save.
    async fn set_incident_value(
        &self,
        incident_id: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Adds evidence records to an incident; made durable with the run's next durable save (the
    /// step that collected them is a side effect, which is saved durably when it finishes).
    async fn add_evidence(
        &self,
        incident_id: &str,
        records: Vec<serde_json::Value>,
    ) -> Result<(), StoreError>;
    /// Sets an incident's status (resolved by a person, a ticket, or reopened); durable.
    async fn set_incident_status(
        &self,
        incident_id: &str,
        status: crate::alert::IncidentStatus,
    ) -> Result<(), StoreError>;
    /// Records outbox entries durably (fsynced) before they are delivered.
    async fn outbox_push(
        &self,
        entries: Vec<crate::model::outbox::OutboxEntry>,
    ) -> Result<(), StoreError>;
    /// Undelivered outbox entries, oldest first.
    async fn outbox_pending(&self) -> Result<Vec<crate::model::outbox::OutboxEntry>, StoreError>;
    /// Saves an entry's delivery state (attempts, next attempt, last error, dead).
    async fn outbox_save(
        &self,
        entry: &crate::model::outbox::OutboxEntry,
    ) -> Result<(), StoreError>;
    /// Forgets a delivered entry.
    async fn outbox_remove(&self, id: &str) -> Result<(), StoreError>;
    /// A small durable value by namespace and key (a ticket key, a chat message reference).
    async fn meta_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Sets a small durable value (fsynced).
    async fn meta_put(
        &self,
        namespace: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Every value of a namespace, by key in byte order (people, personal tokens: small sets).
    async fn meta_list(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;
    /// Forgets a small durable value (fsynced); forgetting one that is not there is no error.
    async fn meta_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError>;
    /// Takes one of `max` slots counted under `key` in the sliding `window` ending at `now` (a
    /// blast-radius limit, [`crate::actions::Guardrails`]): true, and the slot recorded durably,
    /// when fewer than `max` were taken in the window; false, and nothing recorded, otherwise.
    /// Atomic across the processes sharing the store, so N replicas allow `max` in all, and kept
    /// across restarts. Slots older than the window are forgotten as new ones are taken.
    async fn take_slot(
        &self,
        key: &str,
        max: u32,
        window: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Remembers `key` in `namespace` until `until`, durably (fsynced, committed): true the first
    /// time, false while an earlier call's memory of it lasts (at `now`). Once its time has passed
    /// a key may be remembered again, and expired keys are pruned as new ones come. For replay
    /// protection that outlives a restart and holds across replicas (SNS `MessageId`s).
    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Appends audit entries (for events outside a run's state change).
    async fn append_audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError>;
    async fn audit_verify(&self) -> Result<VerifyReport, StoreError>;
    async fn audit_entries(
        &self,
        run_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// The entry stored under sequence number `seq`, if any (what a signed checkpoint of the log
    /// is compared with: `cordon audit verify --checkpoint`).
    async fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError>;
    /// One batch of retention's pruning (`crate::retention` drives the pass): looks at up to
    /// `request.limit` records of `request.kind` after `request.after`, none past
    /// `request.bound`, and prunes those the rules of [`retention`] say are past
    /// `request.cutoff`. Each batch is short and atomic, so intake and runs go on between batches.
    async fn prune(&self, request: &PruneRequest) -> Result<PruneBatch, StoreError>;
    /// Counts and sizes per kind of record (`cordon store stats`).
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Whether several processes share this store. Then runs are leased: a process advances,
    /// decides or cancels a run only while it holds the run's lease, and [`Store::save_run`]
    /// refuses a write from a process whose lease another has taken over. A store one process
    /// owns (sled) grants every lease.
    fn shared(&self) -> bool {
        false
    }
    /// Takes this process's lease on a run, or renews it: false when another live process holds
    /// it, or there is no such run.
    async fn lease_run(&self, _run_id: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Gives the run's lease back, noting when the run next has work to do ([`Run::due_at`]).
    async fn release_run(
        &self,
        _run_id: &str,
        _due: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Leases up to `limit` unfinished runs that are due and that no live process holds: the
    /// runs of a process that died, timers come due, decisions taken elsewhere.
    async fn claim_due_runs(&self, _limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Takes or renews the named lease for work one process does at a time (the outbox).
    async fn lease(&self, _name: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Whether the store can take writes.
    fn is_ready(&self) -> bool;
    /// The store operation under way for the longest (a write, an fsync, a query), so that a
    /// store that stopped finishing them is seen (`/readyz`, `cordon_store_stalled`).
    fn oldest_pending(&self) -> Option<stall::Oldest> {
        None
    }
    /// Requests waiting their turn for the store (not yet under way), for the shutdown log.
    fn queued(&self) -> usize {
        0
    }
    /// Finishes queued writes, flushes, and stops taking new ones.
    async fn close(&self) -> Result<(), StoreError>;
    /// The alerts and incidents matching a search, newest first (`time`, then `tie`, descending),
    /// after the request's cursor, at most its limit (src/search). Sees every write that returned
    /// before it was asked (evidence and values once they are durable).
    async fn search(
        &self,
        request: &crate::search::Request,
    ) -> Result<Vec<crate::search::HitRef>, StoreError>;
    /// Rebuilds the search documents from the stored alerts and incidents (`cordon reindex`);
    /// answers how many documents there are.
    async fn reindex(&self) -> Result<u64, StoreError>;
}

/// Opens the backend `config` names, recording its write metrics in `metrics`. PostgreSQL is
/// connected to and its schema brought up to date before this returns.
pub async fn open(
    config: &StoreConfig,
    grouping: &GroupingConfig,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match config.kind {
        StoreKind::Sled => Ok(std::sync::Arc::new(SledStore::open_with_metrics(
            config,
            grouping,
            Some(metrics),
        )?)),
        StoreKind::Postgres => Ok(std::sync::Arc::new(
            PostgresStore::open_with_metrics(config, grouping, Some(metrics)).await?,
        )),
    }
}
