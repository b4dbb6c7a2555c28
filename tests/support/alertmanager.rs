//! Prometheus Alertmanager for the tests: Debian 12's `prometheus-alertmanager` 0.25, which
//! scripts/peers extracts under `.tools/` and names in `CORDON_TEST_ALERTMANAGER`. It runs on a
//! free port of 127.0.0.1 with clustering off, its data in a temporary folder, and one receiver: a
//! webhook (`send_resolved: true`) to the Cordon under test, with the test intake token as its
//! bearer credential. Alerts are posted to its own API (`POST /api/v2/alerts`), as Prometheus
//! posts them. Dropping it stops it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub struct Alertmanager {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    http: reqwest::Client,
    child: Child,
    _dir: TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager sending every notification to `webhook` (Cordon's
    /// `/v1/alerts/alertmanager`), grouped by alert name, each group's first notification one
    /// second after its first alert and later ones (a resolution) within a second of the change;
    /// panics with what to do when the peer is missing.
    pub async fn start(webhook: &str) -> Alertmanager {
        let binary = std::env::var("CORDON_TEST_ALERTMANAGER").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_ALERTMANAGER is not set: point it at Prometheus Alertmanager 0.25 \
                 (Debian 12's prometheus-alertmanager: `apt-get download prometheus-alertmanager` \
                 and `dpkg -x` it; it reads its templates from /usr/share/prometheus/alertmanager), \
                 or run the tests with scripts/test, which installs it and sets it"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: cordon\n  group_by: [alertname]\n  group_wait: 1s\n  \
                 group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: cordon\n    \
                 webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n        \
                 http_config:\n          authorization:\n            credentials: {}\n",
                super::INTAKE_TOKEN
            ),
        )
        .unwrap();
        let port = super::free_port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run Alertmanager at {binary}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/-/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not come up on {base}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Alertmanager {
            base,
            http,
            child,
            _dir: dir,
        }
    }

    /// Posts alerts to Alertmanager's API v2, as Prometheus does; panics unless it takes them.
    pub async fn post(&self, alerts: Value) {
        let answer = self
            .http
            .post(format!("{}/api/v2/alerts", self.base))
            .json(&alerts)
            .send()
            .await
            .expect("Alertmanager answers");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST /api/v2/alerts: {status} {text}");
    }

    /// An alert with `labels` and `annotations` starts firing at `starts_at` (RFC 3339).
    pub async fn fire(&self, labels: &Value, annotations: &Value, starts_at: &str) {
        self.post(json!([{ "labels": labels, "annotations": annotations, "startsAt": starts_at }]))
            .await;
    }

    /// The same alert ends: posted again with its end now, which is how Prometheus resolves one.
    pub async fn resolve(&self, labels: &Value, annotations: &Value, starts_at: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.post(json!([{ "labels": labels, "annotations": annotations, "startsAt": starts_at, "endsAt": now }]))
            .await;
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
