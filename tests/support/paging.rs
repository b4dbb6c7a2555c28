//! Fakes of the two paging services, on one 127.0.0.1:0 listener (their paths do not overlap),
//! each checking every request body against the service's published API description and keeping
//! the state the service would show:
//!
//! - PagerDuty Events API v2 (<https://developer.pagerduty.com/docs/events-api-v2-overview>, "Send
//!   an Alert Event", and the `events-v2` OpenAPI description of PagerDuty's api-schema repository):
//!   `POST /v2/enqueue` with `routing_key` (32 characters), `event_action` (`trigger`,
//!   `acknowledge`, `resolve`), `dedup_key` (at most 255 characters; required to acknowledge or
//!   resolve), and for a trigger a `payload` with `summary` (1-1024 characters), `source`,
//!   `severity` (`critical`, `error`, `warning`, `info`), optional `timestamp` (ISO 8601),
//!   `component`, `group`, `class`, `custom_details`; `links` (`href` required, `text`), `images`
//!   (`src` required), `client`, `client_url`; at most 512 KB. Answers 202
//!   `{"status": "success", "message": "Event processed", "dedup_key"}`, 400
//!   `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`, and 429
//!   (`{"status": "throttle event", ...}`) while [`FakePaging::throttle`] says so.
//! - Opsgenie Alert API v2 (<https://docs.opsgenie.com/docs/alert-api>): `POST /v2/alerts`
//!   (`message` required, at most 130 characters; `alias` 512; `description` 15000; `responders`
//!   and `visibleTo` of `{type: team|user|escalation|schedule, id|name|username}`; `actions` at most
//!   10 of 50; `tags` at most 20 of 50; `details` string values, 8000 characters in all; `entity`
//!   512; `source` 100; `priority` P1-P5; `user` 100; `note` 25000), `POST
//!   /v2/alerts/{identifier}/close` and `POST /v2/alerts/{identifier}/notes` (`note` required,
//!   25000) with `identifierType` `id`, `alias` or `tiny` in the query; `Authorization: GenieKey
//!   <key>`. Answers 202 `{"result": "Request will be processed", "took", "requestId"}`; 401
//!   `{"message": "Could not authenticate"}` for another key; 400 for a body that is not a JSON
//!   object and 422 (Opsgenie's documented answer for semantic errors) for a field that breaks the
//!   rules, both `{"message", "took", "requestId"}`. Like Opsgenie, which processes requests
//!   after answering, a note or close of an alias it has no alert for is accepted and fails later
//!   ([`OpsgenieState::failed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::fake::{self, FakeServer};

/// One PagerDuty alert, by routing key and dedup_key.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutyAlert {
    /// `triggered`, `acknowledged`, `resolved`.
    pub status: String,
    pub summary: String,
    pub severity: String,
    pub source: String,
    pub links: Vec<Value>,
    pub custom_details: Value,
    /// Triggers received for it (a repeat of one dedup_key joins the alert).
    pub triggers: u32,
}

/// What PagerDuty holds.
#[derive(Debug, Default)]
pub struct PagerDutyState {
    /// By (routing key, dedup_key).
    pub alerts: BTreeMap<(String, String), PagerDutyAlert>,
    /// Every accepted event, in order: (routing key, event_action, dedup_key).
    pub events: Vec<(String, String, String)>,
    /// Requests refused with 400, with the errors given.
    pub refused: Vec<Vec<String>>,
    /// Requests answered 429.
    pub throttled: u32,
    /// Requests still to answer 429.
    throttle: u32,
}

/// One Opsgenie alert, by alias.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsgenieAlert {
    pub message: String,
    pub priority: String,
    /// `open`, `closed`.
    pub status: String,
    pub description: Option<String>,
    pub details: Value,
    pub tags: Vec<String>,
    pub responders: Vec<Value>,
    pub notes: Vec<String>,
    /// Creates received while open (Opsgenie deduplicates them by alias into one alert).
    pub count: u32,
}

/// What Opsgenie holds.
#[derive(Debug, Default)]
pub struct OpsgenieState {
    pub alerts: BTreeMap<String, OpsgenieAlert>,
    /// Accepted requests that failed when processed (an alias with no alert).
    pub failed: Vec<String>,
    /// Requests refused (401, 400, 422) with the message given.
    pub refused: Vec<(u16, String)>,
}

/// The running fake.
pub struct FakePaging {
    /// `http://127.0.0.1:PORT`: every paging host is pointed here.
    pub base: String,
    pub server: FakeServer,
    pub pagerduty: Arc<Mutex<PagerDutyState>>,
    pub opsgenie: Arc<Mutex<OpsgenieState>>,
}

impl FakePaging {
    /// The fake; Opsgenie accepts `genie_key` only.
    pub async fn start(genie_key: &str) -> FakePaging {
        let pagerduty = Arc::new(Mutex::new(PagerDutyState::default()));
        let opsgenie = Arc::new(Mutex::new(OpsgenieState::default()));
        let (pd, og, key) = (pagerduty.clone(), opsgenie.clone(), genie_key.to_owned());
        let server = fake::serve(axum::Router::new().fallback(move |request: Request| {
            let (pd, og, key) = (pd.clone(), og.clone(), key.clone());
            async move { answer(&pd, &og, &key, request).await }
        }))
        .await;
        FakePaging {
            base: server.base.clone(),
            server,
            pagerduty,
            opsgenie,
        }
    }

    /// The next `n` PagerDuty requests are answered 429.
    pub fn throttle(&self, n: u32) {
        self.pagerduty.lock().unwrap().throttle = n;
    }

    /// The PagerDuty alert of `routing_key` and `dedup_key`.
    pub fn pagerduty_alert(&self, routing_key: &str, dedup_key: &str) -> Option<PagerDutyAlert> {
        self.pagerduty
            .lock()
            .unwrap()
            .alerts
            .get(&(routing_key.to_owned(), dedup_key.to_owned()))
            .cloned()
    }

    pub fn opsgenie_alert(&self, alias: &str) -> Option<OpsgenieAlert> {
        self.opsgenie.lock().unwrap().alerts.get(alias).cloned()
    }
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn answer(
    pd: &Mutex<PagerDutyState>,
    og: &Mutex<OpsgenieState>,
    genie_key: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    if parts.method != axum::http::Method::POST {
        return json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "method not allowed"}),
        );
    }
    if path == "/v2/enqueue" {
        return pagerduty(pd, &body);
    }
    if path.starts_with("/v2/alerts") {
        return opsgenie(og, genie_key, &parts.headers, &path, &query, &body);
    }
    json_answer(StatusCode::NOT_FOUND, json!({"message": "no such path"}))
}

// ---- PagerDuty Events API v2 ----

const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

fn pagerduty(state: &Mutex<PagerDutyState>, body: &[u8]) -> Response {
    let mut state = state.lock().unwrap();
    if state.throttle > 0 {
        state.throttle -= 1;
        state.throttled += 1;
        return json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."}),
        );
    }
    let invalid = |state: &mut PagerDutyState, errors: Vec<String>| {
        state.refused.push(errors.clone());
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
        )
    };
    if body.len() > 512 * 1024 {
        return invalid(
            &mut state,
            vec!["Event object is larger than 512 KB".into()],
        );
    }
    let event: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return invalid(&mut state, vec!["Event object is not a JSON object".into()]),
    };
    let errors = pagerduty_errors(&event);
    if !errors.is_empty() {
        return invalid(&mut state, errors);
    }
    let routing_key = event["routing_key"].as_str().unwrap_or_default().to_owned();
    let action = event["event_action"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let dedup_key = event
        .get("dedup_key")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("pd-{}", state.events.len() + 1));
    state
        .events
        .push((routing_key.clone(), action.clone(), dedup_key.clone()));
    let key = (routing_key, dedup_key.clone());
    match action.as_str() {
        "trigger" => {
            let payload = &event["payload"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let alert = state.alerts.entry(key).or_insert_with(|| PagerDutyAlert {
                status: "triggered".into(),
                summary: String::new(),
                severity: String::new(),
                source: String::new(),
                links: Vec::new(),
                custom_details: Value::Null,
                triggers: 0,
            });
            // A trigger on a resolved alert opens a new one under the same key.
            alert.status = "triggered".into();
            alert.summary = text(&payload["summary"]);
            alert.severity = text(&payload["severity"]);
            alert.source = text(&payload["source"]);
            alert.links = event
                .get("links")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            alert.custom_details = payload
                .get("custom_details")
                .cloned()
                .unwrap_or(Value::Null);
            alert.triggers += 1;
        }
        // Acknowledging or resolving an alert that is not open is accepted and changes nothing.
        other => {
            if let Some(alert) = state.alerts.get_mut(&key)
                && alert.status != "resolved"
            {
                alert.status = if other == "acknowledge" {
                    "acknowledged".into()
                } else {
                    "resolved".into()
                };
            }
        }
    }
    json_answer(
        StatusCode::ACCEPTED,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

/// Every rule of the Events API v2 `event` `pagerduty` breaks.
fn pagerduty_errors(event: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    let known = [
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "images",
        "links",
        "client",
        "client_url",
    ];
    for name in event.keys() {
        if !known.contains(&name.as_str()) {
            errors.push(format!("'{name}' is not a field of an event"));
        }
    }
    match event.get("routing_key").and_then(Value::as_str) {
        None => errors.push("'routing_key' is missing or not a string".into()),
        Some(key) if key.chars().count() != 32 => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into())
        }
        Some(_) => {}
    }
    let action = event.get("event_action").and_then(Value::as_str);
    if !matches!(action, Some("trigger" | "acknowledge" | "resolve")) {
        errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
        );
    }
    match event.get("dedup_key") {
        None if matches!(action, Some("acknowledge" | "resolve")) => {
            errors.push("'dedup_key' is required to acknowledge or resolve".into())
        }
        Some(Value::String(key)) if key.is_empty() || key.chars().count() > 255 => {
            errors.push("'dedup_key' must be 1 to 255 characters".into())
        }
        Some(v) if !v.is_string() => errors.push("'dedup_key' must be a string".into()),
        _ => {}
    }
    for name in ["client", "client_url"] {
        if event.get(name).is_some_and(|v| !v.is_string()) {
            errors.push(format!("'{name}' must be a string"));
        }
    }
    if let Some(links) = event.get("links") {
        match links.as_array() {
            Some(links) => {
                for link in links {
                    if !link["href"].is_string() || link.get("text").is_some_and(|t| !t.is_string())
                    {
                        errors.push(format!("link {link} needs a string 'href' (and 'text')"));
                    }
                }
            }
            None => errors.push("'links' must be an array".into()),
        }
    }
    if let Some(images) = event.get("images")
        && !images
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["src"].is_string()))
    {
        errors.push("'images' must be an array of objects with 'src'".into());
    }
    if action == Some("trigger") {
        let Some(payload) = event.get("payload").and_then(Value::as_object) else {
            errors.push("'payload' is required to trigger".into());
            return errors;
        };
        let known = [
            "summary",
            "source",
            "severity",
            "timestamp",
            "component",
            "group",
            "class",
            "custom_details",
        ];
        for name in payload.keys() {
            if !known.contains(&name.as_str()) {
                errors.push(format!("'payload.{name}' is not a field of a payload"));
            }
        }
        match payload.get("summary").and_then(Value::as_str) {
            Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
            _ => errors.push("'payload.summary' must be 1 to 1024 characters".into()),
        }
        if payload
            .get("source")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errors.push("'payload.source' is required".into());
        }
        if !payload
            .get("severity")
            .and_then(Value::as_str)
            .is_some_and(|s| SEVERITIES.contains(&s))
        {
            errors.push("'payload.severity' must be one of critical, error, warning, info".into());
        }
        if let Some(ts) = payload.get("timestamp")
            && ts
                .as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err())
        {
            errors.push("'payload.timestamp' must be an ISO 8601 time".into());
        }
        for name in ["component", "group", "class"] {
            if payload.get(name).is_some_and(|v| !v.is_string()) {
                errors.push(format!("'payload.{name}' must be a string"));
            }
        }
        if payload
            .get("custom_details")
            .is_some_and(|v| !v.is_object())
        {
            errors.push("'payload.custom_details' must be an object".into());
        }
    } else if event.contains_key("payload") {
        errors.push("'payload' is only taken by a trigger".into());
    }
    errors
}

// ---- Opsgenie Alert API v2 ----

fn opsgenie_answer(status: StatusCode, message: &str) -> Response {
    json_answer(
        status,
        json!({"message": message, "took": 0.001, "requestId": uuid()}),
    )
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "43a29c5c-3dbf-4fa4-9c26-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn opsgenie(
    state: &Mutex<OpsgenieState>,
    genie_key: &str,
    headers: &HeaderMap,
    path: &str,
    query: &str,
    body: &[u8],
) -> Response {
    let mut state = state.lock().unwrap();
    let mut refuse = |status: StatusCode, message: String| {
        state.refused.push((status.as_u16(), message.clone()));
        opsgenie_answer(status, &message)
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if authorization != format!("GenieKey {genie_key}") {
        return refuse(StatusCode::UNAUTHORIZED, "Could not authenticate".into());
    }
    let request: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "Request body is not a JSON object".into(),
                );
            }
        }
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let accepted = || {
        json_answer(
            StatusCode::ACCEPTED,
            json!({"result": "Request will be processed", "took": 0.302, "requestId": uuid()}),
        )
    };
    match segments.as_slice() {
        ["v2", "alerts"] => {
            let errors = create_errors(&request);
            if let Some(first) = errors.first() {
                return refuse(StatusCode::UNPROCESSABLE_ENTITY, first.clone());
            }
            let text = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_owned);
            let alias = text("alias").unwrap_or_else(|| text("message").unwrap_or_default());
            let strings = |name: &str| -> Vec<String> {
                request
                    .get(name)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match state.alerts.get_mut(&alias) {
                Some(alert) if alert.status == "open" => alert.count += 1,
                _ => {
                    state.alerts.insert(
                        alias,
                        OpsgenieAlert {
                            message: text("message").unwrap_or_default(),
                            priority: text("priority").unwrap_or_else(|| "P3".into()),
                            status: "open".into(),
                            description: text("description"),
                            details: request.get("details").cloned().unwrap_or(json!({})),
                            tags: strings("tags"),
                            responders: request
                                .get("responders")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default(),
                            notes: text("note").into_iter().collect(),
                            count: 1,
                        },
                    );
                }
            }
            accepted()
        }
        ["v2", "alerts", identifier, action @ ("close" | "notes")] => {
            let identifier = percent_decode(identifier);
            let kind = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "identifierType")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "id".into());
            if !matches!(kind.as_str(), "id" | "alias" | "tiny") {
                return refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("identifierType `{kind}` is not one of id, alias, tiny"),
                );
            }
            let errors = action_errors(&request, *action == "notes");
            if let Some(first) = errors.first() {
                return refuse(StatusCode::UNPROCESSABLE_ENTITY, first.clone());
            }
            let note = request
                .get("note")
                .and_then(Value::as_str)
                .map(str::to_owned);
            // The alert is looked up by alias here (Cordon never knows Opsgenie's own ids).
            match (kind.as_str(), state.alerts.get_mut(&identifier)) {
                ("alias", Some(alert)) => {
                    if let Some(note) = note {
                        alert.notes.push(note);
                    }
                    if *action == "close" {
                        alert.status = "closed".into();
                    }
                }
                _ => state.failed.push(format!("{action} {kind}={identifier}")),
            }
            accepted()
        }
        _ => opsgenie_answer(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A string field of at most `most` characters, when present.
fn check_len(request: &Map<String, Value>, name: &str, most: usize, errors: &mut Vec<String>) {
    match request.get(name) {
        None => {}
        Some(Value::String(s)) if s.chars().count() <= most => {}
        Some(Value::String(_)) => errors.push(format!("{name} can be at most {most} characters")),
        Some(_) => errors.push(format!("{name} must be a string")),
    }
}

fn create_errors(request: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    let known = [
        "message",
        "alias",
        "description",
        "responders",
        "visibleTo",
        "actions",
        "tags",
        "details",
        "entity",
        "source",
        "priority",
        "user",
        "note",
    ];
    for name in request.keys() {
        if !known.contains(&name.as_str()) {
            errors.push(format!("{name} is not a field of an alert"));
        }
    }
    match request.get("message").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => {}
        _ => errors.push("Message can not be empty.".into()),
    }
    for (name, most) in [
        ("message", 130),
        ("alias", 512),
        ("description", 15000),
        ("entity", 512),
        ("source", 100),
        ("user", 100),
        ("note", 25000),
    ] {
        check_len(request, name, most, &mut errors);
    }
    if let Some(p) = request.get("priority")
        && !p
            .as_str()
            .is_some_and(|p| ["P1", "P2", "P3", "P4", "P5"].contains(&p))
    {
        errors.push("priority must be one of P1, P2, P3, P4, P5".into());
    }
    for (name, most_items, most_len) in [("tags", 20, 50), ("actions", 10, 50)] {
        if let Some(list) = request.get(name) {
            match list.as_array() {
                Some(items)
                    if items.len() <= most_items
                        && items
                            .iter()
                            .all(|i| i.as_str().is_some_and(|s| s.chars().count() <= most_len)) => {
                }
                _ => errors.push(format!(
                    "{name} must be at most {most_items} strings of at most {most_len} characters"
                )),
            }
        }
    }
    for name in ["responders", "visibleTo"] {
        if let Some(list) = request.get(name) {
            let fine = list.as_array().is_some_and(|items| {
                items.iter().all(|r| {
                    let kind = r["type"].as_str().unwrap_or_default();
                    ["team", "user", "escalation", "schedule"].contains(&kind)
                        && (r["id"].is_string()
                            || r["name"].is_string()
                            || (kind == "user" && r["username"].is_string()))
                })
            });
            if !fine {
                errors.push(format!(
                    "{name} must be objects with a type (team, user, escalation, schedule) and an id, name or username"
                ));
            }
        }
    }
    if let Some(details) = request.get("details") {
        match details.as_object() {
            Some(map) if map.values().all(Value::is_string) => {
                let size: usize = map
                    .iter()
                    .map(|(k, v)| {
                        k.chars().count() + v.as_str().unwrap_or_default().chars().count()
                    })
                    .sum();
                if size > 8000 {
                    errors.push("details can be at most 8000 characters in all".into());
                }
            }
            _ => errors.push("details must be an object of string values".into()),
        }
    }
    errors
}

fn action_errors(request: &Map<String, Value>, note_required: bool) -> Vec<String> {
    let mut errors = Vec::new();
    for name in request.keys() {
        if !["user", "source", "note"].contains(&name.as_str()) {
            errors.push(format!("{name} is not a field of this request"));
        }
    }
    if note_required
        && request
            .get("note")
            .and_then(Value::as_str)
            .is_none_or(|n| n.trim().is_empty())
    {
        errors.push("Note can not be empty.".into());
    }
    for (name, most) in [("user", 100), ("source", 100), ("note", 25000)] {
        check_len(request, name, most, &mut errors);
    }
    errors
}

// ---- A real SMTP server: aiosmtpd ----

/// How the SMTP peer is started.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// `none`, `starttls`, `implicit`.
    pub tls: &'static str,
    /// AUTH required with this user and password (inside TLS for `starttls`).
    pub auth: Option<(String, String)>,
}

/// A test certificate authority and a server certificate for 127.0.0.1 it signed, made with the
/// openssl CLI in `dir`.
pub struct TestCa {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCa {
    pub fn make(dir: &std::path::Path) -> TestCa {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl CLI runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Cordon test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// aiosmtpd (PyPI, pinned in scripts/peers) run by `tests/support/smtp_server.py`, which writes
/// every message it accepts, parsed by Python's `email` package, to a folder.
pub struct SmtpPeer {
    pub port: u16,
    pub out: tempfile::TempDir,
    options: SmtpOptions,
    cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    child: Option<std::process::Child>,
}

impl SmtpPeer {
    /// The interpreter of the venv holding aiosmtpd; fails the test when it is not set up.
    fn python() -> String {
        std::env::var("CORDON_TEST_AIOSMTPD").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_AIOSMTPD is not set: point it at a Python with aiosmtpd 1.4.6 \
                 (`pip install aiosmtpd==1.4.6`), or run the tests with scripts/test, which sets it"
            )
        })
    }

    /// A peer on a free port, listening.
    pub fn start(options: SmtpOptions, ca: Option<&TestCa>) -> SmtpPeer {
        let mut peer = SmtpPeer::on(super::free_port(), options, ca);
        peer.listen();
        peer
    }

    /// A peer for `port`, not yet listening (an SMTP server that is down).
    pub fn on(port: u16, options: SmtpOptions, ca: Option<&TestCa>) -> SmtpPeer {
        SmtpPeer {
            port,
            out: tempfile::tempdir().unwrap(),
            options,
            cert: ca.map(|ca| (ca.cert.clone(), ca.key.clone())),
            child: None,
        }
    }

    /// Starts listening (again); returns once it accepts connections.
    pub fn listen(&mut self) {
        use std::io::{BufRead, BufReader};
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut command = std::process::Command::new(SmtpPeer::python());
        command
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--out")
            .arg(self.out.path())
            .args([
                "--tls",
                if self.options.tls.is_empty() {
                    "none"
                } else {
                    self.options.tls
                },
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some((cert, key)) = &self.cert {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = &self.options.auth {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command.spawn().expect("the SMTP peer starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ready"),
            "the SMTP peer did not start: {line:?}"
        );
        self.child = Some(child);
    }

    /// Stops it: connections are refused until [`SmtpPeer::listen`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, oldest first, as `smtp_server.py` parsed it.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }

    /// The `email.smtp` config section for this peer.
    pub fn config(&self, ca: Option<&TestCa>) -> String {
        let mut yaml = format!(
            "  smtp:\n    host: 127.0.0.1\n    port: {}\n    tls: {}\n    timeout: 5s\n    hello_name: cordon.test\n",
            self.port,
            if self.options.tls.is_empty() {
                "none"
            } else {
                self.options.tls
            }
        );
        if let Some(ca) = ca {
            yaml.push_str(&format!("    ca_file: {}\n", ca.ca.display()));
        }
        if let Some((user, password)) = &self.options.auth {
            yaml.push_str(&format!("    username: {user}\n    password: {password}\n"));
        }
        yaml
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
