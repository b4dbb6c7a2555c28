//! Faults under load, on real processes: a replica SIGKILLed while two share PostgreSQL and
//! 10 000 alerts arrive; PostgreSQL itself stopped and started again during a load; the embedded
//! store's single process SIGKILLed and restarted during the same load. Afterwards the store is
//! opened and checked alert by alert: every acknowledged alert has its incident and its run, no run
//! performed its non-idempotent step twice, and every run ended (done, or held for a person when
//! the crash came in the middle of that step).
//!
//! The tests drive several processes each and take minutes; a lock runs them one at a time so
//! that they do not starve each other of the machine's two cores. They print what they measured.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cordon::engine::run::RunStatus;
use cordon::store::{RunQuery, Store};
use serde_json::Value;
use support::load::{self, Acked, Load, Sink, Targets};
use support::pg::{PrivatePg, fresh_schema};
use support::{ADMIN_TOKEN, Client, INTAKE_TOKEN, Process, TESTER, write_playbook};

/// The load the issue names.
const ALERTS: usize = 10_000;
/// Alerts past this many repeat earlier ones, so dedup is under load too.
const DISTINCT: usize = 9_000;
const CONCURRENCY: usize = 32;
/// Engine workers per process: at most this many runs are in a step when a process dies.
const WORKERS: usize = 16;
/// How long one alert may take to be acknowledged, outages included.
const PATIENCE: Duration = Duration::from_secs(300);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The playbook under test: a POST nobody may repeat (the sink counts them per host), then a
/// pure step.
fn playbooks(dir: &Path, sink: &str) -> PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "effect",
        &format!(
            "id: effect\nname: Effect\nvars: {{ sink: \"{sink}\" }}\non:\n  source: generic\nsteps:\n  - id: call\n    uses: core.http\n    with: {{ url: \"${{{{ vars.sink }}}}/effect/${{{{ alert.resource.id }}}}\", method: POST }}\n  - id: after\n    uses: core.log\n    with: {{ message: done }}\n"
        ),
    );
    playbooks
}

/// The config of one process; `store` is the `store:` section's body.
fn config(dir: &Path, name: &str, store: &str, playbooks: &Path) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: 5s\nstore:\n{store}log:\n  format: json\n  level: info\nplaybooks:\n  paths: [{}]\n  workers: {WORKERS}\n  http_allow: {{ effect: [\"127.0.0.1\"] }}\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
            playbooks.display()
        ),
    )
    .unwrap();
    config
}

fn postgres_store(url: &str) -> String {
    format!("  kind: postgres\n  url: \"{url}\"\n  pool_size: 8\n  lease_ttl: 3s\n")
}

/// Opens the store a config names, as the processes did.
async fn open_store(config: &Path) -> Arc<dyn Store> {
    let config = cordon::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    cordon::store::open(
        &config.store,
        &config.grouping,
        Arc::new(cordon::telemetry::Metrics::new()),
    )
    .await
    .unwrap()
}

async fn count_runs(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    status: &str,
) -> Option<usize> {
    let body: Value = http
        .get(format!(
            "{base}/v1/runs?playbook=effect&status={status}&limit=1000"
        ))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(body["runs"].as_array()?.len())
}

/// Waits until no run is queued or running and the sink has been quiet for three seconds. On
/// failure it names what is left and the server's last warnings (`log`: its JSON log lines).
async fn settle(
    http: &reqwest::Client,
    base: &str,
    sink: &Sink,
    within: Duration,
    log: &std::sync::Mutex<Vec<String>>,
) {
    let deadline = Instant::now() + within;
    let mut quiet_since: Option<(Instant, usize)> = None;
    let token = Client::new(base.to_owned()).token_of(TESTER).await;
    loop {
        let queued = count_runs(http, base, &token, "queued").await;
        let running = count_runs(http, base, &token, "running").await;
        if Instant::now() >= deadline {
            let lines = log.lock().unwrap();
            let warnings: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                .collect();
            let tail = &warnings[warnings.len().saturating_sub(40)..];
            panic!(
                "the runs never settled: queued {queued:?}, running {running:?}, {} posts; the server's last warnings:\n{}",
                sink.total(),
                tail.iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let busy = queued != Some(0) || running != Some(0);
        let posts = sink.total();
        match quiet_since {
            Some((since, seen)) if !busy && seen == posts => {
                if since.elapsed() >= Duration::from_secs(3) {
                    return;
                }
            }
            _ => quiet_since = (!busy).then(|| (Instant::now(), posts)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the store held after a fault (printed through `Debug` in each test's summary).
#[derive(Debug)]
#[allow(dead_code)]
struct Outcome {
    acked: usize,
    alerts: usize,
    runs: usize,
    succeeded: usize,
    needs_decision: usize,
    posts: usize,
}

/// Checks every acknowledged alert against the store and the sink; panics on the first thing
/// wrong, and answers the counts.
async fn check(store: &dyn Store, acked: &[Acked], sink: &Sink) -> Outcome {
    let mut host_of_alert: HashMap<&str, &str> = HashMap::new();
    for a in acked {
        if let Some(host) = host_of_alert.insert(&a.alert_id, &a.host) {
            assert_eq!(host, a.host, "one alert id for two hosts");
        }
    }
    for (id, host) in &host_of_alert {
        let alert = store
            .alert(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged alert {id} ({host}) is not stored"));
        assert!(
            store.incident(&alert.incident_id).await.unwrap().is_some(),
            "alert {id} has no incident"
        );
    }
    let runs = store
        .runs(&RunQuery {
            playbook: Some("effect".into()),
            limit: 1_000_000,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    let mut runs_of_alert: HashMap<String, usize> = HashMap::new();
    for run in &runs {
        let alert = run
            .alert_id
            .clone()
            .expect("an alert's run names its alert");
        *runs_of_alert.entry(alert).or_default() += 1;
    }
    for id in host_of_alert.keys() {
        assert_eq!(
            runs_of_alert.get(*id).copied().unwrap_or(0),
            1,
            "acknowledged alert {id} has one run"
        );
    }
    let posts = sink.counts();
    for (path, n) in &posts {
        assert_eq!(*n, 1, "{path} was POSTed {n} times: a side effect repeated");
    }
    let (mut succeeded, mut needs_decision) = (0, 0);
    for run in &runs {
        let host = run
            .alert_id
            .as_deref()
            .and_then(|a| host_of_alert.get(a))
            .unwrap_or_else(|| panic!("run {} is for an alert nobody acknowledged", run.id));
        let posted = posts.contains_key(&format!("/effect/{host}"));
        match run.status {
            RunStatus::Succeeded => {
                assert!(posted, "run {} succeeded without its POST", run.id);
                succeeded += 1;
            }
            // Died inside the POST: the run waits for a person, who knows whether it went out.
            RunStatus::NeedsDecision => needs_decision += 1,
            other => panic!("run {} ended {other:?}", run.id),
        }
    }
    // Every POST belongs to a run that succeeded, or to one held because it died inside it.
    assert!(
        sink.total() >= succeeded && sink.total() <= succeeded + needs_decision,
        "{} POSTs for {succeeded} succeeded and {needs_decision} held runs",
        sink.total()
    );
    let audit = store.audit_verify().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    Outcome {
        acked: acked.len(),
        alerts: host_of_alert.len(),
        runs: runs.len(),
        succeeded,
        needs_decision,
        posts: sink.total(),
    }
}

/// Starts the load of 10 000 alerts and returns once 30 % of them are acknowledged, the
/// moment the tests strike.
async fn load_until_a_third_is_in(targets: &Targets) -> (Arc<Load>, tokio::task::JoinHandle<()>) {
    let progress = Arc::new(Load::default());
    let load = tokio::spawn(load::run(
        targets.clone(),
        ALERTS,
        DISTINCT,
        CONCURRENCY,
        PATIENCE,
        progress.clone(),
    ));
    load::until_acked(&progress, ALERTS * 3 / 10, PATIENCE).await;
    (progress, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_two_postgres_replicas_under_load_loses_and_repeats_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let url = fresh_schema().await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = playbooks(dir.path(), &sink.base);
    let store = postgres_store(&url);
    let a_config = config(dir.path(), "a", &store, &playbooks);
    let b_config = config(dir.path(), "b", &store, &playbooks);
    let mut a = Process::start(&a_config);
    let b = Process::start(&b_config);

    let targets: Targets = Arc::new(RwLock::new(vec![a.base.clone(), b.base.clone()]));
    let started = Instant::now();
    let (progress, load) = load_until_a_third_is_in(&targets).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed_at = Instant::now();
    let acked_at_kill = progress.acked_count.load(Ordering::SeqCst);
    targets.write().unwrap().retain(|t| *t != a.base);
    load.await.unwrap();
    let posted = started.elapsed();

    let http = reqwest::Client::new();
    settle(&http, &b.base, &sink, Duration::from_secs(900), &b.log).await;
    let settled = started.elapsed();
    let acked = progress.acked.lock().unwrap().clone();
    let store = open_store(&b_config).await;
    let outcome = check(store.as_ref(), &acked, &sink).await;

    assert_eq!(outcome.acked, ALERTS, "every alert was acknowledged");
    assert_eq!(
        outcome.alerts, DISTINCT,
        "repeats folded into their first alert"
    );
    assert_eq!(outcome.runs, DISTINCT, "one run per alert");
    assert!(
        outcome.needs_decision <= WORKERS,
        "only runs inside the POST when A died are held: {outcome:?}"
    );
    // The survivor carried out runs of alerts that A acknowledged and had not finished.
    let late: HashSet<String> = sink.since(killed_at).into_iter().collect();
    let taken_over = acked
        .iter()
        .filter(|x| x.replica == a.base && late.contains(&format!("/effect/{}", x.host)))
        .map(|x| &x.alert_id)
        .collect::<HashSet<_>>()
        .len();
    assert!(taken_over > 0, "B took over none of A's runs: {outcome:?}");
    println!(
        "postgres, 2 replicas, A killed after {acked_at_kill} acknowledged: {outcome:?}; \
         {taken_over} of A's runs carried out by B after the kill; {} refused connections; \
         load posted in {posted:?}, settled in {settled:?}",
        progress.refused.load(Ordering::SeqCst)
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_503_meanwhile_and_recovers_by_itself() {
    let _one = ONE_AT_A_TIME.lock().await;
    const TOTAL: usize = 2_000;
    let pg = PrivatePg::start();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = playbooks(dir.path(), &sink.base);
    let cfg = config(dir.path(), "one", &postgres_store(&pg.url()), &playbooks);
    let server = Process::start(&cfg);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let targets: Targets = Arc::new(RwLock::new(vec![server.base.clone()]));
    let progress = Arc::new(Load::default());
    let load = tokio::spawn(load::run(
        targets,
        TOTAL,
        TOTAL,
        16,
        PATIENCE,
        progress.clone(),
    ));
    load::until_acked(&progress, TOTAL / 4, PATIENCE).await;
    pg.down();
    let down_at = Instant::now();
    let acked_before = progress.acked_count.load(Ordering::SeqCst);
    // While it is down: refusals, an unready server, and nothing acknowledged.
    let mut unready = false;
    while down_at.elapsed() < Duration::from_secs(4) {
        if let Ok(answer) = http.get(format!("{}/readyz", server.base)).send().await {
            unready |= answer.status() == 503;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up_at = Instant::now();
    pg.up();
    load.await.unwrap();

    let answers = progress.answers.lock().unwrap().clone();
    // An answer in flight as the server stopped may land just after: a second of grace.
    let during = |at: &Instant| *at > down_at + Duration::from_secs(1) && *at < up_at;
    let refused = answers
        .iter()
        .filter(|(s, at)| *s == 503 && during(at))
        .count();
    let acked_during = answers
        .iter()
        .filter(|(s, at)| *s == 202 && during(at))
        .count();
    assert!(
        refused > 0,
        "intake answered no 503 while PostgreSQL was down"
    );
    assert_eq!(
        acked_during, 0,
        "alerts acknowledged while PostgreSQL was down"
    );
    assert!(unready, "/readyz said ready while PostgreSQL was down");
    let back = answers
        .iter()
        .filter(|(s, at)| *s == 202 && *at > up_at)
        .map(|(_, at)| *at - up_at)
        .min()
        .expect("intake took alerts again after the restart");
    assert!(
        progress.other.lock().unwrap().is_empty(),
        "answers other than 202 and 503: {:?}",
        progress.other.lock().unwrap()
    );
    let ready = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 200, "ready again without a restart of Cordon");

    settle(
        &http,
        &server.base,
        &sink,
        Duration::from_secs(300),
        &server.log,
    )
    .await;
    let acked = progress.acked.lock().unwrap().clone();
    let store = open_store(&cfg).await;
    let outcome = check(store.as_ref(), &acked, &sink).await;
    assert_eq!(outcome.alerts, TOTAL);
    assert_eq!(outcome.runs, TOTAL);
    assert!(outcome.needs_decision <= WORKERS, "{outcome:?}");
    println!(
        "postgres restarted: {acked_before} acknowledged before, down {:?}, {refused} answers 503 \
         and none 202 meanwhile, intake back {back:?} after the restart; {outcome:?}",
        up_at - down_at
    );
    store.close().await.unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_sled_process_under_load_loses_and_repeats_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = playbooks(dir.path(), &sink.base);
    let store = format!("  path: {}\n", dir.path().join("store").display());
    let cfg = config(dir.path(), "one", &store, &playbooks);
    let mut server = Process::start(&cfg);

    let targets: Targets = Arc::new(RwLock::new(vec![server.base.clone()]));
    let started = Instant::now();
    let (progress, load) = load_until_a_third_is_in(&targets).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let acked_at_kill = progress.acked_count.load(Ordering::SeqCst);
    targets.write().unwrap().clear();
    let restarting = Instant::now();
    server = Process::start(&cfg);
    let restart = restarting.elapsed();
    *targets.write().unwrap() = vec![server.base.clone()];
    load.await.unwrap();
    let posted = started.elapsed();

    let http = reqwest::Client::new();
    settle(
        &http,
        &server.base,
        &sink,
        Duration::from_secs(900),
        &server.log,
    )
    .await;
    let settled = started.elapsed();
    drop(server); // the embedded store opens in one process at a time
    let acked = progress.acked.lock().unwrap().clone();
    let store = open_store(&cfg).await;
    let outcome = check(store.as_ref(), &acked, &sink).await;
    assert_eq!(outcome.acked, ALERTS);
    assert_eq!(outcome.alerts, DISTINCT);
    assert_eq!(outcome.runs, DISTINCT);
    assert!(outcome.needs_decision <= WORKERS, "{outcome:?}");
    println!(
        "sled, killed after {acked_at_kill} acknowledged, listening again {restart:?} later: \
         {outcome:?}; {} refused connections; posted in {posted:?}, settled in {settled:?}",
        progress.refused.load(Ordering::SeqCst)
    );
    store.close().await.unwrap();
}
