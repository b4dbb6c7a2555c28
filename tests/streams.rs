//! Streams out: alerts, incident changes, run events and audit entries forwarded through the
//! durable outbox to Splunk HEC and Elasticsearch bulk (fakes following their documented APIs,
//! tests/support/siem.rs), a generic signed webhook, rsyslog (Debian's, started here on 127.0.0.1
//! with TLS and a test CA; RFC 5424 and RFC 3164) and the machine's NATS JetStream. Each
//! destination is down for part of the test and comes back: nothing is lost, and each incident's
//! events arrive in the order they happened.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, all_sources, wait_until};

/// Alerts per test, over [`INCIDENTS`] resources (one incident each).
const ALERTS: usize = 40;
const INCIDENTS: usize = 4;

/// The retry backoff the tests run with, so an outage's end is noticed quickly.
const RETRY: &str = "tickets:\n  retry:\n    base: 100ms\n    max: 400ms\n";

fn alert(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "title": format!("stream-{i}"),
        "kind": "stream.test",
        "severity": 7,
        "resource": { "kind": "host", "id": format!("host-{}", i % INCIDENTS) },
        "dedup_key": format!("stream-{i}"),
    }))
    .unwrap()
}

/// Posts alerts `range` in order.
async fn post(server: &TestServer, range: std::ops::Range<usize>) {
    for i in range {
        let (status, body) = server.post_generic(&alert(i)).await;
        assert_eq!(status, 202, "{body}");
    }
}

/// The number in an alert event's title (`stream-7` is 7).
fn number(event: &Value) -> Option<usize> {
    event["data"]["title"]
        .as_str()?
        .strip_prefix("stream-")?
        .parse()
        .ok()
}

/// Checks that `events` (as received, oldest first) hold every alert once at least, that each
/// incident's alerts came in the order they were posted, and that incident events are there too.
fn check_complete_and_ordered(events: &[Value], what: &str) {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut by_incident: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "alert") {
        let n =
            number(e).unwrap_or_else(|| panic!("{what}: an alert event without its title: {e}"));
        *seen.entry(n).or_default() += 1;
        if seen[&n] == 1 {
            by_incident
                .entry(e["incident_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(n);
        }
    }
    let missing: Vec<usize> = (0..ALERTS).filter(|n| !seen.contains_key(n)).collect();
    assert!(missing.is_empty(), "{what}: alerts lost: {missing:?}");
    assert_eq!(by_incident.len(), INCIDENTS, "{what}: {by_incident:?}");
    for (incident, numbers) in &by_incident {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, &sorted, "{what}: incident {incident} out of order");
    }
    let opened = events
        .iter()
        .filter(|e| e["type"] == "incident" && e["event"] == "incident.opened")
        .count();
    assert!(
        opened >= INCIDENTS,
        "{what}: {opened} incident.opened events"
    );
}

/// Waits until `events()` holds every alert.
async fn wait_for_all(what: &str, events: impl Fn() -> Vec<Value>) {
    wait_until(
        Duration::from_secs(60),
        || {
            let have: std::collections::BTreeSet<usize> =
                events().iter().filter_map(number).collect();
            format!("{what}: {} of {ALERTS} alerts arrived", have.len())
        },
        async || {
            let have: std::collections::BTreeSet<usize> =
                events().iter().filter_map(number).collect();
            have.len() == ALERTS
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_and_elasticsearch_get_every_event_through_an_outage_in_order() {
    let hec = support::siem::hec("hec-token-1").await;
    let es = support::siem::elastic().await;
    // Both down from the start: what happens meanwhile waits in the outbox.
    hec.server.refuse().await;
    es.server.refuse().await;
    let extra = format!(
        "{}{RETRY}streams:\n  splunk:\n    to:\n      splunk_hec:\n        url: {}\n        token: hec-token-1\n        index: soc\n    batch:\n      max_events: 7\n      max_wait: 50ms\n  elastic:\n    to:\n      elasticsearch:\n        url: {}\n        index: cordon-test\n    filter:\n      kinds: [alert, incident]\n",
        all_sources(),
        hec.server.base,
        es.server.base
    );
    let server = TestServer::start_with(&extra).await;
    post(&server, 0..ALERTS / 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(hec.events.lock().unwrap().is_empty());
    let pending = server.state.outbox.pending().await.unwrap();
    assert!(
        pending
            .iter()
            .filter(|e| e.target == "stream:splunk")
            .count()
            >= ALERTS / 2,
        "the events wait in the outbox while Splunk is down"
    );
    hec.server.accept().await;
    es.server.accept().await;
    post(&server, ALERTS / 2..ALERTS).await;

    let hec_events = || {
        hec.events
            .lock()
            .unwrap()
            .iter()
            .map(|o| o["event"].clone())
            .collect::<Vec<Value>>()
    };
    wait_for_all("Splunk HEC", hec_events).await;
    let received = hec.events.lock().unwrap().clone();
    for object in &received {
        assert_eq!(object["index"], "soc");
        assert_eq!(object["source"], "cordon");
        assert!(object["time"].as_f64().unwrap() > 1.6e9, "{object}");
        assert_eq!(
            object["sourcetype"],
            format!("cordon:{}", object["event"]["type"].as_str().unwrap())
        );
    }
    let events = hec_events();
    check_complete_and_ordered(&events, "Splunk HEC");
    // Delivered once each: HEC has no idempotency, so a repeat would show here.
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event was sent twice");
    // Batched: fewer requests than events.
    let requests = hec.server.count("POST /services/collector/event");
    assert!(
        requests < events.len(),
        "{requests} requests for {} events",
        events.len()
    );

    let es_events = || {
        es.docs
            .lock()
            .unwrap()
            .get("cordon-test")
            .map(|docs| docs.iter().map(|(_, d)| d.clone()).collect())
            .unwrap_or_default()
    };
    wait_for_all("Elasticsearch", es_events).await;
    let docs = es_events();
    check_complete_and_ordered(&docs, "Elasticsearch");
    for doc in &docs {
        assert!(doc["@timestamp"].is_string());
        // The filter: alerts and incident changes only.
        assert!(doc["type"] == "alert" || doc["type"] == "incident", "{doc}");
    }
    for (id, doc) in es.docs.lock().unwrap()["cordon-test"].iter() {
        assert_eq!(doc["id"].as_str(), Some(id.as_str()));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_signed_batches_and_the_filters_hold_back_what_they_should() {
    let hook = support::fake::serve(axum::Router::new().fallback(|| async { "ok" })).await;
    let extra = format!(
        "{}{RETRY}streams:\n  hook:\n    to:\n      webhook:\n        url: {}/events\n        secret: hook-secret\n    filter:\n      kinds: [alert, audit]\n      min_severity: 6\n      sources: [generic]\n",
        all_sources(),
        hook.base
    );
    let server = TestServer::start_with(&extra).await;
    post(&server, 0..ALERTS).await;
    // Adding a person and a token is audited: the audit entries follow.
    server.token_of("cli:alice").await;
    // One below the filter's severity: never forwarded.
    let low = serde_json::to_vec(&json!({"title": "low-1", "severity": 3, "dedup_key": "low-1"}))
        .unwrap();
    assert_eq!(server.post_generic(&low).await.0, 202);
    let events = || {
        hook.requests()
            .iter()
            .flat_map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect::<Vec<Value>>()
    };
    wait_for_all("the webhook", events).await;
    // Every request is signed over its timestamp and body, as the HMAC intake checks.
    let auth: cordon::config::HmacAuth = serde_yaml::from_str("secret: hook-secret").unwrap();
    for request in hook.requests() {
        cordon::intake::verify::hmac(
            &request.headers,
            &request.body,
            &auth,
            chrono::Utc::now().timestamp(),
        )
        .expect("the webhook request is signed");
    }
    let all = events();
    assert!(
        all.iter()
            .all(|e| e["type"] == "alert" || e["type"] == "audit")
    );
    assert!(
        !all.iter().any(|e| e["data"]["title"] == "low-1"),
        "below min_severity"
    );
    let alerts: Vec<&Value> = all.iter().filter(|e| e["type"] == "alert").collect();
    assert_eq!(alerts.len(), ALERTS, "each alert once");
    // Audit entries go out from the log, in log order, with their hashes.
    wait_until(
        Duration::from_secs(20),
        || "the audit entries of the new person and token".to_owned(),
        async || {
            let audit: Vec<String> = events()
                .iter()
                .filter(|e| e["type"] == "audit")
                .map(|e| e["event"].as_str().unwrap().to_owned())
                .collect();
            audit.contains(&"person.saved".to_owned())
                && audit.contains(&"token.created".to_owned())
        },
    )
    .await;
    let seqs: Vec<u64> = events()
        .iter()
        .filter(|e| e["type"] == "audit")
        .map(|e| e["data"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in log order, none missing: {seqs:?}"
    );
    for e in events().iter().filter(|e| e["type"] == "audit") {
        assert_eq!(e["id"], format!("audit-{}", e["data"]["seq"]));
        assert!(
            e["data"]["hash"].as_str().is_some_and(|h| h.len() == 64),
            "{e}"
        );
    }
    server.stop().await;
}

// ---- rsyslog ----

/// An rsyslogd of Debian's package on 127.0.0.1, with TLS (GnuTLS, the test CA's certificate)
/// on two ports: one writes what it parsed as RFC 5424, the other as RFC 3164.
struct Rsyslog {
    dir: PathBuf,
    child: Option<std::process::Child>,
    port5424: u16,
    port3164: u16,
}

impl Rsyslog {
    fn start(dir: &Path, ca: &support::paging::TestCa) -> Rsyslog {
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            child: None,
            port5424: support::free_port(),
            port3164: support::free_port(),
        };
        let conf = format!(
            r#"global(workDirectory="{dir}" maxMessageSize="64k"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
template(name="rfc5424" type="string" string="%protocol-version%|%pri%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\n")
template(name="rfc3164" type="string" string="%pri%|%hostname%|%syslogtag%|%msg%\n")
ruleset(name="r5424") {{ action(type="omfile" file="{dir}/rfc5424.log" template="rfc5424") }}
ruleset(name="r3164") {{ action(type="omfile" file="{dir}/rfc3164.log" template="rfc3164") }}
input(type="imtcp" address="127.0.0.1" port="{p1}" ruleset="r5424")
input(type="imtcp" address="127.0.0.1" port="{p2}" ruleset="r3164")
"#,
            dir = dir.display(),
            ca = ca.ca.display(),
            cert = ca.cert.display(),
            key = ca.key.display(),
            p1 = r.port5424,
            p2 = r.port3164,
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        r.up();
        r
    }

    fn up(&mut self) {
        let rsyslogd = std::env::var("CORDON_TEST_RSYSLOGD")
            .expect("CORDON_TEST_RSYSLOGD names Debian's rsyslogd (scripts/peers installs it)");
        let child = std::process::Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rsyslogd starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port5424)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.port3164)).is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM, so it writes what it took).
    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_takes_rfc5424_and_rfc3164_over_tls_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::paging::TestCa::make(dir.path());
    let mut rsyslog = Rsyslog::start(dir.path(), &ca);
    let extra = format!(
        "{}{RETRY}streams:\n  modern:\n    to:\n      syslog:\n        host: 127.0.0.1\n        port: {}\n        hostname: cordon-test\n        tls:\n          ca_file: {}\n    filter:\n      kinds: [alert, incident]\n  legacy:\n    to:\n      syslog:\n        host: 127.0.0.1\n        port: {}\n        format: rfc3164\n        hostname: cordon-test\n        tls:\n          ca_file: {}\n    filter:\n      kinds: [alert]\n",
        all_sources(),
        rsyslog.port5424,
        ca.ca.display(),
        rsyslog.port3164,
        ca.ca.display(),
    );
    let server = TestServer::start_with(&extra).await;
    post(&server, 0..ALERTS / 2).await;
    // The collector goes away while events keep coming, and comes back.
    rsyslog.down();
    post(&server, ALERTS / 2..ALERTS * 3 / 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rsyslog.up();
    post(&server, ALERTS * 3 / 4..ALERTS).await;

    let parse5424 = |lines: Vec<String>| -> Vec<Value> {
        lines
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(7, '|').collect();
                assert_eq!(fields.len(), 7, "{line}");
                // rsyslog parsed it as RFC 5424: version 1, our host, app and MSGID.
                assert_eq!(
                    (fields[0], fields[2], fields[3]),
                    ("1", "cordon-test", "cordon"),
                    "{line}"
                );
                let event: Value = serde_json::from_str(fields[6]).expect("the MSG is the event");
                assert_eq!(
                    fields[4],
                    event["type"].as_str().unwrap(),
                    "MSGID is the type"
                );
                assert!(
                    fields[5].starts_with(&format!(
                        "[cordon@32473 id=\"{}\"",
                        event["id"].as_str().unwrap()
                    )),
                    "{line}"
                );
                // local4 and the severity's level: 7 is `error` (3).
                if event["type"] == "alert" {
                    assert_eq!(fields[1], "163", "{line}");
                }
                event
            })
            .collect()
    };
    wait_for_all("rsyslog RFC 5424", || {
        parse5424(rsyslog.lines("rfc5424.log"))
    })
    .await;
    check_complete_and_ordered(&parse5424(rsyslog.lines("rfc5424.log")), "rsyslog RFC 5424");

    let parse3164 = |lines: Vec<String>| -> Vec<Value> {
        lines
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(4, '|').collect();
                assert_eq!(fields.len(), 4, "{line}");
                assert_eq!(
                    (fields[0], fields[1], fields[2]),
                    ("163", "cordon-test", "cordon:"),
                    "{line}"
                );
                serde_json::from_str(fields[3].trim_start()).expect("the MSG is the event")
            })
            .collect()
    };
    wait_for_all("rsyslog RFC 3164", || {
        parse3164(rsyslog.lines("rfc3164.log"))
    })
    .await;
    let legacy = parse3164(rsyslog.lines("rfc3164.log"));
    assert!(legacy.iter().all(|e| e["type"] == "alert"));
    server.stop().await;
    rsyslog.down();
}

// ---- NATS JetStream ----

/// A TCP relay to the machine's NATS server that can be cut (an outage: connections dropped,
/// new ones refused) and restored on the same port.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    async fn start(to: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = Arc::new(cut);
        let relay = Relay { addr, cut };
        relay.serve(listener, to.to_owned());
        relay
    }

    fn serve(&self, listener: tokio::net::TcpListener, to: String) {
        let cut = self.cut.clone();
        tokio::spawn(async move {
            let mut watch = cut.subscribe();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let to = to.clone();
                        let mut stop = cut.subscribe();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = stop.wait_for(|c| *c) => {}
                            }
                        });
                    }
                    _ = watch.wait_for(|c| *c) => return,
                }
            }
        });
    }

    async fn cut(&self) {
        self.cut.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn restore(&self, to: &str) {
        self.cut.send_replace(false);
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener, to.to_owned());
    }
}

fn nats_url() -> String {
    std::env::var("CORDON_TEST_NATS_URL")
        .expect("CORDON_TEST_NATS_URL names the NATS server with JetStream (scripts/peers)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_subjects_get_every_event_once_through_an_outage_in_order() {
    let url = nats_url();
    let nats_addr = url.trim_start_matches("nats://").to_owned();
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("cordon.test.out.{unique}");
    let client = async_nats::connect(&url).await.expect("NATS answers");
    let js = async_nats::jetstream::new(client);
    let stream_name = format!("CORDON_OUT_{unique}");
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{subject}.>")],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("the test stream is created");

    let relay = Relay::start(&nats_addr).await;
    let extra = format!(
        "{}{RETRY}streams:\n  bus:\n    to:\n      jetstream:\n        url: nats://{}\n        subject: {subject}\n    filter:\n      kinds: [alert, incident, run]\n",
        all_sources(),
        relay.addr
    );
    let server = TestServer::start_with(&extra).await;
    post(&server, 0..ALERTS / 2).await;
    relay.cut().await;
    post(&server, ALERTS / 2..ALERTS * 3 / 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.restore(&nats_addr).await;
    post(&server, ALERTS * 3 / 4..ALERTS).await;

    let read = async |stream: &mut async_nats::jetstream::stream::Stream| -> Vec<Value> {
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice::<Value>(&message.payload).unwrap());
            }
        }
        out
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = read(&mut stream).await;
        let have: std::collections::BTreeSet<usize> = events.iter().filter_map(number).collect();
        if have.len() == ALERTS {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "JetStream: {} of {ALERTS} alerts arrived",
            have.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_complete_and_ordered(&events, "JetStream");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "the stream holds each event once");
    server.stop().await;
    js.delete_stream(&stream_name).await.unwrap();
}
