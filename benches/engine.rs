//! Engine benchmark: end-to-end runs per second, and 100 000 runs waiting on approval.
//!
//! `cargo bench --bench engine` starts the release `cordon serve` (sled, durable) and:
//! 1. posts `BENCH_RUNS` (default 20 000) alerts, each about its own host, at concurrency 64, and
//!    times from the first post until every run of the 5-part playbook below has succeeded
//!    (a `when` condition, two scripts, `core.log`, `core.set`), reading the server's own
//!    `cordon_runs_finished_total`;
//! 2. on a fresh store, posts `BENCH_WAITING` (default 100 000) alerts whose runs stop at an
//!    approval, then reports the server's RSS, SIGKILLs it, restarts it, and times until every
//!    waiting run was taken back (`cordon_runs_resumed_total` reaches the count: its timer is armed
//!    again, or it is queued to advance).
//!
//! The server logs at `warn` here so `core.log` lines do not measure the terminal.

mod common;

use std::time::{Duration, Instant};

use common::{Server, metric, peak_rss_kib, post_n, start_cordon_with};

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
    addr: std::net::SocketAddr,
    name: &str,
    labels: &str,
    target: f64,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if metric(addr, name, labels).await >= target {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn stop(mut server: Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

fn main() {
    let runs = env("BENCH_RUNS", 20_000);
    let waiting = env("BENCH_WAITING", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // 1. End to end.
    let dir = tempfile::tempdir().unwrap();
    let extra = config(dir.path());
    let server = start_cordon_with(dir.path(), &extra);
    let started = Instant::now();
    let errors = rt.block_on(post_n(server.addr, "generic", 64, runs, run_alert));
    let posted = started.elapsed();
    let done = rt.block_on(until(
        server.addr,
        "cordon_runs_finished_total",
        "status=\"succeeded\"",
        runs as f64,
        Duration::from_secs(600),
    ));
    match done {
        Some(_) => {
            let total = started.elapsed();
            println!(
                "end to end: {runs} runs of a 5-part playbook in {:.2} s = {:.0} runs/s (alerts posted in {:.2} s, {errors} errors); peak RSS {:.1} MiB",
                total.as_secs_f64(),
                runs as f64 / total.as_secs_f64(),
                posted.as_secs_f64(),
                peak_rss_kib(server.child.id()) as f64 / 1024.0
            );
        }
        None => println!("end to end: runs did not all succeed within 600 s"),
    }
    stop(server);

    // 2. Waiting runs, and a restart.
    let dir = tempfile::tempdir().unwrap();
    let extra = config(dir.path());
    let server = start_cordon_with(dir.path(), &extra);
    let started = Instant::now();
    let errors = rt.block_on(post_n(server.addr, "generic", 64, waiting, wait_alert));
    let all_waiting = rt.block_on(until(
        server.addr,
        "cordon_run_advances_total",
        "",
        waiting as f64,
        Duration::from_secs(1200),
    ));
    let Some(_) = all_waiting else {
        println!("waiting: the runs did not all reach their approval within 1200 s");
        stop(server);
        return;
    };
    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "waiting: {waiting} runs waiting on approval after {:.1} s ({errors} errors); RSS {:.1} MiB (peak {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        rss as f64 / 1024.0,
        peak_rss_kib(server.child.id()) as f64 / 1024.0
    );
    stop(server); // SIGKILL
    let restarted = Instant::now();
    let server = start_cordon_with(dir.path(), &extra);
    let listening = restarted.elapsed();
    let resumed = rt.block_on(until(
        server.addr,
        "cordon_runs_resumed_total",
        "",
        waiting as f64,
        Duration::from_secs(600),
    ));
    match resumed {
        Some(_) => println!(
            "restart: listening after {:.2} s; all {waiting} runs resumed {:.2} s after the restart; RSS after {:.1} MiB",
            listening.as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            peak_rss_kib(server.child.id()) as f64 / 1024.0
        ),
        None => println!("restart: not all runs resumed within 600 s"),
    }
    stop(server);
}
