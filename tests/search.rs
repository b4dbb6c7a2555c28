//! Search and pivots (src/search, docs/search.md).
//!
//! - Conformance: the shared fixtures (`../shared/fixtures/alerts`, through each source's
//!   normalizer) plus 100 000 generated alerts go into a sled store and a PostgreSQL store (a fresh
//!   schema of `CORDON_TEST_DATABASE_URL`; without it the test fails, saying so); every query
//!   answers the same hits in the same order on both, page by page, and the alert-only queries
//!   answer exactly what a plain filter over the alerts in memory says, in time order.
//! - The API and the CLI: a query that does not parse is a 400 naming the column (the CLI points
//!   at it), pages follow their cursor, a hunt finds an entity's alerts, incidents, evidence and
//!   the entities seen with it; the search needs a credential.
//! - A crash: the real binary SIGKILLed after intake answered and before the index committed
//!   those alerts; at the next start every alert is found once; `cordon reindex` rebuilds the
//!   same index.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cordon::alert::{Actor, Alert, Severity};
use cordon::config::{GroupingConfig, HumanDuration, StoreConfig, StoreKind};
use cordon::intake::formats::SourceKind;
use cordon::search::{self, DocType, Search};
use cordon::store::{AlertQuery, SledStore, Store, StoreError};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use support::*;

// ---------------------------------------------------------------------------------------------
// Conformance over both backends

fn grouping() -> GroupingConfig {
    GroupingConfig {
        dedup_window: HumanDuration::secs(3600),
        incident_window: HumanDuration::secs(4 * 3600),
        ..GroupingConfig::default()
    }
}

async fn open_sled(dir: &Path) -> Arc<dyn Store> {
    let config = StoreConfig {
        path: dir.join("store"),
        ..StoreConfig::default()
    };
    for _ in 0..200 {
        match SledStore::open(&config, &grouping()) {
            Ok(store) => return Arc::new(store),
            Err(StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("open sled: {e}"),
        }
    }
    panic!("the sled store stayed locked")
}

async fn open_postgres(url: &str) -> Arc<dyn Store> {
    let config = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(cordon::config::Secret::new(url)),
        pool_size: 4,
        ..StoreConfig::default()
    };
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    cordon::store::open(&config, &grouping(), metrics)
        .await
        .unwrap_or_else(|e| panic!("open postgres: {e}"))
}

/// What a sender would post for a fixture (as tests/fixtures.rs unwraps them).
fn payload(fixture: &Value) -> Vec<u8> {
    if let Some(body) = fixture.pointer("/responses/200/body") {
        return serde_json::to_vec(body).unwrap();
    }
    if fixture.get("Type").and_then(Value::as_str) == Some("Notification") {
        return fixture["Message"].as_str().unwrap().as_bytes().to_vec();
    }
    serde_json::to_vec(fixture).unwrap()
}

fn source_of(path: &Path) -> SourceKind {
    let folder = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    match folder {
        "alertmanager" => SourceKind::Alertmanager,
        "aws_cloudtrail" => SourceKind::AwsCloudTrail,
        "aws_guardduty" => SourceKind::AwsGuardDuty,
        "aws_securityhub" => SourceKind::AwsSecurityHub,
        "falco" => SourceKind::Falco,
        "gcp_scc" => SourceKind::GcpScc,
        "azure" if name.starts_with("defender") => SourceKind::AzureDefender,
        "azure" if name.starts_with("sentinel") => SourceKind::AzureSentinel,
        "azure" if name.starts_with("azure_monitor") => SourceKind::AzureMonitor,
        _ => panic!("no source known for fixture {}", path.display()),
    }
}

/// The shared fixtures' alerts, received one millisecond apart from `base`.
fn fixture_alerts(base: DateTime<Utc>) -> Vec<Alert> {
    let mut files = Vec::new();
    for folder in std::fs::read_dir(fixture("alerts")).expect("shared fixtures beside the repo") {
        for file in std::fs::read_dir(folder.unwrap().path()).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push(file);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 27, "found only {} fixtures", files.len());
    let mut alerts = Vec::new();
    for file in files {
        let fixture: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for mut alert in source_of(&file).normalize(&payload(&fixture)).unwrap() {
            alert.received_at = base + chrono::Duration::milliseconds(alerts.len() as i64 * 7 + 3);
            alerts.push(alert);
        }
    }
    alerts
}

const SOURCES: [&str; 6] = [
    "aws.guardduty",
    "falco",
    "aws.cloudtrail",
    "gcp.scc",
    "azure.defender",
    "generic",
];
const WORDS: [&str; 12] = [
    "tor relay",
    "brute force",
    "crypto miner",
    "port probe",
    "shell in container",
    "anomalous api call",
    "exfiltration",
    "root login",
    "privilege escalation",
    "data export",
    "credential access",
    "defense evasion",
];
const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "europe-west4", "westeurope"];

/// `n` generated alerts, one every 26 s back from `end` (30 days for 100 000), over pools of
/// addresses, principals, resources and pods, so terms repeat and entities co-occur.
pub fn generated_alerts(n: usize, end: DateTime<Utc>) -> Vec<Alert> {
    (0..n)
        .map(|i| {
            let observed = end - chrono::Duration::milliseconds((n - i) as i64 * 26_000);
            let source = SOURCES[i % SOURCES.len()];
            let words = WORDS[(i / 7) % WORDS.len()];
            let ip = format!("10.{}.{}.{}", i % 3, (i / 3) % 11, i % 13);
            let raw = json!({
                "event": format!("{words} seen from {ip}"),
                "seq": i,
                "detail": { "note": if i % 97 == 0 { "needle haystack" } else { "routine" } },
            });
            let raw = RawValue::from_string(raw.to_string()).unwrap();
            let mut alert = Alert::new(source, format!("kind.{}", i % 20), raw);
            alert.severity = Severity::new((i % 11) as u8, "");
            alert.title = format!("{words} on resource {}", i % 1000);
            alert.observed_at = observed;
            alert.received_at = observed + chrono::Duration::milliseconds(11);
            alert.resource.kind = Some(
                if i % 5 == 0 {
                    "k8s.pod"
                } else {
                    "aws.ec2.instance"
                }
                .into(),
            );
            alert.resource.id = Some(if i % 5 == 0 {
                format!("pod-{}", i % 300)
            } else {
                format!("i-{:04}", i % 1000)
            });
            alert.resource.region = Some(REGIONS[i % REGIONS.len()].into());
            alert.resource.account = Some(format!("{}", 111_111_111_111u64 + (i % 4) as u64));
            if i.is_multiple_of(3) {
                alert.actor = Some(Actor {
                    kind: Some("aws.iam.user".into()),
                    id: Some(format!("arn:aws:iam::111111111111:user/u{}", i % 200)),
                    name: Some(format!("u{}", i % 200)),
                    key: Some(format!("aws:111111111111:user/u{}", i % 200)),
                });
            }
            alert.network.remote_ip = Some(ip);
            alert.labels.insert(
                "env".into(),
                if i % 4 == 0 { "prod" } else { "staging" }.into(),
            );
            alert.labels.insert("team".into(), format!("t{}", i % 9));
            alert.dedup_key = format!("gen-{i}");
            alert.finish()
        })
        .collect()
}

/// Ingests `alerts` in batches, each at the time its last alert was received.
async fn ingest_all(store: &dyn Store, alerts: &[Alert]) {
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| a.received_at);
    for batch in sorted.chunks(500) {
        let now = batch.last().unwrap().received_at;
        store
            .ingest(batch.iter().map(|a| (*a).clone()).collect(), now)
            .await
            .expect("ingest");
    }
}

/// A hit named the same way on both backends: an alert by its id (the same on both), an incident
/// by its oldest alert's id (incident ids are each store's own).
async fn canonical(
    store: &dyn Store,
    cache: &mut HashMap<String, String>,
    hit: &search::HitRef,
) -> String {
    match hit.doc_type {
        DocType::Alert => format!("a:{}", hit.id),
        DocType::Incident => {
            if let Some(name) = cache.get(&hit.id) {
                return name.clone();
            }
            let alerts = store
                .alerts(&AlertQuery {
                    incident_id: Some(hit.id.clone()),
                    ..AlertQuery::default()
                })
                .await
                .unwrap();
            let first = alerts
                .iter()
                .map(|a| a.id.clone())
                .min()
                .unwrap_or_default();
            let name = format!("i:{first}");
            cache.insert(hit.id.clone(), name.clone());
            name
        }
    }
}

/// Every hit of `search` (at most `max`), page after page, as canonical names.
async fn all_pages(
    store: &dyn Store,
    cache: &mut HashMap<String, String>,
    search: &Search,
    now: DateTime<Utc>,
    max: usize,
) -> Vec<String> {
    let mut request = search::request(search, now).expect("the query parses");
    let mut out = Vec::new();
    loop {
        let page = store.search(&request).await.expect("search");
        for hit in &page {
            out.push(canonical(store, cache, hit).await);
        }
        if page.len() < request.limit || out.len() >= max {
            return out;
        }
        let last = page.last().unwrap();
        request.after = Some(search::Cursor {
            time: last.time,
            tie: last.tie,
        });
    }
}

/// The alerts `keep` selects, newest first by (observed time, tie): what an alert-only query
/// must answer.
fn oracle(alerts: &[Alert], keep: impl Fn(&Alert) -> bool) -> Vec<String> {
    let mut hits: Vec<(i64, i64, String)> = alerts
        .iter()
        .filter(|a| keep(a))
        .map(|a| {
            let key = format!("a:{}", a.id);
            (
                a.observed_at.timestamp_millis(),
                search::doc::tie(&key),
                key,
            )
        })
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse((h.0, h.1)));
    hits.into_iter().map(|h| h.2).collect()
}

/// The alert's words (title, description, payload), as a set.
fn words_of(a: &Alert) -> std::collections::HashSet<String> {
    let text = format!(
        "{} {} {}",
        a.title,
        a.description.as_deref().unwrap_or(""),
        a.raw.get()
    );
    search::doc::tokens(&text).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_backends_answer_every_query_alike_over_the_fixtures_and_100k_alerts() {
    let end: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut alerts = fixture_alerts(end + chrono::Duration::hours(1));
    let fixtures = alerts.len();
    alerts.extend(generated_alerts(100_000, end));
    let now = end + chrono::Duration::days(1);

    let dir = tempfile::tempdir().unwrap();
    let sled = open_sled(dir.path()).await;
    let (schema, url) = pg::named_schema().await;
    let postgres = open_postgres(&url).await;
    let started = std::time::Instant::now();
    let (generated, fixed) = (&alerts[fixtures..], &alerts[..fixtures]);
    tokio::join!(
        ingest_all(sled.as_ref(), generated),
        ingest_all(postgres.as_ref(), generated)
    );
    // The fixtures one per call: each opens its incidents at its own time. (Incidents about no
    // entity that one batch opens share their time, and are ordered by the ids each store gave.)
    for alert in fixed {
        for store in [&sled, &postgres] {
            store
                .ingest(vec![alert.clone()], alert.received_at)
                .await
                .unwrap();
        }
    }
    eprintln!(
        "ingested {} alerts into both in {:?}",
        alerts.len(),
        started.elapsed()
    );

    // The same evidence and status change on the incident of the same alert in each store.
    let marked = &alerts[fixtures + 4242];
    for store in [&sled, &postgres] {
        let incident = store.alert(&marked.id).await.unwrap().unwrap().incident_id;
        store
            .add_evidence(
                &incident,
                vec![json!({ "kind": "pod_logs", "sha256": "ab12cd", "location": "s3://evidence/pod-42.log" })],
            )
            .await
            .unwrap();
        store
            .set_incident_status(&incident, cordon::alert::IncidentStatus::Resolved)
            .await
            .unwrap();
    }

    let week_ago = end - chrono::Duration::days(7);
    let in_week = move |a: &Alert| a.observed_at >= week_ago && a.observed_at < end;
    // (query, since, until, the alerts an alert-only query must answer)
    type Keep = Box<dyn Fn(&Alert) -> bool>;
    fn keep(f: impl Fn(&Alert) -> bool + 'static) -> Option<Keep> {
        Some(Box::new(f))
    }
    type Case = (&'static str, Option<String>, Option<String>, Option<Keep>);
    let cases: Vec<Case> = vec![
        (
            "type:alert source:falco",
            None,
            None,
            keep(|a: &Alert| a.source == "falco"),
        ),
        (
            "type:alert severity:>=9",
            None,
            None,
            keep(|a: &Alert| a.severity.score >= 9),
        ),
        (
            "type:alert",
            Some(week_ago.to_rfc3339()),
            Some(end.to_rfc3339()),
            keep(in_week),
        ),
        (
            "type:alert ip:10.1.4.7",
            None,
            None,
            keep(|a: &Alert| a.network.remote_ip.as_deref() == Some("10.1.4.7")),
        ),
        (
            "type:alert actor.key:aws:111111111111:user/u17",
            None,
            None,
            keep(|a: &Alert| {
                a.actor.as_ref().and_then(|x| x.key.as_deref()) == Some("aws:111111111111:user/u17")
            }),
        ),
        (
            "type:alert label.env:prod severity:<2 NOT source:generic",
            None,
            None,
            keep(|a: &Alert| {
                a.labels.get("env").map(String::as_str) == Some("prod")
                    && a.severity.score < 2
                    && a.source != "generic"
            }),
        ),
        (
            "type:alert (source:gcp.scc OR source:azure.defender) region:westeurope",
            None,
            None,
            keep(|a: &Alert| {
                (a.source == "gcp.scc" || a.source == "azure.defender")
                    && a.resource.region.as_deref() == Some("westeurope")
            }),
        ),
        (
            "type:alert needle",
            None,
            None,
            keep(|a: &Alert| words_of(a).contains("needle")),
        ),
        (
            "type:alert \"tor relay\" resource.kind:k8s.pod",
            None,
            None,
            keep(|a: &Alert| {
                let w = words_of(a);
                w.contains("tor")
                    && w.contains("relay")
                    && a.resource.kind.as_deref() == Some("k8s.pod")
            }),
        ),
        (
            "type:alert resource:pod-1*",
            None,
            None,
            keep(|a: &Alert| {
                a.resource
                    .id
                    .as_deref()
                    .is_some_and(|r| r.starts_with("pod-1"))
            }),
        ),
        // Over the fixtures: GuardDuty's Tor relay finding by its kind and by its payload's words.
        ("kind:UnauthorizedAccess:EC2/TorRelay", None, None, None),
        ("torrelay", None, None, None),
        ("source:aws.cloudtrail consolelogin", None, None, None),
        // Incidents, evidence, mixed documents, pages of everything.
        ("type:incident status:resolved", None, None, None),
        ("evidence.kind:pod_logs", None, None, None),
        ("evidence.location:s3://evidence/*", None, None, None),
        ("entity:pod-40", Some("20d".into()), None, None),
        ("", None, None, None),
        ("severity:10 OR brute", Some("3d".into()), None, None),
    ];

    let (mut sled_names, mut pg_names) = (HashMap::new(), HashMap::new());
    for (q, since, until, keep) in &cases {
        let search = Search {
            q: q.to_string(),
            since: since.clone(),
            until: until.clone(),
            limit: Some(250),
            cursor: None,
        };
        let started = std::time::Instant::now();
        let on_sled = all_pages(sled.as_ref(), &mut sled_names, &search, now, 3000).await;
        let sled_took = started.elapsed();
        let started = std::time::Instant::now();
        let on_pg = all_pages(postgres.as_ref(), &mut pg_names, &search, now, 3000).await;
        eprintln!(
            "{q:?} since={since:?}: {} hits (sled {sled_took:?}, postgres {:?})",
            on_sled.len(),
            started.elapsed()
        );
        assert!(!on_sled.is_empty(), "{q:?} matches something");
        assert_eq!(on_sled.len(), on_pg.len(), "{q:?}: as many hits on both");
        if let Some(at) = (0..on_sled.len()).find(|&i| on_sled[i] != on_pg[i]) {
            let end = (at + 5).min(on_sled.len());
            panic!(
                "{q:?}: the same hits in the same order on both; from hit {at}: sled {:?}, postgres {:?}",
                &on_sled[at..end],
                &on_pg[at..end]
            );
        }
        if let Some(keep) = keep {
            let mut want = oracle(&alerts, keep);
            want.truncate(3000);
            assert_eq!(
                on_sled.len(),
                want.len(),
                "{q:?}: exactly the matching alerts"
            );
            assert!(on_sled == want, "{q:?}: the matching alerts, newest first");
        }
    }

    // A page is the hits after the cursor of the one before, and the last says so.
    let first = search::run(
        sled.as_ref(),
        &Search {
            q: "type:alert needle".into(),
            limit: Some(600),
            ..Search::default()
        },
        now,
    )
    .await
    .unwrap();
    let second = search::run(
        sled.as_ref(),
        &Search {
            q: "type:alert needle".into(),
            limit: Some(600),
            cursor: first.next_cursor.clone(),
            ..Search::default()
        },
        now,
    )
    .await
    .unwrap();
    let needles = alerts
        .iter()
        .filter(|a| words_of(a).contains("needle"))
        .count();
    assert_eq!(first.hits.len() + second.hits.len(), needles);
    assert!(first.next_cursor.is_some() && second.next_cursor.is_none());
    assert!(first.hits.last().unwrap().time >= second.hits[0].time);

    // The pivot reads the same on both: the resource's alerts, the evidence, the entities with it.
    let pod = marked.resource.id.clone().unwrap();
    let mut hunts = Vec::new();
    for store in [&sled, &postgres] {
        let found = search::hunt::hunt(store.as_ref(), &pod, Some("30d"), now)
            .await
            .unwrap();
        hunts.push(found);
    }
    let expected = alerts
        .iter()
        .filter(|a| {
            a.resource.id.as_deref() == Some(pod.as_str())
                && a.observed_at >= now - chrono::Duration::days(30)
        })
        .count();
    for found in &hunts {
        assert_eq!(
            found.alerts.len(),
            expected,
            "the pod's alerts in the window"
        );
        assert!(
            found
                .evidence
                .iter()
                .any(|e| e.record["kind"] == "pod_logs"),
            "the evidence"
        );
        assert!(
            !found.co_occurring.is_empty(),
            "addresses seen with the pod"
        );
    }
    let ids = |h: &search::hunt::Hunt| h.alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&hunts[0]), ids(&hunts[1]));
    assert_eq!(hunts[0].co_occurring, hunts[1].co_occurring);

    // `cordon reindex` (here the store's own) rebuilds the same answers.
    let before = all_pages(
        sled.as_ref(),
        &mut sled_names,
        &Search {
            q: "brute".into(),
            limit: Some(500),
            ..Search::default()
        },
        now,
        2000,
    )
    .await;
    assert_eq!(
        sled.reindex().await.unwrap() as usize,
        alerts.len() + count_incidents(sled.as_ref()).await
    );
    postgres.reindex().await.unwrap();
    let after = all_pages(
        sled.as_ref(),
        &mut sled_names,
        &Search {
            q: "brute".into(),
            limit: Some(500),
            ..Search::default()
        },
        now,
        2000,
    )
    .await;
    let on_pg = all_pages(
        postgres.as_ref(),
        &mut pg_names,
        &Search {
            q: "brute".into(),
            limit: Some(500),
            ..Search::default()
        },
        now,
        2000,
    )
    .await;
    assert!(
        before == after && after == on_pg,
        "a rebuilt index answers as before"
    );

    sled.close().await.unwrap();
    postgres.close().await.unwrap();
    pg::drop_schema(&schema).await;
}

async fn count_incidents(store: &dyn Store) -> usize {
    store
        .incidents(&cordon::store::IncidentQuery::default())
        .await
        .unwrap()
        .len()
}

// ---------------------------------------------------------------------------------------------
// The API and the CLI

fn alert_about(title: &str, ip: &str, pod: &str, actor: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "title": title,
        "dedup_key": title,
        "kind": "test.search",
        "severity": 8,
        "resource": { "kind": "k8s.pod", "id": pod, "region": "eu-west-1" },
        "actor": { "kind": "k8s.user", "id": actor },
        "network": { "remote_ip": ip },
        "labels": { "env": "prod" },
    }))
    .unwrap()
}

async fn get(server: &Client, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = server.http.get(format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    server.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_searches_pages_hunts_and_says_where_a_query_is_wrong() {
    let server = TestServer::start().await;
    for i in 0..30 {
        let body = alert_about(
            &format!("Crypto miner in pod {i}"),
            if i % 2 == 0 {
                "203.0.113.7"
            } else {
                "198.51.100.9"
            },
            &format!("web-{}", i % 3),
            "system:serviceaccount:default:builder",
        );
        let (status, answer) = server.post_generic(&body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let token = server.token_of(TESTER).await;

    // Two pages of the address's alerts, newest first, then no more.
    let (status, first) = get(
        &server,
        "/v1/search?q=ip:203.0.113.7%20type:alert&limit=10",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["hits"].as_array().unwrap().len(), 10);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = get(
        &server,
        &format!("/v1/search?q=ip:203.0.113.7%20type:alert&limit=10&cursor={cursor}"),
        Some(&token),
    )
    .await;
    assert_eq!(second["hits"].as_array().unwrap().len(), 5);
    assert_eq!(second["next_cursor"], Value::Null);
    let times: Vec<&str> = first["hits"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["hits"].as_array().unwrap())
        .map(|h| h["time"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert!(
        first["hits"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Crypto miner")
    );

    // A wrong query is a 400 naming the column; so is a wrong parameter; no credential, 401.
    let (status, body) = get(
        &server,
        "/v1/search?q=source:generic%20sevrity:%3E%3D7",
        Some(&token),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_query");
    assert_eq!(body["column"], 16);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `severity`"),
        "{body}"
    );
    let (status, body) = get(&server, "/v1/search?q=(miner", Some(&token)).await;
    assert_eq!((status, body["column"].clone()), (400, json!(1)), "{body}");
    let (status, body) = get(&server, "/v1/search?q=miner&cursor=bogus", Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("cursor:"),
        "{body}"
    );
    let (status, body) = get(&server, "/v1/search?q=miner&sort=asc", Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown parameter `sort`"),
        "{body}"
    );
    let (status, _) = get(&server, "/v1/search?q=miner", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&server, "/v1/hunt/203.0.113.7", Some("not-a-token")).await;
    assert_eq!(status, 401);

    // The hunt: the address's alerts and incidents, and the pods and principal seen with it.
    let (status, hunt) = get(&server, "/v1/hunt/203.0.113.7?window=1d", Some(&token)).await;
    assert_eq!(status, 200, "{hunt}");
    assert_eq!(hunt["alerts"].as_array().unwrap().len(), 15);
    assert_eq!(
        hunt["incidents"].as_array().unwrap().len(),
        3,
        "one incident per pod: {hunt}"
    );
    let seen: Vec<&str> = hunt["co_occurring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["entity"].as_str().unwrap())
        .collect();
    for entity in [
        "web-0",
        "web-1",
        "web-2",
        "system:serviceaccount:default:builder",
    ] {
        assert!(seen.contains(&entity), "{entity} in {seen:?}");
    }
    assert!(
        !seen.contains(&"203.0.113.7"),
        "not the hunted entity itself"
    );
    let actor = hunt["co_occurring"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["entity"] == "system:serviceaccount:default:builder")
        .unwrap();
    assert_eq!(actor["count"], 15);
    let (status, body) = get(&server, "/v1/hunt/203.0.113.7?window=forever", Some(&token)).await;
    assert_eq!(status, 400, "{body}");
    let (_, other) = get(&server, "/v1/hunt/198.51.100.9?window=1d", Some(&token)).await;
    assert_eq!(other["alerts"].as_array().unwrap().len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_write_and_the_index_is_caught_up_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "{}log:\n  format: json\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
            config_text(dir.path(), "")
        ),
    )
    .unwrap();
    let store_path = dir.path().join("store");
    let index_path = dir.path().join("store.search");
    let mut posted = 0usize;
    let mut between = false;
    for round in 0..6 {
        let mut server = Process::start(&config);
        // A burst of concurrent posts, and SIGKILL as soon as the last is answered.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let client = (*server).clone();
            let body = json!({
                "title": format!("burst {round} alert {i}"),
                "kind": "test.crash",
                "severity": 5,
                "resource": { "kind": "host", "id": format!("host-{round}-{i}") },
            });
            tasks.push(tokio::spawn(async move {
                let request = client
                    .http
                    .post(format!("{}/v1/alerts/generic", client.base))
                    .bearer_auth(INTAKE_TOKEN)
                    .body(body.to_string());
                client.send(request).await.0
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 202);
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        posted += 200;
        // Was the index behind the store's durable log when the process died?
        let logged = {
            let db = sled::open(&store_path).unwrap();
            let tree = db.open_tree("v1").unwrap();
            tree.scan_prefix(b"s:")
                .keys()
                .next_back()
                .map(|k| u64::from_be_bytes(k.unwrap()[2..10].try_into().unwrap()))
        };
        let meta: Value =
            serde_json::from_slice(&std::fs::read(index_path.join("meta.json")).unwrap()).unwrap();
        let payload: Value =
            serde_json::from_str(meta["payload"].as_str().unwrap_or("{}")).unwrap_or_default();
        let indexed = payload["seq"].as_u64().unwrap_or(0);
        if logged.is_some_and(|l| l > indexed) {
            between = true;
        }
        // At the next start, every alert is found, once.
        let server = Process::start(&config);
        let token = server.token_of(TESTER).await;
        let mut found = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = get(
                &server,
                &format!("/v1/search?q=type:alert%20kind:test.crash&limit=1000&cursor={cursor}"),
                Some(&token),
            )
            .await;
            assert_eq!(status, 200, "{page}");
            found.extend(
                page["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
        let distinct: std::collections::BTreeSet<&String> = found.iter().collect();
        assert_eq!(distinct.len(), found.len(), "round {round}: no alert twice");
        assert_eq!(
            found.len(),
            posted,
            "round {round}: every alert intake answered for"
        );
        drop(server);
        if between && round >= 1 {
            break;
        }
    }
    assert!(
        between,
        "the process died at least once with the index behind the store"
    );

    // `cordon reindex` rebuilds it (the store is free once the server is gone), and the CLI
    // searches it, pointing at a wrong query's column.
    let (code, _, err) = cli(&config, &["reindex"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("reindexed {}", posted + posted)),
        "{err}"
    );
    let (code, out, err) = cli(
        &config,
        &[
            "search",
            "kind:test.crash burst",
            "--limit",
            "1000",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"].as_array().unwrap().len(), posted);
    let (code, _, err) = cli(&config, &["search", "kind:test.crash sevrity:9"]);
    assert_eq!(code, 2);
    assert!(err.contains("column 17: unknown field `sevrity`"), "{err}");
    let caret = format!("\n{}^", " ".repeat(18));
    assert!(err.contains(&caret), "a caret under the column: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_widens_an_incident_with_core_hunt() {
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "widen",
        "id: widen\nname: widen\non:\n  source: generic\nsteps:\n  - id: hunt\n    uses: core.hunt\n    with: { entity: \"${{ alert.network.remote_ip }}\", window: 1d, record: true }\n",
    );
    let extra = format!(
        "{}playbooks:\n  paths: [{}]\n",
        all_sources(),
        playbooks.display()
    );
    let server = TestServer::start_in(dir, &extra).await;
    let mut last = Value::Null;
    for i in 0..3 {
        let body = alert_about(
            &format!("Outbound to a mining pool {i}"),
            "192.0.2.44",
            &format!("miner-{i}"),
            "system:serviceaccount:ci:runner",
        );
        let (status, answer) = server.post_generic(&body).await;
        assert_eq!(status, 202, "{answer}");
        last = answer["alerts"][0].clone();
    }
    let run = server
        .run_for_alert(last["alert_id"].as_str().unwrap())
        .await;
    let done = server
        .wait_run(&run, "finished", |r| r["status"] == "succeeded")
        .await;
    let output = &done["run"]["steps"]["hunt"]["output"];
    assert_eq!(output["alerts"].as_array().unwrap().len(), 3, "{output}");
    assert_eq!(
        output["incident_ids"].as_array().unwrap().len(),
        3,
        "{output}"
    );
    let incident = server
        .admin(&format!(
            "/v1/incidents/{}",
            last["incident_id"].as_str().unwrap()
        ))
        .await;
    let hunt = incident["incident"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "hunt")
        .cloned()
        .expect("a hunt evidence record on the incident");
    assert_eq!(hunt["entity"], "192.0.2.44");
    assert_eq!(hunt["alerts"], 3);
    assert_eq!(hunt["action"], "core.hunt");
    // The other incidents it names are the ones about the same address.
    let named: Vec<&str> = hunt["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(named.contains(&last["incident_id"].as_str().unwrap()));
}
