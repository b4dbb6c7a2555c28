//! Console benchmark: how long the server takes to render the incident list and an incident page
//! at size (issue 13, item 7).
//!
//! `cargo bench --bench console` opens a server in process on a fresh embedded store (sled, as the
//! default config), stores `BENCH_INCIDENTS` (default 100 000) incidents, each from one alert about
//! its own host, and one more incident of `BENCH_ALERTS` (default 2 000) alerts about one host
//! with a run of `BENCH_STEPS` (default 500) finished steps, each with inputs and an output, and an
//! open approval. Then it renders, as the handlers do (store reads and HTML, no socket):
//! - the first page of the list (50 newest incidents), filtered pages (severity ≥ 9 with a text
//!   search that few match, severity ≥ 9 alone) and a filter nothing matches (so every incident is
//!   read), `BENCH_ROUNDS` (default 200) times each;
//! - the big incident's page (timeline, graph, table, approvals), `BENCH_ROUNDS / 4` times;
//!
//! and prints p50 and p99 of each, and the page sizes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use cordon::alert::Alert;
use cordon::console::session::{SessionRecord, Visitor};
use cordon::model::people::{Actor, Role, Roles};
use cordon::model::run::{ApprovalState, Run, RunStatus, StepState, StepStatus, Trigger};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn alert(host: &str, n: usize, severity: u8, at: chrono::DateTime<Utc>) -> Alert {
    let raw = serde_json::value::to_raw_value(&json!({ "n": n })).unwrap();
    let mut alert = Alert::new("generic", "bench.finding", raw);
    alert.title = format!("Suspicious process {n} on {host}");
    alert.severity = cordon::alert::Severity::new(severity, severity.to_string());
    alert.resource.kind = Some("host".into());
    alert.resource.id = Some(host.to_owned());
    alert.resource.account = Some("111111111111".into());
    alert.network.remote_ip = Some(format!("203.0.113.{}", n % 250));
    alert.dedup_key = format!("bench-{host}-{n}");
    alert.observed_at = at;
    alert.received_at = at;
    alert.finish()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>, bytes: usize) {
    times.sort();
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms over {} renders ({} KiB of HTML)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.len(),
        bytes / 1024
    );
}

fn main() {
    let incidents = env("BENCH_INCIDENTS", 100_000);
    let alerts = env("BENCH_ALERTS", 2_000);
    let steps = env("BENCH_STEPS", 500);
    let rounds = env("BENCH_ROUNDS", 200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "server:\n  listen: 127.0.0.1:0\nstore:\n  path: {}\nplaybooks:\n  paths: []\nlog:\n  level: warn\n",
            dir.path().join("store").display()
        );
        let config = cordon::config::parse(&text, Path::new("bench.yaml")).unwrap();
        let server = cordon::app::Server::bind(config).await.unwrap();
        let app = server.state.clone();
        let store = app.store.clone();

        let started = Instant::now();
        let base = Utc::now() - TimeDelta::days(30);
        let mut batch = Vec::with_capacity(1000);
        for n in 0..incidents {
            let at = base + TimeDelta::seconds(n as i64 * 20);
            batch.push(alert(&format!("host-{n:06}"), n, (n % 11) as u8, at));
            if batch.len() == 1000 {
                store.ingest(std::mem::take(&mut batch), at).await.unwrap();
            }
        }
        if !batch.is_empty() {
            store.ingest(batch, Utc::now()).await.unwrap();
        }
        // The big incident: alerts over two hours about one host.
        let big_start = Utc::now() - TimeDelta::hours(2);
        let mut big = Vec::with_capacity(alerts);
        for n in 0..alerts {
            big.push(alert("build-server-7", n, 7, big_start + TimeDelta::milliseconds(n as i64 * 3600)));
        }
        let mut incident_id = String::new();
        for chunk in big.chunks(500) {
            let accepted = store.ingest(chunk.to_vec(), Utc::now()).await.unwrap();
            incident_id = accepted[0].incident_id.clone();
        }
        let mut run = Run::new(
            "bench-run-0001".into(),
            "contain",
            Trigger { kind: "alert".into(), by: None, person: None },
            Some(incident_id.clone()),
            None,
            incident_id.clone(),
            json!({}),
            false,
            big_start,
        );
        run.status = RunStatus::Waiting;
        for s in 0..steps {
            let id = format!("step-{s:03}");
            let mut state = StepState::new(StepStatus::Succeeded);
            state.attempts = 1;
            state.action = Some("core.http".into());
            state.started_at = Some(big_start + TimeDelta::seconds(s as i64 * 12));
            state.finished_at = Some(big_start + TimeDelta::seconds(s as i64 * 12 + 3));
            state.inputs = json!({ "url": format!("https://intel.example/lookup/{s}"), "method": "GET" });
            state.output = json!({ "status": 200, "verdict": "malicious", "score": s % 100, "seen": ["a", "b", "c"] });
            run.order.push(id.clone());
            run.steps.insert(id, state);
        }
        let mut waiting = StepState::new(StepStatus::Waiting);
        waiting.started_at = Some(Utc::now());
        waiting.approval = Some(ApprovalState {
            prompt: "Isolate build-server-7?".into(),
            group: "soc".into(),
            quorum: 1,
            timeout_at: Utc::now() + TimeDelta::hours(1),
            on_timeout_approve: false,
            decisions: Vec::new(),
            outcome: None,
            plan: Vec::new(),
        });
        run.order.push("approve".into());
        run.steps.insert("approve".into(), waiting);
        store.create_run(&run, Vec::new()).await.unwrap();
        println!(
            "stored {incidents} incidents, one of {alerts} alerts with a run of {steps} steps, in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let now = Utc::now();
        let visitor = Visitor {
            key: "bench".into(),
            session: SessionRecord {
                person: "alice".into(),
                identity: "oidc:alice".into(),
                token_id: None,
                via: "oidc".into(),
                csrf: "c".repeat(43),
                created_at: now,
                last_seen_at: now,
            },
            actor: Actor {
                person: "alice".into(),
                identity: "oidc:alice".into(),
                roles: Roles::of([Role::Responder, Role::Approver]),
                also: Vec::new(),
            },
        };
        let list = |q: &[(&str, &str)]| -> HashMap<String, String> {
            q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let mut measured: BTreeMap<&str, (Vec<Duration>, usize)> = BTreeMap::new();
        for (name, query, n) in [
            ("list, first page", list(&[]), rounds),
            ("list, severity >= 9 and text search", list(&[("severity_min", "9"), ("q", "host-0999")]), rounds),
            ("list, severity >= 9", list(&[("severity_min", "9")]), rounds),
            ("list, a filter nothing matches (every incident read)", list(&[("source", "falco")]), (rounds / 10).max(5)),
        ] {
            let (times, bytes) = measured.entry(name).or_default();
            for _ in 0..n {
                let t = Instant::now();
                let page = cordon::console::render_list(&app, &visitor, &query).await.unwrap();
                times.push(t.elapsed());
                *bytes = page.into_string().len();
            }
        }
        let (times, bytes) = measured.entry("incident page, 2 000 alerts and 500 steps").or_default();
        for _ in 0..(rounds / 4).max(5) {
            let t = Instant::now();
            let page = cordon::console::render_incident(&app, &visitor, &incident_id, None)
                .await
                .unwrap()
                .expect("the big incident");
            times.push(t.elapsed());
            *bytes = page.into_string().len();
        }
        for (name, (times, bytes)) in measured {
            report(name, times, bytes);
        }
        let _ = store.close().await;
    });
}
