//! `cordon test`: runs playbooks' `tests:` offline, with the real executor, canned action results,
//! canned approval decisions, and virtual time (sleeps, retries and timeouts pass at once). No
//! network, no store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::exec::{Executor, Library, Memory, Progress, RunData};
use super::run::{Decision, Run, StepStatus, Trigger};
use crate::actions::builtin::Builtins;
use crate::actions::{ActionCall, ActionError, ActionRunner, ActionSpec, Guardrails, SpecCatalog};
use crate::alert::Incident;
use crate::intake::formats::SourceKind;
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
    canned: BTreeMap<String, crate::playbook::model::CannedResult>,
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
                Some(ActionSpec {
                    name: name.to_owned(),
                    description: String::new(),
                    inputs: BTreeMap::new(),
                    side_effect: true,
                    idempotent: true,
                    kind: None,
                    undo: None,
                    outputs: None,
                })
            })
    }

    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError> {
        // Canned by the step's address (`isolate[2]`) or by its id (every item alike).
        let id = crate::model::run::Address::parse(&call.step_id).id;
        if let Some(canned) = self
            .canned
            .get(&call.step_id)
            .or_else(|| self.canned.get(id))
        {
            return match &canned.error {
                Some(error) => Err(ActionError::permanent(error.clone())),
                None => Ok(canned.output.clone().unwrap_or(Value::Null)),
            };
        }
        match name {
            // The core actions that touch nothing outside run for real (no store: `core.set`
            // records its value in the step output only).
            "core.log" | "core.set" | "core.sleep" => self.core.call(name, inputs, call).await,
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
    let actions = TestActions {
        core: core.clone(),
        specs: specs.clone(),
        canned: case.actions.clone(),
    };
    let executor = Executor {
        scripts: scripts.clone(),
        actions: Arc::new(actions),
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
        return Ok(compare(case, "not_matched", &[], &[], &Value::Null, None));
    }
    let matched = match &playbook.when {
        Some(when) => scripts
            .eval_bool(when, &ctx)
            .map_err(|e| format!("`on.when` failed: {e}"))?,
        None => true,
    };
    if !matched {
        return Ok(compare(case, "not_matched", &[], &[], &Value::Null, None));
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
    Ok(compare(
        case,
        run.status.as_str(),
        &taken,
        &skipped,
        &run.outputs,
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

fn compare(
    case: &TestCase,
    status: &str,
    taken: &[String],
    skipped: &[String],
    outputs: &Value,
    error: Option<&str>,
) -> Vec<String> {
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
        && steps.as_slice() != taken
    {
        differences.push(format!(
            "steps: expected [{}], got [{}]",
            steps.join(", "),
            taken.join(", ")
        ));
    }
    if let Some(want) = &expect.skipped
        && want.as_slice() != skipped
    {
        differences.push(format!(
            "skipped: expected [{}], got [{}]",
            want.join(", "),
            skipped.join(", ")
        ));
    }
    for (key, want) in &expect.outputs {
        let got = outputs.get(key).unwrap_or(&Value::Null);
        if got != want {
            differences.push(format!("outputs.{key}: expected {want}, got {got}"));
        }
    }
    differences
}
