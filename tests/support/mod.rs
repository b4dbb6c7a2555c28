//! Shared test support; each test file uses the parts it needs.
//!
//! - Here: Cordon under test, in process ([`TestServer`], on 127.0.0.1:0 with its own store) or
//!   as the real binary ([`Process`]), both spoken to through a [`Client`]; the shared fixtures
//!   ([`fixture`]) and this crate's test data ([`data`]); config text; waiting helpers; a fake
//!   SNS host and a fake cloud API.
//! - [`fake`]: the one fake HTTP server every vendor fake is built on.
//! - The test peers: [`prism`] (Stoplight Prism), [`moto`] (AWS), [`pg`] (PostgreSQL), [`oidc`]
//!   (an OIDC issuer), [`alertmanager`] (Prometheus Alertmanager).
//! - The vendor fakes: [`azure`], [`gcp`] (a Python process), [`kube`] (Kubernetes), [`intel`], [`tickets`], [`slack`], [`teams`], [`discord`]; and
//!   [`load`], a load generator and a sink for the fault tests.
#![allow(dead_code)]

pub mod alertmanager;
pub mod azure;
pub mod discord;
pub mod fake;
pub mod gcp;
pub mod intel;
pub mod kube;
pub mod load;
pub mod moto;
pub mod oidc;
pub mod paging;
pub mod pg;
pub mod prism;
pub mod siem;
pub mod slack;
pub mod teams;
pub mod tickets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cordon::app::Server;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const INTAKE_TOKEN: &str = "test-intake-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const HMAC_SECRET: &str = "test-hmac-secret";

/// A file under the shared fixtures folder (`../shared/fixtures/`).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel)
}

/// A file or folder under `tests/data/`.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The text of a file under `tests/data/`.
pub fn read_data(rel: &str) -> String {
    std::fs::read_to_string(data(rel)).unwrap_or_else(|e| panic!("tests/data/{rel}: {e}"))
}

/// A port of 127.0.0.1 free a moment ago, for a peer process that takes its port as an argument.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// Sources section where every source takes the bearer `INTAKE_TOKEN`, except `generic`, which takes
/// HMAC with `HMAC_SECRET`.
pub fn all_sources() -> String {
    let mut yaml = String::from("sources:\n");
    for source in cordon::intake::formats::SourceKind::ALL {
        if source.name() == "generic" {
            yaml.push_str(&format!(
                "  generic:\n    auth:\n      hmac:\n        secret: {HMAC_SECRET}\n"
            ));
        } else {
            yaml.push_str(&format!(
                "  {source}:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n"
            ));
        }
    }
    yaml
}

/// The config text tests start from: port 0, a store in `dir`, the admin token, and `extra`
/// (sections such as `sources:` or `grouping:`).
pub fn config_text(dir: &Path, extra: &str) -> String {
    // No playbooks unless the test brings its own.
    let playbooks = if extra.contains("playbooks:") {
        ""
    } else {
        "playbooks:\n  paths: []\n"
    };
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  max_body_bytes: 65536\n  shutdown_grace: 5s\nstore:\n  path: {}\n{playbooks}{extra}",
        dir.join("store").display()
    )
}

/// A `people:` section: each person by id with their identities and roles.
pub fn people_yaml(people: &[(&str, &[&str], &[&str])]) -> String {
    let mut yaml = String::from("people:\n");
    for (id, identities, roles) in people {
        let quoted: Vec<String> = identities.iter().map(|i| format!("\"{i}\"")).collect();
        yaml.push_str(&format!(
            "  {id}:\n    roles: [{}]\n    identities: [{}]\n",
            roles.join(", "),
            quoted.join(", ")
        ));
    }
    yaml
}

/// The approval playbook the chat tests share (`tests/data/templates/approve-then-isolate.yaml`):
/// playbook `id` named `name` on `source`, asking `approvers` (a group) with `prompt` for a
/// quorum of `quorum` in step `approve`, then recording the isolation in step `isolate`.
pub fn approval_playbook(
    (id, name): (&str, &str),
    source: &str,
    prompt: &str,
    approvers: &str,
    quorum: u32,
) -> String {
    read_data("templates/approve-then-isolate.yaml")
        .replace("PLAYBOOK_ID", id)
        .replace("PLAYBOOK_NAME", name)
        .replace("SOURCE", source)
        .replace("PROMPT", prompt)
        .replace("APPROVERS", approvers)
        .replace("QUORUM", &quorum.to_string())
}

/// Polls `check` every 50 ms until it holds; after `within`, fails the test naming `what()`.
pub async fn wait_until(
    within: std::time::Duration,
    what: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {}",
            what()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A running in-process server.
pub struct TestServer {
    client: Client,
    /// The running server's shared state (to plug test channels into its engine).
    pub state: Arc<cordon::app::AppState>,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server taking every source (see [`all_sources`]).
    pub async fn start() -> TestServer {
        TestServer::start_with(&all_sources()).await
    }

    pub async fn start_with(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        TestServer::start_in(dir, extra).await
    }

    /// A server on the store in `dir` (so a test can restart on the same data).
    pub async fn start_in(dir: TempDir, extra: &str) -> TestServer {
        let text = config_text(dir.path(), extra);
        let config =
            cordon::config::parse(&text, Path::new("test.yaml")).unwrap_or_else(|d| panic!("{d}"));
        let server = Server::bind(config).await.expect("server binds");
        let base = format!("http://{}", server.local_addr());
        let state = server.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("clean shutdown");
        });
        TestServer {
            client: Client::new(base),
            state,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the server down cleanly and hands back its folder.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl std::ops::Deref for TestServer {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Requests to a running Cordon by its base URL, with the test tokens. [`TestServer`] and
/// [`Process`] deref to one.
///
/// People act through personal tokens, as they do in production: the first time a test acts as
/// an identity (`cli:alice`), the client finds the person who has it (in the config or the store)
/// or adds one to the store with the bootstrap admin token, creates a token for them the same way,
/// and keeps it. Reads go through the token of `tester`, a stored person with every role.
#[derive(Clone)]
pub struct Client {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub http: reqwest::Client,
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// The identity of the stored person the test client reads with.
pub const TESTER: &str = "cli:tester";

impl Client {
    pub fn new(base: String) -> Client {
        Client {
            base,
            http: reqwest::Client::new(),
            tokens: Arc::default(),
        }
    }

    /// A personal token of the person who has `identity`, made on first use (see [`Client`]).
    pub async fn token_of(&self, identity: &str) -> String {
        if let Some(token) = self.tokens.lock().unwrap().get(identity) {
            return token.clone();
        }
        let (status, people) = self
            .send(
                self.http
                    .get(format!("{}/v1/people", self.base))
                    .bearer_auth(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(status, 200, "GET /v1/people: {people}");
        let found = people["people"].as_array().unwrap().iter().find(|p| {
            p["identities"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == identity))
        });
        let person = match found {
            Some(p) => p["id"].as_str().unwrap().to_owned(),
            None => {
                // `cli:alice` is `cli-alice`: never one of the people a test's config names.
                let id: String = identity
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let roles: &[&str] = if identity == TESTER {
                    &["admin", "responder", "author"]
                } else {
                    &["responder"]
                };
                let (status, body) = self
                    .send(
                        self.http
                            .put(format!("{}/v1/people/{id}", self.base))
                            .bearer_auth(ADMIN_TOKEN)
                            .json(&serde_json::json!({ "identities": [identity], "roles": roles })),
                    )
                    .await;
                assert_eq!(status, 200, "PUT /v1/people/{id}: {body}");
                id
            }
        };
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/v1/tokens", self.base))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&serde_json::json!({ "person": person })),
            )
            .await;
        assert_eq!(status, 201, "POST /v1/tokens for {person}: {body}");
        let token = body["token"].as_str().unwrap().to_owned();
        self.tokens
            .lock()
            .unwrap()
            .insert(identity.to_owned(), token.clone());
        token
    }

    /// POSTs `body` to `/v1/alerts/{source}` with the bearer intake token.
    pub async fn post_alert(&self, source: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/v1/alerts/{source}", self.base))
                .bearer_auth(INTAKE_TOKEN)
                .body(body),
        )
        .await
    }

    /// POSTs `body` to `/v1/alerts/{source}` like [`Client::post_alert`]; panics unless it is
    /// accepted (202). The answer.
    pub async fn accept(&self, source: &str, body: impl Into<reqwest::Body>) -> Value {
        let (status, answer) = self.post_alert(source, body).await;
        assert_eq!(status, 202, "{answer}");
        answer
    }

    /// POSTs `body` to the HMAC-signed `generic` source, signed now.
    pub async fn post_generic(&self, body: &[u8]) -> (u16, Value) {
        let ts = chrono::Utc::now().timestamp();
        let sig = cordon::intake::verify::hmac_signature(HMAC_SECRET, ts, body);
        self.send(
            self.http
                .post(format!("{}/v1/alerts/generic", self.base))
                .header("x-cordon-timestamp", ts.to_string())
                .header("x-cordon-signature", format!("sha256={sig}"))
                .body(body.to_vec()),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GETs an API path as [`TESTER`]; panics unless 200.
    pub async fn admin(&self, path: &str) -> Value {
        let token = self.token_of(TESTER).await;
        let (status, body) = self
            .send(
                self.http
                    .get(format!("{}{path}", self.base))
                    .bearer_auth(token),
            )
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Every stored alert (newest first).
    pub async fn stored_alerts(&self) -> Vec<Value> {
        self.admin("/v1/alerts?limit=1000").await["alerts"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn stored_incidents(&self) -> Vec<Value> {
        self.admin("/v1/incidents?limit=1000").await["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// POSTs JSON to an API path as the person whose identity the body names (`"identity"`), or
    /// as [`TESTER`].
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let identity = body["identity"].as_str().unwrap_or(TESTER).to_owned();
        self.post_as(&identity, path, body).await
    }

    /// POSTs JSON to an API path with the personal token of the person who has `identity`.
    pub async fn post_as(&self, identity: &str, path: &str, body: Value) -> (u16, Value) {
        let token = self.token_of(identity).await;
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    /// A person's action through the API, with their own token: POSTs `{}` to `path`
    /// (`/v1/runs/{run}/steps/{step}/undo`, `/v1/incidents/{id}/resolve`, ...).
    pub async fn act(&self, path: &str, identity: &str) -> (u16, Value) {
        self.post_as(identity, path, serde_json::json!({})).await
    }

    /// Decides (`approve` or `deny`) the approval step `step` of run `run` as the person who has
    /// `identity`, with their own token.
    pub async fn decide(
        &self,
        run: &str,
        step: &str,
        decision: &str,
        identity: &str,
    ) -> (u16, Value) {
        self.post_as(
            identity,
            &format!("/v1/runs/{run}/approvals/{step}"),
            serde_json::json!({ "decision": decision }),
        )
        .await
    }

    /// Undoes step `step` of run `run` as people do: `asker` asks (202, an undo run waiting for
    /// approval), `approver` approves the undo run, and the undo run ends. Returns the undo run as
    /// `GET /v1/runs/{id}` shows it.
    pub async fn undo(&self, run: &str, step: &str, asker: &str, approver: &str) -> Value {
        let (status, asked) = self
            .act(&format!("/v1/runs/{run}/steps/{step}/undo"), asker)
            .await;
        assert_eq!(status, 202, "undo of {run} {step}: {asked}");
        let undo = asked["undo_run"].as_str().unwrap().to_owned();
        self.wait_run(&undo, "waiting for approval", |r| r["status"] == "waiting")
            .await;
        let (status, decided) = self.decide(&undo, "approve", "approve", approver).await;
        assert_eq!(status, 200, "approving the undo {undo}: {decided}");
        self.wait_run(&undo, "finished", |r| {
            ["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or(""))
        })
        .await
    }

    /// Polls `GET /v1/runs/{id}` until `done` holds for the run (10 s at most).
    pub async fn wait_run(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let body = self.admin(&format!("/v1/runs/{id}")).await;
            if done(&body["run"]) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {id} never became {what}: {}",
                body["run"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits until run `id` waits for a decision; the prompt of its approval step `step`.
    pub async fn wait_prompt(&self, id: &str, step: &str) -> String {
        let shown = self.wait_run(id, "waiting", waiting).await;
        shown["run"]["steps"][step]["approval"]["prompt"]
            .as_str()
            .unwrap_or_else(|| panic!("no prompt at step {step}: {shown}"))
            .to_owned()
    }

    /// Polls until the run started for `alert_id` exists; returns its id.
    pub async fn run_for_alert(&self, alert_id: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let runs = self.admin("/v1/runs?limit=1000").await;
            if let Some(run) = runs["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["alert_id"] == alert_id)
            {
                return run["id"].as_str().unwrap().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no run started for alert {alert_id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Whether a run (as the admin API shows it) waits for a decision.
pub fn waiting(run: &Value) -> bool {
    run["status"] == "waiting"
}

/// Whether a run (as the admin API shows it) has ended, one way or another.
pub fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Asserts an admin API answer (status, body) is `status` and its `message` says `fragment`.
pub fn assert_status_says(answer: &(u16, Value), status: u16, fragment: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(fragment), "{body}");
}

/// The string `key` of every element of the JSON array `list`.
pub fn texts<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e[key].as_str().unwrap_or_else(|| panic!("no {key} in {e}")))
        .collect()
}

/// A minimal alert in the generic shape.
pub fn generic_alert(title: &str, resource_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "title": title,
        "kind": format!("test.{}", title.to_lowercase().replace(' ', "_")),
        "severity": 6,
        "resource": { "kind": "host", "id": resource_id },
    }))
    .unwrap()
}

/// A fake SNS host for certificate and subscription-confirmation fetches (reached through
/// `endpoint_override`): serves the test certificate at any `*.pem` path.
pub struct FakeSns {
    pub base: String,
    server: fake::FakeServer,
}

impl FakeSns {
    pub async fn start() -> FakeSns {
        let cert = read_data("sns/test-signing-cert.pem");
        let server = fake::serve(axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let cert = cert.clone();
            async move {
                if uri.path().ends_with(".pem") {
                    cert
                } else {
                    "<ConfirmSubscriptionResponse/>".to_owned()
                }
            }
        }))
        .await;
        FakeSns {
            base: server.base.clone(),
            server,
        }
    }

    /// The path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .map(|r| r.uri.to_string())
            .collect()
    }
}

/// Signs an SNS envelope (a JSON object without `Signature`) with the test key, SignatureVersion
/// `version` ("1" = SHA1, "2" = SHA256), the way Amazon SNS does.
pub fn sign_sns(mut envelope: Value, version: &str) -> Vec<u8> {
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    envelope["SignatureVersion"] = Value::String(version.to_owned());
    let parsed = cordon::intake::sns::SnsEnvelope::parse(
        &serde_json::to_vec(&{
            let mut e = envelope.clone();
            e["Signature"] = Value::String("AA==".into());
            e
        })
        .unwrap(),
    )
    .expect("test envelope parses");
    let text = parsed.string_to_sign();
    let pem = read_data("sns/test-signing-key.pem");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let signature = match version {
        "1" => SigningKey::<sha1::Sha1>::new(key)
            .sign(text.as_bytes())
            .to_vec(),
        _ => SigningKey::<rsa::sha2::Sha256>::new(key)
            .sign(text.as_bytes())
            .to_vec(),
    };
    use base64::Engine;
    envelope["Signature"] =
        Value::String(base64::engine::general_purpose::STANDARD.encode(signature));
    serde_json::to_vec(&envelope).unwrap()
}

/// A fake cloud API for actions to call: records requests, answers 200 (optionally after a
/// delay, to keep a request in flight).
pub struct FakeApi {
    pub base: String,
    server: fake::FakeServer,
    /// How long each answer takes, in milliseconds (change it while running).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Answer 503 to this many requests first.
    pub fail_first: Arc<std::sync::atomic::AtomicU64>,
    /// Answer this many requests at once before the delay applies (0: the delay applies to all).
    pub quick: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeApi {
    pub async fn start(delay: std::time::Duration) -> FakeApi {
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(delay.as_millis() as u64));
        let fail_first = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let quick = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, f, q) = (delay_ms.clone(), fail_first.clone(), quick.clone());
        let server = fake::serve(axum::Router::new().fallback(move || {
            let (d, f, q) = (d.clone(), f.clone(), q.clone());
            async move {
                let at_once = q
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if !at_once {
                    tokio::time::sleep(std::time::Duration::from_millis(d.load(Ordering::SeqCst)))
                        .await;
                }
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                };
                (status, axum::Json(serde_json::json!({ "ok": !failing })))
            }
        }))
        .await;
        FakeApi {
            base: server.base.clone(),
            server,
            delay_ms,
            fail_first,
            quick,
        }
    }

    /// `METHOD /path` of every request so far.
    pub fn calls(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.uri.path()))
            .collect()
    }

    /// How many requests so far have a `METHOD /path` containing `what`.
    pub fn count(&self, what: &str) -> usize {
        self.calls().iter().filter(|c| c.contains(what)).count()
    }
}

/// Writes `yaml` as a playbook file in `dir`.
pub fn write_playbook(dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

/// The `cordon` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// A `cordon serve` process (its config must log JSON) and the address it reported.
pub struct Process {
    pub child: std::process::Child,
    client: Client,
    /// Every line the process wrote to stderr (its JSON log), as it comes.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    /// The thread reading stderr; it ends with the process.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn start(config: &Path) -> Process {
        Process::start_with_env(config, &[])
    }

    /// As [`Process::start`], with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Process {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cordon starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "listening"
                {
                    let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("cordon logs its address");
        Process {
            child,
            client: Client::new(format!("http://{addr}")),
            log,
            reader: Some(reader),
        }
    }

    /// Every line the process logged, once it has exited (call after waiting for it).
    pub fn whole_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        self.log.lock().unwrap().join("\n")
    }

    /// The log lines so far that contain `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends a signal (`-TERM`, `-HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl std::ops::Deref for Process {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI with `--config config`: exit code, stdout, stderr.
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    cli_with(config, None, args)
}

/// Runs the `cordon` binary with `token` as its credential (`CORDON_TOKEN`). Neither form reads
/// a credential saved by `cordon login` on this machine.
pub fn cli_with(config: &Path, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(BIN);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CORDON_TOKEN")
        .env(
            "CORDON_CREDENTIALS",
            "/nonexistent/cordon-test-credentials.json",
        );
    if let Some(token) = token {
        command.env("CORDON_TOKEN", token);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
