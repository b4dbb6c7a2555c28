//! Undo as an approval of its own. A person (`responder`) asks to reverse a finished step; Cordon
//! starts a run of the built-in playbook `cordon.undo` with two steps: an approval by the undo
//! group (`guardrails.undo_approvers`, else the group of the approval before the step, else the
//! blast-radius approvers), then the step's undo action with the step's inputs and `previous`
//! (its output). That run is a run like any other: its approval goes to chat and the CLI, the
//! person who asked may not approve it, quorum and timeouts apply, and its action passes the
//! protected-resource check and the blast radius as the original did. When it succeeds, the
//! original step is marked `undone`; the audit of both runs says who asked and who approved.
//!
//! The inputs travel as literal values (never templates), so nothing an alert carried can become
//! an expression in the undo run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::{Engine, EngineError, Event, RunData, StepUndoFailed, StepUndone, Trigger};
use crate::engine::run::{Run, RunStatus, StepStatus};
use crate::model::event::{Detail, EventKind};
use crate::model::people::Actor;
use crate::playbook::{
    ApprovalSpec, Compiled, CompiledStep, OnError, Playbook, StepKind, TimeoutDecision,
};
use crate::script::{CompiledValue, Template};

/// The id of the built-in playbook an undo request runs.
pub const UNDO_PLAYBOOK: &str = "cordon.undo";

impl Engine {
    /// Asks to reverse a finished step with its action's undo: starts (or finds) the undo run that
    /// waits for approval. Returns the undo run's id, whether it was created now, and its group.
    pub async fn undo(
        self: &Arc<Self>,
        run_id: &str,
        step: &str,
        by: &Actor,
    ) -> Result<(String, bool, String), EngineError> {
        let (run_id, step) = self.locate(run_id, step).await?;
        let (run_id, step) = (run_id.as_str(), step.as_str());
        let run = self.load_run(run_id).await?;
        let state = run
            .steps
            .get(step)
            .ok_or_else(|| EngineError::Conflict(format!("run has no step `{step}`")))?;
        let Some(action) = state.action.clone() else {
            return Err(EngineError::Conflict(format!(
                "step `{step}` called no action with side effects, so there is nothing to undo"
            )));
        };
        if state.status != StepStatus::Succeeded || state.dry_run {
            return Err(EngineError::Conflict(format!(
                "step `{step}` did not succeed for real (it is {}{}), so there is nothing to undo",
                serde_json::to_value(state.status)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?"),
                if state.dry_run { ", a dry run" } else { "" }
            )));
        }
        if let Some(undone) = &state.undone {
            return Err(EngineError::Conflict(format!(
                "step `{step}` was already undone by {} at {}",
                undone["by"].as_str().unwrap_or("?"),
                undone["at"].as_str().unwrap_or("?")
            )));
        }
        let actions = &self.executor.actions;
        let Some(undo) = actions.spec(&action).and_then(|s| s.undo) else {
            return Err(EngineError::Conflict(format!(
                "`{action}` has no undo action"
            )));
        };
        let undo_spec = actions.spec(&undo).ok_or_else(|| {
            EngineError::Conflict(format!("the undo action `{undo}` is not loaded"))
        })?;
        let mut with = serde_json::Map::new();
        for name in undo_spec.inputs.keys() {
            let value = if name == "previous" {
                Some(state.output.clone())
            } else {
                state.inputs.get(name).cloned()
            };
            if let Some(value) = value {
                with.insert(name.clone(), value);
            }
        }
        let group = self.undo_group(&run, step);
        let inputs = json!({
            "run": run_id,
            "step": step,
            "action": undo,
            "reverses": action,
            "with": with,
            "group": group,
        });
        let playbook = undo_playbook(&self.executor.scripts, &inputs)
            .map_err(|e| EngineError::Conflict(format!("cannot prepare the undo: {e}")))?;
        let trigger = Trigger {
            kind: "manual".into(),
            by: Some(by.identity.clone()),
            person: Some(by.person.clone()),
        };
        let key = format!("undo:{run_id}:{step}");
        let undo_run = self
            .new_run(
                &playbook,
                trigger,
                None,
                run.incident_id.clone(),
                key,
                inputs,
                &RunData::default(),
            )
            .await;
        let undo_id = undo_run.id.clone();
        let created = match self.create(undo_run).await? {
            Some(existing) => return Ok((existing, false, group)),
            None => true,
        };
        let event = Event::new(
            EventKind::UndoRequested,
            Some(step),
            json!({ "undo_run": undo_id, "action": undo, "group": group }),
        )
        .by(by);
        self.store
            .append_audit(super::audit_entries(run_id, vec![event]))
            .await
            .map_err(super::store_error)?;
        Ok((undo_id, created, group))
    }

    /// Who approves undoing `step` of `run`.
    fn undo_group(&self, run: &Run, step: &str) -> String {
        if let Some(group) = &self.undo_approvers {
            return group.clone();
        }
        let before = run.order.iter().take_while(|s| s.as_str() != step);
        before
            .filter_map(|s| run.steps.get(s)?.approval.as_ref())
            .map(|a| a.group.clone())
            .last()
            .unwrap_or_else(|| self.executor.guardrails.blast_radius_approvers.clone())
    }

    /// The compiled playbook of `run`: a loaded one, or the undo playbook its inputs describe.
    pub(super) fn playbook_for(&self, run: &Run) -> Option<Arc<Compiled>> {
        if run.playbook == UNDO_PLAYBOOK {
            return undo_playbook(&self.executor.scripts, &run.inputs)
                .inspect_err(
                    |e| tracing::error!(run = %run.id, error = %e, "cannot rebuild an undo run"),
                )
                .ok()
                .map(Arc::new);
        }
        self.current().by_id.get(&run.playbook).cloned()
    }

    /// An undo run ended: the original step is marked undone when its action succeeded, and the
    /// original run's audit says how the undo ended either way.
    pub(super) async fn undo_finished(self: &Arc<Self>, undo: &Run) {
        let (Some(run_id), Some(step), Some(action)) = (
            undo.inputs["run"].as_str(),
            undo.inputs["step"].as_str(),
            undo.inputs["action"].as_str(),
        ) else {
            return;
        };
        let by = undo.trigger.person.clone().unwrap_or_default();
        let lock = self.lock_for(run_id);
        let _guard = lock.lock().await;
        if let Err(e) = self.lease_waiting(run_id).await {
            tracing::warn!(run = run_id, error = %e, "cannot mark a step undone");
            return;
        }
        let result = async {
            let mut run = self.load_run(run_id).await?;
            let now = Utc::now();
            let undo_step = undo.steps.get("undo");
            let detail = match (undo.status, undo_step) {
                (RunStatus::Succeeded, Some(s)) if s.status == StepStatus::Succeeded => {
                    if let Some(state) = run.steps.get_mut(step) {
                        state.undone = Some(json!({
                            "action": action,
                            "by": by,
                            "undo_run": undo.id,
                            "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            "output": s.output,
                        }));
                    }
                    Detail::StepUndone(StepUndone {
                        action: action.to_owned(),
                        output: s.output.clone(),
                    })
                }
                (_, Some(s)) if s.status == StepStatus::Skipped => {
                    Detail::StepUndoFailed(StepUndoFailed {
                        action: action.to_owned(),
                        error: format!("the undo was not approved (run {})", undo.id),
                    })
                }
                _ => Detail::StepUndoFailed(StepUndoFailed {
                    action: action.to_owned(),
                    error: undo.error.clone().unwrap_or_else(|| {
                        format!("the undo run {} ended {}", undo.id, undo.status)
                    }),
                }),
            };
            let mut event = Event::of(detail, Some(step));
            event.actor = undo.trigger.by.clone();
            event.detail = crate::engine::exec::with_person(event.detail, &by);
            event.detail["undo_run"] = json!(undo.id);
            run.updated_at = now;
            self.save_and_tell(&run, vec![event]).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(run = run_id, error = %e, "cannot mark a step undone");
        }
        let due = match self.store.run(run_id).await {
            Ok(Some(run)) => run.due_at(Utc::now()),
            _ => None,
        };
        self.release(run_id, due).await;
    }
}

/// The undo playbook for one request: approve, then the undo action with literal inputs.
fn undo_playbook(scripts: &crate::script::Scripts, inputs: &Value) -> Result<Compiled, String> {
    let text = |key: &str| {
        inputs[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the undo request lacks `{key}`"))
    };
    let (run, step, action, group) = (text("run")?, text("step")?, text("action")?, text("group")?);
    let reverses = inputs["reverses"].as_str().unwrap_or("?");
    // Ids and action names only, and no `${{`: the prompt is text, not a template.
    let prompt_text =
        format!("Undo step {step} of run {run}: {action} reverses {reverses}. Approve?")
            .replace("${{", "$ {{");
    let prompt = Template::compile(scripts, &prompt_text, &[]).map_err(|e| e.message)?;
    let spec: Playbook = serde_json::from_value(json!({
        "id": UNDO_PLAYBOOK,
        "name": "Undo a step (approved first)",
        "steps": [],
    }))
    .map_err(|e| e.to_string())?;
    let with: BTreeMap<String, CompiledValue> = inputs["with"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), CompiledValue::Literal(v.clone())))
        .collect();
    let step_of = |id: &str, kind: StepKind, condition| CompiledStep {
        id: id.to_owned(),
        condition,
        kind,
        retry: None,
        timeout: None,
        on_error: OnError::Fail,
    };
    // A denied (or timed out) approval skips the undo: an approval step records its outcome and
    // the run goes on, so the action step asks for it.
    let approved = scripts
        .compile_expr("steps.approve.approved", &[])
        .map_err(|e| e.message)?;
    Ok(Compiled {
        spec,
        file: PathBuf::from("<cordon.undo>"),
        when: None,
        concurrency: None,
        vars: BTreeMap::new(),
        steps: vec![
            step_of(
                "approve",
                StepKind::Approval {
                    prompt,
                    spec: ApprovalSpec {
                        prompt: prompt_text,
                        approvers: group,
                        quorum: 1,
                        timeout: crate::config::HumanDuration(std::time::Duration::from_secs(
                            4 * 3600,
                        )),
                        on_timeout: TimeoutDecision::Reject,
                    },
                },
                None,
            ),
            step_of(
                "undo",
                StepKind::Action {
                    name: action,
                    inputs: with,
                },
                Some(approved),
            ),
        ],
        outputs: BTreeMap::new(),
    })
}
