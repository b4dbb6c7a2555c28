//! Every step is a step: the steps inside `foreach` and `parallel` and those of a called playbook
//! are retried, timed out, recorded under their addresses (`post[3]`, `contain.branch_2.slow`,
//! `ok@ask`), undone and held after a crash exactly as top-level steps are; a called playbook is a
//! run of its own that can wait for people across a restart, and cancelling its parent cancels it.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// How long the tests wait for runs to reach a state.
const WAIT: Duration = Duration::from_secs(30);

/// A `generic` alert of `kind` through the in-process server; the id of the run it started.
async fn alert_run(server: &TestServer, kind: &str) -> String {
    let alert = json!({ "title": kind, "kind": kind, "severity": 7, "resource": { "kind": "host", "id": format!("host-{kind}") } });
    let (status, body) = server.post_alert("generic", alert.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let alert = body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    server.run_for_alert(&alert).await
}

fn sources() -> String {
    format!("sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n")
}

fn audit_of<'a>(shown: &'a Value, kind: &str, step: &str) -> Vec<&'a Value> {
    shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && e["step"] == step)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_timeout_apply_inside_foreach_and_parallel() {
    let flaky = FakeApi::start(Duration::ZERO).await;
    flaky.fail_first.store(2, Ordering::SeqCst);
    let slow = FakeApi::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "nested",
        &format!(
            r#"id: nested
name: Nested steps
on:
  source: generic
steps:
  - id: each
    foreach:
      items: '["a", "b"]'
      as: host
      concurrency: 1
      steps:
        - id: fetch
          uses: core.http
          with: {{ url: "{flaky}/item/${{{{ host }}}}", method: GET }}
          retry: {{ attempts: 3, backoff: 20ms }}
  - id: contain
    parallel:
      - steps:
          - id: quick
            uses: core.http
            with: {{ url: "{flaky}/quick", method: GET }}
      - steps:
          - id: slow
            uses: core.http
            with: {{ url: "{slow}/slow", method: GET }}
            timeout: 300ms
            on_error: continue
outputs:
  fetched: "${{{{ steps.each.output.map(|o| o.fetch.ok) }}}}"
"#,
            flaky = flaky.base,
            slow = slow.base,
        ),
    );
    let server = TestServer::start_in(
        dir,
        &format!(
            "{}playbooks:\n  paths: [{}]\n  http_allow: {{ nested: [\"127.0.0.1\"] }}\n",
            sources(),
            playbooks.display()
        ),
    )
    .await;
    let run = alert_run(&server, "nested").await;
    let shown = server
        .wait_run(&run, "finished", |r| {
            ["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or(""))
        })
        .await;
    let steps = &shown["run"]["steps"];
    assert_eq!(shown["run"]["status"], "succeeded", "{shown}");
    // The first item failed twice (503) and was retried inside the foreach; the second had no need.
    assert_eq!(steps["fetch[0]"]["attempts"], 3, "{steps}");
    assert_eq!(steps["fetch[0]"]["status"], "succeeded");
    assert_eq!(steps["fetch[1]"]["attempts"], 1);
    assert_eq!(flaky.count("GET /item/a"), 3);
    assert_eq!(flaky.count("GET /item/b"), 1);
    assert_eq!(shown["run"]["outputs"]["fetched"], json!([true, true]));
    assert_eq!(audit_of(&shown, "step.retrying", "fetch[0]").len(), 2);
    // Each nested side effect was recorded as started, with its own idempotency key.
    let started = audit_of(&shown, "step.started", "fetch[1]");
    assert_eq!(started.len(), 1, "{}", shown["audit"]);
    assert_eq!(
        started[0]["detail"]["idempotency_key"],
        format!("{run}:fetch:1")
    );
    // The slow branch timed out on its own step; the run went on.
    assert_eq!(steps["contain.branch_2.slow"]["status"], "failed");
    assert!(
        steps["contain.branch_2.slow"]["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 300ms"),
        "{steps}"
    );
    assert_eq!(steps["contain.branch_1.quick"]["status"], "succeeded");
    assert_eq!(
        audit_of(&shown, "step.finished", "contain.branch_2.slow").len(),
        1
    );
}

/// A lab firewall API: isolating a host answers with the VLAN it was on; releasing takes it back.
async fn firewall() -> fake::FakeServer {
    use axum::extract::Path as UrlPath;
    use axum::routing::post;
    fake::serve(
        axum::Router::new()
            .route(
                "/hosts/{id}/isolate",
                post(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({ "host": id, "previous_vlan": format!("vlan-{id}") }))
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

fn lab(playbooks: &Path, fw: &str) -> String {
    format!(
        "{}approvers:\n  admins: [cli:lead]\nplaybooks:\n  paths: [{playbooks}]\nintegrations:\n  paths: [{integrations}]\n  credentials:\n    lab:\n      token: lab-secret-token\n      endpoints: {{ fw.lab.example: \"{fw}\" }}\n",
        sources(),
        playbooks = playbooks.display(),
        integrations = data("integrations/over-http/lab-fw").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_step_is_undone_by_its_address_and_only_it() {
    let fw = firewall().await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "hosts",
        r#"id: hosts
name: Isolate every host
on:
  source: generic
steps:
  - id: each
    foreach:
      items: '["h-1", "h-2", "h-3"]'
      as: host
      steps:
        - id: isolate
          uses: lab-fw.isolate
          with: { host: "${{ host }}" }
"#,
    );
    let server = TestServer::start_in(dir, &lab(&playbooks, &fw.base)).await;
    let run = alert_run(&server, "hosts").await;
    let shown = server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(
        shown["run"]["steps"]["isolate[1]"]["output"]["previous_vlan"],
        "vlan-h-2"
    );
    assert_eq!(fw.requests().len(), 3);

    let undo = server
        .undo(&run, "isolate%5B1%5D", "cli:alice", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    let released: Vec<String> = fw.requests().iter().skip(3).map(|r| r.line()).collect();
    assert_eq!(
        released,
        ["POST /hosts/h-2/release"],
        "only that item's host"
    );
    let after = server
        .wait_run(&run, "undone", |r| {
            !r["steps"]["isolate[1]"]["undone"].is_null()
        })
        .await;
    assert!(after["run"]["steps"]["isolate[0]"]["undone"].is_null());
    assert!(after["run"]["steps"]["isolate[2]"]["undone"].is_null());
    assert_eq!(audit_of(&after, "step.undone", "isolate[1]").len(), 1);
}

/// A parent that calls `ask`, a playbook waiting for an approval, and uses its output.
fn caller_playbooks(playbooks: &Path) {
    std::fs::create_dir_all(playbooks).unwrap();
    write_playbook(
        playbooks,
        "parent",
        r#"id: parent
name: Calls a playbook that asks
on:
  source: generic
  when: alert.kind == "parent"
steps:
  - id: ask
    call:
      playbook: ask
      inputs: { host: "${{ alert.resource.id }}" }
  - id: after
    uses: core.log
    with: { message: "the callee said ${{ steps.ask.output.answer }}" }
outputs:
  answer: "${{ steps.ask.output.answer }}"
"#,
    );
    write_playbook(
        playbooks,
        "ask",
        r#"id: ask
name: Asks a person
inputs:
  host: { type: string, required: true }
steps:
  - id: ok
    approval:
      prompt: "Contain ${{ inputs.host }}?"
      approvers: soc
      timeout: 1h
  - id: note
    uses: core.log
    with: { message: "decided" }
outputs:
  answer: "${{ if steps.ok.approved { `yes for ${inputs.host}` } else { `no` } }}"
"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_cancels_the_run_it_called() {
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    caller_playbooks(&playbooks);
    let server = TestServer::start_in(
        dir,
        &format!(
            "{}approvers:\n  soc: [cli:alice]\nplaybooks:\n  paths: [{}]\n",
            sources(),
            playbooks.display()
        ),
    )
    .await;
    alert_run(&server, "parent").await;
    let of = async |p: &str| {
        let runs = server.admin("/v1/runs?limit=10").await;
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["playbook"] == p)
            .cloned()
    };
    wait_until(
        WAIT,
        || "the called run to wait".into(),
        async || of("ask").await.is_some_and(|r| r["status"] == "waiting"),
    )
    .await;
    let parent = of("parent").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = format!("{parent}.ask");
    let shown = server.admin(&format!("/v1/runs/{child}")).await;
    assert_eq!(shown["run"]["parent"]["run"], parent.as_str());
    assert_eq!(shown["run"]["trigger"]["kind"], "call");
    let (status, body) = server
        .act(&format!("/v1/runs/{parent}/cancel"), "cli:alice")
        .await;
    assert_eq!(status, 200, "{body}");
    let child_shown = server
        .wait_run(&child, "cancelled", |r| r["status"] == "cancelled")
        .await;
    let (status, _) = server.decide(&child, "ok", "approve", "cli:alice").await;
    assert_eq!(status, 409, "nothing is left to approve");
    assert!(child_shown["run"]["steps"]["note"].is_null());
    let parent_shown = server.admin(&format!("/v1/runs/{parent}")).await;
    assert_eq!(parent_shown["run"]["status"], "cancelled");
    assert!(parent_shown["run"]["steps"]["after"].is_null());
}

fn process_config(dir: &Path, playbooks: &Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\nplaybooks:\n  paths: [{}]\n{extra}approvers:\n  soc: [cli:alice]\n{}",
            dir.join("store").display(),
            playbooks.display(),
            sources(),
        ),
    )
    .unwrap();
    config
}

async fn run_named(server: &Client, playbook: &str) -> Option<Value> {
    let runs = server.admin("/v1/runs?limit=100").await;
    runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["playbook"] == playbook)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_foreach_of_side_effects_repeats_none_and_holds_the_one_in_flight() {
    let api = FakeApi::start(Duration::from_secs(60)).await;
    // Twenty calls are answered at once; the next is held in flight until the kill.
    api.quick.store(20, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "fifty",
        &format!(
            r#"id: fifty
name: Fifty side effects
on:
  source: generic
steps:
  - id: numbers
    script: "let list = []; for n in 0..50 {{ list.push(n) }} list"
  - id: each
    foreach:
      items: steps.numbers.output
      as: n
      concurrency: 1
      steps:
        - id: post
          uses: core.http
          with: {{ url: "{}/item/${{{{ n }}}}", method: POST }}
"#,
            api.base
        ),
    );
    let config = process_config(
        dir.path(),
        &playbooks,
        "  http_allow: { fifty: [\"127.0.0.1\"] }\n",
    );
    let server = Process::start(&config);
    post_alert_to(&server, "fifty").await;
    wait_until(
        WAIT,
        || format!("21 calls, the last in flight: {:?}", api.calls().len()),
        async || api.count("POST /item/") == 21,
    )
    .await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    api.delay_ms.store(0, Ordering::SeqCst);

    let server = Process::start(&config);
    wait_until(
        WAIT,
        || "the run to be held".into(),
        async || {
            run_named(&server, "fifty")
                .await
                .is_some_and(|r| r["status"] == "needs_decision")
        },
    )
    .await;
    let run = run_named(&server, "fifty").await.unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    let shown = server.admin(&format!("/v1/runs/{id}")).await;
    let steps = &shown["run"]["steps"];
    assert_eq!(steps["post[20]"]["status"], "needs_decision", "{steps}");
    assert_eq!(steps["post[19]"]["status"], "succeeded");
    assert!(
        steps["post[21]"].is_null(),
        "nothing after the held item ran"
    );
    assert_eq!(
        api.count("POST /item/"),
        21,
        "no finished call was repeated"
    );

    // `runs show` names the nested steps by address; a person skips the one in flight.
    let alice = server.token_of("cli:alice").await;
    let (code, out, err) = cli_with(&config, Some(&alice), &["runs", "show", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("post[20]") && out.contains("needs_decision"),
        "{out}"
    );
    let (code, out, err) = cli_with(
        &config,
        Some(&alice),
        &["runs", "resolve", &id, "post[20]", "--skip"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        WAIT,
        || "the run to finish".into(),
        async || {
            run_named(&server, "fifty")
                .await
                .is_some_and(|r| r["status"] == "succeeded")
        },
    )
    .await;
    let calls = api.calls();
    for n in 0..50 {
        let path = format!("POST /item/{n}");
        let times = calls.iter().filter(|c| **c == path).count();
        assert_eq!(times, 1, "item {n} was called {times} times");
    }
}

async fn post_alert_to(server: &Client, kind: &str) {
    let body = json!({ "title": kind, "kind": kind, "severity": 7, "resource": { "kind": "host", "id": format!("host-{kind}") } });
    let answer = server.accept("generic", body.to_string()).await;
    assert!(answer["alerts"][0]["alert_id"].is_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_called_playbook_waits_for_its_approval_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    caller_playbooks(&playbooks);
    let config = process_config(dir.path(), &playbooks, "");
    let server = Process::start(&config);
    post_alert_to(&server, "parent").await;
    wait_until(
        WAIT,
        || "the called run to wait for its approval".into(),
        async || {
            run_named(&server, "ask")
                .await
                .is_some_and(|r| r["status"] == "waiting")
        },
    )
    .await;
    let parent = run_named(&server, "parent").await.unwrap();
    assert_eq!(parent["status"], "waiting");
    let parent = parent["id"].as_str().unwrap().to_owned();
    let child = run_named(&server, "ask").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let server = Process::start(&config);

    // The approval is still open after the restart; a person approves it from the CLI.
    let alice = server.token_of("cli:alice").await;
    let (code, out, err) = cli_with(&config, Some(&alice), &["approve", &child, "ok"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        WAIT,
        || "the parent to finish".into(),
        async || {
            let shown = server.admin(&format!("/v1/runs/{parent}")).await;
            shown["run"]["status"] == "succeeded"
        },
    )
    .await;
    let shown = server.admin(&format!("/v1/runs/{parent}")).await;
    assert_eq!(shown["run"]["outputs"]["answer"], "yes for host-parent");
    assert_eq!(shown["run"]["steps"]["ask"]["child"], child.as_str());
    // The called run's steps are audited on it, and the parent shows them by address.
    let child_shown = server.admin(&format!("/v1/runs/{child}")).await;
    assert_eq!(audit_of(&child_shown, "approval.decided", "ok").len(), 1);
    let (code, out, err) = cli_with(&config, Some(&alice), &["runs", "show", &parent]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok@ask") && out.contains("note@ask"), "{out}");
}
