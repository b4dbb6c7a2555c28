//! Prometheus Alertmanager webhook notifications.
//!
//! One shape, the webhook payload version 4: `{"version": "4", "groupKey", "status", "receiver",
//! "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts": [...]}`. Each entry
//! of `alerts` (`status`, `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`,
//! `fingerprint`) becomes one alert whose `raw` is that entry's exact text. Resolved entries are
//! alerts too, in state `resolved`: with the same fingerprint, each follows its firing alert
//! (see `model::grouping`).
//!
//! Follows the `webhook_config` payload in Alertmanager's configuration reference
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).
//!
//! | Alert field | From each entry |
//! |---|---|
//! | kind | `labels.alertname` |
//! | severity | `labels.severity` as a word; 5 when absent |
//! | title | `annotations.summary`, else `annotations.message` or `annotations.title`, else the alert name |
//! | description | `annotations.description` |
//! | resource | `k8s.pod` (`<namespace>/<pod>`) when the labels name a pod, else `host` from `instance` (or `node`) |
//! | labels | every label, plus `status` (the entry's, else the group's) |
//! | state | `status`: `firing` or `resolved` (the entry's, else the group's; `firing` when neither says) |
//! | observed_at | `endsAt` when resolved, else `startsAt` |
//! | dedup_key | `alertmanager:` + `fingerprint` when present, else Cordon's fingerprint |

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, text};
use super::{FormatError, SourceKind};
use crate::alert::{Alert, AlertState, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    json::object(&body, "an Alertmanager webhook payload")?;
    let entries = json::member(raw, "alerts")?.ok_or_else(|| FormatError::missing("alerts"))?;
    let group_status = text(&body, "status");
    json::parsed_elements(&entries, "`alerts`")?
        .into_iter()
        .enumerate()
        .map(|(i, (item, value))| entry(item, &value, i, group_status.as_deref()))
        .collect()
}

fn entry(
    raw: Box<RawValue>,
    e: &Value,
    i: usize,
    group_status: Option<&str>,
) -> Result<Alert, FormatError> {
    json::object(e, &format!("`alerts[{i}]`"))?;
    let labels =
        get(e, "labels").ok_or_else(|| FormatError::missing(&format!("alerts[{i}].labels")))?;
    json::object(labels, &format!("`alerts[{i}].labels`"))?;
    let name = json::required_text(
        labels,
        "alertname",
        &format!("alerts[{i}].labels.alertname"),
    )?;
    let label = |key: &str| text(labels, key);

    let mut alert = Alert::new(SourceKind::Alertmanager.name(), name.clone(), raw);
    alert.severity =
        label("severity").map_or_else(|| Severity::new(5, ""), |s| Severity::from_label(&s));
    let annotations = get(e, "annotations");
    alert.title = annotations
        .and_then(|a| first_text(a, &["summary", "message", "title"]))
        .unwrap_or(name);
    alert.description = annotations.and_then(|a| text(a, "description"));
    if let Some(at) = json::first_time(e, &["startsAt"]) {
        alert.observed_at = at;
    }

    alert.resource = match (label("pod"), label("instance").or_else(|| label("node"))) {
        (Some(pod), _) => {
            let id = match label("namespace") {
                Some(namespace) => format!("{namespace}/{pod}"),
                None => pod.clone(),
            };
            Resource {
                kind: Some("k8s.pod".into()),
                id: Some(id),
                name: Some(pod),
                ..Resource::default()
            }
        }
        (None, Some(instance)) => Resource {
            kind: Some("host".into()),
            id: Some(instance),
            ..Resource::default()
        },
        (None, None) => Resource::default(),
    };
    alert.resource.region = label("region");

    alert.labels = json::labels_of(labels);
    if let Some(status) = text(e, "status").or_else(|| group_status.map(str::to_owned)) {
        if status.eq_ignore_ascii_case("resolved") {
            alert.state = AlertState::Resolved;
            // Alertmanager writes the zero time when an alert has no end.
            if let Some(at) = json::first_time(e, &["endsAt"]).filter(|at| at.timestamp() > 0) {
                alert.observed_at = at;
            }
        }
        alert.source_state = Some(status.clone());
        alert.labels.insert("status".to_owned(), status);
    }
    if let Some(fingerprint) = text(e, "fingerprint") {
        alert.dedup_key = format!("alertmanager:{fingerprint}");
    }
    Ok(alert)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, error_of, fixture, value};
    use crate::alert::AlertState;
    use crate::intake::formats::SourceKind;

    #[test]
    fn webhook_v4_firing_high_memory_load() {
        let body = fixture("alertmanager/prometheus_msteams_webhook_v4_firing.json");
        let alerts = SourceKind::Alertmanager
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)["alerts"][0]);
        assert_eq!(a.source, "alertmanager");
        assert_eq!(a.kind, "high_memory_load");
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (5, "warning")
        );
        assert_eq!(a.title, "Server High Memory usage");
        assert_eq!(
            a.description.as_deref(),
            Some("10.80.40.11 reported high memory usage with 23.28%.")
        );
        assert_eq!(a.resource.kind.as_deref(), Some("host"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("instance-with-hyphen_and_underscore")
        );
        assert!(a.actor.is_none());
        assert_eq!(a.network.remote_ip, None);
        assert_eq!(
            a.labels.get("job").map(String::as_str),
            Some("docker_nodes")
        );
        assert_eq!(a.labels.get("monitor").map(String::as_str), Some("master"));
        assert_eq!(
            a.labels.get("status").map(String::as_str),
            Some("firing"),
            "the group's status"
        );
        assert_eq!(
            a.observed_at.to_rfc3339(),
            "2018-03-07T11:33:21.873077559+00:00"
        );
        // The sample has no fingerprint: Cordon's own fingerprint stands in.
        assert_eq!(
            a.dedup_key,
            "alertmanager|high_memory_load|instance-with-hyphen_and_underscore|"
        );
    }

    #[test]
    fn one_alert_per_entry_including_resolved_ones() {
        let payload = json!({"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "KubePodCrashLooping", "severity": "critical",
                "namespace": "prod", "pod": "api-7d9f", "restarts": 12},
             "annotations": {"message": "Pod prod/api-7d9f is crash looping"}, "fingerprint": "a1b2",
             "startsAt": "2024-01-01T00:00:00Z"},
            {"status": "resolved", "labels": {"alertname": "NodeDown", "instance": "10.0.0.7:9100"},
             "annotations": {}, "fingerprint": "c3d4"}
        ]});
        let body = serde_json::to_vec_pretty(&payload).expect("JSON");
        let alerts = SourceKind::Alertmanager
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 2);
        let (a, b) = (&alerts[0], &alerts[1]);
        assert_raw(a, &body, &payload["alerts"][0]);
        assert_raw(b, &body, &payload["alerts"][1]);
        assert_eq!(
            (a.severity.score, a.title.as_str()),
            (9, "Pod prod/api-7d9f is crash looping")
        );
        assert_eq!(a.resource.kind.as_deref(), Some("k8s.pod"));
        assert_eq!(a.resource.id.as_deref(), Some("prod/api-7d9f"));
        assert_eq!(a.labels.get("restarts").map(String::as_str), Some("12"));
        assert_eq!(a.dedup_key, "alertmanager:a1b2");
        assert_eq!(b.labels.get("status").map(String::as_str), Some("resolved"));
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(b.state, AlertState::Resolved);
        assert_eq!(b.source_state.as_deref(), Some("resolved"));
        assert_eq!((b.severity.score, b.severity.native.as_str()), (5, ""));
        assert_eq!(b.title, "NodeDown");
        assert_eq!(b.resource.id.as_deref(), Some("10.0.0.7:9100"));
    }

    #[test]
    fn the_fixture_resolved_is_the_same_alert_in_state_resolved_observed_when_it_ended() {
        let firing = fixture("alertmanager/prometheus_msteams_webhook_v4_firing.json");
        let mut payload = value(&firing);
        // What Alertmanager sends for the same group once the alert ends (`send_resolved`).
        payload["status"] = json!("resolved");
        payload["alerts"][0]["status"] = json!("resolved");
        payload["alerts"][0]["endsAt"] = json!("2018-03-07T11:48:21.873077559Z");
        let body = serde_json::to_vec(&payload).expect("JSON");
        let before = &SourceKind::Alertmanager.normalize(&firing).expect("firing")[0];
        let after = &SourceKind::Alertmanager.normalize(&body).expect("resolved")[0];
        assert_eq!(before.state, AlertState::Firing);
        assert_eq!(before.source_state.as_deref(), Some("firing"));
        assert_eq!(after.state, AlertState::Resolved);
        assert_eq!(after.source_state.as_deref(), Some("resolved"));
        assert_eq!(
            after.dedup_key, before.dedup_key,
            "follows the firing alert"
        );
        assert_eq!(
            after.observed_at.to_rfc3339(),
            "2018-03-07T11:48:21.873077559+00:00"
        );
    }

    #[test]
    fn an_entry_without_a_status_takes_the_groups_and_a_zero_end_is_no_end() {
        let payload = json!({"version": "4", "status": "resolved", "alerts": [
            {"labels": {"alertname": "NodeDown"}, "startsAt": "2024-01-01T00:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z"}
        ]});
        let body = serde_json::to_vec(&payload).expect("JSON");
        let a = &SourceKind::Alertmanager
            .normalize(&body)
            .expect("normalizes")[0];
        assert_eq!(a.state, AlertState::Resolved);
        assert_eq!(a.observed_at.to_rfc3339(), "2024-01-01T00:00:00+00:00");
        let payload = json!({"alerts": [{"labels": {"alertname": "NodeDown"}}]});
        let body = serde_json::to_vec(&payload).expect("JSON");
        let a = &SourceKind::Alertmanager
            .normalize(&body)
            .expect("normalizes")[0];
        assert_eq!(
            (a.state, a.source_state.as_deref()),
            (AlertState::Firing, None)
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let err =
            error_of(SourceKind::Alertmanager.normalize(br#"{"version":"4","status":"firing"}"#));
        assert!(err.contains("`alerts`"), "{err}");
        let err = error_of(SourceKind::Alertmanager.normalize(br#"{"alerts":[{"labels":{}}]}"#));
        assert!(err.contains("`alerts[0].labels.alertname`"), "{err}");
        let err =
            error_of(SourceKind::Alertmanager.normalize(br#"{"alerts":[{"annotations":{}}]}"#));
        assert!(err.contains("`alerts[0].labels`"), "{err}");
        let err = error_of(SourceKind::Alertmanager.normalize(br#"{"alerts":{}}"#));
        assert!(err.contains("must be a JSON array"), "{err}");
        let err = error_of(SourceKind::Alertmanager.normalize(br#"{"alerts":[]}"#));
        assert!(err.contains("no alerts"), "{err}");
    }
}
