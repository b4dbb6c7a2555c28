//! Fakes of the SIEM endpoints streams deliver to, each following its vendor's documented API
//! (built on [`super::fake`], so they can refuse connections for an outage and accept again):
//!
//! - [`hec`]: Splunk HTTP Event Collector, JSON endpoint, as documented for Splunk Enterprise 9.x
//!   ("Format events for HTTP Event Collector", "HTTP Event Collector REST API endpoints"):
//!   `POST /services/collector/event` (and `/services/collector`), `Authorization: Splunk
//!   <token>`, a body of one or more JSON event objects one after another, each with an `event`;
//!   answers `{"text":"Success","code":0}`, 401 code 2 with no token, 403 code 4 for a wrong one,
//!   400 code 6 for data that is not JSON, 400 code 12 for an object without `event`, 400 code 5
//!   for no data.
//! - [`elastic`]: the Elasticsearch 8.x Bulk API (`POST /_bulk`, NDJSON, which must end with a
//!   newline, else 400 `illegal_argument_exception`); `create` actions with `_index` and `_id`
//!   answer 201 `created`, or 409 `version_conflict_engine_exception` when the id is in the
//!   index already; `errors` says whether any item failed; the answer is 200 either way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::fake::{self, FakeServer};

/// A fake Splunk HEC and the events it accepted, in order.
pub struct Hec {
    pub server: FakeServer,
    pub events: Arc<Mutex<Vec<Value>>>,
}

/// Starts a fake HEC taking `token`.
pub async fn hec(token: &str) -> Hec {
    let events = Arc::new(Mutex::new(Vec::new()));
    let state = (token.to_owned(), events.clone());
    let router = Router::new()
        .route("/services/collector/event", post(hec_event))
        .route("/services/collector", post(hec_event))
        .with_state(state);
    Hec {
        server: fake::serve(router).await,
        events,
    }
}

fn hec_answer(status: StatusCode, text: &str, code: u32) -> Response {
    (status, axum::Json(json!({ "text": text, "code": code }))).into_response()
}

async fn hec_event(
    State((token, events)): State<(String, Arc<Mutex<Vec<Value>>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Splunk "));
    match presented {
        None => return hec_answer(StatusCode::UNAUTHORIZED, "Token is required", 2),
        Some(t) if t != token => return hec_answer(StatusCode::FORBIDDEN, "Invalid token", 4),
        Some(_) => {}
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return hec_answer(StatusCode::BAD_REQUEST, "No data", 5);
    }
    let mut parsed = Vec::new();
    for object in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
        let Ok(object) = object else {
            return hec_answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        if object.get("event").is_none_or(Value::is_null) {
            return hec_answer(StatusCode::BAD_REQUEST, "Event field is required", 12);
        }
        parsed.push(object);
    }
    events.lock().unwrap().extend(parsed);
    hec_answer(StatusCode::OK, "Success", 0)
}

/// Documents by index: each index's ids and documents, in the order created.
pub type Indices = Arc<Mutex<BTreeMap<String, Vec<(String, Value)>>>>;

/// A fake Elasticsearch and its indices.
pub struct Elastic {
    pub server: FakeServer,
    pub docs: Indices,
}

pub async fn elastic() -> Elastic {
    let docs: Indices = Arc::default();
    let router = Router::new()
        .route("/_bulk", post(bulk))
        .with_state(docs.clone());
    Elastic {
        server: fake::serve(router).await,
        docs,
    }
}

fn es_error(status: StatusCode, kind: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

async fn bulk(State(docs): State<Indices>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-ndjson")
        && !content_type.starts_with("application/json")
    {
        return es_error(
            StatusCode::NOT_ACCEPTABLE,
            "media_type_header_exception",
            "Content-Type header is not supported",
        );
    }
    if !body.ends_with(b"\n") {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let text = String::from_utf8_lossy(&body);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut items = Vec::new();
    let mut errors = false;
    let mut docs = docs.lock().unwrap();
    while let Some(action) = lines.next() {
        let Ok(action) = serde_json::from_str::<Value>(action) else {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                "Malformed action/metadata line",
            );
        };
        let Some(create) = action.get("create") else {
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "this fake takes `create` actions only",
            );
        };
        let index = create["_index"].as_str().unwrap_or_default().to_owned();
        let id = create["_id"].as_str().unwrap_or_default().to_owned();
        let Some(Ok(doc)) = lines.next().map(serde_json::from_str::<Value>) else {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                "a create action needs a document line",
            );
        };
        let stored = docs.entry(index.clone()).or_default();
        if stored.iter().any(|(i, _)| *i == id) {
            errors = true;
            items.push(
                json!({ "create": { "_index": index, "_id": id, "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": format!("[{id}]: version conflict, document already exists"),
            } } }),
            );
        } else {
            stored.push((id.clone(), doc));
            items.push(json!({ "create": { "_index": index, "_id": id, "_version": 1, "result": "created", "status": 201 } }));
        }
    }
    axum::Json(json!({ "took": 1, "errors": errors, "items": items })).into_response()
}
