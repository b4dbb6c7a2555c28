//! Slack for tests: Stoplight Prism validating every Web API call against Slack's official
//! description, a stateful fake Slack answering them, and Slack's signing of inbound requests.
//!
//! - [`prism`] runs one Prism (`CORDON_TEST_PRISM`) per test binary on
//!   `../shared/fixtures/apis/slack_web_openapi.json` (Slack's Web API, Swagger 2.0, the archived
//!   official copy of 2021).
//! - [`FakeSlack`] is the Web API Cordon is pointed at. Every call is first sent to Prism as it
//!   came (method, path, query, content type, authorization, body); the violations Prism reports
//!   about the *request* are kept in [`FakeSlack::violations`], which tests assert empty. Then the
//!   fake answers statefully, following the same description's shapes: `chat.postMessage` gives
//!   each message a channel-wide increasing `ts` and refuses a `thread_ts` that is not a message
//!   of the channel, `chat.update` changes a message that exists (`message_not_found`
//!   otherwise), `chat.postEphemeral`, `usergroups.users.list` from the members a test sets, and
//!   `apps.connections.open` plus a Socket Mode WebSocket (Slack's envelope and acknowledgement
//!   frames, <https://api.slack.com/apis/connections/socket-implement>), which the 2021
//!   description predates, so Prism does not see it.
//! - One documented exemption: the archived description lists the token as a required `token`
//!   header (query parameter for GET methods). Slack takes it from `Authorization: Bearer`, and
//!   refuses query-string tokens from apps created since February 2021, so Cordon sends the
//!   bearer header only. Prism's "must have required property 'token'" is therefore not counted
//!   for a request that carries `Authorization: Bearer xoxb-…`; Prism still checks that header
//!   (its security scheme), and every other property, type and content type.
//! - Failure switches: an outage (every call answers a status) and 429 with `Retry-After`.
//! - Slack's documented rate limits, once [`FakeSlack::enforce_rate_limits`] turns them on
//!   (<https://api.slack.com/apis/rate-limits> and each method's page, as of 2025):
//!   `chat.postMessage` one message per second per channel, threads included, "short bursts over
//!   1 allowed" (the fake allows a burst of 3, refilled at one a second); `chat.update` Tier 3,
//!   50 a minute for the workspace. Beyond them a call answers 429 with `Retry-After` (whole
//!   seconds, as Slack sends it) and `{"ok": false, "error": "ratelimited"}`, changing nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::fake;
use super::prism::{Answers, Prism};
use super::read_fixture;

pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
pub const APP_TOKEN: &str = "xapp-test-app-token";
pub const SIGNING_SECRET: &str = "test-slack-signing-secret";
pub const CHANNEL: &str = "C0SOCCARDS";

/// The test binary's Prism on Slack's Web API description.
pub fn prism() -> &'static Prism {
    Prism::shared("apis/slack_web_openapi.json", Answers::Examples)
}

/// One Web API call as the fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, ...
    pub method: String,
    pub http_method: String,
    pub content_type: String,
    pub authorization: String,
    /// Form fields, or query parameters for a GET.
    pub params: BTreeMap<String, String>,
    /// When it arrived.
    pub at: Instant,
    /// The HTTP status the fake answered.
    pub answered: u16,
}

/// A message in the fake's channel history.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Value,
    /// Every version before the current one, oldest first (each `(text, blocks)`).
    pub history: Vec<(String, Value)>,
}

impl Posted {
    /// The message's blocks as JSON text, for `contains` checks.
    pub fn blocks_text(&self) -> String {
        self.blocks.to_string()
    }

    /// Whether it still shows Approve / Deny buttons.
    pub fn has_buttons(&self) -> bool {
        self.blocks
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"] == "actions"))
    }

    /// The value the Approve button carries.
    pub fn button_value(&self) -> Option<String> {
        self.blocks.as_array()?.iter().find_map(|b| {
            if b["type"] == "actions" {
                b["elements"][0]["value"].as_str().map(str::to_owned)
            } else {
                None
            }
        })
    }
}

/// A message only one user sees.
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
}

#[derive(Default)]
pub struct FakeState {
    pub calls: Vec<Call>,
    pub messages: Vec<Posted>,
    pub ephemerals: Vec<Ephemeral>,
    /// Prism's findings about requests (see the module notes), and the fake's own.
    pub violations: Vec<String>,
    /// Members of user groups, by group id.
    pub groups: HashMap<String, Vec<String>>,
    /// Every call answers this HTTP status while set (an outage).
    pub outage: Option<u16>,
    /// The next calls answer 429 with these `Retry-After` seconds, one each.
    pub rate_limits: VecDeque<u64>,
    /// Slack's documented rate limits (see the module notes) are enforced.
    pub enforce_limits: bool,
    /// Per channel: the `chat.postMessage` burst left and when it was last counted.
    post_buckets: HashMap<String, (f64, Instant)>,
    /// When recent `chat.update` calls were accepted (the last minute's).
    updates: VecDeque<Instant>,
    /// Calls answered 429 by the enforced limits.
    pub limited: usize,
    /// How long every Web API call takes to answer: a Slack across the internet rather than on
    /// the same machine (Socket Mode's `apps.connections.open` included, which Cordon waits for
    /// at start).
    pub latency: Duration,
    next_ts: u64,
    sockets: Vec<mpsc::UnboundedSender<String>>,
    /// Socket Mode connections open now.
    pub open_sockets: usize,
    /// Socket Mode acknowledgements by envelope id.
    acks: HashMap<String, Value>,
    ws_url: String,
}

/// The fake Slack Web API (and Socket Mode), checked by Prism.
#[derive(Clone)]
pub struct FakeSlack {
    /// The `api_url` to configure: `http://127.0.0.1:<port>/api`.
    pub api_url: String,
    pub state: Arc<Mutex<FakeState>>,
    prism: Option<String>,
    http: reqwest::Client,
}

impl FakeSlack {
    /// A fake whose every call Prism validates.
    pub async fn start() -> FakeSlack {
        let prism = prism().base.clone();
        FakeSlack::start_with(Some(prism)).await
    }

    async fn start_with(prism: Option<String>) -> FakeSlack {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        state.lock().unwrap().ws_url = format!("ws://{}/link", ws.local_addr().unwrap());
        tokio::spawn(serve_sockets(ws, state.clone()));
        let port = fake::Port::bind().await;
        let fake = FakeSlack {
            api_url: format!("{}/api", port.base),
            state,
            prism,
            http: super::fake::prism_client(),
        };
        port.serve(
            axum::Router::new()
                .fallback(handle)
                .with_state(fake.clone()),
        );
        fake
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn messages(&self) -> Vec<Posted> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Messages that start a thread (cards).
    pub fn cards(&self) -> Vec<Posted> {
        self.messages()
            .into_iter()
            .filter(|m| m.thread_ts.is_none())
            .collect()
    }

    /// Replies in the thread of the message `ts`.
    pub fn replies(&self, ts: &str) -> Vec<Posted> {
        self.messages()
            .into_iter()
            .filter(|m| m.thread_ts.as_deref() == Some(ts))
            .collect()
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.state.lock().unwrap().ephemerals.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Fails the test if Prism (or the fake) found anything wrong with a request.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "Slack Web API calls broke Slack's description:\n{}",
            violations.join("\n")
        );
    }

    pub fn set_group(&self, group: &str, members: &[&str]) {
        self.state.lock().unwrap().groups.insert(
            group.to_owned(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    pub fn set_outage(&self, status: Option<u16>) {
        self.state.lock().unwrap().outage = status;
    }

    /// Enforces Slack's documented rate limits from now on (see the module notes).
    pub fn enforce_rate_limits(&self) {
        self.state.lock().unwrap().enforce_limits = true;
    }

    /// Calls the enforced limits answered 429.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    /// Every Web API call answers `latency` later (see [`FakeState::latency`]).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn rate_limit_next(&self, retry_after: &[u64]) {
        self.state
            .lock()
            .unwrap()
            .rate_limits
            .extend(retry_after.iter().copied());
    }

    /// Polls until `check` holds on the fake (20 s at most: a thread note may wait for
    /// `chat.note_interval`, 10 s by default, after the one before).
    pub async fn wait<T>(&self, what: &str, check: impl Fn(&FakeSlack) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "Slack never saw {what}; messages: {:#?}; ephemerals: {:#?}",
                self.messages(),
                self.ephemerals()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a Socket Mode connection, sends `envelope` on it, and gives back Cordon's
    /// acknowledgement frame.
    pub async fn socket_send(&self, envelope: Value) -> Value {
        let id = envelope["envelope_id"].as_str().unwrap().to_owned();
        let sender = self
            .wait("a Socket Mode connection", |f| {
                f.state.lock().unwrap().sockets.first().cloned()
            })
            .await;
        sender.send(envelope.to_string()).unwrap();
        self.wait("the envelope acknowledged", |f| {
            f.state.lock().unwrap().acks.get(&id).cloned()
        })
        .await
    }

    /// Sends the request to Prism as Cordon sent it; keeps what Prism says is wrong with it.
    async fn validate(
        &self,
        method: &str,
        http_method: &str,
        query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) {
        let Some(prism) = &self.prism else { return };
        if method == "apps.connections.open" {
            // Not in the 2021 description (see the module notes).
            return;
        }
        let url = if query.is_empty() {
            format!("{prism}/{method}")
        } else {
            format!("{prism}/{method}?{query}")
        };
        let mut request = self
            .http
            .request(http_method.parse().unwrap(), url)
            .body(body.clone());
        for name in ["content-type", "authorization"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.clone());
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                self.state
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("{method}: Prism did not answer: {e}"));
                return;
            }
        };
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer xox"));
        let status = answer.status().as_u16();
        let mut found = Vec::new();
        if let Some(header) = answer.headers().get("sl-violations") {
            let list: Vec<Value> = serde_json::from_slice(header.as_bytes())
                .unwrap_or_else(|_| vec![json!(header.to_str().unwrap_or("?"))]);
            for v in list {
                if v["location"][0] != "request" {
                    // About Prism's own example answers, not Cordon's request.
                    continue;
                }
                let message = v["message"].as_str().unwrap_or_default();
                let token_param = message == "Request header must have required property 'token'"
                    || message == "Request query must have required property 'token'";
                if token_param && bearer {
                    continue;
                }
                found.push(format!("{method}: {v}"));
            }
        }
        if matches!(status, 401 | 404 | 405 | 415) {
            found.push(format!("{method}: Prism answered {status}"));
        }
        self.state.lock().unwrap().violations.extend(found);
    }
}

fn params_of(content_type: &str, query: &str, body: &[u8]) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    } else if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in map {
            params.insert(
                k,
                match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
            );
        }
    }
    params
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({ "ok": false, "error": code })).into_response()
}

async fn handle(State(fake): State<FakeSlack>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let Some(method) = parts.uri.path().strip_prefix("/api/").map(str::to_owned) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let call = Call {
        method: method.clone(),
        http_method: parts.method.to_string(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        params: params_of(&header("content-type"), &query, &body),
        at: Instant::now(),
        answered: 200,
    };
    let p = call.params.clone();
    // Counted against the limits as it arrives, before Prism (whose pace varies) sees it.
    let over = {
        let mut state = fake.state.lock().unwrap();
        if state.enforce_limits {
            over_limit(&mut state, &method, &p)
        } else {
            None
        }
    };
    fake.validate(
        &method,
        parts.method.as_str(),
        &query,
        &parts.headers,
        &body,
    )
    .await;
    let latency = fake.state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut state = fake.state.lock().unwrap();
    state.calls.push(call.clone());
    if let Some(status) = state.outage {
        if let Some(last) = state.calls.last_mut() {
            last.answered = status;
        }
        return (
            StatusCode::from_u16(status).unwrap(),
            "Slack is having trouble",
        )
            .into_response();
    }
    if let Some(after) = state.rate_limits.pop_front() {
        if let Some(last) = state.calls.last_mut() {
            last.answered = 429;
        }
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", after.to_string())],
            axum::Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response();
    }
    if let Some(after) = over {
        state.limited += 1;
        if let Some(last) = state.calls.last_mut() {
            last.answered = 429;
        }
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", after.to_string())],
            axum::Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response();
    }
    let expected_token = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if call.authorization != format!("Bearer {expected_token}") {
        return slack_error("not_authed");
    }
    match method.as_str() {
        "chat.postMessage" => {
            let Some(channel) = p.get("channel").cloned() else {
                return slack_error("channel_not_found");
            };
            let thread_ts = p.get("thread_ts").cloned();
            if let Some(thread) = &thread_ts
                && !state
                    .messages
                    .iter()
                    .any(|m| &m.ts == thread && m.channel == channel && m.thread_ts.is_none())
            {
                state.violations.push(format!(
                    "chat.postMessage: thread_ts {thread} is no message of {channel}"
                ));
                return slack_error("thread_not_found");
            }
            let blocks = match p.get("blocks") {
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(blocks @ Value::Array(_)) => blocks,
                    _ => return slack_error("invalid_blocks"),
                },
                None => Value::Null,
            };
            let text = p.get("text").cloned().unwrap_or_default();
            if text.is_empty() && blocks.is_null() {
                return slack_error("no_text");
            }
            state.next_ts += 1;
            let ts = format!("1700000000.{:06}", state.next_ts);
            state.messages.push(Posted {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: thread_ts.clone(),
                text: text.clone(),
                blocks: blocks.clone(),
                history: Vec::new(),
            });
            let mut message = json!({ "type": "message", "ts": ts, "text": text, "bot_id": "B0CORDON", "user": "U0CORDON" });
            if !blocks.is_null() {
                message["blocks"] = blocks;
            }
            if let Some(thread) = thread_ts {
                message["thread_ts"] = json!(thread);
            }
            axum::Json(json!({ "ok": true, "channel": channel, "ts": ts, "message": message }))
                .into_response()
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (p.get("channel").cloned(), p.get("ts").cloned())
            else {
                return slack_error("message_not_found");
            };
            let text = p.get("text").cloned().unwrap_or_default();
            let blocks = p
                .get("blocks")
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .unwrap_or(Value::Null);
            let Some(message) = state
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return slack_error("message_not_found");
            };
            let previous = (
                std::mem::replace(&mut message.text, text.clone()),
                std::mem::replace(&mut message.blocks, blocks.clone()),
            );
            message.history.push(previous);
            axum::Json(json!({ "ok": true, "channel": channel, "ts": ts, "text": text,
                "message": { "text": text, "blocks": blocks, "bot_id": "B0CORDON", "user": "U0CORDON" } }))
            .into_response()
        }
        "chat.postEphemeral" => {
            let (Some(channel), Some(user)) = (p.get("channel").cloned(), p.get("user").cloned())
            else {
                return slack_error("user_not_in_channel");
            };
            state.ephemerals.push(Ephemeral {
                channel,
                user,
                text: p.get("text").cloned().unwrap_or_default(),
            });
            state.next_ts += 1;
            let ts = format!("1700000000.{:06}", state.next_ts);
            axum::Json(json!({ "ok": true, "message_ts": ts })).into_response()
        }
        "usergroups.users.list" => {
            let group = p.get("usergroup").cloned().unwrap_or_default();
            match state.groups.get(&group) {
                Some(users) => axum::Json(json!({ "ok": true, "users": users })).into_response(),
                None => slack_error("no_such_subteam"),
            }
        }
        "apps.connections.open" => {
            axum::Json(json!({ "ok": true, "url": state.ws_url })).into_response()
        }
        _ => slack_error("unknown_method"),
    }
}

/// The `Retry-After` seconds for a call over Slack's documented limits, or `None` when the call
/// is within them (and then counted).
fn over_limit(state: &mut FakeState, method: &str, p: &BTreeMap<String, String>) -> Option<u64> {
    /// `chat.postMessage`: the burst a channel allows, refilled at one message a second.
    const BURST: f64 = 3.0;
    /// `chat.update`, Tier 3.
    const PER_MINUTE: usize = 50;
    let now = Instant::now();
    match method {
        "chat.postMessage" => {
            let channel = p.get("channel").cloned().unwrap_or_default();
            let (tokens, since) = state.post_buckets.entry(channel).or_insert((BURST, now));
            *tokens = (*tokens + now.duration_since(*since).as_secs_f64()).min(BURST);
            *since = now;
            if *tokens < 1.0 {
                return Some((1.0 - *tokens).ceil().max(1.0) as u64);
            }
            *tokens -= 1.0;
            None
        }
        "chat.update" => {
            let minute = Duration::from_secs(60);
            while state
                .updates
                .front()
                .is_some_and(|t| now.duration_since(*t) >= minute)
            {
                state.updates.pop_front();
            }
            if state.updates.len() >= PER_MINUTE {
                let oldest = state.updates.front().copied().unwrap_or(now);
                let left = minute.saturating_sub(now.duration_since(oldest));
                return Some(left.as_secs_f64().ceil().max(1.0) as u64);
            }
            state.updates.push_back(now);
            None
        }
        _ => None,
    }
}

/// Socket Mode: each connection gets `hello`, then the envelopes a test sends; acknowledgements
/// are kept by envelope id.
async fn serve_sockets(listener: tokio::net::TcpListener, state: Arc<Mutex<FakeState>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut write, mut read) = socket.split();
            let hello = json!({ "type": "hello", "num_connections": 1,
                "connection_info": { "app_id": "A00FAKEAPP01" },
                "debug_info": { "host": "fake-slack", "approximate_connection_time": 18060 } });
            if write
                .send(WsMessage::text(hello.to_string()))
                .await
                .is_err()
            {
                return;
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            {
                let mut state = state.lock().unwrap();
                state.sockets.push(tx);
                state.open_sockets += 1;
            }
            loop {
                tokio::select! {
                    outgoing = rx.recv() => match outgoing {
                        Some(text) => if write.send(WsMessage::text(text)).await.is_err() { break },
                        None => break,
                    },
                    incoming = read.next() => match incoming {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Ok(ack) = serde_json::from_str::<Value>(text.as_str())
                                && let Some(id) = ack["envelope_id"].as_str()
                            {
                                state.lock().unwrap().acks.insert(id.to_owned(), ack.clone());
                            }
                        }
                        Some(Ok(WsMessage::Ping(data))) => { let _ = write.send(WsMessage::Pong(data)).await; }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            drop(rx);
            let mut state = state.lock().unwrap();
            state.open_sockets -= 1;
            state.sockets.retain(|s| !s.is_closed());
        });
    }
}

/// `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>`: Slack's request signature.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The recorded `block_actions` payload (`callbacks/slack/vercel_chat_replay_actions_reactions_slack.json`,
/// key `action`), edited into a click on Cordon's card: `user` pressing Approve (or Deny) on the
/// message `card` carrying the button value `value`.
pub fn click_payload(user: &str, card: &Posted, value: &str, approve: bool) -> Value {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/slack/vercel_chat_replay_actions_reactions_slack.json",
    ))
    .unwrap();
    let mut payload = recorded["action"].clone();
    // Each click is its own request, as in Slack: its own trigger id and action time.
    static CLICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let now = chrono::Utc::now();
    payload["trigger_id"] = json!(format!("10215325802133.3901254001572.click{n}"));
    payload["user"]["id"] = json!(user);
    payload["user"]["username"] = json!(format!("name-{user}"));
    payload["user"]["name"] = json!(format!("name-{user}"));
    payload["channel"]["id"] = json!(card.channel);
    payload["container"]["channel_id"] = json!(card.channel);
    payload["container"]["message_ts"] = json!(card.ts);
    payload["message"]["ts"] = json!(card.ts);
    match &card.thread_ts {
        Some(thread) => {
            payload["container"]["thread_ts"] = json!(thread);
            payload["message"]["thread_ts"] = json!(thread);
        }
        None => {
            payload["container"]
                .as_object_mut()
                .unwrap()
                .remove("thread_ts");
            payload["message"]
                .as_object_mut()
                .unwrap()
                .remove("thread_ts");
        }
    }
    let action = &mut payload["actions"][0];
    action["action_id"] = json!(if approve {
        "cordon_approve"
    } else {
        "cordon_deny"
    });
    action["block_id"] = json!("cordon_decide");
    action["value"] = json!(value);
    action["text"]["text"] = json!(if approve { "Approve" } else { "Deny" });
    action["action_ts"] = json!(format!("{}.{:06}", now.timestamp(), n));
    payload
}

/// A payload as Slack posts it to the interactivity URL: `payload=<json>`, form-encoded.
pub fn interaction_body(payload: &Value) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// The recorded slash command (`callbacks/slack/node_slack_sdk_socket_mode_envelope_slash_commands.json`,
/// its `payload`) edited into `/cordon <text>` from `user`.
pub fn command_payload(user: &str, text: &str) -> Value {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/slack/node_slack_sdk_socket_mode_envelope_slash_commands.json",
    ))
    .unwrap();
    let mut payload = recorded["payload"].clone();
    payload["user_id"] = json!(user);
    payload["user_name"] = json!(format!("name-{user}"));
    payload["command"] = json!("/cordon");
    payload["text"] = json!(text);
    payload["channel_id"] = json!(CHANNEL);
    payload
}

/// A slash command as Slack posts it over HTTP: its fields, form-encoded.
pub fn command_body(payload: &Value) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in payload.as_object().unwrap() {
        if let Some(v) = v.as_str() {
            form.append_pair(k, v);
        }
    }
    form.finish()
}

/// A Socket Mode envelope (the recorded `interactive` / `slash_commands` envelopes of
/// `callbacks/slack/`) around `payload`.
pub fn envelope(kind: &str, id: &str, payload: Value) -> Value {
    let fixture = match kind {
        "interactive" => "callbacks/slack/node_slack_sdk_socket_mode_envelope_interactive.json",
        _ => "callbacks/slack/node_slack_sdk_socket_mode_envelope_slash_commands.json",
    };
    let mut envelope: Value = serde_json::from_slice(&read_fixture(fixture)).unwrap();
    envelope["envelope_id"] = json!(id);
    envelope["payload"] = payload;
    envelope
}

/// The `chat:` config section pointing at `fake`.
pub fn chat_yaml(fake: &FakeSlack, triggers: Option<&str>, socket_mode: bool) -> String {
    let mut yaml = format!(
        "chat:\n  slack:\n    bot_token: {BOT_TOKEN}\n    channel: {CHANNEL}\n    api_url: {}\n    signing_secret: {SIGNING_SECRET}\n    request_timeout: 5s\n",
        fake.api_url
    );
    if socket_mode {
        yaml.push_str(&format!(
            "    socket_mode: true\n    app_token: {APP_TOKEN}\n"
        ));
    }
    if let Some(group) = triggers {
        yaml.push_str(&format!("  triggers: {group}\n"));
    }
    yaml
}

/// POSTs the form `body` to `path` on `server`, signed with [`SIGNING_SECRET`] now.
pub async fn send_signed(server: &super::Client, path: &str, body: String) -> (u16, Value) {
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(SIGNING_SECRET, ts, &body);
    server
        .send(
            server
                .http
                .post(format!("{}{path}", server.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", signature)
                .body(body),
        )
        .await
}

/// `user` clicks Approve on the card of `run` that `fake` received.
pub async fn approve_run(
    fake: &FakeSlack,
    server: &super::Client,
    user: &str,
    run: &str,
) -> (u16, Value) {
    let card = fake
        .wait("the Slack card of the run", |f| {
            f.messages().into_iter().find(|m| {
                m.button_value()
                    .is_some_and(|v| v.contains(&format!("\"{run}\"")))
            })
        })
        .await;
    let value = card.button_value().unwrap();
    let body = interaction_body(&click_payload(user, &card, &value, true));
    send_signed(server, "/v1/chat/slack/interactions", body).await
}
