//! Intake benchmark: durable alert intake over real HTTP on loopback, against the ceiling of this
//! machine (a bare axum handler that parses the same JSON and answers 202 without storing).
//!
//! `cargo bench --bench intake` starts the release `cordon serve` (sled store in a temp folder,
//! durability on: every 202 is fsynced, by group commit; or with `BENCH_STORE=postgres`,
//! `BENCH_REPLICAS` processes sharing a fresh PostgreSQL database `cordon_bench`, each 202 a
//! committed transaction, requests spread round robin over them) and, in a second process, the
//! bare handler;
//! then posts a ~1.5 KB GuardDuty EventBridge event at concurrency 1, 16 and 64 to each and prints
//! alerts/s, p50/p99 latency and the server's peak RSS. Each request is a distinct finding (its
//! own dedup key) on one of 1 000 instances, so the store does real dedup and grouping work.
//!
//! `BENCH_SECS` sets the seconds per run (default 5); `BENCH_LOAD_ONLY=ADDR` only sends the c=64
//! load to a server already running at ADDR (to profile it). Client and server share the machine's cores,
//! in both runs alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::Value;

mod common;

use common::{Backend, Cluster, connect, mib, post_alert, start_ceiling};

fn main() {
    if std::env::var("CORDON_BENCH_ROLE").as_deref() == Ok("ceiling") {
        return ceiling_server();
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let template = guardduty_template();
    // Load only, against a server already running (for profiling it): BENCH_LOAD_ONLY=127.0.0.1:8080.
    if let Ok(addr) = std::env::var("BENCH_LOAD_ONLY") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = runtime.block_on(load(
            &[addr.parse().unwrap()],
            &template,
            64,
            Duration::from_secs(secs),
        ));
        println!(
            "c=64 {:.0} alerts/s p50 {:.3} ms p99 {:.3} ms errors {}",
            r.per_sec, r.p50_ms, r.p99_ms, r.errors
        );
        return;
    }
    println!(
        "payload: GuardDuty EventBridge event, {} bytes",
        body(&template, 0).len()
    );
    let backend = Backend::from_env();
    println!(
        "store: {}; each run: {secs} s; machine: {} cores",
        backend.label(),
        common::cores()
    );
    println!();

    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    let durable = format!("cordon ({}, durable)", backend.label());
    let ceiling = start_ceiling();
    for (label, cluster) in [
        (
            durable.as_str(),
            Cluster::start(dir.path(), "", backend, true),
        ),
        (
            "bare axum ceiling",
            Cluster {
                servers: vec![ceiling],
            },
        ),
    ] {
        for concurrency in [1usize, 16, 64] {
            let run = runtime.block_on(load(
                &cluster.addrs(),
                &template,
                concurrency,
                Duration::from_secs(secs),
            ));
            let rss = cluster.peak_rss_kib();
            let store = runtime.block_on(store_stats(cluster.servers[0].addr));
            println!(
                "{label:<28} c={concurrency:<3} {:>9.0} alerts/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}  peak RSS {}",
                run.per_sec,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                mib(&rss)
            );
            results.push((label.to_owned(), concurrency, run));
            if let Some((group, flush_ms)) = store {
                println!(
                    "{:<28}       store so far: {group:.1} requests per group commit, {flush_ms:.3} ms per fsync",
                    ""
                );
            }
        }
        cluster.kill();
    }
    println!();
    for concurrency in [1usize, 16, 64] {
        let find = |name: &str| {
            results
                .iter()
                .find(|(l, c, _)| l.starts_with(name) && *c == concurrency)
                .map(|r| r.2.per_sec)
        };
        if let (Some(durable), Some(ceiling)) = (find("cordon"), find("bare")) {
            println!(
                "c={concurrency:<3} durable intake = {:.1} % of the ceiling",
                durable / ceiling * 100.0
            );
        }
    }
}

/// A bare axum handler: parse the JSON, answer 202. What the machine can do with no storage at all.
fn ceiling_server() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/v1/alerts/{source}",
            axum::routing::post(|body: Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => (
                        axum::http::StatusCode::ACCEPTED,
                        axum::Json(serde_json::json!({ "accepted": v.is_object() as u8 })),
                    ),
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({ "error": "bad_payload" })),
                    ),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

struct RunResult {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// `concurrency` keep-alive clients posting back to back for `duration`, each with a connection
/// to every address in `addrs` and request `n` going to `addrs[n % addrs.len()]`.
async fn load(
    addrs: &[SocketAddr],
    template: &str,
    concurrency: usize,
    duration: Duration,
) -> RunResult {
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let template: Arc<str> = template.into();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (counter, errors, template) = (counter.clone(), errors.clone(), template.clone());
        let addrs = addrs.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut senders = Vec::new();
            for addr in &addrs {
                senders.push(connect(*addr).await);
            }
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let at = (n % addrs.len() as u64) as usize;
                match post_alert(
                    &mut senders[at],
                    addrs[at],
                    "aws.guardduty",
                    body(&template, n),
                )
                .await
                {
                    Some(status) => {
                        latencies.push(sent.elapsed().as_micros() as u32);
                        if status != 202 {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    RunResult {
        per_sec: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// The recorded GuardDuty SSH brute-force event, trimmed of bulky optional parts to about 1.5 KB,
/// with placeholders for the finding id and instance id.
fn guardduty_template() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/alerts/aws_guardduty/sns_wrapped_eventbridge_ec2_sshbruteforce_sample.json");
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(path).expect("shared fixtures beside the repo"))
            .unwrap();
    let mut event: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    let detail = &mut event["detail"];
    detail["id"] = Value::String("__FINDING__".into());
    let instance = &mut detail["resource"]["instanceDetails"];
    instance["instanceId"] = Value::String("__INSTANCE__".into());
    for bulky in [
        "networkInterfaces",
        "productCodes",
        "tags",
        "iamInstanceProfile",
        "launchTime",
        "imageDescription",
        "availabilityZone",
    ] {
        instance.as_object_mut().unwrap().remove(bulky);
    }
    let service = &mut detail["service"];
    if let Some(action) = service.pointer_mut("/action/networkConnectionAction/remoteIpDetails") {
        for bulky in ["organization", "geoLocation", "city", "country"] {
            action.as_object_mut().unwrap().remove(bulky);
        }
    }
    if let Some(info) = service.get_mut("additionalInfo") {
        *info = serde_json::json!({ "sample": true });
    }
    serde_json::to_string(&event).unwrap()
}

fn body(template: &str, n: u64) -> String {
    template
        .replace("__FINDING__", &format!("{n:032x}"))
        .replace("__INSTANCE__", &format!("i-{:017x}", n % 1000))
}

/// Mean requests per group commit and mean fsync time so far, from the server's own metrics.
async fn store_stats(addr: SocketAddr) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .last()?
            .parse()
            .ok()
    };
    // PostgreSQL has no group commit of its own to report.
    let groups = value("cordon_store_group_size_count").filter(|g| *g > 0.0)?;
    let flushes = value("cordon_store_flush_duration_seconds_count").filter(|f| *f > 0.0)?;
    Some((
        value("cordon_store_group_size_sum")? / groups,
        value("cordon_store_flush_duration_seconds_sum")? / flushes * 1000.0,
    ))
}
