//! Writing playbooks and integrations, as a new author does from the docs alone (issue 16, item 2):
//! each mistake `cordon validate` must catch, at `file:line:column`; a polling playbook tested
//! offline with `cordon test`; the editor schema of the author's own config; and the
//! walkthrough's integration (`tests/data/integrations/authoring/sandbox`, the very files
//! docs/integrations.md shows) polling a local service through the real server.
//!
//! The sandbox service is the walkthrough's own made-up API (docs/integrations.md, "Write your
//! own integration"): no vendor describes it, so the fake here follows that description.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config loading the stock integrations and those of `integrations` (a folder of folders),
/// with `extra` sections; written in `dir`.
fn config(dir: &Path, integrations: &Path, extra: &str) -> PathBuf {
    let text = config_text(
        dir,
        &format!(
            "playbooks:\n  paths: []\nintegrations:\n  paths: [{}, {}]\n{extra}",
            root().join("integrations").display(),
            integrations.display()
        ),
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Copies a folder (not recursive into sub-folders' sub-folders beyond one level).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The walkthrough's playbook folder and integrations, copied into `dir` for a test to edit:
/// (playbooks folder, integrations folder).
fn walkthrough_in(dir: &Path) -> (PathBuf, PathBuf) {
    let playbooks = dir.join("playbooks");
    let integrations = dir.join("integrations");
    copy_dir(&data("playbooks/authoring"), &playbooks);
    copy_dir(&data("integrations/authoring"), &integrations);
    (playbooks, integrations)
}

/// Replaces `from` (which must be there) with `to` in `file`.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_walkthrough_validates_and_its_polling_tests_pass_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &data("integrations/authoring"), "");
    let playbooks = data("playbooks/authoring");
    let (code, out, err) = cli(&config, &["validate", playbooks.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("url-verdict"), "{out}");

    let (code, out, err) = cli(&config, &["test", playbooks.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok    url-verdict :: the verdict comes on the third poll"),
        "{out}"
    );
    assert!(
        out.contains("ok    url-verdict :: a scan that never ends fails the run after 20 polls"),
        "{out}"
    );
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
}

#[test]
fn a_polling_case_that_expects_the_wrong_thing_says_where_it_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (playbooks, integrations) = walkthrough_in(dir.path());
    let config = config(dir.path(), &integrations, "");
    let file = playbooks.join("url-verdict.yaml");
    edit(
        &file,
        "verdict: { scan_id: s-42 }",
        "verdict: { scan_id: s-41 }\n      inputs_exact:\n        submit: {}",
    );
    edit(
        &file,
        "attempts: { verdict: 3 }",
        "attempts: { verdict: 2 }",
    );
    edit(
        &file,
        "values: { url_verdict: malicious }",
        "values: { url_verdict: benign, score: 97 }",
    );
    let (code, out, _) = cli(&config, &["test", playbooks.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let start = lines
        .iter()
        .position(|l| *l == "FAIL  url-verdict :: the verdict comes on the third poll")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        lines[start + 1..start + 6],
        [
            "inputs.verdict.scan_id: expected \"s-41\", got \"s-42\"",
            "inputs_exact.submit.url: not expected, got \"https://login.example-bank.test/reset\"",
            "attempts.verdict: expected 2, got 3",
            "values.score: expected 97, but no step set it (set: [url_verdict])",
            "values.url_verdict: expected \"benign\", got \"malicious\"",
        ],
        "{out}"
    );
    assert!(out.ends_with("1 passed, 1 failed\n"), "{out}");
}

#[test]
fn each_mistake_in_a_playbook_is_reported_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (playbooks, integrations) = walkthrough_in(dir.path());
    let config = config(dir.path(), &integrations, "");
    let file = playbooks.join("url-verdict.yaml");
    // The trigger reads the severity map as a number: it would never match.
    edit(
        &file,
        "when: alert.kind == \"url.reported\"",
        "when: alert.severity >= 7",
    );
    // A misspelled field in a template, and a method given a number where the alert has text.
    edit(
        &file,
        "with: { url: \"${{ steps.target.output }}\" }",
        "with: { url: \"${{ alert.netwrk.domain }}\" }\n    if: alert.title.contains(7)",
    );
    let (code, out, err) = cli(&config, &["validate", playbooks.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let at = |place: &str| format!("{}:{place}: error: ", file.display());
    assert!(
        err.contains(&format!(
            "{}`on.when`: `>=` compares `alert.severity` (a map) with a number, which is always false\n  hint: `alert.severity` is a map: `alert.severity.native` (a string), `alert.severity.score` (a number)",
            at("5:9")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}`with.url` of step `submit`: `alert` has no field `netwrk`\n  hint: did you mean `network`?",
            at("13:29")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}`if` of step `submit`: `contains` cannot take a string and a number\n  hint: found by evaluating it on the sample `generic` alert",
            at("14:21")
        )),
        "{err}"
    );
    assert_eq!(err.matches(": error: ").count(), 3, "{err}");
}

#[test]
fn each_mistake_in_an_integration_is_reported_at_its_place_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let (playbooks, integrations) = walkthrough_in(dir.path());
    // The config sets the integration's setting: no follow-on "no such integration" error.
    let config = config(
        dir.path(),
        &integrations,
        "  settings:\n    sandbox: { visibility: public }\n",
    );
    let folder = integrations.join("sandbox");
    edit(
        &folder.join("actions.rhai"),
        "retry_later(`scan",
        "retry_latr(`scan",
    );
    edit(
        &folder.join("manifest.yaml"),
        "  scan_result:\n",
        "  cancel_scan:\n    description: Stop a scan.\n    kind: query\n    side_effect: false\n    idempotent: true\n  scan_result:\n",
    );
    let (code, out, err) = cli(&config, &["validate", playbooks.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let script = folder.join("actions.rhai");
    let manifest = folder.join("manifest.yaml");
    assert!(
        err.contains(&format!(
            "{}:22:9: error: no function `retry_latr`\n  hint: did you mean `retry_later`?",
            script.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:20:3: error: action `cancel_scan` has no function `fn cancel_scan(input)` in actions.rhai\n  hint: add `fn cancel_scan(input) {{ ... }}` to actions.rhai",
            manifest.display()
        )),
        "{err}"
    );
    assert!(!err.contains("no such integration"), "{err}");
    assert!(!err.contains(":0:0:"), "{err}");
    assert_eq!(err.matches(": error: ").count(), 2, "{err}");
}

#[test]
fn the_schema_of_a_config_knows_its_integrations_and_every_test_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &data("integrations/authoring"), "");
    let (code, out, err) = cli(&config, &["schema", "playbook"]);
    assert_eq!(code, 0, "{err}");
    let schema: Value = serde_json::from_str(&out).unwrap();
    let step = &schema["$defs"]["step"];
    let uses = step["properties"]["uses"]["anyOf"][0]["enum"]
        .as_array()
        .unwrap();
    assert!(uses.contains(&json!("sandbox.scan_result")), "{uses:?}");
    let scan = step["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["if"]["properties"]["uses"]["const"] == "sandbox.scan_result")
        .unwrap();
    assert_eq!(
        scan["then"]["properties"]["with"]["required"],
        json!(["scan_id"])
    );

    // The committed schema is the stock one: it cannot know the author's integration, and the
    // docs say how to print one that does.
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/playbook.schema.json")).unwrap(),
    )
    .unwrap();
    let stock = committed["$defs"]["step"]["properties"]["uses"]["anyOf"][0]["enum"]
        .as_array()
        .unwrap();
    assert!(!stock.contains(&json!("sandbox.scan_result")));
    for doc in ["README.md", "docs/playbooks.md", "docs/integrations.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        assert!(
            text.contains("--config config.yaml schema playbook > playbook.schema.json"),
            "{doc}"
        );
    }

    // Every status the docs name for a test case is one the schema allows.
    let statuses = committed["$defs"]["expect"]["properties"]["status"]["enum"].clone();
    let playbooks_doc = std::fs::read_to_string(root().join("docs/playbooks.md")).unwrap();
    for status in [
        "succeeded",
        "failed",
        "cancelled",
        "waiting",
        "needs_decision",
        "not_matched",
    ] {
        assert!(playbooks_doc.contains(&format!("`{status}`")), "{status}");
        assert!(
            statuses.as_array().unwrap().contains(&json!(status)),
            "{status}: {statuses}"
        );
    }
    let canned = &committed["$defs"]["test"]["properties"]["actions"]["additionalProperties"];
    assert_eq!(canned["anyOf"][1]["type"], "array", "{canned}");
}

#[test]
fn the_walkthrough_in_the_docs_is_the_tested_integration() {
    let doc = std::fs::read_to_string(root().join("docs/integrations.md")).unwrap();
    let mut shown = 0;
    let mut rest = doc.as_str();
    while let Some(at) = rest.find("<!-- file: ") {
        let after = &rest[at + "<!-- file: ".len()..];
        let (path, after) = after.split_once(" -->").unwrap();
        let fence = after.find("```").unwrap();
        let body = &after[fence..];
        let start = body.find('\n').unwrap() + 1;
        let end = body[start..].find("\n```").unwrap() + start + 1;
        let file = std::fs::read_to_string(root().join(path)).unwrap();
        assert_eq!(
            body[start..end],
            file,
            "docs/integrations.md shows {path} differently"
        );
        shown += 1;
        rest = &body[end..];
    }
    assert_eq!(shown, 3, "the manifest, the script and the playbook");
}

/// The walkthrough's sandbox API: a scan is `running` for its first two reads, then `done`.
async fn sandbox() -> (fake::FakeServer, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let server = fake::serve(
        Router::new()
            .route(
                "/v1/scans",
                post(|| async { (StatusCode::CREATED, axum::Json(json!({ "id": "s-7" }))) }),
            )
            .route(
                "/v1/scans/{id}",
                get(move |UrlPath(id): UrlPath<String>| {
                    let reads = counted.clone();
                    async move {
                        if id != "s-7" {
                            return (StatusCode::NOT_FOUND, axum::Json(json!({})));
                        }
                        let body = if reads.fetch_add(1, Ordering::SeqCst) < 2 {
                            json!({ "status": "running" })
                        } else {
                            json!({ "status": "done", "verdict": "malicious", "score": 97 })
                        };
                        (StatusCode::OK, axum::Json(body))
                    }
                }),
            ),
    )
    .await;
    (server, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_integration_polls_until_the_verdict_is_ready() {
    let (api, _) = sandbox().await;
    let files = tempfile::tempdir().unwrap();
    let (playbooks, integrations) = walkthrough_in(files.path());
    // Polls 20 ms apart instead of 15 s: the same retries, in test time.
    edit(
        &playbooks.join("url-verdict.yaml"),
        "backoff: 15s, max_delay: 1m",
        "backoff: 20ms, max_delay: 40ms",
    );
    let extra = format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\nplaybooks:\n  paths: [{}]\nintegrations:\n  paths: [{}]\n  credentials:\n    sandbox:\n      token: sandbox-token-1\n      endpoints: {{ api.sandbox.example: \"{}\" }}\n  settings:\n    sandbox: {{ visibility: public }}\n",
        playbooks.display(),
        integrations.display(),
        api.base
    );
    let server = TestServer::start_with(&extra).await;
    let body = std::fs::read(playbooks.join("fixtures/url-reported.json")).unwrap();
    let answer = server.accept("generic", body).await;
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;
    let shown = server.wait_run(&run, "finished", finished).await;
    let steps = &shown["run"]["steps"];
    assert_eq!(shown["run"]["status"], "succeeded", "{shown}");
    assert_eq!(steps["verdict"]["attempts"], 3, "{steps}");
    assert_eq!(steps["verdict"]["output"]["verdict"], "malicious");

    let requests = api.requests();
    let lines: Vec<String> = requests.iter().map(|r| r.line()).collect();
    assert_eq!(
        lines,
        [
            "POST /v1/scans",
            "GET /v1/scans/s-7",
            "GET /v1/scans/s-7",
            "GET /v1/scans/s-7"
        ]
    );
    // The host added the bearer token; the script sent the setting from the config.
    assert_eq!(
        requests[0].headers["authorization"],
        "Bearer sandbox-token-1"
    );
    let submitted: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        submitted,
        json!({ "url": "https://login.example-bank.test/reset", "visibility": "public" })
    );
    // The verdict is on the incident, where core.set put it.
    let incident = shown["run"]["incident_id"].as_str().unwrap();
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    assert_eq!(
        shown["incident"]["values"]["url_verdict"], "malicious",
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_when_that_fails_at_run_time_is_counted_per_playbook() {
    let files = tempfile::tempdir().unwrap();
    // Valid (the sample generic alert has a description), but an alert without one makes
    // `().len()` fail at run time.
    std::fs::write(
        files.path().join("long.yaml"),
        "id: long-description\nname: Long descriptions\non:\n  source: generic\n  when: alert.description.len() > 10\nsteps:\n  - id: say\n    uses: core.log\n    with: { message: long }\n",
    )
    .unwrap();
    let extra = format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\nplaybooks:\n  paths: [{}]\n",
        files.path().display()
    );
    let server = TestServer::start_with(&extra).await;
    for n in 0..2 {
        let alert = json!({ "title": format!("no description {n}"), "resource": { "kind": "host", "id": format!("h-{n}") } });
        server.accept("generic", alert.to_string()).await;
    }
    let line = "cordon_playbook_when_errors_total{playbook=\"long-description\"} 2";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = server.metrics().await;
        if metrics.contains(line) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{line}` in\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let runs = server.admin("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "{runs}");
}
