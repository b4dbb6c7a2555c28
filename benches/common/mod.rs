//! What the benchmarks share: a `cordon serve` process on a fresh store, and reading what it says.
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

/// The release `cordon serve` on a fresh store.
pub fn start_cordon(dir: &std::path::Path) -> Server {
    start_cordon_with(dir, "")
}

/// The release `cordon serve` on the store in `dir`, with `extra` config sections.
pub fn start_cordon_with(dir: &std::path::Path, extra: &str) -> Server {
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\n  level: \"info,cordon::engine=warn,cordon::actions=warn\"\n{}sources:\n  aws.guardduty:\n    auth:\n      bearer:\n        token: {TOKEN}\n  generic:\n    auth:\n      bearer:\n        token: {TOKEN}\n",
            dir.join("store").display(),
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
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
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

/// Posts `n` alerts built by `body` to `/v1/alerts/{source}`, `concurrency` at a time.
pub async fn post_n(
    addr: SocketAddr,
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
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match post_alert(&mut sender, addr, &source, body(i)).await {
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
