//! The playbook file format, as written by playbook authors. Parsed with serde (unknown keys are
//! errors); `playbook::load` turns it into a [`super::Compiled`] playbook with every Rhai part compiled
//! and every problem located at `file:line:column`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::AlertState;
use crate::config::HumanDuration;

/// One playbook file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Unique, stable id: `aws-ec2-compromise`. Runs, tests and `call` steps name it.
    pub id: String,
    /// One line for humans.
    pub name: String,
    /// More words for humans: what it does and when.
    #[serde(default)]
    pub description: Option<String>,
    /// Which alerts start it. A playbook without `on` runs only when called or triggered by hand.
    #[serde(default)]
    pub on: Option<Trigger>,
    /// Rhai expression giving the concurrency key: one active run per key and playbook (default
    /// `incident.id`: one run per incident). Later alerts of the incident are visible to the running
    /// run as `incident.alerts`.
    #[serde(default)]
    pub concurrency: Option<String>,
    /// Record what side-effect steps would do, without doing it.
    #[serde(default)]
    pub dry_run: bool,
    /// Inputs a `call` step (or a manual trigger) passes in, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Constants for the steps, as `vars.<name>`; values may be `${{ }}` templates.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// What it does, in order.
    pub steps: Vec<Step>,
    /// What the run returns (to a caller, and in `cordon runs show`), as templates.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// Offline test cases for `cordon test`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// Which alerts start a playbook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Source names (`aws.guardduty`, ...); one name or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub source: Vec<String>,
    /// The alert's state at its source that starts it: `firing`, `resolved` or `suppressed`, one
    /// or a list. Absent means `firing` only, so a source's "resolved" starts no playbook written
    /// for the alert itself.
    #[serde(default, deserialize_with = "one_state_or_many")]
    pub state: Option<Vec<AlertState>>,
    /// Rhai condition over `alert` and `incident`; absent means every alert of those sources.
    #[serde(default)]
    pub when: Option<String>,
}

impl Trigger {
    /// Whether an alert in `state` at its source may start the playbook (see [`Trigger::state`]).
    pub fn takes(&self, state: AlertState) -> bool {
        match &self.state {
            Some(states) => states.contains(&state),
            None => state == AlertState::Firing,
        }
    }
}

/// An input of a called playbook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// `string`, `number`, `bool`, `list`, `map` or `any` (default).
    #[serde(default = "any_type", rename = "type")]
    pub kind: String,
    /// A caller must give it (unless it has a `default`).
    #[serde(default)]
    pub required: bool,
    /// The value when a caller does not give it.
    #[serde(default)]
    pub default: Option<Value>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

fn any_type() -> String {
    "any".to_owned()
}

/// One step. Exactly one of `uses`, `script`, `approval`, `foreach`, `parallel`, `call`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the playbook; later steps read `steps.<id>`.
    pub id: String,
    /// Rhai condition; the step is skipped when false.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// An action by name (`core.log`, `aws-ec2.isolate_instance`) ...
    #[serde(default)]
    pub uses: Option<String>,
    /// ... with these inputs (values may be `${{ }}` templates).
    #[serde(default, rename = "with")]
    pub inputs: BTreeMap<String, Value>,
    /// A Rhai script; its last expression is the step's output.
    #[serde(default)]
    pub script: Option<String>,
    /// Wait for people to approve.
    #[serde(default)]
    pub approval: Option<ApprovalSpec>,
    /// Run nested steps for each item of a list.
    #[serde(default)]
    pub foreach: Option<Foreach>,
    /// Run branches of steps side by side.
    #[serde(default)]
    pub parallel: Option<Vec<Branch>>,
    /// Run another playbook with inputs; its outputs are this step's output.
    #[serde(default)]
    pub call: Option<Call>,
    /// Try again when the step fails.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Longest one attempt may take.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// `fail` (default) ends the run when the step fails; `continue` goes on, with
    /// `steps.<id>.ok == false` and `steps.<id>.error` set.
    #[serde(default)]
    pub on_error: OnError,
}

/// What a failed step does to its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// End the run.
    #[default]
    Fail,
    /// Go on with the next step.
    Continue,
}

/// Retries of a failing step, with exponential backoff.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (default 3).
    #[serde(default = "three")]
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one (default `1s`).
    #[serde(default = "one_second")]
    pub backoff: HumanDuration,
    /// Longest wait between attempts (default `1m`).
    #[serde(default = "one_minute")]
    pub max_delay: HumanDuration,
}

fn three() -> u32 {
    3
}

fn one_second() -> HumanDuration {
    HumanDuration::secs(1)
}

fn one_minute() -> HumanDuration {
    HumanDuration::secs(60)
}

/// An approval request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// What people are asked (a template).
    pub prompt: String,
    /// The approver group from the config.
    pub approvers: String,
    /// Distinct approvers needed (default 1).
    #[serde(default = "one")]
    pub quorum: u32,
    /// How long to wait (default `1h`).
    #[serde(default = "one_hour")]
    pub timeout: HumanDuration,
    /// The decision when the timeout falls (default `reject`).
    #[serde(default)]
    pub on_timeout: TimeoutDecision,
}

fn one() -> u32 {
    1
}

fn one_hour() -> HumanDuration {
    HumanDuration::secs(3600)
}

/// The decision taken when an approval times out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutDecision {
    /// As if denied.
    #[default]
    Reject,
    /// As if approved.
    Approve,
}

/// Nested steps for each item of a list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Foreach {
    /// Rhai expression giving the list.
    pub items: String,
    /// The name the item has in the nested steps (default `item`).
    #[serde(default = "item_name", rename = "as")]
    pub name: String,
    /// Items run at once (default 1).
    #[serde(default = "one")]
    pub concurrency: u32,
    /// The steps run for each item.
    pub steps: Vec<Step>,
}

fn item_name() -> String {
    "item".to_owned()
}

/// One branch of a `parallel` step.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// The branch's steps, in order.
    pub steps: Vec<Step>,
}

/// A call of another playbook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The called playbook's id.
    pub playbook: String,
    /// Its inputs, by name (values may be `${{ }}` templates).
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

/// One offline test case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows, for the test report.
    pub name: String,
    /// The alert: a file (relative to the playbook file) holding a source payload ...
    #[serde(default)]
    pub alert: Option<String>,
    /// ... of this source (default: the playbook's first trigger source).
    #[serde(default)]
    pub source: Option<String>,
    /// Canned results per action step id: `{output: ...}` or `{error: "..."}`, or a list of them,
    /// one per call in order (each attempt is a call; the last is used again when the list runs
    /// out), to test polling: `[{error: pending, retryable: true}, {output: {...}}]`.
    #[serde(default)]
    pub actions: BTreeMap<String, CannedResults>,
    /// Decisions per approval step id: `approve`, `deny` or `timeout`.
    #[serde(default)]
    pub approvals: BTreeMap<String, String>,
    /// Inputs, for playbooks that take them.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    pub expect: Expectation,
}

/// A canned action result in a test.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CannedResult {
    /// The action's output, as if it succeeded.
    #[serde(default)]
    pub output: Option<Value>,
    /// The action's error, as if it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// With `error`: a failure that may pass by itself (an outage, a rate limit, an integration's
    /// `retry_later`), so the step's `retry` applies. Default false: the step fails at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

/// One canned result for every call of a step, or one per call in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CannedResults(pub Vec<CannedResult>);

impl CannedResults {
    /// The result of call `n` (0-based) of the step: the `n`th, or the last when there are fewer.
    pub fn nth(&self, n: usize) -> Option<&CannedResult> {
        self.0.get(n).or(self.0.last())
    }
}

impl Serialize for CannedResults {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CannedResults {
    /// A map (one result) or a list of maps. A visitor rather than an untagged enum, so a wrong
    /// value gets a message saying what is expected, at the value.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrList;

        impl<'de> serde::de::Visitor<'de> for OneOrList {
            type Value = CannedResults;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a canned result ({output: ...} or {error: ...}) or a list of them")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CannedResults, A::Error> {
                let one =
                    CannedResult::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CannedResults(vec![one]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CannedResults, A::Error> {
                let mut all = Vec::new();
                while let Some(one) = seq.next_element::<CannedResult>()? {
                    all.push(one);
                }
                Ok(CannedResults(all))
            }
        }

        deserializer.deserialize_any(OneOrList)
    }
}

/// What a test case expects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Final run status: `succeeded`, `failed`, `cancelled`, `waiting`, `needs_decision`, or
    /// `not_matched` (the trigger's `when` was false).
    pub status: String,
    /// Step ids that ran (not skipped), in order. Absent: not checked.
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    /// Step ids that were skipped. Absent: not checked.
    #[serde(default)]
    pub skipped: Option<Vec<String>>,
    /// Outputs the run must return (only the keys listed are checked).
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// Per action step id, the inputs its action was called with, templates rendered: the keys
    /// listed are compared (in maps within too), others may be there. A map is the last call's
    /// inputs; a list gives one map per call, in order (each attempt and each `foreach` item is a
    /// call).
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// As `inputs`, compared whole: no key may be missing or added.
    #[serde(default)]
    pub inputs_exact: BTreeMap<String, Value>,
    /// Per step id, the attempts it took (the first included).
    #[serde(default)]
    pub attempts: BTreeMap<String, u32>,
    /// Values set with `core.set`, by key (the last value set; only the keys listed are checked).
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
}

/// Every status a test case may expect.
pub const TEST_STATUSES: [&str; 6] = [
    "succeeded",
    "failed",
    "cancelled",
    "waiting",
    "needs_decision",
    "not_matched",
];

/// One name or a list of names. A visitor rather than an untagged enum, so a wrong value gets a
/// message saying what is expected, at the value, instead of "data did not match any variant".
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a source name or a list of source names")
        }

        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Vec<String>, E> {
            Ok(vec![name.to_owned()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut names = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                names.push(name);
            }
            Ok(names)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// `state: resolved` or `state: [resolved, suppressed]`; an unknown name says which are known.
fn one_state_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<AlertState>>, D::Error> {
    struct OneOrMany;

    fn state<E: serde::de::Error>(name: &str) -> Result<AlertState, E> {
        AlertState::from_name(name).ok_or_else(|| {
            E::custom(format!(
                "unknown state `{name}`; states are `firing`, `resolved` and `suppressed`"
            ))
        })
    }

    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<AlertState>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a state (`firing`, `resolved`, `suppressed`) or a list of states")
        }

        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Vec<AlertState>, E> {
            Ok(vec![state(name)?])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<AlertState>, A::Error> {
            let mut states = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                states.push(state(&name)?);
            }
            Ok(states)
        }
    }

    deserializer.deserialize_any(OneOrMany).map(Some)
}
