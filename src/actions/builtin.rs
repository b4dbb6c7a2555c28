//! The built-in actions: `core.log`, `core.http`, `core.sleep`, `core.set`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{ActionCall, ActionError, ActionRunner, ActionSpec, builtin_specs, glob};
use crate::store::{Store, StoreError};

/// The built-in actions, with what they need from the server.
pub struct Builtins {
    specs: BTreeMap<String, ActionSpec>,
    store: Option<Arc<dyn Store>>,
    http: reqwest::Client,
    /// Hosts `core.http` may call, per playbook id.
    http_allow: BTreeMap<String, Vec<String>>,
    /// Where `chat.notify` posts, when chat is configured.
    notifier: Option<Arc<dyn Notifier>>,
}

/// Where `chat.notify` posts: the incident's chat threads on the configured platforms. Chat
/// provides it (`crate::chat::Notes`); built-in actions know nothing of chat.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The platforms a note goes to.
    fn platforms(&self) -> Vec<&'static str>;

    /// Queues `text` for the threads of incident `incident_id`.
    async fn note(&self, incident_id: &str, text: &str) -> Result<(), StoreError>;
}

impl Builtins {
    pub fn new(
        store: Option<Arc<dyn Store>>,
        http: reqwest::Client,
        http_allow: BTreeMap<String, Vec<String>>,
        notifier: Option<Arc<dyn Notifier>>,
    ) -> Builtins {
        Builtins {
            specs: builtin_specs()
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            store,
            http,
            http_allow,
            notifier,
        }
    }

    async fn notify(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let text = str_input(inputs, "text")?;
        let incident = call
            .incident_id
            .as_deref()
            .ok_or_else(|| ActionError::permanent("this run has no incident to post about"))?;
        let Some(notifier) = &self.notifier else {
            return Err(ActionError::permanent(
                "no chat platform is configured (config: chat)",
            ));
        };
        notifier
            .note(incident, text)
            .await
            .map_err(|e| ActionError::retryable(format!("could not queue the message: {e}")))?;
        Ok(json!({ "text": text, "platforms": notifier.platforms() }))
    }

    async fn http(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let url = str_input(inputs, "url")?;
        let parsed = url::Url::parse(url)
            .map_err(|e| ActionError::permanent(format!("url `{url}` is not valid: {e}")))?;
        let host = parsed.host_str().unwrap_or_default();
        let allowed = self
            .http_allow
            .get(&call.playbook)
            .is_some_and(|hosts| hosts.iter().any(|h| glob(h, host)));
        if !allowed {
            return Err(ActionError::permanent(format!(
                "host `{host}` is not allowed for playbook `{}` (config: playbooks.http_allow)",
                call.playbook
            )));
        }
        let method = inputs
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ActionError::permanent(format!("`{method}` is not an HTTP method")))?;
        let mut request = self
            .http
            .request(method, parsed)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(headers) = inputs.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                request = request.header(
                    name,
                    value
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| value.to_string()),
                );
            }
        }
        if let Some(body) = inputs.get("json") {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ActionError::retryable(format!("request failed: {}", e.without_url())))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            ActionError::retryable(format!("reading the answer failed: {}", e.without_url()))
        })?;
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ActionError::retryable(format!(
                "the server answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(ActionError::permanent(format!(
                "the server answered {status}"
            )));
        }
        Ok(json!({ "status": status.as_u16(), "body": body }))
    }
}

fn str_input<'a>(inputs: &'a Value, name: &str) -> Result<&'a str, ActionError> {
    inputs
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ActionError::permanent(format!("input `{name}` must be a string")))
}

#[async_trait]
impl ActionRunner for Builtins {
    fn spec(&self, name: &str) -> Option<ActionSpec> {
        self.specs.get(name).cloned()
    }

    /// `core.http` follows HTTP: GET, HEAD, PUT and DELETE are idempotent, POST and PATCH are not,
    /// unless the step says otherwise with `idempotent: true|false`.
    fn idempotent(&self, name: &str, inputs: &Value) -> bool {
        if name == "core.http" {
            if let Some(explicit) = inputs.get("idempotent").and_then(Value::as_bool) {
                return explicit;
            }
            let method = inputs
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("GET")
                .to_ascii_uppercase();
            return matches!(
                method.as_str(),
                "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
            );
        }
        self.specs.get(name).is_some_and(|s| s.idempotent)
    }

    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError> {
        match name {
            "core.log" => {
                let message = str_input(&inputs, "message")?;
                match inputs
                    .get("level")
                    .and_then(Value::as_str)
                    .unwrap_or("info")
                {
                    "error" => {
                        tracing::error!(run = %call.run_id, step = %call.step_id, "{message}")
                    }
                    "warn" => tracing::warn!(run = %call.run_id, step = %call.step_id, "{message}"),
                    _ => tracing::info!(run = %call.run_id, step = %call.step_id, "{message}"),
                }
                Ok(json!({ "message": message }))
            }
            "core.sleep" => {
                let text = str_input(&inputs, "duration")?;
                let duration: crate::config::HumanDuration =
                    text.parse().map_err(ActionError::permanent)?;
                Ok(json!({ "sleep_ms": duration.0.as_millis() as u64 }))
            }
            "core.set" => {
                let key = str_input(&inputs, "key")?;
                let value = inputs.get("value").cloned().unwrap_or(Value::Null);
                let incident = call.incident_id.as_deref().ok_or_else(|| {
                    ActionError::permanent("this run has no incident to set a value on")
                })?;
                if let Some(store) = &self.store {
                    store
                        .set_incident_value(incident, key, value.clone())
                        .await
                        .map_err(|e| {
                            ActionError::retryable(format!("could not store the value: {e}"))
                        })?;
                }
                Ok(json!({ "key": key, "value": value }))
            }
            "core.http" => self.http(&inputs, call).await,
            "chat.notify" => self.notify(&inputs, call).await,
            other => Err(ActionError::permanent(format!("unknown action `{other}`"))),
        }
    }
}
