//! The playbook engine over real HTTP: alert in → run → approval → action, the approval rules,
//! guardrails, dry runs, runaway scripts, timers across a restart, and the audit chain.

mod support;

use std::time::Duration;

use cordon::engine::channel::ChannelError;
use serde_json::{Value, json};
use support::*;
use tempfile::TempDir;

/// A containment playbook: approval, then a POST to the fake cloud API, then a note on the incident.
fn contain(api: &str, extra: &str) -> String {
    format!(
        r#"id: contain
name: Contain a host
{extra}on:
  source: generic
  when: alert.severity.score >= 7
vars:
  api: "{api}"
steps:
  - id: assess
    script: '#{{ risky: alert.severity.score >= 8 }}'
  - id: approve
    if: steps.assess.output.risky
    approval:
      prompt: "Isolate ${{{{ alert.resource.id }}}}?"
      approvers: soc
      quorum: QUORUM
      timeout: TIMEOUT
      on_timeout: ON_TIMEOUT
  - id: isolate
    if: steps.approve.approved
    uses: core.http
    with:
      url: "${{{{ vars.api }}}}/isolate/${{{{ alert.resource.id }}}}"
      method: POST
  - id: note
    uses: core.set
    with:
      key: isolated
      value: "${{{{ steps.isolate.ok }}}}"
outputs:
  isolated: "${{{{ steps.isolate.ok }}}}"
"#
    )
}

struct Setup {
    server: TestServer,
    api: FakeApi,
    _playbooks: TempDir,
}

async fn setup(
    playbook_extra: &str,
    quorum: u32,
    timeout: &str,
    on_timeout: &str,
    config_extra: &str,
) -> Setup {
    let api = FakeApi::start(Duration::ZERO).await;
    let playbooks = tempfile::tempdir().unwrap();
    let yaml = contain(&api.base, playbook_extra)
        .replace("QUORUM", &quorum.to_string())
        .replace("ON_TIMEOUT", on_timeout)
        .replace("TIMEOUT", timeout);
    write_playbook(playbooks.path(), "contain", &yaml);
    let config = format!(
        "playbooks:\n  paths: [{}]\n  script_timeout: 300ms\n  http_allow:\n    contain: [\"127.0.0.1\"]\napprovers:\n  soc: [cli:alice, cli:bob, group:leads]\n  leads: [slack:U1]\n  admins: [cli:root]\n{config_extra}{}",
        playbooks.path().display(),
        all_sources()
    );
    let server = TestServer::start_with(&config).await;
    Setup {
        server,
        api,
        _playbooks: playbooks,
    }
}

async fn alert(server: &TestServer, resource: &str, severity: u8) -> String {
    alert_of_kind(server, resource, severity, "miner").await
}

async fn alert_of_kind(server: &TestServer, resource: &str, severity: u8, kind: &str) -> String {
    let body = serde_json::to_vec(&json!({ "title": format!("{kind} on {resource}"), "kind": kind, "severity": severity, "resource": { "kind": "host", "id": resource } })).unwrap();
    let (status, answer) = server.post_generic(&body).await;
    assert_eq!(status, 202, "{answer}");
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    server.run_for_alert(&alert_id).await
}

#[tokio::test]
async fn alert_to_approval_to_action_with_an_intact_audit_chain() {
    let s = setup("", 1, "30m", "reject", "").await;
    let run = alert(&s.server, "host-1", 9).await;
    let shown = s.server.wait_run(&run, "waiting", waiting).await;
    assert_eq!(
        shown["run"]["steps"]["approve"]["approval"]["prompt"],
        "Isolate host-1?"
    );
    assert_eq!(
        s.api.count("/isolate/"),
        0,
        "nothing happens before the approval"
    );

    let (status, body) = s
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let done = s.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["outputs"]["isolated"], true);
    assert_eq!(s.api.count("POST /isolate/host-1"), 1);
    assert_eq!(
        done["run"]["steps"]["isolate"]["idempotency_key"],
        format!("{run}:isolate")
    );

    let incident = done["run"]["incident_id"].as_str().unwrap();
    let shown = s.server.admin(&format!("/v1/incidents/{incident}")).await;
    assert_eq!(
        shown["incident"]["values"]["isolated"], true,
        "core.set stored the value"
    );

    let kinds = texts(&done["audit"], "kind");
    for kind in [
        "run.created",
        "approval.requested",
        "approval.decided",
        "step.started",
        "step.finished",
        "run.state",
    ] {
        assert!(kinds.contains(&kind), "audit lacks {kind}: {kinds:?}");
    }
    // A side effect is audited as started (durably, before it runs) and as finished; a pure step
    // (`core.set`), which a crash simply repeats, only as finished (docs/playbooks.md, Audit).
    let of_step = |step: &str| -> Vec<&str> {
        done["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["step"] == step && e["kind"].as_str().unwrap().starts_with("step."))
            .map(|e| e["kind"].as_str().unwrap())
            .collect()
    };
    assert_eq!(of_step("isolate"), ["step.started", "step.finished"]);
    assert_eq!(of_step("note"), ["step.finished"]);
    let decided = done["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval.decided")
        .unwrap();
    // The audit names the person and the credential they used (a personal token).
    assert_eq!(decided["detail"]["person"], "cli-alice");
    assert!(
        decided["actor"].as_str().unwrap().starts_with("token:"),
        "{decided}"
    );
    let verify = s.server.admin("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["entries"].as_u64().unwrap() >= 8);
}

#[tokio::test]
async fn only_group_members_decide_and_one_deny_ends_it() {
    let s = setup("", 1, "30m", "reject", "").await;
    let run = alert(&s.server, "host-2", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;

    let (status, body) = s
        .server
        .decide(&run, "approve", "approve", "cli:mallory")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not in the approver group `soc`")
    );
    let (status, _) = s.server.decide(&run, "approve", "maybe", "cli:alice").await;
    assert_eq!(status, 400);
    let (status, _) = s.server.decide(&run, "nope", "approve", "cli:alice").await;
    assert_eq!(status, 404);

    // Nested groups count: slack:U1 is in `leads`, which is in `soc`.
    let (status, body) = s.server.decide(&run, "approve", "deny", "slack:U1").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let done = s.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(done["run"]["steps"]["isolate"]["status"], "skipped");
    assert_eq!(s.api.count("/isolate/"), 0);

    let answer = s
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_status_says(&answer, 409, "already decided by slack-U1 (deny)");
    let refused = s.server.admin(&format!("/v1/runs/{run}")).await;
    let kinds = texts(&refused["audit"], "kind");
    assert!(
        kinds.iter().filter(|k| **k == "approval.refused").count() >= 2,
        "refusals are audited: {kinds:?}"
    );
}

#[tokio::test]
async fn quorum_counts_distinct_people_and_the_requester_may_not_approve() {
    let s = setup("", 2, "30m", "reject", "").await;
    let run = alert(&s.server, "host-3", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let (status, body) = s
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(
        (status, body["outcome"].clone(), body["approvals"].as_u64()),
        (200, Value::Null, Some(1)),
        "{body}"
    );
    let (status, body) = s
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 409, "the same person twice is one approval: {body}");
    let (status, body) = s.server.decide(&run, "approve", "approve", "cli:bob").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    s.server.wait_run(&run, "finished", finished).await;
    assert_eq!(s.api.count("/isolate/host-3"), 1);

    // A manual run: alice started it, so alice may not approve it (she may deny it).
    write_playbook(
        s._playbooks.path(),
        "ask",
        "id: ask\nname: Ask\nsteps:\n  - id: ok\n    approval:\n      prompt: go?\n      approvers: soc\n",
    );
    let (status, body) = s.server.admin_post("/v1/playbooks/reload", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .server
        .admin_post(
            "/v1/playbooks/ask/runs",
            json!({ "identity": "cli:alice", "inputs": {} }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let manual = body["run_id"].as_str().unwrap().to_owned();
    let (status, body) = s.server.act("/v1/playbooks/nope/runs", "cli:alice").await;
    assert_eq!(status, 404, "{body}");
    s.server.wait_run(&manual, "waiting", waiting).await;
    let answer = s.server.decide(&manual, "ok", "approve", "cli:alice").await;
    assert_status_says(&answer, 403, "started this run");
    let (status, body) = s.server.decide(&manual, "ok", "approve", "cli:bob").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    assert_eq!(
        s.server.wait_run(&manual, "finished", finished).await["run"]["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn protected_resources_are_refused_and_nothing_is_called() {
    let s = setup(
        "",
        1,
        "30m",
        "reject",
        "guardrails:\n  protected: [\"host-prod-*\"]\n",
    )
    .await;
    let run = alert(&s.server, "host-prod-1", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    s.server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    let done = s.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "failed", "{}", done["run"]);
    let error = done["run"]["steps"]["isolate"]["error"].as_str().unwrap();
    assert!(
        error.contains("protected resource") && error.contains("host-prod-*"),
        "{error}"
    );
    assert_eq!(s.api.count("/isolate/"), 0);
}

#[tokio::test]
async fn calls_over_the_blast_radius_wait_for_approval() {
    let s = setup("", 1, "30m", "reject", "guardrails:\n  blast_radius:\n    core.http: { max: 1, window: 1h }\n  blast_radius_approvers: admins\n").await;
    let first = alert(&s.server, "host-a", 9).await;
    s.server.wait_run(&first, "waiting", waiting).await;
    s.server
        .decide(&first, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(
        s.server.wait_run(&first, "finished", finished).await["run"]["status"],
        "succeeded"
    );

    let second = alert(&s.server, "host-b", 9).await;
    s.server.wait_run(&second, "waiting", waiting).await;
    s.server
        .decide(&second, "approve", "approve", "cli:alice")
        .await;
    let held = s
        .server
        .wait_run(&second, "held", |r| {
            r["steps"]["isolate"]["status"] == "waiting"
        })
        .await;
    let prompt = held["run"]["steps"]["isolate"]["approval"]["prompt"]
        .as_str()
        .unwrap();
    assert!(
        prompt.contains("blast radius of 1 calls per 1h"),
        "{prompt}"
    );
    assert_eq!(s.api.count("/isolate/host-b"), 0, "held, not called");
    let (status, _) = s
        .server
        .decide(&second, "isolate", "approve", "cli:alice")
        .await;
    assert_eq!(status, 403, "only the blast-radius approvers decide");
    let (status, body) = s
        .server
        .decide(&second, "isolate", "approve", "cli:root")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.server.wait_run(&second, "finished", finished).await["run"]["status"],
        "succeeded"
    );
    assert_eq!(s.api.count("/isolate/host-b"), 1);
}

#[tokio::test]
async fn a_dry_run_records_what_it_would_do_and_calls_nothing() {
    let s = setup("dry_run: true\n", 1, "30m", "reject", "").await;
    let run = alert(&s.server, "host-4", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    s.server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    let done = s.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded");
    let isolate = &done["run"]["steps"]["isolate"];
    assert_eq!(isolate["dry_run"], true);
    assert_eq!(isolate["output"]["dry_run"], true);
    assert_eq!(
        isolate["output"]["inputs"]["url"],
        format!("{}/isolate/host-4", s.api.base)
    );
    assert_eq!(s.api.count("/isolate/"), 0);
}

#[tokio::test]
async fn core_http_reaches_only_allowed_hosts() {
    let api = FakeApi::start(Duration::ZERO).await;
    // The host is allowed for another playbook, not for `call`.
    let (server, _dir) = one_call_allowing(&api, "", "someone-else").await;
    let done = run_once(&server).await;
    assert_eq!(done["run"]["status"], "failed", "{}", done["run"]);
    let error = done["run"]["steps"]["call"]["error"].as_str().unwrap();
    assert!(
        error.contains("host `127.0.0.1` is not allowed for playbook `call`"),
        "{error}"
    );
    assert_eq!(api.count("/flaky"), 0, "nothing was sent");
}

#[tokio::test]
async fn a_manual_run_can_be_a_dry_run() {
    let api = FakeApi::start(Duration::ZERO).await;
    let (server, _dir) = one_call(&api, "").await;
    let (status, body) = server
        .admin_post(
            "/v1/playbooks/call/runs",
            json!({ "identity": "cli:alice", "dry_run": true }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["dry_run"], true);
    assert_eq!(done["run"]["steps"]["call"]["output"]["dry_run"], true);
    assert_eq!(api.count("/flaky"), 0, "a dry run calls nothing");
}

#[tokio::test]
async fn a_runaway_script_fails_its_step_and_the_server_keeps_answering() {
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "spin",
        "id: spin\nname: Spin\non:\n  source: generic\nsteps:\n  - id: forever\n    script: |\n      let n = 0;\n      loop { n += 1; }\n",
    );
    let config = format!(
        "playbooks:\n  paths: [{}]\n  script_timeout: 300ms\n{}",
        playbooks.path().display(),
        all_sources()
    );
    let server = TestServer::start_with(&config).await;
    let (_, answer) = server.post_generic(&generic_alert("x", "host-9")).await;
    let run = server
        .run_for_alert(answer["alerts"][0]["alert_id"].as_str().unwrap())
        .await;
    let health = server
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "failed");
    let error = done["run"]["steps"]["forever"]["error"].as_str().unwrap();
    assert!(
        error.contains("ran longer than") || error.contains("operations"),
        "{error}"
    );
}

#[tokio::test]
async fn an_approval_timeout_fires_even_when_the_server_was_down() {
    let s = setup("", 1, "1s", "approve", "").await;
    let run = alert(&s.server, "host-5", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let Setup {
        server,
        api,
        _playbooks,
    } = s;
    let playbooks_dir = _playbooks.path().to_owned();
    let dir = server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let config = format!(
        "playbooks:\n  paths: [{}]\n  http_allow:\n    contain: [\"127.0.0.1\"]\napprovers:\n  soc: [cli:alice]\n{}",
        playbooks_dir.display(),
        all_sources()
    );
    let server = TestServer::start_in(dir, &config).await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    let approval = &done["run"]["steps"]["approve"]["approval"];
    assert_eq!(approval["outcome"], true);
    assert_eq!(approval["decisions"][0]["identity"], "system");
    assert_eq!(approval["decisions"][0]["via"], "timeout");
    assert_eq!(api.count("/isolate/host-5"), 1);
}

#[tokio::test]
async fn a_cancelled_run_stops_and_frees_its_incident() {
    let s = setup("", 1, "30m", "reject", "").await;
    let run = alert(&s.server, "host-6", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let (status, body) = s
        .server
        .act(&format!("/v1/runs/{run}/cancel"), "cli:alice")
        .await;
    assert_eq!(
        (status, body["run"]["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (status, _) = s
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 409, "a cancelled run takes no decisions");
    let (status, _) = s
        .server
        .act(&format!("/v1/runs/{run}/cancel"), "cli:alice")
        .await;
    assert_eq!(status, 409);
    // The next alert about the same host (same incident) starts a new run.
    let again = alert_of_kind(&s.server, "host-6", 9, "reverse-shell").await;
    assert_ne!(again, run);
}

/// A playbook with one core.http step, as `step_extra` configures it.
async fn one_call(api: &FakeApi, step_extra: &str) -> (TestServer, TempDir) {
    one_call_allowing(api, step_extra, "call").await
}

/// As [`one_call`], with the fake API's host allowed for playbook `allowed_for`.
async fn one_call_allowing(
    api: &FakeApi,
    step_extra: &str,
    allowed_for: &str,
) -> (TestServer, TempDir) {
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "call",
        &format!(
            "id: call\nname: Call\non:\n  source: generic\nsteps:\n  - id: call\n    uses: core.http\n    with: {{ url: \"{}/flaky\", method: GET }}\n{step_extra}",
            api.base
        ),
    );
    let config = format!(
        "playbooks:\n  paths: [{}]\n  http_allow:\n    {allowed_for}: [\"127.0.0.1\"]\n{}",
        playbooks.path().display(),
        all_sources()
    );
    (TestServer::start_with(&config).await, playbooks)
}

async fn run_once(server: &TestServer) -> Value {
    let (_, answer) = server.post_generic(&generic_alert("flaky", "host-r")).await;
    let run = server
        .run_for_alert(answer["alerts"][0]["alert_id"].as_str().unwrap())
        .await;
    server.wait_run(&run, "finished", finished).await
}

#[tokio::test]
async fn a_failing_call_is_retried_with_backoff_then_succeeds() {
    let api = FakeApi::start(Duration::ZERO).await;
    api.fail_first.store(2, std::sync::atomic::Ordering::SeqCst);
    let (server, _dir) = one_call(
        &api,
        "    retry: { attempts: 3, backoff: 100ms, max_delay: 1s }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let done = run_once(&server).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["steps"]["call"]["attempts"], 3);
    assert_eq!(api.count("GET /flaky"), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "backoff 100ms then 200ms"
    );
    let retries = done["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "step.retrying")
        .count();
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn retries_run_out_and_the_run_fails_with_the_last_error() {
    let api = FakeApi::start(Duration::ZERO).await;
    api.fail_first
        .store(10, std::sync::atomic::Ordering::SeqCst);
    let (server, _dir) = one_call(&api, "    retry: { attempts: 2, backoff: 50ms }\n").await;
    let done = run_once(&server).await;
    assert_eq!(done["run"]["status"], "failed");
    assert!(
        done["run"]["steps"]["call"]["error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{}",
        done["run"]
    );
    assert_eq!(api.count("GET /flaky"), 2);
}

#[tokio::test]
async fn a_step_over_its_timeout_fails() {
    let api = FakeApi::start(Duration::from_secs(5)).await;
    let (server, _dir) = one_call(&api, "    timeout: 200ms\n    on_error: continue\n").await;
    let started = std::time::Instant::now();
    let done = run_once(&server).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        done["run"]["status"], "succeeded",
        "on_error: continue goes on"
    );
    assert_eq!(done["run"]["steps"]["call"]["status"], "failed");
    assert!(
        done["run"]["steps"]["call"]["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 200ms")
    );
}

#[tokio::test]
async fn a_broken_reload_is_refused_and_the_old_playbooks_keep_running() {
    let api = FakeApi::start(Duration::ZERO).await;
    let (server, dir) = one_call(&api, "").await;
    write_playbook(
        dir.path(),
        "broken",
        "id: broken\nname: Broken\nsteps:\n  - id: x\n    uses: core.lgo\n",
    );
    let (status, body) = server.admin_post("/v1/playbooks/reload", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_playbooks")),
        "{body}"
    );
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("broken.yaml:5:11: error: unknown action `core.lgo`"),
        "{body}"
    );
    assert_eq!(
        run_once(&server).await["run"]["status"],
        "succeeded",
        "the loaded playbook still runs"
    );

    std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();
    write_playbook(
        dir.path(),
        "second",
        "id: second\nname: Second\non:\n  source: generic\nsteps:\n  - id: x\n    uses: core.log\n    with: { message: hi }\n",
    );
    let (status, body) = server.admin_post("/v1/playbooks/reload", json!({})).await;
    assert_eq!(
        (status, body["reloaded"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
}

/// The failure of a channel whose store is down.
fn down() -> ChannelError {
    cordon::store::StoreError::Backend("chat is down".into()).into()
}

/// A chat channel stand-in that records what the engine asks of it (the chat issue brings the real
/// ones); `fail` makes every call fail, as an outage would.
struct Recorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    fail: bool,
}

#[async_trait::async_trait]
impl cordon::engine::channel::ApprovalChannel for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn post(
        &self,
        request: &cordon::engine::channel::ApprovalRequest,
    ) -> Result<(), ChannelError> {
        self.seen.lock().unwrap().push(format!(
            "post {} {} {}",
            request.step, request.group, request.prompt
        ));
        if self.fail { Err(down()) } else { Ok(()) }
    }

    async fn update(
        &self,
        request: &cordon::engine::channel::ApprovalRequest,
        outcome: &cordon::engine::channel::ApprovalOutcome,
    ) -> Result<(), ChannelError> {
        let by: Vec<&str> = outcome.decisions.iter().map(|d| d.who()).collect();
        self.seen.lock().unwrap().push(format!(
            "update {} approved={} by={}",
            request.step,
            outcome.approved,
            by.join(",")
        ));
        if self.fail { Err(down()) } else { Ok(()) }
    }
}

#[tokio::test]
async fn approval_channels_get_the_request_and_the_outcome_and_an_outage_blocks_nothing() {
    let s = setup("", 1, "30m", "reject", "").await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    s.server
        .state
        .engine
        .add_channel(std::sync::Arc::new(Recorder {
            seen: seen.clone(),
            fail: false,
        }));
    let down = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    s.server
        .state
        .engine
        .add_channel(std::sync::Arc::new(Recorder {
            seen: down.clone(),
            fail: true,
        }));

    let run = alert(&s.server, "host-7", 9).await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let posted = async || !seen.lock().unwrap().is_empty();
    wait_until(Duration::from_secs(5), || "the request".into(), posted).await;
    assert_eq!(seen.lock().unwrap()[0], "post approve soc Isolate host-7?");

    let (status, _) = s.server.decide(&run, "approve", "approve", "cli:bob").await;
    assert_eq!(status, 200, "decisions work while a channel is down");
    assert_eq!(
        s.server.wait_run(&run, "finished", finished).await["run"]["status"],
        "succeeded"
    );
    let announced = async || seen.lock().unwrap().len() >= 2;
    wait_until(Duration::from_secs(5), || "the outcome".into(), announced).await;
    assert_eq!(
        seen.lock().unwrap()[1],
        "update approve approved=true by=cli-bob"
    );
    assert_eq!(
        down.lock().unwrap().len(),
        2,
        "the failing channel was asked too"
    );
}

#[tokio::test]
async fn a_person_resolves_and_reopens_an_incident() {
    let server = TestServer::start().await;
    let answer = server
        .accept(
            "falco",
            read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json"),
        )
        .await;
    let incident = answer["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = server
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:alice")
        .await;
    assert_eq!(status, 200, "{body}");
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    assert_eq!(shown["incident"]["status"], "resolved");
    let (status, _) = server
        .act(&format!("/v1/incidents/{incident}/reopen"), "cli:alice")
        .await;
    assert_eq!(status, 200);
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    assert_eq!(shown["incident"]["status"], "open");
    let (status, body) = server
        .act(&format!("/v1/incidents/{incident}/close"), "cli:alice")
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = server.act("/v1/incidents/nope/resolve", "cli:alice").await;
    assert_eq!(status, 404);
    let (status, body) = server
        .admin_post(
            &format!("/v1/incidents/{incident}/resolve"),
            json!({ "reason": "no such field" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    assert_eq!(
        shown["incident"]["status"], "open",
        "a refused request changes nothing"
    );
    server.stop().await;
}
