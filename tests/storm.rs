//! A storm: 1 000 alerts about 20 EC2 instances replayed in a few seconds into the real `cordon`
//! binary, with Slack, Microsoft Teams, Discord, Jira and ServiceNow all configured, each fake
//! enforcing the rate limits its platform documents (429 with `Retry-After`; see
//! `tests/support/{slack,teams,discord,tickets}.rs` for the limits and the API versions followed)
//! and checking every call against the official description where Prism has one.
//!
//! The alerts are the shared fixtures' GuardDuty findings (an instance on a Tor relay, a port
//! probe) and a Security Hub finding pointed at the same instances, each with its own finding id.
//! A playbook asks for approval once per incident; the approvals are given through the API while
//! the storm's cards are still going out.
//!
//! What a SOC would see, and what is checked: one card per incident on each platform (20 each),
//! updated in place with the decision rather than posted again; one ticket per incident in each
//! system (20 each); at most three thread messages per incident on each platform and three
//! comments per ticket, the notes and comments of an interval coalesced into one with a tally
//! ("49 more alerts from 2 sources, ..."); nothing dropped: every alert in its incident, in its
//! report, and named in its tickets' comments; and no call over a platform's limit left
//! unanswered (a 429 only delays). The counts measured are printed.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::discord::{self, FakeDiscord};
use support::slack::{self, FakeSlack};
use support::teams::{APP_ID, APP_PASSWORD, Connector, Identity, Signer, TENANT};
use support::tickets::{
    FakeJira, FakeServiceNow, JIRA_EMAIL, JIRA_TOKEN, SN_PASSWORD, SN_USER, prism_jira,
};
use support::{ADMIN_TOKEN, INTAKE_TOKEN, Process, read_fixture, wait_until, write_playbook};

/// The instances the storm is about: one incident each.
const ENTITIES: usize = 20;
/// Alerts in the storm, and how many are in flight at once.
const ALERTS: usize = 1000;
const AT_ONCE: usize = 25;
/// Thread messages per incident on each platform, and comments per ticket, at most.
const MOST_PER_INCIDENT: usize = 3;
/// The Teams channel the cards go to.
const TEAMS_CHANNEL: &str = "19:storm-cards@thread.tacv2";
/// How long the deliveries may take once the storm is over (Slack alone takes a second per
/// message in a channel).
const DELIVERED_WITHIN: Duration = Duration::from_secs(240);

struct Peers {
    slack: FakeSlack,
    discord: FakeDiscord,
    teams: Connector,
    identity: Identity,
    jira: FakeJira,
    servicenow: FakeServiceNow,
}

impl Peers {
    async fn start() -> Peers {
        let signer = Signer::signing();
        let peers = Peers {
            slack: FakeSlack::start().await,
            discord: FakeDiscord::start().await,
            teams: Connector::start().await,
            identity: Identity::start(&[&signer]).await,
            jira: FakeJira::start(Some(prism_jira())).await,
            servicenow: FakeServiceNow::start().await,
        };
        peers.slack.enforce_rate_limits();
        peers.discord.enforce_rate_limits();
        peers.teams.enforce_rate_limits();
        // Jira publishes no numbers (a cost budget and per-second bursts); ServiceNow's are the
        // admin's rule. Both tight enough that the storm meets them.
        peers.jira.control().limit_rate(10, Duration::from_secs(1));
        peers
            .servicenow
            .control()
            .limit_rate(20, Duration::from_secs(5));
        peers
    }

    /// Everything the fakes have received, as one number that grows with every call.
    fn activity(&self) -> usize {
        self.slack.state.lock().unwrap().calls.len()
            + self.discord.calls().len()
            + self.teams.seen().len()
            + self.jira.data().requests.len()
            + self.servicenow.data().ops.len()
    }
}

fn config(dir: &Path, peers: &Peers) -> PathBuf {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "contain-instance",
        "id: contain-instance\nname: Contain an instance\non:\n  source: [aws.guardduty, aws.securityhub]\nsteps:\n  - id: triage\n    uses: core.log\n    with: { message: \"triage ${{ alert.resource.id }}\" }\n  - id: approve\n    approval:\n      prompt: \"Isolate ${{ alert.resource.id }}?\"\n      approvers: soc\n      timeout: 1h\n  - id: isolate\n    if: steps.approve.approved\n    uses: core.log\n    with: { message: isolated }\n",
    );
    let discord = discord::chat_section(&peers.discord, None);
    let path = dir.join("cordon.yaml");
    std::fs::write(
        &path,
        format!(
            r#"server:
  listen: 127.0.0.1:0
  admin_token: {ADMIN_TOKEN}
store:
  path: {store}
log:
  format: json
  level: info
playbooks:
  paths: [{playbooks}]
approvers:
  soc: ["cli:lead"]
sources:
  aws.guardduty:
    auth:
      bearer:
        token: {INTAKE_TOKEN}
  aws.securityhub:
    auth:
      bearer:
        token: {INTAKE_TOKEN}
{slack}{discord}  teams:
    app_id: {APP_ID}
    app_password: {APP_PASSWORD}
    tenant_id: {TENANT}
    openid_metadata_url: {metadata}
    token_url: {token}
    channel_id: "{TEAMS_CHANNEL}"
    service_url: {service_url}
tickets:
  retry: {{ base: 200ms, max: 5s }}
  jira:
    base_url: {jira}
    email: {JIRA_EMAIL}
    api_token: {JIRA_TOKEN}
  servicenow:
    base_url: {servicenow}
    username: {SN_USER}
    password: {SN_PASSWORD}
  default:
    jira:
      project: SEC
    servicenow:
      assignment_group: Security Operations
"#,
            store = dir.join("store").display(),
            playbooks = playbooks.display(),
            slack = slack::chat_yaml(&peers.slack, None, false),
            discord = discord.trim_start_matches("chat:\n"),
            metadata = peers.identity.metadata_url(),
            token = peers.identity.token_url(),
            service_url = peers.teams.service_url(),
            jira = peers.jira.base,
            servicenow = peers.servicenow.base,
        ),
    )
    .unwrap();
    path
}

fn instance(entity: usize) -> String {
    format!("i-0{:016x}", 0x5707_0000 + entity)
}

/// Alert `i` of the storm: its source and body, about instance `i % ENTITIES`, from the shared
/// fixtures with ids of its own.
fn storm_alert(i: usize) -> (&'static str, Vec<u8>) {
    let instance = instance(i % ENTITIES);
    let guardduty = |file: &str| {
        let mut finding: Value =
            serde_json::from_slice(&read_fixture(&format!("alerts/aws_guardduty/{file}"))).unwrap();
        finding["id"] = json!(format!("{i:032x}"));
        finding["resource"]["instanceDetails"]["instanceId"] = json!(instance);
        ("aws.guardduty", serde_json::to_vec(&finding).unwrap())
    };
    match i % 3 {
        0 => guardduty("sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json"),
        1 => guardduty("sekoia_detail_instance_portprobe__Recon_EC2_PortProbeUnprotectedPort.json"),
        _ => {
            let mut finding: Value = serde_json::from_slice(&read_fixture(
                "alerts/aws_securityhub/asff_finding_afsbp_ec2.2_default_sg.json",
            ))
            .unwrap();
            let region = finding["Resources"][0]["Region"].clone();
            finding["Id"] = json!(format!(
                "arn:aws:securityhub:us-east-1:111111111111:subscription/aws-foundational-security-best-practices/v/1.0.0/EC2.2/finding/storm-{i}"
            ));
            // The finding's resource is the storm's instance (as Security Hub shows the
            // findings it imports about instances).
            finding["Resources"] = json!([{
                "Type": "AwsEc2Instance",
                "Id": format!("arn:aws:ec2:us-east-1:111111111111:instance/{instance}"),
                "Partition": "aws",
                "Region": region,
            }]);
            ("aws.securityhub", serde_json::to_vec(&finding).unwrap())
        }
    }
}

/// One acknowledged alert.
struct Acked {
    alert_id: String,
    incident_id: String,
    entity: usize,
}

/// Replays the storm, `AT_ONCE` requests at a time; every alert must be accepted.
async fn replay(base: &str) -> Vec<Acked> {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..AT_ONCE {
        let (http, next, base) = (http.clone(), next.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= ALERTS {
                    return acked;
                }
                let (source, body) = storm_alert(i);
                let answer = http
                    .post(format!("{base}/v1/alerts/{source}"))
                    .bearer_auth(INTAKE_TOKEN)
                    .body(body)
                    .send()
                    .await
                    .expect("the alert reaches the server");
                let status = answer.status().as_u16();
                let answer: Value = answer.json().await.unwrap();
                assert_eq!(status, 202, "alert {i}: {answer}");
                assert_eq!(
                    answer["alerts"][0]["duplicate"], false,
                    "alert {i}: {answer}"
                );
                acked.push(Acked {
                    alert_id: answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned(),
                    incident_id: answer["alerts"][0]["incident_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    entity: i % ENTITIES,
                });
            }
        }));
    }
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.unwrap());
    }
    acked
}

/// What each platform and system shows, per incident (by instance).
#[derive(Debug, Default)]
struct Shown {
    cards: usize,
    /// Thread messages per instance.
    thread: HashMap<usize, usize>,
    /// Cards updated in place.
    updated: usize,
}

impl Shown {
    fn most_in_a_thread(&self) -> usize {
        self.thread.values().copied().max().unwrap_or(0)
    }

    fn in_threads(&self) -> usize {
        self.thread.values().sum()
    }
}

fn entity_in(text: &str) -> Option<usize> {
    (0..ENTITIES).find(|e| text.contains(&instance(*e)))
}

fn slack_shown(peers: &Peers) -> Shown {
    let mut shown = Shown::default();
    for card in peers.slack.cards() {
        shown.cards += 1;
        if !card.history.is_empty() && !card.has_buttons() {
            shown.updated += 1;
        }
        if let Some(e) = entity_in(&format!("{}{}", card.blocks_text(), card.text)) {
            *shown.thread.entry(e).or_default() += peers.slack.replies(&card.ts).len();
        }
    }
    shown
}

fn discord_shown(peers: &Peers) -> Shown {
    let mut shown = Shown::default();
    for card in peers.discord.messages_in(discord::CHANNEL_ID) {
        shown.cards += 1;
        if !card.edits.is_empty() && card.button_ids().is_empty() {
            shown.updated += 1;
        }
        if let Some(e) = entity_in(&card.embeds.to_string()) {
            *shown.thread.entry(e).or_default() += peers.discord.messages_in(&card.id).len();
        }
    }
    shown
}

fn teams_shown(peers: &Peers) -> Shown {
    let mut shown = Shown::default();
    for card in peers.teams.posts(TEAMS_CHANNEL) {
        shown.cards += 1;
        if card.updates > 0 && card.buttons().is_empty() {
            shown.updated += 1;
        }
        if let Some(e) = entity_in(&card.activity.to_string()) {
            *shown.thread.entry(e).or_default() += peers.teams.replies(&card.id).len();
        }
    }
    shown
}

/// The comments of each incident's ticket in Jira and the work notes of its ServiceNow record.
fn ticket_texts(peers: &Peers) -> (HashMap<String, Vec<String>>, HashMap<String, Vec<String>>) {
    let jira = peers.jira.data();
    let jira_comments = jira
        .issues
        .iter()
        .filter_map(|issue| {
            let label = issue.fields["labels"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find_map(|l| l.strip_prefix("cordon-"))?
                .to_owned();
            Some((label, peers.jira.comments(&issue.key)))
        })
        .collect();
    let sn = peers.servicenow.data();
    let sn_notes = sn
        .records
        .iter()
        .map(|record| {
            let sys_id = record["sys_id"].as_str().unwrap_or_default();
            let notes = sn
                .journal
                .iter()
                .filter(|j| j["element_id"] == sys_id && j["element"] == "work_notes")
                .map(|j| j["value"].as_str().unwrap_or_default().to_owned())
                .collect();
            (
                record["correlation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                notes,
            )
        })
        .collect();
    (jira_comments, sn_notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_1000_alerts_about_20_instances_is_20_cards_20_tickets_and_a_few_messages_each()
{
    let peers = Peers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &peers);
    let server = Process::start(&config);

    let started = Instant::now();
    let acked = replay(&server.base).await;
    let replayed = started.elapsed();
    assert_eq!(acked.len(), ALERTS);
    let mut incident_of: HashMap<usize, String> = HashMap::new();
    for a in &acked {
        let incident = incident_of
            .entry(a.entity)
            .or_insert_with(|| a.incident_id.clone());
        assert_eq!(
            *incident,
            a.incident_id,
            "one incident for {}",
            instance(a.entity)
        );
    }
    assert_eq!(incident_of.len(), ENTITIES, "one incident per instance");

    // One run per incident asks; the lead approves them all while the cards still go out.
    wait_until(
        Duration::from_secs(60),
        || "a waiting run per incident".into(),
        async || {
            let runs = server.admin("/v1/runs?limit=1000").await["runs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            runs.len() == ENTITIES && runs.iter().all(|r| r["status"] == "waiting")
        },
    )
    .await;
    let runs = server.admin("/v1/runs?limit=1000").await["runs"]
        .as_array()
        .cloned()
        .unwrap();
    for run in &runs {
        let (status, body) = server
            .decide(
                run["id"].as_str().unwrap(),
                "approve",
                "approve",
                "cli:lead",
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let approved = started.elapsed();

    // Delivered: every card shows the decision on every platform, and every ticket says the run
    // ended (the last thing each incident has to tell).
    let ended = "Run ";
    let all_there = || {
        let (jira, sn) = ticket_texts(&peers);
        let told = |texts: &HashMap<String, Vec<String>>| {
            texts
                .values()
                .filter(|t| {
                    t.iter()
                        .any(|c| c.contains(ended) && c.contains("succeeded"))
                })
                .count()
        };
        [
            slack_shown(&peers).updated,
            discord_shown(&peers).updated,
            teams_shown(&peers).updated,
            told(&jira),
            told(&sn),
        ]
    };
    wait_until(
        DELIVERED_WITHIN,
        || {
            format!(
                "every card decided and every ticket told the run ended (Slack, Discord, Teams, Jira, ServiceNow: {:?}); log warnings: {:#?}",
                all_there(),
                server
                    .log_lines("\"level\":\"ERROR")
                    .into_iter()
                    .take(10)
                    .collect::<Vec<_>>()
            )
        },
        async || all_there() == [ENTITIES; 5],
    )
    .await;
    let delivered = started.elapsed();
    // Then nothing more comes: a coalesced note or comment still due would come within the
    // interval (10 s, the default).
    let deadline = Instant::now() + DELIVERED_WITHIN;
    let (mut seen, mut since) = (peers.activity(), Instant::now());
    while since.elapsed() < Duration::from_secs(12) {
        assert!(Instant::now() < deadline, "the traffic never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if peers.activity() != seen {
            (seen, since) = (peers.activity(), Instant::now());
        }
    }

    // What a SOC sees in chat: a card per incident, updated in place, and a few thread messages.
    let shown = [
        ("Slack", slack_shown(&peers)),
        ("Discord", discord_shown(&peers)),
        ("Teams", teams_shown(&peers)),
    ];
    for (platform, shown) in &shown {
        assert_eq!(shown.cards, ENTITIES, "{platform} cards: {shown:?}");
        assert_eq!(
            shown.thread.len(),
            ENTITIES,
            "{platform}: a card per instance"
        );
        assert_eq!(
            shown.updated, ENTITIES,
            "{platform}: cards updated in place"
        );
        assert!(
            shown.most_in_a_thread() <= MOST_PER_INCIDENT,
            "{platform}: at most {MOST_PER_INCIDENT} thread messages per incident (the storm took {replayed:?} to replay): {shown:?}"
        );
    }
    // Every call over a limit was answered 429 and tried again later; nothing broke a contract
    // (Discord's calls are checked by Prism beside the answers, at the end).
    peers.slack.assert_no_violations();
    peers.teams.assert_valid();
    peers.jira.assert_no_violations();

    // Tickets: one per incident in each system, a few comments each, naming every alert.
    let (jira, sn) = ticket_texts(&peers);
    assert_eq!(jira.len(), ENTITIES, "Jira issues");
    assert_eq!(sn.len(), ENTITIES, "ServiceNow incidents");
    let mut alerts_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for a in &acked {
        alerts_of
            .entry(&a.incident_id)
            .or_default()
            .insert(&a.alert_id);
    }
    for (system, texts) in [("Jira", &jira), ("ServiceNow", &sn)] {
        for (incident, comments) in texts {
            assert!(
                comments.len() <= MOST_PER_INCIDENT,
                "{system}: {} comments on the ticket of {incident} (the storm took {replayed:?} to replay): {comments:#?}",
                comments.len()
            );
            let all = comments.join("\n");
            let missing: Vec<&&str> = alerts_of[incident.as_str()]
                .iter()
                .filter(|id| !all.contains(**id))
                .collect();
            // The alert that opened the incident is the ticket itself, not a comment.
            assert!(
                missing.len() <= 1,
                "{system}: alerts of {incident} named in no comment: {missing:?}"
            );
        }
    }

    // Nothing dropped in Cordon either: every alert in its incident and its report.
    for (incident, expected) in &alerts_of {
        let listed = server
            .admin(&format!("/v1/alerts?incident={incident}&limit=1000"))
            .await;
        let listed: HashSet<&str> = support::texts(&listed["alerts"], "id")
            .into_iter()
            .collect();
        assert_eq!(&listed, expected, "incident {incident} lists its alerts");
        let token = server.token_of(support::TESTER).await;
        let report = reqwest::Client::new()
            .get(format!("{}/v1/incidents/{incident}/report", server.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let unreported: Vec<&&str> = expected
            .iter()
            .filter(|id| !report.contains(**id))
            .collect();
        assert!(
            unreported.is_empty(),
            "the report of {incident} misses alerts {unreported:?}"
        );
    }

    peers.discord.assert_valid().await;
    let jira_data = peers.jira.data();
    let comments = |t: &HashMap<String, Vec<String>>| t.values().map(Vec::len).sum::<usize>();
    let most = |t: &HashMap<String, Vec<String>>| t.values().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "storm: {ALERTS} alerts about {ENTITIES} instances replayed in {replayed:?}, approved at {approved:?}, delivered at {delivered:?}\n\
         Slack: {} cards, {} updated in place, {} thread messages (at most {} per incident), {} calls answered 429\n\
         Discord: {} cards, {} updated in place, {} thread messages (at most {} per incident), {} calls answered 429\n\
         Teams: {} cards, {} updated in place, {} thread messages (at most {} per incident), {} calls answered 429\n\
         Jira: {} issues, {} comments (at most {} per issue), {} requests, {} answered 429\n\
         ServiceNow: {} incidents, {} work notes (at most {} per incident), {} answered 429",
        shown[0].1.cards,
        shown[0].1.updated,
        shown[0].1.in_threads(),
        shown[0].1.most_in_a_thread(),
        peers.slack.limited(),
        shown[1].1.cards,
        shown[1].1.updated,
        shown[1].1.in_threads(),
        shown[1].1.most_in_a_thread(),
        peers.discord.limited(),
        shown[2].1.cards,
        shown[2].1.updated,
        shown[2].1.in_threads(),
        shown[2].1.most_in_a_thread(),
        peers.teams.limited(),
        jira_data.issues.len(),
        comments(&jira),
        most(&jira),
        jira_data.requests.len(),
        peers
            .jira
            .control()
            .served_rate_limited
            .load(std::sync::atomic::Ordering::SeqCst),
        sn.len(),
        comments(&sn),
        most(&sn),
        peers
            .servicenow
            .control()
            .served_rate_limited
            .load(std::sync::atomic::Ordering::SeqCst),
    );
}
