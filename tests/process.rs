//! The real `cordon` binary: durability across SIGKILL, clean shutdown on SIGTERM, and the CLI on
//! the local store and through a running server.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{ADMIN_TOKEN, Client, INTAKE_TOKEN, Process, cli, cli_with, generic_alert};

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("cordon.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\nplaybooks:\n  paths: []\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
        dir.join("store").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The answer to a generic alert, or `None` once the server refuses or is gone.
async fn post(server: &Client, body: Vec<u8>) -> Option<Value> {
    let response = server
        .http
        .post(format!("{}/v1/alerts/generic", server.base))
        .bearer_auth(INTAKE_TOKEN)
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_alert_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut server = Process::start(&config);

    // Eight senders post distinct alerts until the server is killed mid-stream.
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (client, killed, acked) = (Client::clone(&server), killed.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !killed.load(Ordering::SeqCst) {
                n += 1;
                let body = generic_alert(
                    &format!("alert {sender}-{n}"),
                    &format!("host-{sender}-{n}"),
                );
                match post(&client, body).await {
                    Some(answer) => {
                        let a = &answer["alerts"][0];
                        let ids = (
                            a["alert_id"].as_str().unwrap().to_owned(),
                            a["incident_id"].as_str().unwrap().to_owned(),
                        );
                        acked.lock().unwrap().push(ids);
                    }
                    None => break,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server stopped acknowledging alerts"
        );
        assert!(
            senders.iter().any(|s| !s.is_finished()),
            "every sender stopped: requests are being refused"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no flush, no shutdown.
    killed.store(true, Ordering::SeqCst);
    server.child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    let server = Process::start(&config);
    let token = server.token_of(support::TESTER).await;
    for (alert_id, incident_id) in &acked {
        let (status, body) = server
            .send(
                server
                    .http
                    .get(format!("{}/v1/alerts/{alert_id}", server.base))
                    .bearer_auth(&token),
            )
            .await;
        assert_eq!(
            status, 200,
            "acknowledged alert {alert_id} lost after SIGKILL"
        );
        assert_eq!(body["alert"]["incident_id"], incident_id.as_str());
    }
    let incidents = server.admin("/v1/incidents?limit=1000").await;
    assert!(incidents["incidents"].as_array().unwrap().len() >= acked.len().min(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_the_cli_reads_the_store_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut server = Process::start(&config);
    let first = server
        .accept("generic", generic_alert("Reverse shell on web-1", "web-1"))
        .await;
    server
        .accept("generic", generic_alert("Crypto miner on web-1", "web-1"))
        .await;
    let alert_id = first["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let incident_id = first["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // While the server holds the store, the CLI asks its admin API.
    // As a person, with a personal token: the bootstrap token reads nothing.
    let reader = server.token_of(support::TESTER).await;
    let (code, out, err) = cli_with(
        &config,
        Some(&reader),
        &["alerts", "list", "--json", "--server", &server.base],
    );
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2);
    let (code, out, err) = cli_with(&config, Some(&reader), &["incidents", "list"]);
    assert_eq!(
        code, 0,
        "falls back to the server when the store is held: {err}"
    );
    assert!(
        out.contains(&incident_id) && out.contains("resource:host:web-1"),
        "{out}"
    );

    server.signal("-TERM");
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    // With the server gone, the CLI opens the store itself.
    let (code, out, err) = cli(&config, &["alerts", "show", &alert_id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Reverse shell on web-1") && out.contains(&incident_id),
        "{out}"
    );
    let (code, out, _) = cli(&config, &["incidents", "show", &incident_id, "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["incident"]["alert_count"], 2);
    assert_eq!(shown["alerts"].as_array().unwrap().len(), 2);
    let (code, _, err) = cli(&config, &["alerts", "show", "no-such-id"]);
    assert_eq!(code, 1);
    assert!(err.contains("no alert `no-such-id`"), "{err}");
}

#[test]
fn validate_prints_every_error_with_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: 127.0.0.1:8080\n  admin_tokn: x\nsources:\n  falco:\n    auth:\n      bearer:\n        token: ${CORDON_SURELY_UNSET_TOKEN}\n",
    )
    .unwrap();
    let (code, out, err) = cli(&path, &["validate"]);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:3:3: error: server: unknown field `admin_tokn`"
        )),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `admin_token`?"), "{err}");
    assert!(err.contains(&format!("{file}:8:16: error: sources.falco.auth.bearer.token: environment variable `CORDON_SURELY_UNSET_TOKEN` is not set")), "{err}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let (code, out, err) = cli(&example, &["validate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: "), "{out}");
}

#[test]
fn serve_refuses_a_broken_config_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "store:\n  kind: mongodb\n").unwrap();
    let (code, _, err) = cli(&path, &["serve"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("broken.yaml:2:9: error: store.kind: unknown variant `mongodb`"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
