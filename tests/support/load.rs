//! Load for the fault tests: a generator posting alerts to one or more replicas as a client behind
//! a load balancer would (a refused connection or a 503 is tried again, on the next replica), and
//! a sink that records every side effect the runs perform.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::INTAKE_TOKEN;
use super::fake::{self, FakeServer};

/// An HTTP server on 127.0.0.1:0 counting the requests it receives, by path, with when they came.
pub struct Sink {
    pub base: String,
    server: FakeServer,
}

impl Sink {
    pub async fn start() -> Sink {
        let server = fake::serve(
            axum::Router::new().fallback(|| async { axum::Json(json!({ "ok": true })) }),
        )
        .await;
        Sink {
            base: server.base.clone(),
            server,
        }
    }

    /// How many requests each path received.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.server.requests() {
            *counts.entry(request.uri.path().to_owned()).or_default() += 1;
        }
        counts
    }

    pub fn total(&self) -> usize {
        self.server.requests().len()
    }

    /// Paths that received a request after `instant`.
    pub fn since(&self, instant: Instant) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.at > instant)
            .map(|r| r.uri.path().to_owned())
            .collect()
    }
}

/// One alert the server acknowledged (202 with its id).
#[derive(Debug, Clone)]
pub struct Acked {
    pub alert_id: String,
    pub host: String,
    /// The base URL of the replica that acknowledged it.
    pub replica: String,
    pub at: Instant,
}

/// What the load saw. Counters can be read while it runs.
#[derive(Default)]
pub struct Load {
    pub acked: Mutex<Vec<Acked>>,
    pub acked_count: AtomicUsize,
    /// 503 answers (the store could not take the alert).
    pub unavailable: AtomicUsize,
    /// Refused or broken connections (a replica down).
    pub refused: AtomicUsize,
    /// Every answer that was neither 202 nor 503, with its status.
    pub other: Mutex<Vec<u16>>,
    /// When each 503 and each 202 came, to compare with an outage's window.
    pub answers: Mutex<Vec<(u16, Instant)>>,
}

/// Replicas' base URLs; a test changes them as it kills and restarts processes.
pub type Targets = Arc<RwLock<Vec<String>>>;

/// The host of alert `i` of `distinct`: alerts past `distinct` repeat earlier ones (the dedup
/// window folds them into the first).
pub fn host_of(i: usize, distinct: usize) -> String {
    format!("host-{}", i % distinct)
}

/// Posts `total` generic alerts, `concurrency` at a time, round robin over `targets`, each until
/// it is acknowledged; gives up on one after `patience` of trying.
pub async fn run(
    targets: Targets,
    total: usize,
    distinct: usize,
    concurrency: usize,
    patience: Duration,
    load: Arc<Load>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (targets, next, http, load) =
            (targets.clone(), next.clone(), http.clone(), load.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return;
                }
                post_one(&targets, &http, &load, i, distinct, patience).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
}

async fn post_one(
    targets: &Targets,
    http: &reqwest::Client,
    load: &Load,
    i: usize,
    distinct: usize,
    patience: Duration,
) {
    let host = host_of(i, distinct);
    let body = json!({
        "title": format!("suspicious process on {host}"),
        "kind": "effect",
        "severity": 7,
        "resource": { "kind": "host", "id": host },
    });
    let started = Instant::now();
    let mut attempt = i;
    loop {
        assert!(
            started.elapsed() < patience,
            "alert {i} was never acknowledged in {patience:?}"
        );
        let pick = {
            let all = targets.read().unwrap();
            (!all.is_empty()).then(|| all[attempt % all.len()].clone())
        };
        let Some(base) = pick else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        attempt += 1;
        let answer = http
            .post(format!("{base}/v1/alerts/generic"))
            .bearer_auth(INTAKE_TOKEN)
            .json(&body)
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(_) => {
                load.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = answer.status().as_u16();
        load.answers.lock().unwrap().push((status, Instant::now()));
        match status {
            202 => {
                let Ok(body) = answer.json::<Value>().await else {
                    // The connection broke after the status: not known to be stored.
                    load.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let alert_id = body["alerts"][0]["alert_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("202 without an alert id: {body}"))
                    .to_owned();
                load.acked.lock().unwrap().push(Acked {
                    alert_id,
                    host,
                    replica: base,
                    at: Instant::now(),
                });
                load.acked_count.fetch_add(1, Ordering::SeqCst);
                return;
            }
            503 => {
                load.unavailable.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                load.other.lock().unwrap().push(other);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until at least `n` alerts are acknowledged.
pub async fn until_acked(load: &Load, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while load.acked_count.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} alerts acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
