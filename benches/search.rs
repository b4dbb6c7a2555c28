//! Search benchmark on the embedded store (sled + its tantivy index), in process.
//!
//! `cargo bench --bench search` (or `--profile dev` to skip the release build; the numbers are
//! then those of unoptimised code, and say so):
//!
//! 1. intake throughput with and without the search index: `BENCH_INTAKE` alerts (default 20 000)
//!    ingested one per call from 64 concurrent tasks (as 64 HTTP clients would, each call durable,
//!    group-committed), into a store that keeps the index and one that keeps none; then how long
//!    the index took to hold the last of them after intake returned;
//! 2. query latency at `BENCH_ALERTS` alerts (default 100 000, generated over 30 days, loaded in
//!    batches): p50/p99 over `BENCH_QUERIES` runs (default 300) of a term query (`ip:<address>`,
//!    a different address each run), a 7-day range (`type:alert` between two times 7 days apart,
//!    the window sliding each run), a free-text query, and a combined one. Each run is a whole
//!    page of 50 hits as the API answers it: the index search and the records read back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use cordon::alert::{Actor, Alert, Severity};
use cordon::config::{GroupingConfig, StoreConfig};
use cordon::search::Search;
use cordon::store::{SledStore, Store};
use serde_json::json;
use serde_json::value::RawValue;

const SOURCES: [&str; 6] = [
    "aws.guardduty",
    "falco",
    "aws.cloudtrail",
    "gcp.scc",
    "azure.defender",
    "generic",
];
const WORDS: [&str; 6] = [
    "tor relay",
    "brute force",
    "crypto miner",
    "port probe",
    "shell in container",
    "root login",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Alert `i` of `n`, one every 26 s back from `end`.
fn alert(i: usize, n: usize, end: DateTime<Utc>) -> Alert {
    let observed = end - chrono::Duration::milliseconds((n - i) as i64 * 26_000);
    let words = WORDS[(i / 7) % WORDS.len()];
    let ip = format!("10.{}.{}.{}", i % 3, (i / 3) % 11, i % 13);
    let raw = json!({
        "event": format!("{words} seen from {ip}"),
        "seq": i,
        "detail": { "account": "111111111111", "region": "eu-west-1", "tags": ["a", "b"] },
    });
    let mut a = Alert::new(
        SOURCES[i % SOURCES.len()],
        format!("kind.{}", i % 20),
        RawValue::from_string(raw.to_string()).unwrap(),
    );
    a.severity = Severity::new((i % 11) as u8, "");
    a.title = format!("{words} on resource {}", i % 1000);
    a.observed_at = observed;
    a.received_at = observed;
    a.resource.kind = Some("aws.ec2.instance".into());
    a.resource.id = Some(format!("i-{:04}", i % 1000));
    a.resource.region = Some("eu-west-1".into());
    a.resource.account = Some("111111111111".into());
    if i.is_multiple_of(3) {
        a.actor = Some(Actor {
            kind: Some("aws.iam.user".into()),
            id: Some(format!("arn:aws:iam::111111111111:user/u{}", i % 200)),
            name: Some(format!("u{}", i % 200)),
            key: Some(format!("aws:111111111111:user/u{}", i % 200)),
        });
    }
    a.network.remote_ip = Some(ip);
    a.labels.insert("env".into(), "prod".into());
    a.dedup_key = format!("bench-{i}");
    a.finish()
}

fn open(dir: &std::path::Path, index: bool) -> Arc<dyn Store> {
    let config = StoreConfig {
        path: dir.join("store"),
        ..StoreConfig::default()
    };
    Arc::new(
        SledStore::open_with_options(&config, &GroupingConfig::default(), None, index)
            .expect("open the store"),
    )
}

/// Alerts per second ingesting `n` alerts one per call from 64 tasks.
async fn intake(store: Arc<dyn Store>, n: usize, end: DateTime<Utc>) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                let a = alert(i, n, end);
                let now = a.received_at;
                store.ingest(vec![a], now).await.expect("ingest");
                i += 64;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let end: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let profile = if cfg!(debug_assertions) {
        "dev (unoptimised)"
    } else {
        "release"
    };
    println!("profile: {profile}");

    // 1. Intake with and without the index, alternated to share the machine's noise.
    let n = env("BENCH_INTAKE", 20_000);
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut lag = Vec::new();
    for _ in 0..env("BENCH_ROUNDS", 2) {
        for index in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), index);
            let rate = intake(store.clone(), n, end).await;
            if index {
                let started = Instant::now();
                let page = cordon::search::run(
                    store.as_ref(),
                    &Search {
                        q: "type:alert".into(),
                        limit: Some(1),
                        ..Search::default()
                    },
                    end,
                )
                .await
                .unwrap();
                assert!(!page.hits.is_empty());
                lag.push(started.elapsed());
                with.push(rate);
            } else {
                without.push(rate);
            }
            store.close().await.unwrap();
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (w, wo) = (mean(&with), mean(&without));
    println!(
        "intake, {n} alerts, 1 per call, 64 tasks: without index {wo:.0} alerts/s, with index {w:.0} alerts/s: overhead {:.1} % (runs: without {:?}, with {:?}); index caught up {:?} after intake returned",
        (1.0 - w / wo) * 100.0,
        without.iter().map(|r| r.round()).collect::<Vec<_>>(),
        with.iter().map(|r| r.round()).collect::<Vec<_>>(),
        lag
    );

    // 2. Query latency at BENCH_ALERTS alerts.
    let total = env("BENCH_ALERTS", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..total {
        batch.push(alert(i, total, end));
        if batch.len() == 1000 || i + 1 == total {
            let now = batch.last().map(|a: &Alert| a.received_at).unwrap();
            store.ingest(std::mem::take(&mut batch), now).await.unwrap();
        }
    }
    let loaded = started.elapsed();
    let started = Instant::now();
    cordon::search::run(store.as_ref(), &Search::default(), end)
        .await
        .unwrap();
    println!(
        "loaded {total} alerts in batches of 1000 in {loaded:?}; index caught up {:?} later; index folder {} MiB",
        started.elapsed(),
        dir_size(&dir.path().join("store.search")) / (1024 * 1024)
    );

    let runs = env("BENCH_QUERIES", 300);
    type MakeSearch = Box<dyn Fn(usize) -> Search>;
    let queries: Vec<(&str, MakeSearch)> = vec![
        (
            "term (ip:<address>)",
            Box::new(|r| Search {
                q: format!("ip:10.{}.{}.{}", r % 3, r % 11, r % 13),
                ..Search::default()
            }),
        ),
        (
            "7-day range (type:alert)",
            Box::new(move |r| {
                let until = end - chrono::Duration::hours((r % 500) as i64);
                Search {
                    q: "type:alert".into(),
                    since: Some((until - chrono::Duration::days(7)).to_rfc3339()),
                    until: Some(until.to_rfc3339()),
                    ..Search::default()
                }
            }),
        ),
        (
            "free text (crypto miner)",
            Box::new(|_| Search {
                q: "crypto miner".into(),
                ..Search::default()
            }),
        ),
        (
            "combined (source, severity, NOT, 7 days)",
            Box::new(move |r| Search {
                q: format!("source:falco severity:>=7 NOT ip:10.{}.*", r % 3),
                since: Some((end - chrono::Duration::days(7)).to_rfc3339()),
                ..Search::default()
            }),
        ),
    ];
    for (name, make) in &queries {
        let mut times = Vec::with_capacity(runs);
        let mut hits = 0;
        for r in 0..runs {
            let search = make(r);
            let started = Instant::now();
            let page = cordon::search::run(store.as_ref(), &search, end)
                .await
                .unwrap();
            times.push(started.elapsed());
            hits += page.hits.len();
        }
        let (p50, p99) = percentiles(times);
        println!(
            "{name:<42} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({runs} runs, {:.0} hits a page)",
            hits as f64 / runs as f64
        );
    }
    let started = Instant::now();
    let count = store.reindex().await.unwrap();
    println!("reindex of {count} documents: {:?}", started.elapsed());
    store.close().await.unwrap();
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
