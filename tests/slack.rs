//! Slack end to end, through the real server: a GuardDuty finding over HTTP becomes one card in
//! the channel (its later alerts and the run's result in the card's thread), a signed click
//! decides and the card is updated in place; every rejection the chat issue lists changes
//! nothing; `/cordon` over HTTP; Socket Mode; quorum across Slack and the API; an outage and
//! Slack's rate limit delay cards and lose none.
//!
//! Every Web API call Cordon makes goes through [`FakeSlack`], which has Stoplight Prism validate
//! it against Slack's official Web API description first (each test ends with
//! `assert_no_violations`), then answers statefully (support/slack.rs says how).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::slack::{
    CHANNEL, FakeSlack, Posted, SIGNING_SECRET, chat_yaml, click_payload, command_body,
    command_payload, envelope, interaction_body, sign,
};
use support::{TestServer, all_sources, people_yaml, read_fixture, write_playbook};
use tempfile::TempDir;

const ALICE: &str = "U0ALICE";
const BOB: &str = "U0BOB";
const MALLORY: &str = "U0MALLORY";
const TOR_RELAY: &str =
    "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json";

/// The same by hand, for `/cordon run`.
const MANUAL: &str = r#"id: manual-contain
name: Contain an instance by hand
inputs:
  instance: { type: string, required: true }
  region: { type: string }
steps:
  - id: approve
    approval:
      prompt: "Isolate ${{ inputs.instance }} in ${{ inputs.region }}?"
      approvers: on-call
      timeout: 30m
      on_timeout: reject
  - id: isolate
    if: steps.approve.approved
    script: |
      #{ isolated: inputs.instance }
"#;

struct Env {
    server: TestServer,
    fake: FakeSlack,
    _playbooks: TempDir,
}

async fn env(quorum: u32, approvers: &str, triggers: Option<&str>, socket_mode: bool) -> Env {
    let fake = FakeSlack::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "contain-ec2",
        &support::approval_playbook(
            ("contain-ec2", "Contain an EC2 instance"),
            "aws.guardduty",
            "Isolate ${{ alert.resource.id }} in ${{ alert.resource.region }}?",
            "on-call",
            quorum,
        ),
    );
    write_playbook(playbooks.path(), "manual-contain", MANUAL);
    // Alice, Bob and Carol have Slack accounts Cordon knows; Mallory may only read.
    let config = format!(
        "{}playbooks:\n  paths: [{}]\napprovers:\n{approvers}{}{}",
        people_yaml(&[
            ("alice", &["slack:U0ALICE"], &["responder"]),
            ("bob", &["slack:U0BOB"], &["responder"]),
            ("carol", &["slack:U0CAROL"], &["responder"]),
            ("mallory", &["slack:U0MALLORY"], &["viewer"]),
        ]),
        playbooks.path().display(),
        chat_yaml(&fake, triggers, socket_mode),
        all_sources()
    );
    let server = TestServer::start_with(&config).await;
    Env {
        server,
        fake,
        _playbooks: playbooks,
    }
}

fn guardduty(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut finding: Value = serde_json::from_slice(&read_fixture(TOR_RELAY)).unwrap();
    edit(&mut finding);
    serde_json::to_vec(&finding).unwrap()
}

impl Env {
    /// Posts the GuardDuty finding; gives the run it started.
    async fn alert(&self) -> String {
        let (status, answer) = self
            .server
            .post_alert("aws.guardduty", guardduty(|_| {}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
        self.server.run_for_alert(&alert).await
    }

    /// The message carrying the buttons of `run`.
    async fn card_of(&self, run: &str) -> Posted {
        self.fake
            .wait(&format!("a card for run {run}"), |f| {
                f.messages().into_iter().find(|m| {
                    m.button_value()
                        .is_some_and(|v| v.contains(&format!("\"{run}\"")))
                })
            })
            .await
    }

    /// POSTs a signed request to a Slack endpoint, signed now.
    async fn signed(&self, path: &str, body: &str) -> (u16, Value) {
        let ts = chrono::Utc::now().timestamp();
        self.send_signed(path, body, ts, &sign(SIGNING_SECRET, ts, body))
            .await
    }

    async fn send_signed(&self, path: &str, body: &str, ts: i64, signature: &str) -> (u16, Value) {
        self.server
            .send(
                self.server
                    .http
                    .post(format!("{}{path}", self.server.base))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header("x-slack-signature", signature)
                    .body(body.to_owned()),
            )
            .await
    }

    /// `user` clicks Approve or Deny on `card`.
    async fn click(&self, user: &str, card: &Posted, approve: bool) -> (u16, Value) {
        let body = interaction_body(&click_payload(
            user,
            card,
            &card.button_value().expect("the card has buttons"),
            approve,
        ));
        self.signed("/v1/chat/slack/interactions", &body).await
    }

    /// `/cordon <text>` from `user`; gives Slack's JSON answer.
    async fn command(&self, user: &str, text: &str) -> Value {
        let body = command_body(&command_payload(user, text));
        let (status, answer) = self.signed("/v1/chat/slack/commands", &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Waits for a message only `user` sees containing `text`.
    async fn told(&self, user: &str, text: &str) -> String {
        self.fake
            .wait(&format!("{user} told `{text}`"), |f| {
                f.ephemerals()
                    .into_iter()
                    .find(|e| e.user == user && e.text.contains(text))
                    .map(|e| e.text)
            })
            .await
    }

    async fn run(&self, id: &str) -> Value {
        self.server.admin(&format!("/v1/runs/{id}")).await["run"].clone()
    }

    async fn decisions(&self, run: &str) -> Vec<Value> {
        self.run(run).await["steps"]["approve"]["approval"]["decisions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn audit(&self, run: &str) -> Vec<cordon::audit::AuditEntry> {
        self.server
            .state
            .store
            .audit_entries(Some(run), 1000)
            .await
            .unwrap()
    }

    /// The message `ts` once it has been updated (buttons gone).
    async fn updated(&self, ts: &str) -> Posted {
        self.fake
            .wait("the card updated", |f| {
                f.messages()
                    .into_iter()
                    .find(|m| m.ts == ts && !m.history.is_empty() && !m.has_buttons())
            })
            .await
    }
}

fn on_call(members: &[&str]) -> String {
    format!("  on-call: [{}]\n", members.join(", "))
}

#[tokio::test]
async fn a_guardduty_finding_becomes_one_card_a_click_contains_it_and_the_card_and_thread_follow() {
    let e = env(1, &on_call(&["slack:U0ALICE"]), None, false).await;
    let run = e.alert().await;
    let card = e.card_of(&run).await;

    // One card in the configured channel, with what the analyst needs to decide.
    assert_eq!(card.channel, CHANNEL);
    assert!(card.thread_ts.is_none());
    let shown = card.blocks_text();
    for needed in [
        "Isolate i-99999999 in eu-west-2?",
        "EC2 instance i-99999999 is communicating with a Tor Exit node.",
        "8/10",
        "i-99999999",
        "on-call",
        "Approve",
        "Deny",
    ] {
        assert!(shown.contains(needed), "the card lacks `{needed}`: {shown}");
    }
    assert!(card.text.contains("Approval needed"), "{}", card.text);
    assert_eq!(e.run(&run).await["status"], "waiting");

    // A later alert of the same incident goes into the card's thread, not a new card.
    let (status, answer) = e
        .server
        .post_alert(
            "aws.guardduty",
            guardduty(|f| {
                f["id"] = json!("a-second-finding-of-the-same-instance");
                f["type"] = json!("Backdoor:EC2/C&CActivity.B");
            }),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    e.fake
        .wait("the later alert in the thread", |f| {
            f.replies(&card.ts)
                .into_iter()
                .find(|m| m.text.contains("New alert in this incident"))
        })
        .await;

    // Alice approves with a signed click: the run goes on, she is told, the card is updated.
    let (status, answer) = e.click(ALICE, &card, true).await;
    assert_eq!(status, 200, "{answer}");
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(
        e.run(&run).await["steps"]["isolate"]["output"]["isolated"],
        "i-99999999"
    );
    let told = e.told(ALICE, "Approved").await;
    assert!(told.contains(&run), "{told}");
    let updated = e.updated(&card.ts).await;
    let shown = updated.blocks_text();
    assert!(shown.contains("*Approved*"), "{shown}");
    assert!(shown.contains("<@U0ALICE> (approve via slack"), "{shown}");
    assert!(updated.text.starts_with("Approved:"), "{}", updated.text);

    // The result in the thread; still one card.
    e.fake
        .wait("the result in the thread", |f| {
            f.replies(&card.ts)
                .into_iter()
                .find(|m| m.text.contains("Playbook `contain-ec2` succeeded"))
        })
        .await;
    assert_eq!(e.fake.cards().len(), 1, "{:#?}", e.fake.cards());

    // Who decided, where, in the run and the audit log.
    let decisions = e.decisions(&run).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["identity"], "slack:U0ALICE");
    assert_eq!(decisions[0]["via"], "slack");
    assert!(
        e.audit(&run)
            .await
            .iter()
            .any(|a| a.kind == "approval.decided" && a.actor.as_deref() == Some("slack:U0ALICE"))
    );

    // Every call form-encoded with the bot token as a bearer, and valid by Slack's description.
    let calls = e.fake.state.lock().unwrap().calls.clone();
    assert!(calls.iter().any(|c| c.method == "chat.update"));
    for call in &calls {
        assert_eq!(call.authorization, "Bearer xoxb-test-bot-token");
        assert!(
            call.content_type
                .starts_with("application/x-www-form-urlencoded")
        );
    }
    e.fake.assert_no_violations();
}

#[tokio::test]
async fn every_rejected_click_changes_nothing_and_says_why() {
    let e = env(1, &on_call(&["slack:U0ALICE", "slack:U0BOB"]), None, false).await;
    let run = e.alert().await;
    let card = e.card_of(&run).await;
    let body = interaction_body(&click_payload(
        ALICE,
        &card,
        &card.button_value().unwrap(),
        true,
    ));
    let path = "/v1/chat/slack/interactions";
    let now = chrono::Utc::now().timestamp();

    // A bad signature (another secret), a stale timestamp, no signature at all: 401, nothing
    // decided.
    let (status, answer) = e
        .send_signed(path, &body, now, &sign("not-the-secret", now, &body))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature"))
    );
    let (status, answer) = e
        .send_signed(
            path,
            &body,
            now,
            &sign(SIGNING_SECRET, now, &format!("{body}x")),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature"))
    );
    let stale = now - 6 * 60;
    let (status, answer) = e
        .send_signed(path, &body, stale, &sign(SIGNING_SECRET, stale, &body))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("stale_timestamp"))
    );
    let (status, answer) = e
        .server
        .send(
            e.server
                .http
                .post(format!("{}{path}", e.server.base))
                .body(body.clone()),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("missing_signature"))
    );
    // Signed, but not an interaction Slack sends.
    let (status, answer) = e.signed(path, "payload=%7B%22type%22%3A1%7D").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    let (status, answer) = e.signed(path, "nothing=here").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_body"))
    );
    assert!(e.decisions(&run).await.is_empty());
    assert_eq!(e.run(&run).await["status"], "waiting");

    // Someone outside the approver group: told so, audited, nothing decided.
    let (status, _) = e.click(MALLORY, &card, true).await;
    assert_eq!(status, 200);
    let told = e.told(MALLORY, "Not allowed").await;
    assert!(told.contains("on-call"), "{told}");
    let refused: Vec<_> = e
        .audit(&run)
        .await
        .into_iter()
        .filter(|a| a.kind == "approval.refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].actor.as_deref(), Some("slack:U0MALLORY"));
    assert!(e.decisions(&run).await.is_empty());

    // Alice's valid click decides; the same signed request again is a replay and changes nothing.
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(SIGNING_SECRET, ts, &body);
    let (status, _) = e.send_signed(path, &body, ts, &signature).await;
    assert_eq!(status, 200);
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let audit_before = e.audit(&run).await.len();
    let (status, answer) = e.send_signed(path, &body, ts, &signature).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("replayed")));
    assert_eq!(e.decisions(&run).await.len(), 1);
    assert_eq!(e.audit(&run).await.len(), audit_before);

    // A late click: "already decided by ...", nothing changes.
    let (status, _) = e.click(BOB, &card, false).await;
    assert_eq!(status, 200);
    let told = e.told(BOB, "Already decided by").await;
    assert!(told.contains("alice (approve)"), "{told}");
    assert_eq!(e.decisions(&run).await.len(), 1);
    assert_eq!(e.run(&run).await["status"], "succeeded");
    e.fake.assert_no_violations();
}

#[tokio::test]
async fn quorum_two_counts_distinct_people_across_slack_and_the_api() {
    let e = env(2, &on_call(&["slack:U0ALICE", "cli:bob"]), None, false).await;
    let run = e.alert().await;
    let card = e.card_of(&run).await;

    let (status, _) = e.click(ALICE, &card, true).await;
    assert_eq!(status, 200);
    e.told(ALICE, "recorded (1 of 2 needed)").await;
    // The same person twice is still one.
    e.click(ALICE, &card, true).await;
    e.told(ALICE, "already decided on this approval").await;
    assert_eq!(e.decisions(&run).await.len(), 1);
    assert_eq!(e.run(&run).await["status"], "waiting");
    assert!(
        e.fake.messages()[0].history.is_empty(),
        "not updated before the quorum"
    );

    // A second person, through the admin API: the quorum is met, the card updated for both.
    let (status, answer) = e
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/approve"),
            json!({ "decision": "approve", "identity": "cli:bob" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let shown = e.updated(&card.ts).await.blocks_text();
    assert!(
        shown.contains("<@U0ALICE>") && shown.contains("`cli-bob`"),
        "{shown}"
    );
    e.fake.assert_no_violations();
}

#[tokio::test]
async fn cordon_slash_command_status_runs_decisions_and_gated_triggers() {
    // Bob is on call by name; Alice through the Slack user group S0SOC, which also may trigger.
    let approvers = "  on-call: [slack:U0BOB, slack-group:S0SOC]\n  soc-l2: [slack-group:S0SOC]\n";
    let e = env(1, approvers, Some("soc-l2"), false).await;
    e.fake.set_group("S0SOC", &[ALICE, "U0CAROL"]);

    // Not in the trigger group: refused and audited, no run.
    let answer = e
        .command(
            MALLORY,
            "run manual-contain instance=i-0abc region=us-east-1",
        )
        .await;
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"].as_str().unwrap().contains("Not allowed"),
        "{answer}"
    );
    let runs = e.server.admin("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0);
    let audit = e
        .server
        .state
        .store
        .audit_entries(None, 1000)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "access.refused" && a.actor.as_deref() == Some("slack:U0MALLORY"))
    );

    // Alice (through her user group) starts it; the channel sees it; its card is posted.
    let answer = e
        .command(
            ALICE,
            "run manual-contain instance=i-0abc region=\"us-east-1\"",
        )
        .await;
    assert_eq!(answer["response_type"], "in_channel", "{answer}");
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("<@U0ALICE> started `manual-contain`"),
        "{text}"
    );
    let run = text
        .split("run `")
        .nth(1)
        .and_then(|t| t.split('`').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        e.run(&run).await["inputs"],
        json!({ "instance": "i-0abc", "region": "us-east-1" })
    );
    let card = e.card_of(&run).await;
    assert!(card.blocks_text().contains("Isolate i-0abc in us-east-1?"));

    // The requester may not approve her own run, by button or by command.
    e.click(ALICE, &card, true).await;
    e.told(ALICE, "started this run and may not approve it")
        .await;
    let answer = e.command(ALICE, &format!("approve {run} approve")).await;
    assert!(
        answer["text"].as_str().unwrap().contains("may not approve"),
        "{answer}"
    );
    assert!(e.decisions(&run).await.is_empty());

    // status and runs show the waiting approval.
    let status = e.command(BOB, "status").await;
    let text = status["text"].as_str().unwrap();
    assert!(text.contains("*1* approval waiting."), "{text}");
    assert!(
        text.contains(&run) && text.contains("Isolate i-0abc in us-east-1?"),
        "{text}"
    );
    let runs = e.command(BOB, "runs").await;
    assert!(runs["text"].as_str().unwrap().contains(&run), "{runs}");

    // Bob approves by id; the card is updated.
    let answer = e.command(BOB, &format!("approve {run} approve")).await;
    assert!(
        answer["text"].as_str().unwrap().contains("Approved"),
        "{answer}"
    );
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    e.updated(&card.ts).await;
    // Deciding again by id: already decided.
    let answer = e.command(BOB, &format!("deny {run} approve")).await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("Already decided by bob"),
        "{answer}"
    );

    // Nonsense is answered, not failed.
    let answer = e.command(BOB, "approve").await;
    assert!(
        answer["text"].as_str().unwrap().contains("Usage"),
        "{answer}"
    );
    let answer = e.command(ALICE, "run manual-contain notapair").await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("is not `key=value`"),
        "{answer}"
    );
    let answer = e.command(ALICE, "run no-such-playbook").await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("There is no playbook"),
        "{answer}"
    );
    let answer = e.command(BOB, "frobnicate <!channel>").await;
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("Unknown command") && !text.contains("<!channel>"),
        "{text}"
    );

    // The user group was asked about once in its cache window, not per command.
    assert_eq!(e.fake.calls("usergroups.users.list").len(), 1);
    e.fake.assert_no_violations();
}

#[tokio::test]
async fn socket_mode_feeds_clicks_and_commands_to_the_same_handlers() {
    let e = env(1, &on_call(&["slack:U0ALICE"]), None, true).await;
    let run = e.alert().await;
    let card = e.card_of(&run).await;
    assert_eq!(
        e.fake.calls("apps.connections.open")[0].authorization,
        "Bearer xapp-test-app-token"
    );

    // A click arrives over the socket: acknowledged, decided, the card updated.
    let click = click_payload(ALICE, &card, &card.button_value().unwrap(), true);
    let ack = e
        .fake
        .socket_send(envelope("interactive", "env-click-1", click))
        .await;
    assert_eq!(ack["envelope_id"], "env-click-1");
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    e.told(ALICE, "Approved").await;
    e.updated(&card.ts).await;

    // A slash command over the socket is answered in the acknowledgement.
    let ack = e
        .fake
        .socket_send(envelope(
            "slash_commands",
            "env-cmd-1",
            command_payload(ALICE, "runs"),
        ))
        .await;
    assert_eq!(ack["envelope_id"], "env-cmd-1");
    assert_eq!(ack["payload"]["response_type"], "ephemeral", "{ack}");
    assert!(
        ack["payload"]["text"].as_str().unwrap().contains(&run),
        "{ack}"
    );
    e.fake.assert_no_violations();
}

#[tokio::test]
async fn a_slack_outage_and_rate_limits_delay_cards_and_lose_none() {
    let e = env(1, &on_call(&["slack:U0ALICE", "cli:bob"]), None, false).await;
    e.fake.set_outage(Some(503));
    let run = e.alert().await;

    // Slack is down: the run waits, and approvals still work through the API.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(e.fake.messages().is_empty());
    assert!(
        !e.fake.calls("chat.postMessage").is_empty(),
        "delivery was tried"
    );
    let (status, answer) = e
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/approve"),
            json!({ "decision": "approve", "identity": "cli:bob" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    e.server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let pending = e.server.state.outbox.pending().await.unwrap();
    assert!(
        pending.iter().any(|p| p.target == "slack"),
        "the cards wait in the outbox"
    );
    for entry in &pending {
        let error = entry.last_error.clone().unwrap_or_default();
        assert!(!error.contains("xoxb-test-bot-token"), "{error}");
    }

    // Slack is back but rate-limits the first call: Cordon waits as told, then delivers, in order.
    e.fake.rate_limit_next(&[1]);
    e.fake.set_outage(None);
    let card = e
        .fake
        .wait("the card after the outage", |f| {
            f.cards().into_iter().find(|m| !m.history.is_empty())
        })
        .await;
    assert!(
        !card.has_buttons(),
        "decided meanwhile: {}",
        card.blocks_text()
    );
    assert!(card.blocks_text().contains("`cli-bob` (approve via api"));
    e.fake
        .wait("the result in the thread", |f| {
            f.replies(&card.ts)
                .into_iter()
                .find(|m| m.text.contains("succeeded"))
        })
        .await;
    assert_eq!(e.fake.cards().len(), 1, "one card, no duplicates");
    // The card's post: refused during the outage, then 429, then, no sooner than Retry-After, done.
    let posts = e.fake.calls("chat.postMessage");
    let answers: Vec<u16> = posts.iter().map(|c| c.answered).collect();
    let limited = answers
        .iter()
        .position(|a| *a == 429)
        .expect("a 429 was answered");
    assert!(answers[..limited].iter().all(|a| *a == 503), "{answers:?}");
    assert_eq!(answers[limited + 1], 200, "{answers:?}");
    let waited = posts[limited + 1].at - posts[limited].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After 1 s, waited {waited:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !e.server.state.outbox.pending().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.fake.assert_no_violations();
}

#[test]
fn the_slack_section_says_what_is_missing() {
    let parse = |yaml: &str| {
        cordon::config::parse(yaml, std::path::Path::new("cordon.yaml")).map(|c| c.chat.slack)
    };
    let error = parse("chat:\n  slack:\n    bot_token: x\n    channel: C1\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("set signing_secret"), "{error}");
    let error =
        parse("chat:\n  slack:\n    bot_token: x\n    channel: C1\n    socket_mode: true\n")
            .unwrap_err()
            .to_string();
    assert!(error.contains("needs chat.slack.app_token"), "{error}");
    let error = parse(
        "chat:\n  slack:\n    bot_token: x\n    channel: C1\n    signing_secret: s\n    api_url: ftp://x\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not an http(s) URL"), "{error}");
    let slack = parse("chat:\n  slack:\n    bot_token: xoxb-secret\n    channel: C1\n    signing_secret: s3cret\n")
        .unwrap()
        .unwrap();
    assert_eq!(slack.api_url, "https://slack.com/api");
    let shown = format!("{slack:?}");
    assert!(
        !shown.contains("xoxb-secret") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[tokio::test]
async fn the_prism_check_catches_calls_that_break_slacks_description() {
    let fake = FakeSlack::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat.postMessage", fake.api_url);
    let bearer = "Bearer xoxb-test-bot-token";
    // As the description asks: form-encoded, with the channel.
    http.post(&url)
        .header("authorization", bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("channel=C1&text=hi")
        .send()
        .await
        .unwrap();
    fake.assert_no_violations();
    // JSON (which the description does not list for this method), then a form without `channel`.
    http.post(&url)
        .header("authorization", bearer)
        .json(&json!({ "channel": "C1", "text": "hi" }))
        .send()
        .await
        .unwrap();
    http.post(&url)
        .header("authorization", bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hi")
        .send()
        .await
        .unwrap();
    let violations = fake.violations().join("\n");
    assert!(violations.contains("415"), "{violations}");
    assert!(
        violations.contains("required property 'channel'"),
        "{violations}"
    );
}

#[test]
fn the_slack_app_manifest_asks_for_exactly_what_cordon_uses() {
    use slack_morphism::prelude::SlackAppManifest;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("integrations/slack/manifest.yaml")).unwrap();
    let manifest: SlackAppManifest = serde_yaml::from_str(&text).expect("a Slack app manifest");
    let scopes: Vec<String> = manifest
        .oauth_config
        .and_then(|o| o.scopes)
        .and_then(|s| s.bot)
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["chat:write", "commands", "usergroups:read"]);
    let features = manifest.features.unwrap();
    let command = &features.slash_commands.unwrap()[0];
    assert_eq!(command.command, "/cordon");
    assert_eq!(
        command.url.as_ref().unwrap().path(),
        "/v1/chat/slack/commands"
    );
    let settings = manifest.settings.unwrap();
    let interactivity = settings.interactivity.unwrap();
    assert!(interactivity.is_enabled);
    assert_eq!(
        interactivity.request_url.unwrap().path(),
        "/v1/chat/slack/interactions"
    );
    assert!(
        settings.event_subscriptions.is_none(),
        "Cordon reads no events"
    );

    // It sits with the integrations without being taken for one.
    let config = cordon::config::IntegrationsConfig {
        paths: vec![root.join("integrations")],
        ..Default::default()
    };
    let integrations =
        cordon::integrations::Integrations::load(&config, reqwest::Client::new(), None)
            .expect("the shipped integrations load");
    let names: Vec<&str> = integrations.names().collect();
    assert!(
        !names.contains(&"slack") && names.contains(&"aws-ec2"),
        "{names:?}"
    );
}
