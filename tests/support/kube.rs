//! The fake Kubernetes API server (`tests/fakes/kubernetes.py`, Kubernetes 1.30 API, every object
//! it is sent validated against the official 1.30 JSON schemas) as a child process on 127.0.0.1,
//! and its control API.
//!
//! It serves HTTPS with the test certificates of `tests/data/kube/` (a CA, a server certificate
//! for 127.0.0.1, a client certificate for the user `cordon`), so Cordon reaches it as it reaches
//! a real cluster: trusting only the cluster's CA, with a bearer token or a client certificate.
//! Dropping the [`FakeKube`] ends the process (it exits when its stdin closes, and is killed).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// A file of `tests/data/kube/`: `ca.pem`, `server.pem`, `client.pem`, `client-key.pem`,
/// `other-ca.pem` (a CA that signed nothing here).
pub fn pem(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kube")
        .join(name)
}

pub struct FakeKube {
    /// `https://127.0.0.1:<port>`
    pub base: String,
    http: reqwest::Client,
    child: Child,
}

impl FakeKube {
    /// Starts the fake; panics with what to do when `CORDON_TEST_FAKES_PYTHON` is unset (the
    /// tests never skip it: without it nothing checks what Cordon sends to Kubernetes).
    pub async fn start() -> FakeKube {
        let python = std::env::var("CORDON_TEST_FAKES_PYTHON").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_FAKES_PYTHON is not set: point it at the Python 3.11 of the fakes' venv \
                 (kubernetes-validate 1.37.0; scripts/peers installs it), or run the tests with \
                 scripts/test, which sets it{}",
                if std::env::var("CORDON_TEST_PEERS").as_deref() == Ok("required") {
                    " (CORDON_TEST_PEERS=required)"
                } else {
                    ""
                }
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/kubernetes.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--tls-cert")
            .arg(pem("server.pem"))
            .arg("--tls-key")
            .arg(pem("server-key.pem"))
            .arg("--client-ca")
            .arg(pem("ca.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the fake prints its port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the fake Kubernetes API did not print its port (got {line:?})")
        });
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pem("ca.pem")).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .no_proxy()
            .build()
            .unwrap();
        FakeKube {
            base: format!("https://127.0.0.1:{port}"),
            http,
            child,
        }
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}/_fake/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the fake answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) {
        let (status, answer) = self.control(reqwest::Method::POST, path, body).await;
        assert_eq!(status, 200, "/_fake/{path}: {answer}");
    }

    /// Stores objects as they are (they must be valid 1.30 objects).
    pub async fn seed(&self, objects: &[Value]) {
        self.post("seed", json!({ "objects": objects })).await;
    }

    /// The object at an API path, as the fake holds it now.
    pub async fn object(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/_fake/object", self.base))
            .query(&[("path", path)])
            .send()
            .await
            .expect("the fake answers");
        match response.status().as_u16() {
            200 => Some(response.json().await.unwrap()),
            _ => None,
        }
    }

    /// Every API request so far: `{method, path, query, content_type, body, status, user}`.
    pub async fn requests(&self) -> Vec<Value> {
        let (_, answer) = self
            .control(reqwest::Method::GET, "requests", json!({}))
            .await;
        answer["requests"].as_array().unwrap().clone()
    }

    /// The requests whose `METHOD path` contains `what`.
    pub async fn calls(&self, what: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap(),
                    r["path"].as_str().unwrap()
                )
                .contains(what)
            })
            .collect()
    }

    /// Objects Cordon sent that failed the schema check.
    pub async fn failures(&self) -> Vec<Value> {
        let (_, answer) = self
            .control(reqwest::Method::GET, "failures", json!({}))
            .await;
        answer["failures"].as_array().unwrap().clone()
    }

    /// Asserts Cordon sent nothing the 1.30 schemas refuse.
    pub async fn assert_all_valid(&self) {
        let failures = self.failures().await;
        assert!(failures.is_empty(), "invalid objects sent: {failures:#?}");
    }

    /// The bearer tokens the fake accepts from now on.
    pub async fn accept_tokens(&self, tokens: &[&str]) {
        self.post("tokens", json!({ "tokens": tokens })).await;
    }

    /// RBAC refuses `verb` (get, list, create, update, patch, delete) on `resource`
    /// (`pods`, `pods/eviction`, `deployments/scale`...).
    pub async fn forbid(&self, verb: &str, resource: &str) {
        self.post("forbid", json!({ "verb": verb, "resource": resource }))
            .await;
    }

    /// The next `count` requests of `verb` on `resource` are answered `status`.
    pub async fn inject(&self, verb: &str, resource: &str, status: u16, count: u32) {
        self.post(
            "inject",
            json!({ "verb": verb, "resource": resource, "status": status, "count": count }),
        )
        .await;
    }

    /// The log of a container (or of its previous instance).
    pub async fn log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
        text: &str,
    ) {
        self.post(
            "logs",
            json!({ "namespace": namespace, "pod": pod, "container": container, "previous": previous, "text": text }),
        )
        .await;
    }

    /// A disruption budget refuses evictions of the pod.
    pub async fn pdb_block(&self, namespace: &str, pod: &str) {
        self.post("pdb_block", json!({ "namespace": namespace, "pod": pod }))
            .await;
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod of `namespace` on `node`, with `containers` (name, image), owned by `owner` (kind,
/// name, uid) when given.
pub fn pod(
    namespace: &str,
    name: &str,
    node: &str,
    containers: &[&str],
    owner: Option<(&str, &str)>,
) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": "web" } },
        "spec": {
            "nodeName": node,
            "containers": containers.iter().map(|c| json!({ "name": c, "image": format!("registry.example.com/{c}:1.0") })).collect::<Vec<_>>(),
        },
        "status": { "phase": "Running" },
    });
    if let Some((kind, owner)) = owner {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner,
            "uid": format!("00000000-0000-0000-0000-{:012}", owner.len()), "controller": true,
        }]);
    }
    pod
}

/// A node.
pub fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "spec": { "podCIDR": "10.244.1.0/24" },
        "status": { "nodeInfo": {
            "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.13",
            "kernelVersion": "6.1.0", "kubeProxyVersion": "v1.30.2", "kubeletVersion": "v1.30.2",
            "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12", "systemUUID": "s"
        } },
    })
}

/// A Deployment `name` with `replicas`, its ReplicaSet `<name>-7d9f8b` and the selector app=<name>.
pub fn deployment(namespace: &str, name: &str, replicas: u32) -> [Value; 2] {
    let template = json!({
        "metadata": { "labels": { "app": name } },
        "spec": { "containers": [{ "name": "app", "image": "registry.example.com/app:1.0" }] },
    });
    [
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } }, "template": template },
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": format!("{name}-7d9f8b"), "namespace": namespace, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
            }] },
            "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } }, "template": template },
        }),
    ]
}

/// A DaemonSet in `namespace` with one container named `container` and `args`.
pub fn daemonset(namespace: &str, name: &str, containers: &[(&str, &[&str])]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "selector": { "matchLabels": { "k8s-app": name } },
            "template": {
                "metadata": { "labels": { "k8s-app": name } },
                "spec": { "containers": containers.iter().map(|(c, args)| json!({ "name": c, "image": format!("registry.example.com/{c}:1"), "args": args })).collect::<Vec<_>>() },
            },
        },
    })
}
