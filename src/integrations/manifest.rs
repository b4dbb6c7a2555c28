//! `manifest.yaml`: what an integration is, how it authenticates, where it may connect, and its
//! actions. Every problem is reported at `file:line:column`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::actions::{ActionSpec, InputSpec, InputType};
use crate::config::Diagnostic;
use crate::playbook::position::{self, Node};

/// The whole manifest file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Equals the folder name; actions are named `<name>.<action>`.
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub auth: AuthSpec,
    /// Host patterns requests may reach (`*` matches any run of characters).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Non-secret settings the config may give (`integrations.settings.<name>`).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
    /// The Rhai file holding one function per action (default `actions.rhai`).
    #[serde(default = "default_script")]
    pub script: String,
    pub actions: BTreeMap<String, ActionDef>,
}

fn default_script() -> String {
    "actions.rhai".to_owned()
}

/// How requests are authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(default)]
    pub kind: AuthKind,
    /// The key under `integrations.credentials` in the config.
    pub credentials: Option<String>,
    /// `aws_sigv4`: the service's signing name (`ec2`, `iam`, `s3`).
    pub service: Option<String>,
    /// `api_key`: the header carrying the key (default `X-API-Key`).
    pub header: Option<String>,
    /// `api_key`: written before the key in the header (`"GenieKey "` for Opsgenie).
    pub prefix: Option<String>,
    /// `json_field`: the top-level field of the JSON body the host puts the key in
    /// (`routing_key` for PagerDuty).
    pub field: Option<String>,
    /// Without credentials in the config, send requests unauthenticated instead of failing (for
    /// APIs with a keyless tier, such as GreyNoise Community).
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    #[default]
    None,
    AwsSigv4,
    AzureOauth,
    GcpOauth,
    Bearer,
    Basic,
    ApiKey,
    /// Kubernetes API servers, through `kube()` (src/integrations/kubernetes.rs).
    Kubernetes,
    /// A key in the JSON body rather than a header (PagerDuty's `routing_key`): one of the named
    /// `keys` of the credentials, picked by the request's `key` (`default` when it names none).
    JsonField,
}

impl AuthKind {
    pub fn name(self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::AwsSigv4 => "aws_sigv4",
            AuthKind::AzureOauth => "azure_oauth",
            AuthKind::GcpOauth => "gcp_oauth",
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::ApiKey => "api_key",
            AuthKind::Kubernetes => "kubernetes",
            AuthKind::JsonField => "json_field",
        }
    }
}

/// A setting's description and default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(default)]
    pub description: String,
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
}

/// What kind of thing an action does; `containment` actions must name their undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Containment,
    Evidence,
    Enrichment,
    Query,
    Notify,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Containment => "containment",
            ActionKind::Evidence => "evidence",
            ActionKind::Enrichment => "enrichment",
            ActionKind::Query => "query",
            ActionKind::Notify => "notify",
        }
    }
}

/// One action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    pub description: String,
    pub kind: ActionKind,
    pub side_effect: bool,
    pub idempotent: bool,
    pub undo: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputDef>,
    pub outputs: Option<String>,
    /// The action describes, in a dry run, what it would do (docs/integrations.md, "Dry runs").
    #[serde(default)]
    pub plans: bool,
}

/// One input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    #[serde(rename = "type")]
    pub kind: InputKind,
    #[serde(default)]
    pub required: bool,
    pub pattern: Option<String>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    #[serde(default)]
    pub description: String,
    /// The system behind the action compares this input without case (Entra UPNs, Azure
    /// resource ids, IAM user and role names): `guardrails.protected` patterns then match it
    /// case-insensitively. Default false: case counts.
    #[serde(default)]
    pub case_insensitive: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    String,
    Number,
    Bool,
    List,
    Map,
    Any,
}

impl From<InputKind> for InputType {
    fn from(kind: InputKind) -> InputType {
        match kind {
            InputKind::String => InputType::String,
            InputKind::Number => InputType::Number,
            InputKind::Bool => InputType::Bool,
            InputKind::List => InputType::List,
            InputKind::Map => InputType::Map,
            InputKind::Any => InputType::Any,
        }
    }
}

impl Manifest {
    /// Reads and checks `manifest.yaml` of the integration in `folder`.
    pub fn load(folder: &Path) -> Result<(Manifest, String), Vec<Diagnostic>> {
        let file = folder.join("manifest.yaml");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            vec![Diagnostic::new(
                &file,
                0,
                0,
                format!("cannot read the manifest: {e}"),
            )]
        })?;
        let manifest = Manifest::parse(&text, folder, &file)?;
        Ok((manifest, text))
    }

    /// Reads and checks manifest `text` of the integration in `folder`; `file` names it in
    /// diagnostics.
    pub fn parse(text: &str, folder: &Path, file: &Path) -> Result<Manifest, Vec<Diagnostic>> {
        let index = position::index(text).map_err(|e| {
            vec![Diagnostic::new(
                file,
                e.marker().line(),
                e.marker().col() + 1,
                format!("not valid YAML: {}", e.info()),
            )]
        });
        let manifest: Manifest = serde_yaml::from_str(text).map_err(|e| {
            let found = crate::config::Diagnostics::from_yaml(file, &e);
            match &index {
                // serde_yaml gives no place for its alias limit; the index's refusal has one.
                Err(refused) if found.line == 0 => refused.clone(),
                _ => vec![found],
            }
        })?;
        let root = index?;
        let problems = manifest.check(folder, file, &root);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    fn check(&self, folder: &Path, file: &Path, root: &Node) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        let mut report = |node: Option<&Node>, message: String, hint: Option<String>| {
            let pos = node.unwrap_or(root).pos();
            let mut d = Diagnostic::new(file, pos.line, pos.column, message);
            if let Some(hint) = hint {
                d = d.with_hint(hint);
            }
            problems.push(d);
        };
        let folder_name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.name != folder_name {
            report(
                root.get("name"),
                format!(
                    "the integration is named `{}` but its folder is `{folder_name}`",
                    self.name
                ),
                Some("the name and the folder must be the same".into()),
            );
        }
        if !valid_name(&self.name) {
            report(
                root.get("name"),
                format!("`{}` is not a valid integration name", self.name),
                Some("use lower-case letters, digits and `-`".into()),
            );
        }
        let auth = root.get("auth");
        let needs_credentials = self.auth.kind != AuthKind::None;
        if needs_credentials && self.auth.credentials.is_none() {
            report(
                auth,
                format!(
                    "auth `{}` needs `credentials`: the key under integrations.credentials in the config",
                    self.auth.kind.name()
                ),
                None,
            );
        }
        if self.auth.kind == AuthKind::AwsSigv4 && self.auth.service.is_none() {
            report(
                auth,
                "auth `aws_sigv4` needs `service`: the signing name (ec2, iam, s3...)".into(),
                None,
            );
        }
        if self.auth.kind == AuthKind::JsonField && self.auth.field.is_none() {
            report(
                auth,
                "auth `json_field` needs `field`: the JSON body field that carries the key".into(),
                None,
            );
        }
        // `kube()` reaches only the clusters in the config; `hosts` is for `http()`.
        if needs_credentials && self.auth.kind != AuthKind::Kubernetes && self.hosts.is_empty() {
            report(
                root.key("auth"),
                "an integration that authenticates must list the `hosts` it may reach".into(),
                None,
            );
        }
        let actions = root.get("actions");
        for (name, action) in &self.actions {
            let node = actions.and_then(|a| a.get(name));
            if !valid_action_name(name) {
                report(
                    actions.and_then(|a| a.key(name)),
                    format!("`{name}` is not a valid action name"),
                    Some("use lower-case letters, digits and `_` (it is also the function name in the script)".into()),
                );
            }
            match &action.undo {
                Some(undo) if !self.actions.contains_key(undo) => report(
                    node.and_then(|n| n.get("undo")),
                    format!("the undo of `{name}` is `{undo}`, which is not an action of this integration"),
                    None,
                ),
                None if action.kind == ActionKind::Containment => report(
                    node.and_then(|n| n.key("kind")),
                    format!("containment action `{name}` must name its `undo` action"),
                    Some("if it cannot be undone, it is not containment: say what it is (notify, evidence...) and why in the README".into()),
                ),
                _ => {}
            }
            let inputs = node.and_then(|n| n.get("inputs"));
            for (input_name, input) in &action.inputs {
                if let Some(pattern) = &input.pattern
                    && let Err(e) = regex_lite::Regex::new(pattern)
                {
                    report(
                        inputs
                            .and_then(|i| i.get(input_name))
                            .and_then(|i| i.get("pattern")),
                        format!(
                            "the pattern of input `{input_name}` is not a valid regular expression: {e}"
                        ),
                        None,
                    );
                }
            }
        }
        let script = folder.join(&self.script);
        if !script.is_file() {
            report(
                root.get("script"),
                format!("the script `{}` is not there", script.display()),
                Some("each action is a function `fn <action>(input)` in the script".into()),
            );
        }
        problems
    }

    /// The actions' descriptions as playbooks see them (`<name>.<action>`).
    pub fn specs(&self) -> Vec<ActionSpec> {
        self.actions
            .iter()
            .map(|(action, def)| ActionSpec {
                name: format!("{}.{action}", self.name),
                description: def.description.clone(),
                inputs: def
                    .inputs
                    .iter()
                    .map(|(name, input)| {
                        (
                            name.clone(),
                            InputSpec {
                                kind: input.kind.into(),
                                required: input.required,
                                description: input.description.clone(),
                                pattern: input.pattern.clone(),
                                allowed: input.allowed.clone(),
                                case_insensitive: input.case_insensitive,
                            },
                        )
                    })
                    .collect(),
                side_effect: def.side_effect,
                idempotent: def.idempotent,
                kind: Some(def.kind.name().to_owned()),
                undo: def.undo.as_ref().map(|u| format!("{}.{u}", self.name)),
                outputs: def.outputs.clone(),
                plans: def.plans,
            })
            .collect()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_action_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
