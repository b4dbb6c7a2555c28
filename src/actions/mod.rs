//! Actions: what `uses:` steps call, by name. Each describes itself (inputs with types, whether it
//! has side effects and is idempotent), so playbooks are checked against it when they load.

pub mod builtin;

use std::collections::BTreeMap;

use serde::Serialize;

/// The type of an action input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    String,
    Number,
    Bool,
    List,
    Map,
    Any,
}

impl InputType {
    /// Whether a literal JSON value fits (templates are checked when they render).
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        matches!(
            (self, value),
            (InputType::Any, _)
                | (InputType::String, String(_))
                | (InputType::Number, Number(_))
                | (InputType::Bool, Bool(_))
                | (InputType::List, Array(_))
                | (InputType::Map, Object(_))
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Bool => "bool",
            InputType::List => "list",
            InputType::Map => "map",
            InputType::Any => "any",
        }
    }
}

/// One input of an action.
#[derive(Debug, Clone, Serialize)]
pub struct InputSpec {
    pub kind: InputType,
    pub required: bool,
    pub description: String,
}

/// What an action is, as playbooks and `cordon actions list` see it.
#[derive(Debug, Clone, Serialize)]
pub struct ActionSpec {
    /// `core.log`, `aws-ec2.isolate_instance`.
    pub name: String,
    pub description: String,
    pub inputs: BTreeMap<String, InputSpec>,
    /// Changes something outside Cordon (guardrails, dry runs and the crash rule apply).
    pub side_effect: bool,
    /// Safe to run twice with the same idempotency key.
    pub idempotent: bool,
}

/// The actions a playbook may name, for validation. The engine's registry implements it.
pub trait Catalog: Send + Sync {
    fn action(&self, name: &str) -> Option<&ActionSpec>;
    fn names(&self) -> Vec<String>;
}

/// A catalog from a list of specs (tests, `cordon validate`).
#[derive(Debug, Clone, Default)]
pub struct SpecCatalog(pub BTreeMap<String, ActionSpec>);

impl SpecCatalog {
    pub fn new(specs: impl IntoIterator<Item = ActionSpec>) -> SpecCatalog {
        SpecCatalog(specs.into_iter().map(|s| (s.name.clone(), s)).collect())
    }
}

impl Catalog for SpecCatalog {
    fn action(&self, name: &str) -> Option<&ActionSpec> {
        self.0.get(name)
    }

    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// The built-in actions' descriptions.
pub fn builtin_specs() -> Vec<ActionSpec> {
    let input = |kind, required, description: &str| InputSpec {
        kind,
        required,
        description: description.to_owned(),
    };
    vec![
        ActionSpec {
            name: "core.log".into(),
            description: "Write a message to the run's log and the server log.".into(),
            inputs: BTreeMap::from([
                ("message".into(), input(InputType::String, true, "what to log")),
                ("level".into(), input(InputType::String, false, "info (default), warn or error")),
            ]),
            side_effect: false,
            idempotent: true,
        },
        ActionSpec {
            name: "core.http".into(),
            description: "Call an HTTP endpoint on a host the playbook allows (config: playbooks.http_allow).".into(),
            inputs: BTreeMap::from([
                ("url".into(), input(InputType::String, true, "https URL")),
                ("method".into(), input(InputType::String, false, "GET (default), POST, PUT, PATCH, DELETE")),
                ("headers".into(), input(InputType::Map, false, "request headers")),
                ("json".into(), input(InputType::Any, false, "JSON body")),
                ("idempotent".into(), input(InputType::Bool, false, "safe to repeat after a crash (default: by method; GET, PUT, DELETE yes; POST, PATCH no)")),
            ]),
            side_effect: true,
            idempotent: false,
        },
        ActionSpec {
            name: "core.sleep".into(),
            description: "Wait, durably: a restart resumes the wait where it was.".into(),
            inputs: BTreeMap::from([("duration".into(), input(InputType::String, true, "e.g. 30s, 5m"))]),
            side_effect: false,
            idempotent: true,
        },
        ActionSpec {
            name: "core.set".into(),
            description: "Store a value on the incident, for later runs and the report.".into(),
            inputs: BTreeMap::from([
                ("key".into(), input(InputType::String, true, "name of the value")),
                ("value".into(), input(InputType::Any, true, "the value")),
            ]),
            side_effect: false,
            idempotent: true,
        },
    ]
}
