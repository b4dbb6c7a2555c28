//! The real `cordon` binary killed with SIGKILL while runs wait on approval and while side-effect
//! steps are in flight: after a restart, waiting runs still wait and take decisions, the idempotent
//! step is retried, the non-idempotent one is held as `needs_decision`; the CLI decides; the audit
//! chain verifies, and a tampered entry is caught.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    ADMIN_TOKEN, Client, FakeApi, INTAKE_TOKEN, Process, cli, cli_with, data, wait_until,
    write_playbook,
};

/// How long the crash tests wait for runs to reach a state.
const WAIT: Duration = Duration::from_secs(15);

fn playbook(id: &str, kind: &str, step: &str) -> String {
    format!(
        "id: {id}\nname: {id}\non:\n  source: generic\n  when: alert.kind == \"{kind}\"\nsteps:\n{step}"
    )
}

fn setup(dir: &Path, api: &str) -> PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "wait",
        &playbook(
            "wait",
            "wait",
            "  - id: ok\n    approval:\n      prompt: go?\n      approvers: soc\n  - id: after\n    uses: core.log\n    with: { message: approved }\n",
        ),
    );
    write_playbook(
        &playbooks,
        "post",
        &playbook(
            "post",
            "post",
            &format!(
                "  - id: call\n    uses: core.http\n    with: {{ url: \"{api}/post\", method: POST }}\n  - id: after\n    uses: core.log\n    with: {{ message: done }}\n"
            ),
        ),
    );
    write_playbook(
        &playbooks,
        "get",
        &playbook(
            "get",
            "get",
            &format!(
                "  - id: call\n    uses: core.http\n    with: {{ url: \"{api}/get\", method: GET }}\n"
            ),
        ),
    );
    let config = dir.join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\nplaybooks:\n  paths: [{}]\n  http_allow: {{ post: [\"127.0.0.1\"], get: [\"127.0.0.1\"] }}\napprovers:\n  soc: [cli:alice]\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
            dir.join("store").display(),
            playbooks.display()
        ),
    )
    .unwrap();
    config
}

async fn post_alert(server: &Client, kind: &str) -> String {
    let body = json!({ "title": kind, "kind": kind, "severity": 7, "resource": { "kind": "host", "id": format!("host-{kind}") } });
    let answer = server.accept("generic", body.to_string()).await;
    answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned()
}

async fn runs(server: &Client) -> Vec<Value> {
    server.admin("/v1/runs?limit=100").await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

fn run_of<'a>(runs: &'a [Value], playbook: &str) -> &'a Value {
    runs.iter()
        .find(|r| r["playbook"] == playbook)
        .unwrap_or_else(|| panic!("no {playbook} run in {runs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_sigkill_and_side_effects_are_never_repeated_in_silence() {
    let api = FakeApi::start(Duration::from_secs(60)).await; // holds requests: in flight at the kill
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &api.base);
    let server = Process::start(&config);
    for kind in ["wait", "post", "get"] {
        post_alert(&server, kind).await;
    }
    wait_until(
        WAIT,
        || "the approval wait and both calls in flight".into(),
        async || {
            let r = runs(&server).await;
            r.len() == 3
                && run_of(&r, "wait")["status"] == "waiting"
                && api.count("POST /post") == 1
                && api.count("GET /get") == 1
        },
    )
    .await;

    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    api.delay_ms.store(0, Ordering::SeqCst);
    let server = Process::start(&config);

    wait_until(
        WAIT,
        || "the runs to settle after the restart".into(),
        async || {
            let r = runs(&server).await;
            run_of(&r, "get")["status"] == "succeeded"
                && run_of(&r, "post")["status"] == "needs_decision"
        },
    )
    .await;
    let r = runs(&server).await;
    assert_eq!(
        run_of(&r, "wait")["status"],
        "waiting",
        "a waiting run still waits"
    );
    assert_eq!(api.count("GET /get"), 2, "the idempotent GET was retried");
    assert_eq!(api.count("POST /post"), 1, "the POST was not repeated");
    let post = run_of(&r, "post");
    assert_eq!(post["steps"]["call"]["status"], "needs_decision");
    assert!(
        post["steps"]["call"]["error"]
            .as_str()
            .unwrap()
            .contains("not idempotent")
    );

    // People decide through the CLI, which finds the running server.
    let wait_id = run_of(&r, "wait")["id"].as_str().unwrap().to_owned();
    let alice = server.token_of("cli:alice").await;
    let alice = Some(alice.as_str());
    let (code, out, err) = cli_with(&config, alice, &["approve", &wait_id, "ok"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved"), "{out}");
    let (code, _, err) = cli_with(
        &config,
        alice,
        &["approve", &wait_id, "ok", "--as", "cli:alice"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already decided by cli-alice"), "{err}");
    let post_id = post["id"].as_str().unwrap().to_owned();
    let (code, out, err) = cli_with(
        &config,
        alice,
        &["runs", "resolve", &post_id, "call", "--skip"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        WAIT,
        || "both runs to succeed".into(),
        async || {
            let r = runs(&server).await;
            run_of(&r, "wait")["status"] == "succeeded"
                && run_of(&r, "post")["status"] == "succeeded"
        },
    )
    .await;
    assert_eq!(api.count("POST /post"), 1);

    let (code, out, err) = cli_with(&config, alice, &["runs", "show", &post_id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("step.skipped_by_person") && out.contains("cli-alice"),
        "{out}"
    );
    let (code, out, err) = cli_with(&config, alice, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain intact"), "{out}");

    // Tamper with one stored audit entry while the server is down: verify names it.
    drop(server);
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        let audit = db.open_tree("audit").unwrap();
        let (key, value) = audit.iter().nth(3).unwrap().unwrap();
        let text = String::from_utf8(value.to_vec())
            .unwrap()
            .replace("\"kind\":\"", "\"kind\":\"x");
        audit.insert(key, text.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let (code, out, _) = cli(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 4:") && out.contains("BROKEN"), "{out}");
}

#[test]
fn cordon_test_passes_the_stock_playbooks_and_a_wrong_expectation_fails_readably() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = cli(
        Path::new("no-config.yaml"),
        &["test", root.join("playbooks").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().last().unwrap().ends_with(" passed, 0 failed"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("playbooks/generic-triage.yaml")).unwrap();
    let broken = text.replacen(
        "outputs: { priority: P1, paged: true,",
        "outputs: { priority: P2, paged: true,",
        1,
    );
    assert_ne!(text, broken);
    std::fs::write(dir.path().join("triage.yaml"), broken).unwrap();
    std::fs::create_dir_all(dir.path().join("fixtures")).unwrap();
    for f in std::fs::read_dir(root.join("playbooks/fixtures")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("fixtures").join(f.file_name().unwrap())).unwrap();
    }
    let (code, out, _) = cli(
        Path::new("no-config.yaml"),
        &["test", dir.path().to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  generic-triage :: a P1 pages when the on-call approves"),
        "{out}"
    );
    assert!(
        out.contains("outputs.priority: expected \"P2\", got \"P1\""),
        "{out}"
    );
    assert!(out.contains(" passed, 1 failed"), "{out}");
}

#[test]
fn validate_locates_every_broken_playbook_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        "approvers:\n  soc-l1: [cli:alice]\n  soc-l2: [cli:bob]\n",
    )
    .unwrap();
    let broken = data("playbooks/broken");
    let (code, out, err) = cli(&config, &["validate", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let mut checked = 0;
    for file in std::fs::read_dir(&broken).unwrap() {
        let file = file.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .expect("first line names the expected error");
        let (location, fragment) = expect.split_once(' ').unwrap();
        let want = format!("{}:{location}: error: ", file.display());
        let line = err
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no error at {want}\n{err}"));
        assert!(line.contains(fragment), "{line} lacks `{fragment}`");
        checked += 1;
    }
    assert!(checked >= 15, "one fixture per error kind");
    let good = data("playbooks/good");
    let (code, out, err) = cli(&config, &["validate", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("guardduty-triage"), "{out}");
    std::fs::write(
        &config,
        "approvers:
  soc-l1: [cli:alice]
",
    )
    .unwrap();
    let (code, _, err) = cli(&config, &["validate", good.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown approver group `soc-l2`") && err.contains("did you mean `soc-l1`?"),
        "{err}"
    );
}

#[test]
fn the_committed_schema_matches_the_playbook_format() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, _) = cli(Path::new("none.yaml"), &["schema", "playbook"]);
    assert_eq!(code, 0);
    let generated: Value = serde_json::from_str(&out).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/playbook.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        generated, committed,
        "regenerate docs/playbook.schema.json with `cordon schema playbook`"
    );
    assert_eq!(generated["properties"]["steps"]["type"], "array");
}

#[test]
fn actions_describe_themselves() {
    let (code, out, _) = cli(Path::new("none.yaml"), &["actions", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("core.http  (side effect, not idempotent)"),
        "{out}"
    );
    assert!(out.contains("url          string  required"), "{out}");
    let (code, out, _) = cli(Path::new("none.yaml"), &["actions", "list", "--json"]);
    assert_eq!(code, 0);
    let specs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = specs.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names[..4],
        ["core.log", "core.http", "core.sleep", "core.set"]
    );
    // Every action named in the playbook schema is listed, and the other way round.
    let (_, schema, _) = cli(Path::new("none.yaml"), &["schema", "playbook"]);
    for name in names {
        assert!(
            schema.contains(&format!("\"{name}\"")),
            "{name} missing from the schema"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_playbooks() {
    let api = FakeApi::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &api.base);
    let server = Process::start(&config);
    let trigger = async || server.act("/v1/playbooks/later/runs", "cli:alice").await.0;
    assert_eq!(trigger().await, 404, "not loaded yet");
    write_playbook(
        &dir.path().join("playbooks"),
        "later",
        "id: later\nname: Later\nsteps:\n  - id: say\n    uses: core.log\n    with: { message: hi }\n",
    );
    server.signal("-HUP");
    let mut status = 0;
    // Up to 20 s: a reload compiles every playbook and integration, slow on a busy machine.
    for _ in 0..400 {
        status = trigger().await;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 202, "SIGHUP loaded the new playbook");
}
