//! Running a playbook's steps: one [`Executor`] serves the server's workers and `cordon test`.
//!
//! [`Executor::advance`] takes a run as far as it can go now: it runs steps in order, persisting the
//! run through [`Persist`] after every step (and before every side effect), and returns when the run
//! finishes or must wait (an approval, a durable sleep, a retry's backoff, a called run). Calling it
//! again later picks up where the record says. A side-effect step found `started` (the process died
//! while it ran) is retried when its action is idempotent and held as `needs_decision` when not:
//! never run twice in silence.
//!
//! Every step is a step, wherever it is written: the steps of a `foreach` item and of a `parallel`
//! branch are recorded in the run under their addresses ([`crate::model::run::Address`]:
//! `isolate[2]`, `contain.branch_1.isolate`), each retried, timed out, guarded, audited and made
//! idempotent as a top-level step is; a `foreach` evaluates its items once and keeps them, so a
//! resumed run walks the same list. A `call` step starts a child run that is stored and advanced on
//! its own (it may wait for approvals and timers) and waits for it; the child's end wakes the
//! parent (see the engine service).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::run::{ApprovalState, Run, RunStatus, StepState, StepStatus, idempotency_key};
/// The action contract and the guardrails, also named here where the integrations, the server's
/// wiring and the tests have always found them.
pub use crate::actions::{ActionCall, ActionError, ActionRunner, Guardrails, glob};
use crate::model::event::{
    ApprovalRequested, ApprovalTimedOut, Detail, EventKind, EvidenceCollected, RunState,
    StepFinished, StepStarted,
};
use crate::playbook::{Compiled, CompiledStep, OnError, StepKind};
use crate::script::{Context, Expr, ScriptError, Scripts};

/// One audit-worthy thing that happened in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub step: Option<String>,
    pub actor: Option<String>,
    /// As stored; shaped by the kind (see [`Detail`]).
    pub detail: Value,
}

impl Event {
    /// An event of a kind whose detail nobody reads field by field.
    pub fn new(kind: EventKind, step: Option<&str>, detail: Value) -> Event {
        Event {
            kind,
            step: step.map(str::to_owned),
            actor: None,
            detail,
        }
    }

    /// An event with a typed detail, which names its kind.
    pub fn of(detail: Detail, step: Option<&str>) -> Event {
        let (kind, detail) = detail.into_parts();
        Event::new(kind, step, detail)
    }

    /// The event as done by `actor`: the audit entry's actor is the identity they used, and its
    /// detail names the person (`"person": "alice"`).
    pub fn by(mut self, actor: &crate::model::people::Actor) -> Event {
        self.actor = Some(actor.identity.clone());
        self.detail = with_person(self.detail, &actor.person);
        self
    }
}

/// `detail` with `"person": person` added (an object is made of `null`).
pub fn with_person(detail: Value, person: &str) -> Value {
    match detail {
        Value::Object(mut map) => {
            map.insert("person".into(), Value::String(person.to_owned()));
            Value::Object(map)
        }
        Value::Null => json!({ "person": person }),
        other => json!({ "person": person, "value": other }),
    }
}

/// Where runs are kept between steps.
#[async_trait]
pub trait Persist: Send {
    /// A run by id: the child runs of `call` steps.
    async fn load(&mut self, id: &str) -> Result<Option<Run>, crate::store::StoreError>;

    /// Stores a new child run of a `call` step, to be advanced on its own.
    async fn create(
        &mut self,
        run: &Run,
        events: Vec<Event>,
    ) -> Result<(), crate::store::StoreError>;

    /// Stores the run with the events that led to this state; with `durable`, fsynced before it
    /// returns. The executor writes before and after every side effect, when a run waits, holds
    /// or finishes, always durably; the states between pure steps (scripts, logs) are not written
    /// on their own but with the next write, since repeating a pure step after a crash changes
    /// nothing outside.
    async fn save(
        &mut self,
        run: &Run,
        events: Vec<Event>,
        durable: bool,
    ) -> Result<(), crate::store::StoreError>;
}

/// The executor's words for a run it could not save (its errors are text for the run's record).
fn save_failed(e: crate::store::StoreError) -> String {
    e.to_string()
}

/// Finds playbooks for `call` steps.
pub trait Library: Send + Sync {
    fn playbook(&self, id: &str) -> Option<Arc<Compiled>>;
}

/// What a run reads besides its own record.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub alert: Value,
    pub incident: Value,
}

/// Runs steps.
pub struct Executor {
    pub scripts: Arc<Scripts>,
    pub actions: Arc<dyn ActionRunner>,
    pub guardrails: Arc<Guardrails>,
    pub library: Arc<dyn Library>,
}

/// How far one call of [`Executor::advance`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Finished(RunStatus),
    /// Waiting for a decision or a time; wake at the time, if any.
    Waiting(Option<DateTime<Utc>>),
    NeedsDecision(String),
}

/// How often a parent waiting for its called run looks at it by itself; the child's end wakes it
/// at once, this only covers a process that stopped between the two.
const CHILD_POLL: TimeDelta = TimeDelta::seconds(30);

enum StepOutcome {
    Done(StepState),
    Wait(StepState),
    Hold(StepState),
    /// A container whose nested steps wait or are held: its own state stays as it is.
    Nested(Flow),
}

/// How a list of steps (the playbook's, a foreach item's, a branch's) stands.
#[derive(Debug, Clone, PartialEq)]
enum Flow {
    /// Every step finished (a failed one with `on_error: continue` included).
    Done,
    /// A step failed and the list stops here.
    Failed(Option<String>),
    /// Some step waits.
    Wait,
    /// A step is held for a person; `fresh` when it was held just now.
    Hold { step: String, fresh: bool },
}

/// Where a list of steps runs: the top level, a foreach item, a parallel branch.
#[derive(Debug, Clone, Default)]
struct Frame {
    /// The parallel branches around it, with the trailing dot: `contain.branch_1.`.
    path: String,
    /// The foreach item indices around it: `[2]`.
    indices: String,
    /// The innermost foreach item's name and value.
    item: Option<(String, Value)>,
}

impl Frame {
    fn address(&self, id: &str) -> String {
        format!("{}{id}{}", self.path, self.indices)
    }

    fn is_top(&self) -> bool {
        self.path.is_empty() && self.indices.is_empty()
    }

    fn item(&self, name: &str, value: Value, index: usize) -> Frame {
        Frame {
            path: self.path.clone(),
            indices: format!("{}[{index}]", self.indices),
            item: Some((name.to_owned(), value)),
        }
    }

    fn branch(&self, parallel: &str, index: usize) -> Frame {
        Frame {
            path: format!("{}{parallel}.branch_{}.", self.path, index + 1),
            indices: self.indices.clone(),
            item: self.item.clone(),
        }
    }
}

/// The run while it advances, shared by the branches and items that run side by side: each takes
/// it to read the context, record a step and save; none holds it across an action's call.
struct Live<'a> {
    run: &'a mut Run,
    events: Vec<Event>,
    store: &'a mut dyn Persist,
}

impl Live<'_> {
    /// Saves the run with the events gathered so far.
    async fn save(&mut self, durable: bool) -> Result<(), String> {
        let events = std::mem::take(&mut self.events);
        self.store
            .save(self.run, events, durable)
            .await
            .map_err(save_failed)
    }
}

type Cell<'a> = tokio::sync::Mutex<Live<'a>>;

impl Executor {
    fn context(run: &Run, data: &RunData) -> Context {
        Executor::context_in(run, data, &Frame::default())
    }

    fn context_in(run: &Run, data: &RunData, frame: &Frame) -> Context {
        Context {
            alert: data.alert.clone(),
            incident: data.incident.clone(),
            steps: run.steps_view_at(&frame.indices),
            vars: run.vars.clone(),
            inputs: run.inputs.clone(),
            item: frame.item.clone(),
        }
    }

    async fn context_of(cell: &Cell<'_>, data: &RunData, frame: &Frame) -> Arc<Context> {
        let live = cell.lock().await;
        Arc::new(Executor::context_in(live.run, data, frame))
    }

    /// Evaluations of straight-line expressions run on the calling task (a thread hop costs more
    /// than they do); the others on a blocking thread, where a long script stalls nothing else.
    async fn eval(&self, expr: &Expr, ctx: Arc<Context>) -> Result<Value, ScriptError> {
        if expr.is_straight() {
            return self.scripts.eval(expr, &ctx);
        }
        let (scripts, expr) = (self.scripts.clone(), expr.clone());
        tokio::task::spawn_blocking(move || scripts.eval(&expr, &ctx))
            .await
            .unwrap_or_else(|_| Err(worker_failed()))
    }

    async fn eval_bool(&self, expr: &Expr, ctx: Arc<Context>) -> Result<bool, ScriptError> {
        if expr.is_straight() {
            return self.scripts.eval_bool(expr, &ctx);
        }
        let (scripts, expr) = (self.scripts.clone(), expr.clone());
        tokio::task::spawn_blocking(move || scripts.eval_bool(&expr, &ctx))
            .await
            .unwrap_or_else(|_| Err(worker_failed()))
    }

    async fn render(
        &self,
        value: &crate::script::CompiledValue,
        ctx: Arc<Context>,
    ) -> Result<Value, ScriptError> {
        if value.is_straight() {
            return value.render(&self.scripts, &ctx);
        }
        let (scripts, value) = (self.scripts.clone(), value.clone());
        tokio::task::spawn_blocking(move || value.render(&scripts, &ctx))
            .await
            .unwrap_or_else(|_| Err(worker_failed()))
    }

    /// Renders `inputs` in `ctx`; the first failure names its key.
    async fn render_all(
        &self,
        inputs: &BTreeMap<String, crate::script::CompiledValue>,
        ctx: &Arc<Context>,
        what: &str,
    ) -> Result<Value, String> {
        let mut rendered = serde_json::Map::new();
        for (key, value) in inputs {
            let v = self
                .render(value, ctx.clone())
                .await
                .map_err(|e| format!("{what}.{key}: {}", script_message(&e)))?;
            rendered.insert(key.clone(), v);
        }
        Ok(Value::Object(rendered))
    }

    /// Renders the playbook's `vars` into a new run (at creation).
    pub async fn start(
        &self,
        playbook: &Compiled,
        run: &mut Run,
        data: &RunData,
    ) -> Result<(), String> {
        let mut vars = serde_json::Map::new();
        for (name, value) in &playbook.vars {
            let ctx = Arc::new(Executor::context(run, data));
            let rendered = self
                .render(value, ctx)
                .await
                .map_err(|e| format!("vars.{name}: {e}"))?;
            vars.insert(name.clone(), rendered);
        }
        run.vars = Value::Object(vars);
        run.dry_run |= playbook.spec.dry_run;
        Ok(())
    }

    /// Takes `run` as far as it can go at `now`.
    pub async fn advance(
        &self,
        playbook: &Compiled,
        run: &mut Run,
        data: &RunData,
        store: &mut dyn Persist,
        now: DateTime<Utc>,
    ) -> Result<Progress, String> {
        if run.status.is_finished() {
            return Ok(Progress::Finished(run.status));
        }
        let mut events = Vec::new();
        for step in super::approval::expire(run, now) {
            events.push(Event::of(
                Detail::ApprovalTimedOut(ApprovalTimedOut {
                    outcome: run.steps[&step].approval.as_ref().and_then(|a| a.outcome),
                }),
                Some(&step),
            ));
        }
        if run.status != RunStatus::Running {
            events.push(Event::of(
                Detail::RunState(RunState::moved(run.status, RunStatus::Running)),
                None,
            ));
            run.status = RunStatus::Running;
        }
        let cell = tokio::sync::Mutex::new(Live { run, events, store });
        let flow = self
            .block(
                playbook,
                &playbook.steps,
                &Frame::default(),
                &cell,
                data,
                now,
            )
            .await?;
        let Live {
            run,
            mut events,
            store,
        } = cell.into_inner();
        match flow {
            Flow::Done => {
                self.finish(
                    playbook,
                    run,
                    data,
                    store,
                    events,
                    RunStatus::Succeeded,
                    None,
                )
                .await
            }
            Flow::Failed(error) => {
                self.finish(playbook, run, data, store, events, RunStatus::Failed, error)
                    .await
            }
            Flow::Wait => {
                events.push(Event::of(
                    Detail::RunState(RunState::moved(RunStatus::Running, RunStatus::Waiting)),
                    None,
                ));
                run.status = RunStatus::Waiting;
                run.updated_at = now;
                store.save(run, events, true).await.map_err(save_failed)?;
                Ok(Progress::Waiting(run.wake_at()))
            }
            Flow::Hold { step, fresh } => {
                if fresh {
                    events.push(Event::of(
                        Detail::RunState(RunState {
                            step: Some(step.clone()),
                            ..RunState::moved(RunStatus::Running, RunStatus::NeedsDecision)
                        }),
                        None,
                    ));
                    run.updated_at = now;
                }
                run.status = RunStatus::NeedsDecision;
                store.save(run, events, true).await.map_err(save_failed)?;
                Ok(Progress::NeedsDecision(step))
            }
        }
    }

    /// Runs `steps` in order in `frame`, as far as they go now.
    async fn block(
        &self,
        playbook: &Compiled,
        steps: &[CompiledStep],
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        now: DateTime<Utc>,
    ) -> Result<Flow, String> {
        for (index, step) in steps.iter().enumerate() {
            match self.step(playbook, step, frame, cell, data, now).await? {
                Flow::Done => {
                    if frame.is_top() {
                        cell.lock().await.run.cursor = index + 1;
                    }
                }
                other => return Ok(other),
            }
        }
        Ok(Flow::Done)
    }

    /// Takes one step as far as it goes now.
    async fn step(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        now: DateTime<Utc>,
    ) -> Result<Flow, String> {
        let address = frame.address(&step.id);
        let existing = cell.lock().await.run.steps.get(&address).cloned();
        let outcome = match existing {
            Some(s) if matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped) => {
                return Ok(Flow::Done);
            }
            Some(s) if s.status == StepStatus::Failed => {
                return Ok(match step.on_error {
                    OnError::Continue => Flow::Done,
                    OnError::Fail => Flow::Failed(failure(frame, &address, s.error)),
                });
            }
            Some(s) if s.status == StepStatus::NeedsDecision => {
                return Ok(Flow::Hold {
                    step: address,
                    fresh: false,
                });
            }
            Some(s) => {
                self.resume_step(playbook, step, &address, frame, cell, data, s, now)
                    .await?
            }
            None => {
                self.start_step(playbook, step, &address, frame, cell, data, now)
                    .await?
            }
        };
        let mut live = cell.lock().await;
        match outcome {
            StepOutcome::Done(state) => {
                let failed = state.status == StepStatus::Failed;
                let error = state.error.clone();
                let finished = StepFinished {
                    status: state.status,
                    attempts: state.attempts,
                    error: state.error.clone(),
                    dry_run: state.dry_run,
                };
                live.events.push(Event::of(
                    if state.status == StepStatus::Skipped {
                        Detail::StepSkipped(finished)
                    } else {
                        Detail::StepFinished(finished)
                    },
                    Some(&address),
                ));
                // Evidence an action collected is written to the audit log, a record each.
                if let Some(records) = state.output.get("evidence").and_then(Value::as_array) {
                    for record in records {
                        live.events.push(Event::of(
                            Detail::EvidenceCollected(EvidenceCollected(record.clone())),
                            Some(&address),
                        ));
                    }
                }
                record(live.run, &address, state);
                live.run.updated_at = now;
                // After a side effect the record must be durable, or a crash would make the
                // finished call look like one that may still be running.
                let durable = match &step.kind {
                    StepKind::Action { name, .. } => {
                        self.actions.spec(name).is_none_or(|s| s.side_effect)
                    }
                    StepKind::Script(_) => false,
                    _ => true,
                };
                if failed && step.on_error == OnError::Fail {
                    // The run (or the container) records the failure; the top level saves it.
                    if !frame.is_top() && durable {
                        live.save(true).await?;
                    }
                    return Ok(Flow::Failed(failure(frame, &address, error)));
                }
                // A pure step's result is written with the next write the run needs (before a
                // side effect, a wait, the end): repeating a pure step after a crash changes
                // nothing outside, and a run of pure steps costs one write instead of one each.
                if durable {
                    live.save(true).await?;
                }
                Ok(Flow::Done)
            }
            StepOutcome::Wait(state) => {
                record(live.run, &address, state);
                live.run.updated_at = now;
                Ok(Flow::Wait)
            }
            StepOutcome::Hold(state) => {
                record(live.run, &address, state);
                live.run.updated_at = now;
                Ok(Flow::Hold {
                    step: address,
                    fresh: true,
                })
            }
            StepOutcome::Nested(flow) => Ok(flow),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        playbook: &Compiled,
        run: &mut Run,
        data: &RunData,
        store: &mut dyn Persist,
        mut events: Vec<Event>,
        mut status: RunStatus,
        mut error: Option<String>,
    ) -> Result<Progress, String> {
        if status == RunStatus::Succeeded {
            let mut outputs = serde_json::Map::new();
            for (name, value) in &playbook.outputs {
                match self
                    .render(value, Arc::new(Executor::context(run, data)))
                    .await
                {
                    Ok(v) => {
                        outputs.insert(name.clone(), v);
                    }
                    Err(e) => {
                        status = RunStatus::Failed;
                        error = Some(format!("outputs.{name}: {e}"));
                        break;
                    }
                }
            }
            run.outputs = Value::Object(outputs);
        }
        // The shape of `RunState`, with `error` written also when it is `null`, as a finish always
        // has been.
        events.push(Event::new(
            EventKind::RunState,
            None,
            json!({ "from": run.status, "to": status, "error": error }),
        ));
        run.status = status;
        run.error = error;
        let now = Utc::now();
        run.finished_at = Some(now);
        run.updated_at = now;
        store.save(run, events, true).await.map_err(save_failed)?;
        Ok(Progress::Finished(status))
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_step(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        address: &str,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        if let Some(condition) = &step.condition {
            let ctx = Executor::context_of(cell, data, frame).await;
            match self.eval_bool(condition, ctx).await {
                Ok(true) => {}
                Ok(false) => return Ok(StepOutcome::Done(StepState::new(StepStatus::Skipped))),
                Err(e) => {
                    return Ok(StepOutcome::Done(failed(
                        StepState::new(StepStatus::Failed),
                        format!("`if`: {e}"),
                        now,
                    )));
                }
            }
        }
        let mut state = StepState::new(StepStatus::Started);
        state.started_at = Some(now);
        match &step.kind {
            StepKind::Approval { prompt, spec } => {
                let ctx = Executor::context_of(cell, data, frame).await;
                let prompt = match prompt.render(&self.scripts, &ctx) {
                    Ok(Value::String(s)) => s,
                    Ok(other) => other.to_string(),
                    Err(e) => {
                        return Ok(StepOutcome::Done(failed(
                            state,
                            format!("approval prompt: {e}"),
                            now,
                        )));
                    }
                };
                state.status = StepStatus::Waiting;
                let plan = {
                    let live = cell.lock().await;
                    let run: &Run = live.run;
                    self.plan(playbook, step, run, data).await
                };
                state.approval = Some(ApprovalState {
                    prompt: prompt.clone(),
                    group: spec.approvers.clone(),
                    quorum: spec.quorum.max(1),
                    timeout_at: now + TimeDelta::from_std(spec.timeout.0).unwrap_or(TimeDelta::MAX),
                    on_timeout_approve: spec.on_timeout
                        == crate::playbook::TimeoutDecision::Approve,
                    decisions: Vec::new(),
                    outcome: None,
                    plan,
                });
                cell.lock().await.events.push(Event::of(
                    Detail::ApprovalRequested(ApprovalRequested {
                        prompt: prompt.clone(),
                        group: spec.approvers.clone(),
                        quorum: spec.quorum,
                        timeout: spec.timeout.to_string(),
                    }),
                    Some(address),
                ));
                Ok(StepOutcome::Wait(state))
            }
            StepKind::Foreach { items, name, .. } => {
                let ctx = Executor::context_of(cell, data, frame).await;
                let list = match self.eval(items, ctx).await {
                    Ok(Value::Array(list)) => list,
                    Ok(other) => {
                        return Ok(StepOutcome::Done(failed(
                            state,
                            format!(
                                "foreach items must be a list, got {}",
                                crate::script::describe(&other)
                            ),
                            now,
                        )));
                    }
                    Err(e) => return Ok(StepOutcome::Done(failed(state, script_message(&e), now))),
                };
                // The items are evaluated once and kept: a resumed run walks the same list.
                state.inputs = json!({ "items": list, "name": name });
                record(cell.lock().await.run, address, state.clone());
                self.container(playbook, step, address, frame, cell, data, state, now)
                    .await
            }
            StepKind::Parallel(_) => {
                record(cell.lock().await.run, address, state.clone());
                self.container(playbook, step, address, frame, cell, data, state, now)
                    .await
            }
            StepKind::Call {
                playbook: callee,
                inputs,
            } => {
                self.start_call(address, frame, cell, data, callee, inputs, state, now)
                    .await
            }
            StepKind::Script(_) | StepKind::Action { .. } => {
                self.attempt(
                    playbook, step, address, frame, cell, data, state, now, false,
                )
                .await
            }
        }
    }

    /// What the action steps after approval `step` (up to the next approval) will do, with their
    /// inputs rendered as they stand now; inputs that depend on what is not known yet are left out.
    async fn plan(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        run: &Run,
        data: &RunData,
    ) -> Vec<Value> {
        let Some(at) = playbook.steps.iter().position(|s| s.id == step.id) else {
            return Vec::new();
        };
        let mut plan = Vec::new();
        for next in &playbook.steps[at + 1..] {
            match &next.kind {
                StepKind::Approval { .. } => break,
                StepKind::Action { name, inputs } => {
                    let mut rendered = serde_json::Map::new();
                    for (key, value) in inputs {
                        if let Ok(v) = self
                            .render(value, Arc::new(Executor::context(run, data)))
                            .await
                        {
                            rendered.insert(key.clone(), v);
                        }
                    }
                    let rendered = Value::Object(rendered);
                    let spec = self.actions.spec(name);
                    let side_effect = spec.as_ref().is_none_or(|s| s.side_effect);
                    let mut entry = json!({ "step": next.id, "action": name, "inputs": rendered });
                    if side_effect
                        && let Some((value, pattern)) = self
                            .guardrails
                            .protected_hit(&entry["inputs"], spec.as_ref())
                    {
                        entry["note"] = json!(format!(
                            "`{value}` is protected (guardrail `{pattern}`): this step will be refused"
                        ));
                    }
                    plan.push(entry);
                }
                _ => {}
            }
        }
        plan
    }

    #[allow(clippy::too_many_arguments)]
    async fn resume_step(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        address: &str,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        state: StepState,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        if let Some(child) = state.child.clone() {
            return self.resume_call(step, cell, state, &child, now).await;
        }
        if matches!(step.kind, StepKind::Foreach { .. } | StepKind::Parallel(_)) {
            // A container in progress: its nested steps say where it stands.
            return self
                .container(playbook, step, address, frame, cell, data, state, now)
                .await;
        }
        match state.status {
            StepStatus::Waiting => {
                if let Some(approval) = &state.approval {
                    match approval.outcome {
                        None => return Ok(StepOutcome::Wait(state)),
                        Some(approved) => {
                            let mut state = state.clone();
                            if let StepKind::Action { .. } = step.kind {
                                // A call held by the blast radius: approved runs it, denied fails it.
                                if !approved {
                                    return Ok(StepOutcome::Done(failed(
                                        state,
                                        "the call over the blast radius was not approved".into(),
                                        now,
                                    )));
                                }
                                state.status = StepStatus::Started;
                                return self
                                    .attempt(
                                        playbook, step, address, frame, cell, data, state, now,
                                        true,
                                    )
                                    .await;
                            }
                            state.status = StepStatus::Succeeded;
                            state.output = json!({ "approved": approved });
                            state.finished_at = Some(now);
                            cell.lock().await.events.push(Event::new(
                                EventKind::ApprovalClosed,
                                Some(address),
                                json!({ "approved": approved }),
                            ));
                            return Ok(StepOutcome::Done(state));
                        }
                    }
                }
                // A durable sleep.
                if state.due_at.is_some_and(|due| due > now) {
                    return Ok(StepOutcome::Wait(state));
                }
                let mut state = state;
                state.status = StepStatus::Succeeded;
                state.finished_at = Some(now);
                Ok(StepOutcome::Done(state))
            }
            StepStatus::Retrying => {
                if state.due_at.is_some_and(|due| due > now) {
                    return Ok(StepOutcome::Wait(state));
                }
                self.attempt(
                    playbook, step, address, frame, cell, data, state, now, false,
                )
                .await
            }
            StepStatus::Started => {
                // The process stopped while this step ran.
                let dry_run = cell.lock().await.run.dry_run;
                if let StepKind::Action { name, .. } = &step.kind {
                    let spec = self.actions.spec(name);
                    let side_effect = spec.as_ref().is_none_or(|s| s.side_effect);
                    let idempotent = self.actions.idempotent(name, &state.inputs);
                    if side_effect && !idempotent && !dry_run {
                        let mut state = state;
                        state.status = StepStatus::NeedsDecision;
                        state.error = Some(format!(
                            "`{name}` may have run when the process stopped; it is not idempotent, so a person must retry or skip it"
                        ));
                        cell.lock().await.events.push(Event::new(
                            EventKind::StepNeedsDecision,
                            Some(address),
                            json!({ "action": name }),
                        ));
                        return Ok(StepOutcome::Hold(state));
                    }
                }
                cell.lock().await.events.push(Event::new(
                    EventKind::StepResumed,
                    Some(address),
                    json!({ "attempts": state.attempts }),
                ));
                self.attempt(
                    playbook, step, address, frame, cell, data, state, now, false,
                )
                .await
            }
            _ => Ok(StepOutcome::Done(state)),
        }
    }

    /// A `foreach` or `parallel` step: runs its item or branch step lists side by side (a foreach
    /// at most `concurrency` items at a time) as far as they go, and finishes when all have.
    #[allow(clippy::too_many_arguments)]
    async fn container(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        address: &str,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        mut state: StepState,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        // A container's `timeout` bounds it as a whole, from its start, across restarts.
        let deadline = step.timeout.map(|limit| {
            let started = state.started_at.unwrap_or(now);
            (
                started + TimeDelta::from_std(limit).unwrap_or(TimeDelta::MAX),
                limit,
            )
        });
        let timed_out = |limit| {
            format!(
                "`{}` did not finish within {}",
                step.id,
                crate::config::HumanDuration(limit)
            )
        };
        if let Some((at, limit)) = deadline
            && at <= now
        {
            return Ok(StepOutcome::Done(failed(state, timed_out(limit), now)));
        }
        // Each list with its frame, and the step ids whose results make its part of the output.
        let lists: Vec<(Frame, &[CompiledStep])> = match &step.kind {
            StepKind::Foreach { name, steps, .. } => {
                let items = state.inputs["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (frame.item(name, item, i), steps.as_slice()))
                    .collect()
            }
            StepKind::Parallel(branches) => branches
                .iter()
                .enumerate()
                .map(|(i, steps)| (frame.branch(&step.id, i), steps.as_slice()))
                .collect(),
            _ => return Err(format!("step `{address}` is not a foreach or parallel")),
        };
        let concurrency = match &step.kind {
            StepKind::Foreach { concurrency, .. } => (*concurrency).max(1) as usize,
            _ => lists.len().max(1),
        };
        // At most `concurrency` lists in progress: one that waits (a retry's backoff, a held
        // call) keeps its place, so a foreach of one at a time stays one at a time.
        let walk = async {
            use futures_util::StreamExt;
            let mut next = lists.iter().enumerate();
            let mut going = futures_util::stream::FuturesUnordered::new();
            let mut flows: Vec<Option<Result<Flow, String>>> = vec![None; lists.len()];
            let mut free = concurrency;
            loop {
                while free > 0
                    && let Some((i, (inner, steps))) = next.next()
                {
                    free -= 1;
                    going.push(async move {
                        let flow =
                            Box::pin(self.block(playbook, steps, inner, cell, data, now)).await;
                        (i, flow)
                    });
                }
                let Some((i, flow)) = going.next().await else {
                    break;
                };
                if matches!(flow, Ok(Flow::Done) | Ok(Flow::Failed(_))) {
                    free += 1;
                }
                flows[i] = Some(flow);
            }
            // Lists that did not start wait for a place.
            flows
                .into_iter()
                .map(|f| f.unwrap_or(Ok(Flow::Wait)))
                .collect::<Vec<_>>()
        };
        let flows = match deadline {
            Some((at, limit)) => {
                let left = (at - now).to_std().unwrap_or_default();
                match tokio::time::timeout(left, walk).await {
                    Ok(flows) => flows,
                    Err(_) => return Ok(StepOutcome::Done(failed(state, timed_out(limit), now))),
                }
            }
            None => walk.await,
        };
        let mut waiting = false;
        let mut held = None;
        let mut failure = None;
        for flow in flows {
            match flow? {
                Flow::Done => {}
                Flow::Wait => waiting = true,
                Flow::Hold { step, fresh } => {
                    held.get_or_insert(Flow::Hold { step, fresh });
                }
                Flow::Failed(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Ok(StepOutcome::Done(failed(
                state,
                error.unwrap_or_else(|| "a nested step failed".into()),
                Utc::now(),
            )));
        }
        if let Some(hold) = held {
            return Ok(StepOutcome::Nested(hold));
        }
        if waiting {
            return Ok(StepOutcome::Nested(Flow::Wait));
        }
        // Done: the output is each list's steps by id, as expressions read them.
        let live = cell.lock().await;
        let outputs: Vec<Value> = lists
            .iter()
            .map(|(inner, steps)| {
                Value::Object(
                    steps
                        .iter()
                        .filter_map(|s| {
                            let state = live.run.steps.get(&inner.address(&s.id))?;
                            Some((s.id.clone(), state.view()))
                        })
                        .collect(),
                )
            })
            .collect();
        state.status = StepStatus::Succeeded;
        state.attempts = state.attempts.max(1);
        state.output = Value::Array(outputs);
        state.finished_at = Some(Utc::now());
        Ok(StepOutcome::Done(state))
    }

    /// A `call` step: starts the child run (once: a child left by a process that stopped is
    /// taken up) and waits for it.
    #[allow(clippy::too_many_arguments)]
    async fn start_call(
        &self,
        address: &str,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        callee_id: &str,
        inputs: &BTreeMap<String, crate::script::CompiledValue>,
        mut state: StepState,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        let Some(callee) = self.library.playbook(callee_id) else {
            return Ok(StepOutcome::Done(failed(
                state,
                format!("no playbook `{callee_id}` to call"),
                now,
            )));
        };
        let ctx = Executor::context_of(cell, data, frame).await;
        let rendered = match self.render_all(inputs, &ctx, "call.inputs").await {
            Ok(rendered) => rendered,
            Err(error) => return Ok(StepOutcome::Done(failed(state, error, now))),
        };
        let mut live = cell.lock().await;
        let parent = &*live.run;
        let child_id = child_run_id(&parent.id, address);
        state.attempts = 1;
        state.child = Some(child_id.clone());
        state.status = StepStatus::Waiting;
        state.due_at = Some(now + CHILD_POLL);
        let existing = live.store.load(&child_id).await.map_err(save_failed)?;
        if existing.is_none() {
            let parent = &*live.run;
            let mut child = Run::new(
                child_id.clone(),
                callee_id,
                super::run::Trigger {
                    kind: "call".into(),
                    by: parent.trigger.by.clone(),
                    person: parent.trigger.person.clone(),
                },
                parent.incident_id.clone(),
                parent.alert_id.clone(),
                child_id.clone(),
                rendered,
                parent.dry_run,
                now,
            );
            child.parent = Some(super::run::Parent {
                run: parent.id.clone(),
                step: address.to_owned(),
            });
            if let Err(error) = self.start(&callee, &mut child, data).await {
                return Ok(StepOutcome::Done(failed(
                    state,
                    format!("called playbook `{callee_id}`: {error}"),
                    now,
                )));
            }
            let created = Event::new(
                EventKind::RunCreated,
                None,
                json!({ "playbook": child.playbook, "trigger": child.trigger, "alert": child.alert_id, "incident": child.incident_id, "dry_run": child.dry_run, "parent": child.parent }),
            );
            live.store
                .create(&child, vec![created])
                .await
                .map_err(save_failed)?;
        }
        live.events.push(Event::new(
            EventKind::StepCalled,
            Some(address),
            json!({ "playbook": callee_id, "child": child_id }),
        ));
        drop(live);
        Ok(StepOutcome::Wait(state))
    }

    /// A `call` step waiting for its child run: done when the child is.
    async fn resume_call(
        &self,
        step: &CompiledStep,
        cell: &Cell<'_>,
        mut state: StepState,
        child_id: &str,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        let child = cell
            .lock()
            .await
            .store
            .load(child_id)
            .await
            .map_err(save_failed)?;
        let callee = match &step.kind {
            StepKind::Call { playbook, .. } => playbook.as_str(),
            _ => "?",
        };
        let Some(child) = child else {
            return Ok(StepOutcome::Done(failed(
                state,
                format!("the run `{child_id}` of called playbook `{callee}` is gone"),
                now,
            )));
        };
        match child.status {
            RunStatus::Succeeded => {
                state.status = StepStatus::Succeeded;
                state.output = child.outputs;
                state.error = None;
                state.due_at = None;
                state.finished_at = Some(now);
                Ok(StepOutcome::Done(state))
            }
            RunStatus::Failed | RunStatus::Cancelled => {
                let why = child.error.unwrap_or_else(|| child.status.to_string());
                state.due_at = None;
                Ok(StepOutcome::Done(failed(
                    state,
                    format!(
                        "called playbook `{callee}` (run `{child_id}`) {}: {why}",
                        child.status
                    ),
                    now,
                )))
            }
            _ => {
                state.status = StepStatus::Waiting;
                state.due_at = Some(now + CHILD_POLL);
                Ok(StepOutcome::Wait(state))
            }
        }
    }

    /// One attempt of a script or action step.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        address: &str,
        frame: &Frame,
        cell: &Cell<'_>,
        data: &RunData,
        mut state: StepState,
        now: DateTime<Utc>,
        approved_over_limit: bool,
    ) -> Result<StepOutcome, String> {
        state.attempts += 1;
        state.started_at.get_or_insert(now);
        let ctx = Executor::context_of(cell, data, frame).await;
        let result: Result<Value, ActionError> = match &step.kind {
            StepKind::Script(expr) => self
                .eval(expr, ctx)
                .await
                .map_err(|e| ActionError::permanent(script_message(&e))),
            StepKind::Action { name, inputs } => {
                match self.render_all(inputs, &ctx, "with").await {
                    Err(e) => Err(ActionError::permanent(e)),
                    Ok(inputs) => {
                        match self
                            .call_action(
                                playbook,
                                step,
                                address,
                                name,
                                inputs,
                                cell,
                                &mut state,
                                now,
                                approved_over_limit,
                            )
                            .await?
                        {
                            Called::Result(r) => r,
                            Called::Hold(state) => return Ok(StepOutcome::Wait(*state)),
                        }
                    }
                }
            }
            _ => Err(ActionError::permanent(format!(
                "step `{address}` is not attempted as a script or an action"
            ))),
        };
        match result {
            Ok(output) => {
                state.status = StepStatus::Succeeded;
                state.output = output;
                state.error = None;
                state.due_at = None;
                state.finished_at = Some(Utc::now());
                // core.sleep waits durably: the step completes when its time comes.
                if let StepKind::Action { name, .. } = &step.kind
                    && name == "core.sleep"
                    && let Some(ms) = state.output.get("sleep_ms").and_then(Value::as_u64)
                    && !cell.lock().await.run.dry_run
                {
                    state.status = StepStatus::Waiting;
                    state.due_at = Some(now + TimeDelta::milliseconds(ms as i64));
                    state.finished_at = None;
                    return Ok(StepOutcome::Wait(state));
                }
                Ok(StepOutcome::Done(state))
            }
            Err(error) => {
                let retry = step.retry.as_ref();
                let attempts = retry.map(|r| r.attempts.max(1)).unwrap_or(1);
                if error.retryable && state.attempts < attempts {
                    let retry = retry.expect("attempts > 1 means a retry policy");
                    let factor = 2u32.saturating_pow(state.attempts.saturating_sub(1));
                    let delay = retry
                        .backoff
                        .0
                        .saturating_mul(factor)
                        .min(retry.max_delay.0);
                    state.status = StepStatus::Retrying;
                    state.error = Some(error.message.clone());
                    state.due_at = Some(now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX));
                    cell.lock().await.events.push(Event::new(EventKind::StepRetrying, Some(address), json!({ "attempt": state.attempts, "error": error.message, "delay": crate::config::HumanDuration(delay).to_string() })));
                    return Ok(StepOutcome::Wait(state));
                }
                Ok(StepOutcome::Done(failed(state, error.message, Utc::now())))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_action(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        address: &str,
        name: &str,
        inputs: Value,
        cell: &Cell<'_>,
        state: &mut StepState,
        now: DateTime<Utc>,
        approved_over_limit: bool,
    ) -> Result<Called, String> {
        let Some(spec) = self.actions.spec(name) else {
            return Ok(Called::Result(Err(ActionError::permanent(format!(
                "unknown action `{name}`"
            )))));
        };
        let call = {
            let mut live = cell.lock().await;
            if spec.side_effect {
                if let Some((value, pattern)) = self.guardrails.protected_hit(&inputs, Some(&spec))
                {
                    live.events.push(Event::new(
                        EventKind::GuardrailProtected,
                        Some(address),
                        json!({ "action": name, "value": value, "pattern": pattern }),
                    ));
                    return Ok(Called::Result(Err(ActionError::permanent(format!(
                        "`{value}` is a protected resource (guardrail `{pattern}`); `{name}` may not touch it"
                    )))));
                }
                if live.run.dry_run {
                    state.dry_run = true;
                    if !spec.plans {
                        return Ok(Called::Result(Ok(
                            json!({ "dry_run": true, "action": name, "inputs": inputs }),
                        )));
                    }
                    // The action reads what it needs and answers what it would do; the host
                    // refuses any write it tries.
                    let mut call = ActionCall::for_step(live.run, &playbook.spec.id, address);
                    call.dry_run = true;
                    drop(live);
                    let plan = self.actions.call(name, inputs.clone(), &call).await;
                    return Ok(Called::Result(plan.map(|plan| {
                        json!({ "dry_run": true, "action": name, "inputs": inputs, "plan": plan })
                    })));
                }
                if !approved_over_limit && let Err(limit) = self.guardrails.take(name).await {
                    let mut held = state.clone();
                    held.status = StepStatus::Waiting;
                    held.approval = Some(ApprovalState {
                        prompt: format!("{limit}. Allow this call? {name} {inputs}"),
                        group: self.guardrails.blast_radius_approvers.clone(),
                        quorum: 1,
                        timeout_at: now + TimeDelta::hours(1),
                        on_timeout_approve: false,
                        decisions: Vec::new(),
                        outcome: None,
                        plan: vec![
                            json!({ "step": address, "action": name, "inputs": inputs, "note": limit.to_string() }),
                        ],
                    });
                    live.events.push(Event::new(
                        EventKind::GuardrailBlastRadius,
                        Some(address),
                        json!({ "action": name, "limit": limit }),
                    ));
                    return Ok(Called::Hold(Box::new(held)));
                }
                // Recorded as started before it runs, with its inputs and idempotency key.
                state.status = StepStatus::Started;
                state.action = Some(name.to_owned());
                state.inputs = inputs.clone();
                state.idempotency_key = Some(idempotency_key(&live.run.id, address));
                record(live.run, address, state.clone());
                live.events.push(Event::of(
                    Detail::StepStarted(StepStarted {
                        action: name.to_owned(),
                        attempt: state.attempts,
                        idempotency_key: state.idempotency_key.clone(),
                    }),
                    Some(address),
                ));
                live.save(true).await?;
            }
            ActionCall::for_step(live.run, &playbook.spec.id, address)
        };
        let future = self.actions.call(name, inputs, &call);
        let result = match step.timeout {
            Some(limit) => match tokio::time::timeout(limit, future).await {
                Ok(r) => r,
                Err(_) => Err(ActionError::retryable(format!(
                    "`{name}` did not finish within {}",
                    crate::config::HumanDuration(limit)
                ))),
            },
            None => future.await,
        };
        Ok(Called::Result(result))
    }
}

enum Called {
    Result(Result<Value, ActionError>),
    Hold(Box<StepState>),
}

/// The id of the child run the `call` step at `address` of run `parent` starts: the same on every
/// attempt, so a call is made once.
pub fn child_run_id(parent: &str, address: &str) -> String {
    super::run::joined(parent, '.', address, '.')
}

/// Runs kept in memory (`cordon test`, and what calls in tests start): every save keeps a copy.
#[derive(Default)]
pub struct Memory {
    pub runs: BTreeMap<String, Run>,
}

#[async_trait]
impl Persist for Memory {
    async fn save(
        &mut self,
        run: &Run,
        _: Vec<Event>,
        _: bool,
    ) -> Result<(), crate::store::StoreError> {
        self.runs.insert(run.id.clone(), run.clone());
        Ok(())
    }

    async fn load(&mut self, id: &str) -> Result<Option<Run>, crate::store::StoreError> {
        Ok(self.runs.get(id).cloned())
    }

    async fn create(&mut self, run: &Run, _: Vec<Event>) -> Result<(), crate::store::StoreError> {
        self.runs
            .entry(run.id.clone())
            .or_insert_with(|| run.clone());
        Ok(())
    }
}

fn record(run: &mut Run, step: &str, state: StepState) {
    if !run.order.iter().any(|s| s == step) {
        run.order.push(step.to_owned());
    }
    run.steps.insert(step.to_owned(), state);
}

fn failed(mut state: StepState, message: String, now: DateTime<Utc>) -> StepState {
    state.status = StepStatus::Failed;
    state.error = Some(message);
    state.finished_at = Some(now);
    state
}

/// A failure as the list around it reports it: a nested step's error names its address.
fn failure(frame: &Frame, address: &str, error: Option<String>) -> Option<String> {
    if frame.is_top() {
        error
    } else {
        Some(format!("{address}: {}", error.unwrap_or_default()))
    }
}

fn worker_failed() -> ScriptError {
    ScriptError {
        message: "the script worker failed".into(),
        line: 0,
        column: 0,
    }
}

fn script_message(e: &ScriptError) -> String {
    if e.line > 0 {
        format!("{} (line {}, column {})", e.message, e.line, e.column)
    } else {
        e.message.clone()
    }
}
