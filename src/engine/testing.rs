//! `cordon test`: runs playbooks' `tests:` offline, with the real executor, canned action results
//! (one per call, so polling with retryable errors can be tested), canned approval decisions, and
//! virtual time (sleeps, retries and timeouts pass at once). No network, no store. Besides the
//! run's status, steps and outputs, a case may expect the inputs each action was called with, the
//! attempts a step took and the values set with `core.set`; a difference is shown path by path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::exec::{Executor, Library, Memory, Progress, RunData};
use super::run::{Decision, Run, StepStatus, Trigger};
use crate::actions::builtin::Builtins;
use crate::actions::{ActionCall, ActionError, ActionRunner, ActionSpec, Guardrails, SpecCatalog};
use crate::alert::Incident;
use crate::intake::formats::SourceKind;
use crate::playbook::model::CannedResults;
use crate::playbook::{Compiled, TestCase};
use crate::script::Scripts;

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub playbook: String,
    pub case: String,
    /// Empty when the case passed; otherwise one readable line per difference.
    pub differences: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Actions in a test: canned results by step id; the core actions that touch nothing outside run
/// for real; anything else fails, since tests have no network.
struct TestActions {
    core: Arc<Builtins>,
    specs: Arc<SpecCatalog>,
    canned: BTreeMap<String, CannedResults>,
    seen: Mutex<Seen>,
}

/// What the actions of a case were asked, for its expectations.
#[derive(Debug, Default)]
struct Seen {
    /// Every call, in order: the step (as the executor names it) and the rendered inputs.
    calls: Vec<(String, Value)>,
    /// Values set with `core.set`, the last by key.
    values: BTreeMap<String, Value>,
}

/// Whether `address`, as the executor names a step's call (`isolate`, or a nested one's
/// `isolate[2]`, `contain.branch_1.isolate`, `isolate@call_step`), is a call of step `id`.
fn is_step(address: &str, id: &str) -> bool {
    if address == id {
        return true;
    }
    let own = address.split('@').next().unwrap_or(address);
    let own = own.rsplit('.').next().unwrap_or(own);
    let own = own.split('[').next().unwrap_or(own);
    own == id
}

#[async_trait]
impl ActionRunner for TestActions {
    fn spec(&self, name: &str) -> Option<ActionSpec> {
        self.core
            .spec(name)
            .or_else(|| self.specs.0.get(name).cloned())
            .or_else(|| {
                // Actions from integrations are described by their manifests; in tests an unknown name
                // is treated as an idempotent side effect so canned results can stand in for it.
                Some(ActionSpec::unknown_side_effect(name))
            })
    }

    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError> {
        let earlier = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let earlier = seen
                .calls
                .iter()
                .filter(|(address, _)| *address == call.step_id)
                .count();
            seen.calls.push((call.step_id.clone(), inputs.clone()));
            earlier
        };
        let canned = self.canned.get(&call.step_id).or_else(|| {
            self.canned
                .iter()
                .find(|(id, _)| is_step(&call.step_id, id))
                .map(|(_, c)| c)
        });
        if let Some(canned) = canned.and_then(|c| c.nth(earlier)) {
            return match &canned.error {
                Some(error) if canned.retryable => Err(ActionError::retryable(error.clone())),
                Some(error) => Err(ActionError::permanent(error.clone())),
                None => Ok(canned.output.clone().unwrap_or(Value::Null)),
            };
        }
        match name {
            // The core actions that touch nothing outside run for real (no store: `core.set`
            // records its value in the step output, and here for `expect.values`).
            "core.set" => {
                let output = self.core.call(name, inputs, call).await?;
                if let Some(key) = output.get("key").and_then(Value::as_str) {
                    let value = output.get("value").cloned().unwrap_or(Value::Null);
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.values.insert(key.to_owned(), value);
                }
                Ok(output)
            }
            "core.log" | "core.sleep" => self.core.call(name, inputs, call).await,
            // Chat is not reached offline: the message is what the step shows.
            "chat.notify" => Ok(serde_json::json!({ "text": inputs.get("text"), "platforms": [] })),
            other => Err(ActionError::permanent(format!(
                "step `{}` calls `{other}` and the test gives no canned result for it (tests have no network)",
                call.step_id
            ))),
        }
    }
}

struct Only(BTreeMap<String, Arc<Compiled>>);

impl Library for Only {
    fn playbook(&self, id: &str) -> Option<Arc<Compiled>> {
        self.0.get(id).cloned()
    }
}

/// Runs every test case of `playbooks`.
pub async fn run_tests(
    playbooks: &[Compiled],
    scripts: Arc<Scripts>,
    catalog: &SpecCatalog,
) -> Vec<CaseResult> {
    let library: BTreeMap<String, Arc<Compiled>> = playbooks
        .iter()
        .map(|p| (p.spec.id.clone(), Arc::new(p.clone())))
        .collect();
    let library = Arc::new(Only(library));
    // No store, and no host allowed: the core actions touch nothing outside.
    let core = Arc::new(
        Builtins::new(None, BTreeMap::new(), 0, None)
            .expect("with no host allowed, no HTTP client is built"),
    );
    let specs = Arc::new(catalog.clone());
    let mut results = Vec::new();
    for playbook in playbooks {
        for case in &playbook.spec.tests {
            let differences = match run_case(
                playbook,
                case,
                scripts.clone(),
                library.clone(),
                &core,
                &specs,
            )
            .await
            {
                Ok(differences) => differences,
                Err(error) => vec![error],
            };
            results.push(CaseResult {
                playbook: playbook.spec.id.clone(),
                case: case.name.clone(),
                differences,
            });
        }
    }
    results
}

async fn run_case(
    playbook: &Compiled,
    case: &TestCase,
    scripts: Arc<Scripts>,
    library: Arc<Only>,
    core: &Arc<Builtins>,
    specs: &Arc<SpecCatalog>,
) -> Result<Vec<String>, String> {
    let data = case_data(playbook, case)?;
    let actions = Arc::new(TestActions {
        core: core.clone(),
        specs: specs.clone(),
        canned: case.actions.clone(),
        seen: Mutex::default(),
    });
    let executor = Executor {
        scripts: scripts.clone(),
        actions: actions.clone(),
        guardrails: Arc::new(Guardrails::default()),
        library,
    };

    let ctx = crate::script::Context {
        alert: data.alert.clone(),
        incident: data.incident.clone(),
        ..Default::default()
    };
    // As the matcher does: the alert's state at its source first (`on.state`, by default firing).
    let state = data
        .alert
        .get("state")
        .and_then(Value::as_str)
        .and_then(crate::alert::AlertState::from_name)
        .unwrap_or_default();
    if !data.alert.is_null() && playbook.spec.on.is_some() && !playbook.takes_state(state) {
        return Ok(compare(case, &Ran::default(), "not_matched", None));
    }
    let matched = match &playbook.when {
        Some(when) => scripts
            .eval_bool(when, &ctx)
            .map_err(|e| format!("`on.when` failed: {e}"))?,
        None => true,
    };
    if !matched {
        return Ok(compare(case, &Ran::default(), "not_matched", None));
    }

    let now = Utc::now();
    let trigger = Trigger {
        kind: if data.alert.is_null() {
            "manual".into()
        } else {
            "alert".into()
        },
        by: Some("test:runner".into()),
        person: Some("test-runner".into()),
    };
    let mut run = Run::new(
        format!("test-{}", case.name.replace(' ', "-")),
        &playbook.spec.id,
        trigger,
        data.incident
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        data.alert
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        String::new(),
        serde_json::to_value(&case.inputs).unwrap_or(Value::Null),
        playbook.spec.dry_run,
        now,
    );
    executor.start(playbook, &mut run, &data).await?;
    let mut clock = now;
    let mut memory = Memory::default();
    drive(
        &executor,
        playbook,
        &mut run,
        &data,
        &mut memory,
        &mut clock,
        case,
        "",
    )
    .await?;
    // `steps` and `skipped` name the top-level steps; nested ones are recorded by address.
    let top = |id: &&String| !id.contains(['.', '[', '@']);
    let taken: Vec<String> = run
        .order
        .iter()
        .filter(top)
        .filter(|id| {
            run.steps
                .get(*id)
                .is_some_and(|s| s.status != StepStatus::Skipped)
        })
        .cloned()
        .collect();
    let skipped: Vec<String> = run
        .order
        .iter()
        .filter(top)
        .filter(|id| {
            run.steps
                .get(*id)
                .is_some_and(|s| s.status == StepStatus::Skipped)
        })
        .cloned()
        .collect();
    let seen = std::mem::take(&mut *actions.seen.lock().unwrap_or_else(|e| e.into_inner()));
    let attempts = run
        .steps
        .iter()
        .map(|(id, state)| (id.clone(), state.attempts))
        .collect();
    let ran = Ran {
        taken,
        skipped,
        outputs: run.outputs.clone(),
        calls: seen.calls,
        values: seen.values,
        attempts,
    };
    Ok(compare(
        case,
        &ran,
        run.status.as_str(),
        run.error.as_deref(),
    ))
}

/// Advances `run` with virtual time until it finishes, is held, or waits for an approval the case
/// does not answer; the runs its `call` steps start are driven the same way, their approvals named
/// `step@call_step` (or by the step's id alone). `suffix` is `@call_step` for a called run.
#[allow(clippy::too_many_arguments)]
async fn drive(
    executor: &Executor,
    playbook: &Compiled,
    run: &mut Run,
    data: &RunData,
    memory: &mut Memory,
    clock: &mut chrono::DateTime<Utc>,
    case: &TestCase,
    suffix: &str,
) -> Result<(), String> {
    // Bounded: a playbook that never settles is reported, not looped on.
    for _ in 0..1000 {
        let wake = match executor
            .advance(playbook, run, data, memory, *clock)
            .await?
        {
            Progress::Finished(_) | Progress::NeedsDecision(_) => return Ok(()),
            Progress::Waiting(wake) => wake,
        };
        if let Some((step, _)) = run.open_approval() {
            let step = step.to_owned();
            let named = format!("{step}{suffix}");
            let answer = case
                .approvals
                .get(&named)
                .or_else(|| case.approvals.get(&step))
                .map(String::as_str);
            match answer {
                Some(answer @ ("approve" | "deny")) => {
                    let approve = answer == "approve";
                    let state = run
                        .steps
                        .get_mut(&step)
                        .and_then(|s| s.approval.as_mut())
                        .ok_or("approval vanished")?;
                    let needed = if approve { state.quorum as usize } else { 1 };
                    for i in 0..needed {
                        state.decisions.push(Decision {
                            identity: format!("test:approver-{i}"),
                            person: Some(format!("test-approver-{i}")),
                            approve,
                            at: *clock,
                            via: "test".into(),
                        });
                    }
                    state.outcome = Some(approve);
                }
                Some("timeout") => *clock = wake.unwrap_or(*clock) + TimeDelta::seconds(1),
                Some(other) => {
                    return Err(format!(
                        "approvals.{named}: `{other}` is not approve, deny or timeout"
                    ));
                }
                None => return Ok(()),
            }
            continue;
        }
        // Called runs: each is driven until it ends (or stops on an unanswered approval).
        let children: Vec<(String, String)> = run
            .steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Waiting)
            .filter_map(|(address, s)| Some((address.clone(), s.child.clone()?)))
            .collect();
        let mut progressed = false;
        for (address, child_id) in children {
            let Some(mut child) = memory.runs.get(&child_id).cloned() else {
                continue;
            };
            if child.status.is_finished() {
                progressed = true;
                continue;
            }
            let callee = executor
                .library
                .playbook(&child.playbook)
                .ok_or_else(|| format!("no playbook `{}` to call", child.playbook))?;
            let inner = format!("@{address}{suffix}");
            Box::pin(drive(
                executor, &callee, &mut child, data, memory, clock, case, &inner,
            ))
            .await?;
            progressed |= child.status.is_finished();
            memory.runs.insert(child_id, child);
        }
        if progressed {
            continue;
        }
        if run
            .steps
            .values()
            .any(|s| s.child.is_some() && s.status == StepStatus::Waiting)
        {
            // A called run stopped on an approval the case does not answer.
            return Ok(());
        }
        *clock = wake.unwrap_or(*clock) + TimeDelta::milliseconds(1);
    }
    Ok(())
}

/// What a case's run did, for its expectations.
#[derive(Debug, Default)]
struct Ran {
    /// Step ids that ran, in order, and those skipped.
    taken: Vec<String>,
    skipped: Vec<String>,
    outputs: Value,
    /// Every action call: the step's address and its rendered inputs.
    calls: Vec<(String, Value)>,
    values: BTreeMap<String, Value>,
    /// Attempts by step (as the run records it).
    attempts: BTreeMap<String, u32>,
}

/// The alert (normalized from the case's file) and its incident, as expressions see them.
fn case_data(playbook: &Compiled, case: &TestCase) -> Result<RunData, String> {
    let Some(file) = &case.alert else {
        return Ok(RunData::default());
    };
    let base = playbook.file.parent().unwrap_or(Path::new("."));
    let path = base.join(file);
    let body = std::fs::read(&path).map_err(|e| format!("alert file {}: {e}", path.display()))?;
    let source = case
        .source
        .clone()
        .or_else(|| {
            playbook
                .spec
                .on
                .as_ref()
                .and_then(|o| o.source.first().cloned())
        })
        .ok_or("the case names no source and the playbook has no trigger source")?;
    let kind =
        SourceKind::from_name(&source).ok_or_else(|| format!("unknown source `{source}`"))?;
    let alerts = kind
        .normalize(&body)
        .map_err(|e| format!("alert file {}: {e}", path.display()))?;
    let mut alert = alerts
        .into_iter()
        .next()
        .ok_or("the alert file holds no alert")?;
    let incident = Incident::open_for(&alert);
    alert.incident_id = incident.id.clone();
    let mut incident_value = serde_json::to_value(&incident).unwrap_or(Value::Null);
    incident_value["alerts"] = json!([{ "id": alert.id, "source": alert.source, "kind": alert.kind, "title": alert.title, "severity": alert.severity.score, "state": alert.state }]);
    Ok(RunData {
        alert: serde_json::to_value(&alert).unwrap_or(Value::Null),
        incident: incident_value,
    })
}

fn compare(case: &TestCase, ran: &Ran, status: &str, error: Option<&str>) -> Vec<String> {
    let mut differences = Vec::new();
    let expect = &case.expect;
    if expect.status != status {
        let why = error.map(|e| format!(" (error: {e})")).unwrap_or_default();
        differences.push(format!(
            "status: expected {}, got {status}{why}",
            expect.status
        ));
    }
    if let Some(steps) = &expect.steps
        && steps.as_slice() != ran.taken
    {
        differences.push(format!(
            "steps: expected [{}], got [{}]",
            steps.join(", "),
            ran.taken.join(", ")
        ));
    }
    if let Some(want) = &expect.skipped
        && want.as_slice() != ran.skipped
    {
        differences.push(format!(
            "skipped: expected [{}], got [{}]",
            want.join(", "),
            ran.skipped.join(", ")
        ));
    }
    for (key, want) in &expect.outputs {
        let got = ran.outputs.get(key);
        diff(
            &format!("outputs.{key}"),
            want,
            got,
            false,
            &mut differences,
        );
    }
    for (inputs, exact) in [(&expect.inputs, false), (&expect.inputs_exact, true)] {
        let what = if exact { "inputs_exact" } else { "inputs" };
        for (step, want) in inputs {
            let calls: Vec<&Value> = ran
                .calls
                .iter()
                .filter(|(address, _)| is_step(address, step))
                .map(|(_, inputs)| inputs)
                .collect();
            let path = format!("{what}.{step}");
            match (want, calls.last()) {
                (_, None) => differences.push(format!("{path}: the step called no action")),
                (Value::Array(each), Some(_)) => {
                    if each.len() != calls.len() {
                        differences.push(format!(
                            "{path}: expected {} calls, got {}: {}",
                            each.len(),
                            calls.len(),
                            shown(&Value::Array(calls.iter().map(|v| (*v).clone()).collect()))
                        ));
                    }
                    for (i, (want, got)) in each.iter().zip(&calls).enumerate() {
                        diff(
                            &format!("{path}[{i}]"),
                            want,
                            Some(got),
                            exact,
                            &mut differences,
                        );
                    }
                }
                (want, Some(last)) => diff(&path, want, Some(last), exact, &mut differences),
            }
        }
    }
    for (step, want) in &expect.attempts {
        let got = ran.attempts.get(step).copied().unwrap_or_else(|| {
            // A step the run does not record on its own (nested in the executor): its calls.
            ran.calls.iter().filter(|(a, _)| is_step(a, step)).count() as u32
        });
        if got != *want {
            differences.push(format!("attempts.{step}: expected {want}, got {got}"));
        }
    }
    for (key, want) in &expect.values {
        let got = ran.values.get(key);
        if got.is_none() {
            let set: Vec<&str> = ran.values.keys().map(String::as_str).collect();
            differences.push(format!(
                "values.{key}: expected {}, but no step set it (set: [{}])",
                shown(want),
                set.join(", ")
            ));
            continue;
        }
        diff(&format!("values.{key}"), want, got, false, &mut differences);
    }
    differences
}

/// The differences between `want` and `got` at `path`, one line each, naming the place: maps key
/// by key (with `exact`, keys `want` does not list are differences too), lists item by item,
/// numbers by value (`3` equals `3.0`).
fn diff(path: &str, want: &Value, got: Option<&Value>, exact: bool, out: &mut Vec<String>) {
    let Some(got) = got else {
        out.push(format!("{path}: expected {}, got nothing", shown(want)));
        return;
    };
    match (want, got) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, w) in want {
                diff(&format!("{path}.{key}"), w, got.get(key), exact, out);
            }
            if exact {
                for (key, g) in got {
                    if !want.contains_key(key) {
                        out.push(format!("{path}.{key}: not expected, got {}", shown(g)));
                    }
                }
            }
        }
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                diff(&format!("{path}[{i}]"), w, Some(g), exact, out);
            }
        }
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{path}: expected {}, got {}", shown(w), shown(g))),
    }
}

/// A value as compact JSON, cut to a readable length.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_name_each_place() {
        let mut out = Vec::new();
        let want = json!({ "job": "j-1", "opts": { "region": "eu-west-1", "tags": [1, 2] } });
        let got = json!({ "job": "j-2", "opts": { "tags": [1, 3], "extra": true }, "more": 1.0 });
        diff("inputs.poll", &want, Some(&got), false, &mut out);
        assert_eq!(
            out,
            [
                "inputs.poll.job: expected \"j-1\", got \"j-2\"",
                "inputs.poll.opts.region: expected \"eu-west-1\", got nothing",
                "inputs.poll.opts.tags[1]: expected 2, got 3",
            ]
        );
        out.clear();
        diff(
            "inputs_exact.poll",
            &json!({ "more": 1 }),
            Some(&got),
            true,
            &mut out,
        );
        assert_eq!(
            out,
            [
                "inputs_exact.poll.job: not expected, got \"j-2\"",
                "inputs_exact.poll.opts: not expected, got {\"extra\":true,\"tags\":[1,3]}",
            ]
        );
    }

    #[test]
    fn a_call_address_names_its_step() {
        for address in [
            "isolate",
            "isolate[2]",
            "contain.branch_1.isolate",
            "isolate@call_step",
        ] {
            assert!(is_step(address, "isolate"), "{address}");
        }
        assert!(!is_step("isolated", "isolate"));
        assert!(!is_step("call_step@isolate", "isolate"));
    }
}
