//! The Azure integrations (`integrations/azure-compute`, `integrations/azure-entra`) against the
//! fake in `support/azure.rs`, which follows the published shapes of:
//!
//! - the Entra ID v2.0 token endpoint (client credentials);
//! - Microsoft.Compute `virtualMachines` at api-version **2024-07-01**;
//! - Microsoft.Compute `disks` and `snapshots` at api-version **2024-03-02** (the Disk resource
//!   provider's own versions);
//! - Microsoft.Network `networkInterfaces` and `networkSecurityGroups` at api-version
//!   **2024-05-01**;
//! - Microsoft Graph **v1.0** `users`.
//!
//! The fake refuses any other api-version with ARM's `InvalidApiVersionParameter`, and ARM or Graph
//! calls without a token issued for their audience. Each action is checked by the state it leaves
//! in the fake; the stock playbooks `azure-vm-compromise` runs end to end through the real server.

mod support;

use std::path::{Path, PathBuf};

use cordon::engine::exec::{ActionCall, ActionError, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use support::azure::{ARM_SCOPE, CLIENT_SECRET, FakeAzure, GRAPH_SCOPE, SeededVm, VmSeed};
use support::*;

const SUB: &str = "20ff7fc3-e762-44dd-bd96-b71116dcdc23";
const USER: &str = "6e7b768e-07e2-4810-8459-485f84f8f204";
const UPN: &str = "adele.vance@contoso.com";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The `integrations:` section loading the two Azure integrations, pointed at the fake.
fn integrations_yaml(fake: &FakeAzure, secret: &str, settings: &str) -> String {
    format!(
        "integrations:\n  paths: [{}, {}]\n  credentials:\n{}{settings}",
        repo("integrations/azure-compute").display(),
        repo("integrations/azure-entra").display(),
        fake.credentials_yaml(secret)
    )
}

fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load(fake: &FakeAzure, secret: &str, settings: &str) -> Integrations {
    let text = integrations_yaml(fake, secret, settings);
    let config = cordon::config::parse(&text, Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("config: {d}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("integrations load: {d:?}"))
}

fn call_for(step: &str) -> ActionCall {
    ActionCall {
        run_id: "run-1".into(),
        step_id: step.into(),
        playbook: "test".into(),
        incident_id: Some("inc-1".into()),
        idempotency_key: format!("run-1:{step}"),
        dry_run: false,
    }
}

/// How the tests call an action, as step `step` of run `run-1`.
trait Call {
    async fn run(&self, action: &str, inputs: Value, step: &str) -> Result<Value, ActionError>;

    /// The output of a call that must succeed.
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

/// The VM the Defender for Cloud fixture names: `vm1` in `myRg1` of [`SUB`], in West Europe.
fn seed_vm1(fake: &FakeAzure) -> SeededVm {
    fake.seed_vm(VmSeed {
        subscription: SUB,
        resource_group: "myRg1",
        name: "vm1",
        location: "westeurope",
    })
}

/// The inputs naming the VM.
fn vm_id(vm: &SeededVm) -> Value {
    json!({ "vm_id": vm.id })
}

async fn setup() -> (FakeAzure, SeededVm, Integrations) {
    let fake = FakeAzure::start().await;
    let vm = seed_vm1(&fake);
    fake.seed_user_json(read_json("integrations/azure-entra/fixtures/user.json"));
    let integrations = load(&fake, CLIENT_SECRET, "");
    (fake, vm, integrations)
}

fn quarantine_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/myRg1/providers/Microsoft.Network/networkSecurityGroups/{name}"
    )
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

// ---- azure-compute ------------------------------------------------------------------------------

#[tokio::test]
async fn isolate_vm_puts_every_nic_on_a_deny_all_group_and_release_puts_them_back() {
    let (fake, vm, integrations) = setup().await;
    let out = integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;

    let quarantine = quarantine_id("cordon-quarantine");
    assert!(
        same(out["quarantine_nsg"].as_str().unwrap(), &quarantine),
        "{out}"
    );
    assert_eq!(out["quarantine_nsg_created"], true);
    for nic in &vm.nics {
        let nsg = fake.nic_nsg(nic).expect("the NIC has a group");
        assert!(same(&nsg, &quarantine), "{nic} is on {nsg}");
    }
    // The group denies everything both ways, before every default rule.
    let nsg = fake
        .resource(&quarantine)
        .expect("the quarantine group exists");
    assert_eq!(nsg["location"], "westeurope");
    assert_eq!(nsg["tags"]["cordon-purpose"], "quarantine");
    assert_eq!(
        fake.bodies("/providers/Microsoft.Network/networkSecurityGroups/"),
        [read_json(
            "integrations/azure-compute/fixtures/quarantine-nsg.put.json"
        )],
        "the group is created as the fixture shows"
    );
    let rules = nsg["properties"]["securityRules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    for direction in ["Inbound", "Outbound"] {
        let rule = rules
            .iter()
            .find(|r| r["properties"]["direction"] == direction)
            .unwrap_or_else(|| panic!("no {direction} rule"));
        let p = &rule["properties"];
        assert_eq!(
            (
                &p["access"],
                &p["protocol"],
                &p["sourceAddressPrefix"],
                &p["destinationAddressPrefix"],
                &p["sourcePortRange"],
                &p["destinationPortRange"]
            ),
            (
                &json!("Deny"),
                &json!("*"),
                &json!("*"),
                &json!("*"),
                &json!("*"),
                &json!("*")
            ),
            "{rule}"
        );
        assert!(p["priority"].as_u64().unwrap() < 65000, "{rule}");
    }
    // What each NIC had is in the output and on the NIC; its other tags are kept.
    let interfaces = out["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2);
    assert!(same(
        interfaces[0]["previous_nsg"].as_str().unwrap(),
        &vm.web_nsg
    ));
    assert_eq!(interfaces[1]["previous_nsg"], Value::Null);
    assert_eq!(
        fake.nic_tags(&vm.nics[0])["cordon-previous-nsg"],
        json!(vm.web_nsg)
    );
    assert_eq!(fake.nic_tags(&vm.nics[1])["cordon-previous-nsg"], "none");
    assert_eq!(fake.nic_tags(&vm.nics[0])["owner"], "web-team");

    // The undo, as `cordon runs undo` calls it: the original inputs plus `previous`.
    let back = integrations
        .ok(
            "azure-compute.release_vm",
            json!({ "vm_id": vm.id, "previous": out }),
            "isolate:undo",
        )
        .await;
    assert_eq!(back["restored"].as_array().unwrap().len(), 2, "{back}");
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str())
    );
    assert_eq!(
        fake.nic_nsg(&vm.nics[1]),
        None,
        "the NIC had no group, and has none again"
    );
    for nic in &vm.nics {
        let tags = fake.nic_tags(nic);
        assert!(tags.get("cordon-previous-nsg").is_none(), "{tags}");
        assert_eq!(tags["owner"], "web-team");
    }
    assert!(
        fake.resource(&quarantine).is_some(),
        "the quarantine group is kept"
    );
}

#[tokio::test]
async fn a_second_isolate_never_records_the_quarantine_group_as_previous() {
    let (fake, vm, integrations) = setup().await;
    let first = integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;
    let second = integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;

    assert_eq!(
        second["quarantine_nsg_created"], false,
        "the group is reused"
    );
    for (a, b) in first["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["interfaces"].as_array().unwrap())
    {
        assert_eq!(a["previous_nsg"], b["previous_nsg"], "{second}");
        assert_eq!(b["previous_known"], true);
        assert_eq!(b["changed"], false);
    }
    assert_eq!(
        fake.count("PUT /subscriptions"),
        1 + 2,
        "one group created, two NICs moved once"
    );

    // The second run's record restores the original groups too.
    integrations
        .ok(
            "azure-compute.release_vm",
            json!({ "vm_id": vm.id, "previous": second }),
            "undo",
        )
        .await;
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str())
    );
    assert_eq!(fake.nic_nsg(&vm.nics[1]), None);
}

#[tokio::test]
async fn release_without_the_record_reads_the_tags_and_leaves_moved_nics_alone() {
    let (fake, vm, integrations) = setup().await;
    integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;
    // Someone moves the second NIC elsewhere by hand meanwhile.
    fake.seed_nsg(&quarantine_id("hand-picked"), "westeurope", vec![]);
    let nic = fake.resource(&vm.nics[1]).unwrap();
    let mut moved = nic.clone();
    moved["properties"]["networkSecurityGroup"] = json!({ "id": quarantine_id("hand-picked") });
    put_raw(&fake, &vm.nics[1], &moved).await;

    let back = integrations
        .ok("azure-compute.release_vm", vm_id(&vm), "release")
        .await;
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str())
    );
    assert!(same(
        &fake.nic_nsg(&vm.nics[1]).unwrap(),
        &quarantine_id("hand-picked")
    ));
    let skipped = back["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{back}");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not on the quarantine group")
    );
}

/// PUTs a resource to the fake as another client would (with a token of its own).
async fn put_raw(fake: &FakeAzure, id: &str, body: &Value) {
    let http = reqwest::Client::new();
    let token = arm_token(&http, fake).await;
    let status = http
        .put(format!("{}{id}?api-version=2024-05-01", fake.base))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(body)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

/// An ARM token from the fake's token endpoint, asked for as another client would.
async fn arm_token(http: &reqwest::Client, fake: &FakeAzure) -> Value {
    http.post(format!(
        "{}/{}/oauth2/v2.0/token",
        fake.base,
        support::azure::TENANT
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
        support::azure::CLIENT_ID,
        url_encode(CLIENT_SECRET),
        url_encode(ARM_SCOPE)
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_group_of_that_name_without_the_deny_rules_is_refused() {
    let (fake, vm, integrations) = setup().await;
    fake.seed_nsg(
        &quarantine_id("cordon-quarantine"),
        "westeurope",
        vec![json!({ "name": "allow-ssh", "properties": {
            "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
            "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": 100, "direction": "Inbound" } })],
    );
    let err = integrations
        .run("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await
        .expect_err("a leaky group must not be used");
    assert!(!err.retryable, "{err:?}");
    assert!(
        err.message.contains("cordon-quarantine") && err.message.contains("deny-all"),
        "{}",
        err.message
    );
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str()),
        "nothing moved"
    );
    assert_eq!(fake.nic_nsg(&vm.nics[1]), None);
}

#[tokio::test]
async fn the_group_comes_from_the_setting_and_one_per_region() {
    let fake = FakeAzure::start().await;
    let vm = seed_vm1(&fake);
    // A group of the configured name already serves another region.
    fake.seed_nsg(&quarantine_id("soc-isolation"), "eastus", vec![]);
    let integrations = load(
        &fake,
        CLIENT_SECRET,
        "  settings:\n    azure-compute:\n      quarantine_nsg_name: soc-isolation\n",
    );
    let out = integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;
    let expected = quarantine_id("soc-isolation-westeurope");
    assert!(
        same(out["quarantine_nsg"].as_str().unwrap(), &expected),
        "{out}"
    );
    assert!(same(&fake.nic_nsg(&vm.nics[0]).unwrap(), &expected));
    assert_eq!(fake.resource(&expected).unwrap()["location"], "westeurope");
}

#[tokio::test]
async fn snapshot_disks_copies_the_os_and_data_disks_as_tagged_evidence() {
    let (fake, vm, integrations) = setup().await;
    let out = integrations
        .ok("azure-compute.snapshot_disks", vm_id(&vm), "snapshot")
        .await;

    let snapshots = fake.snapshots();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let mut sources: Vec<String> =
        snapshots
            .iter()
            .map(|s| {
                assert_eq!(s["properties"]["creationData"]["createOption"], "Copy");
                assert_eq!(s["tags"]["cordon-incident"], "inc-1", "{s}");
                assert_eq!(s["tags"]["cordon-run"], "run-1", "{s}");
                assert_eq!(s["location"], "westeurope");
                assert!(s["id"].as_str().unwrap().contains(
                    "/resourceGroups/myRg1/providers/Microsoft.Compute/snapshots/cordon-"
                ));
                s["properties"]["creationData"]["sourceResourceId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
    sources.sort();
    let mut disks = vec![vm.os_disk.clone(), vm.data_disk.clone()];
    disks.sort();
    assert_eq!(sources, disks);

    let roles = texts(&out["snapshots"], "role");
    assert_eq!(roles, ["os", "data"]);
    let evidence = out["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    for (record, snapshot) in evidence.iter().zip(out["snapshots"].as_array().unwrap()) {
        assert_eq!(record["kind"], "disk-snapshot");
        assert_eq!(record["location"], snapshot["snapshot_id"]);
        assert!(
            fake.resource(record["location"].as_str().unwrap())
                .is_some()
        );
        // Completed by the host.
        assert_eq!(
            (record["run_id"].as_str(), record["step_id"].as_str()),
            (Some("run-1"), Some("snapshot"))
        );
        assert_eq!(record["action"], "azure-compute.snapshot_disks");
    }
}

#[tokio::test]
async fn snapshot_disks_is_retryable_until_azure_finishes_and_takes_no_second_copy() {
    let (fake, vm, integrations) = setup().await;
    fake.set_snapshot_pending_gets(1);
    let err = integrations
        .run("azure-compute.snapshot_disks", vm_id(&vm), "snapshot")
        .await
        .expect_err("the snapshots are still Updating");
    assert!(err.retryable, "{err:?}");
    assert!(
        err.message.contains("still being created"),
        "{}",
        err.message
    );
    assert_eq!(fake.snapshots().len(), 2);

    // The step's retry: the same idempotency key finds the same snapshots, now Succeeded.
    let out = integrations
        .ok("azure-compute.snapshot_disks", vm_id(&vm), "snapshot")
        .await;
    assert_eq!(fake.snapshots().len(), 2, "no second copy");
    assert_eq!(
        fake.count("PUT /subscriptions"),
        2,
        "each disk snapshotted once"
    );
    for s in out["snapshots"].as_array().unwrap() {
        assert_eq!(s["state"], "Succeeded");
    }
    assert_eq!(out["evidence"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_missing_vm_or_a_wrong_id_fails_clearly_and_is_not_retried() {
    let (fake, _vm, integrations) = setup().await;
    let missing = format!(
        "/subscriptions/{SUB}/resourceGroups/myRg1/providers/Microsoft.Compute/virtualMachines/gone"
    );
    let err = integrations
        .run(
            "azure-compute.isolate_vm",
            json!({ "vm_id": missing }),
            "isolate",
        )
        .await
        .expect_err("no such VM");
    assert!(!err.retryable);
    assert!(
        err.message.contains("was not found") && err.message.contains("gone"),
        "{}",
        err.message
    );

    let nsg = quarantine_id("web-nsg");
    let err = integrations
        .run(
            "azure-compute.snapshot_disks",
            json!({ "vm_id": nsg }),
            "snapshot",
        )
        .await
        .expect_err("not a VM id");
    assert!(err.message.contains("vm_id"), "{}", err.message);
    assert!(fake.snapshots().is_empty());
}

#[tokio::test]
async fn the_fake_refuses_other_api_versions_the_way_arm_does() {
    let (fake, vm, _integrations) = setup().await;
    let http = reqwest::Client::new();
    let token = arm_token(&http, &fake).await;
    assert_eq!(token["token_type"], "Bearer");
    let get = |version: &str| {
        http.get(format!("{}{}?api-version={version}", fake.base, vm.id))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
    };
    let answer = get("2023-03-01").await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "InvalidApiVersionParameter",
        "{body}"
    );
    assert_eq!(get("2024-07-01").await.unwrap().status(), 200);
}

// ---- azure-entra ----------------------------------------------------------------------------------

#[tokio::test]
async fn disable_user_blocks_sign_in_and_its_undo_allows_it_again() {
    let (fake, _vm, integrations) = setup().await;
    let out = integrations
        .ok(
            "azure-entra.disable_user",
            json!({ "user_id": UPN }),
            "disable",
        )
        .await;
    assert_eq!(fake.user_enabled(USER), Some(false));
    assert_eq!(
        (out["user_id"].as_str(), out["was_enabled"].as_bool()),
        (Some(USER), Some(true)),
        "{out}"
    );

    integrations
        .ok(
            "azure-entra.enable_user",
            json!({ "user_id": UPN, "previous": out }),
            "disable:undo",
        )
        .await;
    assert_eq!(fake.user_enabled(USER), Some(true));
}

#[tokio::test]
async fn the_undo_leaves_an_account_that_was_blocked_before_blocked() {
    let (fake, _vm, integrations) = setup().await;
    let other = "0c4f1a52-3b6d-4e8f-9a1b-2c3d4e5f6a7b";
    fake.seed_user(other, "megan.bowen@contoso.com", "Megan Bowen", false);
    let out = integrations
        .ok(
            "azure-entra.disable_user",
            json!({ "user_id": other }),
            "disable",
        )
        .await;
    assert_eq!(
        (out["was_enabled"].as_bool(), out["changed"].as_bool()),
        (Some(false), Some(false))
    );
    let undo = integrations
        .ok(
            "azure-entra.enable_user",
            json!({ "user_id": other, "previous": out }),
            "undo",
        )
        .await;
    assert_eq!(
        fake.user_enabled(other),
        Some(false),
        "blocked before Cordon, blocked after"
    );
    assert!(
        undo["reason"].as_str().unwrap().contains("already blocked"),
        "{undo}"
    );
    // Asked directly (no record), it enables.
    integrations
        .ok(
            "azure-entra.enable_user",
            json!({ "user_id": other }),
            "enable",
        )
        .await;
    assert_eq!(fake.user_enabled(other), Some(true));
}

#[tokio::test]
async fn revoke_sessions_signs_the_user_out() {
    let (fake, _vm, integrations) = setup().await;
    let out = integrations
        .ok(
            "azure-entra.revoke_sessions",
            json!({ "user_id": USER }),
            "revoke",
        )
        .await;
    assert_eq!(out["revoked"], true);
    assert_eq!(fake.revocations(USER), 1);
    assert_eq!(
        fake.user_enabled(USER),
        Some(true),
        "revoking does not block sign-in"
    );

    let err = integrations
        .run(
            "azure-entra.revoke_sessions",
            json!({ "user_id": "nobody@contoso.com" }),
            "revoke",
        )
        .await
        .expect_err("no such user");
    assert!(
        err.message.contains("nobody@contoso.com") && err.message.contains("not found"),
        "{}",
        err.message
    );
}

// ---- auth -----------------------------------------------------------------------------------------

#[tokio::test]
async fn one_token_per_audience_is_requested_and_reused_across_calls() {
    let (fake, vm, integrations) = setup().await;
    integrations
        .ok("azure-compute.snapshot_disks", vm_id(&vm), "snapshot")
        .await;
    integrations
        .ok("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await;
    integrations
        .ok("azure-compute.release_vm", vm_id(&vm), "release")
        .await;
    integrations
        .ok(
            "azure-entra.disable_user",
            json!({ "user_id": USER }),
            "disable",
        )
        .await;
    integrations
        .ok(
            "azure-entra.revoke_sessions",
            json!({ "user_id": USER }),
            "revoke",
        )
        .await;
    assert!(fake.count("/subscriptions/") > 10, "{:?}", fake.requests());
    assert_eq!(
        fake.token_requests(ARM_SCOPE),
        1,
        "one ARM token for every ARM call"
    );
    assert_eq!(
        fake.token_requests(GRAPH_SCOPE),
        1,
        "one Graph token for every Graph call"
    );
}

#[tokio::test]
async fn a_refused_token_says_why_and_never_shows_the_secret() {
    let fake = FakeAzure::start().await;
    let vm = seed_vm1(&fake);
    let wrong = "not-the-secret-Zq8~value";
    let integrations = load(&fake, wrong, "");
    let err = integrations
        .run("azure-compute.isolate_vm", vm_id(&vm), "isolate")
        .await
        .expect_err("the token request is refused");
    assert!(
        !err.retryable,
        "a wrong secret does not fix itself: {err:?}"
    );
    assert!(err.message.contains("Entra ID"), "{}", err.message);
    assert!(
        err.message.contains("invalid_client") && err.message.contains("AADSTS7000215"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains(wrong),
        "the secret leaked: {}",
        err.message
    );
    assert!(!format!("{err:?}").contains(wrong));
    assert_eq!(fake.token_refusals(), 1);
    assert_eq!(fake.count("/subscriptions/"), 0, "nothing reached ARM");
    assert_eq!(fake.nic_nsg(&vm.nics[1]), None);
}

// ---- the stock playbook, end to end ---------------------------------------------------------------

/// A server running the stock `azure-vm-compromise` playbook against the fake, and the run the
/// Defender for Cloud fixture started (waiting for its approval, the snapshots taken).
async fn defender_run() -> (TestServer, FakeAzure, SeededVm, String) {
    let fake = FakeAzure::start().await;
    // The fixture's VM: /subscriptions/20ff…/resourceGroups/myRg1/…/virtualMachines/vm1.
    let vm = seed_vm1(&fake);
    let extra = format!(
        "playbooks:\n  paths: [{}]\napprovers:\n  on-call: [cli:analyst, cli:lead]\n{}{}",
        repo("playbooks/azure-vm-compromise.yaml").display(),
        integrations_yaml(&fake, CLIENT_SECRET, ""),
        all_sources()
    );
    let server = TestServer::start_with(&extra).await;
    let example: Value = serde_json::from_slice(&read_fixture(
        "alerts/azure/defender_for_cloud_alert_arm_example_2022-01-01.json",
    ))
    .unwrap();
    let alert = serde_json::to_vec(&example["responses"]["200"]["body"]).unwrap();
    let answer = server.accept("azure.defender", alert).await;
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert_id).await;
    let prompt = server.wait_prompt(&run, "approve").await;
    assert!(
        prompt.contains("vm1") && prompt.contains("2 disk snapshot(s) taken"),
        "{prompt}"
    );
    assert_eq!(
        fake.snapshots().len(),
        2,
        "evidence is taken before anyone decides"
    );
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str()),
        "nothing isolated yet"
    );
    (server, fake, vm, run)
}

async fn decide(server: &TestServer, run: &str, decision: &str) -> Value {
    let (status, body) = server.decide(run, "approve", decision, "cli:analyst").await;
    assert_eq!(status, 200, "{body}");
    server.wait_run(run, "finished", finished).await
}

#[tokio::test]
async fn a_defender_alert_isolates_its_vm_once_the_on_call_approves() {
    let (server, fake, vm, run) = defender_run().await;
    let done = decide(&server, &run, "approve").await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    let quarantine = quarantine_id("cordon-quarantine");
    for nic in &vm.nics {
        assert!(same(&fake.nic_nsg(nic).unwrap(), &quarantine), "{nic}");
    }
    // The snapshots are evidence on the incident.
    let incident = done["run"]["incident_id"].as_str().unwrap();
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    let evidence = shown["incident"]["evidence"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(evidence.len(), 2, "{shown}");
    assert!(
        evidence
            .iter()
            .all(|e| e["kind"] == "disk-snapshot" && e["action"] == "azure-compute.snapshot_disks")
    );
    let tagged: Vec<Value> = fake
        .snapshots()
        .iter()
        .map(|s| s["tags"]["cordon-incident"].clone())
        .collect();
    assert_eq!(tagged, vec![json!(incident); 2]);

    // `cordon runs undo RUN isolate`, over the admin API: release_vm with the step's record.
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(
        undo["run"]["steps"]["undo"]["action"],
        "azure-compute.release_vm"
    );
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str())
    );
    assert_eq!(fake.nic_nsg(&vm.nics[1]), None);
}

#[tokio::test]
async fn a_denied_approval_leaves_the_vm_connected() {
    let (server, fake, vm, run) = defender_run().await;
    let done = decide(&server, &run, "deny").await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(
        fake.nic_nsg(&vm.nics[0]).as_deref(),
        Some(vm.web_nsg.as_str())
    );
    assert_eq!(fake.nic_nsg(&vm.nics[1]), None);
    assert!(
        fake.nsg_ids()
            .iter()
            .all(|id| !id.contains("cordon-quarantine")),
        "no group was even made"
    );
}
