//! One approval posted to two platforms at once: quorum 2 met by one person on Slack and another on
//! Discord, the run continuing once, and both cards updated in place.

mod support;

use serde_json::{Value, json};
use support::discord::{self, FakeDiscord};
use support::slack::{self, FakeSlack};
use support::*;

#[tokio::test]
async fn quorum_two_is_met_across_slack_and_discord_and_both_cards_follow() {
    let slack_api = FakeSlack::start().await;
    let discord_api = FakeDiscord::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "contain-ec2",
        &approval_playbook(
            ("contain-ec2", "Contain an EC2 instance"),
            "aws.guardduty",
            "Isolate ${{ alert.resource.id }}?",
            "soc",
            2,
        ),
    );
    // One `chat:` section with both platforms.
    let discord_section = discord::chat_section(&discord_api, None);
    // Alice on Slack and Dmitri on Discord are two people.
    let dmitri = format!("discord:{}", discord::USER_ID);
    let config = format!(
        "{}playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [slack:U0ALICE, \"discord-role:{}\"]\n{}{}{}",
        people_yaml(&[
            ("alice", &["slack:U0ALICE"], &["responder"]),
            ("dmitri", &[dmitri.as_str()], &["responder"]),
        ]),
        playbooks.path().display(),
        discord::SOC_ROLE,
        all_sources(),
        slack::chat_yaml(&slack_api, None, false),
        discord_section.trim_start_matches("chat:\n"),
    );
    let server = TestServer::start_with(&config).await;

    let finding = read_fixture(
        "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
    );
    let (status, answer) = server.post_alert("aws.guardduty", finding).await;
    assert_eq!(status, 202, "{answer}");
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;

    // The request is on both platforms.
    let slack_card = slack_api
        .wait("the Slack card", |f| {
            f.messages().into_iter().find(|m| {
                m.button_value()
                    .is_some_and(|v| v.contains(&format!("\"{run}\"")))
            })
        })
        .await;
    let discord_card = discord_api.card().await;
    assert_eq!(
        discord_card.button_ids()[0],
        format!("approve:{run}:approve")
    );

    // Alice approves in Slack: one of two.
    let body = slack::interaction_body(&slack::click_payload(
        "U0ALICE",
        &slack_card,
        &slack_card.button_value().unwrap(),
        true,
    ));
    let ts = chrono::Utc::now().timestamp();
    let (status, answer) = server
        .send(
            server
                .http
                .post(format!("{}/v1/chat/slack/interactions", server.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header(
                    "x-slack-signature",
                    slack::sign(slack::SIGNING_SECRET, ts, &body),
                )
                .body(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let waiting = server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(
        waiting["run"]["status"], "waiting",
        "one of two is not a quorum"
    );

    // A SOC member approves in Discord: the quorum is met, the run goes on once.
    let (click, _) = discord::click(
        &format!("approve:{run}:approve"),
        discord::USER_ID,
        &[discord::SOC_ROLE],
        &discord_card.id,
    );
    let (status, answer) = discord::send(&server, &click).await;
    assert_eq!((status, &answer["type"]), (200, &json!(6)), "{answer}");
    let done = server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let decisions: Vec<(Value, Value)> = done["run"]["steps"]["approve"]["approval"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["identity"].clone(), d["via"].clone()))
        .collect();
    assert_eq!(
        decisions,
        [
            (json!("slack:U0ALICE"), json!("slack")),
            (
                json!(format!("discord:{}", discord::USER_ID)),
                json!("discord")
            ),
        ]
    );
    assert_eq!(done["run"]["steps"]["isolate"]["status"], "succeeded");

    // Both cards are updated in place: who decided, and no buttons left.
    let slack_done = slack_api
        .wait("the Slack card updated", |f| {
            f.messages()
                .into_iter()
                .find(|m| m.ts == slack_card.ts && !m.history.is_empty() && !m.has_buttons())
        })
        .await;
    let shown = slack_done.blocks_text();
    assert!(shown.contains("<@U0ALICE>"), "{shown}");
    assert!(shown.contains(discord::USER_ID), "{shown}");
    let discord_done = discord_api
        .wait("the Discord card edited", |d| {
            d.messages_in(discord::CHANNEL_ID).into_iter().find(|m| {
                m.id == discord_card.id && !m.edits.is_empty() && m.button_ids().is_empty()
            })
        })
        .await;
    assert!(
        discord_done.embeds.to_string().contains("slack:U0ALICE"),
        "{}",
        discord_done.embeds
    );
    slack_api.assert_no_violations();
    discord_api.assert_no_violations().await;
    server.stop().await;
}

#[tokio::test]
async fn chat_notify_posts_in_the_channel_when_the_incident_has_no_card() {
    let slack_api = FakeSlack::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "announce",
        r#"id: announce
name: Announce a finding
on:
  source: aws.guardduty
steps:
  - id: tell
    uses: chat.notify
    with: { text: "GuardDuty: ${{ alert.title }} on ${{ alert.resource.id }}" }
"#,
    );
    let config = format!(
        "playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [slack:U0ALICE]\n{}{}",
        playbooks.path().display(),
        all_sources(),
        slack::chat_yaml(&slack_api, None, false),
    );
    let server = TestServer::start_with(&config).await;
    let finding = read_fixture(
        "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
    );
    let (status, answer) = server.post_alert("aws.guardduty", finding).await;
    assert_eq!(status, 202, "{answer}");
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;
    let done = server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(
        done["run"]["steps"]["tell"]["output"]["platforms"],
        json!(["slack"])
    );
    let posted = slack_api
        .wait("the notification", |f| {
            f.messages()
                .into_iter()
                .find(|m| m.text.contains("GuardDuty:") && m.channel == slack::CHANNEL)
        })
        .await;
    assert!(
        posted.thread_ts.is_none(),
        "no card yet: a message of its own"
    );
    slack_api.assert_no_violations();
    server.stop().await;
}
