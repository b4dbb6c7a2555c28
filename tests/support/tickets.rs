//! Ticket system fakes for the ticket tests, and Prism.
//!
//! - [`prism_jira`]: Stoplight Prism ([`super::prism`]) serving the official Jira Cloud
//!   platform REST API v3 description (`fixtures/apis/jira_cloud_v3_openapi.json`, OpenAPI 3.0.1,
//!   info.version 1001.0.0-SNAPSHOT) in dynamic mode; one per test binary, killed with it.
//! - [`FakeJira`]: a stateful Jira Cloud following that description (issues, labels search,
//!   comments with properties, workflow transitions To Do → In Progress → Done, attachments). With
//!   Prism, it first forwards every request to Prism and keeps each `sl-violations` it reports, so
//!   a test checks the sequence here and the contract there.
//! - [`FakeServiceNow`]: a stateful ServiceNow Table API (`incident`, `sys_journal_field`) and
//!   Attachment API, answering in the shape of the recorded Vancouver instance response
//!   (`fixtures/apis/servicenow_responses/backstage_table_incident_POST_201.json`): `{"result": …}`,
//!   every value a string, references as `{link, value}`.
//!
//! Both can refuse connections (stop listening on their port), answer 503 or 429 with
//! `Retry-After` for a number of requests, lose the answer to a create (act, then answer 500), and
//! hold the answer to a comment after acting (to kill Cordon while a call is in flight).
//!
//! Both also enforce a rate limit once [`Control::limit_rate`] sets one, answering as each system
//! documents a request over its limit: 429 with `Retry-After` (whole seconds) and the
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` headers, doing nothing.
//! Jira Cloud (developer.atlassian.com/cloud/jira/platform/rate-limiting, as of 2025) limits by a
//! cost budget per account and per-second bursts without publishing numbers; ServiceNow
//! (docs.servicenow.com, "Rate limiting", Vancouver) by rate limit rules an admin sets per user
//! and window. A test sets the number of requests per window, as an admin would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fake::{self, FakeServer};
use super::prism::{Answers, Prism};

pub const JIRA_EMAIL: &str = "cordon-bot@example.com";
pub const JIRA_TOKEN: &str = "jira-api-token-for-tests";
pub const SN_USER: &str = "cordon.integration";
pub const SN_PASSWORD: &str = "servicenow-password-for-tests";

/// The base URL of the test binary's Prism on the Jira v3 description, generating its answers
/// from the schemas.
pub fn prism_jira() -> String {
    Prism::shared("apis/jira_cloud_v3_openapi.json", Answers::Dynamic)
        .base
        .clone()
}

/// How a fake answers right now.
#[derive(Default)]
pub struct Control {
    /// Answer 503 to this many requests (doing nothing).
    pub unavailable: AtomicU64,
    /// Answer 429 with `Retry-After: 1` to this many requests (doing nothing).
    pub throttled: AtomicU64,
    /// Answer 401 to this many requests (credentials being rotated; doing nothing).
    pub unauthorized: AtomicU64,
    /// Requests answered 503 / 429 / 401 so far.
    pub served_503: AtomicU64,
    pub served_429: AtomicU64,
    pub served_401: AtomicU64,
    /// The next create acts, then answers 500 (the answer is lost).
    pub lose_next_create: AtomicBool,
    /// After recording the next comment, wait this long (ms) before answering.
    pub hold_next_comment_ms: AtomicU64,
    /// The rate limit rule in force, if any: requests per window.
    rate: Mutex<Option<RateRule>>,
    /// Requests the rate limit rule answered 429.
    pub served_rate_limited: AtomicU64,
    /// The system's name, for its own header formats.
    system: std::sync::OnceLock<&'static str>,
}

/// At most `requests` requests in any `window`; the accepted ones of the last window.
struct RateRule {
    requests: usize,
    window: Duration,
    accepted: std::collections::VecDeque<std::time::Instant>,
}

impl Control {
    /// From now on, at most `requests` requests in any `window` (see the module notes).
    pub fn limit_rate(&self, requests: usize, window: Duration) {
        *self.rate.lock().unwrap() = Some(RateRule {
            requests,
            window,
            accepted: Default::default(),
        });
    }

    /// The 429 for a request over the rate limit rule, or `None` when it is within (and counted).
    fn over_rate(&self) -> Option<Response> {
        let mut rule = self.rate.lock().unwrap();
        let rule = rule.as_mut()?;
        let now = std::time::Instant::now();
        while rule
            .accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= rule.window)
        {
            rule.accepted.pop_front();
        }
        if rule.accepted.len() < rule.requests {
            rule.accepted.push_back(now);
            return None;
        }
        let oldest = rule.accepted.front().copied().unwrap_or(now);
        let left = rule.window.saturating_sub(now.duration_since(oldest));
        let reset = chrono::Utc::now() + chrono::Duration::from_std(left).unwrap_or_default();
        // Jira writes the reset as an ISO 8601 time, ServiceNow as seconds since the epoch.
        let (reset, body) = match self.system.get() {
            Some(&"ServiceNow") => (
                reset.timestamp().to_string(),
                json!({ "error": { "message": "Rate limit exceeded", "detail": "The rate limit rule for this user allows no more requests in this window" }, "status": "failure" }),
            ),
            _ => (
                reset.to_rfc3339(),
                json!({ "errorMessages": ["Rate limit exceeded."] }),
            ),
        };
        self.served_rate_limited.fetch_add(1, Ordering::SeqCst);
        Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (
                        "retry-after",
                        (left.as_secs_f64().ceil().max(1.0) as u64).to_string(),
                    ),
                    ("x-ratelimit-limit", rule.requests.to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset),
                ],
                axum::Json(body),
            )
                .into_response(),
        )
    }
}

/// 503s and 429s first, as the control says.
async fn outage(
    State(control): State<Arc<Control>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let take = |n: &AtomicU64| {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    };
    if take(&control.unavailable) {
        control.served_503.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    if take(&control.unauthorized) {
        control.served_401.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "errorMessages": ["You are not authenticated."] })),
        )
            .into_response();
    }
    if let Some(limited) = control.over_rate() {
        return limited;
    }
    if take(&control.throttled) {
        control.served_429.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(json!({ "errorMessages": ["Rate limit exceeded."] })),
        )
            .into_response();
    }
    next.run(request).await
}

fn basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// What a fake's handler holds: its data, how it answers, and what else its system needs.
pub struct Shared<D, E> {
    data: Mutex<D>,
    control: Arc<Control>,
    extra: E,
}

/// What a fake has done, in order (`create SEC-1`, `comment SEC-1 <text>`, ...).
pub trait Ops {
    fn ops(&self) -> &[String];
}

/// A running ticket system fake holding `D` (see [`FakeJira`], [`FakeServiceNow`]).
pub struct Fake<D, E> {
    pub base: String,
    shared: Arc<Shared<D, E>>,
    server: FakeServer,
    /// The system's name, for messages.
    name: &'static str,
}

impl<D, E> Fake<D, E>
where
    D: Clone + Ops + Send + 'static,
    E: Send + Sync + 'static,
{
    /// Serves `handler` behind the outage switches of [`Control`].
    async fn serve<H, T>(name: &'static str, data: D, extra: E, handler: H) -> Fake<D, E>
    where
        H: axum::handler::Handler<T, Arc<Shared<D, E>>>,
        T: 'static,
    {
        let control = Arc::new(Control::default());
        let _ = control.system.set(name);
        let shared = Arc::new(Shared {
            data: Mutex::new(data),
            control: control.clone(),
            extra,
        });
        let app = Router::new()
            .fallback(handler)
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(control, outage));
        let server = fake::serve(app).await;
        Fake {
            base: server.base.clone(),
            shared,
            server,
            name,
        }
    }

    pub fn control(&self) -> &Control {
        &self.shared.control
    }

    /// A snapshot of what the fake holds.
    pub fn data(&self) -> D {
        self.shared.data.lock().unwrap().clone()
    }

    pub async fn refuse(&self) {
        self.server.refuse().await
    }

    pub async fn accept(&self) {
        self.server.accept().await
    }

    /// Waits (30 s at most) until `done` holds for the data.
    pub async fn wait(&self, what: &str, done: impl Fn(&D) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if done(&self.data()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fake {} never saw {what}; ops: {:#?}",
                self.name,
                self.data().ops()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Jira

/// One issue in the fake Jira.
#[derive(Debug, Clone)]
pub struct Issue {
    pub id: String,
    pub key: String,
    pub fields: Value,
    /// 0 To Do, 1 In Progress, 2 Done.
    pub status: usize,
    pub comments: Vec<Value>,
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

#[derive(Debug, Clone, Default)]
pub struct JiraData {
    pub issues: Vec<Issue>,
    /// What happened, in order: `create SEC-1`, `comment SEC-1 <text>`, `transition SEC-1 Done`,
    /// `attach SEC-1 <file>`.
    pub ops: Vec<String>,
    /// Violations Prism reported, with the request they were about.
    pub violations: Vec<String>,
    /// Requests that reached the fake (method and path).
    pub requests: Vec<String>,
}

/// What the fake Jira's handler needs besides its data: Prism, if every request is checked.
pub struct JiraPeer {
    prism: Option<String>,
    http: reqwest::Client,
}

type JiraShared = Shared<JiraData, JiraPeer>;

/// The fake Jira.
pub type FakeJira = Fake<JiraData, JiraPeer>;

const STATUSES: [(&str, &str, &str); 3] = [
    ("10000", "To Do", "new"),
    ("10001", "In Progress", "indeterminate"),
    ("10002", "Done", "done"),
];

fn status_json(i: usize) -> Value {
    let (id, name, category) = STATUSES[i];
    json!({ "id": id, "name": name, "statusCategory": { "key": category, "name": name } })
}

impl FakeJira {
    /// A fake Jira; with `prism`, every request is also checked by Prism first.
    pub async fn start(prism: Option<String>) -> FakeJira {
        let peer = JiraPeer {
            prism,
            http: super::fake::prism_client(),
        };
        Fake::serve("Jira", JiraData::default(), peer, jira_handler).await
    }

    /// The texts of an issue's comments, oldest first.
    pub fn comments(&self, key: &str) -> Vec<String> {
        let data = self.data();
        data.issues
            .iter()
            .find(|i| i.key == key)
            .map(|i| {
                i.comments
                    .iter()
                    .map(|c| cordon::tickets::jira::adf_text(&c["body"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the incident report's two files are attached.
    pub async fn wait_reports(&self) {
        self.wait("both report files", |d| {
            d.ops.iter().filter(|o| o.starts_with("attach")).count() == 2
        })
        .await
    }

    /// Panics when Prism reported any violation.
    pub fn assert_no_violations(&self) {
        let data = self.data();
        assert!(
            data.violations.is_empty(),
            "Prism found violations of the Jira v3 description:\n{}",
            data.violations.join("\n")
        );
    }
}

async fn jira_handler(
    State(shared): State<Arc<JiraShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    shared
        .data
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}"));
    if let Some(prism) = &shared.extra.prism {
        check_with_prism(&shared, prism, &method, &uri, &headers, &body).await;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(basic(JIRA_EMAIL, JIRA_TOKEN).as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "errorMessages": ["You are not authenticated."] })),
        )
            .into_response();
    }
    let q = |name: &str| param(&uri, name);
    let Some(rest) = path.strip_prefix("/rest/api/3") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "errorMessages": ["Issue does not exist or you do not have permission to see it."] })),
        )
            .into_response()
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["search", "jql"]) => {
            let jql = q("jql").unwrap_or_default();
            // `labels = "<label>"`, optionally `AND reporter = currentUser()`: every issue here was
            // created by the API user, so the reporter clause matches them all.
            let wanted = jql
                .strip_prefix("labels = \"")
                .and_then(|l| l.split_once('"'))
                .map(|(label, _)| label)
                .unwrap_or("")
                .to_owned();
            let data = shared.data.lock().unwrap();
            let issues: Vec<Value> = data
                .issues
                .iter()
                .filter(|i| {
                    i.fields["labels"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == wanted.as_str()))
                })
                .map(|i| json!({ "id": i.id, "key": i.key, "fields": { "summary": i.fields["summary"] } }))
                .collect();
            axum::Json(json!({ "issues": issues, "isLast": true })).into_response()
        }
        ("POST", ["issue"]) => {
            let request = json_body();
            let fields = &request["fields"];
            let valid = fields["project"]["key"].is_string()
                && fields["issuetype"]["name"].is_string()
                && fields["summary"].is_string()
                && fields["description"]["type"] == "doc";
            if !valid {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "errorMessages": [], "errors": { "fields": "project, issuetype, summary and an ADF description are required" } })),
                )
                    .into_response();
            }
            let mut data = shared.data.lock().unwrap();
            let n = data.issues.len() + 1;
            let key = format!("{}-{n}", fields["project"]["key"].as_str().unwrap());
            let id = format!("{}", 10000 + n);
            data.issues.push(Issue {
                id: id.clone(),
                key: key.clone(),
                fields: fields.clone(),
                status: 0,
                comments: Vec::new(),
                attachments: Vec::new(),
            });
            data.ops.push(format!("create {key}"));
            if shared
                .control
                .lose_next_create
                .swap(false, Ordering::SeqCst)
            {
                return (StatusCode::INTERNAL_SERVER_ERROR, "lost").into_response();
            }
            (
                StatusCode::CREATED,
                axum::Json(json!({ "id": id, "key": key, "self": format!("https://example.atlassian.net/rest/api/3/issue/{id}") })),
            )
                .into_response()
        }
        ("GET", ["issue", key]) => {
            let data = shared.data.lock().unwrap();
            let Some(issue) = data.issues.iter().find(|i| i.key == *key || i.id == *key) else {
                return not_found();
            };
            let mut fields = issue.fields.clone();
            fields["status"] = status_json(issue.status);
            fields["attachment"] = Value::Array(
                issue
                    .attachments
                    .iter()
                    .map(|(id, name, bytes)| json!({ "id": id, "filename": name, "size": bytes.len() }))
                    .collect(),
            );
            axum::Json(json!({ "id": issue.id, "key": issue.key, "fields": fields }))
                .into_response()
        }
        ("POST", ["issue", key, "comment"]) => {
            let request = json_body();
            if request["body"]["type"] != "doc" {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({ "errorMessages": ["Comment body must be an ADF document."] }),
                    ),
                )
                    .into_response();
            }
            let hold = shared
                .control
                .hold_next_comment_ms
                .swap(0, Ordering::SeqCst);
            let comment = {
                let mut data = shared.data.lock().unwrap();
                let Some(issue) = data.issues.iter_mut().find(|i| i.key == *key) else {
                    return not_found();
                };
                let id = format!("{}", 20000 + issue.comments.len());
                let comment = json!({
                    "id": id,
                    "author": { "accountId": "cordon-bot", "displayName": "Cordon" },
                    "body": request["body"],
                    "properties": request["properties"].as_array().cloned().unwrap_or_default(),
                    "created": chrono::Utc::now().to_rfc3339(),
                });
                issue.comments.push(comment.clone());
                let text = cordon::tickets::jira::adf_text(&request["body"]);
                let key = issue.key.clone();
                data.ops.push(format!("comment {key} {text}"));
                comment
            };
            if hold > 0 {
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
            let mut answer = comment;
            answer.as_object_mut().unwrap().remove("properties");
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
        ("GET", ["issue", key, "comment"]) => {
            let data = shared.data.lock().unwrap();
            let Some(issue) = data.issues.iter().find(|i| i.key == *key) else {
                return not_found();
            };
            let expand = q("expand").is_some_and(|e| e.contains("properties"));
            let mut comments: Vec<Value> = issue
                .comments
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    if !expand {
                        c.as_object_mut().unwrap().remove("properties");
                    }
                    c
                })
                .collect();
            if q("orderBy").as_deref() == Some("-created") {
                comments.reverse();
            }
            let total = comments.len();
            axum::Json(
                json!({ "comments": comments, "startAt": 0, "maxResults": 100, "total": total }),
            )
            .into_response()
        }
        ("GET", ["issue", key, "transitions"]) => {
            if !shared
                .data
                .lock()
                .unwrap()
                .issues
                .iter()
                .any(|i| i.key == *key)
            {
                return not_found();
            }
            let transitions: Vec<Value> = STATUSES
                .iter()
                .enumerate()
                .map(|(i, (_, name, _))| json!({ "id": format!("{}1", i + 1), "name": name, "to": status_json(i) }))
                .collect();
            axum::Json(json!({ "transitions": transitions })).into_response()
        }
        ("POST", ["issue", key, "transitions"]) => {
            let request = json_body();
            let Some(to) = request["transition"]["id"]
                .as_str()
                .and_then(|id| ["11", "21", "31"].iter().position(|t| *t == id))
            else {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "errorMessages": ["Transition id is not valid."] })),
                )
                    .into_response();
            };
            let mut data = shared.data.lock().unwrap();
            let Some(issue) = data.issues.iter_mut().find(|i| i.key == *key) else {
                return not_found();
            };
            issue.status = to;
            let key = issue.key.clone();
            data.ops
                .push(format!("transition {key} {}", STATUSES[to].1));
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["issue", key, "attachments"]) => {
            if headers
                .get("x-atlassian-token")
                .and_then(|v| v.to_str().ok())
                != Some("no-check")
            {
                return (StatusCode::FORBIDDEN, "XSRF check failed").into_response();
            }
            let Some((filename, content)) = multipart_file(&headers, &body) else {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "errorMessages": ["Expected a multipart `file` part."] })),
                )
                    .into_response();
            };
            let mut data = shared.data.lock().unwrap();
            let Some(issue) = data.issues.iter_mut().find(|i| i.key == *key) else {
                return not_found();
            };
            let id = format!("{}", 30000 + issue.attachments.len());
            issue
                .attachments
                .push((id.clone(), filename.clone(), content.clone()));
            let key = issue.key.clone();
            data.ops.push(format!("attach {key} {filename}"));
            axum::Json(json!([{ "id": id, "filename": filename, "size": content.len() }]))
                .into_response()
        }
        _ => not_found(),
    }
}

/// The `file` part of a multipart body: its filename and bytes.
fn multipart_file(headers: &HeaderMap, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let text = body;
    let delimiter = format!("--{boundary}");
    let start = find(text, delimiter.as_bytes())? + delimiter.len();
    let part = &text[start..];
    let head_end = find(part, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&part[..head_end]).to_string();
    if !head.contains("name=\"file\"") {
        return None;
    }
    let filename = head
        .split("filename=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_owned();
    let content = &part[head_end + 4..];
    let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
    Some((filename, content[..end].to_vec()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends the same request to Prism and keeps what it says is wrong. The attachments operation is
/// the one exception, narrowly: the description declares its multipart body as a JSON array of
/// `MultipartFile` (a generator artefact no multipart request can satisfy), so "Request body must
/// be array" there is expected; the fake checks that body's shape itself.
async fn check_with_prism(
    shared: &JiraShared,
    prism: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) {
    let url = format!(
        "{prism}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = shared
        .extra
        .http
        .request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            url,
        )
        .body(body.clone());
    for name in [
        "content-type",
        "authorization",
        "accept",
        "x-atlassian-token",
    ] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    let what = format!("{method} {}", uri.path());
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            shared
                .data
                .lock()
                .unwrap()
                .violations
                .push(format!("{what}: Prism unreachable: {e}"));
            return;
        }
    };
    let status = response.status();
    let header = response
        .headers()
        .get("sl-violations")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    let attachments = uri.path().ends_with("/attachments");
    let mut found: Vec<Value> = header
        .and_then(|h| serde_json::from_str::<Vec<Value>>(&h).ok())
        .unwrap_or_default();
    if !status.is_success() && found.is_empty() {
        let problem: Value = serde_json::from_str(&text).unwrap_or_default();
        found = problem["validation"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if found.is_empty() {
            found.push(json!({ "message": format!("Prism answered {status}: {text}") }));
        }
    }
    found.retain(|v| !(attachments && v["message"] == "Request body must be array"));
    if !found.is_empty() {
        shared
            .data
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: {}", Value::Array(found)));
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceNow

impl Ops for JiraData {
    fn ops(&self) -> &[String] {
        &self.ops
    }
}

impl Ops for ServiceNowData {
    fn ops(&self) -> &[String] {
        &self.ops
    }
}

#[derive(Debug, Clone, Default)]
pub struct ServiceNowData {
    /// Incident records as the Table API shows them.
    pub records: Vec<Value>,
    /// sys_journal_field rows: work notes.
    pub journal: Vec<Value>,
    /// Attachments: sys_id, table_sys_id, file_name, content.
    pub attachments: Vec<(String, String, String, Vec<u8>)>,
    /// What happened, in order: `create INC…`, `work_note INC… <text>`, `update INC… state=6`,
    /// `attach INC… <file>`.
    pub ops: Vec<String>,
}

/// The fake ServiceNow's handler also holds the recorded incident it answers in the shape of.
type ServiceNowShared = Shared<ServiceNowData, Value>;

/// The fake ServiceNow.
pub type FakeServiceNow = Fake<ServiceNowData, Value>;

impl FakeServiceNow {
    pub async fn start() -> FakeServiceNow {
        let sample: Value = serde_json::from_slice(&super::read_fixture(
            "apis/servicenow_responses/backstage_table_incident_POST_201.json",
        ))
        .unwrap();
        let template = sample["result"].clone();
        Fake::serve(
            "ServiceNow",
            ServiceNowData::default(),
            template,
            servicenow_handler,
        )
        .await
    }
}

fn sn_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "message": message, "detail": "" }, "status": "failure" })),
    )
        .into_response()
}

/// The query parameter `name` of `uri`, decoded.
fn param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The Table API's answer to a query: the first `limit` of `all` that match `conditions`.
fn rows(
    all: impl Iterator<Item = Value>,
    conditions: &[(String, &'static str, String)],
    limit: usize,
) -> Response {
    let found: Vec<Value> = all.filter(|r| matches(r, conditions)).take(limit).collect();
    axum::Json(json!({ "result": found })).into_response()
}

/// A field's value as the Table API keeps it: a string.
fn text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// `a=b^c=d^eLIKEf` → conditions.
fn encoded_query(text: &str) -> Vec<(String, &'static str, String)> {
    text.split('^')
        .filter_map(|c| {
            if let Some((k, v)) = c.split_once("LIKE") {
                Some((k.to_owned(), "like", v.to_owned()))
            } else {
                c.split_once('=')
                    .map(|(k, v)| (k.to_owned(), "eq", v.to_owned()))
            }
        })
        .collect()
}

fn matches(record: &Value, conditions: &[(String, &'static str, String)]) -> bool {
    conditions.iter().all(|(k, op, v)| {
        let field = match &record[k.as_str()] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        match *op {
            "like" => field.contains(v.as_str()),
            _ => field == *v,
        }
    })
}

fn sys_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn servicenow_handler(
    State(shared): State<Arc<ServiceNowShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(basic(SN_USER, SN_PASSWORD).as_str())
    {
        return sn_error(StatusCode::UNAUTHORIZED, "User Not Authenticated");
    }
    let q = |name: &str| param(&uri, name);
    let path = uri.path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let limit = q("sysparm_limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10_000);
    let conditions = q("sysparm_query").unwrap_or_default();
    let conditions = encoded_query(&conditions);
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["api", "now", "table", "incident"]) => {
            let data = shared.data.lock().unwrap();
            rows(data.records.iter().cloned(), &conditions, limit)
        }
        ("POST", ["api", "now", "table", "incident"]) => {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
                return sn_error(StatusCode::BAD_REQUEST, "Exception while reading request");
            };
            let mut data = shared.data.lock().unwrap();
            let mut record = shared.extra.clone();
            let number = format!("INC{:07}", 10001 + data.records.len());
            for (k, v) in fields {
                record[k.as_str()] = Value::String(text(v));
            }
            record["sys_id"] = Value::String(sys_id());
            record["number"] = Value::String(number.clone());
            record["task_effective_number"] = Value::String(number.clone());
            record["state"] = Value::String("1".into());
            record["incident_state"] = Value::String("1".into());
            record["sys_created_on"] = Value::String(now.clone());
            record["sys_updated_on"] = Value::String(now);
            record["sys_mod_count"] = Value::String("0".into());
            data.records.push(record.clone());
            data.ops.push(format!("create {number}"));
            if shared
                .control
                .lose_next_create
                .swap(false, Ordering::SeqCst)
            {
                return sn_error(StatusCode::INTERNAL_SERVER_ERROR, "Transaction cancelled");
            }
            (StatusCode::CREATED, axum::Json(json!({ "result": record }))).into_response()
        }
        ("PATCH" | "PUT", ["api", "now", "table", "incident", id]) => {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
                return sn_error(StatusCode::BAD_REQUEST, "Exception while reading request");
            };
            let mut data = shared.data.lock().unwrap();
            let Some(index) = data.records.iter().position(|r| r["sys_id"] == *id) else {
                return sn_error(StatusCode::NOT_FOUND, "No Record found");
            };
            let number = data.records[index]["number"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let mut changed = Vec::new();
            for (k, v) in fields {
                let v = text(v);
                if k == "work_notes" {
                    data.journal.push(json!({ "sys_id": sys_id(), "element_id": id, "element": "work_notes", "name": "incident", "value": v, "sys_created_on": now }));
                    data.ops.push(format!("work_note {number} {v}"));
                } else {
                    changed.push(format!("{k}={v}"));
                    data.records[index][k.as_str()] = Value::String(v);
                }
            }
            let record = &mut data.records[index];
            let count = record["sys_mod_count"]
                .as_str()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            record["sys_mod_count"] = Value::String(count.to_string());
            record["sys_updated_on"] = Value::String(now);
            let record = record.clone();
            if !changed.is_empty() {
                changed.sort();
                data.ops
                    .push(format!("update {number} {}", changed.join(" ")));
            }
            axum::Json(json!({ "result": record })).into_response()
        }
        ("GET", ["api", "now", "table", "sys_journal_field"]) => {
            let data = shared.data.lock().unwrap();
            rows(data.journal.iter().cloned(), &conditions, limit)
        }
        ("GET", ["api", "now", "attachment"]) => {
            let data = shared.data.lock().unwrap();
            let attachments = data.attachments.iter().map(|(id, table_sys_id, name, bytes)| json!({ "sys_id": id, "table_name": "incident", "table_sys_id": table_sys_id, "file_name": name, "size_bytes": bytes.len().to_string() }));
            rows(attachments, &conditions, limit)
        }
        ("POST", ["api", "now", "attachment", "file"]) => {
            let (Some(table), Some(record_id), Some(name)) =
                (q("table_name"), q("table_sys_id"), q("file_name"))
            else {
                return sn_error(
                    StatusCode::BAD_REQUEST,
                    "table_name, table_sys_id and file_name are required",
                );
            };
            let mut data = shared.data.lock().unwrap();
            let Some(number) = data
                .records
                .iter()
                .find(|r| r["sys_id"] == record_id.as_str())
                .and_then(|r| r["number"].as_str().map(str::to_owned))
            else {
                return sn_error(StatusCode::NOT_FOUND, "Record not found");
            };
            let id = sys_id();
            data.attachments
                .push((id.clone(), record_id.clone(), name.clone(), body.to_vec()));
            data.ops.push(format!("attach {number} {name}"));
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                StatusCode::CREATED,
                axum::Json(json!({ "result": { "sys_id": id, "table_name": table, "table_sys_id": record_id, "file_name": name, "content_type": content_type, "size_bytes": body.len().to_string() } })),
            )
                .into_response()
        }
        _ => sn_error(
            StatusCode::BAD_REQUEST,
            "Requested URI does not represent any resource",
        ),
    }
}
