//! `cordon backtest` over the shared fixtures (every recorded payload of `../shared/fixtures/alerts/`)
//! and a generated month of history: a playbook whose `when` was edited shows exactly the incidents
//! it gains and loses against the loaded one (computed here from the stored alerts on their own),
//! the steps, approvals and side effects its runs would reach, and the store is the same record for
//! record before and after.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Duration, Utc};
use cordon::alert::{Alert, AlertState};
use cordon::config::{GroupingConfig, StoreConfig};
use cordon::intake::formats::SourceKind;
use cordon::store::{AlertQuery, SledStore, Store};
use serde_json::Value;
use support::*;

const SOURCES: &str = "[generic, falco, aws.guardduty, aws.cloudtrail, aws.securityhub, azure.defender, azure.sentinel, azure.monitor, gcp.scc, alertmanager]";

fn playbook(when: &str) -> String {
    format!(
        r#"id: triage
name: Triage and isolate
on:
  source: {SOURCES}
  when: {when}
steps:
  - id: note
    uses: core.log
    with: {{ message: "triage ${{{{ alert.title }}}}" }}
  - id: approve
    approval:
      prompt: "Isolate ${{{{ alert.resource.id }}}}?"
      approvers: soc
      quorum: 1
      timeout: 30m
      on_timeout: reject
  - id: isolate
    if: steps.approve.approved
    uses: core.http
    with:
      url: https://edr.example.com/isolate
      method: POST
      json: {{ host: "${{{{ alert.resource.id }}}}" }}
"#
    )
}

const LOADED_WHEN: &str = "alert.severity.score >= 7";
const EDITED_WHEN: &str = "alert.severity.score >= 5 && !alert.title.starts_with(\"legacy\")";

/// What the edited condition selects, as the test computes it.
fn edited_when(a: &Alert) -> bool {
    a.severity.score >= 5 && !a.title.starts_with("legacy")
}

/// The source a fixture file belongs to, from its folder and name (as tests/fixtures.rs reads them).
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

/// What a sender would post (as tests/fixtures.rs unwraps them).
fn payload(fixture: &Value) -> Vec<u8> {
    if let Some(body) = fixture.pointer("/responses/200/body") {
        return serde_json::to_vec(body).unwrap();
    }
    if fixture.get("Type").and_then(Value::as_str) == Some("Notification") {
        return fixture["Message"].as_str().unwrap().as_bytes().to_vec();
    }
    serde_json::to_vec(fixture).unwrap()
}

/// Every fixture's alerts, then a generated month (and some older history), each ingested at the
/// time it says it arrived.
async fn fill(store: &SledStore) {
    let now = Utc::now();
    let mut files = Vec::new();
    for folder in std::fs::read_dir(fixture("alerts")).expect("the shared fixtures") {
        for file in std::fs::read_dir(folder.unwrap().path()).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push(file);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 27, "found only {} fixtures", files.len());
    for (i, file) in files.iter().enumerate() {
        let fixture: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let at = now - Duration::hours(2) - Duration::minutes(i as i64 * 7);
        let mut alerts = source_of(file).normalize(&payload(&fixture)).unwrap();
        for alert in &mut alerts {
            alert.received_at = at;
        }
        store.ingest(alerts, at).await.unwrap();
    }
    // 300 generated alerts over the last 25 days, 10 about legacy hosts (which the edit drops),
    // and 20 from before the window.
    for i in 0..330i64 {
        let at = match i {
            0..300 => now - Duration::hours(3 + i * 2),
            300..310 => now - Duration::hours(5 + i),
            _ => now - Duration::days(35) - Duration::hours(i),
        };
        let (title, host) = match i {
            300..310 => (format!("legacy {i}"), format!("legacy-{i}")),
            _ => (format!("generated {i}"), format!("host-{}", i % 50)),
        };
        let severity = if (300..310).contains(&i) {
            8
        } else {
            (i * 7) % 11
        };
        let body = serde_json::json!({
            "title": title,
            "kind": format!("gen.kind{}", i % 7),
            "severity": severity,
            "resource": { "kind": "host", "id": host },
        });
        let mut alerts = SourceKind::Generic
            .normalize(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        alerts[0].received_at = at;
        store.ingest(alerts, at).await.unwrap();
    }
}

/// The incidents whose alerts in the window match `matches` (firing alerts only, as playbooks
/// take by default).
fn incidents_matching(alerts: &[Alert], matches: impl Fn(&Alert) -> bool) -> BTreeSet<String> {
    alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing && matches(a))
        .map(|a| a.incident_id.clone())
        .collect()
}

/// Every record of the store, as JSON lines (what `cordon migrate` copies).
fn dump(store: &SledStore) -> Vec<String> {
    store
        .records()
        .map(|r| serde_json::to_string(&r.expect("a readable record")).unwrap())
        .collect()
}

/// Opens the sled store at `path`, waiting for the lock a closed one lets go of a moment later.
async fn open(path: &Path) -> SledStore {
    let config = StoreConfig {
        path: path.to_owned(),
        ..StoreConfig::default()
    };
    for _ in 0..200 {
        match SledStore::open(&config, &GroupingConfig::default()) {
            Ok(store) => return store,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    panic!("cannot open the store at {}", path.display());
}

#[tokio::test]
async fn an_edited_when_shows_exactly_the_incidents_gained_and_lost_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let store = open(&store_path).await;
    fill(&store).await;
    let since = Utc::now() - Duration::days(30);
    let mut stored = store.alerts(&AlertQuery::default()).await.unwrap();
    stored.retain(|a| a.received_at >= since);
    let before = dump(&store);
    store.close().await.unwrap();
    drop(store);

    let loaded = dir.path().join("loaded");
    let edited = dir.path().join("edited");
    for (folder, when) in [(&loaded, LOADED_WHEN), (&edited, EDITED_WHEN)] {
        std::fs::create_dir_all(folder).unwrap();
        write_playbook(folder, "triage", &playbook(when));
    }
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  path: {}\nplaybooks:\n  paths: [{}]\napprovers:\n  soc: [cli:alice]\n",
            store_path.display(),
            loaded.display()
        ),
    )
    .unwrap();

    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["backtest", "--since", "30d", "--json"])
        .arg(&edited)
        .output()
        .expect("cordon runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");

    // What the two conditions select, from the stored alerts alone.
    let was = incidents_matching(&stored, |a| a.severity.score >= 7);
    let now = incidents_matching(&stored, edited_when);
    let gained: Vec<&String> = now.difference(&was).collect();
    let lost: Vec<&String> = was.difference(&now).collect();
    assert!(
        !gained.is_empty() && !lost.is_empty(),
        "the history exercises both"
    );

    assert_eq!(report["alerts"].as_u64().unwrap() as usize, stored.len());
    let diff = &report["differences"][0];
    assert_eq!(diff["playbook"], "triage");
    assert_eq!(diff["new"], false);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        strings(&diff["gained"]),
        gained.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        strings(&diff["lost"]),
        lost.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );

    // The edited playbook's runs: one per incident, each reaching the approval and asking for
    // the isolation, in dry run.
    let playbook = &report["playbooks"][0];
    assert_eq!(playbook["id"], "triage");
    let incidents = playbook["incidents"].as_object().unwrap();
    assert_eq!(
        incidents.keys().cloned().collect::<BTreeSet<_>>(),
        now,
        "the incidents it would start on"
    );
    assert_eq!(playbook["runs"].as_u64().unwrap() as usize, now.len());
    assert_eq!(
        playbook["approvals"]["approve"].as_u64().unwrap() as usize,
        now.len()
    );
    assert_eq!(
        playbook["side_effects"]["core.http"].as_u64().unwrap() as usize,
        now.len()
    );
    assert_eq!(
        playbook["by_status"]["succeeded"].as_u64().unwrap() as usize,
        now.len()
    );
    let (incident, run) = incidents.iter().next().unwrap();
    assert_eq!(
        run["steps"],
        serde_json::json!(["note", "approve", "isolate"])
    );
    let effect = &run["side_effects"][0];
    assert_eq!(effect["step"], "isolate");
    assert_eq!(effect["inputs"]["url"], "https://edr.example.com/isolate");
    let first = stored
        .iter()
        .filter(|a| a.incident_id == *incident)
        .filter(|a| edited_when(a))
        .min_by_key(|a| (a.received_at, a.id.clone()))
        .unwrap();
    assert_eq!(
        run["alert_id"],
        first.id.as_str(),
        "started by the first matching alert"
    );
    assert_eq!(
        effect["inputs"]["json"]["host"],
        first.resource.id.clone().map_or(Value::Null, Value::String)
    );

    // The text report says the same in words.
    let text = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["backtest", "--since", "30d"])
        .arg(&edited)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "triage against the loaded playbook: {} incidents gained, {} lost",
            gained.len(),
            lost.len()
        )),
        "{text}"
    );

    // A search query narrows the replay to the alerts it finds.
    let severe = stored.iter().filter(|a| a.severity.score >= 7).count();
    assert!(severe > 0 && severe < stored.len(), "the history has both");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "backtest",
            "--since",
            "30d",
            "--json",
            "--query",
            "severity:>=7",
        ])
        .arg(&edited)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let narrowed: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(narrowed["alerts"].as_u64().unwrap() as usize, severe);
    // A query that does not parse is refused with its column, and nothing runs.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["backtest", "--since", "30d", "--query", "severity:>=high("])
        .arg(&edited)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("column"), "{stderr}");

    // Nothing was written.
    let store = open(&store_path).await;
    assert_eq!(dump(&store), before, "the store changed");
    store.close().await.unwrap();
}
