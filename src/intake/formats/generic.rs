//! # The generic alert format
//!
//! `POST /v1/alerts/generic` takes alerts from anything Cordon has no dedicated normalizer for: a
//! script, a SIEM rule, a cron job, another bot. The body is one JSON object, or a JSON array of
//! them (one alert each). Only `title` is required:
//!
//! ```json
//! {
//!   "title": "Outbound connection to a known mining pool",
//!   "kind": "miner.connection",
//!   "severity": 8,
//!   "description": "web-1 connected to pool.example:3333 twelve times in five minutes.",
//!   "observed_at": "2024-05-01T12:00:00Z",
//!   "resource": {"kind": "aws.ec2.instance", "id": "i-0abc1234def567890",
//!                "region": "eu-west-1", "account": "123456789012", "name": "web-1"},
//!   "actor": {"kind": "aws.iam.user", "id": "arn:aws:iam::123456789012:user/alice", "name": "alice"},
//!   "network": {"remote_ip": "203.0.113.7", "remote_port": 3333, "local_ip": "10.0.0.5",
//!               "domain": "pool.example"},
//!   "labels": {"team": "payments", "env": "prod"},
//!   "dedup_key": "miner:i-0abc1234def567890"
//! }
//! ```
//!
//! | Field | Type | Meaning |
//! |---|---|---|
//! | `title` | string, **required** | One line for a human. |
//! | `kind` | string | What sort of alert this is; playbooks match on it. Default `generic`. |
//! | `severity` | number 0–10, or a word | `0` informational … `10` critical; decimals are rounded. A numeric string (`"7"`) counts as the number. Words: `critical` 9, `high` 7, `medium` 5, `low` 3, `informational`/`info` 1, and the Syslog words (`emergency` 10, `error` 7, `warning` 5, `notice` 3, `debug` 1); an unknown word scores 5. Absent: 5. A number outside 0–10 is refused. |
//! | `description` | string | Longer text. |
//! | `observed_at` | RFC 3339 time | When it happened. Absent or unreadable: when Cordon received it. |
//! | `resource` | object | What the alert is about: `kind` (Cordon's resource kinds such as `aws.ec2.instance`, `aws.iam.user`, `azure.vm`, `gcp.project`, `k8s.pod`, `container`, `host`), `id`, `region`, `account`, `name`. |
//! | `actor` | object | Who did it: `kind` (`aws.iam.user`, `azure.user`, `gcp.service_account`, `k8s.user`, `unix.user`, ...), `id`, `name`, and `key`, the principal's key across sources (docs/alerts.md, "Identity keys": `aws:123456789012:user/alice`) for the alert to join other sources' alerts about the principal. |
//! | `network` | object | `remote_ip` and `local_ip` (IPv4 or IPv6), `remote_port` (0–65535), `domain`. An address or port that is not one is refused. |
//! | `labels` | object | Free-form labels. Values should be strings; numbers and booleans are written as text, arrays and objects as JSON, `null` is dropped. |
//! | `dedup_key` | string | Alerts with the same key inside the dedup window count as repeats of one alert. Default: Cordon's fingerprint of source, kind, resource id and actor id. |
//! | `state` | string | Where the alert stands at the sender: `firing` (the default), `resolved` or `suppressed`. A `resolved` alert with the dedup key of a firing one follows it (docs/alerts.md). Another word is refused. |
//!
//! Other top-level keys are ignored, and kept: each alert's raw payload is its object exactly as
//! sent. Inside `resource`, `actor` and `network`, numbers are accepted where text is expected.
//!
//! What Cordon acts on is checked strictly (severity, because it decides who is paged; addresses
//! and ports, because playbooks look them up and block them), and a wrong value is answered with
//! a 400 that names the field. The rest is taken as it comes.

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, get, text};
use super::{FormatError, SourceKind};
use crate::alert::{Actor, Alert, AlertState, Network, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    if body.is_array() {
        return json::map_elements(raw, "the payload", "", alert);
    }
    Ok(vec![alert(raw.to_owned(), &body, "")?])
}

fn alert(raw: Box<RawValue>, a: &Value, at: &str) -> Result<Alert, FormatError> {
    let shown = |field: &str| format!("{at}{field}");
    json::object(a, &json::located("the alert", at))?;
    let title = json::required_text(a, "title", &shown("title"))?;
    let kind = text(a, "kind").unwrap_or_else(|| "generic".to_owned());

    let mut alert = Alert::new(SourceKind::Generic.name(), kind, raw);
    alert.title = title;
    alert.severity = match get(a, "severity") {
        Some(severity) => severity_of(severity, &shown("severity"))?,
        None => Severity::new(5, ""),
    };
    alert.description = text(a, "description");
    if let Some(at) = json::first_time(a, &["observed_at"]) {
        alert.observed_at = at;
    }
    if let Some(r) = section(a, "resource", at)? {
        alert.resource = Resource {
            kind: text(r, "kind"),
            id: text(r, "id"),
            region: text(r, "region"),
            account: text(r, "account"),
            name: text(r, "name"),
        };
    }
    if let Some(actor) = section(a, "actor", at)? {
        let actor = Actor {
            kind: text(actor, "kind"),
            id: text(actor, "id"),
            name: text(actor, "name"),
            key: text(actor, "key"),
        };
        if actor != Actor::default() {
            alert.actor = Some(actor);
        }
    }
    if let Some(n) = section(a, "network", at)? {
        alert.network = Network {
            remote_ip: address(n, "remote_ip", &shown("network.remote_ip"))?,
            remote_port: match get(n, "remote_port") {
                Some(port) => Some(json::port(port).ok_or_else(|| {
                    FormatError::new(format!(
                        "`{at}network.remote_port` must be a port number (0–65535), got {port}"
                    ))
                })?),
                None => None,
            },
            local_ip: address(n, "local_ip", &shown("network.local_ip"))?,
            domain: text(n, "domain"),
        };
    }
    if let Some(labels) = section(a, "labels", at)? {
        alert.labels = json::labels_of(labels);
    }
    if let Some(key) = text(a, "dedup_key") {
        alert.dedup_key = key;
    }
    if let Some(state) = text(a, "state") {
        alert.state = AlertState::from_name(&state.to_ascii_lowercase()).ok_or_else(|| {
            FormatError::new(format!(
                "`{}` must be `firing`, `resolved` or `suppressed`, got `{state}`",
                shown("state")
            ))
        })?;
        alert.source_state = Some(state);
    }
    Ok(alert)
}

/// A number on the 0–10 scale (native: as written), or a word.
fn severity_of(v: &Value, shown: &str) -> Result<Severity, FormatError> {
    let written = json::as_text(v).ok_or_else(|| {
        FormatError::new(format!(
            "`{shown}` must be a number from 0 to 10 or a word, got {}",
            json::kind_of(v)
        ))
    })?;
    match json::number(v) {
        Some(n) if (0.0..=10.0).contains(&n) => Ok(Severity::from_scaled(n, 10.0, written)),
        Some(_) => Err(FormatError::new(format!(
            "`{shown}` must be from 0 to 10, got {written}"
        ))),
        None if matches!(v, Value::String(_)) => Ok(Severity::from_label(&written)),
        None => Err(FormatError::new(format!(
            "`{shown}` must be a number from 0 to 10 or a word, got {written}"
        ))),
    }
}

/// The object member `key`, or an error when it is there but not an object.
fn section<'a>(a: &'a Value, key: &str, at: &str) -> Result<Option<&'a Value>, FormatError> {
    match get(a, key) {
        Some(v) => json::object(v, &format!("`{at}{key}`")).map(|_| Some(v)),
        None => Ok(None),
    }
}

/// The address at `key` in its canonical form, or an error when it is there but not an address.
fn address(n: &Value, key: &str, shown: &str) -> Result<Option<String>, FormatError> {
    match text(n, key) {
        Some(written) => json::ip(&written).map(Some).ok_or_else(|| {
            FormatError::new(format!("`{shown}` must be an IP address, got `{written}`"))
        }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, error_of};
    use crate::alert::AlertState;
    use crate::intake::formats::SourceKind;

    #[test]
    fn a_sender_can_say_an_alert_is_resolved_and_a_wrong_state_is_refused() {
        let alerts = SourceKind::Generic
            .normalize(br#"[{"title": "t", "dedup_key": "k"}, {"title": "t", "dedup_key": "k", "state": "Resolved"}]"#)
            .expect("normalizes");
        assert_eq!(
            (alerts[0].state, alerts[0].source_state.as_deref()),
            (AlertState::Firing, None)
        );
        assert_eq!(
            (alerts[1].state, alerts[1].source_state.as_deref()),
            (AlertState::Resolved, Some("Resolved"))
        );
        let err = error_of(
            SourceKind::Generic.normalize(br#"[{"title": "t"}, {"title": "t", "state": "gone"}]"#),
        );
        assert!(
            err.contains("`[1].state` must be `firing`, `resolved` or `suppressed`, got `gone`"),
            "{err}"
        );
    }

    /// The example in the format's documentation, which users copy.
    const DOC_EXAMPLE: &str = r#"{
      "title": "Outbound connection to a known mining pool",
      "kind": "miner.connection",
      "severity": 8,
      "description": "web-1 connected to pool.example:3333 twelve times in five minutes.",
      "observed_at": "2024-05-01T12:00:00Z",
      "resource": {"kind": "aws.ec2.instance", "id": "i-0abc1234def567890",
                   "region": "eu-west-1", "account": "123456789012", "name": "web-1"},
      "actor": {"kind": "aws.iam.user", "id": "arn:aws:iam::123456789012:user/alice", "name": "alice"},
      "network": {"remote_ip": "203.0.113.7", "remote_port": 3333, "local_ip": "10.0.0.5",
                  "domain": "pool.example"},
      "labels": {"team": "payments", "env": "prod"},
      "dedup_key": "miner:i-0abc1234def567890"
    }"#;

    #[test]
    fn the_documented_example() {
        let alerts = SourceKind::Generic
            .normalize(DOC_EXAMPLE.as_bytes())
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.raw.get(), DOC_EXAMPLE.trim());
        assert_eq!(a.source, "generic");
        assert_eq!(a.kind, "miner.connection");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (8, "8"));
        assert_eq!(a.title, "Outbound connection to a known mining pool");
        assert_eq!(a.observed_at.to_rfc3339(), "2024-05-01T12:00:00+00:00");
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.instance"));
        assert_eq!(a.resource.id.as_deref(), Some("i-0abc1234def567890"));
        assert_eq!(a.resource.region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.resource.account.as_deref(), Some("123456789012"));
        assert_eq!(a.resource.name.as_deref(), Some("web-1"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(
            (actor.kind.as_deref(), actor.name.as_deref()),
            (Some("aws.iam.user"), Some("alice"))
        );
        assert_eq!(a.network.remote_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(a.network.remote_port, Some(3333));
        assert_eq!(a.network.local_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(a.network.domain.as_deref(), Some("pool.example"));
        assert_eq!(a.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(a.dedup_key, "miner:i-0abc1234def567890");
    }

    #[test]
    fn minimal_alerts_in_an_array() {
        let payload = json!([
            {"title": "Backup job failed", "labels": {"attempt": 3, "ok": false, "extra": {"a": 1}, "gone": null}, "x-extra": 1},
            {"title": "Disk almost full", "severity": "HIGH", "observed_at": "not a time"},
            {"title": "Rounded", "severity": "7.6"}
        ]);
        let body = serde_json::to_vec_pretty(&payload).expect("JSON");
        let alerts = SourceKind::Generic.normalize(&body).expect("normalizes");
        assert_eq!(alerts.len(), 3);
        for (i, a) in alerts.iter().enumerate() {
            assert_raw(a, &body, &payload[i]);
        }
        let (a, b, c) = (&alerts[0], &alerts[1], &alerts[2]);
        assert_eq!(a.kind, "generic");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (5, ""));
        assert_eq!(a.labels.get("attempt").map(String::as_str), Some("3"));
        assert_eq!(a.labels.get("ok").map(String::as_str), Some("false"));
        assert_eq!(
            a.labels.get("extra").map(String::as_str),
            Some(r#"{"a":1}"#)
        );
        assert!(!a.labels.contains_key("gone"));
        assert_eq!(a.dedup_key, "generic|generic||", "fingerprint");
        assert_eq!((b.severity.score, b.severity.native.as_str()), (7, "HIGH"));
        assert_eq!(
            b.observed_at, b.received_at,
            "an unreadable time falls back to receipt"
        );
        assert_eq!((c.severity.score, c.severity.native.as_str()), (8, "7.6"));
    }

    #[test]
    fn wrong_values_are_refused_with_the_field_named() {
        let cases = [
            (r#"{"kind":"x"}"#, "`title`"),
            (r#"[{"title":"a"},{"title":""}]"#, "`[1].title`"),
            (
                r#"{"title":"a","severity":11}"#,
                "`severity` must be from 0 to 10, got 11",
            ),
            (
                r#"{"title":"a","severity":-1}"#,
                "`severity` must be from 0 to 10",
            ),
            (
                r#"{"title":"a","severity":"42"}"#,
                "`severity` must be from 0 to 10",
            ),
            (
                r#"{"title":"a","severity":true}"#,
                "`severity` must be a number from 0 to 10 or a word",
            ),
            (
                r#"{"title":"a","severity":[1]}"#,
                "`severity` must be a number from 0 to 10 or a word",
            ),
            (
                r#"{"title":"a","network":{"remote_ip":"evil.example"}}"#,
                "`network.remote_ip` must be an IP address",
            ),
            (
                r#"[{"title":"a","network":{"remote_port":70000}}]"#,
                "`[0].network.remote_port` must be a port number",
            ),
            (
                r#"{"title":"a","resource":"i-1"}"#,
                "`resource` must be a JSON object",
            ),
            (
                r#"{"title":"a","labels":["x"]}"#,
                "`labels` must be a JSON object",
            ),
            (r#"[1]"#, "must be a JSON object"),
        ];
        for (body, expected) in cases {
            let err = error_of(SourceKind::Generic.normalize(body.as_bytes()));
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn numbers_where_text_is_expected_are_read_as_text() {
        let body = br#"{"title": 404, "kind": 7, "resource": {"id": 12345, "kind": "host"}, "actor": {"id": 0}}"#;
        let alerts = SourceKind::Generic.normalize(body).expect("normalizes");
        let a = &alerts[0];
        assert_eq!((a.title.as_str(), a.kind.as_str()), ("404", "7"));
        assert_eq!(a.resource.id.as_deref(), Some("12345"));
        assert_eq!(a.actor.as_ref().and_then(|x| x.id.as_deref()), Some("0"));
    }
}
