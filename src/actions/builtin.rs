//! The built-in actions: `core.log`, `core.http`, `core.sleep`, `core.set`, `core.hunt`,
//! `chat.notify`, `email.send`, `yara.scan`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::egress::{self, Egress};
use super::{ActionCall, ActionError, ActionRunner, ActionSpec, builtin_specs, glob};
use crate::store::{Store, StoreError};

/// The built-in actions, with what they need from the server.
pub struct Builtins {
    specs: BTreeMap<String, ActionSpec>,
    store: Option<Arc<dyn Store>>,
    /// Per playbook id: the hosts `core.http` may call, and the client that reaches only the
    /// addresses its entries allow (src/actions/egress.rs).
    http_allow: BTreeMap<String, (Vec<String>, reqwest::Client)>,
    /// The largest answer `core.http` reads, in bytes.
    max_response_bytes: usize,
    /// Where `chat.notify` posts, when chat is configured.
    notifier: Option<Arc<dyn Notifier>>,
    /// Where `email.send` queues mail, when email is configured.
    mailer: Option<Arc<dyn Mailer>>,
    /// The YARA rules `yara.scan` runs, when loaded.
    yara: Option<Arc<crate::yara::Yara>>,
}

/// Where `email.send` queues mail: the outbox's SMTP target (`crate::email::StepMailer`); built-in
/// actions know nothing of SMTP.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Queues the mail a step's inputs describe (profile, subject, text, html, attach_report); what
    /// was queued, for the step's output.
    async fn send(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError>;
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
    /// Builds one HTTP client per playbook in `http_allow`, each reaching only public addresses
    /// and the addresses its playbook's entries name (`127.0.0.1`, `10.0.0.0/8`). An error only
    /// when the TLS backend cannot start.
    pub fn new(
        store: Option<Arc<dyn Store>>,
        http_allow: BTreeMap<String, Vec<String>>,
        max_response_bytes: usize,
        notifier: Option<Arc<dyn Notifier>>,
    ) -> Result<Builtins, String> {
        let mut allow = BTreeMap::new();
        for (playbook, hosts) in http_allow {
            let client = Egress::from_entries(&hosts).client(HTTP_ALLOW_HINT)?;
            allow.insert(playbook, (hosts, client));
        }
        Ok(Builtins {
            specs: builtin_specs()
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            store,
            http_allow: allow,
            max_response_bytes,
            notifier,
            mailer: None,
            yara: None,
        })
    }

    /// Gives `email.send` somewhere to queue mail.
    pub fn with_mailer(mut self, mailer: Option<Arc<dyn Mailer>>) -> Builtins {
        self.mailer = mailer;
        self
    }

    /// Gives `yara.scan` its rules.
    pub fn with_yara(mut self, yara: Option<Arc<crate::yara::Yara>>) -> Builtins {
        self.yara = yara;
        self
    }

    /// The YARA rules `yara.scan` runs (a reload replaces them).
    pub fn yara(&self) -> Option<&Arc<crate::yara::Yara>> {
        self.yara.as_ref()
    }

    /// `yara.scan`: the artifact (a text given, or a download within `yara.max_bytes` from a
    /// host the playbook may reach), scanned; matches recorded on the incident as evidence.
    async fn yara_scan(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let Some(yara) = &self.yara else {
            return Err(ActionError::permanent(
                "no YARA rules are configured (config: yara.paths)",
            ));
        };
        let content = inputs.get("content").and_then(Value::as_str);
        let url = inputs.get("url").and_then(Value::as_str);
        let s3 = inputs.get("s3").and_then(Value::as_str);
        let (bytes, default_name) = match (content, url, s3) {
            (Some(text), None, None) => {
                if text.len() > yara.max_bytes {
                    return Err(ActionError::permanent(crate::yara::too_large(
                        text.len(),
                        yara.max_bytes,
                    )));
                }
                (text.as_bytes().to_vec(), "content".to_owned())
            }
            (None, Some(url), None) => (
                self.download(url, inputs, call, yara.max_bytes).await?,
                url.to_owned(),
            ),
            (None, None, Some(uri)) => {
                let Some(reader) = &yara.s3 else {
                    return Err(ActionError::permanent(
                        "S3 objects are read with the credentials yara.s3_credentials names, and it is not set",
                    ));
                };
                let region = inputs
                    .get("region")
                    .and_then(Value::as_str)
                    .unwrap_or("us-east-1");
                let bytes = reader
                    .get(uri, region, call.account.as_deref(), yara.max_bytes)
                    .await?;
                (bytes, uri.to_owned())
            }
            _ => {
                return Err(ActionError::permanent(
                    "give exactly one of `content` (a text Cordon holds), `url` (a download) and `s3` (an S3 object)",
                ));
            }
        };
        let name = inputs
            .get("name")
            .and_then(Value::as_str)
            .map_or(default_name, str::to_owned);
        let scan = yara.scan(bytes).await.map_err(ActionError::permanent)?;
        let rules: Vec<String> = scan.matches.iter().map(|m| m.rule.clone()).collect();
        let mut evidence = Vec::new();
        if !scan.matches.is_empty() {
            let record = json!({
                "kind": "yara-match",
                "location": name,
                "sha256": scan.sha256,
                "size": scan.size,
                "rules": rules,
                "matches": scan.matches,
                "collected_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "action": "yara.scan",
                "run_id": call.run_id,
                "step_id": call.step_id,
                "incident_id": call.incident_id,
            });
            if let (Some(store), Some(incident)) = (&self.store, &call.incident_id) {
                store
                    .add_evidence(incident, vec![record.clone()])
                    .await
                    .map_err(|e| {
                        ActionError::retryable(format!("could not store the evidence: {e}"))
                    })?;
            }
            evidence.push(record);
        }
        Ok(json!({
            "name": name,
            "sha256": scan.sha256,
            "size": scan.size,
            "matched": !scan.matches.is_empty(),
            "matches": scan.matches,
            "evidence": evidence,
        }))
    }

    /// A GET of `url` on the playbook's allowed hosts (every redirect hop checked, as `core.http`
    /// does), read up to `cap` bytes.
    async fn download(
        &self,
        url: &str,
        inputs: &Value,
        call: &ActionCall,
        cap: usize,
    ) -> Result<Vec<u8>, ActionError> {
        let first = url::Url::parse(url)
            .map_err(|e| ActionError::permanent(format!("url `{url}` is not valid: {e}")))?;
        let mut url = first.clone();
        let mut hops = 0;
        let response = loop {
            let client = self.allowed(&url, call)?;
            let mut request = client
                .get(url.clone())
                .timeout(std::time::Duration::from_secs(60));
            if let Some(headers) = inputs.get("headers").and_then(Value::as_object)
                && url.origin() == first.origin()
            {
                for (name, value) in headers {
                    request = request.header(name, value.as_str().unwrap_or_default());
                }
            }
            let response = request
                .send()
                .await
                .map_err(|e| match egress::refused(&e) {
                    Some(refused) => ActionError::permanent(refused.to_string()),
                    None => ActionError::retryable(format!("download failed: {}", e.without_url())),
                })?;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            let (true, Some(location)) = (response.status().is_redirection(), location) else {
                break response;
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(ActionError::permanent(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            url = url.join(location).map_err(|e| {
                ActionError::permanent(format!("the redirect to `{location}` is not a URL: {e}"))
            })?;
        };
        let status = response.status();
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
        egress::read_capped(response, cap, "yara.max_bytes")
            .await
            .map_err(|e| match e {
                egress::ReadError::TooLarge { .. } => {
                    ActionError::permanent(crate::yara::too_large_download(cap))
                }
                egress::ReadError::Transport(_) => ActionError::retryable(e.to_string()),
            })
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

    /// `core.hunt`: the pivot of src/search/hunt.rs over the store, for a playbook to widen an
    /// incident with related activity; `record: true` adds a `hunt` evidence record to the
    /// run's incident (the incidents, alert count and co-occurring entities found).
    async fn hunt(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let entity = str_input(inputs, "entity")?;
        let window = inputs.get("window").and_then(Value::as_str);
        let Some(store) = &self.store else {
            return Err(ActionError::permanent("no store to hunt in"));
        };
        let found = crate::search::hunt::hunt(store.as_ref(), entity, window, chrono::Utc::now())
            .await
            .map_err(|e| match e {
                crate::search::SearchError::Store(e) => {
                    ActionError::retryable(format!("could not search the store: {e}"))
                }
                other => ActionError::permanent(other.to_string()),
            })?;
        let mut output = serde_json::to_value(&found)
            .map_err(|e| ActionError::permanent(format!("hunt result: {e}")))?;
        let incident_ids: Vec<&str> = found.incidents.iter().map(|i| i.id.as_str()).collect();
        output["incident_ids"] = json!(incident_ids);
        // A dry run reads, and records nothing.
        if inputs.get("record").and_then(Value::as_bool) == Some(true) && !call.dry_run {
            let incident = call.incident_id.as_deref().ok_or_else(|| {
                ActionError::permanent("this run has no incident to record the hunt on")
            })?;
            let record = json!({
                "kind": "hunt",
                "entity": found.entity,
                "since": found.since,
                "until": found.until,
                "alerts": found.alerts.len(),
                "incidents": incident_ids,
                "co_occurring": found.co_occurring,
                "collected_at": chrono::Utc::now(),
                "run_id": call.run_id,
                "step": call.step_id,
                "action": "core.hunt",
            });
            store
                .add_evidence(incident, vec![record])
                .await
                .map_err(|e| ActionError::retryable(format!("could not record the hunt: {e}")))?;
        }
        Ok(output)
    }

    /// Refuses `url` unless its host is in the playbook's `http_allow` and, when the host is an
    /// address, the address may be called; the client of the playbook, which checks the addresses
    /// names resolve to.
    fn allowed(&self, url: &url::Url, call: &ActionCall) -> Result<&reqwest::Client, ActionError> {
        let host = url.host_str().unwrap_or_default();
        let Some((hosts, client)) = self.http_allow.get(&call.playbook) else {
            return Err(not_allowed(host, call));
        };
        if !hosts.iter().any(|h| glob(h, host) || same_address(h, url)) {
            return Err(not_allowed(host, call));
        }
        Egress::from_entries(hosts)
            .check_url(url, HTTP_ALLOW_HINT)
            .map_err(|e| ActionError::permanent(e.to_string()))?;
        Ok(client)
    }

    /// `core.http`. Redirects are followed here, not by the HTTP client, so that every hop's host
    /// is checked against `http_allow` before anything is sent to it: an allowed host answering
    /// `302 Location: http://169.254.169.254/...` does not reach the metadata service. Headers the
    /// step set (credentials among them) go only to the host the step named.
    async fn http(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let url = str_input(inputs, "url")?;
        let first = url::Url::parse(url)
            .map_err(|e| ActionError::permanent(format!("url `{url}` is not valid: {e}")))?;
        let method = inputs
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let mut method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ActionError::permanent(format!("`{method}` is not an HTTP method")))?;
        let mut body = inputs.get("json").cloned();
        let mut url = first.clone();
        let mut hops = 0;
        let response = loop {
            let client = self.allowed(&url, call)?;
            let mut request = client
                .request(method.clone(), url.clone())
                .timeout(std::time::Duration::from_secs(30));
            let same_origin = url.origin() == first.origin();
            if let Some(headers) = inputs.get("headers").and_then(Value::as_object)
                && same_origin
            {
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
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| match egress::refused(&e) {
                    Some(refused) => ActionError::permanent(refused.to_string()),
                    None => ActionError::retryable(format!("request failed: {}", e.without_url())),
                })?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            let (true, Some(location)) = (status.is_redirection(), location) else {
                break response;
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(ActionError::permanent(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            url = url.join(location).map_err(|e| {
                ActionError::permanent(format!("the redirect to `{location}` is not a URL: {e}"))
            })?;
            // 301, 302 and 303 continue as a GET without the body; 307 and 308 repeat the request.
            if matches!(status.as_u16(), 301..=303) {
                if method != reqwest::Method::HEAD {
                    method = reqwest::Method::GET;
                }
                body = None;
            }
        };
        let status = response.status();
        let bytes = egress::read_capped(
            response,
            self.max_response_bytes,
            "playbooks.http_max_response_bytes",
        )
        .await
        .map_err(|e| match e {
            egress::ReadError::TooLarge { .. } => ActionError::permanent(e.to_string()),
            egress::ReadError::Transport(_) => ActionError::retryable(e.to_string()),
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
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

/// How many redirects `core.http` follows.
const MAX_REDIRECTS: usize = 5;

/// Where `core.http`'s allowed addresses are configured, for refusals.
const HTTP_ALLOW_HINT: &str = "playbooks.http_allow";

fn not_allowed(host: &str, call: &ActionCall) -> ActionError {
    ActionError::permanent(format!(
        "host `{host}` is not allowed for playbook `{}` (config: playbooks.http_allow)",
        call.playbook
    ))
}

/// Whether the allowlist entry `entry` is a range holding the address `url` names
/// (`10.0.0.0/8` allows `http://10.1.2.3/`).
fn same_address(entry: &str, url: &url::Url) -> bool {
    let address = match url.host() {
        Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
        _ => return false,
    };
    entry
        .parse::<ipnet::IpNet>()
        .is_ok_and(|net| net.contains(&address))
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
            "core.hunt" => self.hunt(&inputs, call).await,
            "chat.notify" => self.notify(&inputs, call).await,
            "yara.scan" => self.yara_scan(&inputs, call).await,
            "email.send" => match &self.mailer {
                Some(mailer) => mailer.send(&inputs, call).await,
                None => Err(ActionError::permanent(
                    "email is not configured (config: email.smtp and email.profiles)",
                )),
            },
            other => Err(ActionError::permanent(format!("unknown action `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;

    use super::*;

    /// A server on 127.0.0.1:0; its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        base
    }

    fn call() -> ActionCall {
        ActionCall {
            run_id: "r1".into(),
            step_id: "fetch".into(),
            playbook: "pb".into(),
            incident_id: None,
            idempotency_key: "r1:fetch".into(),
            dry_run: false,
            account: None,
        }
    }

    fn builtins(allow: &[&str]) -> Builtins {
        let allow = BTreeMap::from([(
            "pb".to_owned(),
            allow.iter().map(|h| (*h).to_owned()).collect(),
        )]);
        Builtins::new(None, allow, 1024, None).unwrap()
    }

    /// The attacker controls an allowed host and answers with a redirect to a host that is not
    /// allowed (a cloud metadata service, here a local stand-in under the name `localhost`).
    #[tokio::test]
    async fn a_redirect_to_a_host_outside_http_allow_is_refused_before_it_is_sent() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let metadata = serve(Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "AKIA-secret-role-credentials" }
        }))
        .await;
        let inside = metadata.replace("127.0.0.1", "localhost");
        let allowed = serve(
            Router::new()
                .route(
                    "/out",
                    get(move || {
                        let to = format!("{inside}/latest/meta-data/iam/security-credentials/");
                        async move { (StatusCode::FOUND, [(header::LOCATION, to)]) }
                    }),
                )
                .route(
                    "/in",
                    get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/final")]) }),
                )
                .route(
                    "/final",
                    get(|headers: HeaderMap| async move {
                        axum::Json(json!({ "token": headers.contains_key("x-api-key") }))
                    }),
                )
                .route(
                    "/loop",
                    get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
                ),
        )
        .await;
        let core = builtins(&["127.0.0.1"]);

        let error = core
            .call(
                "core.http",
                json!({ "url": format!("{allowed}/out") }),
                &call(),
            )
            .await
            .unwrap_err();
        assert!(
            error.message.contains("host `localhost` is not allowed") && !error.retryable,
            "{}",
            error.message
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");

        // A redirect within the allowed host is followed, with the step's headers.
        let inputs = json!({ "url": format!("{allowed}/in"), "headers": { "x-api-key": "k" } });
        let answer = core.call("core.http", inputs, &call()).await.unwrap();
        assert_eq!(answer, json!({ "status": 200, "body": { "token": true } }));

        let error = core
            .call(
                "core.http",
                json!({ "url": format!("{allowed}/loop") }),
                &call(),
            )
            .await
            .unwrap_err();
        assert_eq!(error.message, "more than 5 redirects");
    }

    /// A host pattern opens names, not internal addresses; answers stop at the cap.
    #[tokio::test]
    async fn internal_addresses_need_an_entry_naming_them_and_answers_are_capped() {
        let big = serve(Router::new().fallback(|| async { "x".repeat(4096) })).await;
        let everything = builtins(&["*"]);
        for url in [format!("{big}/"), big.replace("127.0.0.1", "localhost")] {
            let error = everything
                .call("core.http", json!({ "url": url }), &call())
                .await
                .unwrap_err();
            assert!(
                error.message.contains("a loopback address") && !error.retryable,
                "{url}: {}",
                error.message
            );
        }
        let named = builtins(&["127.0.0.1"]);
        let error = named
            .call("core.http", json!({ "url": format!("{big}/") }), &call())
            .await
            .unwrap_err();
        assert_eq!(
            error.message,
            "the answer is larger than 1024 bytes (config: playbooks.http_max_response_bytes)"
        );
        assert!(!error.retryable);
    }
}
