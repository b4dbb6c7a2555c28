//! Integrations: folders of manifest + Rhai that add actions without a rebuild
//! (docs/integrations.md). The host loads them, checks the playbooks that use them, and runs
//! their scripts in the sandbox with the host functions of [`host`]: HTTP only to the hosts the
//! manifest lists, with credentials applied by the host where the script cannot see them.

pub mod auth;
pub mod aws_credentials;
pub mod azure_credentials;
pub mod gcp;
mod host;
pub mod ioc;
pub mod kubernetes;
pub mod manifest;
pub mod xml;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use serde_json::{Map, Value, json};

use crate::actions::{ActionSpec, Catalog};
use crate::config::{Credentials, Diagnostic, IntegrationsConfig, Secret};
use crate::engine::exec::{ActionCall, ActionError, ActionRunner, glob};
use crate::failure::Failure;
use crate::script::Limits;
use crate::script::analysis::{self, KnownFunctions};
use crate::store::Store;
use auth::{Auth, AuthError};
use host::{CallEnv, HostError};
use ioc::IocIndex;
use manifest::{AuthKind, Manifest};

/// How long one action's script may run, HTTP calls included.
const ACTION_DEADLINE: Duration = Duration::from_secs(300);

/// Where integrations' internal addresses are allowed, for refusals (docs/integrations.md).
const ENDPOINTS_HINT: &str = "integrations.credentials.<name>.endpoints";

/// One loaded integration.
pub struct Integration {
    pub manifest: Manifest,
    pub folder: PathBuf,
    ast: AST,
    /// The auth to apply, or why there is none (credentials not configured).
    auth: Result<Auth, AuthError>,
    endpoints: BTreeMap<String, String>,
    settings: BTreeMap<String, Value>,
    /// The secret values of its credentials, blanked out of whatever a call returns or raises.
    secrets: Vec<Secret>,
    /// `json_field` auth: the body field, and the named keys a request picks from.
    body_keys: Option<(String, BTreeMap<String, Secret>)>,
    /// The egress rules its requests pass (for addresses written in a URL; names are checked by
    /// the client's resolver).
    egress: Arc<crate::actions::egress::Egress>,
    /// The largest answer a script is given (`integrations.max_response_bytes`).
    max_response_bytes: usize,
}

/// Every loaded integration, as a catalog of actions and the runner of their scripts.
pub struct Integrations {
    by_name: BTreeMap<String, Arc<Integration>>,
    specs: BTreeMap<String, ActionSpec>,
    engine: Arc<Engine>,
    http: reqwest::Client,
    ioc: Arc<IocIndex>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations")
            .field("integrations", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `folder` holds a chat platform's app manifest rather than an integration:
/// `integrations/slack/manifest.yaml` is the Slack app manifest (Slack's `display_information`
/// section), which sits with the other systems' setup files but declares no actions.
fn is_chat_app(folder: &Path) -> bool {
    std::fs::read_to_string(folder.join("manifest.yaml"))
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .is_some_and(|manifest| manifest.get("display_information").is_some())
}

impl Integrations {
    /// Loads the integrations under the configured paths: a folder holding `manifest.yaml`, or a
    /// folder of such folders. Every problem of every integration is reported.
    pub fn load(
        config: &IntegrationsConfig,
        http: reqwest::Client,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Integrations, Vec<Diagnostic>> {
        let engine = host::engine(&Limits::default());
        // What scripts may call: the host functions and Rhai's own (checked at load).
        let known = KnownFunctions::of(&engine);
        let mut problems = Vec::new();
        // Scripts reach public addresses, and internal ones only through an endpoint override:
        // the operator wrote that URL, so its host is explicitly allowed, whatever it resolves to
        // (docs/integrations.md, "Where requests may go").
        let mut egress = crate::actions::egress::Egress::default();
        for credentials in config.credentials.values() {
            for base in credentials.endpoints.values() {
                if let Some(host) = url::Url::parse(base).ok().and_then(|u| {
                    u.host_str()
                        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                }) {
                    egress.allow_host(&host);
                }
            }
        }
        // Scripts' requests never follow redirects (docs/integrations.md): a redirect would take
        // the API-key header to a host the manifest does not list, past the host check.
        let scripts_http = match egress.clone().client(ENDPOINTS_HINT) {
            Ok(client) => client,
            Err(e) => {
                problems.push(Diagnostic::new(
                    Path::new("integrations"),
                    0,
                    0,
                    format!("cannot build the HTTP client for integrations: {e}"),
                ));
                http
            }
        };
        let egress = Arc::new(egress);
        let mut folders = Vec::new();
        for path in &config.paths {
            if path.join("manifest.yaml").is_file() {
                if !is_chat_app(path) {
                    folders.push(path.clone());
                }
                continue;
            }
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.join("manifest.yaml").is_file() && !is_chat_app(p))
                        .collect();
                    found.sort();
                    folders.extend(found);
                }
                Err(e) => problems.push(Diagnostic::new(
                    path,
                    0,
                    0,
                    format!("cannot read the integrations folder: {e}"),
                )),
            }
        }
        let ioc = match IocIndex::load(&config.ioc_feeds) {
            Ok(index) => {
                if index.skipped() > 0 {
                    tracing::warn!(
                        skipped = index.skipped(),
                        indicators = index.len(),
                        "some STIX indicators have patterns the ioc integration cannot match; they are left out"
                    );
                }
                index
            }
            Err(message) => {
                let file = config.ioc_feeds.first().map(PathBuf::as_path);
                problems.push(Diagnostic::new(
                    file.unwrap_or(Path::new("integrations.ioc_feeds")),
                    0,
                    0,
                    message,
                ));
                IocIndex::default()
            }
        };
        let mut by_name = BTreeMap::new();
        let mut specs = BTreeMap::new();
        // Integrations that did not load: their settings in the config are not "for no
        // integration", they wait for it to be fixed.
        let mut broken = std::collections::BTreeSet::new();
        // One AWS identity per credentials entry, shared by the integrations that name it, so
        // aws-ec2 and aws-iam assume an account's role once, not once each.
        let aws = AwsProviders::default();
        for folder in folders {
            match Integration::load(
                &folder,
                &engine,
                &known,
                config,
                (&scripts_http, &egress, &aws),
            ) {
                Ok(integration) => {
                    let name = integration.manifest.name.clone();
                    if by_name.contains_key(&name) {
                        problems.push(Diagnostic::new(
                            &folder.join("manifest.yaml"),
                            0,
                            0,
                            format!("integration `{name}` is already loaded from another folder"),
                        ));
                        continue;
                    }
                    for spec in integration.manifest.specs() {
                        specs.insert(spec.name.clone(), spec);
                    }
                    by_name.insert(name, Arc::new(integration));
                }
                Err(mut found) => {
                    problems.append(&mut found);
                    broken.extend(folder.file_name().map(|n| n.to_string_lossy().into_owned()));
                }
            }
        }
        for name in config.settings.keys() {
            if !by_name.contains_key(name) && !broken.contains(name) {
                problems.push(Diagnostic::new(
                    Path::new("integrations.settings"),
                    0,
                    0,
                    format!(
                        "the config has settings for `{name}`, but no such integration is loaded"
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Integrations {
            by_name,
            specs,
            engine: Arc::new(engine),
            http: scripts_http,
            ioc: Arc::new(ioc),
            store,
        })
    }

    /// The loaded integrations, by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Checks inputs against the action's spec and keeps the declared ones.
    fn checked_inputs(spec: &ActionSpec, inputs: Value) -> Result<Map<String, Value>, ActionError> {
        let mut given = match inputs {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(ActionError::permanent("the inputs must be a map")),
        };
        let mut kept = Map::new();
        for (name, input) in &spec.inputs {
            match given.remove(name) {
                None | Some(Value::Null) if input.required => {
                    return Err(ActionError::permanent(format!(
                        "`{}` needs input `{name}`",
                        spec.name
                    )));
                }
                None | Some(Value::Null) => {}
                Some(value) => {
                    if !input.kind.accepts(&value) {
                        return Err(ActionError::permanent(format!(
                            "input `{name}` of `{}` must be a {}",
                            spec.name,
                            input.kind.name()
                        )));
                    }
                    if let Some(misfit) = input.misfit(&value) {
                        return Err(ActionError::permanent(format!(
                            "input `{name}` of `{}` {misfit}",
                            spec.name
                        )));
                    }
                    kept.insert(name.clone(), value);
                }
            }
        }
        Ok(kept)
    }

    /// Completes and stores the evidence records in `output`.
    async fn record_evidence(
        &self,
        name: &str,
        output: &mut Value,
        call: &ActionCall,
    ) -> Result<(), ActionError> {
        let Some(records) = output.get_mut("evidence") else {
            return Ok(());
        };
        if call.dry_run {
            // A plan collects nothing: what it lists is what would be collected.
            return Ok(());
        }
        let Some(records) = records.as_array_mut() else {
            return Err(ActionError::permanent(format!(
                "`{name}` returned `evidence` that is not a list"
            )));
        };
        let collected_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (i, record) in records.iter_mut().enumerate() {
            let Some(fields) = record.as_object_mut() else {
                return Err(ActionError::permanent(format!(
                    "evidence record {i} of `{name}` is not a map"
                )));
            };
            for required in ["kind", "location"] {
                if !fields.get(required).is_some_and(Value::is_string) {
                    return Err(ActionError::permanent(format!(
                        "evidence record {i} of `{name}` needs a `{required}` text"
                    )));
                }
            }
            fields.insert("collected_at".into(), json!(collected_at));
            fields.insert("action".into(), json!(name));
            fields.insert("run_id".into(), json!(call.run_id));
            fields.insert("step_id".into(), json!(call.step_id));
            fields.insert("incident_id".into(), json!(call.incident_id));
        }
        if let (Some(store), Some(incident)) = (&self.store, &call.incident_id) {
            store
                .add_evidence(incident, records.clone())
                .await
                .map_err(|e| {
                    ActionError::retryable(format!("could not store the evidence: {e}"))
                })?;
        }
        Ok(())
    }
}

impl Catalog for Integrations {
    fn action(&self, name: &str) -> Option<&ActionSpec> {
        self.specs.get(name)
    }

    fn names(&self) -> Vec<String> {
        self.specs.keys().cloned().collect()
    }
}

#[async_trait]
impl ActionRunner for Integrations {
    fn spec(&self, name: &str) -> Option<ActionSpec> {
        self.specs.get(name).cloned()
    }

    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError> {
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| ActionError::permanent(format!("unknown action `{name}`")))?;
        let (integration_name, action) = name.split_once('.').unwrap_or((name, ""));
        let integration = self.by_name[integration_name].clone();
        let redactor = integration.clone();
        let input = Self::checked_inputs(spec, inputs)?;
        // An action that takes an `account` acts there; any other acts in the alert's account.
        let account = input
            .get("account")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .or_else(|| call.account.clone());
        let input = rhai::serde::to_dynamic(Value::Object(input))
            .map_err(|e| ActionError::permanent(format!("the inputs do not fit a script: {e}")))?;
        let env = Arc::new(CallEnv {
            integration: integration.clone(),
            call: call.clone(),
            handle: tokio::runtime::Handle::current(),
            http: self.http.clone(),
            ioc: self.ioc.clone(),
            account,
            acted_as: Mutex::default(),
        });
        let used = env.clone();
        let engine = self.engine.clone();
        let action = action.to_owned();
        let outcome = tokio::task::spawn_blocking(move || {
            host::with_call(env, ACTION_DEADLINE, || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let options = rhai::CallFnOptions::new().eval_ast(false);
                    engine.call_fn_with_options::<Dynamic>(
                        options,
                        &mut Scope::new(),
                        &integration.ast,
                        &action,
                        (input,),
                    )
                }));
                match result {
                    Ok(Ok(value)) => rhai::serde::from_dynamic::<Value>(&value).map_err(|e| {
                        ActionError::permanent(format!("the action's output is not data: {e}"))
                    }),
                    Ok(Err(error)) => Err(script_error(&integration, *error)),
                    Err(_) => Err(ActionError::permanent(
                        "the script engine failed on this action",
                    )),
                }
            })
        })
        .await
        .unwrap_or_else(|_| Err(ActionError::permanent("the script worker failed")));
        // A script may put a credential in what it returns or throws (an API that echoes the
        // request in its error, say); none of it may reach a step output, a log or the audit.
        let mut output = outcome.map_err(|mut e| {
            e.message = redactor.redact(&e.message);
            e
        })?;
        redactor.redact_value(&mut output);
        if output.is_null() {
            output = json!({});
        }
        // Who the requests were signed as (an assumed role), recorded with the step's output and
        // in the audit's `step.finished`.
        let acted_as: Vec<String> = used
            .acted_as
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if let (false, Some(fields)) = (acted_as.is_empty(), output.as_object_mut()) {
            fields.insert("acted_as".to_owned(), json!(acted_as.join(", ")));
        }
        self.record_evidence(name, &mut output, call).await?;
        Ok(output)
    }
}

/// A script's error as the step shows it: a `throw`n text as it is; anything else with its place
/// in the script.
fn script_error(integration: &Integration, error: EvalAltResult) -> ActionError {
    let mut error = error;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = error {
        error = *inner;
    }
    match error {
        EvalAltResult::ErrorRuntime(value, _) => {
            let message = value.to_string();
            if host::was_retryable(&message) {
                ActionError::retryable(message)
            } else {
                ActionError::permanent(message)
            }
        }
        EvalAltResult::ErrorTerminated(_, _) => ActionError::retryable(format!(
            "the action ran past its deadline of {} s",
            ACTION_DEADLINE.as_secs()
        )),
        other => {
            let position = other.position();
            let place = if position.is_none() {
                String::new()
            } else {
                format!(
                    " ({}/{} line {}, column {})",
                    integration.manifest.name,
                    integration.manifest.script,
                    position.line().unwrap_or(0),
                    position.position().unwrap_or(0)
                )
            };
            let mut text = other.to_string();
            if let Some(cut) = text.rfind(" (line ") {
                text.truncate(cut);
            }
            ActionError::permanent(format!("{text}{place}"))
        }
    }
}

impl Integration {
    fn load(
        folder: &Path,
        engine: &Engine,
        known: &KnownFunctions,
        config: &IntegrationsConfig,
        (http, egress, aws): (
            &reqwest::Client,
            &Arc<crate::actions::egress::Egress>,
            &AwsProviders,
        ),
    ) -> Result<Integration, Vec<Diagnostic>> {
        let (manifest, text) = Manifest::load(folder)?;
        let manifest_file = folder.join("manifest.yaml");
        // The manifest parsed, so its position index does too; without it, places are 0:0.
        let index = crate::playbook::position::index(&text).ok();
        let place = |path: &[&str], key: bool| -> (usize, usize) {
            let Some(root) = &index else { return (0, 0) };
            let (last, parents) = path.split_last().expect("a path");
            let parent = parents.iter().try_fold(root, |node, k| node.get(k));
            let node = parent.and_then(|p| if key { p.key(last) } else { p.get(last) });
            node.map_or((0, 0), |n| (n.pos().line, n.pos().column))
        };
        let script_file = folder.join(&manifest.script);
        let source = std::fs::read_to_string(&script_file).map_err(|e| {
            vec![Diagnostic::new(
                &script_file,
                0,
                0,
                format!("cannot read the script: {e}"),
            )]
        })?;
        let ast = engine.compile(&source).map_err(|e| {
            let position = e.position();
            vec![Diagnostic::new(
                &script_file,
                position.line().unwrap_or(0),
                position.position().unwrap_or(0),
                e.err_type().to_string(),
            )]
        })?;
        let mut problems = Vec::new();
        for found in analysis::check_calls(&ast, known) {
            let mut d = Diagnostic::new(&script_file, found.line, found.column, found.message);
            d.hint = found.hint;
            problems.push(d);
        }
        for action in manifest.actions.keys() {
            let defined = ast
                .iter_functions()
                .any(|f| f.name == action.as_str() && f.params.len() == 1);
            if !defined {
                let script = &manifest.script;
                let same_name = ast.iter_functions().find(|f| f.name == action.as_str());
                let hint = match same_name {
                    Some(f) => format!(
                        "{script} has `fn {action}({})`; an action's function takes one parameter, the inputs",
                        f.params.join(", ")
                    ),
                    None => {
                        let names: Vec<&str> = ast.iter_functions().map(|f| f.name).collect();
                        names
                            .iter()
                            .map(|n| (strsim::jaro_winkler(action, n), *n))
                            .filter(|(score, _)| *score > 0.8)
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                            .map(|(_, best)| format!("{script} has `fn {best}`: did you mean it?"))
                            .unwrap_or_else(|| {
                                format!("add `fn {action}(input) {{ ... }}` to {script}")
                            })
                    }
                };
                let (line, column) = place(&["actions", action], true);
                problems.push(
                    Diagnostic::new(
                        &manifest_file,
                        line,
                        column,
                        format!(
                            "action `{action}` has no function `fn {action}(input)` in {script}"
                        ),
                    )
                    .with_hint(hint),
                );
            }
        }
        let mut settings: BTreeMap<String, Value> = manifest
            .settings
            .iter()
            .filter_map(|(k, s)| s.default.clone().map(|d| (k.clone(), d)))
            .collect();
        if let Some(given) = config.settings.get(&manifest.name) {
            for (key, value) in given {
                if !manifest.settings.contains_key(key) {
                    let known: Vec<&str> = manifest.settings.keys().map(String::as_str).collect();
                    problems.push(
                        Diagnostic::new(
                            Path::new("integrations.settings"),
                            0,
                            0,
                            format!("integration `{}` has no setting `{key}`", manifest.name),
                        )
                        .with_hint(if known.is_empty() {
                            "it takes no settings".to_owned()
                        } else {
                            format!("its settings are {}", known.join(", "))
                        }),
                    );
                }
                settings.insert(key.clone(), value.clone());
            }
        }
        let credentials = manifest
            .auth
            .credentials
            .as_ref()
            .and_then(|key| config.credentials.get(key).map(|c| (key, c)));
        let auth = match (manifest.auth.kind, credentials) {
            (AuthKind::None, _) => Ok(Auth::None),
            // Optional auth with no credentials, or an entry that only routes (`endpoints`).
            (_, None) if manifest.auth.optional => Ok(Auth::None),
            (_, Some((_, c))) if manifest.auth.optional && secrets_of(c).is_empty() => {
                Ok(Auth::None)
            }
            (_, None) => Err(AuthError::permanent(format!(
                "integration `{}` has no credentials: set integrations.credentials.{} in the config",
                manifest.name,
                manifest.auth.credentials.as_deref().unwrap_or("?")
            ))),
            (kind, Some((key, credentials))) => {
                build_auth(kind, &manifest, key, credentials, http, aws)
                    .map_err(AuthError::permanent)
                    .inspect_err(|error| {
                        let (line, column) = place(&["auth"], false);
                        problems.push(Diagnostic::new(
                            &manifest_file,
                            line,
                            column,
                            error.message.clone(),
                        ));
                    })
            }
        };
        let endpoints = credentials
            .map(|(_, c)| c.endpoints.clone())
            .unwrap_or_default();
        let mut secrets = credentials.map(|(_, c)| secrets_of(c)).unwrap_or_default();
        // A key read from a file is in no config field; its private key is a secret still.
        match &auth {
            Ok(Auth::GcpOAuth(tokens)) => secrets.extend(tokens.secrets()),
            Ok(Auth::AzureOAuth(provider)) => secrets.extend(provider.secrets()),
            _ => {}
        }
        let body_keys = match (manifest.auth.kind, &manifest.auth.field, credentials) {
            (AuthKind::JsonField, Some(field), Some((_, c))) => {
                Some((field.clone(), c.keys.clone()))
            }
            _ => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Integration {
            manifest,
            folder: folder.to_owned(),
            ast,
            auth,
            endpoints,
            settings,
            secrets,
            body_keys,
            egress: egress.clone(),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// `text` with every secret value of the integration's credentials replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            let value = secret.expose();
            if !value.is_empty() && text.contains(value) {
                text = text.replace(value, REDACTED);
            }
        }
        text
    }

    /// [`Integration::redact`] on every text of `value`, map keys included.
    fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(text) if self.secrets.iter().any(|s| text.contains(s.expose())) => {
                *text = self.redact(text);
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                let fields = std::mem::take(map);
                for (key, mut field) in fields {
                    self.redact_value(&mut field);
                    map.insert(self.redact(&key), field);
                }
            }
            _ => {}
        }
    }

    fn setting(&self, name: &str) -> Result<Value, HostError> {
        match self.settings.get(name) {
            Some(value) => Ok(value.clone()),
            None if self.manifest.settings.contains_key(name) => {
                Err(HostError::permanent(format!(
                    "setting `{name}` of integration `{}` is not set (config: integrations.settings.{}.{name})",
                    self.manifest.name, self.manifest.name
                )))
            }
            None => Err(HostError::permanent(format!(
                "integration `{}` declares no setting `{name}`",
                self.manifest.name
            ))),
        }
    }

    /// Where a request for `url` goes: the URL itself, or the configured endpoint for its host.
    fn route(&self, url: &url::Url) -> Result<url::Url, HostError> {
        let host = url.host_str().unwrap_or_default();
        let Some((_, base)) = self
            .endpoints
            .iter()
            .find(|(pattern, _)| glob(pattern, host))
        else {
            return Ok(url.clone());
        };
        let mut target = format!("{}{}", base.trim_end_matches('/'), url.path());
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        url::Url::parse(&target).map_err(|e| {
            HostError::permanent(format!(
                "the endpoint `{base}` for `{host}` is not a URL: {e}"
            ))
        })
    }

    /// For `json_field` auth: `body` with the key the request names (`key`, else `default`) in the
    /// manifest's field. The script never holds the key; an unknown name is refused naming the
    /// names there are, never a key.
    fn with_body_key(&self, body: &Value, name: Option<&str>) -> Result<Option<Value>, HostError> {
        if self.manifest.auth.kind != AuthKind::JsonField {
            return Ok(None);
        }
        self.auth.as_ref().map_err(|e| HostError::from(e.clone()))?;
        let Some((field, keys)) = &self.body_keys else {
            return Ok(None);
        };
        let name = name.unwrap_or("default");
        let key = keys.get(name).ok_or_else(|| {
            let names: Vec<&str> = keys.keys().map(String::as_str).collect();
            HostError::permanent(format!(
                "integrations.credentials.{}.keys has no `{name}` (it has {})",
                self.manifest.auth.credentials.as_deref().unwrap_or("?"),
                names.join(", ")
            ))
        })?;
        let mut body = body.clone();
        let Some(map) = body.as_object_mut() else {
            return Err(HostError::permanent(format!(
                "http: auth `json_field` of integration `{}` needs a JSON object body",
                self.manifest.name
            )));
        };
        map.insert(field.clone(), Value::String(key.expose().to_owned()));
        Ok(Some(body))
    }

    /// Sends the request a script described (docs/integrations.md, `http`).
    async fn send(&self, env: &CallEnv, request: &Value) -> Result<Value, HostError> {
        let http = &env.http;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let url = text("url").ok_or_else(|| HostError::permanent("http: `url` is required"))?;
        let mut url = url::Url::parse(url)
            .map_err(|e| HostError::permanent(format!("http: `{url}` is not a URL: {e}")))?;
        if let Some(query) = request.get("query").and_then(Value::as_object) {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, &plain(value));
            }
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        if !self
            .manifest
            .hosts
            .iter()
            .any(|pattern| glob(pattern, &host))
        {
            return Err(HostError::permanent(format!(
                "host `{host}` is not in the hosts of integration `{}`",
                self.manifest.name
            )));
        }
        let method = text("method").unwrap_or("GET").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HostError::permanent(format!("http: `{method}` is not an HTTP method")))?;
        let timeout = request
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| *t > 0.0)
            .map_or(Duration::from_secs(30), |t| {
                Duration::from_secs_f64(t.min(300.0))
            });
        let target = self.route(&url)?;
        self.egress
            .check_url(&target, ENDPOINTS_HINT)
            .map_err(|e| HostError::permanent(format!("http: {e}")))?;
        let mut builder = http.request(method, target).timeout(timeout);
        if let Some(headers) = request.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                builder = builder.header(name.as_str(), plain(value));
            }
        }
        if let Some(body) = request.get("json") {
            match self.with_body_key(body, text("key"))? {
                Some(keyed) => builder = builder.json(&keyed),
                None => builder = builder.json(body),
            }
        } else if let Some(form) = request.get("form").and_then(Value::as_object) {
            let pairs: Vec<(String, String)> =
                form.iter().map(|(k, v)| (k.clone(), plain(v))).collect();
            builder = builder.form(&pairs);
        } else if let Some(body) = text("body") {
            builder = builder.body(body.to_owned());
        }
        let mut built = builder.build().map_err(|e| {
            HostError::permanent(format!(
                "http: the request is not valid: {}",
                e.without_url()
            ))
        })?;
        let auth = self.auth.as_ref().map_err(|e| HostError::from(e.clone()))?;
        // An integration that reaches a second AWS service with the same identity (aws-ssm reads
        // the image it had uploaded from S3) names the service it signs for; the hosts still
        // bound where the request may go.
        let other_service;
        let auth = match (auth, text("service")) {
            (_, None) => auth,
            (Auth::AwsSigV4 { provider, .. }, Some(service)) => {
                if service.is_empty()
                    || !service
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(HostError::permanent(format!(
                        "http: `service` `{service}` is not an AWS service name (`s3`, `ssm`)"
                    )));
                }
                other_service = Auth::AwsSigV4 {
                    provider: provider.clone(),
                    service: service.to_owned(),
                };
                &other_service
            }
            (_, Some(_)) => {
                return Err(HostError::permanent(
                    "http: `service` names the SigV4 signing service; this integration's auth is not aws_sigv4",
                ));
            }
        };
        let region = text("region")
            .map(str::to_owned)
            .or_else(|| auth::aws_region_from_host(&host))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let scope = format!("https://{host}/.default");
        if let Some(identity) = auth
            .apply(&mut built, &region, &scope, env.account.as_deref())
            .await?
        {
            env.acted_as
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(identity);
        }
        let response = http.execute(built).await.map_err(|e| {
            if let Some(refused) = crate::actions::egress::refused(&e) {
                return HostError::permanent(format!("http: {refused}"));
            }
            HostError::new(
                Failure::from_transport(&e),
                format!("http: the request to `{host}` failed: {}", e.without_url()),
            )
        })?;
        let status = response.status();
        // An outage or a rate limit fails the call, for the run to retry; any other answer
        // (refused credentials, a 404) is the script's to read.
        if let Some(failure) = Failure::from_response(status.as_u16(), response.headers())
            && failure.is_transient()
        {
            return Err(HostError::new(
                failure,
                format!("`{host}` answered {status}; try again later"),
            ));
        }
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?))))
            .collect();
        let bytes = read_answer(
            response,
            self.max_response_bytes,
            &format!("http: from `{host}`"),
        )
        .await?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
        Ok(json!({ "status": status.as_u16(), "headers": headers, "json": parsed, "body": body }))
    }

    /// An AWS Query API call: a signed form POST; the answer's root element's content, or an
    /// error with AWS's code and message.
    async fn aws_query(&self, env: &CallEnv, request: &Value) -> Result<Value, HostError> {
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let url =
            text("url").ok_or_else(|| HostError::permanent("aws_query: `url` is required"))?;
        let action = text("action")
            .ok_or_else(|| HostError::permanent("aws_query: `action` is required"))?;
        let version = text("version")
            .ok_or_else(|| HostError::permanent("aws_query: `version` is required"))?;
        let mut form = Map::new();
        form.insert("Action".into(), json!(action));
        form.insert("Version".into(), json!(version));
        if let Some(params) = request.get("params").and_then(Value::as_object) {
            for (key, value) in params {
                form.insert(key.clone(), json!(plain(value)));
            }
        }
        let mut call = json!({ "method": "POST", "url": url, "form": form });
        if let Some(region) = text("region") {
            call["region"] = json!(region);
        }
        let answer = self.send(env, &call).await?;
        let status = answer["status"].as_u64().unwrap_or(0);
        let body = answer["body"].as_str().unwrap_or_default();
        let parsed = xml::parse(body).map_err(|e| {
            HostError::permanent(format!("{action}: the answer ({status}) is not XML: {e}"))
        })?;
        if !(200..300).contains(&status) {
            let error = find_error(&parsed);
            let code = error
                .get("Code")
                .and_then(Value::as_str)
                .unwrap_or("Unknown");
            let message = error.get("Message").and_then(Value::as_str).unwrap_or("");
            let text = format!("AWS {code}: {message}");
            let throttled = code.contains("Throttl") || code == "RequestLimitExceeded";
            return Err(if throttled {
                HostError::retryable(text)
            } else {
                HostError::permanent(text)
            });
        }
        Ok(parsed
            .as_object()
            .and_then(|root| root.values().next().cloned())
            .unwrap_or(Value::Null))
    }
}

/// An answer's body, read up to `integrations.max_response_bytes` while it streams in: one too
/// large fails for good, one cut short may pass when tried again. `what` starts the error.
pub(crate) async fn read_answer(
    response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, HostError> {
    use crate::actions::egress::{ReadError, read_capped};
    read_capped(response, cap, "integrations.max_response_bytes")
        .await
        .map_err(|e| match e {
            ReadError::TooLarge { .. } => HostError::permanent(format!("{what}: {e}")),
            ReadError::Transport(_) => HostError::retryable(format!("{what}: {e}")),
        })
}

/// The `Error` element of an AWS error answer, wherever the service puts it
/// (`Response.Errors.Error`, `ErrorResponse.Error`).
fn find_error(parsed: &Value) -> Map<String, Value> {
    let root = parsed
        .as_object()
        .and_then(|r| r.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    let error = root
        .pointer("/Errors/Error")
        .or_else(|| root.get("Error"))
        .cloned()
        .unwrap_or(Value::Null);
    let error = match error {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    error.as_object().cloned().unwrap_or_default()
}

/// What a secret is replaced with (as [`Secret`] prints itself).
const REDACTED: &str = "**redacted**";

/// Every secret of a credentials entry.
fn secrets_of(c: &Credentials) -> Vec<Secret> {
    c.secrets()
        .into_iter()
        .filter(|s| !s.expose().is_empty())
        .cloned()
        .collect()
}

/// A value as text for a header, query or form field.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The AWS identities built so far while loading, by credentials entry.
type AwsProviders = Mutex<BTreeMap<String, Arc<aws_credentials::AwsProvider>>>;

fn build_auth(
    kind: AuthKind,
    manifest: &Manifest,
    key: &str,
    c: &Credentials,
    http: &reqwest::Client,
    aws: &AwsProviders,
) -> Result<Auth, String> {
    let missing = |field: &str| {
        format!(
            "integrations.credentials.{key} has no `{field}`, which auth `{}` of integration `{}` needs",
            kind.name(),
            manifest.name
        )
    };
    Ok(match kind {
        AuthKind::None => Auth::None,
        AuthKind::AwsSigv4 => {
            let mut built = aws.lock().unwrap_or_else(PoisonError::into_inner);
            let provider = match built.get(key) {
                Some(provider) => provider.clone(),
                None => {
                    let provider = Arc::new(
                        aws_credentials::AwsProvider::new(
                            http.clone(),
                            c,
                            std::env::vars().collect(),
                        )
                        .map_err(|e| format!("integrations.credentials.{key}: {e}"))?,
                    );
                    built.insert(key.to_owned(), provider.clone());
                    provider
                }
            };
            Auth::AwsSigV4 {
                provider,
                service: manifest.auth.service.clone().unwrap_or_default(),
            }
        }
        AuthKind::AzureOauth => Auth::AzureOAuth(Arc::new(azure_credentials::AzureProvider::new(
            http.clone(),
            key,
            c,
            &std::env::vars().collect(),
        )?)),
        AuthKind::GcpOauth => {
            Auth::GcpOAuth(Arc::new(gcp::GcpTokens::from_credentials(key, c, http)?))
        }
        AuthKind::Bearer => Auth::Bearer(c.token.clone().ok_or_else(|| missing("token"))?),
        AuthKind::Basic => Auth::Basic {
            username: c.username.clone().ok_or_else(|| missing("username"))?,
            password: c.password.clone().ok_or_else(|| missing("password"))?,
        },
        AuthKind::Kubernetes => Auth::Kubernetes(Arc::new(kubernetes::Clusters::build(
            key,
            &c.clusters,
            c.default_cluster.as_deref(),
        )?)),
        AuthKind::ApiKey => {
            let key = c.api_key.clone().ok_or_else(|| missing("api_key"))?;
            Auth::ApiKey {
                header: manifest
                    .auth
                    .header
                    .clone()
                    .unwrap_or_else(|| "X-API-Key".to_owned()),
                // `Authorization: GenieKey <key>`: the prefix joins the key in the header value;
                // the bare key stays among the secrets redacted from what a call returns.
                key: match &manifest.auth.prefix {
                    Some(prefix) => Secret::new(format!("{prefix}{}", key.expose())),
                    None => key,
                },
            }
        }
        // The key goes into the body (`Integration::with_body_key`), not a header.
        AuthKind::JsonField if c.keys.is_empty() => return Err(missing("keys")),
        AuthKind::JsonField => Auth::None,
    })
}
