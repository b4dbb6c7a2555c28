//! Actions: what `uses:` steps call, by name. Each describes itself (inputs with types, whether it
//! has side effects and is idempotent), so playbooks are checked against it when they load.

pub mod builtin;
pub mod contract;
pub mod egress;
pub mod guardrails;

pub use contract::{ActionCall, ActionError, ActionRunner};
pub use guardrails::{Guardrails, glob};

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
    /// A regular expression a string value must match as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The values allowed, when the input is one of a list.
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// The system behind the action compares this input without case (an Entra UPN, an Azure
    /// resource id, an IAM user name): protected patterns match it case-insensitively.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
}

impl InputSpec {
    /// Why `value` does not fit this input's pattern or enum, if it does not; types are checked by
    /// [`InputType::accepts`].
    pub fn misfit(&self, value: &serde_json::Value) -> Option<String> {
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            return Some(format!("must be one of {}", names.join(", ")));
        }
        if let (Some(pattern), Some(text)) = (&self.pattern, value.as_str()) {
            let whole = format!("^(?:{pattern})$");
            match regex_lite::Regex::new(&whole) {
                Ok(re) if re.is_match(text) => {}
                Ok(_) => return Some(format!("must match the pattern `{pattern}`")),
                Err(e) => return Some(format!("has an invalid pattern `{pattern}`: {e}")),
            }
        }
        None
    }
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
    /// `containment`, `evidence`, `enrichment`, `query`, `notify`; `None` for the built-ins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The action that reverses this one (`cordon runs undo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// What the output holds, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
    /// In a dry run the action is called to describe what it would do (reads only; the host
    /// refuses writes), and its answer is the step's `plan`. Otherwise a dry run records only the
    /// inputs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plans: bool,
}

impl ActionSpec {
    /// An action no catalog describes, taken as an idempotent side effect: how offline runs
    /// (`cordon test`, `cordon backtest`) treat a name they cannot look up.
    pub fn unknown_side_effect(name: &str) -> ActionSpec {
        ActionSpec {
            name: name.to_owned(),
            description: String::new(),
            inputs: BTreeMap::new(),
            side_effect: true,
            idempotent: true,
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
        }
    }
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
        pattern: None,
        allowed: None,
        case_insensitive: false,
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
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
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
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
        },
        ActionSpec {
            name: "core.sleep".into(),
            description: "Wait, durably: a restart resumes the wait where it was.".into(),
            inputs: BTreeMap::from([("duration".into(), input(InputType::String, true, "e.g. 30s, 5m"))]),
            side_effect: false,
            idempotent: true,
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
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
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
        },
        ActionSpec {
            name: "core.hunt".into(),
            description: "Everything Cordon holds about one entity (IP address, principal, resource, pod, key) over a window: alerts, incidents, evidence, actions taken, decisions, and the entities seen with it (docs/search.md). With `record: true`, adds a `hunt` evidence record summing it up to the run's incident.".into(),
            inputs: BTreeMap::from([
                ("entity".into(), input(InputType::String, true, "the entity: an IP address, actor id or key, resource id or name, domain")),
                ("window".into(), input(InputType::String, false, "how far back from now: 30m, 24h, 7d (default), 2w")),
                ("record".into(), input(InputType::Bool, false, "add a `hunt` evidence record to the incident (default false)")),
            ]),
            side_effect: false,
            idempotent: true,
            kind: None,
            undo: None,
            outputs: Some("entity, since, until, alerts, alerts_truncated, incidents, incident_ids, evidence, actions, decisions, co_occurring".into()),
            plans: false,
        },
        ActionSpec {
            name: "chat.notify".into(),
            description: "Post a message in the incident's chat thread on every configured platform (in the channel when the incident has no card yet).".into(),
            inputs: BTreeMap::from([("text".into(), input(InputType::String, true, "the message"))]),
            side_effect: true,
            idempotent: true,
            kind: None,
            undo: None,
            outputs: None,
            plans: false,
        },
        ActionSpec {
            name: "email.send".into(),
            description: "Send an email to a profile's recipients (config: email.profiles), through the outbox: an SMTP outage delays it and loses nothing. Text and HTML bodies; the incident report attached on request.".into(),
            inputs: BTreeMap::from([
                ("profile".into(), input(InputType::String, true, "the email profile: sender and recipients")),
                ("subject".into(), input(InputType::String, true, "the subject line")),
                ("text".into(), input(InputType::String, true, "the plain-text body")),
                ("html".into(), input(InputType::String, false, "the HTML body (default: the text, escaped)")),
                ("attach_report".into(), input(InputType::Bool, false, "attach the incident report (default false)")),
                ("report_format".into(), InputSpec {
                    allowed: Some(vec!["markdown".into(), "html".into()]),
                    ..input(InputType::String, false, "the attached report's format: markdown (default) or html")
                }),
            ]),
            side_effect: true,
            idempotent: true,
            kind: Some("notify".into()),
            undo: None,
            outputs: Some("profile, to, cc, subject, message_id, report_attached".into()),
            plans: false,
        },
        ActionSpec {
            name: "yara.scan".into(),
            description: "Scan an artifact with the configured YARA rules (config: yara.paths): a text Cordon holds (collected pod logs, a snapshot document: a step's output), a download from a host the playbook may reach (playbooks.http_allow), or an S3 object (yara.s3_credentials), at most yara.max_bytes. Matches are recorded on the incident as evidence, with the rule names and the artifact's SHA-256.".into(),
            inputs: BTreeMap::from([
                ("content".into(), input(InputType::String, false, "the artifact's text, e.g. ${{ steps.logs.output.logs[0].text }} (give content or url)")),
                ("url".into(), input(InputType::String, false, "an http(s) URL to download and scan, on a host in playbooks.http_allow (give content or url)")),
                ("headers".into(), input(InputType::Map, false, "request headers for the download (sent to the URL's host only)")),
                ("s3".into(), input(InputType::String, false, "an S3 object, s3://bucket/key, read with the credentials yara.s3_credentials names (give content, url or s3)")),
                ("region".into(), input(InputType::String, false, "the S3 object's region (default us-east-1)")),
                ("name".into(), input(InputType::String, false, "what the artifact is called in the evidence (default: the URL or S3 URI, or `content`)")),
            ]),
            side_effect: false,
            idempotent: true,
            kind: Some("evidence".into()),
            undo: None,
            outputs: Some("name, sha256, size, matched (bool), matches: [{rule, namespace, tags, strings}], evidence: the record stored when a rule matched".into()),
            plans: false,
        },
    ]
}

/// Every action the server runs: the built-ins and the integrations' actions, by name. The
/// integrations can be replaced as a whole (reload).
pub struct Registry {
    builtins: std::sync::Arc<builtin::Builtins>,
    current: std::sync::RwLock<Current>,
}

#[derive(Clone)]
struct Current {
    integrations: std::sync::Arc<crate::integrations::Integrations>,
    specs: std::sync::Arc<SpecCatalog>,
}

impl Registry {
    pub fn new(
        builtins: std::sync::Arc<builtin::Builtins>,
        integrations: crate::integrations::Integrations,
    ) -> Registry {
        Registry {
            builtins,
            current: std::sync::RwLock::new(Current::of(integrations)),
        }
    }

    /// The built-in actions (to connect chat once the outbox runs).
    pub fn builtins(&self) -> &std::sync::Arc<builtin::Builtins> {
        &self.builtins
    }

    /// The catalog playbooks are checked against.
    pub fn catalog(&self) -> std::sync::Arc<SpecCatalog> {
        self.current().specs
    }

    /// The catalog `integrations` would give, to check playbooks before [`Registry::replace`].
    pub fn catalog_with(integrations: &crate::integrations::Integrations) -> SpecCatalog {
        SpecCatalog::new(
            builtin_specs().into_iter().chain(
                Catalog::names(integrations)
                    .iter()
                    .filter_map(|n| integrations.action(n).cloned()),
            ),
        )
    }

    /// Puts a newly loaded set of integrations in place; calls already running finish on the old.
    pub fn replace(&self, integrations: crate::integrations::Integrations) {
        if let Ok(mut current) = self.current.write() {
            *current = Current::of(integrations);
        }
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Current {
    fn of(integrations: crate::integrations::Integrations) -> Current {
        Current {
            specs: std::sync::Arc::new(Registry::catalog_with(&integrations)),
            integrations: std::sync::Arc::new(integrations),
        }
    }
}

#[async_trait::async_trait]
impl ActionRunner for Registry {
    fn spec(&self, name: &str) -> Option<ActionSpec> {
        self.current().specs.action(name).cloned()
    }

    fn idempotent(&self, name: &str, inputs: &serde_json::Value) -> bool {
        if is_builtin(name) {
            self.builtins.idempotent(name, inputs)
        } else {
            self.current().integrations.idempotent(name, inputs)
        }
    }

    async fn call(
        &self,
        name: &str,
        inputs: serde_json::Value,
        call: &ActionCall,
    ) -> Result<serde_json::Value, ActionError> {
        if is_builtin(name) {
            self.builtins.call(name, inputs, call).await
        } else {
            let integrations = self.current().integrations;
            integrations.call(name, inputs, call).await
        }
    }
}

/// Whether `name` is one of the built-in actions (`core.*`, `chat.notify`, `email.send`,
/// `yara.scan`).
fn is_builtin(name: &str) -> bool {
    name.starts_with("core.")
        || name == "chat.notify"
        || name == "email.send"
        || name == "yara.scan"
}
