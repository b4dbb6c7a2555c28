//! A run: one execution of a playbook, persisted as one record after every step.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a run stands. `queued → running → waiting → running → succeeded | failed | cancelled`;
/// `needs_decision` holds a run whose non-idempotent step may have run when the process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Waiting,
    NeedsDecision,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::NeedsDecision => "needs_decision",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded as started before a side effect; if the process dies here, the crash rule applies.
    Started,
    /// Failed an attempt and waits for the next one.
    Retrying,
    /// Waits for an approval or a durable sleep.
    Waiting,
    NeedsDecision,
    Succeeded,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Retrying => "retrying",
            StepStatus::Waiting => "waiting",
            StepStatus::NeedsDecision => "needs_decision",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision on an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The identity the person decided with: `slack:U123`, `token:<id>`, `oidc:<subject>`;
    /// `system` for timeouts.
    pub identity: String,
    /// The person who decided (absent for timeouts, and on decisions stored before people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    pub approve: bool,
    pub at: DateTime<Utc>,
    /// Where it came from: `api`, `cli`, `slack`, `teams`, `discord`, `timeout`.
    pub via: String,
}

impl Decision {
    /// The person who decided, or the identity where no person is recorded.
    pub fn who(&self) -> &str {
        self.person.as_deref().unwrap_or(&self.identity)
    }

    /// How messages and reports name who decided ([`crate::model::people::shown_as`]): a chat
    /// identity as itself, a token or OIDC login as its person.
    pub fn shown(&self) -> String {
        let person = serde_json::json!({ "person": self.person });
        crate::model::people::shown_as(Some(&self.identity), &person).unwrap_or_default()
    }
}

/// An approval request inside a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub prompt: String,
    pub group: String,
    pub quorum: u32,
    pub timeout_at: DateTime<Utc>,
    pub on_timeout_approve: bool,
    pub decisions: Vec<Decision>,
    /// `Some(true)` approved, `Some(false)` rejected; `None` while open.
    pub outcome: Option<bool>,
    /// What the steps after the approval will do, as far as it is known when it is asked: each
    /// `{ step, action, inputs, note? }` (a note when a guardrail will stop it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Value>,
}

impl ApprovalState {
    /// Distinct people that approved (an identity stands for itself on decisions stored before
    /// people were known).
    pub fn approvers(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .decisions
            .iter()
            .filter(|d| d.approve)
            .map(Decision::who)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The state of one step in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub output: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The side-effect action the step called (for its undo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The resolved inputs of a side-effect action, recorded before it runs.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub inputs: Value,
    /// `run id:step id`, handed to side-effect actions so a retry is recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When the next attempt (or a durable sleep) is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    /// A dry run recorded this instead of calling the action.
    #[serde(default)]
    pub dry_run: bool,
    /// The step's undo, once a person asked for it: the undo action, who, when, its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone: Option<Value>,
    /// A `call` step: the id of the child run it started and waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
}

impl StepState {
    pub fn new(status: StepStatus) -> StepState {
        StepState {
            status,
            attempts: 0,
            started_at: None,
            finished_at: None,
            output: Value::Null,
            error: None,
            action: None,
            inputs: Value::Null,
            idempotency_key: None,
            due_at: None,
            approval: None,
            dry_run: false,
            undone: None,
            child: None,
        }
    }

    /// What expressions see as `steps.<id>`.
    pub fn view(&self) -> Value {
        json!({
            "ok": self.status == StepStatus::Succeeded,
            "skipped": self.status == StepStatus::Skipped,
            "output": self.output,
            "error": self.error,
            "approved": self.approval.as_ref().and_then(|a| a.outcome).unwrap_or(false),
            "decided_by": self.approval.as_ref().map(|a| a.decisions.iter().map(|d| d.identity.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `alert`, `manual`, `call`.
    pub kind: String,
    /// The identity that started a manual run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The person who started a manual run: they may not approve it, from any platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// The run and step that started a child run (a `call` step), which waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub run: String,
    /// The call step's address in the parent run.
    pub step: String,
}

/// One execution of a playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub playbook: String,
    /// Set on the child run of a `call` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    pub status: RunStatus,
    pub trigger: Trigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// One active run per playbook and key.
    pub concurrency_key: String,
    #[serde(default)]
    pub inputs: Value,
    #[serde(default)]
    pub vars: Value,
    /// Step ids in the order they were reached.
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub steps: BTreeMap<String, StepState>,
    /// The next top-level step to run.
    #[serde(default)]
    pub cursor: usize,
    #[serde(default)]
    pub outputs: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Run {
    /// A queued run of `playbook`, created at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        playbook: &str,
        trigger: Trigger,
        incident_id: Option<String>,
        alert_id: Option<String>,
        concurrency_key: String,
        inputs: Value,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Run {
        Run {
            id,
            playbook: playbook.to_owned(),
            parent: None,
            status: RunStatus::Queued,
            trigger,
            incident_id,
            alert_id,
            concurrency_key,
            inputs,
            vars: Value::Null,
            order: Vec::new(),
            steps: BTreeMap::new(),
            cursor: 0,
            outputs: Value::Null,
            error: None,
            dry_run,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// `steps` as the top level's expressions see it.
    pub fn steps_view(&self) -> Value {
        self.steps_view_at("")
    }

    /// `steps` as expressions see it inside the `foreach` items `indices` (`""` at the top level,
    /// `"[2]"` in item 2, `"[2][0]"` one level deeper): every step by its id, a nested step's state
    /// being the one of this item (or of the enclosing items it is in), never another item's.
    pub fn steps_view_at(&self, indices: &str) -> Value {
        let mut chosen: BTreeMap<&str, (usize, &StepState)> = BTreeMap::new();
        for (address, state) in &self.steps {
            let parts = Address::parse(address);
            if parts.called.is_some() {
                continue;
            }
            let level = parts.indices;
            let within = indices.starts_with(level)
                && (level.len() == indices.len() || indices[level.len()..].starts_with('['));
            if !within {
                continue;
            }
            match chosen.get(parts.id) {
                Some((depth, _)) if *depth > level.len() => {}
                _ => {
                    chosen.insert(parts.id, (level.len(), state));
                }
            }
        }
        Value::Object(
            chosen
                .into_iter()
                .map(|(id, (_, s))| (id.to_owned(), s.view()))
                .collect(),
        )
    }

    /// The open approval the run waits on, if any.
    pub fn open_approval(&self) -> Option<(&str, &ApprovalState)> {
        self.steps.iter().find_map(|(id, s)| match &s.approval {
            Some(a) if a.outcome.is_none() && s.status == StepStatus::Waiting => {
                Some((id.as_str(), a))
            }
            _ => None,
        })
    }

    /// Whether a waiting run has something to do at `now`: a decided approval, or a time that came.
    pub fn ready(&self, now: DateTime<Utc>) -> bool {
        self.steps.values().any(|s| match s.status {
            StepStatus::Waiting | StepStatus::Retrying => match &s.approval {
                Some(a) if a.outcome.is_none() => a.timeout_at <= now,
                Some(_) => true,
                None => s.due_at.is_none_or(|due| due <= now),
            },
            _ => false,
        })
    }

    /// When the run next has work to do: now while it is in progress or ready, its wake time
    /// while it waits, never once finished or held for a person. What replicas sharing a store
    /// claim runs by.
    pub fn due_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.status {
            RunStatus::Queued | RunStatus::Running => Some(now),
            RunStatus::Waiting if self.ready(now) => Some(now),
            RunStatus::Waiting => self.wake_at(),
            RunStatus::NeedsDecision
            | RunStatus::Succeeded
            | RunStatus::Failed
            | RunStatus::Cancelled => None,
        }
    }

    /// The earliest time the run must wake by itself (approval timeout, retry, sleep).
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        self.steps
            .values()
            .filter(|s| matches!(s.status, StepStatus::Waiting | StepStatus::Retrying))
            .filter_map(|s| match &s.approval {
                Some(a) if a.outcome.is_none() => Some(a.timeout_at),
                _ => s.due_at,
            })
            .min()
    }
}

/// A step's address in a run, split into its parts. A top-level step's address is its id; a step
/// in a `parallel` branch has the parallel step and the branch before it (`contain.branch_1.isolate`);
/// a step in a `foreach` item has the item's index after it (`isolate[2]`, and `[2][0]` one level
/// deeper); a step of a called playbook is named through its caller's call step
/// (`disable_key@contain_user`, where the called run holds `disable_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    /// The step's id in its playbook.
    pub id: &'a str,
    /// The parallel branches around it, with the trailing dot: `contain.branch_1.`.
    pub path: &'a str,
    /// The foreach indices around it: `[2]`.
    pub indices: &'a str,
    /// For `callee@call`: the call step's address in this run (the part after `@`), the rest being
    /// the address in the called run.
    pub called: Option<(&'a str, &'a str)>,
}

impl<'a> Address<'a> {
    pub fn parse(address: &'a str) -> Address<'a> {
        if let Some((inner, call)) = address.rsplit_once('@') {
            let mut parts = Address::parse(call);
            parts.called = Some((inner, call));
            return parts;
        }
        let (head, indices) = match address.find('[') {
            Some(at) => address.split_at(at),
            None => (address, ""),
        };
        let (path, id) = match head.rfind('.') {
            Some(at) => (&head[..=at], &head[at + 1..]),
            None => ("", head),
        };
        Address {
            id,
            path,
            indices,
            called: None,
        }
    }
}

/// The idempotency key of the step at `address` in run `run`: `run:step` at the top level,
/// `run:step:2` for item 2 of a foreach, `run:contain.branch_1.step` in a parallel branch.
pub fn idempotency_key(run: &str, address: &str) -> String {
    joined(run, ':', address, ':')
}

/// `run`, `join`, then `address` with each foreach index `[i]` written `<index>i`: the address as
/// part of a key or an id, where brackets do not go.
pub fn joined(run: &str, join: char, address: &str, index: char) -> String {
    let mut out = format!("{run}{join}");
    for c in address.chars() {
        match c {
            '[' => out.push(index),
            ']' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_their_parts() {
        let a = Address::parse("isolate[2]");
        assert_eq!(
            (a.path, a.id, a.indices, a.called),
            ("", "isolate", "[2]", None)
        );
        let a = Address::parse("contain.branch_1.isolate");
        assert_eq!(
            (a.path, a.id, a.indices),
            ("contain.branch_1.", "isolate", "")
        );
        let a = Address::parse("p.b.s[1][0]");
        assert_eq!((a.path, a.id, a.indices), ("p.b.", "s", "[1][0]"));
        let a = Address::parse("disable@contain[3]");
        assert_eq!(a.called, Some(("disable", "contain[3]")));
        assert_eq!((a.id, a.indices), ("contain", "[3]"));
        let a = Address::parse("x@inner@outer");
        assert_eq!(a.called, Some(("x@inner", "outer")));
        assert_eq!(idempotency_key("r1", "isolate[2]"), "r1:isolate:2");
        assert_eq!(idempotency_key("r1", "s[1][0]"), "r1:s:1:0");
        assert_eq!(idempotency_key("r1", "isolate"), "r1:isolate");
    }

    #[test]
    fn a_foreach_item_sees_its_own_nested_steps_and_the_top_level() {
        let mut run = Run::new(
            "r".into(),
            "p",
            Trigger {
                kind: "alert".into(),
                by: None,
                person: None,
            },
            None,
            None,
            String::new(),
            Value::Null,
            false,
            Utc::now(),
        );
        let mut done = |address: &str, output: Value| {
            let mut s = StepState::new(StepStatus::Succeeded);
            s.output = output;
            run.steps.insert(address.to_owned(), s);
        };
        done("first", json!("top"));
        done("inner[0]", json!(0));
        done("inner[1]", json!(1));
        done("inner[1][0]", json!(10));
        done("inner[12]", json!(12));
        done("p.branch_1.leaf", json!("leaf"));
        let view = run.steps_view_at("[1]");
        assert_eq!(view["inner"]["output"], json!(1));
        assert_eq!(view["first"]["output"], json!("top"));
        assert_eq!(view["leaf"]["output"], json!("leaf"));
        assert_eq!(run.steps_view_at("[1][0]")["inner"]["output"], json!(10));
        assert_eq!(run.steps_view_at("[12]")["inner"]["output"], json!(12));
        assert!(run.steps_view().get("inner").is_none());
    }

    #[test]
    fn statuses_are_named_as_they_are_stored() {
        let steps = [
            StepStatus::Started,
            StepStatus::Retrying,
            StepStatus::Waiting,
            StepStatus::NeedsDecision,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Skipped,
        ];
        for status in steps {
            assert_eq!(json!(status), json!(status.to_string()));
        }
        let runs = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::NeedsDecision,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ];
        for status in runs {
            assert_eq!(json!(status), json!(status.to_string()));
        }
    }
}
