//! The PostgreSQL store: one database that several replicas share.
//!
//! Every write is one transaction, and a write answered is a transaction committed: with
//! PostgreSQL's `synchronous_commit` on (its default), committed means flushed to the WAL on disk.
//! The writes the [`Store`] contract lets wait for a later fsync (a non-durable run save, a
//! pending-match marker, incident values and evidence) commit with `synchronous_commit = off`;
//! the WAL is written in commit order, so the next durable commit makes them durable too.
//!
//! # Run writes in batches
//!
//! Run creations and saves, the engine's most frequent writes, go through a queue to a few
//! [`RunWriter`] tasks, each committing what has queued up (up to [`RUN_BATCH`] writes) in one
//! transaction: one WAL flush and one hold of the audit lock for all of them. A caller is answered
//! once its batch is committed, with the outcome its write would have had alone (a fenced save is
//! refused and writes nothing); if the batch fails, each write is committed again on its own.
//!
//! # Dedup and grouping across replicas
//!
//! An ingest transaction first takes an advisory transaction lock on every dedup key and every
//! entity key its alerts name, in one sorted order, then reads and writes. Two replicas ingesting
//! alerts about the same entity therefore queue one behind the other, and the second sees the
//! incident the first committed; alerts about different entities go in side by side. Incident and
//! alert rows changed on the way are read `FOR UPDATE`, so a person resolving an incident and an
//! alert joining it cannot lose each other's change. A deadlock PostgreSQL breaks (or a
//! serialization failure) is retried with the same alerts.
//!
//! # The audit log
//!
//! Entries go in the `audit` table, chained inside the transaction that records the state change
//! (see `super::postgres_audit`).
//!
//! # Replicas
//!
//! Each process is a replica with an id of its own. It advances a run only while it holds the
//! run's lease (`lease_owner`, `lease_until` on the row): [`Store::lease_run`] takes it when it is
//! free, expired or already this replica's, and a task renews every lease the replica holds each
//! third of the lease's time, so only a replica that stopped (or lost PostgreSQL for that long)
//! loses its runs. [`Store::save_run`] writes only while no other replica's lease is live on the
//! row: a replica that stalled past its lease cannot overwrite the one that took over.
//! [`Store::claim_due_runs`] hands out the runs that are due (`due_at`, kept with every save) and
//! free, `FOR UPDATE SKIP LOCKED`, so two replicas polling at once claim different runs. Alerts
//! waiting to be matched are claimed the same way, and the outbox has a named lease
//! ([`Store::lease`]) so one replica at a time delivers it, in order.
//!
//! # Schema
//!
//! `migrations/NNNN_name.sql`, embedded in the binary, are applied in order at start under an
//! advisory lock (so replicas starting together apply each once) and recorded in
//! `cordon_migrations`. A database migrated by a newer Cordon is refused rather than misread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};

use super::postgres_audit;
use super::stall::{self, Operation, Pending};
use super::{Accepted, AlertQuery, IncidentQuery, Record, RunQuery, Store, StoreError};
use crate::alert::{Alert, Incident, IncidentStatus};
use crate::config::{GroupingConfig, StoreConfig};
use crate::model::audit::{AuditEntry, NewEntry, VerifyReport};
use crate::model::grouping::{Grouping, Placement};
use crate::model::outbox::OutboxEntry;
use crate::model::run::{Run, RunStatus};
use crate::telemetry::Metrics;

/// The schema, one migration per file, in the order they apply.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "leases", include_str!("migrations/0002_leases.sql")),
    (3, "once", include_str!("migrations/0003_once.sql")),
    (
        4,
        "blast_radius",
        include_str!("migrations/0004_blast_radius.sql"),
    ),
    (5, "search", include_str!("migrations/0005_search.sql")),
];

/// Alerts claimed for matching at a time.
const MATCH_BATCH: i64 = 1000;

/// Advisory lock ids: held while migrations apply (and while an audit append picks its place:
/// [`postgres_audit::AUDIT_LOCK`]). Key locks are hashes of the key (see [`key_lock`]); a collision
/// only makes two unrelated keys wait on each other.
const MIGRATION_LOCK: i64 = 0x636f_7264_6f6e_0001;

/// How often a transaction PostgreSQL aborted as a deadlock or serialization failure is tried.
const ATTEMPTS: usize = 5;

/// Reads one kind of [`Record`] from a row.
type ReadRecord = fn(&Row) -> Result<Record, StoreError>;

/// Rows fetched at a time when reading a whole table.
pub(super) const PAGE: i32 = 1000;

/// Tasks committing run creations and saves, and how many writes one transaction carries at most.
/// A write alone costs a commit (a WAL flush when durable) and the audit lock for its length; the
/// engine writes several times per run, so one commit per write bounds a replica at a few hundred
/// runs/s. Batched, the flush and the lock are shared, while several writers keep one batch
/// building while another commits.
const RUN_WRITERS: usize = 4;
const RUN_BATCH: usize = 256;

/// A pooled connection, registered as an operation under way for as long as it is held.
struct Conn<'a> {
    client: deadpool_postgres::Object,
    _under_way: stall::Guard<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// Dedup and incident grouping's rule.
    grouping: Grouping,
    ready: Arc<AtomicBool>,
    closed: AtomicBool,
    metrics: Option<Arc<Metrics>>,
    leases: Arc<Leases>,
    /// Run creations and saves, for the [`RunWriter`]s to commit in batches.
    run_writes: tokio::sync::mpsc::UnboundedSender<RunWrite>,
    /// Queries and run batches under way, for `/readyz`.
    pending: Arc<Pending>,
    /// Alerts waiting for the next ingest commit (see [`PostgresStore::ingest`]).
    ingest_queue: std::sync::Mutex<std::collections::VecDeque<IngestWrite>>,
    /// Ingest commits that may be under way at once.
    ingest_slots: tokio::sync::Semaphore,
    /// Told when an ingest commit ends: callers whose alerts wait take the next one.
    ingest_done: tokio::sync::Notify,
}

/// One [`Store::ingest`] call's alerts, waiting to be committed with others.
struct IngestWrite {
    alerts: Vec<Alert>,
    now: DateTime<Utc>,
    done: tokio::sync::oneshot::Sender<Result<Vec<Accepted>, Fail>>,
}

/// Ingest commits side by side, and the alerts one commit carries at most. Each alert is a few
/// statements in its transaction; the commit (a WAL flush) and its round trips are what one
/// transaction per request paid for each alert, and now a batch shares.
const INGEST_WRITERS: usize = 4;
const INGEST_BATCH: usize = 128;

/// This replica's identity and lease length, shared with the task that renews its leases (which
/// ends when the store is dropped).
struct Leases {
    replica: String,
    ttl_ms: std::sync::atomic::AtomicU64,
    /// The runs this replica leased and has not given back: the only run leases it renews. A
    /// lease whose release failed (PostgreSQL down at that moment) is no longer here, so it runs
    /// out and the run is claimed again; renewing every row this replica's id is on kept such a
    /// run leased, and unadvanced, for good.
    held: Mutex<std::collections::HashSet<String>>,
}

impl Leases {
    /// The lease length in seconds, as the SQL takes it.
    fn ttl_secs(&self) -> f64 {
        self.ttl_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn holding(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Extends every lease this replica holds (the named ones, and the runs it is working on),
    /// each third of a lease, until the store is dropped or closed. A failed renewal is tried
    /// again at the next tick; the leases run out only if PostgreSQL stays unreachable for a whole
    /// lease.
    async fn renew(this: std::sync::Weak<Leases>, pool: Pool) {
        let mut last = Instant::now();
        loop {
            // Short ticks, so a lease length set after the start takes effect at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(leases) = this.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            let period = Duration::from_millis(leases.ttl_ms.load(Ordering::Relaxed) / 3);
            if last.elapsed() < period {
                continue;
            }
            last = Instant::now();
            let result = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let ttl = leases.ttl_secs();
                let held: Vec<String> = leases.holding().iter().cloned().collect();
                if !held.is_empty() {
                    client
                        .execute(
                            "UPDATE runs SET lease_until = now() + make_interval(secs => $2)
                             WHERE lease_owner = $1 AND id = ANY($3)",
                            &[&leases.replica, &ttl, &held],
                        )
                        .await
                        .map_err(|e| pg_message(&e))?;
                }
                client
                    .execute(
                        "UPDATE leases SET until = now() + make_interval(secs => $2)
                         WHERE owner = $1",
                        &[&leases.replica, &ttl],
                    )
                    .await
                    .map_err(|e| pg_message(&e))?;
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = result {
                tracing::warn!(%error, "could not renew this replica's leases; trying again");
            }
        }
    }
}

/// Why a transaction failed: PostgreSQL said no (maybe worth another try), or the store did.
pub(super) enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl Fail {
    fn retryable(&self) -> bool {
        matches!(self, Fail::Pg(e) if matches!(
            e.code(),
            Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        ))
    }
}

/// Runs `$body` (an expression using the pooled connection `$client` and `?` on [`Fail`]) until
/// it succeeds, fails for good, or has been aborted as a deadlock [`ATTEMPTS`] times.
macro_rules! transaction {
    ($self:ident, $client:ident, $body:expr) => {{
        let mut attempt = 1;
        loop {
            #[allow(unused_mut)]
            let mut $client = $self.client().await?;
            let result: Result<_, Fail> = async { $body }.await;
            match result {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
                }
                other => break $self.settle(other),
            }
        }
    }};
}

impl PostgresStore {
    /// The document of the row `sql` (a `SELECT doc ... WHERE id = $1`) finds for `id`.
    async fn by_id<T: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        transaction!(self, client, {
            let q = client.prepare_cached(sql).await?;
            match client.query_opt(&q, &[&id]).await? {
                Some(row) => Ok(Some(doc(&row, 0)?)),
                None => Ok(None),
            }
        })
    }

    /// Connects to `config.url`, applies the schema's migrations and returns the store.
    pub async fn open(
        config: &StoreConfig,
        grouping: &GroupingConfig,
    ) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with_metrics(config, grouping, None).await
    }

    /// As [`PostgresStore::open`], recording commit latency in `metrics`.
    pub async fn open_with_metrics(
        config: &StoreConfig,
        grouping: &GroupingConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<PostgresStore, StoreError> {
        let url = config.url.as_ref().ok_or_else(|| {
            StoreError::Backend("`store.kind: postgres` needs `store.url`".into())
        })?;
        let mut store = PostgresStore::connect(url.expose(), config.pool_size, grouping).await?;
        store.metrics = metrics;
        store.set_lease_ttl(config.lease_ttl.0);
        tracing::info!(replica = %store.replica(), lease_ttl = ?config.lease_ttl.0, "PostgreSQL store open; this process is one replica");
        Ok(store)
    }

    /// Connects to the database at `url` with a pool of at most `pool_size` connections and
    /// applies the schema's migrations. Errors never repeat the URL (it carries the password).
    pub async fn connect(
        url: &str,
        pool_size: usize,
        grouping: &GroupingConfig,
    ) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::Backend(
                "the PostgreSQL URL is not valid (expected postgres://user:password@host:5432/database)"
                    .into(),
            )
        })?;
        let target = describe(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => {
                let (tls, _) = tokio_postgres_rustls::MakeRustlsConnect::with_native_certs()
                    .map_err(|_| {
                        StoreError::Backend(
                            "sslmode=require, but no CA certificates were found in the system store"
                                .into(),
                        )
                    })?;
                Manager::from_config(config, tls, manager_config)
            }
            // `prefer` (the default) and `disable`: plain TCP, as on a local socket or a private
            // network. Ask for TLS with `sslmode=require`.
            _ => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot set up the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Backend(format!("cannot connect to PostgreSQL at {target}: {e}"))
        })?;
        migrate(&mut client).await.map_err(|e| match e {
            Fail::Pg(e) => StoreError::Backend(format!(
                "cannot apply the schema to PostgreSQL at {target}: {}",
                pg_message(&e)
            )),
            Fail::Store(e) => e,
        })?;
        drop(client);
        let leases = Arc::new(Leases {
            replica: uuid::Uuid::now_v7().simple().to_string(),
            ttl_ms: std::sync::atomic::AtomicU64::new(15_000),
            held: Mutex::default(),
        });
        tokio::spawn(Leases::renew(Arc::downgrade(&leases), pool.clone()));
        let ready = Arc::new(AtomicBool::new(true));
        let (run_writes, queue) = tokio::sync::mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let pending = Arc::new(Pending::default());
        for _ in 0..RUN_WRITERS {
            let writer = RunWriter {
                pool: pool.clone(),
                replica: leases.replica.clone(),
                ready: ready.clone(),
                pending: pending.clone(),
            };
            tokio::spawn(writer.work(queue.clone()));
        }
        Ok(PostgresStore {
            pool,
            grouping: Grouping::from(grouping),
            ready,
            closed: AtomicBool::new(false),
            metrics: None,
            leases,
            run_writes,
            pending,
            ingest_queue: std::sync::Mutex::default(),
            ingest_slots: tokio::sync::Semaphore::new(INGEST_WRITERS),
            ingest_done: tokio::sync::Notify::new(),
        })
    }

    /// This process's replica id: the owner its leases carry.
    pub fn replica(&self) -> &str {
        &self.leases.replica
    }

    /// Sets how long this replica's leases outlive it (at least a second).
    pub fn set_lease_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        self.leases.ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// A pooled connection, counted as a `query` under way (from the wait for it on) while held.
    async fn client(&self) -> Result<Conn<'_>, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let under_way = self.pending.begin(Operation::Query);
        stall::hold().await;
        let client = self.pool.get().await.map_err(|e| {
            self.ready.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "no PostgreSQL connection");
            StoreError::Backend(format!("no PostgreSQL connection: {e}"))
        })?;
        Ok(Conn {
            client,
            _under_way: under_way,
        })
    }

    /// A transaction's outcome as the store answers it, keeping readiness up to date.
    fn settle<T>(&self, result: Result<T, Fail>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.ready.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Err(Fail::Store(e)) => Err(e),
            Err(Fail::Pg(e)) => {
                if e.is_closed() || e.as_db_error().is_none() {
                    self.ready.store(false, Ordering::Relaxed);
                }
                tracing::warn!(error = %pg_message(&e), "PostgreSQL store operation failed");
                Err(StoreError::Backend(pg_message(&e)))
            }
        }
    }

    /// Whether the database holds no alerts, incidents, runs, outbox entries, values or audit
    /// entries (a target `cordon migrate` may copy into).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        transaction!(self, client, {
            let row = client
                .query_one(
                    "SELECT NOT (EXISTS (SELECT 1 FROM alerts) OR EXISTS (SELECT 1 FROM incidents)
                        OR EXISTS (SELECT 1 FROM runs) OR EXISTS (SELECT 1 FROM outbox)
                        OR EXISTS (SELECT 1 FROM meta) OR EXISTS (SELECT 1 FROM audit)
                        OR EXISTS (SELECT 1 FROM dedup_keys) OR EXISTS (SELECT 1 FROM entities))",
                    &[],
                )
                .await?;
            Ok(row.get::<_, bool>(0))
        })
    }

    /// Writes `records` in one transaction: all of them, or (on any error) none. For
    /// [`super::migrate`], into an empty database.
    pub async fn import(
        &self,
        records: impl Iterator<Item = Result<Record, StoreError>>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let result: Result<u64, Fail> = async {
            let tx = client.transaction().await?;
            let mut written = 0u64;
            for record in records {
                import_one(&tx, record?).await?;
                written += 1;
            }
            tx.commit().await?;
            Ok(written)
        }
        .await;
        self.settle(result)
    }

    /// Every stored record, in the order [`PostgresStore::import`] takes them, handed to `each`
    /// (to compare a copy with its source).
    pub async fn for_each_record(
        &self,
        mut each: impl FnMut(Record) -> Result<(), StoreError> + Send,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let result: Result<(), Fail> = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let tables: [(&str, ReadRecord); 12] = [
                ("SELECT doc FROM alerts ORDER BY id", |r| {
                    doc(r, 0).map(Record::Alert)
                }),
                ("SELECT id FROM alerts WHERE pending ORDER BY id", |r| {
                    Ok(Record::PendingMatch { alert_id: r.get(0) })
                }),
                (
                    "SELECT dedup_key, alert_id FROM dedup_keys ORDER BY dedup_key COLLATE \"C\"",
                    |r| {
                        Ok(Record::DedupKey {
                            dedup_key: r.get(0),
                            alert_id: r.get(1),
                        })
                    },
                ),
                ("SELECT doc FROM incidents ORDER BY id", |r| {
                    doc(r, 0).map(Record::Incident)
                }),
                (
                    "SELECT entity, incident_id FROM entities ORDER BY entity COLLATE \"C\"",
                    |r| {
                        Ok(Record::Entity {
                            entity: r.get(0),
                            incident_id: r.get(1),
                        })
                    },
                ),
                ("SELECT doc FROM runs ORDER BY id", |r| {
                    doc(r, 0).map(Record::Run)
                }),
                ("SELECT id FROM runs WHERE unfinished ORDER BY id", |r| {
                    Ok(Record::Unfinished { run_id: r.get(0) })
                }),
                (
                    "SELECT alert_id, playbook, run_id FROM run_alerts
                     ORDER BY alert_id COLLATE \"C\", playbook COLLATE \"C\"",
                    |r| {
                        Ok(Record::RunForAlert {
                            alert_id: r.get(0),
                            playbook: r.get(1),
                            run_id: r.get(2),
                        })
                    },
                ),
                (
                    "SELECT playbook, key, run_id FROM run_keys
                     ORDER BY playbook COLLATE \"C\", key COLLATE \"C\"",
                    |r| {
                        Ok(Record::RunKey {
                            playbook: r.get(0),
                            key: r.get(1),
                            run_id: r.get(2),
                        })
                    },
                ),
                ("SELECT doc FROM outbox ORDER BY id", |r| {
                    doc(r, 0).map(Record::Outbox)
                }),
                (
                    "SELECT namespace, key, value FROM meta
                     ORDER BY namespace COLLATE \"C\", key COLLATE \"C\"",
                    |r| {
                        Ok(Record::Meta {
                            namespace: r.get(0),
                            key: r.get(1),
                            value: doc(r, 2)?,
                        })
                    },
                ),
                ("SELECT seq, entry FROM audit ORDER BY seq", |r| {
                    Ok(Record::Audit {
                        seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                        stored: r.get(1),
                    })
                }),
            ];
            for (query, read) in tables {
                let portal = tx.bind(query, &[]).await?;
                loop {
                    let rows = tx.query_portal(&portal, PAGE).await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        each(read(row)?)?;
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.settle(result)
    }

    /// Dedups `alert` or files it into an incident ([`Grouping`] decides), inside `tx` (which
    /// holds the key locks).
    async fn place(
        &self,
        tx: &Transaction<'_>,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Fail> {
        let repeat_of = tx
            .prepare_cached(
                "SELECT a.doc, i.doc FROM dedup_keys d
                 JOIN alerts a ON a.id = d.alert_id
                 JOIN incidents i ON i.id = a.incident_id
                 WHERE d.dedup_key = $1
                 FOR UPDATE OF a, i",
            )
            .await?;
        let earlier = match tx.query_opt(&repeat_of, &[&alert.dedup_key]).await? {
            Some(row) => Some((doc::<Alert>(&row, 0)?, doc::<Incident>(&row, 1)?)),
            None => None,
        };
        let placed = match self.grouping.repeat(&alert, earlier, now) {
            Some(placed) => placed,
            None => {
                let mut latest = None;
                if let Some(entity) = alert.entity_key() {
                    let select = tx
                        .prepare_cached(
                            "SELECT i.doc FROM entities e JOIN incidents i ON i.id = e.incident_id
                             WHERE e.entity = $1 FOR UPDATE OF i",
                        )
                        .await?;
                    if let Some(row) = tx.query_opt(&select, &[&entity]).await? {
                        latest = Some(doc::<Incident>(&row, 0)?);
                    }
                }
                self.grouping.file(alert, latest, now)
            }
        };
        if let Placement::Repeat { alert, incident } = &placed {
            put_alert(tx, alert, false).await?;
            put_incident(tx, incident).await?;
            return Ok(placed.accepted());
        }
        if let Some(earlier) = placed.follows() {
            // Keeps its own pending marker: its runs are its own.
            put_alert(tx, earlier, false).await?;
        }
        let (alert, incident) = (placed.alert(), placed.incident());
        if let Some((entity, incident_id)) = placed.new_entity_incident() {
            let point = tx
                .prepare_cached(
                    "INSERT INTO entities (entity, incident_id) VALUES ($1, $2)
                     ON CONFLICT (entity) DO UPDATE SET incident_id = EXCLUDED.incident_id",
                )
                .await?;
            tx.execute(&point, &[&entity, &incident_id]).await?;
        }
        put_incident(tx, incident).await?;
        let dedup = tx
            .prepare_cached(
                "INSERT INTO dedup_keys (dedup_key, alert_id) VALUES ($1, $2)
                 ON CONFLICT (dedup_key) DO UPDATE SET alert_id = EXCLUDED.alert_id",
            )
            .await?;
        tx.execute(&dedup, &[&alert.dedup_key, &alert.id]).await?;
        // Until the engine has created this alert's runs; a restart finds it here.
        put_alert(tx, alert, true).await?;
        Ok(placed.accepted())
    }

    /// Changes an incident under its row lock; with `durable` false, committed without waiting
    /// for the WAL flush.
    async fn update_incident(
        &self,
        incident_id: &str,
        durable: bool,
        change: impl Fn(&mut Incident),
    ) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            if !durable {
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
            }
            let select = tx
                .prepare_cached("SELECT doc FROM incidents WHERE id = $1 FOR UPDATE")
                .await?;
            let Some(row) = tx.query_opt(&select, &[&incident_id]).await? else {
                return Err(Fail::Store(StoreError::Backend(format!(
                    "no incident `{incident_id}`"
                ))));
            };
            let mut incident: Incident = doc(&row, 0)?;
            change(&mut incident);
            incident.updated_at = Utc::now();
            put_incident(&tx, &incident).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn lock_ingest_queue(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<IngestWrite>> {
        self.ingest_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queued ingest calls one commit takes: in order, up to [`INGEST_BATCH`] alerts (and at
    /// least one call).
    fn take_ingest_batch(&self) -> Vec<IngestWrite> {
        let mut queue = self.lock_ingest_queue();
        let mut batch = Vec::new();
        let mut alerts = 0;
        while let Some(next) = queue.front() {
            if !batch.is_empty() && alerts + next.alerts.len() > INGEST_BATCH {
                break;
            }
            alerts += next.alerts.len();
            batch.extend(queue.pop_front());
        }
        batch
    }

    /// Commits `batch` in one transaction and answers each call; when that fails, each call
    /// alone (tried again as every transaction is).
    async fn commit_ingest(&self, batch: Vec<IngestWrite>) {
        if batch.len() > 1 {
            let writes: Vec<&IngestWrite> = batch.iter().collect();
            if let Ok(outcomes) = self.ingest_transaction(&writes).await {
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = write.done.send(Ok(outcome));
                }
                return;
            }
        }
        for write in batch {
            let one = [&write];
            let outcome = retried(|| self.ingest_transaction(&one))
                .await
                .map(|mut outcomes| outcomes.pop().unwrap_or_default());
            let _ = write.done.send(outcome);
        }
    }

    /// One transaction placing the alerts of `writes`: what each call's alerts became.
    async fn ingest_transaction(
        &self,
        writes: &[&IngestWrite],
    ) -> Result<Vec<Vec<Accepted>>, Fail> {
        // Every key the alerts may read or move, locked in one order.
        let mut locks: Vec<i64> = Vec::new();
        for alert in writes.iter().flat_map(|w| &w.alerts) {
            locks.push(key_lock("dedup", &alert.dedup_key));
            if let Some(entity) = alert.entity_key() {
                locks.push(key_lock("entity", &entity));
            }
        }
        locks.sort_unstable();
        locks.dedup();
        let started = Instant::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k")
            .await?;
        tx.query_one(&lock, &[&locks]).await?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let mut accepted = Vec::with_capacity(write.alerts.len());
            for alert in write.alerts.iter().cloned() {
                accepted.push(self.place(&tx, alert, write.now).await?);
            }
            outcomes.push(accepted);
        }
        tx.commit().await?;
        self.observe_commit(started);
        Ok(outcomes)
    }

    /// Queues a run write for the [`RunWriter`]s and waits for its own outcome.
    async fn write_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
        kind: WriteKind,
    ) -> Result<Option<String>, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let (done, outcome) = tokio::sync::oneshot::channel();
        let write = RunWrite {
            run: run.clone(),
            audit,
            kind,
            done,
        };
        self.run_writes
            .send(write)
            .map_err(|_| StoreError::Closed)?;
        let outcome = outcome.await.map_err(|_| StoreError::Closed)?;
        self.settle(outcome)
    }

    fn observe_commit(&self, started: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// A run creation or save waiting for its batch; its own outcome goes back on `done`.
struct RunWrite {
    run: Run,
    audit: Vec<NewEntry>,
    kind: WriteKind,
    done: tokio::sync::oneshot::Sender<Result<Option<String>, Fail>>,
}

#[derive(Clone, Copy, PartialEq)]
enum WriteKind {
    /// [`Store::create_run`]: answers the run already there for the alert or key, if any.
    Create,
    /// [`Store::save_run`]; only durable ones make the batch wait for the WAL flush.
    Save { durable: bool },
}

/// Commits queued run writes, up to [`RUN_BATCH`] in one transaction, each with the outcome it
/// would have had alone: a save fenced by another replica's lease is answered
/// [`StoreError::LeaseLost`] and writes nothing (nor its audit entries), and the others in the
/// batch are stored all the same.
struct RunWriter {
    pool: Pool,
    replica: String,
    ready: Arc<AtomicBool>,
    pending: Arc<Pending>,
}

impl RunWriter {
    /// Takes batches off `queue` until the store (the sending side) is gone.
    async fn work(
        self,
        queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<RunWrite>>>,
    ) {
        loop {
            let mut batch = Vec::new();
            {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
                batch.push(first);
                while batch.len() < RUN_BATCH {
                    match queue.try_recv() {
                        Ok(write) => batch.push(write),
                        Err(_) => break,
                    }
                }
            }
            self.commit(batch).await;
        }
    }

    /// Commits `batch` together; when that fails, commits each write alone, so one bad write
    /// (or a deadlock) answers its own caller and no other.
    async fn commit(&self, batch: Vec<RunWrite>) {
        if batch.len() > 1 {
            let writes: Vec<&RunWrite> = batch.iter().collect();
            if let Ok(outcomes) = self.transaction(&writes).await {
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = write.done.send(outcome);
                }
                return;
            }
        }
        for write in batch {
            let one = [&write];
            let outcome = retried(|| self.transaction(&one))
                .await
                .and_then(|mut outcomes| outcomes.pop().unwrap_or(Ok(None)));
            let _ = write.done.send(outcome);
        }
    }

    /// One transaction for `writes`: the outcome of each, or why the transaction failed.
    async fn transaction(
        &self,
        writes: &[&RunWrite],
    ) -> Result<Vec<Result<Option<String>, Fail>>, Fail> {
        let _under_way = self.pending.begin(Operation::RunBatch);
        stall::hold().await;
        let mut client = self.pool.get().await.map_err(|e| {
            self.ready.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "no PostgreSQL connection");
            Fail::Store(StoreError::Backend(format!(
                "no PostgreSQL connection: {e}"
            )))
        })?;
        let tx = client.transaction().await?;
        if writes
            .iter()
            .all(|w| w.kind == WriteKind::Save { durable: false })
        {
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
        }
        // Every lock in one order, so batches committing side by side do not deadlock: the
        // concurrency keys of creations first, then the runs' rows by id.
        let mut keys: Vec<i64> = writes
            .iter()
            .filter(|w| w.kind == WriteKind::Create)
            .map(|w| run_key_lock(&w.run))
            .collect();
        if !keys.is_empty() {
            keys.sort_unstable();
            keys.dedup();
            let lock = tx
                .prepare_cached(
                    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k",
                )
                .await?;
            tx.query_one(&lock, &[&keys]).await?;
        }
        let mut order: Vec<usize> = (0..writes.len()).collect();
        order.sort_by(|a, b| writes[*a].run.id.cmp(&writes[*b].run.id));
        let mut outcomes: Vec<Option<Result<Option<String>, Fail>>> =
            writes.iter().map(|_| None).collect();
        for i in order {
            let write = writes[i];
            outcomes[i] = Some(match write.kind {
                WriteKind::Create => create_run(&tx, &write.run, &self.replica).await.map(Ok)?,
                WriteKind::Save { .. } => {
                    if save_run(&tx, &write.run, &self.replica).await? {
                        Ok(None)
                    } else {
                        Err(Fail::Store(StoreError::LeaseLost(write.run.id.clone())))
                    }
                }
            });
        }
        // The audit entries of what was written, in the order the writes came.
        let audit: Vec<NewEntry> = writes
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Some(Ok(_))))
            .flat_map(|(write, _)| write.audit.iter().cloned())
            .collect();
        postgres_audit::append(&tx, &audit).await?;
        tx.commit().await?;
        self.ready.store(true, Ordering::Relaxed);
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Ok(None)))
            .collect())
    }
}

/// Runs `transaction` until it commits or fails for good: a deadlock or serialization failure is
/// tried again, up to [`ATTEMPTS`] times, after a short wait.
async fn retried<T, F: std::future::Future<Output = Result<T, Fail>>>(
    mut transaction: impl FnMut() -> F,
) -> Result<T, Fail> {
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(e) if e.retryable() && attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
            }
            other => return other,
        }
    }
}

/// The advisory lock on `run`'s playbook and concurrency key, held while a creation looks for a
/// run already holding the key.
fn run_key_lock(run: &Run) -> i64 {
    key_lock(
        "run-key",
        &format!("{}\0{}", run.playbook, run.concurrency_key),
    )
}

/// Creates `run` inside `tx`, which holds its key lock, unless a run already took care of its
/// alert or holds its concurrency key: then answers that run, and writes nothing but the mark
/// that the alert is taken care of.
async fn create_run(
    tx: &Transaction<'_>,
    run: &Run,
    replica: &str,
) -> Result<Option<String>, Fail> {
    let mut existing = None;
    if let Some(alert) = &run.alert_id {
        let started = tx
            .prepare_cached("SELECT run_id FROM run_alerts WHERE alert_id = $1 AND playbook = $2")
            .await?;
        if let Some(row) = tx.query_opt(&started, &[alert, &run.playbook]).await? {
            existing = Some(row.get::<_, String>(0));
        }
    }
    if existing.is_some() {
        return Ok(existing);
    }
    let holder = tx
        .prepare_cached(
            "SELECT r.id, r.status FROM run_keys k JOIN runs r ON r.id = k.run_id
             WHERE k.playbook = $1 AND k.key = $2",
        )
        .await?;
    if let Some(row) = tx
        .query_opt(&holder, &[&run.playbook, &run.concurrency_key])
        .await?
    {
        let status: RunStatus = serde_json::from_value(serde_json::Value::String(row.get(1)))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if !status.is_finished() {
            existing = Some(row.get::<_, String>(0));
        }
    }
    if existing.is_none() {
        let hold = tx
            .prepare_cached(
                "INSERT INTO run_keys (playbook, key, run_id) VALUES ($1, $2, $3)
                 ON CONFLICT (playbook, key) DO UPDATE SET run_id = EXCLUDED.run_id",
            )
            .await?;
        tx.execute(&hold, &[&run.playbook, &run.concurrency_key, &run.id])
            .await?;
        put_run(tx, run, true, replica).await?;
    }
    if let Some(alert) = &run.alert_id {
        // Asking again for this alert answers the run that took care of it.
        let mark = tx
            .prepare_cached(
                "INSERT INTO run_alerts (alert_id, playbook, run_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let by = existing.as_ref().unwrap_or(&run.id);
        tx.execute(&mark, &[alert, &run.playbook, by]).await?;
    }
    Ok(existing)
}

/// Saves `run` inside `tx`: false (nothing written) when another replica's live lease fences it.
/// A finished run gives its concurrency key back.
async fn save_run(tx: &Transaction<'_>, run: &Run, replica: &str) -> Result<bool, Fail> {
    if !put_run(tx, run, false, replica).await? {
        return Ok(false);
    }
    if run.status.is_finished() {
        let free = tx
            .prepare_cached("DELETE FROM run_keys WHERE playbook = $1 AND key = $2 AND run_id = $3")
            .await?;
        tx.execute(&free, &[&run.playbook, &run.concurrency_key, &run.id])
            .await?;
    }
    Ok(true)
}

/// Applies the migrations `client`'s database has not had yet, in one transaction.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), Fail> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cordon_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM cordon_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(newest) = applied.iter().max()
        && *newest > known
    {
        return Err(Fail::Store(StoreError::Backend(format!(
            "the database's schema is at version {newest}, from a newer Cordon; this one knows up to {known}"
        ))));
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO cordon_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "applied a PostgreSQL schema migration");
    }
    tx.commit().await?;
    Ok(())
}

async fn import_one(tx: &Transaction<'_>, record: Record) -> Result<(), Fail> {
    match record {
        Record::Alert(alert) => put_alert(tx, &alert, false).await?,
        Record::PendingMatch { alert_id } => {
            let q = tx
                .prepare_cached("UPDATE alerts SET pending = true WHERE id = $1")
                .await?;
            tx.execute(&q, &[&alert_id]).await?;
        }
        Record::DedupKey {
            dedup_key,
            alert_id,
        } => {
            let q = tx
                .prepare_cached("INSERT INTO dedup_keys (dedup_key, alert_id) VALUES ($1, $2)")
                .await?;
            tx.execute(&q, &[&dedup_key, &alert_id]).await?;
        }
        Record::Incident(incident) => put_incident(tx, &incident).await?,
        Record::Entity {
            entity,
            incident_id,
        } => {
            let q = tx
                .prepare_cached("INSERT INTO entities (entity, incident_id) VALUES ($1, $2)")
                .await?;
            tx.execute(&q, &[&entity, &incident_id]).await?;
        }
        Record::Run(run) => {
            put_run(tx, &run, false, "").await?;
        }
        Record::Unfinished { run_id } => {
            let q = tx
                .prepare_cached("UPDATE runs SET unfinished = true WHERE id = $1")
                .await?;
            tx.execute(&q, &[&run_id]).await?;
        }
        Record::RunForAlert {
            alert_id,
            playbook,
            run_id,
        } => {
            let q = tx
                .prepare_cached(
                    "INSERT INTO run_alerts (alert_id, playbook, run_id) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&q, &[&alert_id, &playbook, &run_id]).await?;
        }
        Record::RunKey {
            playbook,
            key,
            run_id,
        } => {
            let q = tx
                .prepare_cached("INSERT INTO run_keys (playbook, key, run_id) VALUES ($1, $2, $3)")
                .await?;
            tx.execute(&q, &[&playbook, &key, &run_id]).await?;
        }
        Record::Outbox(entry) => put_outbox(tx, &entry).await?,
        Record::Meta {
            namespace,
            key,
            value,
        } => put_meta(tx, &namespace, &key, &value).await?,
        Record::Audit { seq, stored } => postgres_audit::import(tx, seq, &stored).await?,
    }
    Ok(())
}

/// Writes an alert; a new row is `pending` a match or not (an existing one keeps its marker).
async fn put_alert(tx: &Transaction<'_>, alert: &Alert, pending: bool) -> Result<(), Fail> {
    let q = tx
        .prepare_cached(
            "INSERT INTO alerts (id, source, incident_id, pending, doc) VALUES ($1, $2, $3, $5, $4)
             ON CONFLICT (id) DO UPDATE
             SET source = EXCLUDED.source, incident_id = EXCLUDED.incident_id, doc = EXCLUDED.doc",
        )
        .await?;
    tx.execute(
        &q,
        &[
            &alert.id,
            &alert.source,
            &alert.incident_id,
            &Json(alert),
            &pending,
        ],
    )
    .await?;
    put_search_doc(tx, &crate::search::Doc::from_alert(alert)).await
}

async fn put_incident(tx: &Transaction<'_>, incident: &Incident) -> Result<(), Fail> {
    let q = tx
        .prepare_cached(
            "INSERT INTO incidents (id, status, doc) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, doc = EXCLUDED.doc",
        )
        .await?;
    let status = incident.status.to_string();
    tx.execute(&q, &[&incident.id, &status, &Json(incident)])
        .await?;
    put_search_doc(tx, &crate::search::Doc::from_incident(incident)).await
}

/// Writes a record's search row (src/search/sql.rs), in the record's own transaction.
async fn put_search_doc(tx: &Transaction<'_>, doc: &crate::search::Doc) -> Result<(), Fail> {
    let q = tx.prepare_cached(crate::search::sql::UPSERT).await?;
    let params = crate::search::sql::upsert_params(doc);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
    tx.execute(&q, &refs).await?;
    Ok(())
}

/// Rewrites the search rows of one kind of record (`alerts` or `incidents`), a page of records
/// per transaction; answers how many.
async fn reindex_table<T: DeserializeOwned>(
    store: &PostgresStore,
    table: &str,
    doc_of: fn(&T) -> crate::search::Doc,
) -> Result<u64, StoreError> {
    let mut after = String::new();
    let mut count = 0u64;
    loop {
        let sql = format!("SELECT id, doc FROM {table} WHERE id > $1 ORDER BY id LIMIT 500");
        let page: Option<String> = transaction!(store, client, {
            let tx = client.transaction().await?;
            let rows = tx.query(sql.as_str(), &[&after]).await?;
            let mut last = None;
            for row in &rows {
                let record: T = doc(row, 1)?;
                put_search_doc(&tx, &doc_of(&record)).await?;
                last = Some(row.get::<_, String>(0));
            }
            tx.commit().await?;
            Ok(last.map(|l| (l, rows.len())))
        })?
        .map(|(last, n)| {
            count += n as u64;
            last
        });
        match page {
            Some(last) => after = last,
            None => return Ok(count),
        }
    }
}

/// Writes a run; a new row is unfinished when `created`, and a finished run is unfinished no more.
/// An existing row is overwritten only while no replica but `replica` holds a live lease on it:
/// false when another does (nothing is written).
async fn put_run(
    tx: &Transaction<'_>,
    run: &Run,
    created: bool,
    replica: &str,
) -> Result<bool, Fail> {
    let q = tx
        .prepare_cached(
            "INSERT INTO runs (id, playbook, status, incident_id, unfinished, doc, due_at)
             VALUES ($1, $2, $3, $4, $5, $7, $8)
             ON CONFLICT (id) DO UPDATE SET playbook = EXCLUDED.playbook,
                status = EXCLUDED.status, incident_id = EXCLUDED.incident_id, doc = EXCLUDED.doc,
                unfinished = (runs.unfinished OR $5) AND NOT $6, due_at = EXCLUDED.due_at
             WHERE runs.lease_owner IS NULL OR runs.lease_owner = $9 OR runs.lease_until < now()",
        )
        .await?;
    let finished = run.status.is_finished();
    let written = tx
        .execute(
            &q,
            &[
                &run.id,
                &run.playbook,
                &run.status.as_str(),
                &run.incident_id,
                &created,
                &finished,
                &Json(run),
                &run.due_at(Utc::now()),
                &replica,
            ],
        )
        .await?;
    Ok(written == 1)
}

async fn put_outbox(tx: &Transaction<'_>, entry: &OutboxEntry) -> Result<(), Fail> {
    let q = tx
        .prepare_cached(
            "INSERT INTO outbox (id, doc) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
        )
        .await?;
    tx.execute(&q, &[&entry.id, &Json(entry)]).await?;
    Ok(())
}

async fn put_meta(
    tx: &Transaction<'_>,
    namespace: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<(), Fail> {
    let q = tx
        .prepare_cached(
            "INSERT INTO meta (namespace, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .await?;
    tx.execute(&q, &[&namespace, &key, &Json(value)]).await?;
    Ok(())
}

/// Reads the `json` column `idx` of `row` as `T`.
fn doc<T: DeserializeOwned>(row: &Row, idx: usize) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(idx)
        .map(|json| json.0)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An advisory lock id for `key` of `kind` (`dedup`, `entity`, `run-key`).
fn key_lock(kind: &str, key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// `host:port/database` for messages: never the user's password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// What PostgreSQL said, without the statement's parameters.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {e}"),
    }
}

/// `limit` as SQL takes it: 0 (everything) is `LIMIT NULL`.
fn sql_limit(limit: usize) -> Option<i64> {
    (limit > 0).then(|| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// A query with the filters that are set, `AND`ed, with numbered parameters.
struct Filtered<'a> {
    sql: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Filtered<'a> {
    fn new(select: &str) -> Filtered<'a> {
        Filtered {
            sql: select.to_owned(),
            params: Vec::new(),
        }
    }

    fn filter(&mut self, column: &str, value: Option<&'a (dyn ToSql + Sync)>) {
        if let Some(value) = value {
            self.params.push(value);
            let word = if self.params.len() == 1 {
                "WHERE"
            } else {
                "AND"
            };
            self.sql
                .push_str(&format!(" {word} {column} = ${}", self.params.len()));
        }
    }

    fn finish(mut self, order: &str, limit: &'a Option<i64>) -> Filtered<'a> {
        self.params.push(limit);
        self.sql
            .push_str(&format!(" ORDER BY {order} LIMIT ${}", self.params.len()));
        self
    }
}

#[async_trait]
impl Store for PostgresStore {
    /// Alerts are committed in batches: the call queues its alerts, and whichever caller finds a
    /// commit slot free takes what is queued (its own alerts or others') into one transaction;
    /// the others wait for their answer. A batch that fails is committed again one call at a
    /// time, so one bad alert answers only its own caller.
    async fn ingest(
        &self,
        alerts: Vec<Alert>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, StoreError> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        self.lock_ingest_queue()
            .push_back(IngestWrite { alerts, now, done });
        loop {
            if let Ok(slot) = self.ingest_slots.try_acquire() {
                let batch = self.take_ingest_batch();
                if !batch.is_empty() {
                    self.commit_ingest(batch).await;
                    drop(slot);
                    self.ingest_done.notify_waiters();
                }
            }
            // Registered before looking, so an end of commit after the look still wakes it.
            let ended = self.ingest_done.notified();
            match outcome.try_recv() {
                Ok(result) => return self.settle(result),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Closed);
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            if self.ingest_slots.available_permits() > 0 && !self.lock_ingest_queue().is_empty() {
                continue;
            }
            ended.await;
        }
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        self.by_id("SELECT doc FROM alerts WHERE id = $1", id).await
    }

    async fn alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let limit = sql_limit(query.limit);
        transaction!(self, client, {
            let mut q = Filtered::new("SELECT doc FROM alerts");
            q.filter("source", query.source.as_ref().map(|s| s as _));
            q.filter("incident_id", query.incident_id.as_ref().map(|s| s as _));
            let q = q.finish("id DESC", &limit);
            let statement = client.prepare_cached(&q.sql).await?;
            let rows = client.query(&statement, &q.params).await?;
            Ok(rows
                .iter()
                .map(|row| doc(row, 0))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.by_id("SELECT doc FROM incidents WHERE id = $1", id)
            .await
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let limit = sql_limit(query.limit);
        let status = query.status.map(|s| s.to_string());
        transaction!(self, client, {
            let mut q = Filtered::new("SELECT doc FROM incidents");
            q.filter("status", status.as_ref().map(|s| s as _));
            let q = q.finish("id DESC", &limit);
            let statement = client.prepare_cached(&q.sql).await?;
            let rows = client.query(&statement, &q.params).await?;
            Ok(rows
                .iter()
                .map(|row| doc(row, 0))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Reads incidents newest first in batches (by status when filtered, through its index) and
    /// keeps those the filter admits, so the one matching function serves both backends.
    async fn incident_page(
        &self,
        filter: &super::IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        const BATCH: i64 = 500;
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let status = filter.status.map(|s| s.to_string());
        let mut before = filter.before.clone();
        let mut out = Vec::new();
        loop {
            let batch: Vec<(String, Incident)> = transaction!(self, client, {
                let statement = client
                    .prepare_cached(
                        "SELECT id, doc FROM incidents WHERE ($1::text IS NULL OR status = $1) \
                         AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
                    )
                    .await?;
                let rows = client
                    .query(&statement, &[&status, &before, &BATCH])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok((row.get::<_, String>(0), doc(row, 1)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?)
            })?;
            let done = (batch.len() as i64) < BATCH;
            for (id, incident) in batch {
                before = Some(id);
                if filter.admits(&incident) {
                    out.push(incident);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    async fn create_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
    ) -> Result<Option<String>, StoreError> {
        self.write_run(run, audit, WriteKind::Create).await
    }

    async fn save_run(
        &self,
        run: &Run,
        audit: Vec<NewEntry>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let audit: Vec<NewEntry> = audit
            .into_iter()
            .map(|e| match e.run_id {
                Some(_) => e,
                None => e.run(run.id.clone()),
            })
            .collect();
        let started = Instant::now();
        self.write_run(run, audit, WriteKind::Save { durable })
            .await?;
        if durable {
            self.observe_commit(started);
        }
        Ok(())
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        self.by_id("SELECT doc FROM runs WHERE id = $1", id).await
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let limit = sql_limit(query.limit);
        let status = query.status.map(|s| s.as_str());
        transaction!(self, client, {
            let mut q = Filtered::new("SELECT doc FROM runs");
            q.filter("status", status.as_ref().map(|s| s as _));
            q.filter("playbook", query.playbook.as_ref().map(|s| s as _));
            q.filter("incident_id", query.incident_id.as_ref().map(|s| s as _));
            let q = q.finish("id DESC", &limit);
            let statement = client.prepare_cached(&q.sql).await?;
            let rows = client.query(&statement, &q.params).await?;
            Ok(rows
                .iter()
                .map(|row| doc(row, 0))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("SELECT id FROM runs WHERE unfinished ORDER BY id")
                .await?;
            let rows = client.query(&q, &[]).await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    async fn pending_matches(&self) -> Result<Vec<String>, StoreError> {
        let ttl = self.leases.ttl_secs();
        let mut ids: Vec<String> = transaction!(self, client, {
            let q = client
                .prepare_cached(
                    "UPDATE alerts SET match_owner = $1, match_until = now() + make_interval(secs => $2)
                     WHERE id IN (
                        SELECT id FROM alerts
                        WHERE pending AND (match_until IS NULL OR match_until < now() OR match_owner = $1)
                        ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                )
                .await?;
            let rows = client
                .query(&q, &[&self.leases.replica, &ttl, &MATCH_BATCH])
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn matched(&self, alert_id: &str) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let q = tx
                .prepare_cached("UPDATE alerts SET pending = false WHERE id = $1")
                .await?;
            tx.execute(&q, &[&alert_id]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn set_incident_value(
        &self,
        incident_id: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.update_incident(incident_id, false, |incident| {
            incident.values.insert(key.to_owned(), value.clone());
        })
        .await
    }

    async fn add_evidence(
        &self,
        incident_id: &str,
        records: Vec<serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.update_incident(incident_id, false, |incident| {
            incident.evidence.extend(records.iter().cloned());
        })
        .await
    }

    async fn set_incident_status(
        &self,
        incident_id: &str,
        status: IncidentStatus,
    ) -> Result<(), StoreError> {
        self.update_incident(incident_id, true, |incident| incident.status = status)
            .await
    }

    async fn outbox_push(&self, entries: Vec<OutboxEntry>) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            for entry in &entries {
                put_outbox(&tx, entry).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("SELECT doc FROM outbox ORDER BY id")
                .await?;
            let rows = client.query(&q, &[]).await?;
            Ok(rows
                .iter()
                .map(|row| doc(row, 0))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn outbox_save(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            put_outbox(&tx, entry).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn outbox_remove(&self, id: &str) -> Result<(), StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("DELETE FROM outbox WHERE id = $1")
                .await?;
            client.execute(&q, &[&id]).await?;
            Ok(())
        })
    }

    async fn meta_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("SELECT value FROM meta WHERE namespace = $1 AND key = $2")
                .await?;
            match client.query_opt(&q, &[&namespace, &key]).await? {
                Some(row) => Ok(Some(doc(&row, 0)?)),
                None => Ok(None),
            }
        })
    }

    async fn meta_put(
        &self,
        namespace: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            put_meta(&tx, namespace, key, &value).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn meta_list(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("SELECT key, value FROM meta WHERE namespace = $1 ORDER BY key")
                .await?;
            let mut values = Vec::new();
            for row in client.query(&q, &[&namespace]).await? {
                values.push((row.get::<_, String>(0), doc(&row, 1)?));
            }
            Ok(values)
        })
    }

    async fn meta_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        transaction!(self, client, {
            let q = client
                .prepare_cached("DELETE FROM meta WHERE namespace = $1 AND key = $2")
                .await?;
            client.execute(&q, &[&namespace, &key]).await?;
            Ok(())
        })
    }

    async fn take_slot(
        &self,
        key: &str,
        max: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let since = now - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
        let lock = key_lock("blast_radius", key);
        let max = i64::from(max);
        transaction!(self, client, {
            let tx = client.transaction().await?;
            // One taker per key at a time, on every replica: the count and the insert are one step.
            let q = tx
                .prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?;
            tx.execute(&q, &[&lock]).await?;
            let q = tx
                .prepare_cached("DELETE FROM blast_radius_slots WHERE key = $1 AND taken_at <= $2")
                .await?;
            tx.execute(&q, &[&key, &since]).await?;
            let q = tx
                .prepare_cached("SELECT count(*) FROM blast_radius_slots WHERE key = $1")
                .await?;
            let held: i64 = tx.query_one(&q, &[&key]).await?.get(0);
            let free = held < max;
            if free {
                let q = tx
                    .prepare_cached(
                        "INSERT INTO blast_radius_slots (key, taken_at) VALUES ($1, $2)",
                    )
                    .await?;
                tx.execute(&q, &[&key, &now]).await?;
            }
            tx.commit().await?;
            Ok(free)
        })
    }

    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            let prune = tx
                .prepare_cached("DELETE FROM once WHERE until <= $1")
                .await?;
            tx.execute(&prune, &[&now]).await?;
            // The row is written when the key is new or its memory has run out; a replica racing
            // for the same key waits on the row lock and then finds it remembered.
            let remember = tx
                .prepare_cached(
                    "INSERT INTO once (namespace, key, until) VALUES ($1, $2, $3)
                     ON CONFLICT (namespace, key) DO UPDATE SET until = EXCLUDED.until
                     WHERE once.until <= $4",
                )
                .await?;
            let first = tx
                .execute(&remember, &[&namespace, &key, &until, &now])
                .await?
                == 1;
            tx.commit().await?;
            Ok(first)
        })
    }

    async fn append_audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        transaction!(self, client, {
            let tx = client.transaction().await?;
            postgres_audit::append(&tx, &entries).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        transaction!(self, client, {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let report = postgres_audit::verify(&tx).await?;
            tx.commit().await?;
            Ok(report)
        })
    }

    async fn audit_entries(
        &self,
        run_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = sql_limit(limit);
        let rows = transaction!(self, client, {
            postgres_audit::rows(&client, run_id, limit).await
        })?;
        postgres_audit::decode(&rows)
    }

    async fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let rows = transaction!(self, client, postgres_audit::row(&client, seq).await)?;
        Ok(postgres_audit::decode(&rows)?.into_iter().next())
    }

    async fn prune(&self, request: &super::PruneRequest) -> Result<super::PruneBatch, StoreError> {
        self.prune_batch(request).await
    }

    async fn stats(&self) -> Result<super::StoreStats, StoreError> {
        self.stats_now().await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lease_run(&self, run_id: &str) -> Result<bool, StoreError> {
        let ttl = self.leases.ttl_secs();
        let taken = transaction!(self, client, {
            let q = client
                .prepare_cached(
                    "UPDATE runs SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                     WHERE id = $1
                        AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())",
                )
                .await?;
            Ok(client
                .execute(&q, &[&run_id, &self.leases.replica, &ttl])
                .await?
                == 1)
        })?;
        if taken {
            self.leases.holding().insert(run_id.to_owned());
        }
        Ok(taken)
    }

    async fn release_run(
        &self,
        run_id: &str,
        due: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        // Not renewed from now on, whether or not the release gets through: a lease left behind
        // runs out, and the run is claimed again.
        self.leases.holding().remove(run_id);
        transaction!(self, client, {
            let q = client
                .prepare_cached(
                    "UPDATE runs SET lease_owner = NULL, lease_until = NULL, due_at = $3
                     WHERE id = $1 AND lease_owner = $2",
                )
                .await?;
            client
                .execute(&q, &[&run_id, &self.leases.replica, &due])
                .await?;
            Ok(())
        })
    }

    async fn claim_due_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let ttl = self.leases.ttl_secs();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transaction!(self, client, {
            let q = client
                .prepare_cached(
                    "UPDATE runs SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
                     WHERE id IN (
                        SELECT id FROM runs
                        WHERE unfinished AND due_at <= now()
                            AND (lease_until IS NULL OR lease_until < now())
                        ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                )
                .await?;
            let rows = client
                .query(&q, &[&self.leases.replica, &ttl, &limit])
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect::<Vec<String>>())
        })
        .inspect(|claimed| self.leases.holding().extend(claimed.iter().cloned()))
    }

    async fn lease(&self, name: &str) -> Result<bool, StoreError> {
        let ttl = self.leases.ttl_secs();
        transaction!(self, client, {
            let q = client
                .prepare_cached(
                    "INSERT INTO leases (name, owner, until)
                     VALUES ($1, $2, now() + make_interval(secs => $3))
                     ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
                     WHERE leases.owner = EXCLUDED.owner OR leases.until < now()",
                )
                .await?;
            Ok(client
                .execute(&q, &[&name, &self.leases.replica, &ttl])
                .await?
                == 1)
        })
    }

    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.ready.load(Ordering::Relaxed)
    }

    fn oldest_pending(&self) -> Option<stall::Oldest> {
        self.pending.oldest()
    }

    async fn search(
        &self,
        request: &crate::search::Request,
    ) -> Result<Vec<crate::search::HitRef>, StoreError> {
        let (sql, params) = crate::search::sql::select(request);
        transaction!(self, client, {
            // Not cached: every query's shape is its own statement, and they are unbounded.
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
            let rows = client.query(sql.as_str(), &refs).await?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let doc_type = match row.get::<_, &str>(0) {
                        "alert" => crate::search::DocType::Alert,
                        "incident" => crate::search::DocType::Incident,
                        _ => return None,
                    };
                    Some(crate::search::HitRef {
                        doc_type,
                        id: row.get(1),
                        time: row.get(2),
                        tie: row.get(3),
                    })
                })
                .collect())
        })
    }

    async fn reindex(&self) -> Result<u64, StoreError> {
        let alerts = reindex_table(self, "alerts", crate::search::Doc::from_alert).await?;
        let incidents = reindex_table(self, "incidents", crate::search::Doc::from_incident).await?;
        Ok(alerts + incidents)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every answered write is committed already; what is left is to stop taking new ones.
        self.closed.store(true, Ordering::Relaxed);
        // Leases go back, so other replicas take this one's runs over without waiting them out.
        if let Ok(client) = self.pool.get().await {
            let replica = &self.leases.replica;
            let _ = client
                .execute(
                    "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
                    &[replica],
                )
                .await;
            let _ = client
                .execute("DELETE FROM leases WHERE owner = $1", &[replica])
                .await;
            let _ = client
                .execute(
                    "UPDATE alerts SET match_owner = NULL, match_until = NULL
                     WHERE pending AND match_owner = $1",
                    &[replica],
                )
                .await;
        }
        self.pool.close();
        Ok(())
    }
}

/// Retention's batches and the store's stats (in a file of their own).
#[path = "postgres_retention.rs"]
mod pruning;
