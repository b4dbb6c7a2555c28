//! What the benchmarks share: `cordon serve` processes on a fresh store (sled, or PostgreSQL with
//! one or more replicas), and reading what they say.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "bench-intake-token";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

/// The store the benchmarks run on: `BENCH_STORE=sled|postgres` (default sled), and for
/// PostgreSQL `BENCH_REPLICAS` processes sharing the database (default 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sled,
    Postgres { replicas: usize },
}

/// The database the PostgreSQL runs use, dropped and created afresh for each measurement.
pub const BENCH_DB: &str = "cordon_bench";

/// The server the PostgreSQL runs use (user postgres, trust auth); `BENCH_PG` overrides
/// `host:port`.
pub fn pg_host() -> String {
    std::env::var("BENCH_PG").unwrap_or_else(|_| "127.0.0.1:5432".to_owned())
}

impl Backend {
    pub fn from_env() -> Backend {
        let replicas = std::env::var("BENCH_REPLICAS")
            .ok()
            .map(|v| v.parse::<usize>().expect("BENCH_REPLICAS is a number"))
            .unwrap_or(1);
        match std::env::var("BENCH_STORE").as_deref() {
            Err(_) | Ok("sled") => {
                assert_eq!(replicas, 1, "several replicas need BENCH_STORE=postgres");
                Backend::Sled
            }
            Ok("postgres") => {
                assert!(replicas >= 1, "BENCH_REPLICAS is at least 1");
                Backend::Postgres { replicas }
            }
            Ok(other) => panic!("BENCH_STORE is sled or postgres, not `{other}`"),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Backend::Sled => "sled".to_owned(),
            Backend::Postgres { replicas } => format!("postgres x{replicas}"),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Backend::Sled => 1,
            Backend::Postgres { replicas } => *replicas,
        }
    }
}

/// Drops and creates the bench database, through the `postgres` maintenance database.
pub fn fresh_database() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("postgres://postgres@{}/postgres", pg_host());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} (user postgres): {e}", pg_host()));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            .await
            .expect("drop the bench database");
        client
            .batch_execute(&format!("CREATE DATABASE {BENCH_DB}"))
            .await
            .expect("create the bench database");
        drop(client);
        let _ = connection.await;
    });
}

/// The `cordon serve` processes of one measurement: one on sled, or the replicas sharing the
/// PostgreSQL database.
pub struct Cluster {
    pub servers: Vec<Server>,
}

impl Cluster {
    /// Starts the release `cordon serve` processes on `backend`, with `extra` config sections. On
    /// sled the store is `dir/store`; on PostgreSQL the database is created afresh when `fresh`
    /// (else the processes take up what is in it, as after a restart).
    pub fn start(dir: &std::path::Path, extra: &str, backend: Backend, fresh: bool) -> Cluster {
        if fresh && backend != Backend::Sled {
            fresh_database();
        }
        // One after the other: the first applies the schema, the others find it there.
        let servers = (0..backend.replicas())
            .map(|i| start_one(dir, i, extra, backend))
            .collect();
        Cluster { servers }
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// A metric summed over every process.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let mut sum = 0.0;
        for server in &self.servers {
            sum += metric(server.addr, name, labels).await;
        }
        sum
    }

    /// VmRSS of each process, in KiB.
    pub fn rss_kib(&self) -> Vec<u64> {
        self.servers
            .iter()
            .map(|s| proc_status_kib(s.child.id(), "VmRSS:"))
            .collect()
    }

    /// VmHWM of each process, in KiB.
    pub fn peak_rss_kib(&self) -> Vec<u64> {
        self.servers
            .iter()
            .map(|s| peak_rss_kib(s.child.id()))
            .collect()
    }

    /// CPU seconds (user + system) the processes used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.servers.iter().map(|s| cpu_seconds(s.child.id())).sum()
    }

    /// SIGKILLs every process.
    pub fn kill(mut self) {
        for server in &mut self.servers {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

/// KiB figures as `sum (a + b)`, in MiB.
pub fn mib(kib: &[u64]) -> String {
    let total = kib.iter().sum::<u64>() as f64 / 1024.0;
    if kib.len() == 1 {
        return format!("{total:.1} MiB");
    }
    let each: Vec<String> = kib
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    format!("{total:.1} MiB ({})", each.join(" + "))
}

/// The release `cordon serve` number `i` on `backend`.
fn start_one(dir: &std::path::Path, i: usize, extra: &str, backend: Backend) -> Server {
    let config = dir.join(format!("bench-{i}.yaml"));
    let store = match backend {
        Backend::Sled => format!("store:\n  path: {}\n", dir.join("store").display()),
        Backend::Postgres { .. } => format!(
            "store:\n  kind: postgres\n  url: postgres://postgres@{}/{BENCH_DB}\n",
            pg_host()
        ),
    };
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {TOKEN}\n  rate_limit: {{ per_second: 1000000, burst: 1000000 }}\n{store}log:\n  format: json\n  level: \"info,cordon::engine=warn,cordon::actions=warn\"\n{}sources:\n  aws.guardduty:\n    auth:\n      bearer:\n        token: {TOKEN}\n  generic:\n    auth:\n      bearer:\n        token: {TOKEN}\n",
            if extra.is_empty() { "playbooks:\n  paths: []\n" } else { extra },
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cordon starts");
    let addr = read_addr(child.stderr.take().unwrap(), |line| {
        let event: Value = serde_json::from_str(line).ok()?;
        (event["message"] == "listening")
            .then(|| event["addr"].as_str().unwrap_or_default().to_owned())
    });
    Server { child, addr }
}

/// This same binary as the bare handler.
pub fn start_ceiling() -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("CORDON_BENCH_ROLE", "ceiling")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = read_addr(child.stdout.take().unwrap(), |line| {
        line.strip_prefix("listening ").map(str::to_owned)
    });
    Server { child, addr }
}

pub fn read_addr(
    pipe: impl std::io::Read + Send + 'static,
    find: impl Fn(&str) -> Option<String> + Send + 'static,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = find(&line) {
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server reports its address")
        .parse()
        .unwrap()
}

/// VmHWM of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// A `/proc/PID/status` figure in KiB (0 when unreadable).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) process `pid` used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name (which may hold spaces), the state is field 3 of the line, so
    // utime and stime (fields 14 and 15, in ticks of 1/100 s) are 11 and 12 here.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds used so far by every `postgres` process this user can see (the server's
/// backends, WAL writer and checkpointer): with the cordon processes' own, where the time goes.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

/// The value of a metric (summed over its label sets that contain `labels`) from `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str, labels: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// A keep-alive HTTP/1 connection to `addr`.
pub async fn connect(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<axum::body::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// POSTs `body` to `/v1/alerts/{source}` with the bench token; the status, or `None` when the
/// connection failed.
pub async fn post_alert(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<axum::body::Bytes>>,
    addr: SocketAddr,
    source: &str,
    body: String,
) -> Option<u16> {
    use http_body_util::BodyExt;
    let request = hyper::Request::post(format!("/v1/alerts/{source}"))
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Some(status)
}

/// Posts `n` alerts built by `body` to `/v1/alerts/{source}`, `concurrency` at a time, request
/// `i` to `addrs[i % addrs.len()]` (round robin over the replicas).
pub async fn post_n(
    addrs: &[SocketAddr],
    source: &str,
    concurrency: usize,
    n: u64,
    body: fn(u64) -> String,
) -> u64 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, errors, source) = (next.clone(), errors.clone(), source.to_owned());
        let addrs = addrs.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut senders = Vec::new();
            for addr in &addrs {
                senders.push(connect(*addr).await);
            }
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let at = (i % addrs.len() as u64) as usize;
                match post_alert(&mut senders[at], addrs[at], &source, body(i)).await {
                    Some(202) => {}
                    Some(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    errors.load(Ordering::Relaxed)
}

/// The load generator's runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The machine's cores, for the report's first line.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}
