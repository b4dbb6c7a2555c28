//! JetStream intake throughput: how many alerts a second one `cordon serve` takes from a NATS
//! JetStream stream, stores durably (sled, every batch fsynced) and acknowledges.
//!
//! `cargo bench --bench jetstream_intake` publishes `BENCH_ALERTS` generic alerts (default 50 000,
//! each its own dedup key, on one of 1 000 hosts, ~300 bytes) to a fresh stream on the NATS server
//! at `CORDON_TEST_NATS_URL` (default nats://127.0.0.1:4222), then starts the server with
//! `intake.jetstream` on that stream and times it from the consumer's creation until every message
//! is acknowledged. `BENCH_BATCH` and `BENCH_WORKERS` set the consumer's batch and workers
//! (default 256 and 2). The server, NATS and the publisher share the machine's cores.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use async_nats::jetstream;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn outstanding(context: &jetstream::Context, stream: &str, consumer: &str) -> Option<u64> {
    let stream = context.get_stream(stream).await.ok()?;
    let info = stream.consumer_info(consumer).await.ok()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

async fn run() {
    let alerts = env("BENCH_ALERTS", 50_000);
    let batch = env("BENCH_BATCH", 256);
    let workers = env("BENCH_WORKERS", 2);
    let url = std::env::var("CORDON_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let client = async_nats::connect(&url).await.expect("NATS answers");
    let context = jetstream::new(client);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("cordon.bench.{unique}");
    let stream = format!("CORDON_BENCH_{unique}");
    context
        .create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .expect("the bench stream is created");

    let published = Instant::now();
    let mut acks = Vec::new();
    for i in 0..alerts {
        let body = serde_json::to_vec(&serde_json::json!({
            "title": format!("Outbound connection to a known mining pool {i}"),
            "kind": "miner.connection",
            "severity": 8,
            "resource": {"kind": "aws.ec2.instance", "id": format!("i-{:017x}", i % 1000), "region": "eu-west-1", "account": "123456789012"},
            "network": {"remote_ip": "203.0.113.7", "remote_port": 3333},
            "dedup_key": format!("bench-{i}"),
        }))
        .unwrap();
        acks.push(
            context
                .publish(format!("{subject}.generic"), body.into())
                .await
                .unwrap(),
        );
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    println!(
        "published {alerts} alerts in {:.2} s ({:.0}/s)",
        published.elapsed().as_secs_f64(),
        alerts as f64 / published.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let consumer = format!("bench-{unique}");
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: bench-admin-token\nstore:\n  path: {}\nlog:\n  format: json\n  level: warn\nplaybooks:\n  paths: []\nintake:\n  jetstream:\n    url: {url}\n    stream: {stream}\n    consumer: {consumer}\n    subject: {subject}\n    batch: {batch}\n    workers: {workers}\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let bin =
        std::env::var("CORDON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cordon").to_owned());
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cordon starts");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});

    // From the consumer's creation (the server is up and connected) to the last acknowledgement.
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut samples = Vec::new();
    loop {
        let left = outstanding(&context, &stream, &consumer).await;
        if let Some(left) = left {
            let at = *started.get_or_insert_with(Instant::now);
            samples.push((at.elapsed(), left));
            if left == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not drain the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.unwrap().elapsed();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "batch {batch}, workers {workers}: {alerts} alerts stored and acknowledged in {:.2} s: {:.0} alerts/s",
        took.as_secs_f64(),
        alerts as f64 / took.as_secs_f64()
    );
    let _ = context.delete_stream(&stream).await;
}
