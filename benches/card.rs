//! Card latency benchmark: how long from an alert's POST until its approval card reaches Slack.
//!
//! `cargo bench --bench card` starts the release `cordon serve` (on sled, or PostgreSQL with
//! `BENCH_STORE=postgres`) with Slack pointed at a local fake of the Web API (chat.postMessage,
//! chat.update and the rest answered `ok` in the shapes of Slack's Web API description), and posts
//! alerts open loop at `BENCH_RATE` per second (default 500) for `BENCH_SECS` seconds (default 10),
//! each about its own host, whose playbook stops at an approval. For every alert it times the POST
//! to the first `chat.postMessage` carrying that alert's approval prompt (`BENCH_DUMP=1` prints every
//! call the fake takes), and reports the
//! percentiles, with the cards that never came within 30 s after the last post.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Cluster, connect, post_alert};

const ASKS: &str = r#"id: bench-card
name: Ask before containing
on:
  source: generic
  when: alert.kind == "bench.card"
steps:
  - id: ok
    approval:
      prompt: "Contain card-${{ alert.resource.id }}?"
      approvers: soc
      timeout: 7d
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When the first message carrying each alert's prompt arrived, by alert number.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

/// The Web API methods called, with how often.
static METHODS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// The fake Slack Web API: every method answers `ok`; `chat.postMessage` records the prompts it
/// carries (`Contain card-<n>?`).
async fn fake_slack(arrivals: Arrivals) -> SocketAddr {
    use axum::body::Bytes;
    use axum::extract::Path;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let app = axum::Router::new().route(
        "/api/{method}",
        axum::routing::post(move |Path(method): Path<String>, body: Bytes| {
            let (arrivals, counter) = (arrivals.clone(), counter.clone());
            async move {
                let now = Instant::now();
                {
                    let mut methods = METHODS.lock().unwrap();
                    match methods.iter_mut().find(|(m, _)| *m == method) {
                        Some((_, n)) => *n += 1,
                        None => methods.push((method.clone(), 1)),
                    }
                }
                let text = String::from_utf8_lossy(&body);
                if std::env::var("BENCH_DUMP").is_ok() {
                    eprintln!("{method}: {text}");
                }
                if method == "chat.postMessage" {
                    // Form-encoded by the Slack client: the prompt reads `Contain+card-<n>%3F`.
                    let text = text.replace('+', " ");
                    let mut rest = text.as_str();
                    while let Some(at) = rest.find("Contain card-") {
                        rest = &rest[at + "Contain card-".len()..];
                        let digits: String =
                            rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                        if let Ok(n) = digits.parse::<u64>() {
                            arrivals.lock().unwrap().entry(n).or_insert(now);
                        }
                    }
                }
                let ts = format!(
                    "1700000000.{:06}",
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                axum::Json(serde_json::json!({
                    "ok": true,
                    "channel": "C0BENCH",
                    "ts": ts,
                    "message": { "type": "message", "ts": ts, "text": "", "bot_id": "B0CORDON" },
                    "user_id": "U0CORDON",
                    "bot_id": "B0CORDON",
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn main() {
    let rate = env("BENCH_RATE", 500);
    let secs = env("BENCH_SECS", 10);
    let backend = Backend::from_env();
    let rt = common::runtime();
    println!(
        "store: {}; machine: {} cores",
        backend.label(),
        common::cores()
    );
    let arrivals: Arrivals = Arc::default();
    let slack = rt.block_on(fake_slack(arrivals.clone()));
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(playbooks.join("card.yaml"), ASKS).unwrap();
    let extra = format!(
        "playbooks:\n  paths: [{}]\n  workers: 64\napprovers:\n  soc: [cli:alice]\nchat:\n  slack:\n    bot_token: xoxb-bench\n    signing_secret: bench-signing-secret\n    channel: C0BENCH\n    api_url: http://{slack}/api\n",
        playbooks.display()
    );
    let cluster = Cluster::start(dir.path(), &extra, backend, true);
    let addrs = cluster.addrs();

    // Open loop: alert `n` is sent at `n / rate` seconds whatever the answers before it did.
    let total = rate * secs;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let lanes = 64u64;
        let mut tasks = Vec::new();
        for lane in 0..lanes {
            let (addrs, sent, errors) = (addrs.clone(), sent.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let addr = addrs[(lane as usize) % addrs.len()];
                let mut sender = connect(addr).await;
                let mut n = lane;
                while n < total {
                    let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let body = format!(
                        r#"{{"title":"card {n}","kind":"bench.card","severity":7,"resource":{{"kind":"host","id":"{n}"}}}}"#
                    );
                    let at = Instant::now();
                    sent.lock().unwrap().insert(n, at);
                    if post_alert(&mut sender, addr, "generic", body).await != Some(202) {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    n += lanes;
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        let posted = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        while arrivals.lock().unwrap().len() < total as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let arrivals = arrivals.lock().unwrap();
        let sent = sent.lock().unwrap();
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(n, at)| Some(arrivals.get(n)?.saturating_duration_since(*at)))
            .collect();
        latencies.sort();
        println!(
            "card: {total} alerts at {rate}/s posted in {:.2} s ({} errors); {} cards on the fake Slack, {} missing after 30 s",
            posted.as_secs_f64(),
            errors.load(std::sync::atomic::Ordering::Relaxed),
            latencies.len(),
            total as usize - latencies.len(),
        );
        println!(
            "card: alert to approval card p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.90).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        );
        println!("card: Web API calls {:?}", METHODS.lock().unwrap());
    });
    cluster.kill();
}
