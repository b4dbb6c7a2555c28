//! Every recorded payload under `../shared/fixtures/alerts/` goes through the real HTTP listener and
//! is found in the store: one stored alert per alert in the payload, each with its raw element kept,
//! and with the same normalized fields the source's normalizer gives (whose unit tests pin the exact
//! values per fixture).

mod support;

use std::path::Path;

use cordon::intake::formats::SourceKind;
use serde_json::Value;
use support::*;

/// The source a fixture file belongs to, from its folder and name.
fn source_of(path: &Path) -> SourceKind {
    let folder = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    match folder {
        "alertmanager" => SourceKind::Alertmanager,
        "aws_cloudtrail" => SourceKind::AwsCloudTrail,
        "aws_guardduty" => SourceKind::AwsGuardDuty,
        "aws_securityhub" => SourceKind::AwsSecurityHub,
        "falco" => SourceKind::Falco,
        "gcp_scc" => SourceKind::GcpScc,
        "azure" if name.starts_with("defender") => SourceKind::AzureDefender,
        "azure" if name.starts_with("sentinel") => SourceKind::AzureSentinel,
        "azure" if name.starts_with("azure_monitor") => SourceKind::AzureMonitor,
        _ => panic!("no source known for fixture {}", path.display()),
    }
}

/// What a sender would post: Azure's API examples wrap the resource as `responses.200.body`; the
/// recorded SNS delivery carries the EventBridge event as its `Message` (the SNS path itself, with
/// signatures, is tested in tests/intake.rs on this same payload).
fn payload(fixture: &Value) -> Vec<u8> {
    if let Some(body) = fixture.pointer("/responses/200/body") {
        return serde_json::to_vec(body).unwrap();
    }
    if fixture.get("Type").and_then(Value::as_str) == Some("Notification") {
        return fixture["Message"].as_str().unwrap().as_bytes().to_vec();
    }
    serde_json::to_vec(fixture).unwrap()
}

/// The fields a responder reads, as JSON, without what differs per delivery (ids, times).
fn responder_view(alert: &Value) -> Value {
    let mut view = alert.clone();
    let object = view.as_object_mut().unwrap();
    for key in [
        "id",
        "incident_id",
        "received_at",
        "observed_at",
        "repeat_count",
        "last_seen_at",
    ] {
        object.remove(key);
    }
    view
}

fn all_fixtures() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for folder in std::fs::read_dir(fixture("alerts")).expect("shared fixtures are beside the repo")
    {
        let folder = folder.unwrap().path();
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn every_recorded_payload_is_accepted_and_stored() {
    let files = all_fixtures();
    assert!(files.len() >= 27, "found only {} fixtures", files.len());
    let server = TestServer::start().await;
    let mut stored_total = 0;

    for file in &files {
        let source = source_of(file);
        let fixture: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let body = payload(&fixture);
        let expected = source
            .normalize(&body)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));

        let (status, answer) = server.post_alert(source.name(), body.clone()).await;
        assert_eq!(status, 202, "{}: {answer}", file.display());
        let accepted = answer["alerts"].as_array().unwrap();
        assert_eq!(
            accepted.len(),
            expected.len(),
            "{}: one answer per alert in the payload",
            file.display()
        );

        for (answer, want) in accepted.iter().zip(&expected) {
            let id = answer["alert_id"].as_str().unwrap();
            let stored = server.admin(&format!("/v1/alerts/{id}")).await["alert"].clone();
            let file = file.display();
            assert_eq!(stored["source"], source.name(), "{file}");
            assert_eq!(stored["incident_id"], answer["incident_id"], "{file}");
            let score = stored["severity"]["score"].as_u64().unwrap();
            assert!(score <= 10, "{file}: severity {score}");
            assert!(
                !stored["title"].as_str().unwrap().is_empty(),
                "{file}: a title"
            );
            assert!(
                stored["resource"]["id"].is_string() || stored["actor"]["id"].is_string(),
                "{file}: names a resource or an actor"
            );
            // The raw element is kept exactly, and is part of what was posted.
            let raw = serde_json::to_string(&stored["raw"]).unwrap();
            assert_eq!(
                stored["raw"],
                serde_json::from_str::<Value>(want.raw.get()).unwrap(),
                "{file}: raw kept"
            );
            assert!(!raw.is_empty());
            let want = serde_json::to_value(want).unwrap();
            assert_eq!(
                responder_view(&stored),
                responder_view(&want),
                "{file}: stored fields differ from the normalizer's"
            );
            if !answer["duplicate"].as_bool().unwrap() {
                stored_total += 1;
            }
        }
    }

    let alerts = server.stored_alerts().await;
    assert_eq!(alerts.len(), stored_total);
    assert!(
        stored_total >= files.len(),
        "split payloads give several alerts"
    );
    let incidents = server.stored_incidents().await;
    assert!(!incidents.is_empty() && incidents.len() <= alerts.len());
    // Every source is represented in the store.
    for source in SourceKind::ALL
        .iter()
        .filter(|s| **s != SourceKind::Generic)
    {
        assert!(
            alerts.iter().any(|a| a["source"] == source.name()),
            "no stored alert from {source}"
        );
    }
}
