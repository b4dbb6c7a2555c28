//! Guardrails: an attacker (or a flood of alerts they provoke) tries to get a side-effect action
//! past `guardrails.protected` by changing a name's case, or past `guardrails.blast_radius` by
//! waiting for a restart or spreading calls over replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::pg::fresh_schema;
use crate::support::{
    ADMIN_TOKEN, Client, FakeApi, INTAKE_TOKEN, Process, TestServer, wait_until, write_playbook,
};

/// A minute: runs finish in well under a second, but the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The generic source with the bearer intake token.
const GENERIC: &str =
    "sources:\n  generic:\n    auth:\n      bearer:\n        token: test-intake-token\n";

async fn post(client: &Client, body: Value) -> String {
    let (status, answer) = client.post_alert("generic", body.to_string()).await;
    assert_eq!(status, 202, "{answer}");
    answer["alerts"][0]["alert_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not stored: {answer}"))
        .to_owned()
}

async fn runs(client: &Client, playbook: &str) -> Vec<Value> {
    client
        .admin(&format!("/v1/runs?playbook={playbook}&limit=1000"))
        .await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn status(run: &Value) -> &str {
    run["status"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_protected_upn_in_other_case_is_still_refused() {
    // Entra compares UPNs without case, so `BreakGlass@contoso.com` is the protected account.
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "contain-user",
        "id: contain-user\nname: Revoke the user's sessions\non:\n  source: generic\nsteps:\n  - id: revoke\n    uses: azure-entra.revoke_sessions\n    with: { user_id: \"${{ alert.actor.id }}\" }\n",
    );
    let server = TestServer::start_with(&format!(
        "{GENERIC}playbooks:\n  paths: [\"{}\"]\nintegrations:\n  paths: [\"{}\"]\nguardrails:\n  protected: [\"breakglass@contoso.com\"]\n",
        playbooks.path().display(),
        repo("integrations/azure-entra").display(),
    ))
    .await;

    let alert = post(
        &server,
        json!({
            "title": "Impossible travel", "kind": "entra.risky_signin", "severity": 8,
            "actor": { "kind": "azure.user", "id": "BreakGlass@contoso.com" },
        }),
    )
    .await;
    let run = server.run_for_alert(&alert).await;
    let shown = server
        .wait_run(&run, "finished", crate::support::finished)
        .await;
    assert_eq!(shown["run"]["status"], "failed", "{shown}");
    let error = shown["run"]["steps"]["revoke"]["error"].to_string();
    assert!(
        error.contains("`BreakGlass@contoso.com` is a protected resource")
            && error.contains("breakglass@contoso.com"),
        "the step is refused as touching the protected account: {error}"
    );
}

/// Playbook `contain`: POST `{api}/contain/{host}` with `core.http`, no approval.
fn contain(api: &str) -> String {
    format!(
        "id: contain\nname: contain\nvars: {{ api: \"{api}\" }}\non:\n  source: generic\nsteps:\n  - id: contain\n    uses: core.http\n    with: {{ url: \"${{{{ vars.api }}}}/contain/${{{{ alert.resource.id }}}}\", method: POST }}\n"
    )
}

/// The guardrails and the approvers of calls over the limit: `max` `core.http` calls per hour.
fn limit(max: u32) -> String {
    format!(
        "approvers:\n  soc: [cli:alice]\nguardrails:\n  blast_radius:\n    core.http: {{ max: {max}, window: 1h }}\n  blast_radius_approvers: soc\n"
    )
}

fn host_alert(host: &str) -> Value {
    json!({ "title": "beacon", "kind": "beacon", "severity": 7, "resource": { "kind": "host", "id": host } })
}

#[tokio::test]
async fn a_restart_does_not_reset_the_blast_radius() {
    let api = FakeApi::start(Duration::ZERO).await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(playbooks.path(), "contain", &contain(&api.base));
    let extra = format!(
        "{GENERIC}playbooks:\n  paths: [\"{}\"]\n  http_allow: {{ contain: [\"127.0.0.1\"] }}\n{}",
        playbooks.path().display(),
        limit(2)
    );
    let server = TestServer::start_with(&extra).await;
    for host in ["host-1", "host-2"] {
        let run = server
            .run_for_alert(&post(&server, host_alert(host)).await)
            .await;
        let shown = server
            .wait_run(&run, "succeeded", crate::support::finished)
            .await;
        assert_eq!(shown["run"]["status"], "succeeded", "{shown}");
    }
    assert_eq!(api.count("POST /contain/"), 2);

    // The server restarts on the same store: the two calls of the last hour still count.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, &extra).await;
    let run = server
        .run_for_alert(&post(&server, host_alert("host-3")).await)
        .await;
    let prompt = server.wait_prompt(&run, "contain").await;
    assert!(
        prompt.contains("reached its blast radius of 2 calls per 1h"),
        "{prompt}"
    );
    assert_eq!(
        api.count("POST /contain/"),
        2,
        "the third call waits for approval instead of running"
    );
}

/// The config of one replica on the shared database.
fn replica_config(dir: &Path, name: &str, url: &str, playbooks: &Path) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: 5s\nstore:\n  kind: postgres\n  url: \"{url}\"\n  pool_size: 4\n  lease_ttl: 3s\nlog:\n  format: json\n  level: info\nplaybooks:\n  paths: [\"{}\"]\n  http_allow: {{ contain: [\"127.0.0.1\"] }}\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n{}",
            playbooks.display(),
            limit(3),
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_blast_radius() {
    let url = fresh_schema().await;
    let api = FakeApi::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(&playbooks, "contain", &contain(&api.base));
    let a = Process::start(&replica_config(dir.path(), "a", &url, &playbooks));
    let b = Process::start(&replica_config(dir.path(), "b", &url, &playbooks));

    // Eight alerts, half to each replica: three calls in the hour in all, not three per replica.
    const ALERTS: usize = 8;
    for i in 0..ALERTS {
        let replica = if i % 2 == 0 { &a } else { &b };
        post(replica, host_alert(&format!("host-{i}"))).await;
    }
    wait_until(
        WAIT,
        || "every run done or held".into(),
        async || {
            let all = runs(&a, "contain").await;
            all.len() == ALERTS
                && all
                    .iter()
                    .all(|r| matches!(status(r), "succeeded" | "waiting"))
        },
    )
    .await;
    let all = runs(&b, "contain").await;
    let succeeded = all.iter().filter(|r| status(r) == "succeeded").count();
    assert_eq!(succeeded, 3, "{all:#?}");
    assert_eq!(api.count("POST /contain/"), 3);
    let held = all.iter().filter(|r| status(r) == "waiting").count();
    assert_eq!(held, ALERTS - 3, "the others wait for approval by soc");
}
