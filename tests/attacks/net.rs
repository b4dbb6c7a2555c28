//! The network surface: what a playbook's `core.http` may be made to reach (SSRF), and what a
//! sender can do to intake and to the server's connections (replayed SNS deliveries, slow
//! headers, slow bodies, floods). Each test drives the real server on 127.0.0.1:0.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fake::{self, FakeServer};
use crate::support::*;

/// A stand-in for the cloud metadata service: whatever it is asked, it hands out credentials.
async fn metadata_service() -> FakeServer {
    fake::serve(Router::new().fallback(|| async { "AKIA-role-credentials" })).await
}

/// A server running playbook `fetch`, whose one step is `core.http` GET `url`, with `allow` as
/// the playbook's `http_allow`.
async fn fetching(url: &str, allow: &[&str]) -> (TestServer, tempfile::TempDir) {
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "fetch",
        &format!(
            "id: fetch\nname: Fetch\non:\n  source: generic\nsteps:\n  - id: fetch\n    uses: core.http\n    with: {{ url: \"{url}\" }}\n"
        ),
    );
    let allow: Vec<String> = allow.iter().map(|h| format!("\"{h}\"")).collect();
    let config = format!(
        "playbooks:\n  paths: [{}]\n  http_allow:\n    fetch: [{}]\n{}",
        playbooks.path().display(),
        allow.join(", "),
        all_sources()
    );
    (TestServer::start_with(&config).await, playbooks)
}

/// Posts an alert, waits for the `fetch` run to finish; the step as the admin API shows it.
async fn fetch_step(server: &TestServer) -> Value {
    let (_, answer) = server
        .post_generic(&generic_alert("SSRF probe", "host-ssrf"))
        .await;
    let run = server
        .run_for_alert(answer["alerts"][0]["alert_id"].as_str().unwrap())
        .await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "failed", "{}", done["run"]);
    done["run"]["steps"]["fetch"].clone()
}

#[tokio::test]
async fn a_dns_name_resolving_to_loopback_is_not_called_even_when_http_allow_names_it() {
    let metadata = metadata_service().await;
    // `localhost` is in http_allow, but 127.0.0.1, where it resolves, is not.
    let url = format!(
        "{}/latest/meta-data/iam/security-credentials/",
        metadata.base.replace("127.0.0.1", "localhost")
    );
    let (server, _dir) = fetching(&url, &["localhost"]).await;
    let step = fetch_step(&server).await;
    let error = step["error"].as_str().unwrap();
    assert!(
        error.contains("`localhost` is 127.0.0.1, a loopback address")
            && error.contains("playbooks.http_allow"),
        "{error}"
    );
    assert!(!step.to_string().contains("AKIA"), "{step}");
    assert_eq!(metadata.requests().len(), 0, "the request was sent");
}

#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_not_followed() {
    let metadata = metadata_service().await;
    let to = format!(
        "{}/latest/meta-data/iam/security-credentials/",
        metadata.base.replace("127.0.0.1", "localhost")
    );
    // The attacker's host, allowed by its address (127.0.0.2, another loopback address, stands
    // in for a public one), answers with a redirect to the metadata service under a name the
    // host check lets through: only the address check stands in the way.
    let attacker = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let report = format!("http://{}/report", attacker.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    let redirect = Router::new().route(
        "/report",
        get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let to = to.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, to)]) }
        }),
    );
    tokio::spawn(async move { axum::serve(attacker, redirect).await });
    let (server, _dir) = fetching(&report, &["127.0.0.2", "localhost"]).await;
    let step = fetch_step(&server).await;
    let error = step["error"].as_str().unwrap();
    assert!(
        error.contains("`localhost` is 127.0.0.1, a loopback address"),
        "{error}"
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(metadata.requests().len(), 0, "the redirect was followed");
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:cordon-guardduty";

fn sns_config(fake: &FakeSns) -> String {
    format!(
        "sources:\n  aws.guardduty:\n    auth:\n      sns:\n        topics: [\"{TOPIC}\"]\n        endpoint_override: {}\n        replay_window: 1h\n",
        fake.base
    )
}

/// The recorded GuardDuty delivery on our topic, sent at `sent`, signed with the test key.
fn delivery(sent: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let mut envelope: Value = serde_json::from_slice(&read_fixture(
        "alerts/aws_guardduty/sns_wrapped_eventbridge_ec2_sshbruteforce_sample.json",
    ))
    .unwrap();
    envelope["TopicArn"] = json!(TOPIC);
    envelope["MessageId"] = json!(uuid::Uuid::now_v7().to_string());
    envelope["Timestamp"] = json!(sent.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    envelope["SigningCertURL"] =
        json!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem");
    envelope.as_object_mut().unwrap().remove("Signature");
    sign_sns(envelope, "2")
}

async fn deliver(server: &Client, body: Vec<u8>) -> (u16, Value) {
    server
        .send(
            server
                .http
                .post(format!("{}/v1/alerts/aws.guardduty", server.base))
                .header("x-amz-sns-message-type", "Notification")
                .body(body),
        )
        .await
}

#[tokio::test]
async fn a_copied_sns_delivery_sent_again_is_refused_even_after_a_restart() {
    let fake = FakeSns::start().await;
    let server = TestServer::start_with(&sns_config(&fake)).await;
    let copy = delivery(chrono::Utc::now());
    let (status, answer) = deliver(&server, copy.clone()).await;
    assert_eq!(status, 202, "{answer}");

    let (status, answer) = deliver(&server, copy.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("replayed_message")),
        "{answer}"
    );

    let dir = server.stop().await;
    let server = TestServer::start_in(dir, &sns_config(&fake)).await;
    let (status, answer) = deliver(&server, copy).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("replayed_message")),
        "{answer}"
    );
    let alerts = server.stored_alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["repeat_count"], 1, "the copies were not counted");
}

#[tokio::test]
async fn an_sns_delivery_older_than_the_window_is_refused() {
    let fake = FakeSns::start().await;
    let server = TestServer::start_with(&sns_config(&fake)).await;
    let old = delivery(chrono::Utc::now() - chrono::TimeDelta::minutes(61));
    let (status, answer) = deliver(&server, old).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("stale_timestamp")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("replay window"),
        "{answer}"
    );
    let ahead = delivery(chrono::Utc::now() + chrono::TimeDelta::minutes(30));
    let (status, answer) = deliver(&server, ahead).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("stale_timestamp")),
        "{answer}"
    );
    assert!(server.stored_alerts().await.is_empty());
}

/// `server.header_read_timeout` and `server.body_read_timeout` of [`impatient_server`].
const TIMEOUT: Duration = Duration::from_secs(1);
/// What closing a connection may take beyond its timeout (timer granularity, a busy machine).
const SLACK: Duration = Duration::from_secs(3);

/// A running server with 1 s header and body timeouts and `extra` config; its client. The server
/// runs until the test ends.
async fn impatient_server(extra: &str) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  header_read_timeout: 1s\n  body_read_timeout: 1s\nstore:\n  path: {}\nplaybooks:\n  paths: []\n{extra}",
        dir.path().join("store").display()
    );
    let config = cordon::config::parse(&text, std::path::Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let server = cordon::app::Server::bind(config).await.expect("binds");
    let client = Client::new(format!("http://{}", server.local_addr()));
    tokio::spawn(server.run(std::future::pending()));
    (client, dir)
}

/// A normal client's request, answered while the attack goes on. On a new connection: the
/// server closes idle ones after `header_read_timeout`, as the attackers' own.
async fn served(client: &Client) {
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let answer = fresh
        .get(format!("{}/healthz", client.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a normal client is answered");
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn connections_sending_half_their_headers_are_closed_while_others_are_served() {
    let (client, _dir) = impatient_server(&all_sources()).await;
    let address = client.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"POST /v1/alerts/falco HTTP/1.1\r\nHost: cordon\r\nContent-Type: appl")
            .await
            .unwrap();
        slow.push(stream);
    }
    served(&client).await;
    for stream in &mut slow {
        let (_, closed) = read_until_closed(stream, TIMEOUT + SLACK).await;
        assert!(
            closed,
            "a half-sent request still held its connection after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    served(&client).await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_with_408_while_others_are_served() {
    let (client, _dir) = impatient_server(&all_sources()).await;
    let address = client.base.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            format!(
                "POST /v1/alerts/falco HTTP/1.1\r\nHost: cordon\r\nAuthorization: Bearer {INTAKE_TOKEN}\r\nContent-Length: 100000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 100 ms, for as long as the server takes them.
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    served(&client).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(TIMEOUT + SLACK, reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        read.is_ok(),
        "the connection stayed open after {:?}: {answer}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"body_timeout\""), "{answer}");
    assert!(answer.contains("server.body_read_timeout"), "{answer}");
    trickle.abort();
    served(&client).await;
}

#[tokio::test]
async fn a_flood_on_one_source_gets_429_with_retry_after_and_other_sources_go_on() {
    let sources = all_sources().replace(
        "  falco:\n    auth:",
        "  falco:\n    rate_limit: { per_second: 1, burst: 3 }\n    auth:",
    );
    assert_ne!(sources, all_sources(), "the falco source is configured");
    let (client, _dir) = impatient_server(&sources).await;
    let alert = read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json");
    for _ in 0..3 {
        let (status, answer) = client.post_alert("falco", alert.clone()).await;
        assert_eq!(status, 202, "{answer}");
    }
    let response = client
        .http
        .post(format!("{}/v1/alerts/falco", client.base))
        .bearer_auth(INTAKE_TOKEN)
        .body(alert.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "rate_limited", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("1 requests per second"),
        "{answer}"
    );
    // Another source has its own budget.
    let (status, answer) = client
        .post_generic(&generic_alert("Port scan", "host-flood"))
        .await;
    assert_eq!(status, 202, "{answer}");
}

/// Reads from `stream` until the server closes it; what it sent, and whether it closed within
/// `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}
