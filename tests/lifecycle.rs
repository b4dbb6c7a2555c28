//! The source's own lifecycle, end to end with a real Prometheus Alertmanager (Debian 12's 0.25,
//! installed by scripts/peers) sending to Cordon's Alertmanager intake: an alert fires, then
//! resolves. The incident shows both states, the playbook on `state: resolved` runs exactly once,
//! the playbooks for the alert itself do not start again, and the incident policy
//! (`grouping.resolved_at_source`) does what the config says.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cordon::config::{GroupingConfig, StoreConfig, StoreKind};
use cordon::intake::formats::SourceKind;
use cordon::store::Store;
use serde_json::{Value, json};
use support::alertmanager::Alertmanager;
use support::*;

/// One playbook for the alert itself (no `state`: firing only) and one for its resolution.
fn playbooks(dir: &std::path::Path) {
    write_playbook(
        dir,
        "am-firing",
        r#"id: am-firing
name: Note an Alertmanager alert
on:
  source: alertmanager
steps:
  - id: seen
    uses: core.set
    with:
      key: "firing_${{ alert.labels.alertname }}"
      value: "${{ alert.state }}"
"#,
    );
    write_playbook(
        dir,
        "am-resolved",
        r#"id: am-resolved
name: Note that Alertmanager resolved an alert
on:
  source: alertmanager
  state: resolved
steps:
  - id: seen
    uses: core.set
    with:
      key: "resolved_${{ alert.labels.alertname }}"
      value: "${{ alert.state }}, ${{ incident.at_source.resolved }} of ${{ incident.alert_count }} resolved at the source"
"#,
    );
}

struct Setup {
    server: TestServer,
    alertmanager: Alertmanager,
    _playbooks: tempfile::TempDir,
}

/// Cordon with both playbooks and `grouping.resolved_at_source` as given (`None`: the default),
/// and an Alertmanager sending to it.
async fn setup(policy: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    playbooks(dir.path());
    let grouping = policy
        .map(|p| format!("grouping:\n  resolved_at_source: {p}\n"))
        .unwrap_or_default();
    let server = TestServer::start_with(&format!(
        "playbooks:\n  paths: [{}]\n{grouping}{}",
        dir.path().display(),
        all_sources()
    ))
    .await;
    let alertmanager =
        Alertmanager::start(&format!("{}/v1/alerts/alertmanager", server.base)).await;
    Setup {
        server,
        alertmanager,
        _playbooks: dir,
    }
}

const WITHIN: Duration = Duration::from_secs(20);

fn labels(alertname: &str) -> Value {
    json!({ "alertname": alertname, "instance": "web-1:9100", "severity": "critical", "job": "node" })
}

fn annotations(alertname: &str) -> Value {
    json!({ "summary": format!("{alertname} on web-1"), "description": "from the lifecycle test" })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The stored alerts from Alertmanager named `alertname`, oldest first.
async fn alerts_named(server: &TestServer, alertname: &str) -> Vec<Value> {
    let mut found: Vec<Value> = server
        .stored_alerts()
        .await
        .into_iter()
        .filter(|a| a["source"] == "alertmanager" && a["kind"] == alertname)
        .collect();
    found.reverse();
    found
}

/// The runs of `playbook`.
async fn runs_of(server: &TestServer, playbook: &str) -> Vec<Value> {
    server
        .admin(&format!("/v1/runs?playbook={playbook}&limit=100"))
        .await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `playbook` has a finished run for `alert_id`; that run.
async fn finished_run(server: &TestServer, playbook: &str, alert_id: &str) -> Value {
    let mut found = Value::Null;
    wait_until(
        WITHIN,
        || format!("a finished run of {playbook} for alert {alert_id}"),
        async || {
            found = runs_of(server, playbook)
                .await
                .into_iter()
                .find(|r| r["alert_id"] == alert_id && r["finished_at"].is_string())
                .unwrap_or(Value::Null);
            !found.is_null()
        },
    )
    .await;
    found
}

async fn incident(server: &TestServer, id: &str) -> Value {
    server.admin(&format!("/v1/incidents/{id}")).await
}

/// Fires `HighCPU` through Alertmanager, waits for its playbook, resolves it, and waits for the
/// resolution's playbook. The firing and the resolved alert, and the incident.
async fn fire_then_resolve(s: &Setup) -> (Value, Value, String) {
    let (server, am) = (&s.server, &s.alertmanager);
    let starts_at = now();
    am.fire(&labels("HighCPU"), &annotations("HighCPU"), &starts_at)
        .await;
    let mut firing = Value::Null;
    wait_until(
        WITHIN,
        || "Alertmanager's firing notification in Cordon".into(),
        async || {
            firing = alerts_named(server, "HighCPU")
                .await
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            !firing.is_null()
        },
    )
    .await;
    assert_eq!(firing["state"], "firing", "{firing}");
    assert_eq!(firing["source_state"], "firing");
    let incident_id = firing["incident_id"].as_str().unwrap().to_owned();
    let firing_id = firing["id"].as_str().unwrap().to_owned();
    let run = finished_run(server, "am-firing", &firing_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    am.resolve(&labels("HighCPU"), &annotations("HighCPU"), &starts_at)
        .await;
    let mut both = Vec::new();
    wait_until(
        WITHIN,
        || "Alertmanager's resolved notification in Cordon".into(),
        async || {
            both = alerts_named(server, "HighCPU").await;
            both.len() >= 2
        },
    )
    .await;
    assert_eq!(both.len(), 2, "{both:#?}");
    let resolved = both[1].clone();
    let firing = both[0].clone();
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert_eq!(resolved["source_state"], "resolved");
    assert_eq!(resolved["follows"], firing_id.as_str(), "{resolved}");
    assert_eq!(firing["followed_by"], resolved["id"], "{firing}");
    assert_eq!(
        resolved["incident_id"],
        incident_id.as_str(),
        "in the same incident"
    );
    assert_eq!(
        resolved["dedup_key"], firing["dedup_key"],
        "Alertmanager's fingerprint"
    );
    let run = finished_run(server, "am-resolved", resolved["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    (firing, resolved, incident_id)
}

/// What both policies share after the resolution: the incident lists both states, in order, the
/// resolution's playbook ran once with `alert.state` resolved, the firing playbook did not start
/// again, a redelivery of the resolution is a repeat, and the report shows it all.
async fn shows_both_states_and_runs_once(s: &Setup, firing: &Value, resolved: &Value, id: &str) {
    let server = &s.server;
    let shown = incident(server, id).await;
    let states: Vec<&str> = shown["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["firing", "resolved"], "{shown}");
    let i = &shown["incident"];
    assert_eq!(
        (i["alert_count"].as_u64(), i["event_count"].as_u64()),
        (Some(1), Some(2)),
        "one alert, two notifications: {i}"
    );
    assert_eq!(i["at_source"]["resolved"], 1, "{i}");
    assert!(i["at_source"]["quiet_since"].is_string(), "{i}");
    assert_eq!(i["values"]["firing_HighCPU"], "firing");
    assert_eq!(
        i["values"]["resolved_HighCPU"],
        "resolved, 1 of 1 resolved at the source"
    );

    // Alertmanager's delivery again (a retry, another replica of Alertmanager): a repeat.
    let again = json!({ "version": "4", "status": "resolved", "receiver": "cordon", "alerts": [resolved["raw"]] });
    let answer = server
        .accept("alertmanager", serde_json::to_vec(&again).unwrap())
        .await;
    let accepted = &answer["alerts"][0];
    assert_eq!(accepted["duplicate"], true, "{answer}");
    assert_eq!(accepted["alert_id"], resolved["id"]);
    assert_eq!(accepted["repeat_count"], 2);
    assert_eq!(accepted["state"], "resolved");

    // Another alert through Alertmanager, and its playbook run: by then anything the resolution
    // or its redelivery could have started has been matched.
    let starts_at = now();
    s.alertmanager
        .fire(&labels("DiskFull"), &annotations("DiskFull"), &starts_at)
        .await;
    let mut disk = Value::Null;
    wait_until(
        WITHIN,
        || "the DiskFull alert in Cordon".into(),
        async || {
            disk = alerts_named(server, "DiskFull")
                .await
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            !disk.is_null()
        },
    )
    .await;
    finished_run(server, "am-firing", disk["id"].as_str().unwrap()).await;

    let resolved_runs = runs_of(server, "am-resolved").await;
    assert_eq!(resolved_runs.len(), 1, "{resolved_runs:#?}");
    assert_eq!(resolved_runs[0]["alert_id"], resolved["id"]);
    let firing_runs: Vec<Value> = runs_of(server, "am-firing").await;
    let for_alerts: Vec<&str> = firing_runs
        .iter()
        .map(|r| r["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        for_alerts.len(),
        2,
        "one per firing alert, none for the resolution: {firing_runs:#?}"
    );
    assert!(for_alerts.contains(&firing["id"].as_str().unwrap()));
    assert!(for_alerts.contains(&disk["id"].as_str().unwrap()));

    let Value::String(report) = server.admin(&format!("/v1/incidents/{id}/report")).await else {
        panic!("the report is Markdown");
    };
    let received = report
        .find("| alert received | alertmanager | HighCPU on web-1 (HighCPU, severity 9/10, firing)")
        .unwrap_or_else(|| panic!("the firing alert in the timeline: {report}"));
    let ended = report
        .find("| alert resolved at the source | alertmanager | HighCPU on web-1 (HighCPU, severity 9/10, resolved")
        .unwrap_or_else(|| panic!("the resolution in the timeline: {report}"));
    assert!(received < ended, "firing, then resolved: {report}");
}

#[tokio::test]
async fn a_real_alertmanager_resolving_an_alert_resolves_its_incident_when_the_policy_says_so() {
    let s = setup(Some("resolve")).await;
    let (firing, resolved, id) = fire_then_resolve(&s).await;
    wait_until(
        WITHIN,
        || format!("incident {id} resolved by its source"),
        async || incident(&s.server, &id).await["incident"]["status"] == "resolved",
    )
    .await;
    shows_both_states_and_runs_once(&s, &firing, &resolved, &id).await;

    let Value::String(report) = s.server.admin(&format!("/v1/incidents/{id}/report")).await else {
        panic!("the report is Markdown");
    };
    assert!(report.contains("- Status: resolved"), "{report}");
    assert!(
        report.contains("| incident.resolved | source:alertmanager | via alertmanager |"),
        "the resolution is audited as the source's: {report}"
    );
    // The incident was resolved, so the next alert about web-1 opens a new one.
    let disk = alerts_named(&s.server, "DiskFull").await;
    assert_ne!(disk[0]["incident_id"], id.as_str());
}

#[tokio::test]
async fn by_default_a_resolution_at_the_source_is_noted_and_the_incident_stays_open() {
    let s = setup(None).await;
    let (firing, resolved, id) = fire_then_resolve(&s).await;
    // Noted on the incident, in the same write as the resolution.
    let shown = incident(&s.server, &id).await;
    assert_eq!(shown["incident"]["status"], "open", "{shown}");
    let Value::String(report) = s.server.admin(&format!("/v1/incidents/{id}/report")).await else {
        panic!("the report is Markdown");
    };
    assert!(
        report.contains("- At the source: 1 resolved at the source; none firing since "),
        "{report}"
    );
    assert!(!report.contains("incident.resolved"), "{report}");

    shows_both_states_and_runs_once(&s, &firing, &resolved, &id).await;
    // Still open, so the next alert about web-1 joins it and fires there.
    let shown = incident(&s.server, &id).await;
    assert_eq!(shown["incident"]["status"], "open");
    assert_eq!(shown["incident"]["alert_count"], 2);
    assert!(shown["incident"]["at_source"]["quiet_since"].is_null());
}

/// An Alertmanager notification for `HighCPU` on web-1 in `status`, as Alertmanager 0.25 sends it.
fn notification(status: &str) -> Vec<u8> {
    let ends = if status == "resolved" {
        "2026-01-02T03:09:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    serde_json::to_vec(&json!({
        "receiver": "cordon", "status": status, "version": "4", "truncatedAlerts": 0,
        "groupKey": "{}:{alertname=\"HighCPU\"}", "groupLabels": { "alertname": "HighCPU" },
        "alerts": [{ "status": status, "labels": labels("HighCPU"), "annotations": annotations("HighCPU"),
                     "startsAt": "2026-01-02T03:04:00Z", "endsAt": ends, "generatorURL": "",
                     "fingerprint": "cc6e49118c0ea32b" }]
    }))
    .unwrap()
}

/// What the embedded store and PostgreSQL both write for a resolution: the resolved alert, waiting
/// to be matched, following the firing one, which names it; one alert counted resolved in the
/// incident; and the resolution again only counted.
async fn a_change_of_state_is_stored_as_an_alert_following_the_earlier(store: Arc<dyn Store>) {
    let now = chrono::Utc::now();
    let normalize = |status| {
        SourceKind::Alertmanager
            .normalize(&notification(status))
            .unwrap()
    };
    let firing = store.ingest(normalize("firing"), now).await.unwrap();
    let firing_id = firing[0].alert_id.clone();
    store.matched(&firing_id).await.unwrap();

    let resolved = store.ingest(normalize("resolved"), now).await.unwrap();
    let answer = serde_json::to_value(&resolved[0]).unwrap();
    assert_eq!(answer["duplicate"], false, "{answer}");
    assert_eq!(answer["state"], "resolved");
    assert_eq!(answer["follows"], firing_id.as_str());
    assert_eq!(answer["incident_id"], firing[0].incident_id.as_str());
    let resolved_id = resolved[0].alert_id.clone();
    assert_ne!(resolved_id, firing_id);
    assert_eq!(
        store.pending_matches().await.unwrap(),
        std::slice::from_ref(&resolved_id)
    );

    let earlier = store.alert(&firing_id).await.unwrap().unwrap();
    assert_eq!(earlier.followed_by.as_deref(), Some(resolved_id.as_str()));
    let later = store.alert(&resolved_id).await.unwrap().unwrap();
    assert_eq!(later.follows.as_deref(), Some(firing_id.as_str()));
    assert_eq!(later.observed_at.to_rfc3339(), "2026-01-02T03:09:00+00:00");
    let incident = store.incident(&later.incident_id).await.unwrap().unwrap();
    assert_eq!((incident.alert_count, incident.event_count), (1, 2));
    assert_eq!((incident.firing(), incident.at_source.resolved), (0, 1));
    assert!(incident.at_source.quiet_since.is_some());

    let again = store.ingest(normalize("resolved"), now).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(
        (again[0].alert_id.as_str(), again[0].repeat_count),
        (resolved_id.as_str(), 2)
    );
    assert_eq!(store.pending_matches().await.unwrap(), [resolved_id]);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_state_is_stored_alike_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        path: dir.path().join("store"),
        ..StoreConfig::default()
    };
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    let store = cordon::store::open(&config, &GroupingConfig::default(), metrics)
        .await
        .unwrap();
    a_change_of_state_is_stored_as_an_alert_following_the_earlier(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_state_is_stored_alike_on_postgres() {
    let (schema, url) = pg::named_schema().await;
    let config = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(cordon::config::Secret::new(&url)),
        pool_size: 2,
        ..StoreConfig::default()
    };
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    let store = cordon::store::open(&config, &GroupingConfig::default(), metrics)
        .await
        .unwrap_or_else(|e| panic!("open postgres: {e}"));
    a_change_of_state_is_stored_as_an_alert_following_the_earlier(store).await;
    pg::drop_schema(&schema).await;
}
