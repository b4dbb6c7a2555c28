//! Alerts in from NATS JetStream (the machine's server, JetStream on): the real `cordon serve`
//! consumes a stream with a durable consumer, is SIGKILLed midway through 10 000 alerts and
//! started again, and every alert is stored exactly once; a message the consumer cannot take is
//! terminated rather than handed out forever.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::json;
use support::{ADMIN_TOKEN, Process};

const ALERTS: usize = 10_000;

fn nats_url() -> String {
    std::env::var("CORDON_TEST_NATS_URL")
        .expect("CORDON_TEST_NATS_URL names the NATS server with JetStream (scripts/peers)")
}

/// A stream of its own for this test (names unique per run, so tests never share one).
async fn stream(context: &jetstream::Context, unique: &str, subject: &str) -> String {
    let name = format!("CORDON_IN_{unique}");
    context
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .expect("the test stream is created");
    name
}

fn write_config(dir: &Path, url: &str, stream: &str, consumer: &str, subject: &str) -> PathBuf {
    let path = dir.join("cordon.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\nplaybooks:\n  paths: []\nintake:\n  jetstream:\n    url: {url}\n    stream: {stream}\n    consumer: {consumer}\n    subject: {subject}\n    ack_wait: 2s\n    batch: 200\n",
        dir.join("store").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Messages of the consumer not yet acknowledged, handed out or not.
async fn outstanding(context: &jetstream::Context, stream: &str, consumer: &str) -> u64 {
    let stream = context.get_stream(stream).await.unwrap();
    let info = stream.consumer_info(consumer).await;
    match info {
        Ok(info) => info.num_pending + info.num_ack_pending as u64,
        Err(_) => u64::MAX,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_alerts_survive_a_sigkill_midway_and_are_stored_exactly_once() {
    let url = nats_url();
    let client = async_nats::connect(&url).await.expect("NATS answers");
    let context = jetstream::new(client);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("cordon.test.in.{unique}");
    let stream = stream(&context, &unique, &subject).await;
    let consumer = format!("cordon-{unique}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &url, &stream, &consumer, &subject);

    // Published before and while the server consumes.
    let mut acks = Vec::new();
    for i in 0..ALERTS {
        let body = serde_json::to_vec(&json!({
            "title": format!("js-{i}"),
            "severity": 5,
            "resource": { "kind": "host", "id": format!("host-{}", i % 50) },
            "dedup_key": format!("js-{i}"),
        }))
        .unwrap();
        acks.push(
            context
                .publish(format!("{subject}.generic"), body.into())
                .await
                .unwrap(),
        );
        // The client holds only so many unacknowledged publishes: take the acks as they come.
        if acks.len() == 500 {
            for ack in acks.drain(..) {
                ack.await.expect("JetStream stored the alert");
            }
        }
    }
    // One the consumer cannot take: a source Cordon does not know.
    acks.push(
        context
            .publish(format!("{subject}.nonsense"), "{}".into())
            .await
            .unwrap(),
    );
    for ack in acks {
        ack.await.expect("JetStream stored the alert");
    }

    let mut server = Process::start(&config);
    // Kill it once it has taken part of them, not all.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = outstanding(&context, &stream, &consumer).await;
        if left < (ALERTS as u64) * 3 / 4 {
            assert!(
                left > 0,
                "the server took everything before it could be killed"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server does not consume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: messages in flight are never acknowledged.
    server.child.wait().unwrap();
    drop(server);

    let mut server = Process::start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while outstanding(&context, &stream, &consumer).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted server did not finish the stream"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store is read by the test once the server has let go of it.
    server.signal("-TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    drop(server);

    let store_config = cordon::config::StoreConfig {
        path: dir.path().join("store"),
        ..Default::default()
    };
    let store =
        cordon::store::SledStore::open(&store_config, &cordon::config::GroupingConfig::default())
            .unwrap();
    use cordon::store::Store;
    let alerts = store
        .alerts(&cordon::store::AlertQuery {
            limit: ALERTS * 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for alert in &alerts {
        *count.entry(alert.title.clone()).or_default() += 1;
    }
    let missing: Vec<usize> = (0..ALERTS)
        .filter(|i| !count.contains_key(&format!("js-{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} alerts lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<(&String, &usize)> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(alerts.len(), ALERTS, "nothing else was stored");
    store.close().await.unwrap();
    context.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_consumer_and_a_bad_payload_is_terminated() {
    // Two in-process servers on one PostgreSQL database take one consumer's messages between them.
    let url = nats_url();
    let client = async_nats::connect(&url).await.expect("NATS answers");
    let context = jetstream::new(client);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("cordon.test.in.{unique}");
    let stream = stream(&context, &unique, &subject).await;
    let consumer = format!("cordon-{unique}");
    let url_pg = support::pg::fresh_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: 5s\nstore:\n  kind: postgres\n  url: \"{url_pg}\"\n  pool_size: 4\nlog:\n  format: json\nplaybooks:\n  paths: []\nintake:\n  jetstream:\n    url: {url}\n    stream: {stream}\n    consumer: {consumer}\n    subject: {subject}\n    ack_wait: 2s\n    batch: 20\n"
        ),
    )
    .unwrap();
    let a = Process::start(&config);
    let b = Process::start(&config);
    let n = 400;
    for i in 0..n {
        let body =
            serde_json::to_vec(&json!({"title": format!("r-{i}"), "dedup_key": format!("r-{i}")}))
                .unwrap();
        context
            .publish(format!("{subject}.generic"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    context
        .publish(format!("{subject}.generic"), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while outstanding(&context, &stream, &consumer).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas did not finish the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (metrics_a, metrics_b) = (a.metrics().await, b.metrics().await);
    let taken = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("cordon_alerts_accepted_total{source=\"generic\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    let (by_a, by_b) = (taken(&metrics_a), taken(&metrics_b));
    assert_eq!(by_a + by_b, n, "each message stored by one replica");
    assert!(
        by_a > 0 && by_b > 0,
        "both replicas took a share: {by_a} and {by_b}"
    );
    let rejected = format!("{metrics_a}{metrics_b}");
    assert!(
        rejected.contains("reason=\"bad_payload\""),
        "the bad payload is counted as refused"
    );
    drop((a, b));
    context.delete_stream(&stream).await.unwrap();
}
