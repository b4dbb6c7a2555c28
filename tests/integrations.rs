//! Integrations through the real server: a folder that is not in the build
//! (`tests/data/integrations/over-http/lab-fw`) whose actions collect evidence and contain a host on a
//! local fake, the evidence on the incident and in the
//! audit log, the undo of the containment by API, and playbook validation against manifests.

mod support;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::routing::post;
use serde_json::{Value, json};
use std::path::Path;
use support::*;

/// A lab firewall API: isolating a host answers with the VLAN it was on; releasing takes it back.
async fn firewall() -> fake::FakeServer {
    fake::serve(
        Router::new()
            .route(
                "/hosts/{id}/isolate",
                post(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({ "host": id, "previous_vlan": "vlan-7" }))
                }),
            )
            .route(
                "/hosts/{id}/release",
                post(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({ "host": id, "released": true }))
                }),
            ),
    )
    .await
}

/// The sections loading `playbooks` and the lab firewall integration of
/// `tests/data/integrations/over-http/lab-fw`, its bearer token and its host pointed at `fw`.
fn extra(playbooks: &Path, fw: &str) -> String {
    format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\napprovers:\n  admins: [cli:lead]\nplaybooks:\n  paths: [{playbooks}]\nintegrations:\n  paths: [{integrations}]\n  credentials:\n    lab:\n      token: lab-secret-token\n      endpoints: {{ fw.lab.example: \"{fw}\" }}\n",
        playbooks = playbooks.display(),
        integrations = data("integrations/over-http/lab-fw").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_lands_on_the_incident_and_the_containment_is_undone_by_a_person() {
    let fw = firewall().await;
    let server =
        TestServer::start_with(&extra(&data("playbooks/lab/lab-auto.yaml"), &fw.base)).await;

    let alert = json!({ "title": "Beaconing", "severity": 9, "resource": { "kind": "host", "id": "h-42" } });
    let (status, body) = server.post_alert("generic", alert.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let alert = body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;
    let shown = server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(
        shown["run"]["steps"]["isolate"]["output"]["previous_vlan"],
        "vlan-7"
    );
    assert_eq!(fw.requests()[0].line(), "POST /hosts/h-42/isolate");

    // The evidence is on the incident, completed with where it came from, and in the audit log.
    let incident = shown["run"]["incident_id"].as_str().unwrap().to_owned();
    let shown_incident = server.admin(&format!("/v1/incidents/{incident}")).await;
    let evidence = &shown_incident["incident"]["evidence"];
    assert_eq!(evidence.as_array().unwrap().len(), 1, "{shown_incident}");
    assert_eq!(evidence[0]["kind"], "host-state");
    assert_eq!(evidence[0]["location"], "fw://hosts/h-42");
    assert_eq!(evidence[0]["run_id"], run.as_str());
    assert_eq!(evidence[0]["step_id"], "capture");
    assert_eq!(evidence[0]["sha256"].as_str().unwrap().len(), 64);
    let audited: Vec<&Value> = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "evidence.collected")
        .collect();
    assert_eq!(audited.len(), 1, "{}", shown["audit"]);
    assert_eq!(audited[0]["detail"]["location"], "fw://hosts/h-42");

    // `cordon incidents show` lists it.
    let config = server.dir.path().join("cli.yaml");
    std::fs::write(&config, config_text(server.dir.path(), "")).unwrap();
    let token = server.token_of(TESTER).await;
    let (code, out, err) = cli_with(
        &config,
        Some(&token),
        &["incidents", "show", &incident, "--server", &server.base],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("EVIDENCE"), "{out}");
    assert!(out.contains("fw://hosts/h-42"), "{out}");

    // A person asks to undo the isolation: nothing is released until the undo group approves.
    let (status, asked) = server
        .act(&format!("/v1/runs/{run}/steps/isolate/undo"), "cli:alice")
        .await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["approvers"], "admins", "{asked}");
    let undo_run = asked["undo_run"].as_str().unwrap().to_owned();
    server
        .wait_run(&undo_run, "waiting", |r| r["status"] == "waiting")
        .await;
    assert_eq!(fw.requests().len(), 1, "nothing released before approval");
    // The asker may not approve their own undo.
    let (status, refused) = server
        .decide(&undo_run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 403, "{refused}");
    // Approved by the lead: the release gets the isolate's output as `previous`.
    let undo = server.undo(&run, "isolate", "cli:alice", "cli:lead").await;
    assert_eq!(undo["run"]["id"], undo_run.as_str(), "the same undo run");
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(undo["run"]["steps"]["undo"]["action"], "lab-fw.release");
    assert_eq!(undo["run"]["steps"]["undo"]["output"]["released"], true);
    let release = &fw.requests()[1];
    assert_eq!(release.line(), "POST /hosts/h-42/release");
    assert_eq!(
        serde_json::from_slice::<Value>(&release.body).unwrap(),
        json!({ "vlan": "vlan-7" })
    );
    let after = server
        .wait_run(&run, "undone", |r| {
            !r["steps"]["isolate"]["undone"].is_null()
        })
        .await;
    assert_eq!(
        after["run"]["steps"]["isolate"]["undone"]["by"],
        "cli-alice"
    );
    let undone = after["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step.undone")
        .expect("the undo is audited");
    assert_eq!(undone["detail"]["person"], "cli-alice");

    // Not twice, and not for a step that has no undo.
    let answer = server
        .act(&format!("/v1/runs/{run}/steps/isolate/undo"), "cli:alice")
        .await;
    assert_status_says(&answer, 409, "already undone by cli-alice");
    let (status, body) = server
        .act(&format!("/v1/runs/{run}/steps/capture/undo"), "cli:alice")
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(fw.requests().len(), 2, "no further call was made");

    // The bearer token reached the firewall's side only: not the run, not the audit.
    let everything = server.admin(&format!("/v1/runs/{run}")).await.to_string();
    assert!(!everything.contains("lab-secret-token"));
    server.stop().await;
}

#[test]
fn playbooks_are_checked_against_the_manifests() {
    let files = tempfile::tempdir().unwrap();
    let playbooks = files.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "bad",
        "id: bad\nname: Bad\nsteps:\n  - id: a\n    uses: lab-fw.isolate\n    with: { host: server-1 }\n  - id: b\n    uses: lab-fw.isolat\n    with: { host: h-1 }\n  - id: c\n    uses: lab-fw.capture\n    with: { host: 42 }\n",
    );
    let config = files.path().join("cordon.yaml");
    std::fs::write(&config, extra(&playbooks, "http://127.0.0.1:9")).unwrap();
    let (code, _, err) = cli(&config, &["validate"]);
    assert_eq!(code, 1, "{err}");
    let file = files.path().join("playbooks/bad.yaml");
    let file = file.display();
    for expected in [
        format!(
            "{file}:6:19: error: input `host` of `lab-fw.isolate` must match the pattern `h-[0-9]+`"
        ),
        format!("{file}:8:11: error: unknown action `lab-fw.isolat`"),
        format!(
            "{file}:12:19: error: input `host` of `lab-fw.capture` is a number, but it takes a string"
        ),
    ] {
        assert!(err.contains(&expected), "missing {expected}\nin:\n{err}");
    }
    assert!(
        err.contains("hint: did you mean `lab-fw.isolate`?"),
        "{err}"
    );

    // The actions are listed with the rest.
    let (code, out, _) = cli(&config, &["actions", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("lab-fw.isolate  (side effect, idempotent)"),
        "{out}"
    );
}
