//! Bursts of alerts while chat and tickets are configured, on real processes: the storm is exactly
//! when a SOC needs Cordon, and it once hung the server for good (sled's `flush_async` lock cycle,
//! docs/storage.md). Each round starts a fresh `cordon serve` with Slack, Discord and Jira fakes
//! (each checked by Prism against the official description), posts 100 alerts about 5 instances 20
//! at a time and a second wave while the cards go out, and then checks what a user would see:
//! every request answered, one card per incident per platform, one ticket per incident, every
//! alert in its incident, and a clean exit on SIGTERM. The same on PostgreSQL.
//!
//! A stalled store is held on purpose through the test-only hook `CORDON_TEST_HOLD_STORE`: `/readyz`
//! turns unready and says why, a metric names the stalled operation, `/healthz` keeps answering,
//! and SIGTERM still ends the process within the shutdown grace plus a few seconds.
//!
//! `CORDON_BURST_ROUNDS` and `CORDON_PACED_RUNS` raise the counts; `scripts/stress` runs them long.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::discord::{self, FakeDiscord};
use support::slack::{self, FakeSlack};
use support::tickets::{FakeJira, JIRA_EMAIL, JIRA_TOKEN};
use support::{ADMIN_TOKEN, Client, INTAKE_TOKEN, Process, TESTER, wait_until, write_playbook};

/// Instances the alerts are about: one incident each.
const INSTANCES: usize = 5;
/// The first wave, and how many requests are in flight at once.
const WAVE: usize = 100;
const AT_ONCE: usize = 20;
/// The second wave, posted while the first wave's cards go out.
const SECOND_WAVE: usize = 50;
/// `server.shutdown_grace` in these configs, and what SIGTERM may take beyond it.
const GRACE: Duration = Duration::from_secs(3);
const EXIT_SLACK: Duration = Duration::from_secs(5);
/// How long one request may go unanswered before the test calls the server hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The tests start several processes each and keep two cores busy; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The platforms' and ticket system's fakes of one round.
struct Peers {
    slack: FakeSlack,
    discord: FakeDiscord,
    jira: Option<FakeJira>,
}

impl Peers {
    async fn start(with_tickets: bool) -> Peers {
        let jira = if with_tickets {
            Some(FakeJira::start(Some(support::tickets::prism_jira())).await)
        } else {
            None
        };
        Peers {
            slack: FakeSlack::start().await,
            discord: FakeDiscord::start().await,
            jira,
        }
    }

    /// The `chat:` and `tickets:` sections pointing at the fakes.
    fn sections(&self) -> String {
        let discord = discord::chat_section(&self.discord, None);
        // Notes and comments are coalesced as in production, over 1 s instead of the default 10 s:
        // a burst is about hangs and counts, not about the wait for the next note.
        let mut yaml = format!(
            "chat:\n  note_interval: 1s\n{}{}",
            slack::chat_yaml(&self.slack, None, false).trim_start_matches("chat:\n"),
            discord.trim_start_matches("chat:\n"),
        );
        if let Some(jira) = &self.jira {
            yaml.push_str(&format!(
                "tickets:\n  comment_interval: 1s\n  retry: {{ base: 50ms, max: 1s }}\n  jira:\n    base_url: {}\n    email: {JIRA_EMAIL}\n    api_token: {JIRA_TOKEN}\n  default:\n    jira:\n      project: SEC\n",
                jira.base
            ));
        }
        yaml
    }

    fn slack_cards(&self) -> Vec<slack::Posted> {
        self.slack.cards()
    }

    fn discord_cards(&self) -> Vec<discord::Message> {
        self.discord.messages_in(discord::CHANNEL_ID)
    }

    fn tickets(&self) -> usize {
        self.jira.as_ref().map_or(0, |j| j.data().issues.len())
    }

    /// Everything the fakes have received, as one number that grows with every call.
    fn activity(&self) -> usize {
        let slack = self.slack.state.lock().unwrap().calls.len();
        let discord = self.discord.calls().len();
        let jira = self.jira.as_ref().map_or(0, |j| j.data().requests.len());
        slack + discord + jira
    }

    fn assert_no_violations(&self) {
        self.slack.assert_no_violations();
        if let Some(jira) = &self.jira {
            jira.assert_no_violations();
        }
    }
}

/// Writes the playbook and the config of one process; `store` is the `store:` section's body.
fn config(dir: &Path, store: &str, peers: &Peers) -> PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "contain-host",
        &support::approval_playbook(
            ("contain-host", "Contain a host"),
            "generic",
            "Isolate ${{ alert.resource.id }}?",
            "soc",
            1,
        ),
    );
    let path = dir.join("cordon.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: {}s\nstore:\n{store}log:\n  format: json\n  level: info\nplaybooks:\n  paths: [{}]\napprovers:\n  soc: [slack:U0ALICE, \"discord-role:{}\"]\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n{}",
            GRACE.as_secs(),
            playbooks.display(),
            discord::SOC_ROLE,
            peers.sections(),
        ),
    )
    .unwrap();
    path
}

fn sled_store(dir: &Path) -> String {
    format!("  path: {}\n", dir.join("store").display())
}

async fn postgres_store() -> String {
    let url = support::pg::fresh_schema().await;
    format!("  kind: postgres\n  url: \"{url}\"\n  pool_size: 8\n")
}

/// One alert the server acknowledged, and the instance it is about.
struct Acked {
    alert_id: String,
    host: String,
}

fn alert_body(tag: &str, i: usize) -> Value {
    let host = format!("i-burst{:04}", i % INSTANCES);
    json!({
        "title": format!("crypto miner on {host} ({tag} #{i})"),
        "kind": "execution",
        "severity": 8,
        "dedup_key": format!("{tag}-{i}"),
        "resource": { "kind": "instance", "id": host },
    })
}

/// Posts one alert; the answer must come within [`ANSWER_WITHIN`] and be a 202.
async fn post(http: &reqwest::Client, base: &str, body: &Value) -> Acked {
    let answer = tokio::time::timeout(
        ANSWER_WITHIN,
        http.post(format!("{base}/v1/alerts/generic"))
            .bearer_auth(INTAKE_TOKEN)
            .json(body)
            .send(),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to an alert within {ANSWER_WITHIN:?}: the server hangs"))
    .expect("the alert request reaches the server");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    Acked {
        alert_id: answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned(),
        host: body["resource"]["id"].as_str().unwrap().to_owned(),
    }
}

/// Posts `total` alerts tagged `tag`, `at_once` at a time.
async fn wave(base: &str, tag: &str, total: usize, at_once: usize) -> Vec<Acked> {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..at_once {
        let (http, next, base, tag) = (http.clone(), next.clone(), base.to_owned(), tag.to_owned());
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= total {
                    return acked;
                }
                acked.push(post(&http, &base, &alert_body(&tag, i)).await);
            }
        }));
    }
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.unwrap());
    }
    acked
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    get_with(http, base, path, None).await
}

/// As [`get`], with a personal token.
async fn get_with(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = http.get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = tokio::time::timeout(ANSWER_WITHIN, request.send())
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {path} within {ANSWER_WITHIN:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until the fakes have heard nothing new for `quiet`.
async fn settle(peers: &Peers, quiet: Duration, within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = peers.activity();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = peers.activity();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the chat and ticket traffic never settled"
        );
    }
}

/// Every acknowledged alert is stored in the one incident of its instance, and each incident
/// lists every alert about its instance.
async fn check_incidents(base: &str, acked: &[Acked]) {
    let http = reqwest::Client::new();
    let token = Client::new(base.to_owned()).token_of(TESTER).await;
    let mut incident_of: HashMap<&str, String> = HashMap::new();
    let mut alerts_of: HashMap<String, HashSet<&str>> = HashMap::new();
    for a in acked {
        let (status, alert) = get_with(
            &http,
            base,
            &format!("/v1/alerts/{}", a.alert_id),
            Some(&token),
        )
        .await;
        assert_eq!(
            status, 200,
            "alert {} acknowledged but not stored: {alert}",
            a.alert_id
        );
        let incident = alert["alert"]["incident_id"]
            .as_str()
            .unwrap_or_else(|| panic!("alert without an incident: {alert}"))
            .to_owned();
        if let Some(before) = incident_of.insert(&a.host, incident.clone()) {
            assert_eq!(before, incident, "two incidents for {}", a.host);
        }
        alerts_of.entry(incident).or_default().insert(&a.alert_id);
    }
    assert_eq!(incident_of.len(), INSTANCES, "one incident per instance");
    for (incident, expected) in alerts_of {
        let (status, listed) = get_with(
            &http,
            base,
            &format!("/v1/alerts?incident={incident}&limit=1000"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        let listed: HashSet<&str> = support::texts(&listed["alerts"], "id")
            .into_iter()
            .collect();
        assert_eq!(listed, expected, "incident {incident} lists its alerts");
    }
}

/// One card per incident on each platform (each naming its own instance), one ticket each.
fn check_cards(peers: &Peers) {
    let hosts: Vec<String> = (0..INSTANCES).map(|i| format!("i-burst{i:04}")).collect();
    let slack = peers.slack_cards();
    assert_eq!(slack.len(), INSTANCES, "Slack cards: {slack:#?}");
    let discord = peers.discord_cards();
    assert_eq!(discord.len(), INSTANCES, "Discord cards: {discord:#?}");
    for host in &hosts {
        let on_slack = slack
            .iter()
            .filter(|c| c.blocks_text().contains(host.as_str()))
            .count();
        assert_eq!(on_slack, 1, "Slack cards about {host}");
        let on_discord = discord
            .iter()
            .filter(|c| c.embeds.to_string().contains(host.as_str()))
            .count();
        assert_eq!(on_discord, 1, "Discord cards about {host}");
    }
    if peers.jira.is_some() {
        assert_eq!(peers.tickets(), INSTANCES, "one Jira issue per incident");
    }
}

/// Once chat and ticket traffic has settled: the cards, the incidents, and Prism's verdicts.
async fn settle_and_check(peers: &Peers, base: &str, acked: &[Acked]) {
    settle(peers, Duration::from_millis(1500), Duration::from_secs(120)).await;
    check_cards(peers);
    check_incidents(base, acked).await;
    peers.assert_no_violations();
}

/// SIGTERM: the process must be gone within the grace and a few seconds. Its exit status and
/// how long it took.
fn sigterm(server: &mut Process) -> (std::process::ExitStatus, Duration) {
    let asked = Instant::now();
    server.signal("-TERM");
    let status = server.wait_exit(GRACE + EXIT_SLACK).unwrap_or_else(|| {
        panic!(
            "still running {:?} after SIGTERM; log tail: {:#?}",
            GRACE + EXIT_SLACK,
            tail(server)
        )
    });
    (status, asked.elapsed())
}

/// SIGTERM, and the process must be gone, successfully, within the grace and a few seconds.
fn terminate(mut server: Process) -> Duration {
    let (status, took) = sigterm(&mut server);
    assert!(
        status.success(),
        "exit {status:?}; log tail: {:#?}",
        tail(&server)
    );
    took
}

fn tail(server: &Process) -> Vec<String> {
    let log = server.log.lock().unwrap();
    log.iter().rev().take(15).rev().cloned().collect()
}

/// One round: a fresh process, two waves, the checks, SIGTERM.
async fn round(store: String, tag: &str) -> (usize, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers::start(true).await;
    let config = config(dir.path(), &store, &peers);
    let server = Process::start(&config);
    let base = server.base.clone();

    let first = {
        let base = base.clone();
        let tag = format!("{tag}-a");
        tokio::spawn(async move { wave(&base, &tag, WAVE, AT_ONCE).await })
    };
    // The second wave starts as the first cards go out.
    wait_until(
        ANSWER_WITHIN,
        || "a first card".into(),
        async || !peers.slack_cards().is_empty() || !peers.discord_cards().is_empty(),
    )
    .await;
    let second = wave(&base, &format!("{tag}-b"), SECOND_WAVE, AT_ONCE).await;
    let mut acked = first.await.unwrap();
    acked.extend(second);
    assert_eq!(acked.len(), WAVE + SECOND_WAVE);

    let (status, health) = get(&reqwest::Client::new(), &base, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    let what = || {
        format!(
            "a card per incident on both platforms and a ticket each (Slack {}, Discord {}, Jira {} {:?}; healthz {:?}; warnings {:#?})",
            peers.slack_cards().len(),
            peers.discord_cards().len(),
            peers.tickets(),
            peers
                .jira
                .as_ref()
                .map(|j| j.data().requests.into_iter().take(5).collect::<Vec<_>>()),
            std::process::Command::new("curl")
                .args(["-s", "-m", "2", &format!("{base}/healthz")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            server
                .log_lines("\"level\":\"WARN")
                .into_iter()
                .chain(server.log_lines("\"level\":\"ERROR"))
                .take(10)
                .collect::<Vec<_>>(),
        )
    };
    wait_until(Duration::from_secs(60), what, async || {
        peers.slack_cards().len() >= INSTANCES
            && peers.discord_cards().len() >= INSTANCES
            && peers.tickets() >= INSTANCES
    })
    .await;
    settle_and_check(&peers, &base, &acked).await;
    (acked.len(), terminate(server))
}

/// The backends the bursts run on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sled,
    Postgres,
}

impl Backend {
    /// The `store:` section of a fresh store: a folder in `dir`, or a fresh schema.
    async fn store(self, dir: &Path) -> String {
        match self {
            Backend::Sled => sled_store(dir),
            Backend::Postgres => postgres_store().await,
        }
    }
}

/// `CORDON_BURST_ROUNDS` rounds (default 10) on `backend`, each printing what it measured.
async fn rounds(backend: Backend) {
    let _one = ONE_AT_A_TIME.lock().await;
    let rounds = count("CORDON_BURST_ROUNDS", 10);
    for r in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let store = backend.store(dir.path()).await;
        let (alerts, exit) = round(store, &format!("{backend:?}{r}")).await;
        eprintln!(
            "{backend:?} round {}/{rounds}: {alerts} alerts answered, checked in {:?}, exited {exit:?} after SIGTERM",
            r + 1,
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_with_chat_and_tickets_on_sled_never_hang() {
    rounds(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_with_chat_and_tickets_on_postgres_never_hang() {
    rounds(Backend::Postgres).await;
}

/// The sequential case that hung with Slack and Discord both on: one request at a time, paced at
/// 100 alerts a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_paced_one_at_a_time_with_slack_and_discord_never_hang() {
    let _one = ONE_AT_A_TIME.lock().await;
    let runs = count("CORDON_PACED_RUNS", 1);
    let total = count("CORDON_PACED_ALERTS", 300);
    for r in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let peers = Peers::start(false).await;
        let config = config(dir.path(), &sled_store(dir.path()), &peers);
        let server = Process::start(&config);
        let http = reqwest::Client::new();
        let started = Instant::now();
        let mut acked = Vec::with_capacity(total);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for i in 0..total {
            tick.tick().await;
            acked.push(post(&http, &server.base, &alert_body(&format!("paced{r}"), i)).await);
        }
        let posted = started.elapsed();
        wait_until(
            Duration::from_secs(60),
            || "a card per incident on both platforms".into(),
            async || {
                peers.slack_cards().len() >= INSTANCES && peers.discord_cards().len() >= INSTANCES
            },
        )
        .await;
        settle_and_check(&peers, &server.base, &acked).await;
        let exit = terminate(server);
        eprintln!(
            "paced run {}/{runs}: {total} alerts posted one at a time in {posted:?}, exited {exit:?} after SIGTERM",
            r + 1
        );
    }
}

/// Reads `/readyz`: its status and body.
async fn readyz(base: &str) -> (u16, Value) {
    get(&reqwest::Client::new(), base, "/readyz").await
}

/// Polls `/readyz` (15 s at most) until it answers `status`; its body then.
async fn readyz_turns(base: &str, status: u16, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (now, body) = readyz(base).await;
        if now == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never turned {what}: {now} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `cordon_store_stalled{operation="…"}` in `/metrics`, per operation, where set.
async fn stalled_metric(base: &str) -> HashMap<String, String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("cordon_store_stalled{operation=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(op, value)| (op.to_owned(), value.to_owned()))
        .collect()
}

/// Holds the store through the test hook: `/readyz` turns unready naming the stalled operation and
/// the metric says the same while `/healthz` answers; released, the held alert is acknowledged
/// and the server is ready again; held once more, SIGTERM still ends the process in time, logging
/// what was pending. Nothing acknowledged is lost.
async fn held_store(store: String, dir: &Path) {
    let peers = Peers::start(false).await;
    let config = config(dir, &format!("{store}  stall_limit: 1s\n"), &peers);
    let hold = dir.join("hold");
    let mut server = Process::start_with_env(
        &config,
        &[(cordon::store::stall::HOLD_VAR, hold.to_str().unwrap())],
    );
    let base = server.base.clone();
    assert!(
        !server.log_lines("a test hook").is_empty(),
        "the hook is announced at start"
    );
    assert_eq!(readyz(&base).await.0, 200);

    std::fs::write(&hold, b"").unwrap();
    let held = {
        let base = base.clone();
        tokio::spawn(
            async move { post(&reqwest::Client::new(), &base, &alert_body("held", 0)).await },
        )
    };
    let body = readyz_turns(&base, 503, "unready while the store is held").await;
    assert_eq!(body["status"], "store stalled", "{body}");
    let operation = body["operation"].as_str().unwrap().to_owned();
    assert!(body["pending_seconds"].as_f64().unwrap() > 1.0, "{body}");
    let metric = stalled_metric(&base).await;
    assert_eq!(
        metric.get(&operation).map(String::as_str),
        Some("1"),
        "{metric:?}"
    );
    assert_eq!(
        metric.values().filter(|v| *v == "1").count(),
        1,
        "{metric:?}"
    );
    // Liveness shares nothing with the store.
    let (status, health) = tokio::time::timeout(
        Duration::from_secs(2),
        get(&reqwest::Client::new(), &base, "/healthz"),
    )
    .await
    .expect("/healthz answers while the store is held");
    assert_eq!(status, 200, "{health}");
    assert!(!held.is_finished(), "the held alert waits for the store");

    // Released: the alert is acknowledged, the server ready again, the metric back to 0.
    std::fs::remove_file(&hold).unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held alert is answered once the store is released")
        .unwrap();
    readyz_turns(&base, 200, "ready once the store is released").await;
    let metric = stalled_metric(&base).await;
    assert!(metric.values().all(|v| v == "0"), "{metric:?}");

    // Held again, with a request waiting on it: SIGTERM still ends the process in time.
    std::fs::write(&hold, b"").unwrap();
    let waiting = {
        let base = base.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/alerts/generic"))
                .bearer_auth(INTAKE_TOKEN)
                .json(&alert_body("held", 1))
                .send()
                .await
        })
    };
    // What is oldest now need not be the first hold's operation: the released alert's run may
    // still be saving when the store is held again. The exit names what /readyz names.
    let again = readyz_turns(&base, 503, "unready while the store is held again").await;
    let operation = again["operation"].as_str().unwrap().to_owned();
    let (status, took) = sigterm(&mut server);
    let pending = server.log_lines("still pending");
    assert!(
        !pending.is_empty(),
        "the exit names what was pending; log tail: {:#?}",
        tail(&server)
    );
    assert!(
        pending[0].contains(&format!("\"operation\":\"{operation}\"")),
        "{pending:?}"
    );
    eprintln!("held store: /readyz named `{operation}`; SIGTERM took {took:?}, exit {status:?}");
    let _ = waiting.await;
    std::fs::remove_file(&hold).unwrap();

    // What was acknowledged is there after a restart.
    let server = Process::start(&config);
    let token = server.token_of(TESTER).await;
    let (status, alert) = get_with(
        &reqwest::Client::new(),
        &server.base,
        &format!("/v1/alerts/{}", acked.alert_id),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{alert}");
    terminate(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_sled_store_is_reported_and_sigterm_still_ends_the_process() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    held_store(sled_store(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_postgres_store_is_reported_and_sigterm_still_ends_the_process() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    held_store(postgres_store().await, dir.path()).await;
}
