//! The order things start in: a run resumed at start must find the chat channels, the incident
//! watchers (chat threads, tickets) and the outbox deliverers already there, or its first card and
//! ticket comments go nowhere.
//!
//! The real `cordon` binary, with the fake Slack and the fake Jira (each checked by Prism against
//! the official description), is killed with SIGKILL while runs sleep durably just before their
//! approval step; it is started again once their sleep is over, so every run resumes at start and
//! asks for its approval at once. Every card is then posted exactly once, and every ticket gets
//! the comments of what happened after the restart exactly once. The same on PostgreSQL, where
//! runs are claimed by the replica's poll loop rather than resumed from a list.
//!
//! Slack is reached over Socket Mode, and answers with the latency of a real network: connecting
//! takes a moment at start, as it does in production, and a run resumed before the rest of the
//! server was there would have moved by then.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::slack::{self, FakeSlack};
use support::tickets::{FakeJira, JIRA_EMAIL, JIRA_TOKEN, prism_jira};
use support::{ADMIN_TOKEN, INTAKE_TOKEN, Process, wait_until, write_playbook};

/// Runs resumed at once: enough that the first ones move while the rest are still being resumed.
const RUNS: usize = 24;
/// The durable sleep before each run's approval.
const PAUSE: Duration = Duration::from_secs(3);
/// How long the runs may take to reach a state.
const WAIT: Duration = Duration::from_secs(60);

/// The tests start processes and keep both cores busy: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn host(i: usize) -> String {
    format!("i-resume{i:03}")
}

fn config(dir: &Path, store: &str, slack: &FakeSlack, jira: &FakeJira) -> PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "pause-then-ask",
        &format!(
            "id: pause-then-ask\nname: Pause, then ask\non:\n  source: generic\nsteps:\n  - id: pause\n    uses: core.sleep\n    with: {{ duration: {}s }}\n  - id: approve\n    approval:\n      prompt: \"Isolate ${{{{ alert.resource.id }}}}?\"\n      approvers: soc\n      timeout: 1h\n",
            PAUSE.as_secs()
        ),
    );
    let path = dir.join("cordon.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n{store}log:\n  format: json\nplaybooks:\n  paths: [{}]\napprovers:\n  soc: [slack:U0ALICE]\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n{}tickets:\n  retry: {{ base: 50ms, max: 1s }}\n  jira:\n    base_url: {}\n    email: {JIRA_EMAIL}\n    api_token: {JIRA_TOKEN}\n  default:\n    jira:\n      project: SEC\n",
            playbooks.display(),
            slack::chat_yaml(slack, None, true),
            jira.base,
        ),
    )
    .unwrap();
    path
}

async fn runs(server: &Process) -> Vec<Value> {
    server.admin("/v1/runs?limit=1000").await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether `run` has reached step `step` (it is recorded, in any state).
fn reached(run: &Value, step: &str) -> bool {
    run["steps"][step].is_object()
}

/// How many of `texts` contain `fragment`.
fn mentions(texts: &[String], fragment: &str) -> usize {
    texts.iter().map(|t| t.matches(fragment).count()).sum()
}

/// Waits until the fakes have heard nothing new for two seconds.
async fn settle(slack: &FakeSlack, jira: &FakeJira) {
    let activity = || slack.state.lock().unwrap().calls.len() + jira.data().requests.len();
    let deadline = Instant::now() + WAIT;
    let (mut seen, mut since) = (activity(), Instant::now());
    while since.elapsed() < Duration::from_secs(2) {
        assert!(
            Instant::now() < deadline,
            "chat and ticket traffic never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if activity() != seen {
            (seen, since) = (activity(), Instant::now());
        }
    }
}

async fn resumed_runs_post_every_card_and_comment_exactly_once(store: String) {
    let _one = ONE_AT_A_TIME.lock().await;
    let slack = FakeSlack::start().await;
    slack.set_latency(Duration::from_millis(500));
    let jira = FakeJira::start(Some(prism_jira())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &store, &slack, &jira);

    let server = Process::start(&config);
    for i in 0..RUNS {
        let body = json!({ "title": format!("miner on {}", host(i)), "kind": "execution", "severity": 8, "resource": { "kind": "instance", "id": host(i) } });
        server.accept("generic", body.to_string()).await;
    }
    // Every run sleeps durably before its approval, and every incident has its ticket.
    wait_until(
        WAIT,
        || format!("{RUNS} runs asleep in `pause` and {RUNS} tickets"),
        async || {
            let r = runs(&server).await;
            r.len() == RUNS
                && r.iter()
                    .all(|run| run["status"] == "waiting" && !reached(run, "approve"))
                && jira.data().issues.len() == RUNS
        },
    )
    .await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL, mid-sleep
    server.child.wait().unwrap();
    assert!(slack.cards().is_empty(), "no card before the approval step");
    let before: HashMap<String, usize> = jira
        .data()
        .issues
        .iter()
        .map(|i| (i.key.clone(), i.comments.len()))
        .collect();

    // Started again once every sleep is over: each run resumes at start, straight into its approval.
    tokio::time::sleep(PAUSE).await;
    let server = Process::start(&config);
    wait_until(
        WAIT,
        || "every run waiting on its approval".into(),
        async || {
            let r = runs(&server).await;
            r.len() == RUNS
                && r.iter()
                    .all(|run| run["status"] == "waiting" && reached(run, "approve"))
        },
    )
    .await;
    // A lost card or comment never comes; one that is only late (the dead process's outbox lease
    // on PostgreSQL running out) does.
    let asked = "Approval requested at step approve of playbook pause-then-ask";
    let shown = || {
        let cards = slack.cards().len();
        let comments = jira
            .data()
            .issues
            .iter()
            .filter(|i| mentions(&jira.comments(&i.key), asked) > 0)
            .count();
        (cards, comments)
    };
    wait_until(
        WAIT,
        || {
            let (cards, comments) = shown();
            format!("{RUNS} approval cards and {RUNS} tickets saying so after the restart (cards {cards}, tickets {comments})")
        },
        async || shown() == (RUNS, RUNS),
    )
    .await;
    settle(&slack, &jira).await;

    let cards = slack.cards();
    let missing: Vec<String> = (0..RUNS)
        .map(host)
        .filter(|h| !cards.iter().any(|c| c.blocks_text().contains(h.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {RUNS} approval cards were never posted after the restart (hosts {missing:?})",
        missing.len()
    );
    for h in (0..RUNS).map(host) {
        let on_card = cards
            .iter()
            .filter(|c| c.blocks_text().contains(h.as_str()))
            .count();
        assert_eq!(on_card, 1, "cards about {h}");
    }
    assert_eq!(cards.len(), RUNS);

    let data = jira.data();
    assert_eq!(
        data.issues.len(),
        RUNS,
        "one ticket per incident, none filed twice"
    );
    for issue in &data.issues {
        let after: Vec<String> = jira
            .comments(&issue.key)
            .into_iter()
            .skip(before[&issue.key])
            .collect();
        for fragment in [
            // Jira's document format keeps code marks apart: the text reads without backticks.
            "Step pause of playbook pause-then-ask succeeded",
            asked,
        ] {
            assert_eq!(
                mentions(&after, fragment),
                1,
                "{}: `{fragment}` in the comments after the restart: {after:#?}",
                issue.key
            );
        }
    }
    slack.assert_no_violations();
    jira.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_resumed_at_start_post_every_card_and_ticket_comment_exactly_once_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("  path: {}\n", dir.path().join("store").display());
    resumed_runs_post_every_card_and_comment_exactly_once(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_claimed_at_start_post_every_card_and_ticket_comment_exactly_once_on_postgres() {
    let url = support::pg::fresh_schema().await;
    // The dead process's outbox lease holds deliveries back until it runs out.
    let store = format!("  kind: postgres\n  url: \"{url}\"\n  pool_size: 8\n  lease_ttl: 3s\n");
    resumed_runs_post_every_card_and_comment_exactly_once(store).await;
}
