//! Microsoft Teams test peers, all on 127.0.0.1:
//!
//! - [`Identity`]: the Bot Framework's identity side on one listener: the OpenID metadata
//!   (`/v1/.well-known/openidconfiguration`, the shape login.botframework.com serves) naming a JSON
//!   Web Key Set (`/v1/.well-known/keys`) that publishes the test keys with their channel
//!   endorsements; the Microsoft identity platform token endpoint (`/{tenant}/oauth2/v2.0/token`,
//!   client-credentials grant, form-encoded, `{token_type, expires_in, access_token}` or
//!   `{error}` with 400/401, as documented at learn.microsoft.com/entra/identity-platform/
//!   v2-oauth2-client-creds-grant-flow); and Microsoft Graph's `POST
//!   /v1.0/users/{id}/checkMemberGroups` (`{groupIds}` → `{value}`, Graph v1.0 docs).
//! - [`Signer`]: signs Bot Framework tokens (RS256, `kid`, `iss`, `aud`, `serviceurl`) with the
//!   keys in `tests/data/teams/`.
//! - [`Connector`]: a stateful fake of the Bot Connector REST API v3
//!   (`../shared/fixtures/apis/botframework_connector.json`): SendToConversation, ReplyToActivity
//!   and UpdateActivity with `ResourceResponse` answers and `ErrorResponse` errors, keeping the
//!   messages so a test can read the channel as a person would. Every request is also replayed to
//!   Prism ([`super::prism`]) serving the same description, and Prism's `sl-violations` are
//!   collected: a test fails on any. [`Connector::enforce_rate_limits`] turns on the limits Teams
//!   documents for a bot in one conversation thread ("Rate limiting for bots",
//!   learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit, as of 2025): 7
//!   operations per second, 8 per 2 seconds, 60 per 30 seconds, 1800 per hour, a reply chain
//!   (`<channel>;messageid=<id>`) being a conversation of its own; a call beyond them answers 429
//!   with `Retry-After` and an `ErrorResponse`, doing nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::fake;
use super::prism::{Answers, Prism};
use super::read_fixture;

pub const APP_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const APP_PASSWORD: &str = "test-teams-app-password";
pub const TENANT: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub const ISSUER: &str = "https://api.botframework.com";
/// The kid of `signing-key.pem` in the published key set.
pub const KID: &str = "cordon-test-1";
/// The kid tokens signed with `rotated-key.pem` carry.
pub const ROTATED_KID: &str = "cordon-test-2";

/// One test RSA key: signs tokens and describes itself as a JWK.
pub struct Signer {
    pub kid: String,
    encoding: jsonwebtoken::EncodingKey,
    n: String,
    e: String,
}

impl Signer {
    /// `file` in `tests/data/teams/`, published (or not) as `kid`.
    pub fn load(file: &str, kid: &str) -> Signer {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let pem = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/teams")
                .join(file),
        )
        .unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Signer {
            kid: kid.to_owned(),
            encoding: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            n: b64.encode(key.n().to_bytes_be()),
            e: b64.encode(key.e().to_bytes_be()),
        }
    }

    pub fn signing() -> Signer {
        Signer::load("signing-key.pem", KID)
    }

    pub fn rotated() -> Signer {
        Signer::load("rotated-key.pem", ROTATED_KID)
    }

    /// The key as the Bot Framework key set lists it.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "endorsements": ["msteams"],
        })
    }

    /// A token with `claims`, signed with this key (header `kid` = `kid`).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid.clone(), claims)
    }
}

/// The claims the Bot Connector puts in a token for an activity from `service_url`, valid now.
pub fn claims(service_url: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "serviceurl": service_url,
        "nbf": now - 10,
        "exp": now + 3600,
        "iss": ISSUER,
        "aud": APP_ID,
    })
}

#[derive(Default)]
struct IdentityState {
    keys: Vec<Value>,
    key_fetches: usize,
    /// (tenant path segment, scope) per token issued.
    tokens: Vec<(String, String)>,
    /// Graph: user object id → group ids.
    members: BTreeMap<String, Vec<String>>,
    graph_calls: usize,
}

/// The Bot Framework OpenID metadata and key set, the token endpoint and Graph's
/// checkMemberGroups.
pub struct Identity {
    pub base: String,
    state: Arc<Mutex<IdentityState>>,
}

impl Identity {
    pub async fn start(published: &[&Signer]) -> Identity {
        let state = Arc::new(Mutex::new(IdentityState {
            keys: published.iter().map(|s| s.jwk()).collect(),
            ..Default::default()
        }));
        // The metadata names the key set by this server's own address.
        let port = fake::Port::bind().await;
        let base = port.base.clone();
        let (s, b) = (state.clone(), base.clone());
        port.serve(axum::Router::new().fallback(move |request: Request| {
            let (state, base) = (s.clone(), b.clone());
            async move { identity(state, base, request).await }
        }));
        Identity { base, state }
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/v1/.well-known/openidconfiguration", self.base)
    }

    pub fn token_url(&self) -> String {
        format!("{}/botframework.com/oauth2/v2.0/token", self.base)
    }

    /// Adds a key to the published set (Microsoft rolling its keys).
    pub fn publish(&self, signer: &Signer) {
        self.state.lock().unwrap().keys.push(signer.jwk());
    }

    pub fn key_fetches(&self) -> usize {
        self.state.lock().unwrap().key_fetches
    }

    /// Tokens issued: `(tenant segment, scope)`.
    pub fn tokens(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().tokens.clone()
    }

    pub fn set_groups(&self, user: &str, groups: &[&str]) {
        self.state.lock().unwrap().members.insert(
            user.to_owned(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    pub fn graph_calls(&self) -> usize {
        self.state.lock().unwrap().graph_calls
    }
}

async fn identity(state: Arc<Mutex<IdentityState>>, base: String, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    if method == "GET" && path == "/v1/.well-known/openidconfiguration" {
        return axum::Json(json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://invalid.botframework.com",
            "jwks_uri": format!("{base}/v1/.well-known/keys"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }))
        .into_response();
    }
    if method == "GET" && path == "/v1/.well-known/keys" {
        let mut s = state.lock().unwrap();
        s.key_fetches += 1;
        return axum::Json(json!({ "keys": s.keys })).into_response();
    }
    if method == "POST" && path.ends_with("/oauth2/v2.0/token") {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "unsupported_grant_type" })),
            )
                .into_response();
        }
        if field("client_id") != APP_ID || field("client_secret") != APP_PASSWORD {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "invalid_client" })),
            )
                .into_response();
        }
        let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let scope = field("scope").to_owned();
        let prefix = if scope.starts_with("https://graph.microsoft.com") {
            "graph"
        } else {
            "connector"
        };
        let mut s = state.lock().unwrap();
        s.tokens.push((tenant.to_owned(), scope));
        let n = s.tokens.len();
        return axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": format!("{prefix}-token-{n}"),
        }))
        .into_response();
    }
    if method == "POST"
        && let Some(user) = path
            .strip_prefix("/v1.0/users/")
            .and_then(|rest| rest.strip_suffix("/checkMemberGroups"))
    {
        if !bearer.is_some_and(|b| b.starts_with("Bearer graph-token-")) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": { "code": "InvalidAuthenticationToken", "message": "Access token is empty." } })),
            )
                .into_response();
        }
        let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(ids) = asked["groupIds"].as_array() else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": { "code": "Request_BadRequest", "message": "groupIds is required" } })),
            )
                .into_response();
        };
        let mut s = state.lock().unwrap();
        s.graph_calls += 1;
        let member_of = s.members.get(&decode(user)).cloned().unwrap_or_default();
        let value: Vec<&Value> = ids
            .iter()
            .filter(|id| {
                id.as_str()
                    .is_some_and(|id| member_of.iter().any(|m| m == id))
            })
            .collect();
        return axum::Json(json!({ "value": value })).into_response();
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "not_found" })),
    )
        .into_response()
}

/// Percent-decodes a path segment.
pub fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A message in the fake Connector's conversations.
#[derive(Debug, Clone)]
pub struct Message {
    /// The conversation it was sent to, decoded (a channel, or a thread `…;messageid=…`).
    pub conversation: String,
    pub id: String,
    /// The message it replies to, for replies.
    pub reply_to: Option<String>,
    /// The activity as last sent or updated.
    pub activity: Value,
    pub updates: usize,
}

impl Message {
    /// The Adaptive Card it carries, if any.
    pub fn card(&self) -> Option<&Value> {
        self.activity["attachments"][0]["content"]
            .as_object()
            .map(|_| &self.activity["attachments"][0]["content"])
    }

    /// Everything a person reads in it: the text, or the card's text.
    pub fn text(&self) -> String {
        match self.card() {
            Some(card) => card.to_string(),
            None => self.activity["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The card's buttons (`actions`), empty when it has none.
    pub fn buttons(&self) -> Vec<Value> {
        self.card()
            .and_then(|c| c["actions"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// One request the fake Connector received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The raw (encoded) path.
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct ConnectorState {
    messages: Vec<Message>,
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Failures to answer the next requests with, in order: status and `Retry-After` seconds.
    failures: std::collections::VecDeque<(u16, Option<u64>)>,
    next_id: u64,
    /// Teams' per-thread limits are enforced (see the module notes).
    enforce: bool,
    /// Accepted calls per conversation, oldest first (the last hour's).
    calls_in: BTreeMap<String, std::collections::VecDeque<std::time::Instant>>,
    /// Calls the enforced limits answered 429.
    limited: usize,
}

/// Teams' limits for a bot in one conversation thread: calls per window.
const PER_THREAD: [(usize, u64); 4] = [(7, 1), (8, 2), (60, 30), (1800, 3600)];

/// The stateful fake of the Bot Connector API (see the module docs).
pub struct Connector {
    pub base: String,
    state: Arc<Mutex<ConnectorState>>,
    /// Requests replayed to Prism.
    pub validated: Arc<AtomicUsize>,
}

impl Connector {
    /// A fake whose every request the test binary's Prism checks.
    pub async fn start() -> Connector {
        let prism = Prism::shared("apis/botframework_connector.json", Answers::Examples);
        let state = Arc::new(Mutex::new(ConnectorState {
            next_id: 1_767_000_000_000,
            ..Default::default()
        }));
        let validated = Arc::new(AtomicUsize::new(0));
        let (s, v, p) = (state.clone(), validated.clone(), prism.base.clone());
        let client = super::fake::prism_client();
        let server = fake::serve(axum::Router::new().fallback(move |request: Request| {
            let (state, validated, prism, client) =
                (s.clone(), v.clone(), p.clone(), client.clone());
            async move { connector(state, validated, prism, client, request).await }
        }))
        .await;
        Connector {
            base: server.base,
            state,
            validated,
        }
    }

    /// The service URL Teams would give (with its trailing slash).
    pub fn service_url(&self) -> String {
        format!("{}/amer/{TENANT}/", self.base)
    }

    pub fn messages(&self) -> Vec<Message> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Top-level messages of `conversation` (not replies).
    pub fn posts(&self, conversation: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.conversation == conversation && m.reply_to.is_none())
            .collect()
    }

    /// Replies in the thread of message `id`.
    pub fn replies(&self, id: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.reply_to.as_deref() == Some(id))
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Prism's complaints about the requests so far.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Asserts Prism validated every request and found nothing wrong.
    pub fn assert_valid(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "Prism found the Connector API calls violate botframework_connector.json: {violations:#?}"
        );
        assert_eq!(
            self.validated.load(Ordering::SeqCst),
            self.seen().len(),
            "every Connector call is replayed to Prism"
        );
    }

    /// Enforces Teams' per-thread rate limits from now on (see the module notes).
    pub fn enforce_rate_limits(&self) {
        self.state.lock().unwrap().enforce = true;
    }

    /// Calls the enforced limits answered 429.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    /// Answers `n` more requests with `status` (and `Retry-After` seconds, if given), after the
    /// failures already queued.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..n {
            s.failures.push_back((status, retry_after));
        }
    }

    /// Polls until `check` holds on the messages (25 s at most: a thread note may wait for
    /// `chat.note_interval`, 10 s by default, after the one before).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
        loop {
            let messages = self.messages();
            if check(&messages) {
                return messages;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Teams never showed {what}; messages: {:#?}; requests: {:#?}",
                messages,
                self.seen()
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// The `Retry-After` seconds for a call in `conversation` over Teams' per-thread limits, or
/// `None` when it is within them (and then counted).
fn over_thread_limit(s: &mut ConnectorState, conversation: &str) -> Option<u64> {
    let now = std::time::Instant::now();
    let calls = s.calls_in.entry(conversation.to_owned()).or_default();
    let hour = std::time::Duration::from_secs(3600);
    while calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= hour)
    {
        calls.pop_front();
    }
    let mut wait = std::time::Duration::ZERO;
    for (most, secs) in PER_THREAD {
        let window = std::time::Duration::from_secs(secs);
        let within: Vec<&std::time::Instant> = calls
            .iter()
            .filter(|t| now.duration_since(**t) < window)
            .collect();
        if within.len() >= most {
            // Room again once the oldest call that fills the window leaves it.
            let oldest = *within[within.len() - most];
            wait = wait.max(window.saturating_sub(now.duration_since(oldest)));
        }
    }
    if wait.is_zero() {
        calls.push_back(now);
        return None;
    }
    Some(wait.as_secs_f64().ceil().max(1.0) as u64)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

async fn connector(
    state: Arc<Mutex<ConnectorState>>,
    validated: Arc<AtomicUsize>,
    prism: String,
    client: reqwest::Client,
    request: Request,
) -> Response {
    let method = request.method().to_string();
    let raw_path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // Teams serves each tenant under /<region>/<tenant>/: the API paths follow.
    let api_path = raw_path
        .find("/v3/")
        .map(|i| raw_path[i..].to_owned())
        .unwrap_or_else(|| raw_path.clone());

    // Counted against the limits as it arrives, before Prism (whose pace varies) sees it.
    let over = {
        let mut s = state.lock().unwrap();
        let conversation = api_path
            .trim_start_matches('/')
            .split('/')
            .nth(2)
            .map(decode)
            .filter(|_| api_path.starts_with("/v3/conversations/"));
        match conversation {
            Some(conversation) if s.enforce => over_thread_limit(&mut s, &conversation),
            _ => None,
        }
    };
    // Prism checks the request against the official description.
    let replay = client
        .request(method.parse().unwrap(), format!("{prism}{api_path}"))
        .header("content-type", content_type)
        .header("authorization", authorization.clone().unwrap_or_default())
        .body(bytes.to_vec())
        .send()
        .await;
    {
        let mut s = state.lock().unwrap();
        match replay {
            Ok(answer) => {
                validated.fetch_add(1, Ordering::SeqCst);
                if let Some(v) = answer.headers().get("sl-violations") {
                    s.violations.push(format!(
                        "{method} {api_path}: {}",
                        v.to_str().unwrap_or("?")
                    ));
                }
            }
            Err(e) => s.violations.push(format!("Prism unreachable: {e}")),
        }
        s.seen.push(Seen {
            method: method.clone(),
            path: api_path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        if let Some((status, retry_after)) = s.failures.pop_front() {
            let status = StatusCode::from_u16(status).unwrap();
            let mut response = error(status, "ServiceError", "injected failure");
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.to_string().parse().unwrap());
            }
            return response;
        }
    }
    if !authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer connector-token-"))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Authorization has been denied for this request.",
        );
    }
    let segments: Vec<String> = api_path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut s = state.lock().unwrap();
    if let Some(after) = over {
        s.limited += 1;
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The bot is sending too many messages to this conversation.",
        );
        response
            .headers_mut()
            .insert("retry-after", after.to_string().parse().unwrap());
        return response;
    }
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "conversations", conversation, "activities"]) => {
            s.next_id += 1;
            let id = s.next_id.to_string();
            s.messages.push(Message {
                conversation: conversation.to_string(),
                id: id.clone(),
                reply_to: None,
                activity: body,
                updates: 0,
            });
            axum::Json(json!({ "id": id })).into_response()
        }
        ("POST", ["v3", "conversations", conversation, "activities", parent]) => {
            let base = conversation
                .split(";messageid=")
                .next()
                .unwrap_or(conversation);
            let known = s.messages.iter().any(|m| {
                m.id == *parent && m.conversation.split(";messageid=").next() == Some(base)
            });
            if !known {
                return error(
                    StatusCode::NOT_FOUND,
                    "ActivityNotFound",
                    "The activity to reply to does not exist in this conversation",
                );
            }
            if body["replyToId"].as_str() != Some(parent) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    "replyToId does not match the activity replied to",
                );
            }
            // A reply to a reply lands in the same thread: record the thread's root.
            let root = s
                .messages
                .iter()
                .find(|m| m.id == *parent)
                .and_then(|m| m.reply_to.clone())
                .unwrap_or_else(|| parent.to_string());
            s.next_id += 1;
            let id = s.next_id.to_string();
            s.messages.push(Message {
                conversation: conversation.to_string(),
                id: id.clone(),
                reply_to: Some(root),
                activity: body,
                updates: 0,
            });
            axum::Json(json!({ "id": id })).into_response()
        }
        ("PUT", ["v3", "conversations", conversation, "activities", id]) => {
            let Some(message) = s
                .messages
                .iter_mut()
                .find(|m| m.id == *id && m.conversation == *conversation)
            else {
                return error(
                    StatusCode::NOT_FOUND,
                    "ActivityNotFound",
                    "The activity to update does not exist in this conversation",
                );
            };
            message.activity = body;
            message.updates += 1;
            axum::Json(json!({ "id": id })).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "This fake serves SendToConversation, ReplyToActivity and UpdateActivity",
        ),
    }
}

/// The recorded `adaptiveCard/action` invoke (Action.Execute) from
/// `callbacks/teams/teams_net_invoke_adaptivecard_action_execute.json`, edited to be a click on
/// Cordon's button `decision` for `run`/`step` by `aad` in this test's tenant and service.
pub fn execute_click(service_url: &str, run: &str, step: &str, decision: &str, aad: &str) -> Value {
    let mut activity: Value = serde_json::from_slice(&read_fixture(
        "callbacks/teams/teams_net_invoke_adaptivecard_action_execute.json",
    ))
    .unwrap();
    activity["serviceUrl"] = json!(service_url);
    activity["from"]["aadObjectId"] = json!(aad);
    activity["channelData"]["tenant"]["id"] = json!(TENANT);
    activity["conversation"]["tenantId"] = json!(TENANT);
    activity["value"]["action"]["title"] = json!(decision);
    activity["value"]["action"]["verb"] = json!(format!("cordon.{decision}"));
    activity["value"]["action"]["data"] = json!({
        "cordon": "approval",
        "run_id": run,
        "step": step,
        "decision": decision,
    });
    activity
}

/// The recorded Action.Submit click (a `message` with `value`) from
/// `callbacks/teams/vercel_chat_replay_actions_reactions_teams.json` (`action`), edited the same
/// way, as a click on the card `card` posted in `conversation` (its thread, in a channel).
pub fn submit_click(
    service_url: &str,
    card: &Message,
    run: &str,
    step: &str,
    decision: &str,
    aad: &str,
) -> Value {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/teams/vercel_chat_replay_actions_reactions_teams.json",
    ))
    .unwrap();
    let mut activity = recorded["action"].clone();
    activity["serviceUrl"] = json!(service_url);
    let thread = if card.conversation.contains(";messageid=") {
        card.conversation.clone()
    } else {
        format!("{};messageid={}", card.conversation, card.id)
    };
    activity["conversation"]["id"] = json!(thread);
    activity["replyToId"] = json!(card.id);
    activity["from"]["aadObjectId"] = json!(aad);
    activity["value"] = json!({
        "cordon": "approval",
        "run_id": run,
        "step": step,
        "decision": decision,
    });
    activity
}

/// The channel of the recorded team (`19:…@thread.tacv2`).
pub fn recorded_channel() -> String {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/teams/vercel_chat_replay_actions_reactions_teams.json",
    ))
    .unwrap();
    recorded["mention"]["channelData"]["teamsChannelId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `conversationUpdate` Teams sends when the bot is added to the recorded team: built from the
/// recorded channel message (`mention`) of the same fixture, whose conversation, channel data and
/// recipient (the bot) it keeps. No recorded install activity is among the fixtures.
pub fn installed(service_url: &str) -> Value {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/teams/vercel_chat_replay_actions_reactions_teams.json",
    ))
    .unwrap();
    let mut activity = recorded["mention"].clone();
    let object = activity.as_object_mut().unwrap();
    for field in ["text", "entities"] {
        object.remove(field);
    }
    activity["type"] = json!("conversationUpdate");
    activity["serviceUrl"] = json!(service_url);
    activity["conversation"]["id"] = json!(recorded_channel());
    activity["membersAdded"] = json!([{ "id": recorded["botId"] }]);
    activity["channelData"]["eventType"] = json!("teamMemberAdded");
    activity
}

impl Connector {
    /// Records `activity`, a message a person sent in Teams, as one of the conversation's
    /// messages (Teams holds what people write; the bot may reply to it).
    pub fn said(&self, activity: &Value) {
        let conversation = activity["conversation"]["id"].as_str().unwrap_or_default();
        self.state.lock().unwrap().messages.push(Message {
            conversation: conversation
                .split(";messageid=")
                .next()
                .unwrap_or(conversation)
                .to_owned(),
            id: activity["id"].as_str().unwrap_or_default().to_owned(),
            reply_to: None,
            activity: activity.clone(),
            updates: 0,
        });
    }
}
