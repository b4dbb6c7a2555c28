//! The GCP fake (`tests/fakes/gcp.py`) as a child process on 127.0.0.1, and the service-account
//! keys the tests sign with.
//!
//! `FakeGcp::start()` runs the fake with the Python named by `CORDON_TEST_FAKES_PYTHON` (the
//! venv scripts/peers installs, holding google-api-python-client 2.202.0, whose Discovery
//! documents the fake validates every request against, and google-auth, with which it verifies
//! the JWT assertions); it binds port 0 and prints the port it got. Dropping the `FakeGcp` kills
//! it. The helpers seed resources and read state back through the fake's `/_fake/` endpoints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

/// The token endpoint a service-account key names; the assertion's audience.
pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A service-account key made for the tests: its JSON (as Google issues it) and public key.
pub struct TestKey {
    pub client_email: String,
    pub key_id: String,
    pub private_pem: String,
    pub public_pem: String,
    /// The key file's content.
    pub json: String,
}

impl TestKey {
    /// A key for `client_email` made from the `which`-th generated RSA key (0 or 1; generated once
    /// per test binary, 2048 bits as Google's are).
    pub fn new(client_email: &str, which: usize) -> TestKey {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = &rsa_keys()[which];
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key_id = format!("{:040x}", which + 0x5eed);
        let json = json!({
            "type": "service_account",
            "project_id": client_email.split('@').nth(1).and_then(|d| d.split('.').next()).unwrap_or(""),
            "private_key_id": key_id,
            "private_key": private_pem,
            "client_email": client_email,
            "client_id": "104593271923401928374",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": TOKEN_URI,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{client_email}"),
            "universe_domain": "googleapis.com",
        })
        .to_string();
        TestKey {
            client_email: client_email.to_owned(),
            key_id,
            private_pem,
            public_pem,
            json,
        }
    }

    /// The lines of the private key's base64 body: none may appear in anything Cordon prints.
    pub fn private_lines(&self) -> Vec<&str> {
        self.private_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect()
    }

    /// Writes the key file into `dir`; gives its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.json", self.key_id));
        std::fs::write(&path, &self.json).unwrap();
        path
    }
}

fn rsa_keys() -> &'static [rsa::RsaPrivateKey; 2] {
    static KEYS: OnceLock<[rsa::RsaPrivateKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(make);
            let b = s.spawn(make);
            (a.join().unwrap(), b.join().unwrap())
        });
        [a, b]
    })
}

pub struct FakeGcp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    http: reqwest::Client,
    child: Child,
}

impl FakeGcp {
    /// Starts the fake; panics with what to do when `CORDON_TEST_FAKES_PYTHON` is unset or the
    /// fake does not come up.
    pub async fn start() -> FakeGcp {
        let python = std::env::var("CORDON_TEST_FAKES_PYTHON").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_FAKES_PYTHON is not set: point it at the Python of the venv scripts/peers \
                 installs (google-api-python-client 2.202.0 and google-auth), or run the tests with \
                 scripts/test, which sets it"
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/gcp.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep reading so the fake never blocks on a full pipe.
            for _ in lines {}
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line.trim().parse::<u16>().unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the GCP fake printed `{line}` instead of its port")
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the GCP fake ({python} {}) did not print its port within 30 s",
                    script.display()
                );
            }
        };
        FakeGcp {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the fake answers");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "fake {path}: {status} {answer}");
        answer
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the fake answers")
            .json()
            .await
            .unwrap()
    }

    /// Trusts `key` (its public key, for its e-mail and id) at the token endpoint.
    pub async fn trust(&self, key: &TestKey) {
        self.post(
            "/_fake/credentials",
            json!({
                "client_email": key.client_email,
                "key_id": key.key_id,
                "public_key": key.public_pem,
                "audience": TOKEN_URI,
            }),
        )
        .await;
    }

    /// The `credentials.gcp` entry of a config (indented for `integrations.credentials`), with
    /// `auth` (e.g. `service_account_key_file: …`) and every Google host routed to the fake.
    pub fn credentials_yaml(&self, auth: &str) -> String {
        let mut yaml = String::from("    gcp:\n");
        if !auth.is_empty() {
            yaml.push_str(&format!("      {auth}\n"));
        }
        yaml.push_str("      endpoints:\n");
        for host in [
            "compute.googleapis.com",
            "iam.googleapis.com",
            "logging.googleapis.com",
            "oauth2.googleapis.com",
            "metadata.google.internal",
        ] {
            yaml.push_str(&format!("        {host}: {}\n", self.base));
        }
        yaml
    }

    pub async fn config(&self, settings: Value) {
        self.post("/_fake/config", settings).await;
    }

    /// Makes the next `count` requests whose path contains `path` fail with `status`.
    pub async fn inject(&self, path: &str, status: u16, count: u32) {
        self.post(
            "/_fake/inject",
            json!({ "path_contains": path, "status": status, "count": count }),
        )
        .await;
    }

    pub async fn seed_instance(&self, seed: Value) -> Value {
        self.post("/_fake/instances", seed).await
    }

    pub async fn seed_account(&self, seed: Value) -> Value {
        self.post("/_fake/service_accounts", seed).await
    }

    pub async fn seed_entries(&self, entries: Value) {
        self.post("/_fake/log_entries", entries).await;
    }

    pub async fn state(&self) -> Value {
        self.get("/_fake/state").await
    }

    /// The API requests (not the control calls), each {method, path, query, body, status}.
    pub async fn requests(&self) -> Vec<Value> {
        self.get("/_fake/requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many API requests were `method` (any, when empty) to a path containing `path`.
    pub async fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| {
                (method.is_empty() || r["method"] == method)
                    && r["path"].as_str().unwrap_or("").contains(path)
            })
            .count()
    }

    /// The requests the fake refused as not matching the Discovery documents.
    pub async fn invalid(&self) -> Vec<Value> {
        self.get("/_fake/invalid")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Token requests: each {kind: jwt|metadata, ok, reason}.
    pub async fn tokens(&self) -> Vec<Value> {
        self.get("/_fake/tokens")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Asserts that every request Cordon sent matched the Discovery documents.
    pub async fn assert_all_valid(&self) {
        let invalid = self.invalid().await;
        assert!(
            invalid.is_empty(),
            "requests the Discovery documents refuse: {invalid:#?}"
        );
    }
}

impl Drop for FakeGcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
