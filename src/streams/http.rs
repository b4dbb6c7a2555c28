//! The HTTP destinations: a generic webhook signed with HMAC-SHA256 and a timestamp, Splunk's HTTP
//! Event Collector, and the Elasticsearch/OpenSearch bulk API. Each delivery is one request
//! carrying a batch; an answer that is not a success is classed as every outbox deliverer classes
//! one ([`DeliveryError::from_response`]): an outage or a 5xx is tried again, a refused credential
//! waits for an operator, and a request the other side calls malformed is set aside.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::{ElasticTarget, HecTarget, WebhookTarget};
use super::events_of;
use crate::model::outbox::OutboxEntry;
use crate::outbox::{Deliver, DeliveryError, Failure};

/// The most of an error answer's body that is kept in the entry's last error.
const SHOWN: usize = 300;

/// Sends `request`; the answer's status and body, or the error for a call that got none.
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, reqwest::header::HeaderMap, String), DeliveryError> {
    let response = request.send().await.map_err(|e| {
        DeliveryError::new(
            Failure::from_transport(&e),
            format!("{what} could not be reached: {}", without_url(&e)),
        )
    })?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Ok((status, headers, body))
}

/// A transport error's words without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// The error for a non-success answer, naming what the other side said (cut short).
fn refused(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    what: &str,
) -> Option<DeliveryError> {
    let mut error = DeliveryError::from_response(status, headers, what)?;
    let said: String = body.chars().take(SHOWN).collect();
    if !said.trim().is_empty() {
        error.message = format!("{}: {}", error.message, said.trim());
    }
    Some(error)
}

/// A generic webhook: `POST url` with `{"events": [...]}` (JSON), `X-Cordon-Timestamp` (Unix
/// seconds) and `X-Cordon-Signature: sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>` with
/// the shared secret: the scheme Cordon's own HMAC intake checks, so a receiver verifies the body
/// and refuses a replay outside its window.
pub struct Webhook {
    target: WebhookTarget,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(target: WebhookTarget, http: reqwest::Client) -> Webhook {
        Webhook { target, http }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `<timestamp>.<body>`).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Deliver for Webhook {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let events = events_of(entry)?;
        let body = serde_json::to_vec(&json!({ "events": events }))
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .http
            .post(self.target.url.clone())
            .header("content-type", "application/json")
            .header("x-cordon-timestamp", timestamp.to_string())
            .header(
                "x-cordon-signature",
                signature(self.target.secret.expose(), timestamp, &body),
            )
            .body(body);
        let (status, headers, body) = send(request, "the webhook").await?;
        match refused(status, &headers, &body, "the webhook") {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Splunk HTTP Event Collector (the JSON endpoint, `POST /services/collector/event`): one JSON
/// object per event, stacked in one body, each `{"time", "host", "source", "sourcetype",
/// "index"?, "event"}`, with `Authorization: Splunk <token>`. Splunk answers
/// `{"text": "Success", "code": 0}`; 400 is a malformed event (set aside), 401/403 a token it
/// refuses, 503 a busy or unhealthy collector (tried again).
pub struct SplunkHec {
    target: HecTarget,
    http: reqwest::Client,
    host: String,
}

impl SplunkHec {
    pub fn new(target: HecTarget, http: reqwest::Client) -> SplunkHec {
        SplunkHec {
            target,
            http,
            host: host_name(),
        }
    }
}

/// This machine's host name (`cordon` when it has none that reads).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cordon".to_owned())
}

#[async_trait]
impl Deliver for SplunkHec {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let events = events_of(entry)?;
        let mut body = Vec::new();
        for event in &events {
            let mut object = json!({
                "time": event.at.timestamp_micros() as f64 / 1e6,
                "host": self.host,
                "source": self.target.source.as_deref().unwrap_or("cordon"),
                "sourcetype": self.target.sourcetype.clone().unwrap_or_else(|| format!("cordon:{}", event.kind.as_str())),
                "event": event,
            });
            if let Some(index) = &self.target.index {
                object["index"] = Value::String(index.clone());
            }
            serde_json::to_writer(&mut body, &object)
                .map_err(|e| DeliveryError::permanent(e.to_string()))?;
            body.push(b'\n');
        }
        let url = endpoint(&self.target.url, "services/collector/event");
        let request = self
            .http
            .post(url)
            .header(
                "authorization",
                format!("Splunk {}", self.target.token.expose()),
            )
            .header("content-type", "application/json")
            .body(body);
        let (status, headers, body) = send(request, "Splunk HEC").await?;
        match refused(status, &headers, &body, "Splunk HEC") {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// `base` with `path` under it (a base with a path of its own keeps it).
fn endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// Elasticsearch or OpenSearch `POST /_bulk` (NDJSON): per event, `{"create": {"_index",
/// "_id"}}` and the event with an `@timestamp`. `create` with the event's id makes a repeated
/// delivery harmless: an event already indexed answers 409, counted as delivered. A bulk answer is
/// 200 even when items failed, so each item's status is read: any item the cluster could take
/// later (429, 5xx) has the whole batch tried again (the ones it took answer 409 then); an item it
/// refuses for good (a mapping error) sets the batch aside with the reason.
pub struct Elastic {
    target: ElasticTarget,
    http: reqwest::Client,
}

impl Elastic {
    pub fn new(target: ElasticTarget, http: reqwest::Client) -> Elastic {
        Elastic { target, http }
    }
}

#[async_trait]
impl Deliver for Elastic {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let events = events_of(entry)?;
        let mut body = Vec::new();
        for event in &events {
            let action = json!({ "create": { "_index": self.target.index, "_id": event.id } });
            let mut doc = serde_json::to_value(event).unwrap_or(Value::Null);
            doc["@timestamp"] = Value::String(crate::model::audit::format_time(&event.at));
            for line in [action, doc] {
                serde_json::to_writer(&mut body, &line)
                    .map_err(|e| DeliveryError::permanent(e.to_string()))?;
                body.push(b'\n');
            }
        }
        let mut request = self
            .http
            .post(endpoint(&self.target.url, "_bulk"))
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let Some(key) = &self.target.api_key {
            request = request.header("authorization", format!("ApiKey {}", key.expose()));
        } else if let Some(user) = &self.target.username {
            request = request.basic_auth(
                user,
                self.target.password.as_ref().map(|p| p.expose().to_owned()),
            );
        }
        let (status, headers, body) = send(request, "Elasticsearch").await?;
        if let Some(error) = refused(status, &headers, &body, "Elasticsearch") {
            return Err(error);
        }
        bulk_outcome(&body)
    }
}

/// Reads a bulk answer's items (see [`Elastic`]).
pub fn bulk_outcome(body: &str) -> Result<(), DeliveryError> {
    let answer: Value = serde_json::from_str(body).map_err(|_| {
        DeliveryError::retry("Elasticsearch answered the bulk request with no JSON")
    })?;
    if answer["errors"] != Value::Bool(true) {
        return Ok(());
    }
    let mut later = None;
    let mut never = None;
    for item in answer["items"].as_array().into_iter().flatten() {
        let Some(result) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = result["status"].as_u64().unwrap_or(0);
        let reason = || {
            format!(
                "Elasticsearch refused an event ({status}): {}",
                result["error"]["reason"]
                    .as_str()
                    .or(result["error"]["type"].as_str())
                    .unwrap_or("no reason given")
            )
        };
        match status {
            200..=299 | 409 => {}
            429 | 500..=599 => later = later.or_else(|| Some(reason())),
            _ => never = never.or_else(|| Some(reason())),
        }
    }
    if let Some(reason) = later {
        return Err(DeliveryError::retry(reason));
    }
    if let Some(reason) = never {
        return Err(DeliveryError::permanent(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_signature_is_what_the_hmac_intake_checks() {
        let body = br#"{"events":[]}"#;
        let signed = signature("s3cret", 1_700_000_000, body);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-cordon-timestamp", "1700000000".parse().unwrap());
        headers.insert("x-cordon-signature", signed.parse().unwrap());
        let auth: crate::config::HmacAuth =
            serde_yaml::from_str("secret: s3cret").expect("hmac auth");
        crate::intake::verify::hmac(&headers, body, &auth, 1_700_000_010).expect("verifies");
        assert!(crate::intake::verify::hmac(&headers, b"{}", &auth, 1_700_000_010).is_err());
    }

    #[test]
    fn bulk_items_already_there_count_as_delivered_and_others_are_classed() {
        let ok = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}}]}"#;
        assert!(bulk_outcome(ok).is_ok());
        let busy = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let error = bulk_outcome(busy).unwrap_err();
        assert!(!error.is_permanent() && error.message.contains("queue full"));
        let bad = r#"{"errors":true,"items":[{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}}]}"#;
        assert!(bulk_outcome(bad).unwrap_err().is_permanent());
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let base = url::Url::parse("https://es.example:9200/prefix/").unwrap();
        assert_eq!(endpoint(&base, "_bulk").path(), "/prefix/_bulk");
        let base = url::Url::parse("https://hec.example:8088").unwrap();
        assert_eq!(
            endpoint(&base, "services/collector/event").path(),
            "/services/collector/event"
        );
    }
}
