//! Running a playbook's steps: one [`Executor`] serves the server's workers and `cordon test`.
//!
//! [`Executor::advance`] takes a run as far as it can go now: it runs steps in order, persisting the
//! run through [`Persist`] after every step (and before every side effect), and returns when the run
//! finishes or must wait (an approval, a durable sleep, a retry's backoff). Calling it again later
//! picks up where the record says. A side-effect step found `started` (the process died while it
//! ran) is retried when its action is idempotent and held as `needs_decision` when not: never run
//! twice in silence.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::run::{ApprovalState, Run, RunStatus, StepState, StepStatus};
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
    /// Stores the run with the events that led to this state; with `durable`, fsynced before it
    /// returns. The executor asks for durability before and after every side effect, when a run
    /// waits, holds or finishes; the states between pure steps (scripts, logs) are written but not
    /// waited on, since repeating a pure step after a crash changes nothing outside.
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

enum StepOutcome {
    Done(StepState),
    Wait(StepState),
    Hold(StepState),
}

impl Executor {
    fn context(run: &Run, data: &RunData) -> Context {
        Context {
            alert: data.alert.clone(),
            incident: data.incident.clone(),
            steps: run.steps_view(),
            vars: run.vars.clone(),
            inputs: run.inputs.clone(),
            item: None,
        }
    }

    async fn eval(&self, expr: &Expr, ctx: Context) -> Result<Value, ScriptError> {
        let (scripts, expr) = (self.scripts.clone(), expr.clone());
        tokio::task::spawn_blocking(move || scripts.eval(&expr, &ctx))
            .await
            .unwrap_or_else(|_| {
                Err(ScriptError {
                    message: "the script worker failed".into(),
                    line: 0,
                    column: 0,
                })
            })
    }

    async fn eval_bool(&self, expr: &Expr, ctx: Context) -> Result<bool, ScriptError> {
        let (scripts, expr) = (self.scripts.clone(), expr.clone());
        tokio::task::spawn_blocking(move || scripts.eval_bool(&expr, &ctx))
            .await
            .unwrap_or_else(|_| {
                Err(ScriptError {
                    message: "the script worker failed".into(),
                    line: 0,
                    column: 0,
                })
            })
    }

    async fn render(
        &self,
        value: &crate::script::CompiledValue,
        ctx: Context,
    ) -> Result<Value, ScriptError> {
        let (scripts, value) = (self.scripts.clone(), value.clone());
        tokio::task::spawn_blocking(move || value.render(&scripts, &ctx))
            .await
            .unwrap_or_else(|_| {
                Err(ScriptError {
                    message: "the script worker failed".into(),
                    line: 0,
                    column: 0,
                })
            })
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
            let ctx = Executor::context(run, data);
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
        while run.cursor < playbook.steps.len() {
            let step = &playbook.steps[run.cursor];
            let existing = run.steps.get(&step.id).cloned();
            let outcome = match existing {
                Some(s) if matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped) => {
                    run.cursor += 1;
                    continue;
                }
                Some(s) if s.status == StepStatus::Failed => {
                    if step.on_error == OnError::Continue {
                        run.cursor += 1;
                        continue;
                    }
                    return self
                        .finish(
                            playbook,
                            run,
                            data,
                            store,
                            events,
                            RunStatus::Failed,
                            s.error.clone(),
                        )
                        .await;
                }
                Some(s) if s.status == StepStatus::NeedsDecision => {
                    run.status = RunStatus::NeedsDecision;
                    store.save(run, events, true).await.map_err(save_failed)?;
                    return Ok(Progress::NeedsDecision(step.id.clone()));
                }
                Some(s) => {
                    self.resume_step(playbook, step, run, data, s, &mut events, store, now)
                        .await?
                }
                None => {
                    self.start_step(playbook, step, run, data, &mut events, store, now)
                        .await?
                }
            };
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
                    events.push(Event::of(
                        if state.status == StepStatus::Skipped {
                            Detail::StepSkipped(finished)
                        } else {
                            Detail::StepFinished(finished)
                        },
                        Some(&step.id),
                    ));
                    // Evidence an action collected is written to the audit log, a record each.
                    if let Some(records) = state.output.get("evidence").and_then(Value::as_array) {
                        for record in records {
                            events.push(Event::of(
                                Detail::EvidenceCollected(EvidenceCollected(record.clone())),
                                Some(&step.id),
                            ));
                        }
                    }
                    record(run, &step.id, state);
                    run.updated_at = now;
                    if failed && step.on_error == OnError::Fail {
                        return self
                            .finish(playbook, run, data, store, events, RunStatus::Failed, error)
                            .await;
                    }
                    run.cursor += 1;
                    // After a side effect the record must be durable, or a crash would make the
                    // finished call look like one that may still be running.
                    let durable = match &step.kind {
                        StepKind::Action { name, .. } => {
                            self.actions.spec(name).is_none_or(|s| s.side_effect)
                        }
                        StepKind::Script(_) => false,
                        _ => true,
                    };
                    store
                        .save(run, std::mem::take(&mut events), durable)
                        .await
                        .map_err(save_failed)?;
                }
                StepOutcome::Wait(state) => {
                    record(run, &step.id, state);
                    events.push(Event::of(
                        Detail::RunState(RunState::moved(RunStatus::Running, RunStatus::Waiting)),
                        None,
                    ));
                    run.status = RunStatus::Waiting;
                    run.updated_at = now;
                    store.save(run, events, true).await.map_err(save_failed)?;
                    return Ok(Progress::Waiting(run.wake_at()));
                }
                StepOutcome::Hold(state) => {
                    record(run, &step.id, state);
                    events.push(Event::of(
                        Detail::RunState(RunState {
                            step: Some(step.id.clone()),
                            ..RunState::moved(RunStatus::Running, RunStatus::NeedsDecision)
                        }),
                        None,
                    ));
                    run.status = RunStatus::NeedsDecision;
                    run.updated_at = now;
                    store.save(run, events, true).await.map_err(save_failed)?;
                    return Ok(Progress::NeedsDecision(step.id.clone()));
                }
            }
        }
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
                match self.render(value, Executor::context(run, data)).await {
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
        run: &mut Run,
        data: &RunData,
        events: &mut Vec<Event>,
        store: &mut dyn Persist,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
        if let Some(condition) = &step.condition {
            match self
                .eval_bool(condition, Executor::context(run, data))
                .await
            {
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
                let prompt = match prompt.render(&self.scripts, &Executor::context(run, data)) {
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
                let plan = self.plan(playbook, step, run, data).await;
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
                events.push(Event::of(
                    Detail::ApprovalRequested(ApprovalRequested {
                        prompt: prompt.clone(),
                        group: spec.approvers.clone(),
                        quorum: spec.quorum,
                        timeout: spec.timeout.to_string(),
                    }),
                    Some(&step.id),
                ));
                Ok(StepOutcome::Wait(state))
            }
            _ => {
                self.attempt(playbook, step, run, data, state, events, store, now, false)
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
                        if let Ok(v) = self.render(value, Executor::context(run, data)).await {
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
        run: &mut Run,
        data: &RunData,
        state: StepState,
        events: &mut Vec<Event>,
        store: &mut dyn Persist,
        now: DateTime<Utc>,
    ) -> Result<StepOutcome, String> {
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
                                        playbook, step, run, data, state, events, store, now, true,
                                    )
                                    .await;
                            }
                            state.status = StepStatus::Succeeded;
                            state.output = json!({ "approved": approved });
                            state.finished_at = Some(now);
                            events.push(Event::new(
                                EventKind::ApprovalClosed,
                                Some(&step.id),
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
                self.attempt(playbook, step, run, data, state, events, store, now, false)
                    .await
            }
            StepStatus::Started => {
                // The process stopped while this step ran.
                if let StepKind::Action { name, .. } = &step.kind {
                    let spec = self.actions.spec(name);
                    let side_effect = spec.as_ref().is_none_or(|s| s.side_effect);
                    let idempotent = self.actions.idempotent(name, &state.inputs);
                    if side_effect && !idempotent && !run.dry_run {
                        let mut state = state;
                        state.status = StepStatus::NeedsDecision;
                        state.error = Some(format!(
                            "`{name}` may have run when the process stopped; it is not idempotent, so a person must retry or skip it"
                        ));
                        events.push(Event::new(
                            EventKind::StepNeedsDecision,
                            Some(&step.id),
                            json!({ "action": name }),
                        ));
                        return Ok(StepOutcome::Hold(state));
                    }
                }
                events.push(Event::new(
                    EventKind::StepResumed,
                    Some(&step.id),
                    json!({ "attempts": state.attempts }),
                ));
                self.attempt(playbook, step, run, data, state, events, store, now, false)
                    .await
            }
            _ => Ok(StepOutcome::Done(state)),
        }
    }

    /// One attempt of a script or action step (and of a foreach, parallel or call as a whole).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        playbook: &Compiled,
        step: &CompiledStep,
        run: &mut Run,
        data: &RunData,
        mut state: StepState,
        events: &mut Vec<Event>,
        store: &mut dyn Persist,
        now: DateTime<Utc>,
        approved_over_limit: bool,
    ) -> Result<StepOutcome, String> {
        state.attempts += 1;
        state.started_at.get_or_insert(now);
        let ctx = Executor::context(run, data);
        let result: Result<Value, ActionError> = match &step.kind {
            StepKind::Script(expr) => self
                .eval(expr, ctx)
                .await
                .map_err(|e| ActionError::permanent(script_message(&e))),
            StepKind::Action { name, inputs } => {
                let mut rendered = serde_json::Map::new();
                let mut error = None;
                for (key, value) in inputs {
                    match self.render(value, ctx.clone()).await {
                        Ok(v) => {
                            rendered.insert(key.clone(), v);
                        }
                        Err(e) => {
                            error = Some(ActionError::permanent(format!(
                                "with.{key}: {}",
                                script_message(&e)
                            )));
                            break;
                        }
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None => {
                        let inputs = Value::Object(rendered);
                        match self
                            .call_action(
                                playbook,
                                step,
                                name,
                                inputs,
                                run,
                                &mut state,
                                events,
                                store,
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
            StepKind::Foreach {
                items,
                name,
                concurrency,
                steps,
            } => {
                self.foreach(playbook, run, data, items, name, *concurrency, steps, now)
                    .await
            }
            StepKind::Parallel(branches) => self.parallel(playbook, run, data, branches, now).await,
            StepKind::Call {
                playbook: id,
                inputs,
            } => self.call(run, data, id, inputs, now).await,
            StepKind::Approval { .. } => {
                Err(ActionError::permanent("an approval cannot be attempted"))
            }
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
                    && !run.dry_run
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
                    events.push(Event::new(EventKind::StepRetrying, Some(&step.id), json!({ "attempt": state.attempts, "error": error.message, "delay": crate::config::HumanDuration(delay).to_string() })));
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
        name: &str,
        inputs: Value,
        run: &mut Run,
        state: &mut StepState,
        events: &mut Vec<Event>,
        store: &mut dyn Persist,
        now: DateTime<Utc>,
        approved_over_limit: bool,
    ) -> Result<Called, String> {
        let Some(spec) = self.actions.spec(name) else {
            return Ok(Called::Result(Err(ActionError::permanent(format!(
                "unknown action `{name}`"
            )))));
        };
        if spec.side_effect {
            if let Some((value, pattern)) = self.guardrails.protected_hit(&inputs, Some(&spec)) {
                events.push(Event::new(
                    EventKind::GuardrailProtected,
                    Some(&step.id),
                    json!({ "action": name, "value": value, "pattern": pattern }),
                ));
                return Ok(Called::Result(Err(ActionError::permanent(format!(
                    "`{value}` is a protected resource (guardrail `{pattern}`); `{name}` may not touch it"
                )))));
            }
            if run.dry_run {
                state.dry_run = true;
                return Ok(Called::Result(Ok(
                    json!({ "dry_run": true, "action": name, "inputs": inputs }),
                )));
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
                        json!({ "step": step.id, "action": name, "inputs": inputs, "note": limit.to_string() }),
                    ],
                });
                events.push(Event::new(
                    EventKind::GuardrailBlastRadius,
                    Some(&step.id),
                    json!({ "action": name, "limit": limit }),
                ));
                return Ok(Called::Hold(Box::new(held)));
            }
            // Recorded as started before it runs, with its inputs and idempotency key.
            state.status = StepStatus::Started;
            state.action = Some(name.to_owned());
            state.inputs = inputs.clone();
            state.idempotency_key = Some(format!("{}:{}", run.id, step.id));
            record(run, &step.id, state.clone());
            events.push(Event::of(
                Detail::StepStarted(StepStarted {
                    action: name.to_owned(),
                    attempt: state.attempts,
                    idempotency_key: state.idempotency_key.clone(),
                }),
                Some(&step.id),
            ));
            store
                .save(run, std::mem::take(events), true)
                .await
                .map_err(save_failed)?;
        }
        let call = ActionCall::for_step(run, &playbook.spec.id, &step.id);
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

    #[allow(clippy::too_many_arguments)]
    async fn foreach(
        &self,
        playbook: &Compiled,
        run: &Run,
        data: &RunData,
        items: &Expr,
        name: &str,
        concurrency: u32,
        steps: &[CompiledStep],
        now: DateTime<Utc>,
    ) -> Result<Value, ActionError> {
        let list = self
            .eval(items, Executor::context(run, data))
            .await
            .map_err(|e| ActionError::permanent(script_message(&e)))?;
        let Value::Array(list) = list else {
            return Err(ActionError::permanent(format!(
                "foreach items must be a list, got {}",
                crate::script::describe(&list)
            )));
        };
        let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1) as usize));
        let mut tasks = Vec::new();
        for item in list {
            let permit = semaphore.clone();
            tasks.push(async move {
                let _permit = permit.acquire().await;
                self.nested(
                    playbook,
                    run,
                    data,
                    steps,
                    Some((name.to_owned(), item)),
                    now,
                )
                .await
            });
        }
        join_outputs(tasks).await
    }

    async fn parallel(
        &self,
        playbook: &Compiled,
        run: &Run,
        data: &RunData,
        branches: &[Vec<CompiledStep>],
        now: DateTime<Utc>,
    ) -> Result<Value, ActionError> {
        let tasks = branches
            .iter()
            .map(|steps| self.nested(playbook, run, data, steps, None, now));
        join_outputs(tasks.collect()).await
    }

    /// Nested steps (a foreach item or a parallel branch) run in memory as part of their parent
    /// step: their results become the parent's output, keyed by step id. They may not wait for
    /// approval; a crash repeats the parent step as a whole.
    async fn nested(
        &self,
        playbook: &Compiled,
        run: &Run,
        data: &RunData,
        steps: &[CompiledStep],
        item: Option<(String, Value)>,
        now: DateTime<Utc>,
    ) -> Result<Value, ActionError> {
        let mut inner = run.clone();
        let mut out = serde_json::Map::new();
        for step in steps {
            let mut ctx = Executor::context(&inner, data);
            ctx.item = item.clone();
            if let Some(condition) = &step.condition {
                let go = self.eval_bool(condition, ctx.clone()).await.map_err(|e| {
                    ActionError::permanent(format!("{}: `if`: {}", step.id, script_message(&e)))
                })?;
                if !go {
                    inner
                        .steps
                        .insert(step.id.clone(), StepState::new(StepStatus::Skipped));
                    continue;
                }
            }
            let output = match &step.kind {
                StepKind::Script(expr) => self
                    .eval(expr, ctx.clone())
                    .await
                    .map_err(|e| ActionError::permanent(script_message(&e))),
                StepKind::Action { name, inputs } => {
                    let mut rendered = serde_json::Map::new();
                    for (key, value) in inputs {
                        let v = self.render(value, ctx.clone()).await.map_err(|e| {
                            ActionError::permanent(format!("with.{key}: {}", script_message(&e)))
                        })?;
                        rendered.insert(key.clone(), v);
                    }
                    let spec = self.actions.spec(name);
                    let side_effect = spec.as_ref().is_none_or(|s| s.side_effect);
                    let inputs = Value::Object(rendered);
                    if side_effect
                        && let Some((value, pattern)) =
                            self.guardrails.protected_hit(&inputs, spec.as_ref())
                    {
                        return Err(ActionError::permanent(format!(
                            "`{value}` is a protected resource (guardrail `{pattern}`)"
                        )));
                    }
                    if side_effect && run.dry_run {
                        Ok(json!({ "dry_run": true, "action": name, "inputs": inputs }))
                    } else {
                        if side_effect {
                            self.guardrails
                                .take(name)
                                .await
                                .map_err(ActionError::permanent)?;
                        }
                        let call = ActionCall::for_step(run, &playbook.spec.id, &step.id);
                        self.actions.call(name, inputs, &call).await
                    }
                }
                StepKind::Approval { .. } => Err(ActionError::permanent(
                    "approvals cannot be nested in foreach or parallel",
                )),
                StepKind::Foreach {
                    items,
                    name,
                    concurrency,
                    steps,
                } => {
                    Box::pin(self.foreach(
                        playbook,
                        &inner,
                        data,
                        items,
                        name,
                        *concurrency,
                        steps,
                        now,
                    ))
                    .await
                }
                StepKind::Parallel(branches) => {
                    Box::pin(self.parallel(playbook, &inner, data, branches, now)).await
                }
                StepKind::Call {
                    playbook: id,
                    inputs,
                } => Box::pin(self.call(&inner, data, id, inputs, now)).await,
            };
            let mut state = StepState::new(StepStatus::Succeeded);
            match output {
                Ok(v) => state.output = v,
                Err(e) if step.on_error == OnError::Continue => {
                    state.status = StepStatus::Failed;
                    state.error = Some(e.message);
                }
                Err(e) => {
                    return Err(ActionError {
                        message: format!("{}: {}", step.id, e.message),
                        retryable: e.retryable,
                    });
                }
            }
            out.insert(step.id.clone(), state.view());
            inner.steps.insert(step.id.clone(), state);
        }
        Ok(Value::Object(out))
    }

    async fn call(
        &self,
        run: &Run,
        data: &RunData,
        id: &str,
        inputs: &BTreeMap<String, crate::script::CompiledValue>,
        now: DateTime<Utc>,
    ) -> Result<Value, ActionError> {
        let callee = self
            .library
            .playbook(id)
            .ok_or_else(|| ActionError::permanent(format!("no playbook `{id}` to call")))?;
        let mut rendered = serde_json::Map::new();
        for (key, value) in inputs {
            let v = self
                .render(value, Executor::context(run, data))
                .await
                .map_err(|e| {
                    ActionError::permanent(format!("call.inputs.{key}: {}", script_message(&e)))
                })?;
            rendered.insert(key.clone(), v);
        }
        let mut child = Run::new(
            format!("{}/{}", run.id, id),
            id,
            super::run::Trigger {
                kind: "call".into(),
                by: run.trigger.by.clone(),
                person: run.trigger.person.clone(),
            },
            run.incident_id.clone(),
            run.alert_id.clone(),
            String::new(),
            Value::Object(rendered),
            run.dry_run,
            now,
        );
        self.start(&callee, &mut child, data)
            .await
            .map_err(ActionError::permanent)?;
        let mut sink = NoPersist;
        let progress = Box::pin(self.advance(&callee, &mut child, data, &mut sink, now))
            .await
            .map_err(ActionError::permanent)?;
        match progress {
            Progress::Finished(RunStatus::Succeeded) => Ok(child.outputs),
            Progress::Finished(_) => Err(ActionError::permanent(format!(
                "called playbook `{id}` failed: {}",
                child.error.unwrap_or_default()
            ))),
            _ => Err(ActionError::permanent(format!(
                "called playbook `{id}` stopped to wait; called playbooks may not wait for approval"
            ))),
        }
    }
}

enum Called {
    Result(Result<Value, ActionError>),
    Hold(Box<StepState>),
}

/// A sink that keeps nothing (called playbooks run inside their caller's step).
pub struct NoPersist;

#[async_trait]
impl Persist for NoPersist {
    async fn save(
        &mut self,
        _: &Run,
        _: Vec<Event>,
        _: bool,
    ) -> Result<(), crate::store::StoreError> {
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

fn script_message(e: &ScriptError) -> String {
    if e.line > 0 {
        format!("{} (line {}, column {})", e.message, e.line, e.column)
    } else {
        e.message.clone()
    }
}

/// Runs nested step lists together, polled on this task (nested steps are few); their outputs as
/// a list in their order, or the first error in that order once all have finished.
async fn join_outputs<F: std::future::Future<Output = Result<Value, ActionError>>>(
    futures: Vec<F>,
) -> Result<Value, ActionError> {
    futures_util::future::join_all(futures)
        .await
        .into_iter()
        .collect::<Result<Vec<Value>, _>>()
        .map(Value::Array)
}
