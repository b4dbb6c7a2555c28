//! Engine benchmark: end-to-end runs per second, and 100 000 runs waiting on approval.
//!
//! `cargo bench --bench engine` starts the release `cordon serve` (durable; on sled by default,
//! on PostgreSQL with `BENCH_STORE=postgres`, as `BENCH_REPLICAS` processes sharing a fresh
//! database `cordon_bench`, posts spread round robin over them, metrics summed) and:
//! 1. posts `BENCH_RUNS` (default 20 000) alerts, each about its own host, at concurrency 64, and
//!    times from the first post until every run of the 5-part playbook below has succeeded
//!    (a `when` condition, two scripts, `core.log`, `core.set`), reading the server's own
//!    `cordon_runs_finished_total`;
//! 2. on a fresh store, posts `BENCH_WAITING` (default 100 000) alerts whose runs stop at an
//!    approval, then reports the server's RSS, SIGKILLs it, restarts it, and times until every
//!    waiting run was taken back (`cordon_runs_resumed_total` reaches the count: its timer is armed
//!    again, or it is queued to advance). On PostgreSQL the waiting runs stay in the database,
//!    claimed by a replica when they come due, so a restart only times until every replica listens.
//!
//! The server logs at `warn` here so `core.log` lines do not measure the terminal.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Cluster, cpu_seconds, mib, post_n, postgres_cpu_seconds};

const FIVE_PARTS: &str = r#"id: bench-five
name: Five parts
on:
  source: generic
  when: alert.kind == "bench.run" && alert.severity.score >= 1
steps:
  - id: score
    script: '#{ score: alert.severity.score * 10, host: alert.resource.id }'
  - id: adjust
    script: 'steps.score.output.score + incident.alert_count'
  - id: say
    uses: core.log
    with: { message: "scored ${{ steps.adjust.output }} on ${{ steps.score.output.host }}" }
  - id: keep
    uses: core.set
    with: { key: score, value: "${{ steps.adjust.output }}" }
"#;

const WAITS: &str = r#"id: bench-wait
name: Wait for a person
on:
  source: generic
  when: alert.kind == "bench.wait"
steps:
  - id: ok
    approval:
      prompt: "Contain ${{ alert.resource.id }}?"
      approvers: soc
      timeout: 7d
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path) -> String {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(playbooks.join("five.yaml"), FIVE_PARTS).unwrap();
    std::fs::write(playbooks.join("wait.yaml"), WAITS).unwrap();
    format!(
        "playbooks:\n  paths: [{}]\n  workers: 64\napprovers:\n  soc: [cli:alice]\n",
        playbooks.display()
    )
}

fn run_alert(i: u64) -> String {
    format!(
        r#"{{"title":"bench {i}","kind":"bench.run","severity":7,"resource":{{"kind":"host","id":"h-{i}"}}}}"#
    )
}

fn wait_alert(i: u64) -> String {
    format!(
        r#"{{"title":"bench {i}","kind":"bench.wait","severity":7,"resource":{{"kind":"host","id":"w-{i}"}}}}"#
    )
}

async fn until(
    cluster: &Cluster,
    name: &str,
    labels: &str,
    target: f64,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cluster.metric(name, labels).await >= target {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn main() {
    let runs = env("BENCH_RUNS", 20_000);
    let waiting = env("BENCH_WAITING", 100_000);
    let backend = Backend::from_env();
    let rt = common::runtime();
    println!(
        "store: {}; machine: {} cores",
        backend.label(),
        common::cores()
    );

    // 1. End to end.
    let dir = tempfile::tempdir().unwrap();
    let extra = config(dir.path());
    let cluster = Cluster::start(dir.path(), &extra, backend, true);
    let cpu_before = (
        cluster.cpu_seconds(),
        postgres_cpu_seconds(),
        cpu_seconds(std::process::id()),
    );
    let started = Instant::now();
    let errors = rt.block_on(post_n(&cluster.addrs(), "generic", 64, runs, run_alert));
    let posted = started.elapsed();
    let done = rt.block_on(until(
        &cluster,
        "cordon_runs_finished_total",
        "status=\"succeeded\"",
        runs as f64,
        Duration::from_secs(600),
    ));
    match done {
        Some(_) => {
            let total = started.elapsed();
            println!(
                "end to end: {runs} runs of a 5-part playbook in {:.2} s = {:.0} runs/s (alerts posted in {:.2} s, {errors} errors); peak RSS {}",
                total.as_secs_f64(),
                runs as f64 / total.as_secs_f64(),
                posted.as_secs_f64(),
                mib(&cluster.peak_rss_kib())
            );
            let per_run = |s: f64| s / runs as f64 * 1000.0;
            let postgres = match backend {
                Backend::Sled => String::new(),
                Backend::Postgres { .. } => format!(
                    ", postgres {:.2} ms",
                    per_run(postgres_cpu_seconds() - cpu_before.1)
                ),
            };
            println!(
                "end to end: CPU per run: cordon {:.2} ms{postgres}, load generator {:.2} ms (machine: {:.2} ms of 2 cores per run at this rate)",
                per_run(cluster.cpu_seconds() - cpu_before.0),
                per_run(cpu_seconds(std::process::id()) - cpu_before.2),
                per_run(2.0 * total.as_secs_f64()),
            );
        }
        None => println!("end to end: runs did not all succeed within 600 s"),
    }
    cluster.kill();

    // 2. Waiting runs, and a restart.
    let dir = tempfile::tempdir().unwrap();
    let extra = config(dir.path());
    let cluster = Cluster::start(dir.path(), &extra, backend, true);
    let started = Instant::now();
    let errors = rt.block_on(post_n(&cluster.addrs(), "generic", 64, waiting, wait_alert));
    let all_waiting = rt.block_on(until(
        &cluster,
        "cordon_run_advances_total",
        "",
        waiting as f64,
        Duration::from_secs(1200),
    ));
    let Some(_) = all_waiting else {
        println!("waiting: the runs did not all reach their approval within 1200 s");
        cluster.kill();
        return;
    };
    println!(
        "waiting: {waiting} runs waiting on approval after {:.1} s ({errors} errors); RSS {} (peak {})",
        started.elapsed().as_secs_f64(),
        mib(&cluster.rss_kib()),
        mib(&cluster.peak_rss_kib())
    );
    cluster.kill(); // SIGKILL
    let restarted = Instant::now();
    let cluster = Cluster::start(dir.path(), &extra, backend, false);
    let listening = restarted.elapsed();
    if backend != Backend::Sled {
        println!(
            "restart: every replica listening after {:.2} s (the waiting runs stay in the database until due); RSS after {}",
            listening.as_secs_f64(),
            mib(&cluster.rss_kib())
        );
        cluster.kill();
        return;
    }
    let resumed = rt.block_on(until(
        &cluster,
        "cordon_runs_resumed_total",
        "",
        waiting as f64,
        Duration::from_secs(600),
    ));
    match resumed {
        Some(_) => println!(
            "restart: listening after {:.2} s; all {waiting} runs resumed {:.2} s after the restart; RSS after {}",
            listening.as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            mib(&cluster.peak_rss_kib())
        ),
        None => println!("restart: not all runs resumed within 600 s"),
    }
    cluster.kill();
}
