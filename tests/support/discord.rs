//! Discord for the tests: Prism validating every call Cordon makes against Discord's official
//! OpenAPI description, a stateful fake in front of it that keeps what Prism cannot (messages,
//! their edits, threads, interaction answers), and a test Ed25519 key that signs the recorded
//! interactions.
//!
//! The fake follows Discord HTTP API v10 as described in `../shared/fixtures/apis/discord_openapi.json`
//! (discord/discord-api-spec@74fda0f): create message (with `nonce` + `enforce_nonce`), edit
//! message, start a thread from a message (`160004` when one exists), execute the interaction
//! webhook and edit its original message; errors carry Discord's JSON codes (`10003`, `10008`),
//! rate limits its `X-RateLimit-*` headers and 429 body. Every request it receives is first
//! forwarded to Prism; a request Prism refuses, or whose `sl-violations` header names a request
//! violation, is recorded, and [`FakeDiscord::assert_valid`] fails the test.
//!
//! Rate limits as Discord documents them (discord.com/developers/docs/topics/rate-limits), once
//! [`FakeDiscord::enforce_rate_limits`] turns them on: every bot call counts in a bucket per route
//! and major parameter (the channel), announced on every answer by `X-RateLimit-Limit`,
//! `-Remaining`, `-Reset`, `-Reset-After` and `-Bucket`; a call on a spent bucket answers 429 with
//! `{"message", "retry_after", "global": false}`, `Retry-After` and the same headers, doing
//! nothing; and more than 50 bot calls in a second answer a global 429 (`"global": true`,
//! `X-RateLimit-Global`, `X-RateLimit-Scope: global`). Discord publishes no per-route numbers
//! (clients must read the headers); the fake gives every route 5 calls per 5 seconds, the limit
//! Discord's message routes commonly announce. Interaction webhooks are not counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

use super::fake;
use super::prism::{Answers, Prism};
use super::{TestServer, read_fixture};

pub const APP_ID: &str = "1457469483726668048";
pub const GUILD_ID: &str = "1457468924290662599";
pub const CHANNEL_ID: &str = "1457510428359004343";
/// The role the recorded payloads' guild gives its SOC members.
pub const SOC_ROLE: &str = "1457473602180878604";
/// The recorded clicker.
pub const USER_ID: &str = "1033044521375764530";
pub const OTHER_USER_ID: &str = "9876543210987654321";
pub const BOT_TOKEN: &str = "test-discord-bot-token";

// ---------------------------------------------------------------------------------------------
// Prism

/// The test binary's Prism on Discord's description, warmed up before its first use.
pub fn prism() -> &'static str {
    static WARM: OnceLock<()> = OnceLock::new();
    let prism = Prism::shared("apis/discord_openapi.json", Answers::Examples);
    WARM.get_or_init(|| warm_up(&prism.base));
    &prism.base
}

/// Prism builds each operation's validator on its first request, which takes seconds with
/// Discord's description: one request per operation Cordon uses, before any test starts.
fn warm_up(base: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let bot = format!("Bot {BOT_TOKEN}");
        let calls = [
            (
                "POST",
                "/channels/1/messages".to_owned(),
                json!({ "content": "warm" }),
            ),
            (
                "PATCH",
                "/channels/1/messages/2".to_owned(),
                json!({ "content": "warm" }),
            ),
            (
                "POST",
                "/channels/1/messages/2/threads".to_owned(),
                json!({ "name": "warm" }),
            ),
            (
                "POST",
                format!("/webhooks/{APP_ID}/warm"),
                json!({ "content": "warm" }),
            ),
            (
                "PATCH",
                format!("/webhooks/{APP_ID}/warm/messages/@original"),
                json!({ "content": "warm" }),
            ),
            (
                "POST",
                "/interactions/1/warm/callback".to_owned(),
                json!({ "type": 1 }),
            ),
        ];
        for (method, path, body) in calls {
            client
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .header("authorization", &bot)
                .json(&body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap_or_else(|e| panic!("Prism did not answer its warm-up: {e}"));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The fake

/// A message as the fake holds it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    pub content: String,
    pub embeds: Value,
    pub components: Value,
    /// Every PATCH body, in order.
    pub edits: Vec<Value>,
    pub reply_to: Option<String>,
}

impl Message {
    /// The `custom_id`s of its buttons.
    pub fn button_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for row in self.components.as_array().into_iter().flatten() {
            for c in row["components"].as_array().into_iter().flatten() {
                if let Some(id) = c["custom_id"].as_str() {
                    ids.push(id.to_owned());
                }
            }
        }
        ids
    }

    /// The embed's field `name`.
    pub fn field(&self, name: &str) -> Option<String> {
        self.embeds[0]["fields"]
            .as_array()?
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["value"].as_str())
            .map(str::to_owned)
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
    pub status: u16,
}

/// An answer the fake gives instead of the real one (an outage, a rate limit).
#[derive(Debug, Clone)]
pub enum Scripted {
    /// 429 with `retry_after` seconds (body and headers, as Discord sends it).
    RateLimited { retry_after: f64, global: bool },
    /// 503, as during an outage.
    Unavailable,
    /// 403 Missing Permissions (code 50013), as for a bot that may not start threads.
    Forbidden,
}

#[derive(Default)]
struct State {
    next_id: u64,
    messages: BTreeMap<String, Message>,
    /// Thread id → parent channel.
    threads: BTreeMap<String, String>,
    nonces: HashMap<(String, String), String>,
    calls: Vec<Call>,
    violations: Vec<String>,
    /// Interaction token → follow-up bodies.
    followups: Vec<(String, Value)>,
    /// Interaction token → the edits of the original answer.
    originals: Vec<(String, Value)>,
    /// Answers for the next calls whose `METHOD path` contains the key.
    script: Vec<(String, VecDeque<Scripted>)>,
    /// Until when a channel's create-message bucket is spent, when buckets are on.
    spent: HashMap<String, Instant>,
    /// Create-message calls that came while their bucket was spent.
    bucket_overruns: usize,
    /// Until when every call answers 503.
    outage_until: Option<Instant>,
    /// Discord's rate limits are enforced (see the module notes).
    enforce: bool,
    /// Per bucket: calls counted in its window and when the window started.
    windows: HashMap<String, (u32, Instant)>,
    /// Bot calls of the last second, for the global limit.
    recent: VecDeque<Instant>,
    /// Calls the enforced limits answered 429.
    limited: usize,
}

/// Calls per route bucket and window when limits are enforced.
const BUCKET_LIMIT: u32 = 5;
const BUCKET_WINDOW: Duration = Duration::from_secs(5);
/// Bot calls per second, all routes together.
const GLOBAL_PER_SECOND: usize = 50;

/// The stateful fake of Discord's HTTP API, every request validated by Prism.
#[derive(Clone)]
pub struct FakeDiscord {
    /// What Cordon's `api_base_url` is set to.
    pub base: String,
    state: Arc<Mutex<State>>,
    /// Each create-message answer spends its channel's bucket for this long (0: buckets off).
    bucket_reset: Arc<Mutex<Duration>>,
    /// Validations still waiting for Prism.
    validating: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let prism = tokio::task::spawn_blocking(prism).await.unwrap().to_owned();
        let state = Arc::new(Mutex::new(State {
            next_id: 1_500_000_000_000_000_000,
            ..State::default()
        }));
        let bucket_reset = Arc::new(Mutex::new(Duration::ZERO));
        let validating = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // No idle connections kept: Prism closes them after 5 s, and a reused closed one fails.
        let forward = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (s, b, v) = (state.clone(), bucket_reset.clone(), validating.clone());
        let server = fake::serve(axum::Router::new().fallback(move |request: Request| {
            let (s, b, v, forward, prism) = (
                s.clone(),
                b.clone(),
                v.clone(),
                forward.clone(),
                prism.clone(),
            );
            async move { handle(s, b, v, forward, prism, request).await }
        }))
        .await;
        FakeDiscord {
            base: format!("{}/api/v10", server.base),
            state,
            bucket_reset,
            validating,
        }
    }

    /// The next calls matching `what` (`"POST /channels"`, `"PATCH"`) get `answers` first.
    pub fn script(&self, what: &str, answers: Vec<Scripted>) {
        self.state
            .lock()
            .unwrap()
            .script
            .push((what.to_owned(), answers.into()));
    }

    /// Every call answers 503 for `how_long`.
    pub fn outage(&self, how_long: Duration) {
        self.state.lock().unwrap().outage_until = Some(Instant::now() + how_long);
    }

    /// Create-message buckets of one call per `reset`, announced in the headers as Discord does.
    pub fn buckets(&self, reset: Duration) {
        *self.bucket_reset.lock().unwrap() = reset;
    }

    pub fn bucket_overruns(&self) -> usize {
        self.state.lock().unwrap().bucket_overruns
    }

    /// Enforces Discord's rate limits from now on (see the module notes).
    pub fn enforce_rate_limits(&self) {
        self.state.lock().unwrap().enforce = true;
    }

    /// Calls the enforced limits answered 429.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Messages posted in `channel`, oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Message> {
        self.state
            .lock()
            .unwrap()
            .messages
            .values()
            .filter(|m| m.channel_id == channel)
            .cloned()
            .collect()
    }

    /// The thread started on `message`, if any.
    pub fn thread_of(&self, message: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .threads
            .contains_key(message)
            .then(|| message.to_owned())
    }

    /// Contents of the follow-ups sent for interaction `token`, with their flags.
    pub fn followups(&self, token: &str) -> Vec<(String, u64)> {
        self.state
            .lock()
            .unwrap()
            .followups
            .iter()
            .filter(|(t, _)| t == token)
            .map(|(_, b)| {
                (
                    b["content"].as_str().unwrap_or_default().to_owned(),
                    b["flags"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Contents the original answer of interaction `token` was edited to.
    pub fn originals(&self, token: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .originals
            .iter()
            .filter(|(t, _)| t == token)
            .map(|(_, b)| b["content"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Checks an answer Cordon gave Discord on the interactions endpoint: the same object goes to
    /// Discord's interaction callback route, so Prism validates it there.
    pub async fn check_answer(&self, answer: &Value) {
        let prism = tokio::task::spawn_blocking(prism).await.unwrap();
        let response = reqwest::Client::new()
            .post(format!(
                "{prism}/interactions/1457536583141163186/test-token/callback"
            ))
            .json(answer)
            .send()
            .await
            .expect("Prism answers");
        let status = response.status().as_u16();
        let violations = response
            .headers()
            .get("sl-violations")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status >= 400 || violations.contains("\"location\":[\"request\"") {
            self.state.lock().unwrap().violations.push(format!(
                "interaction answer {answer}: Prism answered {status}; {violations}"
            ));
        }
    }

    /// What Prism found invalid so far (after the validations in flight end).
    pub async fn violations(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.validating.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "Prism never finished validating");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state.lock().unwrap().violations.clone()
    }

    /// Fails the test if Prism found any request Cordon sent invalid, or Cordon sent none.
    pub async fn assert_valid(&self) {
        self.assert_no_violations().await;
        assert!(
            !self.state.lock().unwrap().calls.is_empty(),
            "Cordon made no Discord call at all"
        );
    }

    /// Fails the test if Prism found anything Cordon sent (or answered) invalid.
    pub async fn assert_no_violations(&self) {
        let violations = self.violations().await;
        assert!(
            violations.is_empty(),
            "Prism found Cordon's Discord calls invalid:\n{}",
            violations.join("\n")
        );
    }

    /// Polls until `what` holds (25 s at most: a thread note may wait for `chat.note_interval`,
    /// 10 s by default, after the one before), then returns its value.
    pub async fn wait<T>(&self, what: &str, f: impl Fn(&FakeDiscord) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            if let Some(value) = f(self) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "Discord never saw {what}; calls: {:#?}",
                self.calls()
                    .iter()
                    .map(|c| format!("{} {} {}", c.status, c.method, c.path))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The incident card (the first message in the configured channel), once posted.
    pub async fn card(&self) -> Message {
        self.wait("an incident card", |d| {
            d.messages_in(CHANNEL_ID).into_iter().next()
        })
        .await
    }

    /// The card's thread messages, once there are at least `n`.
    pub async fn thread_messages(&self, card: &str, n: usize) -> Vec<Message> {
        self.wait(&format!("{n} messages in the card's thread"), |d| {
            let thread = d.thread_of(card)?;
            let messages = d.messages_in(&thread);
            (messages.len() >= n).then_some(messages)
        })
        .await
    }

    /// The current state of message `id`.
    pub fn message(&self, id: &str) -> Option<Message> {
        self.state.lock().unwrap().messages.get(id).cloned()
    }
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

async fn handle(
    state: Arc<Mutex<State>>,
    bucket_reset: Arc<Mutex<Duration>>,
    validating: Arc<std::sync::atomic::AtomicUsize>,
    forward: reqwest::Client,
    prism: String,
    request: Request,
) -> Response {
    let method = request.method().to_string();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let path = uri.path().to_owned();
    let route = path.strip_prefix("/api/v10").unwrap_or(&path).to_owned();

    // Validated beside the answer, so Prism's pace never changes Cordon's timing.
    validating.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    {
        let (state, method, route, headers, body) = (
            state.clone(),
            method.clone(),
            route.clone(),
            headers.clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            validate(
                &state, &forward, &prism, &method, &uri, &route, &headers, &body,
            )
            .await;
            validating.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }

    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = answer(&state, &bucket_reset, &method, &route, &headers, &json);
    let status = answer.status().as_u16();
    state.lock().unwrap().calls.push(Call {
        method,
        path: route,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: json,
        at: Instant::now(),
        status,
    });
    answer
}

/// Sends the request to Prism; records a violation when Prism refuses it or reports one.
#[allow(clippy::too_many_arguments)]
async fn validate(
    state: &Mutex<State>,
    forward: &reqwest::Client,
    prism: &str,
    method: &str,
    uri: &axum::http::Uri,
    route: &str,
    headers: &HeaderMap,
    body: &Bytes,
) {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut request = forward
        .request(method.parse().unwrap(), format!("{prism}{route}{query}"))
        .body(body.clone());
    for name in ["authorization", "content-type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.clone());
        }
    }
    let what = format!("{method} {route}");
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let violations = response
                .headers()
                .get("sl-violations")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            // Prism also reports its own generated answers; only the request's count.
            if status >= 400 || violations.contains("\"location\":[\"request\"") {
                let body = response.text().await.unwrap_or_default();
                state.lock().unwrap().violations.push(format!(
                    "{what}: Prism answered {status}; {violations} {body}"
                ));
            }
        }
        Err(e) => state
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: Prism unreachable: {e}")),
    }
}

/// The bucket a bot call counts in: its route with the channel as major parameter and other ids
/// left out (`POST /channels/1/messages`, `PATCH /channels/1/messages/:id`); `None` for calls not
/// counted (interaction webhooks).
fn bucket_of(method: &str, route: &str) -> Option<String> {
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["channels", channel, rest @ ..] => {
            let rest: Vec<&str> = rest
                .iter()
                .map(|s| {
                    if s.bytes().all(|b| b.is_ascii_digit()) {
                        ":id"
                    } else {
                        s
                    }
                })
                .collect();
            Some(format!("{method} /channels/{channel}/{}", rest.join("/")))
        }
        _ => None,
    }
}

/// Answers with Discord's rate limits applied when they are enforced: a 429 for a call over them,
/// else the answer with its bucket's headers.
fn answer(
    state: &Mutex<State>,
    bucket_reset: &Mutex<Duration>,
    method: &str,
    route: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let counted = {
        let mut s = state.lock().unwrap();
        match bucket_of(method, route).filter(|_| s.enforce) {
            None => None,
            Some(bucket) => {
                let now = Instant::now();
                while s
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    s.recent.pop_front();
                }
                let window = s.windows.entry(bucket.clone()).or_insert((0, now));
                if now.duration_since(window.1) >= BUCKET_WINDOW {
                    *window = (0, now);
                }
                let reset_after = BUCKET_WINDOW.saturating_sub(now.duration_since(window.1));
                let (count, global) = (window.0, s.recent.len() >= GLOBAL_PER_SECOND);
                if count >= BUCKET_LIMIT || global {
                    s.limited += 1;
                    let wait = if global {
                        1.0
                    } else {
                        reset_after.as_secs_f64()
                    };
                    let mut response = (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({ "message": "You are being rate limited.", "retry_after": wait, "global": global })),
                    )
                        .into_response();
                    let h = response.headers_mut();
                    h.insert(
                        "retry-after",
                        HeaderValue::from(wait.ceil().max(1.0) as u64),
                    );
                    if global {
                        h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
                        h.insert("x-ratelimit-scope", HeaderValue::from_static("global"));
                    } else {
                        h.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
                        bucket_headers(h, &bucket, 0, reset_after);
                    }
                    return response;
                }
                if let Some(window) = s.windows.get_mut(&bucket) {
                    window.0 += 1;
                }
                s.recent.push_back(now);
                Some((bucket, BUCKET_LIMIT - count - 1, reset_after))
            }
        }
    };
    let mut response = scripted_or_state(state, bucket_reset, method, route, headers, body);
    if let Some((bucket, remaining, reset_after)) = counted
        && !response.headers().contains_key("x-ratelimit-bucket")
    {
        bucket_headers(response.headers_mut(), &bucket, remaining, reset_after);
    }
    response
}

/// The `X-RateLimit-*` headers of a bucket with `remaining` calls until `reset_after`.
fn bucket_headers(h: &mut HeaderMap, bucket: &str, remaining: u32, reset_after: Duration) {
    use sha2::Digest;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + reset_after;
    let hash = sha2::Sha256::digest(bucket.as_bytes());
    let id: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    h.insert("x-ratelimit-limit", HeaderValue::from(BUCKET_LIMIT));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from_str(&format!("{:.3}", reset.as_secs_f64())).unwrap(),
    );
    h.insert(
        "x-ratelimit-reset-after",
        HeaderValue::from_str(&format!("{:.3}", reset_after.as_secs_f64())).unwrap(),
    );
    h.insert("x-ratelimit-bucket", HeaderValue::from_str(&id).unwrap());
}

fn scripted_or_state(
    state: &Mutex<State>,
    bucket_reset: &Mutex<Duration>,
    method: &str,
    route: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let mut state = state.lock().unwrap();
    let what = format!("{method} {route}");
    if state
        .outage_until
        .is_some_and(|until| Instant::now() < until)
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, 0, "upstream unavailable");
    }
    if let Some((_, answers)) = state
        .script
        .iter_mut()
        .find(|(key, answers)| what.contains(key.as_str()) && !answers.is_empty())
    {
        match answers.pop_front() {
            Some(Scripted::RateLimited {
                retry_after,
                global,
            }) => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({ "message": "You are being rate limited.", "retry_after": retry_after, "global": global })),
                )
                    .into_response();
                let h = response.headers_mut();
                h.insert("retry-after", HeaderValue::from(retry_after.ceil() as u64));
                h.insert("x-ratelimit-limit", HeaderValue::from(5));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0));
                h.insert(
                    "x-ratelimit-reset-after",
                    HeaderValue::from_str(&retry_after.to_string()).unwrap(),
                );
                h.insert(
                    "x-ratelimit-bucket",
                    HeaderValue::from_static("fake-bucket"),
                );
                if global {
                    h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
                }
                return response;
            }
            Some(Scripted::Unavailable) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, 0, "upstream unavailable");
            }
            Some(Scripted::Forbidden) => {
                return error(StatusCode::FORBIDDEN, 50013, "Missing Permissions");
            }
            None => {}
        }
    }
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let bot = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bot {BOT_TOKEN}"));
    match (method, segments.as_slice()) {
        ("POST", ["channels", channel, "messages"]) => {
            if !bot {
                return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
            }
            let channel = channel.to_string();
            if channel != CHANNEL_ID && !state.threads.contains_key(&channel) {
                return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            }
            let reset = *bucket_reset.lock().unwrap();
            if !reset.is_zero() {
                if let Some(until) = state.spent.get(&channel).copied()
                    && Instant::now() < until
                {
                    state.bucket_overruns += 1;
                    let left = (until - Instant::now()).as_secs_f64();
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({ "message": "You are being rate limited.", "retry_after": left, "global": false })),
                    )
                        .into_response();
                }
                state.spent.insert(channel.clone(), Instant::now() + reset);
            }
            let nonce = body["nonce"].as_str().map(str::to_owned);
            let existing = nonce
                .as_ref()
                .filter(|_| body["enforce_nonce"] == true)
                .and_then(|n| state.nonces.get(&(channel.clone(), n.clone())))
                .cloned();
            let id = match existing {
                Some(id) => id,
                None => {
                    state.next_id += 1;
                    let id = state.next_id.to_string();
                    state.messages.insert(
                        id.clone(),
                        Message {
                            id: id.clone(),
                            channel_id: channel.clone(),
                            content: body["content"].as_str().unwrap_or_default().to_owned(),
                            embeds: body.get("embeds").cloned().unwrap_or(json!([])),
                            components: body.get("components").cloned().unwrap_or(json!([])),
                            edits: Vec::new(),
                            reply_to: body["message_reference"]["message_id"]
                                .as_str()
                                .map(str::to_owned),
                        },
                    );
                    if let Some(n) = nonce {
                        state.nonces.insert((channel.clone(), n), id.clone());
                    }
                    id
                }
            };
            let message = state.messages[&id].clone();
            let mut response = axum::Json(message_json(&message)).into_response();
            if !reset.is_zero() {
                let h = response.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(1));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0));
                h.insert(
                    "x-ratelimit-reset-after",
                    HeaderValue::from_str(&format!("{:.3}", reset.as_secs_f64())).unwrap(),
                );
                h.insert(
                    "x-ratelimit-bucket",
                    HeaderValue::from_static("fake-bucket"),
                );
            }
            response
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            if !bot {
                return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
            }
            let Some(message) = state
                .messages
                .get_mut(*id)
                .filter(|m| m.channel_id == *channel)
            else {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            if let Some(content) = body["content"].as_str() {
                message.content = content.to_owned();
            }
            if let Some(embeds) = body.get("embeds") {
                message.embeds = embeds.clone();
            }
            if let Some(components) = body.get("components") {
                message.components = components.clone();
            }
            message.edits.push(body.clone());
            axum::Json(message_json(message)).into_response()
        }
        ("POST", ["channels", channel, "messages", id, "threads"]) => {
            if !bot {
                return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
            }
            if state
                .messages
                .get(*id)
                .is_none_or(|m| m.channel_id != *channel)
            {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if state.threads.contains_key(*id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            state.threads.insert(id.to_string(), channel.to_string());
            (
                StatusCode::CREATED,
                axum::Json(json!({
                    "id": id, "type": 11, "guild_id": GUILD_ID, "parent_id": channel,
                    "name": body["name"], "owner_id": APP_ID, "message_count": 0, "member_count": 1,
                    "thread_metadata": { "archived": false, "auto_archive_duration": body["auto_archive_duration"], "archive_timestamp": chrono::Utc::now().to_rfc3339(), "locked": false }
                })),
            )
                .into_response()
        }
        ("POST", ["webhooks", app, token]) if *app == APP_ID => {
            state.followups.push((token.to_string(), body.clone()));
            state.next_id += 1;
            let message = Message {
                id: state.next_id.to_string(),
                channel_id: CHANNEL_ID.into(),
                content: body["content"].as_str().unwrap_or_default().to_owned(),
                embeds: json!([]),
                components: json!([]),
                edits: vec![],
                reply_to: None,
            };
            axum::Json(message_json(&message)).into_response()
        }
        ("PATCH", ["webhooks", app, token, "messages", "@original"]) if *app == APP_ID => {
            state.originals.push((token.to_string(), body.clone()));
            state.next_id += 1;
            let message = Message {
                id: state.next_id.to_string(),
                channel_id: CHANNEL_ID.into(),
                content: body["content"].as_str().unwrap_or_default().to_owned(),
                embeds: json!([]),
                components: json!([]),
                edits: vec![],
                reply_to: None,
            };
            axum::Json(message_json(&message)).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    }
}

fn message_json(m: &Message) -> Value {
    json!({
        "id": m.id, "channel_id": m.channel_id, "type": 0, "content": m.content,
        "author": { "id": APP_ID, "username": "Cordon", "discriminator": "0000", "global_name": null, "avatar": null, "bot": true },
        "timestamp": chrono::Utc::now().to_rfc3339(), "edited_timestamp": if m.edits.is_empty() { Value::Null } else { json!(chrono::Utc::now().to_rfc3339()) },
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": m.embeds, "components": m.components, "pinned": false, "flags": 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Signed interactions

/// The test application's key pair (the config gets the public half).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub fn public_key_hex() -> String {
    hex::encode(signing_key().verifying_key().to_bytes())
}

/// `X-Signature-Ed25519` for `body` sent at `timestamp`.
pub fn sign(timestamp: &str, body: &[u8]) -> String {
    let message = [timestamp.as_bytes(), body].concat();
    hex::encode(signing_key().sign(&message).to_bytes())
}

/// The `chat:` section pointing Cordon at `fake`, with `triggers` as the trigger group.
pub fn chat_section(fake: &FakeDiscord, triggers: Option<&str>) -> String {
    let triggers = triggers
        .map(|g| format!("  triggers: {g}\n"))
        .unwrap_or_default();
    format!(
        "chat:\n{triggers}  discord:\n    application_id: \"{APP_ID}\"\n    public_key: {}\n    bot_token: {BOT_TOKEN}\n    channel_id: \"{CHANNEL_ID}\"\n    api_base_url: {}\n",
        public_key_hex(),
        fake.base
    )
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1_600_000_000_000_000_000);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// A recorded button click (`buttonClickHello`), edited: a fresh interaction id and token,
/// `custom_id`, the clicker and their roles, and the card it was clicked on.
pub fn click(custom_id: &str, user: &str, roles: &[&str], card: &str) -> (Value, String) {
    let replay: Value = serde_json::from_slice(&read_fixture(
        "callbacks/discord/vercel_chat_replay_discord.json",
    ))
    .unwrap();
    let mut click = replay["buttonClickHello"].clone();
    let token = format!("test-interaction-token-{}", unique());
    click["id"] = json!(unique().to_string());
    click["token"] = json!(token);
    click["data"]["custom_id"] = json!(custom_id);
    click["member"]["user"]["id"] = json!(user);
    click["member"]["roles"] = json!(roles);
    click["message"]["id"] = json!(card);
    click["message"]["channel_id"] = json!(CHANNEL_ID);
    click["channel_id"] = json!(CHANNEL_ID);
    (click, token)
}

/// A `/cordon <sub> ...` command as Discord sends it (APPLICATION_COMMAND, type 2), from the
/// recorded click's guild member.
pub fn command(sub: &str, options: &[(&str, &str)], user: &str, roles: &[&str]) -> (Value, String) {
    let replay: Value = serde_json::from_slice(&read_fixture(
        "callbacks/discord/vercel_chat_replay_discord.json",
    ))
    .unwrap();
    let base = &replay["buttonClickHello"];
    let token = format!("test-interaction-token-{}", unique());
    let options: Vec<Value> = options
        .iter()
        .map(|(name, value)| json!({ "name": name, "type": 3, "value": value }))
        .collect();
    let mut member = base["member"].clone();
    member["user"]["id"] = json!(user);
    member["roles"] = json!(roles);
    let command = json!({
        "id": unique().to_string(),
        "application_id": APP_ID,
        "type": 2,
        "token": token,
        "version": 1,
        "guild_id": GUILD_ID,
        "channel_id": CHANNEL_ID,
        "channel": base["channel"],
        "member": member,
        "locale": "en-US",
        "guild_locale": "en-US",
        "app_permissions": base["app_permissions"],
        "entitlements": [],
        "authorizing_integration_owners": base["authorizing_integration_owners"],
        "context": 0,
        "attachment_size_limit": base["attachment_size_limit"],
        "data": {
            "id": "1457999999999999999",
            "name": "cordon",
            "type": 1,
            "guild_id": GUILD_ID,
            "options": [{ "name": sub, "type": 1, "options": options }],
        },
    });
    (command, token)
}

/// POSTs `body` to the interactions endpoint signed now.
pub async fn send(server: &TestServer, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = sign(&ts, &bytes);
    send_raw(server, &bytes, Some(&ts), Some(&signature)).await
}

/// POSTs raw bytes with the given signature headers.
pub async fn send_raw(
    server: &TestServer,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
) -> (u16, Value) {
    let mut request = server
        .http
        .post(format!("{}/v1/chat/discord/interactions", server.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(ts) = timestamp {
        request = request.header("X-Signature-Timestamp", ts);
    }
    if let Some(sig) = signature {
        request = request.header("X-Signature-Ed25519", sig);
    }
    server.send(request).await
}

/// `user` clicks Approve on the card of `run` (step `approve`) that `fake` received; what they are
/// told.
pub async fn approve_run(fake: &FakeDiscord, server: &TestServer, user: &str, run: &str) -> String {
    let button = format!("approve:{run}:approve");
    let card = fake
        .wait("the Discord card of the run", |d| {
            d.messages_in(CHANNEL_ID)
                .into_iter()
                .find(|m| m.button_ids().contains(&button))
        })
        .await;
    let (click, token) = click(&button, user, &[], &card.id);
    let (status, answer) = send(server, &click).await;
    assert_eq!(status, 200, "{answer}");
    fake.wait("the answer to the click", |d| {
        d.followups(&token).into_iter().next().map(|(text, _)| text)
    })
    .await
}
