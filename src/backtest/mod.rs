//! `cordon backtest`: replays stored alerts through playbooks (edited, not yet loaded) offline and
//! in dry run, and shows what they would have done: which incidents each would have started on,
//! the steps and approvals its run would have reached, the side effects it would have asked for,
//! and, against the playbooks loaded now, the incidents gained and lost.
//!
//! Nothing is written anywhere: the alerts and incidents are read, the runs live in memory
//! ([`Memory`]), and no action reaches the network. How each kind of action is treated offline:
//!
//! | action | in a backtest |
//! |---|---|
//! | with side effects | dry run, as a live dry run does: the step records the action and its inputs (the side effect asked for); an action that plans (`plans: true`) is asked with `dry_run` set and answered `{"offline": true}`, since its plan would need reads |
//! | `core.log`, `core.sleep` | run as written (a sleep passes at once, on virtual time) |
//! | `core.set` | answered with the value, which is not stored |
//! | other reads (enrichment, evidence, `yara.scan`) | not called; answered `{"offline": true}`, so a step reading their output may fail: the report says where |
//!
//! Matching follows the engine: a playbook listens to the alert's source and state, its `when` is
//! evaluated with the alert and its incident as they stood when the alert arrived (the incident's
//! alerts up to that one), and a run is started for the first matching alert of each incident
//! (the default concurrency key is the incident: later alerts of it join that run's incident).
//! Approvals are taken as approved, so every side effect the playbook could ask for is shown, with
//! the approvals it passed on the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::actions::{
    ActionCall, ActionError, ActionRunner, ActionSpec, Guardrails, SpecCatalog, builtin::Builtins,
};
use crate::alert::{Alert, Incident};
use crate::engine::exec::{Executor, Library, Memory, Progress, RunData};
use crate::model::run::{Decision, Run, StepStatus, Trigger};
use crate::playbook::Compiled;
use crate::script::Scripts;
use crate::store::{AlertQuery, Store};

/// Which stored alerts a backtest replays.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Alerts received at or after this.
    pub since: DateTime<Utc>,
    /// Only alerts of this source.
    pub source: Option<String>,
    /// Only alerts this search query matches (docs/search.md), e.g. `severity:>=7 ip:203.0.113.7`.
    pub query: Option<String>,
}

impl Selection {
    /// The search that finds the selected alerts: the query, limited to alerts (and the source);
    /// `since` is applied to what it finds. `None` without a query.
    pub fn search(&self) -> Option<crate::search::Search> {
        let query = self.query.as_deref()?;
        let mut q = String::from("type:alert");
        if let Some(source) = &self.source {
            // Quoted so a source with a dot or dash stays one term.
            q.push_str(&format!(" source:\"{}\"", source.replace('"', "")));
        }
        if !query.trim().is_empty() {
            q.push_str(&format!(" ({query})"));
        }
        Some(crate::search::Search {
            q,
            // The window is on when alerts were received (as without a query), which the search's
            // time (when observed) is not: applied to the alerts read back.
            since: None,
            until: None,
            limit: Some(crate::search::MAX_LIMIT),
            cursor: None,
        })
    }
}

/// Orders replayed alerts as they arrived.
pub fn oldest_first(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
}

/// The alerts a backtest replays, oldest first: with a query, the alerts it finds (every page);
/// otherwise the alerts of the source since the start.
pub async fn select_alerts(store: &dyn Store, selection: &Selection) -> Result<Vec<Alert>, String> {
    if let Some(mut search) = selection.search() {
        let mut alerts = Vec::new();
        loop {
            let page = crate::search::run(store, &search, Utc::now())
                .await
                .map_err(|e| e.to_string())?;
            for hit in page.hits {
                if let Some(alert) = store.alert(&hit.id).await.map_err(|e| e.to_string())? {
                    alerts.push(alert);
                }
            }
            match page.next_cursor {
                Some(cursor) => search.cursor = Some(cursor),
                None => break,
            }
        }
        alerts.retain(|a| a.received_at >= selection.since);
        oldest_first(&mut alerts);
        return Ok(alerts);
    }
    let mut alerts = store
        .alerts(&AlertQuery {
            source: selection.source.clone(),
            incident_id: None,
            limit: 0,
        })
        .await
        .map_err(|e| e.to_string())?;
    alerts.retain(|a| a.received_at >= selection.since);
    oldest_first(&mut alerts);
    Ok(alerts)
}

/// Where a backtest reads history.
#[async_trait]
pub trait History: Send + Sync {
    /// The alerts to replay, oldest first ([`select_alerts`] on a store).
    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, String>;
    /// An incident and its alerts.
    async fn incident(&self, id: &str) -> Result<Option<(Incident, Vec<Alert>)>, String>;
}

/// History read from a store.
pub struct StoreHistory(pub Arc<dyn Store>);

#[async_trait]
impl History for StoreHistory {
    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, String> {
        select_alerts(&*self.0, selection).await
    }

    async fn incident(&self, id: &str) -> Result<Option<(Incident, Vec<Alert>)>, String> {
        let Some(incident) = self.0.incident(id).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let alerts = self
            .0
            .alerts(&AlertQuery {
                incident_id: Some(id.to_owned()),
                ..AlertQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some((incident, alerts)))
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    /// Alerts replayed.
    pub alerts: usize,
    /// The playbooks given, as they would have run.
    pub playbooks: Vec<PlaybookReport>,
    /// Per playbook given: the incidents gained and lost against the loaded playbook of that id.
    pub differences: Vec<Difference>,
}

/// What one playbook would have done.
#[derive(Debug, Clone, Serialize)]
pub struct PlaybookReport {
    pub id: String,
    pub file: String,
    /// Alerts that matched its `on` (source, state, `when`).
    pub alerts_matched: u64,
    /// Alerts whose `when` failed to evaluate (the playbook would not have started for them).
    pub when_errors: u64,
    /// Runs it would have started: one per incident.
    pub runs: u64,
    /// Runs by the status they would have reached (`succeeded`, `failed`, `waiting`...).
    pub by_status: BTreeMap<String, u64>,
    /// Approvals reached, by step: how many runs reached each.
    pub approvals: BTreeMap<String, u64>,
    /// Side effects asked for, by action: how many times.
    pub side_effects: BTreeMap<String, u64>,
    /// Each run, by incident id.
    pub incidents: BTreeMap<String, IncidentRun>,
}

/// The run a playbook would have started on one incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRun {
    /// The alert that would have started it.
    pub alert_id: String,
    pub title: String,
    /// The status the run would have reached.
    pub status: String,
    /// Steps it would have taken (not skipped), in order, by address.
    pub steps: Vec<String>,
    /// Approval steps it reached (each taken as approved).
    pub approvals: Vec<String>,
    /// Side effects it would have asked for.
    pub side_effects: Vec<SideEffect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A side effect a run would have asked for.
#[derive(Debug, Clone, Serialize)]
pub struct SideEffect {
    pub step: String,
    pub action: String,
    pub inputs: Value,
}

/// Incidents gained and lost by a playbook given against the loaded one of the same id.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub playbook: String,
    /// No loaded playbook has this id: every incident is gained.
    pub new: bool,
    pub gained: Vec<String>,
    pub lost: Vec<String>,
}

/// What a backtest needs besides history.
pub struct Setup {
    pub scripts: Arc<Scripts>,
    pub catalog: SpecCatalog,
    /// Guardrails' protected resources (a side effect on one is refused in the report as live).
    pub guardrails: Arc<Guardrails>,
}

/// Replays the selected alerts through `given` and through `loaded`, and compares.
pub async fn backtest(
    history: &dyn History,
    selection: &Selection,
    given: &[Compiled],
    loaded: &[Compiled],
    setup: &Setup,
) -> Result<Report, String> {
    let alerts = history.alerts(selection).await?;
    let mut incidents = HashMap::new();
    let given_reports = replay(history, &alerts, given, setup, &mut incidents).await?;
    let ids: BTreeSet<&str> = given.iter().map(|p| p.spec.id.as_str()).collect();
    let comparable: Vec<Compiled> = loaded
        .iter()
        .filter(|p| ids.contains(p.spec.id.as_str()))
        .cloned()
        .collect();
    let loaded_reports = replay(history, &alerts, &comparable, setup, &mut incidents).await?;
    let differences = given_reports
        .iter()
        .map(|g| {
            let before = loaded_reports.iter().find(|l| l.id == g.id);
            let now: BTreeSet<&String> = g.incidents.keys().collect();
            let was: BTreeSet<&String> = before
                .map(|l| l.incidents.keys().collect())
                .unwrap_or_default();
            Difference {
                playbook: g.id.clone(),
                new: before.is_none(),
                gained: now.difference(&was).map(|s| (*s).clone()).collect(),
                lost: was.difference(&now).map(|s| (*s).clone()).collect(),
            }
        })
        .collect();
    Ok(Report {
        since: selection.since,
        alerts: alerts.len(),
        playbooks: given_reports,
        differences,
    })
}

/// The incidents read so far, with their alerts oldest first.
type Incidents = HashMap<String, Option<(Incident, Vec<Alert>)>>;

async fn replay(
    history: &dyn History,
    alerts: &[Alert],
    playbooks: &[Compiled],
    setup: &Setup,
    incidents: &mut Incidents,
) -> Result<Vec<PlaybookReport>, String> {
    let mut sorted: Vec<&Compiled> = playbooks.iter().collect();
    sorted.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let library = Arc::new(Only(
        playbooks
            .iter()
            .map(|p| (p.spec.id.clone(), Arc::new(p.clone())))
            .collect(),
    ));
    let mut reports: Vec<PlaybookReport> = sorted
        .iter()
        .map(|p| PlaybookReport {
            id: p.spec.id.clone(),
            file: p.file.display().to_string(),
            alerts_matched: 0,
            when_errors: 0,
            runs: 0,
            by_status: BTreeMap::new(),
            approvals: BTreeMap::new(),
            side_effects: BTreeMap::new(),
            incidents: BTreeMap::new(),
        })
        .collect();
    for alert in alerts {
        let candidates: Vec<usize> = sorted
            .iter()
            .enumerate()
            .filter(|(_, p)| p.listens_to(&alert.source) && p.takes_state(alert.state))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let data = data_at(history, alert, incidents).await?;
        for i in candidates {
            let playbook = sorted[i];
            let report = &mut reports[i];
            if let Some(when) = &playbook.when {
                let ctx = crate::script::Context {
                    alert: data.alert.clone(),
                    incident: data.incident.clone(),
                    ..Default::default()
                };
                match setup.scripts.eval_bool(when, &ctx) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => {
                        report.when_errors += 1;
                        continue;
                    }
                }
            }
            report.alerts_matched += 1;
            if report.incidents.contains_key(&alert.incident_id) {
                continue;
            }
            let ran = simulate(playbook, alert, &data, setup, library.clone()).await;
            report.runs += 1;
            *report.by_status.entry(ran.status.clone()).or_default() += 1;
            for step in &ran.approvals {
                *report.approvals.entry(step.clone()).or_default() += 1;
            }
            for effect in &ran.side_effects {
                *report
                    .side_effects
                    .entry(effect.action.clone())
                    .or_default() += 1;
            }
            report.incidents.insert(alert.incident_id.clone(), ran);
        }
    }
    Ok(reports)
}

/// The alert and its incident as expressions saw them when the alert arrived: the incident with
/// its alerts up to this one (as the engine's matcher builds it).
async fn data_at(
    history: &dyn History,
    alert: &Alert,
    incidents: &mut Incidents,
) -> Result<RunData, String> {
    if !incidents.contains_key(&alert.incident_id) {
        let mut found = history.incident(&alert.incident_id).await?;
        if let Some((_, alerts)) = &mut found {
            alerts.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
        }
        incidents.insert(alert.incident_id.clone(), found);
    }
    let mut data = RunData {
        alert: serde_json::to_value(alert).unwrap_or(Value::Null),
        incident: Value::Null,
    };
    if let Some(Some((incident, alerts))) = incidents.get(&alert.incident_id) {
        let mut value = serde_json::to_value(incident).unwrap_or(Value::Null);
        let summaries: Vec<Value> = alerts
            .iter()
            .filter(|a| (a.received_at, &a.id) <= (alert.received_at, &alert.id))
            .map(|a| json!({ "id": a.id, "source": a.source, "kind": a.kind, "title": a.title, "severity": a.severity.score, "state": a.state, "resource": a.resource, "actor": a.actor, "network": a.network, "repeat_count": a.repeat_count }))
            .collect();
        value["alerts"] = Value::Array(summaries);
        data.incident = value;
    }
    Ok(data)
}

struct Only(BTreeMap<String, Arc<Compiled>>);

impl Library for Only {
    fn playbook(&self, id: &str) -> Option<Arc<Compiled>> {
        self.0.get(id).cloned()
    }
}

/// Actions offline (see the module's table).
struct Offline {
    core: Builtins,
    catalog: SpecCatalog,
}

#[async_trait]
impl ActionRunner for Offline {
    fn spec(&self, name: &str) -> Option<ActionSpec> {
        self.catalog.0.get(name).cloned().or_else(|| {
            // An action no loaded integration describes is taken as a side effect: the backtest
            // shows it as asked for rather than calling anything.
            Some(ActionSpec::unknown_side_effect(name))
        })
    }

    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError> {
        match name {
            "core.log" | "core.sleep" => self.core.call(name, inputs, call).await,
            "core.set" => Ok(json!({ "key": inputs.get("key"), "value": inputs.get("value") })),
            _ => Ok(json!({ "offline": true })),
        }
    }
}

/// Runs `playbook` for `alert` in memory, in dry run, approvals taken as approved and time
/// virtual, until it ends or stops.
async fn simulate(
    playbook: &Compiled,
    alert: &Alert,
    data: &RunData,
    setup: &Setup,
    library: Arc<Only>,
) -> IncidentRun {
    let actions = Arc::new(Offline {
        core: Builtins::new(None, BTreeMap::new(), 0, None)
            .expect("with no host allowed, no HTTP client is built"),
        catalog: setup.catalog.clone(),
    });
    let executor = Executor {
        scripts: setup.scripts.clone(),
        actions,
        guardrails: setup.guardrails.clone(),
        library,
    };
    let now = alert.received_at;
    let mut run = Run::new(
        format!("backtest-{}-{}", playbook.spec.id, alert.id),
        &playbook.spec.id,
        Trigger {
            kind: "alert".into(),
            by: None,
            person: None,
        },
        Some(alert.incident_id.clone()),
        Some(alert.id.clone()),
        alert.incident_id.clone(),
        Value::Null,
        true,
        now,
    );
    let mut approvals = Vec::new();
    let mut memory = Memory::default();
    let error = match executor.start(playbook, &mut run, data).await {
        Err(e) => Some(e),
        Ok(()) => drive(
            &executor,
            playbook,
            &mut run,
            data,
            &mut memory,
            now,
            &mut approvals,
        )
        .await
        .err(),
    };
    let mut runs = vec![&run];
    runs.extend(memory.runs.values().filter(|r| r.id != run.id));
    let mut side_effects = Vec::new();
    for r in runs {
        for address in &r.order {
            if let Some(state) = r.steps.get(address)
                && state.dry_run
            {
                side_effects.push(SideEffect {
                    step: address.clone(),
                    action: state
                        .output
                        .get("action")
                        .and_then(Value::as_str)
                        .or(state.action.as_deref())
                        .unwrap_or_default()
                        .to_owned(),
                    inputs: state.output.get("inputs").cloned().unwrap_or(Value::Null),
                });
            }
        }
    }
    let steps = run
        .order
        .iter()
        .filter(|id| {
            run.steps
                .get(*id)
                .is_some_and(|s| s.status != StepStatus::Skipped)
        })
        .cloned()
        .collect();
    IncidentRun {
        alert_id: alert.id.clone(),
        title: alert.title.clone(),
        status: run.status.as_str().to_owned(),
        steps,
        approvals,
        side_effects,
        error: error.or(run.error.clone()),
    }
}

/// Advances `run` on virtual time until it ends, approving every approval it reaches and driving
/// the runs its `call` steps start.
async fn drive(
    executor: &Executor,
    playbook: &Compiled,
    run: &mut Run,
    data: &RunData,
    memory: &mut Memory,
    mut clock: DateTime<Utc>,
    approvals: &mut Vec<String>,
) -> Result<(), String> {
    // Bounded: a playbook that never settles is reported where it stopped.
    for _ in 0..1000 {
        let wake = match executor.advance(playbook, run, data, memory, clock).await? {
            Progress::Finished(_) | Progress::NeedsDecision(_) => return Ok(()),
            Progress::Waiting(wake) => wake,
        };
        if let Some((step, _)) = run.open_approval() {
            let step = step.to_owned();
            let state = run
                .steps
                .get_mut(&step)
                .and_then(|s| s.approval.as_mut())
                .ok_or("approval vanished")?;
            for i in 0..state.quorum.max(1) {
                state.decisions.push(Decision {
                    identity: format!("backtest:approver-{i}"),
                    person: Some(format!("backtest-approver-{i}")),
                    approve: true,
                    at: clock,
                    via: "backtest".into(),
                });
            }
            state.outcome = Some(true);
            approvals.push(step);
            continue;
        }
        let children: Vec<String> = run
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Waiting)
            .filter_map(|s| s.child.clone())
            .collect();
        let mut progressed = false;
        for child_id in children {
            let Some(mut child) = memory.runs.get(&child_id).cloned() else {
                continue;
            };
            if !child.status.is_finished() {
                let callee = executor
                    .library
                    .playbook(&child.playbook)
                    .ok_or_else(|| format!("no playbook `{}` to call", child.playbook))?;
                Box::pin(drive(
                    executor, &callee, &mut child, data, memory, clock, approvals,
                ))
                .await?;
                memory.runs.insert(child_id, child.clone());
            }
            progressed |= child.status.is_finished();
        }
        if progressed {
            continue;
        }
        clock = wake.unwrap_or(clock) + TimeDelta::milliseconds(1);
    }
    Ok(())
}
