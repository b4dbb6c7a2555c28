//! The engine as a service: a matcher that starts runs for stored alerts, workers that advance
//! runs, timers for approvals, retries and sleeps, and the entry points for decisions, cancels and
//! manual triggers. Every change of a run goes through the store, so a restart resumes where the
//! records say: unfinished runs are picked up, unmatched alerts matched, due timers fired.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc};

mod undo;

use super::approval::{ApproverGroups, Decided, DecisionError, decide};
use super::channel::{ApprovalChannel, decided, open_requests};
use super::exec::{Event, Executor, Library, Persist, Progress, RunData};
use super::run::{Run, RunStatus, StepStatus, Trigger};
use super::watch::{IncidentEvent, Watcher};
use crate::actions::{ActionRunner, Guardrails};
use crate::alert::new_id;
use crate::audit::NewEntry;
use crate::config::SourceResolution;
use crate::model::event::{
    AlertAdded, AlertStateChanged, ApprovalDecided, ApprovalRefused, Detail, EventKind,
    IncidentStatusChanged, RunState, StepUndoFailed, StepUndone,
};
use crate::model::people::Actor;
use crate::playbook::Compiled;
use crate::store::{AlertQuery, Store};

/// Why an engine request was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no run `{0}`")]
    NoRun(String),
    #[error("no playbook `{0}` is loaded")]
    NoPlaybook(String),
    #[error("no incident `{0}`")]
    NoIncident(String),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(String),
}

/// The loaded playbooks, replaced whole on reload.
#[derive(Default)]
pub struct Playbooks {
    by_id: HashMap<String, Arc<Compiled>>,
}

impl Playbooks {
    pub fn new(playbooks: Vec<Compiled>) -> Playbooks {
        Playbooks {
            by_id: playbooks
                .into_iter()
                .map(|p| (p.spec.id.clone(), Arc::new(p)))
                .collect(),
        }
    }
}

struct Shared(RwLock<Arc<Playbooks>>);

impl Library for Shared {
    fn playbook(&self, id: &str) -> Option<Arc<Compiled>> {
        self.0.read().ok()?.by_id.get(id).cloned()
    }
}

/// Who decides: the approver groups, the people behind identities and credentials, and who
/// approves undo.
pub struct Trust {
    pub groups: ApproverGroups,
    pub people: Arc<crate::trust::Directory>,
    pub undo_approvers: Option<String>,
}

/// The engine.
pub struct Engine {
    store: Arc<dyn Store>,
    executor: Executor,
    playbooks: Arc<Shared>,
    groups: ApproverGroups,
    /// People and credentials: who an identity or a token is.
    people: Arc<crate::trust::Directory>,
    /// The group that approves undo requests (`guardrails.undo_approvers`); `None`: the group of
    /// the approval before the step, else the blast-radius approvers.
    undo_approvers: Option<String>,
    workers: Arc<Semaphore>,
    worker_count: u32,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    timers: mpsc::UnboundedSender<(DateTime<Utc>, String)>,
    matcher: Arc<Notify>,
    metrics: Arc<crate::telemetry::Metrics>,
    channels: RwLock<Vec<Arc<dyn ApprovalChannel>>>,
    watchers: Watchers,
    /// The store is shared with other replicas: runs are leased (see [`Engine::poll_loop`]).
    shared: bool,
    /// What becomes of an incident none of whose alerts fires at its source any more
    /// (`grouping.resolved_at_source`; see [`Engine::after_source_state`]).
    quiet_at_source: SourceResolution,
    /// Whether [`Engine::recover`] has started the matcher (and the poll loop).
    started: std::sync::atomic::AtomicBool,
}

/// How often a replica on a shared store looks for runs that are due and free, and alerts left
/// unmatched: the runs of a replica that died, timers, decisions taken on another replica.
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a person's request (a decision, a cancel) waits for a run another replica is
/// advancing before it is answered with a conflict to try again.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Persists runs through the store, with their events as audit entries, and tells the watchers;
/// keeps the ids of the child runs it created, for the engine to start.
struct StorePersist(Arc<dyn Store>, Watchers, Vec<String>);

/// The registered watchers.
#[derive(Clone, Default)]
struct Watchers(Arc<RwLock<Vec<Arc<dyn Watcher>>>>);

impl Watchers {
    async fn tell(&self, run: &Run, events: &[Event]) {
        let watchers = self.0.read().map(|w| w.clone()).unwrap_or_default();
        if watchers.is_empty() {
            return;
        }
        let events = IncidentEvent::of_run(run, events);
        if events.is_empty() {
            return;
        }
        for watcher in watchers {
            watcher.incident_events(&events).await;
        }
    }
}

/// Audit entries for a run's events.
pub fn audit_entries(run_id: &str, events: Vec<Event>) -> Vec<NewEntry> {
    events
        .into_iter()
        .map(|e| {
            let mut entry = NewEntry::new(e.kind)
                .run(run_id.to_owned())
                .detail(e.detail);
            if let Some(step) = e.step {
                entry = entry.step(step);
            }
            if let Some(actor) = e.actor {
                entry = entry.actor(actor);
            }
            entry
        })
        .collect()
}

#[async_trait]
impl Persist for StorePersist {
    async fn save(
        &mut self,
        run: &Run,
        events: Vec<Event>,
        durable: bool,
    ) -> Result<(), crate::store::StoreError> {
        let told = events.clone();
        self.0
            .save_run(run, audit_entries(&run.id, events), durable)
            .await?;
        self.1.tell(run, &told).await;
        Ok(())
    }

    async fn load(&mut self, id: &str) -> Result<Option<Run>, crate::store::StoreError> {
        self.0.run(id).await
    }

    async fn create(
        &mut self,
        run: &Run,
        events: Vec<Event>,
    ) -> Result<(), crate::store::StoreError> {
        // A child's concurrency key is its own id: nothing else holds it.
        self.0
            .create_run(run, audit_entries(&run.id, events))
            .await?;
        self.2.push(run.id.clone());
        Ok(())
    }
}

impl Engine {
    /// Builds the engine and starts its timer task (call from inside a runtime). Nothing advances
    /// a run until [`Engine::recover`]: the owner adds its channels and watchers first.
    pub fn start(
        store: Arc<dyn Store>,
        executor_parts: (
            Arc<crate::script::Scripts>,
            Arc<dyn ActionRunner>,
            Arc<Guardrails>,
        ),
        playbooks: Playbooks,
        trust: Trust,
        quiet_at_source: SourceResolution,
        workers: usize,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Arc<Engine> {
        let shared = Arc::new(Shared(RwLock::new(Arc::new(playbooks))));
        let (scripts, actions, guardrails) = executor_parts;
        let (timers, timer_rx) = mpsc::unbounded_channel();
        let store_shared = store.shared();
        let engine = Arc::new(Engine {
            shared: store_shared,
            store,
            executor: Executor {
                scripts,
                actions,
                guardrails,
                library: shared.clone(),
            },
            playbooks: shared,
            groups: trust.groups,
            people: trust.people,
            undo_approvers: trust.undo_approvers,
            workers: Arc::new(Semaphore::new(workers.max(1))),
            worker_count: u32::try_from(workers.max(1)).unwrap_or(u32::MAX),
            locks: Mutex::new(HashMap::new()),
            timers,
            matcher: Arc::new(Notify::new()),
            metrics,
            channels: RwLock::new(Vec::new()),
            watchers: Watchers::default(),
            quiet_at_source,
            started: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(Engine::timer_loop(Arc::downgrade(&engine), timer_rx));
        engine
    }

    /// On a shared store, claims the runs that are due and that no live replica holds, and wakes
    /// the matcher for alerts no replica is matching. This is how a replica takes over the runs of
    /// one that died (once their leases run out), fires timers another replica armed, and resumes
    /// a run decided on another replica; the lease makes each advance happen on one replica.
    async fn poll_loop(engine: std::sync::Weak<Engine>) {
        loop {
            let Some(e) = engine.upgrade() else { return };
            e.matcher.notify_one();
            let batch = e.workers.available_permits().max(1) * 2;
            let claimed = match e.store.claim_due_runs(batch).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::warn!(%error, "could not claim due runs; trying again");
                    Vec::new()
                }
            };
            let full = claimed.len() >= batch;
            for id in claimed {
                e.metrics.runs_claimed.inc();
                e.kick(id);
            }
            drop(e);
            if !full {
                tokio::time::sleep(POLL).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Takes the run's lease on a shared store, waiting up to [`LEASE_WAIT`] while another replica
    /// advances it (as a decision on one process waits for the run's advance to finish).
    async fn lease_waiting(&self, run_id: &str) -> Result<(), EngineError> {
        if !self.shared {
            return Ok(());
        }
        let started = std::time::Instant::now();
        loop {
            if self.store.lease_run(run_id).await.map_err(store_error)? {
                return Ok(());
            }
            // No such run is an error of its own.
            self.load_run(run_id).await?;
            if started.elapsed() > LEASE_WAIT {
                return Err(EngineError::Conflict(format!(
                    "run `{run_id}` is busy on another replica; try again"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Gives the run's lease back on a shared store, saying when it next has work to do.
    async fn release(&self, run_id: &str, due: Option<DateTime<Utc>>) {
        if !self.shared {
            return;
        }
        if let Err(error) = self.store.release_run(run_id, due).await {
            tracing::warn!(run = run_id, %error, "could not release the run's lease; it frees itself when the lease runs out");
        }
    }

    /// Resumes every unfinished run and matches every unmatched alert (at start). A run waiting on
    /// an open approval or a future time only gets its timer back; nothing is written for it.
    ///
    /// Call it once the channels and watchers are added: the matcher (and, on a shared store, the
    /// poll loop claiming due runs) starts here, so no run moves before they can hear of it.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, EngineError> {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(Engine::matcher_loop(
                Arc::downgrade(self),
                self.matcher.clone(),
            ));
            if self.shared {
                tokio::spawn(Engine::poll_loop(Arc::downgrade(self)));
            }
        }
        if self.shared {
            // Replicas share the runs: they are claimed as they come due (poll_loop), the ones
            // another replica still holds included once its leases run out.
            self.matcher.notify_one();
            return Ok(0);
        }
        let ids = self.store.unfinished_runs().await.map_err(store_error)?;
        let count = ids.len();
        let now = Utc::now();
        for id in ids {
            let Some(run) = self.store.run(&id).await.map_err(store_error)? else {
                continue;
            };
            if run.status == RunStatus::Waiting && !run.ready(now) {
                if let Some(at) = run.wake_at() {
                    let _ = self.timers.send((at, id));
                }
            } else {
                self.kick(id);
            }
            self.metrics.runs_resumed.inc();
        }
        self.matcher.notify_one();
        Ok(count)
    }

    /// At shutdown: starts no more advances and waits up to `grace` for those in flight, so the
    /// store closes (and, shared, gives its leases back) with no step half done. False when some
    /// were still going at the end of `grace`.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        match tokio::time::timeout(grace, self.workers.acquire_many(self.worker_count)).await {
            Ok(Ok(permits)) => {
                permits.forget();
                true
            }
            _ => false,
        }
    }

    /// Adds a watcher that hears every incident event after it is stored.
    pub fn add_watcher(&self, watcher: Arc<dyn Watcher>) {
        if let Ok(mut watchers) = self.watchers.0.write() {
            watchers.push(watcher);
        }
    }

    /// Stores `run` with `events` (durably) and tells the watchers.
    async fn save_and_tell(&self, run: &Run, events: Vec<Event>) -> Result<(), EngineError> {
        let told = events.clone();
        self.store
            .save_run(run, audit_entries(&run.id, events), true)
            .await
            .map_err(store_error)?;
        self.watchers.tell(run, &told).await;
        Ok(())
    }

    /// Sets an incident's status by a person or a ticket system; audited and told to the watchers.
    pub async fn set_incident_status(
        &self,
        incident_id: &str,
        status: crate::alert::IncidentStatus,
        by: &str,
        person: Option<&str>,
        via: &str,
    ) -> Result<crate::alert::Incident, EngineError> {
        let mut incident = self
            .store
            .incident(incident_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| EngineError::NoIncident(incident_id.to_owned()))?;
        if incident.status == status {
            return Ok(incident);
        }
        self.store
            .set_incident_status(incident_id, status)
            .await
            .map_err(store_error)?;
        incident.status = status;
        let changed = IncidentStatusChanged {
            incident: incident_id.to_owned(),
            via: via.to_owned(),
        };
        let (kind, detail) = match status {
            crate::alert::IncidentStatus::Resolved => Detail::IncidentResolved(changed),
            crate::alert::IncidentStatus::Open => Detail::IncidentReopened(changed),
        }
        .into_parts();
        self.store
            .append_audit(vec![
                NewEntry::new(kind.clone())
                    .actor(by.to_owned())
                    .detail(match person {
                        Some(person) => super::exec::with_person(detail.clone(), person),
                        None => detail.clone(),
                    }),
            ])
            .await
            .map_err(store_error)?;
        let event = IncidentEvent {
            incident_id: incident_id.to_owned(),
            kind,
            run_id: None,
            playbook: None,
            step: None,
            actor: crate::model::people::shown_as(Some(by), &json!({ "person": person })),
            detail,
            at: Utc::now(),
        };
        let watchers = self
            .watchers
            .0
            .read()
            .map(|w| w.clone())
            .unwrap_or_default();
        for watcher in watchers {
            watcher.incident_events(std::slice::from_ref(&event)).await;
        }
        Ok(incident)
    }

    /// Tells the watchers of alerts that joined incidents, and of alerts whose source changed
    /// their state (repeats are not news).
    pub async fn alerts_added(&self, accepted: &[crate::store::Accepted]) {
        let watchers = self
            .watchers
            .0
            .read()
            .map(|w| w.clone())
            .unwrap_or_default();
        if watchers.is_empty() {
            return;
        }
        let at = Utc::now();
        let events: Vec<IncidentEvent> = accepted
            .iter()
            .filter(|a| !a.duplicate)
            .map(|a| {
                let added = AlertAdded {
                    alert_id: a.alert_id.clone(),
                };
                let (kind, detail) = match &a.follows {
                    Some(earlier) => Detail::AlertStateChanged(AlertStateChanged {
                        alert_id: a.alert_id.clone(),
                        follows: earlier.clone(),
                        state: a.state,
                    }),
                    None if a.new_incident => Detail::IncidentOpened(added),
                    None => Detail::AlertAdded(added),
                }
                .into_parts();
                IncidentEvent {
                    incident_id: a.incident_id.clone(),
                    kind,
                    run_id: None,
                    playbook: None,
                    step: None,
                    actor: None,
                    detail,
                    at,
                }
            })
            .collect();
        if events.is_empty() {
            return;
        }
        for watcher in watchers {
            watcher.incident_events(&events).await;
        }
    }

    /// Adds a channel that approval requests are posted to and updated in.
    pub fn add_channel(&self, channel: Arc<dyn ApprovalChannel>) {
        if let Ok(mut channels) = self.channels.write() {
            channels.push(channel);
        }
    }

    fn channels(&self) -> Vec<Arc<dyn ApprovalChannel>> {
        self.channels.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Posts new approval requests to every channel, in the background.
    fn post_requests(&self, before: &[String], run: &Run) {
        let channels = self.channels();
        if channels.is_empty() {
            return;
        }
        for request in open_requests(run)
            .into_iter()
            .filter(|r| !before.contains(&r.step))
        {
            for channel in channels.clone() {
                let request = request.clone();
                tokio::spawn(async move {
                    if let Err(error) = channel.post(&request).await {
                        tracing::warn!(channel = channel.name(), run = %request.run_id, step = %request.step, %error, "could not post the approval request; it can still be decided with the CLI or API");
                    }
                });
            }
        }
    }

    /// Tells every channel how approval `step` ended, in the background.
    fn post_outcome(&self, run: &Run, step: &str) {
        let Some((request, outcome)) = decided(run, step) else {
            return;
        };
        for channel in self.channels() {
            let (request, outcome) = (request.clone(), outcome.clone());
            tokio::spawn(async move {
                if let Err(error) = channel.update(&request, &outcome).await {
                    tracing::warn!(channel = channel.name(), run = %request.run_id, step = %request.step, %error, "could not update the approval request");
                }
            });
        }
    }

    /// New alerts are stored: match them.
    pub fn alerts_stored(&self) {
        self.matcher.notify_one();
    }

    /// Replaces the loaded playbooks.
    pub fn replace_playbooks(&self, playbooks: Playbooks) {
        if let Ok(mut current) = self.playbooks.0.write() {
            *current = Arc::new(playbooks);
        }
    }

    fn current(&self) -> Arc<Playbooks> {
        self.playbooks
            .0
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    fn lock_for(&self, run_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(run_id.to_owned()).or_default().clone()
    }

    fn forget_lock(&self, run_id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(run_id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(run_id);
        }
    }

    async fn matcher_loop(engine: std::sync::Weak<Engine>, notify: Arc<Notify>) {
        loop {
            let notified = notify.notified();
            let Some(e) = engine.upgrade() else { return };
            if let Err(error) = e.match_pending().await {
                tracing::error!(%error, "matching alerts to playbooks failed; retrying in 1s");
                drop(e);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            drop(e);
            notified.await;
        }
    }

    /// Matches every pending alert, many at a time (each alert's runs are created atomically by the
    /// store, so the order between alerts does not matter).
    async fn match_pending(self: &Arc<Self>) -> Result<(), EngineError> {
        let pending = self.store.pending_matches().await.map_err(store_error)?;
        let limit = Arc::new(Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for alert_id in pending {
            let (engine, limit) = (self.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                engine.match_alert(&alert_id).await?;
                engine.store.matched(&alert_id).await.map_err(store_error)
            });
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn match_alert(self: &Arc<Self>, alert_id: &str) -> Result<(), EngineError> {
        let Some(alert) = self.store.alert(alert_id).await.map_err(store_error)? else {
            return Ok(());
        };
        let playbooks = self.current();
        let mut candidates: Vec<&Arc<Compiled>> = playbooks
            .by_id
            .values()
            .filter(|p| p.listens_to(&alert.source) && p.takes_state(alert.state))
            .collect();
        if candidates.is_empty() {
            return self.after_source_state(&alert).await;
        }
        let data = self
            .data_for(Some(alert_id), Some(&alert.incident_id))
            .await?;
        candidates.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        for playbook in candidates {
            let ctx = Arc::new(crate::script::Context {
                alert: data.alert.clone(),
                incident: data.incident.clone(),
                ..Default::default()
            });
            if let Some(when) = &playbook.when {
                match self.evaluate(when, &ctx, |s, e, c| s.eval_bool(e, c)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => continue,
                    Ok(Err(error)) => {
                        // Counted every time, logged once per playbook version.
                        if self
                            .metrics
                            .when_failed(&playbook.spec.id, playbook.version())
                        {
                            tracing::warn!(playbook = %playbook.spec.id, file = %playbook.file.display(), alert = alert_id, %error, "`on.when` failed; the playbook does not start for such alerts (logged once per playbook version; cordon_playbook_when_errors_total counts them)");
                        }
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let key = match &playbook.concurrency {
                Some(expr) => match self.evaluate(expr, &ctx, |s, e, c| s.eval(e, c)).await {
                    Ok(Ok(Value::String(s))) => s,
                    Ok(Ok(other)) => other.to_string(),
                    _ => alert.incident_id.clone(),
                },
                None => alert.incident_id.clone(),
            };
            let trigger = Trigger {
                kind: "alert".into(),
                by: None,
                person: None,
            };
            let run = self
                .new_run(
                    playbook,
                    trigger,
                    Some(alert_id.to_owned()),
                    Some(alert.incident_id.clone()),
                    key,
                    Value::Null,
                    &data,
                )
                .await;
            self.create_with(run, Some(data.clone())).await?;
        }
        self.after_source_state(&alert).await
    }

    /// Once an alert that is not firing is matched: resolves its incident when the policy says so
    /// (`resolve`; `note` leaves it to people, the incident's `at_source` and its card and report
    /// saying it) and no alert of the incident fires at its source any more. Runs of
    /// `state: resolved` playbooks are created first, so they start before the resolution is told.
    /// Matching is repeated after a crash until it is recorded, so this happens at least once;
    /// resolving a resolved incident changes nothing.
    async fn after_source_state(&self, alert: &crate::alert::Alert) -> Result<(), EngineError> {
        if alert.state.is_firing() || self.quiet_at_source != SourceResolution::Resolve {
            return Ok(());
        }
        let Some(incident) = self
            .store
            .incident(&alert.incident_id)
            .await
            .map_err(store_error)?
        else {
            return Ok(());
        };
        if incident.status != crate::alert::IncidentStatus::Open || incident.firing() > 0 {
            return Ok(());
        }
        self.set_incident_status(
            &incident.id,
            crate::alert::IncidentStatus::Resolved,
            &format!("source:{}", alert.source),
            None,
            &alert.source,
        )
        .await
        .map(drop)
    }

    /// Evaluates `expr` with `how`: on this task when it is straight-line, else on a blocking
    /// thread (as the executor does). `Err(())` when the thread failed.
    async fn evaluate<T: Send + 'static>(
        &self,
        expr: &crate::script::Expr,
        ctx: &Arc<crate::script::Context>,
        how: fn(
            &crate::script::Scripts,
            &crate::script::Expr,
            &crate::script::Context,
        ) -> Result<T, crate::script::ScriptError>,
    ) -> Result<Result<T, crate::script::ScriptError>, ()> {
        if expr.is_straight() {
            return Ok(how(&self.executor.scripts, expr, ctx));
        }
        let (scripts, expr, ctx) = (self.executor.scripts.clone(), expr.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || how(&scripts, &expr, &ctx))
            .await
            .map_err(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    async fn new_run(
        &self,
        playbook: &Compiled,
        trigger: Trigger,
        alert_id: Option<String>,
        incident_id: Option<String>,
        key: String,
        inputs: Value,
        data: &RunData,
    ) -> Run {
        let now = Utc::now();
        let mut run = Run::new(
            new_id(),
            &playbook.spec.id,
            trigger,
            incident_id,
            alert_id,
            key,
            inputs,
            playbook.spec.dry_run,
            now,
        );
        if let Err(error) = self.executor.start(playbook, &mut run, data).await {
            run.status = RunStatus::Failed;
            run.error = Some(error);
            run.finished_at = Some(now);
        }
        run
    }

    /// Stores a new run and starts it; `Ok(Some(id))` when an active run already holds its key.
    async fn create(self: &Arc<Self>, run: Run) -> Result<Option<String>, EngineError> {
        self.create_with(run, None).await
    }

    /// [`Engine::create`], with what the run reads when the caller has it at hand: the first
    /// advance then starts from the run and data in memory instead of reading them back.
    async fn create_with(
        self: &Arc<Self>,
        run: Run,
        data: Option<RunData>,
    ) -> Result<Option<String>, EngineError> {
        let event = Event::new(
            EventKind::RunCreated,
            None,
            json!({ "playbook": run.playbook, "trigger": run.trigger, "alert": run.alert_id, "incident": run.incident_id, "dry_run": run.dry_run }),
        );
        let audit = audit_entries(&run.id, vec![event]);
        // A run an alert started need not be durable at once (see the store's word on it).
        let created = if run.trigger.kind == "alert" {
            self.store.create_run_for_alert(&run, audit).await
        } else {
            self.store.create_run(&run, audit).await
        };
        match created.map_err(store_error)? {
            Some(existing) => Ok(Some(existing)),
            None => {
                self.metrics
                    .runs_started
                    .get_or_create(&crate::telemetry::PlaybookLabels {
                        playbook: run.playbook.clone(),
                    })
                    .inc();
                match data {
                    // On a shared store another replica may claim the run as soon as it is
                    // stored, so what is in memory may be behind: it is read back under the lease.
                    Some(data) if !self.shared => {
                        let id = run.id.clone();
                        self.spawn_advance(id, false, Some(Box::new((run, data))));
                    }
                    _ => self.kick(run.id.clone()),
                }
                Ok(None)
            }
        }
    }

    /// Starts a playbook by hand (API, CLI, chat).
    pub async fn trigger(
        self: &Arc<Self>,
        playbook_id: &str,
        inputs: Value,
        by: &Actor,
        incident_id: Option<String>,
        dry_run: bool,
    ) -> Result<(String, bool), EngineError> {
        let playbook = self
            .current()
            .by_id
            .get(playbook_id)
            .cloned()
            .ok_or_else(|| EngineError::NoPlaybook(playbook_id.to_owned()))?;
        let data = self.data_for(None, incident_id.as_deref()).await?;
        let key = incident_id.clone().unwrap_or_else(new_id);
        let trigger = Trigger {
            kind: "manual".into(),
            by: Some(by.identity.clone()),
            person: Some(by.person.clone()),
        };
        let mut run = self
            .new_run(&playbook, trigger, None, incident_id, key, inputs, &data)
            .await;
        // A person may ask for a dry run of any playbook.
        run.dry_run |= dry_run;
        let id = run.id.clone();
        match self.create(run).await? {
            Some(existing) => Ok((existing, false)),
            None => Ok((id, true)),
        }
    }

    /// What a run's expressions read: its alert and incident (with the incident's alerts).
    async fn data_for(
        &self,
        alert_id: Option<&str>,
        incident_id: Option<&str>,
    ) -> Result<RunData, EngineError> {
        // The three reads side by side: on a shared store each is a round trip to the database.
        let alert = async {
            match alert_id {
                Some(id) => self.store.alert(id).await,
                None => Ok(None),
            }
        };
        let incident = async {
            match incident_id {
                Some(id) => self.store.incident(id).await,
                None => Ok(None),
            }
        };
        let alerts = async {
            match incident_id {
                Some(id) => {
                    self.store
                        .alerts(&AlertQuery {
                            incident_id: Some(id.to_owned()),
                            limit: 200,
                            ..AlertQuery::default()
                        })
                        .await
                }
                None => Ok(Vec::new()),
            }
        };
        let (alert, incident, alerts) =
            tokio::try_join!(alert, incident, alerts).map_err(store_error)?;
        let mut data = RunData::default();
        if let Some(alert) = alert {
            data.alert = serde_json::to_value(&alert).unwrap_or(Value::Null);
        }
        if let Some(incident) = incident {
            let mut value = serde_json::to_value(&incident).unwrap_or(Value::Null);
            let summaries: Vec<Value> = alerts
                .iter()
                .rev()
                .map(|a| json!({ "id": a.id, "source": a.source, "kind": a.kind, "title": a.title, "severity": a.severity.score, "state": a.state, "resource": a.resource, "actor": a.actor, "network": a.network, "repeat_count": a.repeat_count }))
                .collect();
            value["alerts"] = Value::Array(summaries);
            data.incident = value;
        }
        Ok(data)
    }

    /// Advances a run on a worker (now, or when a worker is free).
    pub fn kick(self: &Arc<Self>, run_id: String) {
        self.spawn_advance(run_id, false, None);
    }

    /// Advances a parent run whose called run ended: its `call` step looks at the child now,
    /// whenever the parent would next have woken by itself.
    fn wake(self: &Arc<Self>, run_id: String) {
        self.spawn_advance(run_id, true, None);
    }

    /// Advances `run_id` on a worker; `preloaded` is the run as just created and what it reads.
    fn spawn_advance(
        self: &Arc<Self>,
        run_id: String,
        force: bool,
        preloaded: Option<Box<(Run, RunData)>>,
    ) {
        let engine = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = engine.workers.clone().acquire_owned().await else {
                return;
            };
            if let Err(error) = engine.advance(&run_id, force, preloaded).await {
                if engine.shared {
                    tracing::warn!(run = %run_id, %error, "advancing the run failed; a replica claims it again when it is due");
                } else {
                    tracing::error!(run = %run_id, %error, "advancing the run failed; it resumes at the next start");
                }
            }
        });
    }

    async fn advance(
        self: &Arc<Self>,
        run_id: &str,
        force: bool,
        preloaded: Option<Box<(Run, RunData)>>,
    ) -> Result<(), EngineError> {
        let lock = self.lock_for(run_id);
        let guard = lock.lock().await;
        // On a shared store another replica may hold the run: then it advances it, not this one.
        let leased = match self.shared {
            false => Ok(true),
            true => self.store.lease_run(run_id).await.map_err(store_error),
        };
        let held = matches!(leased, Ok(true));
        // The inner part answers when the run next has work to do, for the lease's release.
        let result = async {
            if !leased? {
                return Ok(None);
            }
            let (run, data) = match preloaded {
                Some(both) => {
                    let (run, data) = *both;
                    (Some(run), Some(data))
                }
                None => (self.store.run(run_id).await.map_err(store_error)?, None),
            };
            let Some(mut run) = run else { return Ok(None) };
            if run.status.is_finished() || run.status == RunStatus::NeedsDecision {
                return Ok(None);
            }
            if run.status == RunStatus::Waiting && !run.ready(Utc::now()) && !force {
                if let Some(at) = run.wake_at() {
                    let _ = self.timers.send((at, run.id.clone()));
                }
                return Ok(run.wake_at());
            }
            let Some(playbook) = self.playbook_for(&run) else {
                tracing::warn!(run = run_id, playbook = %run.playbook, "the run's playbook is not loaded; the run waits for a reload");
                return Ok(Some(Utc::now() + chrono::Duration::seconds(60)));
            };
            let data = match data {
                Some(data) => data,
                None => self.data_for(run.alert_id.as_deref(), run.incident_id.as_deref()).await?,
            };
            let open_before: Vec<String> = open_requests(&run).into_iter().map(|r| r.step).collect();
            let closed_before: Vec<String> = run.steps.iter().filter(|(_, s)| s.approval.as_ref().is_some_and(|a| a.outcome.is_some())).map(|(id, _)| id.clone()).collect();
            let mut persist = StorePersist(self.store.clone(), self.watchers.clone(), Vec::new());
            let progress = self.executor.advance(&playbook, &mut run, &data, &mut persist, Utc::now()).await;
            // Children created before a failure are started all the same: they are stored.
            for child in std::mem::take(&mut persist.2) {
                self.kick(child);
            }
            let progress = progress.map_err(EngineError::Store)?;
            self.metrics.run_advances.inc();
            self.post_requests(&open_before, &run);
            // Approvals settled inside the run (timeouts) are announced here; decisions by people
            // are announced where they are taken.
            for step in run.steps.keys() {
                if open_before.contains(step) && !closed_before.contains(step) && decided(&run, step).is_some() {
                    self.post_outcome(&run, step);
                }
            }
            match progress {
                Progress::Waiting(Some(at)) => {
                    let _ = self.timers.send((at, run.id.clone()));
                }
                Progress::Finished(status) => {
                    let labels = crate::telemetry::RunLabels { playbook: run.playbook.clone(), status: status.to_string() };
                    self.metrics.runs_finished.get_or_create(&labels).inc();
                    if run.playbook == undo::UNDO_PLAYBOOK {
                        self.undo_finished(&run).await;
                    }
                    if let Some(parent) = &run.parent {
                        self.wake(parent.run.clone());
                    }
                }
                _ => {}
            }
            Ok(run.due_at(Utc::now()))
        }
        .await;
        let result = match result {
            Ok(due) => {
                if held {
                    self.release(run_id, due).await;
                }
                Ok(())
            }
            Err(error) => {
                if held {
                    // Tried again shortly, by whichever replica claims it.
                    self.release(run_id, Some(Utc::now() + chrono::Duration::seconds(1)))
                        .await;
                }
                Err(error)
            }
        };
        drop(guard);
        drop(lock);
        self.forget_lock(run_id);
        result
    }

    async fn timer_loop(
        engine: std::sync::Weak<Engine>,
        mut rx: mpsc::UnboundedReceiver<(DateTime<Utc>, String)>,
    ) {
        let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, String)>> = BinaryHeap::new();
        loop {
            let next = heap.peek().map(|Reverse((at, _))| *at);
            let sleep = match next {
                Some(at) => (at - Utc::now()).to_std().unwrap_or_default(),
                None => std::time::Duration::from_secs(3600),
            };
            tokio::select! {
                message = rx.recv() => match message {
                    Some(timer) => heap.push(Reverse(timer)),
                    None => return,
                },
                _ = tokio::time::sleep(sleep) => {
                    let now = Utc::now();
                    let Some(e) = engine.upgrade() else { return };
                    while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                        if let Some(Reverse((_, id))) = heap.pop() {
                            e.kick(id);
                        }
                    }
                }
            }
        }
    }

    /// The store the engine keeps runs in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// People and credentials: who an identity or a bearer token is.
    pub fn people(&self) -> &crate::trust::Directory {
        &self.people
    }

    /// The approver groups, to check membership outside a decision (chat triggers).
    pub fn groups(&self) -> &ApproverGroups {
        &self.groups
    }

    /// A person's decision on an approval ([`super::approval::decide`] has the rules).
    pub async fn decide(
        self: &Arc<Self>,
        run_id: &str,
        step: &str,
        actor: &Actor,
        approve: bool,
        via: &str,
    ) -> Result<Decided, EngineError> {
        let lock = self.lock_for(run_id);
        let guard = lock.lock().await;
        let result = async {
            self.lease_waiting(run_id).await?;
            let result = self.decide_leased(run_id, step, actor, approve, via).await;
            // Due now: the decision is taken up by whichever replica claims the run first.
            self.release(run_id, Some(Utc::now())).await;
            result
        }
        .await;
        drop(guard);
        if let Ok(decided) = &result
            && decided.outcome.is_some()
        {
            self.kick(run_id.to_owned());
        }
        result
    }

    async fn decide_leased(
        self: &Arc<Self>,
        run_id: &str,
        step: &str,
        actor: &Actor,
        approve: bool,
        via: &str,
    ) -> Result<Decided, EngineError> {
        {
            let mut run = self.load_run(run_id).await?;
            match decide(
                &mut run,
                step,
                actor,
                approve,
                via,
                &self.groups,
                Utc::now(),
            ) {
                Ok(decided) => {
                    let event = Event::of(
                        Detail::ApprovalDecided(ApprovalDecided {
                            approve,
                            via: via.to_owned(),
                            outcome: decided.outcome,
                            approvals: decided.approvals,
                            quorum: decided.quorum,
                        }),
                        Some(step),
                    )
                    .by(actor);
                    run.updated_at = Utc::now();
                    self.save_and_tell(&run, vec![event]).await?;
                    if decided.outcome.is_some() {
                        self.post_outcome(&run, step);
                    }
                    Ok(decided)
                }
                Err(error) => {
                    let event = Event::of(
                        Detail::ApprovalRefused(ApprovalRefused {
                            approve,
                            via: via.to_owned(),
                            reason: error.to_string(),
                        }),
                        Some(step),
                    )
                    .by(actor);
                    self.store
                        .append_audit(audit_entries(run_id, vec![event]))
                        .await
                        .map_err(store_error)?;
                    Err(EngineError::Decision(error))
                }
            }
        }
    }

    /// The run and step an address names: `step@call_step` is `step` of the run that `call_step`
    /// started (and so on, for calls in called playbooks); any other address is in `run_id`.
    pub async fn locate(&self, run_id: &str, step: &str) -> Result<(String, String), EngineError> {
        let (mut run_id, mut step) = (run_id.to_owned(), step.to_owned());
        while let Some((inner, call)) = step.rsplit_once('@') {
            let run = self.load_run(&run_id).await?;
            let child = run
                .steps
                .get(call)
                .and_then(|s| s.child.clone())
                .ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "run has no call step `{call}` that started a run"
                    ))
                })?;
            (run_id, step) = (child, inner.to_owned());
        }
        Ok((run_id, step))
    }

    async fn load_run(&self, run_id: &str) -> Result<Run, EngineError> {
        self.store
            .run(run_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| EngineError::NoRun(run_id.to_owned()))
    }

    /// Cancels a run that has not finished.
    pub async fn cancel(self: &Arc<Self>, run_id: &str, by: &Actor) -> Result<Run, EngineError> {
        let lock = self.lock_for(run_id);
        let _guard = lock.lock().await;
        self.lease_waiting(run_id).await?;
        let result = self.cancel_leased(run_id, by).await;
        let due = match &result {
            Ok(run) => run.due_at(Utc::now()),
            Err(_) => Some(Utc::now()),
        };
        self.release(run_id, due).await;
        result
    }

    async fn cancel_leased(self: &Arc<Self>, run_id: &str, by: &Actor) -> Result<Run, EngineError> {
        let mut run = self.load_run(run_id).await?;
        if run.status.is_finished() {
            return Err(EngineError::Conflict(format!(
                "run `{run_id}` already {}",
                run.status
            )));
        }
        let event = Event::of(
            Detail::RunState(RunState::moved(run.status, RunStatus::Cancelled)),
            None,
        )
        .by(by);
        run.status = RunStatus::Cancelled;
        let now = Utc::now();
        run.finished_at = Some(now);
        run.updated_at = now;
        self.save_and_tell(&run, vec![event]).await?;
        // A cancelled parent cancels the runs it called; a cancelled child wakes its parent, whose
        // call step fails.
        for child in run.steps.values().filter_map(|s| s.child.clone()) {
            match Box::pin(self.cancel(&child, by)).await {
                Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::NoRun(_)) => {}
                Err(error) => {
                    tracing::warn!(run = %run.id, %child, %error, "could not cancel the called run")
                }
            }
        }
        if let Some(parent) = &run.parent {
            self.wake(parent.run.clone());
        }
        Ok(run)
    }

    /// A person's choice for a step held as `needs_decision`: run it again, or skip it.
    pub async fn resolve(
        self: &Arc<Self>,
        run_id: &str,
        step: &str,
        retry: bool,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let (run_id, step) = self.locate(run_id, step).await?;
        let (run_id, step) = (run_id.as_str(), step.as_str());
        let lock = self.lock_for(run_id);
        let guard = lock.lock().await;
        let result = async {
            self.lease_waiting(run_id).await?;
            let result = self.resolve_leased(run_id, step, retry, by).await;
            self.release(run_id, Some(Utc::now())).await;
            result
        }
        .await;
        drop(guard);
        if result.is_ok() {
            self.kick(run_id.to_owned());
        }
        result
    }

    async fn resolve_leased(
        self: &Arc<Self>,
        run_id: &str,
        step: &str,
        retry: bool,
        by: &Actor,
    ) -> Result<(), EngineError> {
        {
            let mut run = self.load_run(run_id).await?;
            let state = run
                .steps
                .get_mut(step)
                .ok_or_else(|| EngineError::Conflict(format!("run has no step `{step}`")))?;
            if state.status != StepStatus::NeedsDecision {
                return Err(EngineError::Conflict(format!(
                    "step `{step}` is not waiting for a retry-or-skip decision"
                )));
            }
            if retry {
                state.status = StepStatus::Retrying;
                state.due_at = None;
            } else {
                state.status = StepStatus::Skipped;
                state.error = Some(format!(
                    "skipped by {} after the process stopped during it",
                    by.person
                ));
            }
            run.status = RunStatus::Running;
            run.updated_at = Utc::now();
            let event = Event::new(
                if retry {
                    EventKind::StepRetriedByPerson
                } else {
                    EventKind::StepSkippedByPerson
                },
                Some(step),
                Value::Null,
            )
            .by(by);
            self.store
                .save_run(&run, audit_entries(run_id, vec![event]), true)
                .await
                .map_err(store_error)?;
            Ok(())
        }
    }
}

fn store_error(e: crate::store::StoreError) -> EngineError {
    EngineError::Store(e.to_string())
}
