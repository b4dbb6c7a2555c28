//! Playbooks: the file format ([`model`]), loading ([`load`]) and validation ([`validate`], with
//! [`rhai_scan`]) with every error at `file:line:column`, the JSON Schema for editors ([`schema`]),
//! and the compiled form the engine runs ([`Compiled`]).

pub mod load;
pub mod model;
pub(crate) mod position;
pub(crate) mod rhai_scan;
pub(crate) mod samples;
pub mod schema;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use model::{ApprovalSpec, OnError, Playbook, Retry, TestCase, TimeoutDecision};

use crate::script::{CompiledValue, Expr, Template};

/// A playbook with every Rhai part compiled, ready to run.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The playbook as written.
    pub spec: Playbook,
    /// The file it came from.
    pub file: PathBuf,
    /// The trigger's condition.
    pub when: Option<Expr>,
    /// The concurrency key expression (`None`: the incident id).
    pub concurrency: Option<Expr>,
    pub vars: BTreeMap<String, CompiledValue>,
    pub steps: Vec<CompiledStep>,
    pub outputs: BTreeMap<String, CompiledValue>,
}

impl Compiled {
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// A fingerprint of the playbook as written (and where): a reload that changes it gives
    /// another. Failing `when`s are logged once per version.
    pub fn version(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.file.hash(&mut hasher);
        serde_json::to_vec(&self.spec)
            .unwrap_or_default()
            .hash(&mut hasher);
        hasher.finish()
    }

    /// Whether alerts of `source` may start it (the `when` condition is checked separately).
    pub fn listens_to(&self, source: &str) -> bool {
        self.spec
            .on
            .as_ref()
            .is_some_and(|on| on.source.iter().any(|s| s == source))
    }

    /// Whether an alert in `state` at its source may start it: `on.state` names it, or, without
    /// `on.state`, the alert is firing.
    pub fn takes_state(&self, state: crate::alert::AlertState) -> bool {
        self.spec.on.as_ref().is_some_and(|on| on.takes(state))
    }
}

/// One compiled step.
#[derive(Debug, Clone)]
pub struct CompiledStep {
    pub id: String,
    pub condition: Option<Expr>,
    pub kind: StepKind,
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub on_error: OnError,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// An action from the registry, with its inputs.
    Action {
        name: String,
        inputs: BTreeMap<String, CompiledValue>,
    },
    /// A Rhai script; its value is the step's output.
    Script(Expr),
    /// An approval request.
    Approval {
        prompt: Template,
        spec: ApprovalSpec,
    },
    /// Nested steps per item.
    Foreach {
        items: Expr,
        name: String,
        concurrency: u32,
        steps: Vec<CompiledStep>,
    },
    /// Branches side by side.
    Parallel(Vec<Vec<CompiledStep>>),
    /// Another playbook.
    Call {
        playbook: String,
        inputs: BTreeMap<String, CompiledValue>,
    },
}
