//! The runtime against a real local HTTP server and integration folders written by the tests.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::json;

use super::*;
use crate::config::IntegrationsConfig;

type Seen = Arc<Mutex<Vec<String>>>;

/// A server standing in for `api.example.com` (and an EC2 endpoint), recording what it was asked.
async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/v1/ip",
            get(
                |State(seen): State<Seen>,
                 headers: HeaderMap,
                 Query(q): Query<BTreeMap<String, String>>| async move {
                    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
                    seen.lock().unwrap().push(format!("ip {} key={key:?}", q["address"]));
                    axum::Json(json!({ "address": q["address"], "score": 87 }))
                },
            ),
        )
        .route(
            "/busy",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        )
        .route(
            "/",
            post(|State(seen): State<Seen>, body: String| async move {
                seen.lock().unwrap().push(body);
                (
                    StatusCode::BAD_REQUEST,
                    "<?xml version=\"1.0\"?><Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>The instance ID 'i-0' does not exist</Message></Error></Errors><RequestID>x</RequestID></Response>",
                )
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

const MANIFEST: &str = r#"name: probe
description: A test integration.
auth: { kind: api_key, credentials: probe, header: X-Api-Key }
hosts: [api.example.com, "ec2.*.amazonaws.com"]
settings:
  threshold: { description: score above which an address is bad, default: 50 }
actions:
  check:
    description: Look an address up.
    kind: enrichment
    side_effect: false
    idempotent: true
    inputs:
      address: { type: string, required: true, pattern: "[0-9.]+" }
  elsewhere:
    description: Calls a host the manifest does not list.
    kind: query
    side_effect: false
    idempotent: true
  busy:
    description: Calls a server that is overloaded.
    kind: query
    side_effect: false
    idempotent: true
  refuse:
    description: Throws.
    kind: query
    side_effect: false
    idempotent: true
  later:
    description: Asks to be retried.
    kind: query
    side_effect: false
    idempotent: true
  describe:
    description: An EC2 call that fails.
    kind: query
    side_effect: false
    idempotent: true
  collect:
    description: Returns evidence.
    kind: evidence
    side_effect: true
    idempotent: true
  block:
    description: Reads, then writes unless it is a dry run.
    kind: notify
    side_effect: true
    idempotent: true
    plans: true
    inputs:
      address: { type: string, required: true }
  careless:
    description: Writes even in a dry run.
    kind: notify
    side_effect: true
    idempotent: true
    plans: true
"#;

const SCRIPT: &str = r#"
fn check(input) {
    let r = http(#{ url: "https://api.example.com/v1/ip", query: #{ address: input.address } });
    #{ score: r.json.score, bad: r.json.score > setting("threshold"), status: r.status }
}
fn elsewhere(input) { http(#{ url: "https://evil.example.net/steal" }) }
fn busy(input) { http(#{ url: "https://api.example.com/busy" }) }
fn refuse(input) { throw "the address is reserved" }
fn later(input) { retry_later("not yet") }
fn describe(input) {
    aws_query(#{ url: "https://ec2.eu-west-1.amazonaws.com/", action: "DescribeInstances",
                 version: "2016-11-15", params: #{ "InstanceId.1": "i-0" } })
}
fn block(input) {
    let seen = http(#{ url: "https://api.example.com/v1/ip", query: #{ address: input.address } });
    let rule = #{ deny: input.address, score: seen.json.score };
    if dry_run() { return #{ plan: [rule], evidence: [#{ kind: "note", location: "memo://plan" }] }; }
    http(#{ method: "POST", url: "https://api.example.com/", body: json_encode(rule) });
    #{ blocked: rule }
}
fn careless(input) {
    aws_query(#{ url: "https://ec2.eu-west-1.amazonaws.com/", action: "TerminateInstances",
                 version: "2016-11-15", params: #{ "InstanceId.1": "i-0" } })
}
fn collect(input) {
    #{ evidence: [#{ kind: "note", location: "memo://1", sha256: sha256_hex("abc") }] }
}
"#;

fn write(dir: &Path, name: &str, manifest: &str, script: &str) -> std::path::PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("manifest.yaml"), manifest).unwrap();
    std::fs::write(folder.join("actions.rhai"), script).unwrap();
    folder
}

fn config(dir: &Path, base: &str) -> IntegrationsConfig {
    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    probe:\n      api_key: probe-key-123\n      endpoints:\n        api.example.com: {base}\n        \"*.amazonaws.com\": {base}\n",
        dir.display()
    );
    crate::config::parse(&text, Path::new("test.yaml"))
        .unwrap()
        .integrations
}

fn call() -> ActionCall {
    ActionCall {
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        playbook: "p".into(),
        incident_id: None,
        idempotency_key: "run-1:step-1".into(),
        dry_run: false,
        account: None,
    }
}

async fn loaded() -> (Integrations, Seen, tempfile::TempDir) {
    let (base, seen) = server().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "probe", MANIFEST, SCRIPT);
    let integrations = Integrations::load(&config(dir.path(), &base), reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("{d:?}"));
    (integrations, seen, dir)
}

#[tokio::test]
async fn an_action_reaches_its_host_through_the_endpoint_with_the_key_applied() {
    let (integrations, seen, _dir) = loaded().await;
    let out = integrations
        .call("probe.check", json!({ "address": "203.0.113.7" }), &call())
        .await
        .unwrap();
    assert_eq!(out, json!({ "score": 87, "bad": true, "status": 200 }));
    assert_eq!(
        *seen.lock().unwrap(),
        ["ip 203.0.113.7 key=Some(\"probe-key-123\")"]
    );
}

#[tokio::test]
async fn inputs_are_checked_before_the_script_runs() {
    let (integrations, seen, _dir) = loaded().await;
    let error = integrations
        .call("probe.check", json!({ "address": "not an ip" }), &call())
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "input `address` of `probe.check` must match the pattern `[0-9.]+`"
    );
    let error = integrations
        .call("probe.check", json!({}), &call())
        .await
        .unwrap_err();
    assert_eq!(error.message, "`probe.check` needs input `address`");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_host_outside_the_manifest_is_refused_and_never_contacted() {
    let (integrations, seen, _dir) = loaded().await;
    let error = integrations
        .call("probe.elsewhere", json!({}), &call())
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "host `evil.example.net` is not in the hosts of integration `probe`"
    );
    assert!(!error.retryable);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failures_say_whether_to_try_again() {
    let (integrations, _, _dir) = loaded().await;
    let busy = integrations
        .call("probe.busy", json!({}), &call())
        .await
        .unwrap_err();
    assert!(busy.retryable, "{busy:?}");
    assert!(busy.message.contains("503"), "{busy:?}");
    let refused = integrations
        .call("probe.refuse", json!({}), &call())
        .await
        .unwrap_err();
    assert_eq!(refused, ActionError::permanent("the address is reserved"));
    let later = integrations
        .call("probe.later", json!({}), &call())
        .await
        .unwrap_err();
    assert_eq!(later, ActionError::retryable("not yet"));
}

#[tokio::test]
async fn an_aws_error_reads_as_its_code_and_message() {
    let (integrations, seen, _dir) = loaded().await;
    let error = integrations
        .call("probe.describe", json!({}), &call())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ActionError::permanent(
            "AWS InvalidInstanceID.NotFound: The instance ID 'i-0' does not exist"
        )
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["Action=DescribeInstances&InstanceId.1=i-0&Version=2016-11-15"]
    );
}

#[tokio::test]
async fn evidence_records_are_completed_with_where_they_came_from() {
    let (integrations, _, _dir) = loaded().await;
    let out = integrations
        .call("probe.collect", json!({}), &call())
        .await
        .unwrap();
    let record = &out["evidence"][0];
    assert_eq!(record["kind"], "note");
    assert_eq!(record["location"], "memo://1");
    assert_eq!(
        record["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(record["run_id"], "run-1");
    assert_eq!(record["step_id"], "step-1");
    assert_eq!(record["action"], "probe.collect");
    assert!(record["collected_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn an_integration_without_its_credentials_loads_but_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "probe", MANIFEST, SCRIPT);
    let config = IntegrationsConfig {
        paths: vec![dir.path().to_owned()],
        ..IntegrationsConfig::default()
    };
    let integrations = Integrations::load(&config, reqwest::Client::new(), None).unwrap();
    let error = integrations
        .call("probe.check", json!({ "address": "1.2.3.4" }), &call())
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "integration `probe` has no credentials: set integrations.credentials.probe in the config"
    );
}

const LOCAL_MANIFEST: &str = r#"name: local
description: Reaches whatever URL it is given, among its hosts.
auth: { kind: none, credentials: lab }
hosts: [localhost, "127.0.0.1", internal.example]
actions:
  peek:
    description: GETs a URL.
    kind: query
    side_effect: false
    idempotent: true
    inputs:
      url: { type: string, required: true }
"#;

/// A manifest may list any host, but its scripts reach internal addresses only through an
/// endpoint override the operator wrote.
#[tokio::test]
async fn a_script_reaches_an_internal_address_only_through_an_endpoint_override() {
    let (base, seen) = server().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "local",
        LOCAL_MANIFEST,
        "fn peek(input) { http(#{ url: input.url }).json }",
    );
    let config = IntegrationsConfig {
        paths: vec![dir.path().to_owned()],
        ..IntegrationsConfig::default()
    };
    let integrations = Integrations::load(&config, reqwest::Client::new(), None).unwrap();
    for (url, says) in [
        (
            format!("http://localhost:{port}/v1/ip?address=1"),
            "`localhost` is",
        ),
        (
            format!("http://127.0.0.1:{port}/v1/ip?address=1"),
            "`127.0.0.1` is 127.0.0.1",
        ),
    ] {
        let error = integrations
            .call("local.peek", json!({ "url": url }), &call())
            .await
            .unwrap_err();
        assert!(
            error.message.contains(says)
                && error.message.contains("a loopback address")
                && error
                    .message
                    .contains("integrations.credentials.<name>.endpoints")
                && !error.retryable,
            "{}",
            error.message
        );
    }
    assert!(seen.lock().unwrap().is_empty(), "a request was sent");

    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    lab:\n      endpoints: {{ internal.example: \"{base}\" }}\n",
        dir.path().display()
    );
    let config = crate::config::parse(&text, Path::new("test.yaml"))
        .unwrap()
        .integrations;
    let integrations = Integrations::load(&config, reqwest::Client::new(), None).unwrap();
    let out = integrations
        .call(
            "local.peek",
            json!({ "url": "http://internal.example/v1/ip?address=2" }),
            &call(),
        )
        .await
        .unwrap();
    assert_eq!(out["score"], 87);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A manifest that aliases its way to millions of values is refused at the alias that goes over.
#[test]
fn an_alias_bomb_in_a_manifest_is_a_located_error() {
    let mut text = String::from(
        "name: bomb\ndescription: x\nsettings:\n  region:\n    default:\n      - &l0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..9 {
        let p = i - 1;
        text.push_str(&format!(
            "      - &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        ));
    }
    let folder = Path::new("/nonexistent/bomb");
    let problems =
        manifest::Manifest::parse(&text, folder, &folder.join("manifest.yaml")).unwrap_err();
    let found: Vec<String> = problems
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        [
            "10:49: not valid YAML: the document holds more than 100000 values once aliases are expanded"
        ]
    );
}

#[test]
fn manifest_mistakes_are_reported_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "name: other\ndescription: x\nactions:\n  isolate:\n    description: x\n    kind: containment\n    side_effect: true\n    idempotent: true\n  lookup:\n    description: x\n    kind: query\n    side_effect: false\n    idempotent: true\n    undo: nothing\n";
    write(dir.path(), "broken", manifest, "fn isolate(input) { 1 }");
    let config = IntegrationsConfig {
        paths: vec![dir.path().to_owned()],
        ..IntegrationsConfig::default()
    };
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    let found: Vec<String> = problems
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        [
            "1:7: the integration is named `other` but its folder is `broken`",
            "6:5: containment action `isolate` must name its `undo` action",
            "14:11: the undo of `lookup` is `nothing`, which is not an action of this integration",
        ]
    );

    let manifest = "name: broken\ndescription: x\nactions:\n  lookup:\n    description: x\n    kind: query\n    side_effect: false\n    idempotent: true\n";
    write(
        dir.path(),
        "broken",
        manifest,
        "fn lookup() { 1 }\nfn other(input) { let x = ; }",
    );
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].line, problems[0].column),
        (2, 27),
        "{problems:?}"
    );
    assert!(problems[0].file.ends_with("broken/actions.rhai"));

    write(dir.path(), "broken", manifest, "fn lookup() { 1 }");
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    let found: Vec<String> = problems
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    // At the action's line in the manifest, where it is declared.
    assert_eq!(
        found,
        ["4:3: action `lookup` has no function `fn lookup(input)` in actions.rhai"]
    );
    assert!(problems[0].file.ends_with("broken/manifest.yaml"));
    assert_eq!(
        problems[0].hint.as_deref(),
        Some(
            "actions.rhai has `fn lookup()`; an action's function takes one parameter, the inputs"
        )
    );
}

#[test]
fn a_script_calls_only_functions_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "name: poller\ndescription: x\nactions:\n  poll:\n    description: x\n    kind: query\n    side_effect: false\n    idempotent: true\n";
    let script = "fn poll(input) {\n    let r = #{ done: false };\n    if !r.done { retry_latr(\"still running\"); }\n    helper(1, 2)\n}\nfn helper(a) { a }\n";
    write(dir.path(), "poller", manifest, script);
    let config = IntegrationsConfig {
        paths: vec![dir.path().to_owned()],
        ..IntegrationsConfig::default()
    };
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    let found: Vec<String> = problems
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        [
            "3:18: no function `retry_latr`",
            "4:5: `helper` takes 1 argument, not 2",
        ]
    );
    assert!(problems[0].file.ends_with("poller/actions.rhai"));
    assert_eq!(
        problems[0].hint.as_deref(),
        Some("did you mean `retry_later`?")
    );
}

#[test]
fn settings_of_a_broken_integration_are_not_reported_as_for_no_integration() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "name: poller\ndescription: x\nsettings:\n  every: { default: 30 }\nactions:\n  poll:\n    description: x\n    kind: query\n    side_effect: false\n    idempotent: true\n";
    write(
        dir.path(),
        "poller",
        manifest,
        "fn poll(input) { retry_latr(\"x\") }",
    );
    let text = format!(
        "integrations:\n  paths: [{}]\n  settings:\n    poller: {{ every: 60 }}\n",
        dir.path().display()
    );
    let config = crate::config::parse(&text, Path::new("test.yaml"))
        .unwrap()
        .integrations;
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    let found: Vec<String> = problems
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {}",
                d.file.display(),
                d.line,
                d.column,
                d.message
            )
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].ends_with("poller/actions.rhai:1:18: no function `retry_latr`"),
        "{found:#?}"
    );

    // Settings for an integration that is not there at all are still reported.
    let text = text.replace("    poller:", "    pollr:");
    let config = crate::config::parse(&text, Path::new("test.yaml"))
        .unwrap()
        .integrations;
    let problems = Integrations::load(&config, reqwest::Client::new(), None).unwrap_err();
    assert!(
        problems.iter().any(|d| d
            .message
            .contains("settings for `pollr`, but no such integration")),
        "{problems:#?}"
    );
}

#[test]
fn the_stock_integrations_load_with_every_call_checked() {
    let config = IntegrationsConfig {
        paths: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations")],
        ..IntegrationsConfig::default()
    };
    let loaded = Integrations::load(&config, reqwest::Client::new(), None)
        .unwrap_or_else(|problems| panic!("{}", crate::config::Diagnostics(problems)));
    assert!(loaded.names().count() >= 10);
}

#[tokio::test]
async fn a_dry_run_reads_and_plans_but_never_writes() {
    let (integrations, seen, _dir) = loaded().await;
    let dry = ActionCall {
        dry_run: true,
        ..call()
    };
    let plan = integrations
        .call("probe.block", json!({ "address": "203.0.113.7" }), &dry)
        .await
        .unwrap();
    assert_eq!(
        plan["plan"],
        json!([{ "deny": "203.0.113.7", "score": 87 }])
    );
    // A plan's evidence is what would be collected: nothing is recorded as collected.
    assert!(plan["evidence"][0].get("run_id").is_none(), "{plan}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["ip 203.0.113.7 key=Some(\"probe-key-123\")"]
    );

    // An action that writes anyway is stopped before the request leaves.
    let error = integrations
        .call("probe.careless", json!({}), &dry)
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains("dry run: aws_query TerminateInstances was not sent"),
        "{error:?}"
    );
    assert!(!error.retryable);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the read reached the server"
    );

    // The same action outside a dry run writes.
    integrations
        .call("probe.block", json!({ "address": "203.0.113.7" }), &call())
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2], r#"{"deny":"203.0.113.7","score":87}"#);
}

#[tokio::test]
async fn a_sigv4_request_signs_for_the_service_it_names_and_only_sigv4_may_name_one() {
    let scopes: Seen = Arc::default();
    let app = Router::new()
        .fallback(
            |State(scopes): State<Seen>, headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let scope = auth
                    .split("Credential=")
                    .nth(1)
                    .and_then(|c| c.split(',').next())
                    .unwrap_or_default();
                scopes.lock().unwrap().push(scope.to_owned());
                "{}"
            },
        )
        .with_state(scopes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "forensics",
        r#"name: forensics
description: Calls SSM, and S3 with the same identity.
auth: { kind: aws_sigv4, credentials: aws, service: ssm }
hosts: ["ssm.*.amazonaws.com", "s3.*.amazonaws.com"]
actions:
  send:
    description: One request.
    kind: query
    side_effect: false
    idempotent: true
    inputs:
      url: { type: string, required: true }
      service: { type: string }
"#,
        r#"
fn send(input) {
    let request = #{ url: input.url };
    if "service" in input { request.service = input.service; }
    http(request).status
}
"#,
    );
    write(
        dir.path(),
        "keyed",
        r#"name: keyed
description: An API-key integration.
auth: { kind: api_key, credentials: keyed }
hosts: ["s3.*.amazonaws.com"]
actions:
  send:
    description: One request naming a signing service.
    kind: query
    side_effect: false
    idempotent: true
"#,
        r#"fn send(input) { http(#{ url: "https://s3.eu-west-1.amazonaws.com/b", service: "s3" }).status }"#,
    );
    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    keyed:\n      api_key: k-1\n      endpoints:\n        \"*.amazonaws.com\": {base}\n    aws:\n      access_key_id: AKIDEXAMPLE\n      secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n      endpoints:\n        \"*.amazonaws.com\": {base}\n",
        dir.path().display()
    );
    let config = crate::config::parse(&text, Path::new("test.yaml")).unwrap();
    let integrations = Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("{d:?}"));
    let run = async |inputs: Value| integrations.call("forensics.send", inputs, &call()).await;

    run(json!({ "url": "https://ssm.eu-west-1.amazonaws.com/" }))
        .await
        .unwrap();
    run(json!({ "url": "https://s3.eu-west-1.amazonaws.com/bucket/key", "service": "s3" }))
        .await
        .unwrap();
    let scopes_now = scopes.lock().unwrap().clone();
    assert_eq!(scopes_now.len(), 2);
    assert!(
        scopes_now[0].ends_with("/eu-west-1/ssm/aws4_request"),
        "{scopes_now:?}"
    );
    assert!(
        scopes_now[1].ends_with("/eu-west-1/s3/aws4_request"),
        "{scopes_now:?}"
    );

    // A name that is not a service's is refused before anything is sent...
    let refused =
        run(json!({ "url": "https://s3.eu-west-1.amazonaws.com/b", "service": "S3/../iam" }))
            .await
            .unwrap_err();
    assert!(!refused.retryable);
    assert!(
        refused.message.contains("is not an AWS service name"),
        "{refused:?}"
    );
    // ... and so is a host outside the manifest, whatever service it names.
    let refused = run(json!({ "url": "https://iam.amazonaws.com/", "service": "iam" }))
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("is not in the hosts"),
        "{refused:?}"
    );
    assert_eq!(scopes.lock().unwrap().len(), 2, "nothing more was sent");

    // An integration with another kind of auth cannot name a signing service.
    let refused = integrations
        .call("keyed.send", json!({}), &call())
        .await
        .unwrap_err();
    assert!(!refused.retryable);
    assert!(
        refused.message.contains("auth is not aws_sigv4"),
        "{refused:?}"
    );
    assert_eq!(scopes.lock().unwrap().len(), 2);
}
