//! Discord end to end: a GuardDuty finding in over HTTP → an incident card with Approve / Deny in
//! the channel → a signed click (the recorded interaction, edited with the run and step) → the run
//! goes on → the card is edited in place and the result lands in its thread. Every call Cordon
//! makes to Discord is validated by Prism against Discord's OpenAPI description (see
//! `support::discord`); refused callbacks decide nothing; rate limits and outages delay cards and
//! lose none.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::discord::*;
use support::*;
use tempfile::TempDir;

/// The playbook: ask `soc` (quorum `quorum`) in step `step`, then record the isolation.
fn contain(quorum: u32, step: &str) -> String {
    format!(
        r#"id: contain-ec2
name: Contain a compromised EC2 instance
on:
  source: aws.guardduty
steps:
  - id: {step}
    approval:
      prompt: "Isolate ${{{{ alert.resource.id }}}} in ${{{{ alert.resource.region }}}}?"
      approvers: soc
      quorum: {quorum}
      timeout: 30m
  - id: isolate
    if: steps.{step}.approved
    uses: core.set
    with:
      key: isolated
      value: "${{{{ alert.resource.id }}}}"
"#
    )
}

/// A playbook people start by hand from chat.
const SWEEP: &str = r#"id: sweep
name: Sweep a host
steps:
  - id: sweep
    script: '#{ swept: inputs.host }'
"#;

struct Setup {
    server: TestServer,
    discord: FakeDiscord,
    _playbooks: TempDir,
}

async fn setup(quorum: u32, step: &str) -> Setup {
    let discord = FakeDiscord::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(playbooks.path(), "contain-ec2", &contain(quorum, step));
    write_playbook(playbooks.path(), "sweep", SWEEP);
    // Dmitri and Olga have Discord accounts Cordon knows; only Dmitri holds the SOC role.
    let dmitri = format!("discord:{USER_ID}");
    let olga = format!("discord:{OTHER_USER_ID}");
    let config = format!(
        "{}playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [\"discord-role:{SOC_ROLE}\", cli:lead]\n{}{}",
        people_yaml(&[
            ("dmitri", &[dmitri.as_str()], &["responder"]),
            ("olga", &[olga.as_str()], &["viewer"]),
        ]),
        playbooks.path().display(),
        all_sources(),
        // A thread note per event, each its own message (coalescing is tests/storm.rs's).
        chat_section(&discord, Some("soc")).replacen("chat:\n", "chat:\n  note_interval: 0s\n", 1),
    );
    let server = TestServer::start_with(&config).await;
    Setup {
        server,
        discord,
        _playbooks: playbooks,
    }
}

/// A real GuardDuty finding (an EC2 instance talking to Tor) about `instance`.
fn tor_relay(instance: &str, finding_id: &str) -> Vec<u8> {
    let mut finding: Value = serde_json::from_slice(&read_fixture(
        "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
    ))
    .unwrap();
    finding["id"] = json!(finding_id);
    finding["resource"]["instanceDetails"]["instanceId"] = json!(instance);
    serde_json::to_vec(&finding).unwrap()
}

/// Posts the finding; answers its alert id.
async fn post_finding(server: &TestServer, instance: &str, finding_id: &str) -> String {
    let (status, answer) = server
        .post_alert("aws.guardduty", tor_relay(instance, finding_id))
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned()
}

/// Posts the finding; answers the run it started.
async fn start(server: &TestServer, instance: &str, finding_id: &str) -> String {
    let alert = post_finding(server, instance, finding_id).await;
    server.run_for_alert(&alert).await
}

fn waiting(run: &Value) -> bool {
    run["status"] == "waiting"
}

fn succeeded(run: &Value) -> bool {
    run["status"] == "succeeded"
}

async fn run_of(server: &TestServer, run: &str) -> Value {
    server.admin(&format!("/v1/runs/{run}")).await
}

fn decisions(run: &Value, step: &str) -> Vec<Value> {
    run["run"]["steps"][step]["approval"]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The follow-ups sent for `token`, once there is one.
async fn followup(discord: &FakeDiscord, token: &str) -> (String, u64) {
    discord
        .wait("the click's ephemeral answer", |d| {
            d.followups(token).into_iter().next()
        })
        .await
}

/// Sends a signed interaction; checks Cordon's answer against Discord's description too.
async fn interact(s: &Setup, body: &Value) -> (u16, Value) {
    let (status, answer) = send(&s.server, body).await;
    if status == 200 {
        s.discord.check_answer(&answer).await;
    }
    (status, answer)
}

#[tokio::test]
async fn guardduty_card_click_run_continues_card_updated_result_in_thread() {
    let s = setup(1, "approve").await;
    let run = start(&s.server, "i-0abc", "finding-1").await;
    s.server.wait_run(&run, "waiting", waiting).await;

    // One card in the channel: what happened, what is asked, and the two buttons.
    let card = s.discord.card().await;
    assert!(
        card.content.starts_with("Approval needed:"),
        "{}",
        card.content
    );
    let embed = &card.embeds[0];
    assert!(
        embed["description"]
            .as_str()
            .unwrap()
            .contains("Isolate i-0abc in eu-west-2?"),
        "{embed}"
    );
    assert!(
        card.field("Resource").unwrap().contains("i-0abc"),
        "{embed}"
    );
    assert!(card.field("Severity").unwrap().ends_with("/10"));
    assert_eq!(card.field("Approvers").unwrap(), "soc (quorum 1)");
    assert_eq!(
        card.button_ids(),
        vec![
            format!("approve:{run}:approve"),
            format!("deny:{run}:approve")
        ]
    );
    s.discord
        .wait("the card's thread", |d| d.thread_of(&card.id))
        .await;

    // A member of `soc` (through their Discord role) clicks Approve.
    let (click, token) = click(
        &format!("approve:{run}:approve"),
        USER_ID,
        &[SOC_ROLE],
        &card.id,
    );
    let (status, answer) = interact(&s, &click).await;
    assert_eq!(
        (status, &answer["type"]),
        (200, &json!(6)),
        "a click is acknowledged at once with DEFERRED_UPDATE_MESSAGE: {answer}"
    );
    assert_eq!(
        followup(&s.discord, &token).await,
        (format!("Approved: {run} approve goes ahead."), 64),
        "the clicker alone is told"
    );
    s.server.wait_run(&run, "succeeded", succeeded).await;
    let done = run_of(&s.server, &run).await;
    let decided = decisions(&done, "approve");
    assert_eq!(decided.len(), 1);
    assert_eq!(
        (&decided[0]["identity"], &decided[0]["via"]),
        (&json!(format!("discord:{USER_ID}")), &json!("discord"))
    );

    // The card is edited in place: the decision shown, the buttons gone.
    let updated = s
        .discord
        .wait("the card edited", |d| {
            d.message(&card.id).filter(|m| m.button_ids().is_empty())
        })
        .await;
    assert!(
        updated.content.starts_with("Approved:"),
        "{}",
        updated.content
    );
    assert!(
        updated
            .field("Decided by")
            .unwrap()
            .contains(&format!("discord:{USER_ID} (approve via discord")),
        "{:?}",
        updated.embeds
    );
    // The result in the thread.
    s.discord
        .wait("the result in the card's thread", |d| {
            d.messages_in(&card.id)
                .iter()
                .any(|m| m.content == "Playbook `contain-ec2` succeeded")
                .then_some(())
        })
        .await;

    // A later finding about the same instance joins the incident: its alert and its approval go
    // into the card's thread, not into a new card.
    let second = start(&s.server, "i-0abc", "finding-2").await;
    assert_ne!(second, run);
    s.server.wait_run(&second, "waiting", waiting).await;
    let thread = s
        .discord
        .wait("the second request in the thread", |d| {
            let messages = d.messages_in(&card.id);
            messages
                .iter()
                .any(|m| {
                    m.button_ids()
                        .contains(&format!("approve:{second}:approve"))
                })
                .then_some(messages)
        })
        .await;
    s.discord
        .wait("the new alert noted in the thread", |d| {
            d.messages_in(&card.id)
                .iter()
                .any(|m| m.content.starts_with("New alert in this incident"))
                .then_some(())
        })
        .await;
    assert!(!thread.is_empty());
    assert_eq!(
        s.discord.messages_in(CHANNEL_ID).len(),
        1,
        "one card per incident"
    );

    // Channel calls carry the bot token; interaction answers carry none.
    for call in s.discord.calls() {
        if call.path.starts_with("/channels/") {
            assert_eq!(
                call.authorization.as_deref(),
                Some(format!("Bot {BOT_TOKEN}").as_str())
            );
        } else {
            assert_eq!(call.authorization, None, "{}", call.path);
        }
    }
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_pong_and_only_when_signed() {
    let s = setup(1, "approve").await;
    let ping = json!({ "id": "1457536583141163100", "application_id": APP_ID, "type": 1, "token": "ping-token", "version": 1 });
    let (status, answer) = interact(&s, &ping).await;
    assert_eq!((status, &answer["type"]), (200, &json!(1)), "{answer}");
    // Discord checks the endpoint with a bad signature too, and expects a 401.
    let bytes = serde_json::to_vec(&ping).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let forged = {
        use ed25519_dalek::Signer;
        hex::encode(other.sign(&[ts.as_bytes(), &bytes[..]].concat()).to_bytes())
    };
    let (status, answer) = send_raw(&s.server, &bytes, Some(&ts), Some(&forged)).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "unauthorized");
    s.discord.assert_no_violations().await;
    s.server.stop().await;
}

#[tokio::test]
async fn refused_callbacks_decide_nothing() {
    let s = setup(1, "approve").await;
    let run = start(&s.server, "i-0def", "finding-r").await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let card = s.discord.card().await;
    let approve = format!("approve:{run}:approve");
    let nothing_decided = |body: &Value| decisions(body, "approve").is_empty();

    // A tampered body: the signature was made for other bytes.
    let (good, _) = click(&approve, USER_ID, &[SOC_ROLE], &card.id);
    let bytes = serde_json::to_vec(&good).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = sign(&ts, &bytes);
    let mut tampered = good.clone();
    tampered["member"]["user"]["id"] = json!(OTHER_USER_ID);
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let (status, answer) = send_raw(&s.server, &tampered, Some(&ts), Some(&signature)).await;
    assert_eq!(
        (status, &answer["error"]),
        (401, &json!("unauthorized")),
        "{answer}"
    );
    // No signature headers, a signature that is not hex, a timestamp that is not the signed one.
    for (ts_header, sig) in [
        (None, None),
        (Some(ts.as_str()), Some("zz")),
        (Some("1"), Some(signature.as_str())),
    ] {
        let (status, answer) = send_raw(&s.server, &bytes, ts_header, sig).await;
        assert_eq!(status, 401, "{answer}");
    }
    // Stale, and from the future: signed correctly, outside the five minutes.
    for skew in [-600i64, 600] {
        let when = (chrono::Utc::now().timestamp() + skew).to_string();
        let (click, _) = click(&approve, USER_ID, &[SOC_ROLE], &card.id);
        let bytes = serde_json::to_vec(&click).unwrap();
        let (status, answer) =
            send_raw(&s.server, &bytes, Some(&when), Some(&sign(&when, &bytes))).await;
        assert_eq!(status, 401, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("stale"),
            "{answer}"
        );
    }
    // Signed, but not an interaction; signed, but for another application.
    let junk = b"{\"hello\":".to_vec();
    let (status, answer) = send_raw(&s.server, &junk, Some(&ts), Some(&sign(&ts, &junk))).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("bad_payload")),
        "{answer}"
    );
    let (mut foreign, _) = click(&approve, USER_ID, &[SOC_ROLE], &card.id);
    foreign["application_id"] = json!("1111111111111111111");
    let (status, answer) = send(&s.server, &foreign).await;
    assert_eq!(status, 403, "{answer}");
    assert!(nothing_decided(&run_of(&s.server, &run).await));

    // Someone without the SOC role: acknowledged, told they may not, audited, nothing decided.
    let (outsider, token) = click(&approve, OTHER_USER_ID, &[], &card.id);
    let (status, answer) = interact(&s, &outsider).await;
    assert_eq!((status, &answer["type"]), (200, &json!(6)), "{answer}");
    assert_eq!(
        followup(&s.discord, &token).await,
        (
            "Not allowed: you are not in the approver group `soc`.".to_owned(),
            64
        )
    );
    let body = run_of(&s.server, &run).await;
    assert!(nothing_decided(&body));
    assert_eq!(body["run"]["status"], "waiting");
    let refused: Vec<&Value> = body["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{}", body["audit"]);
    assert_eq!(refused[0]["actor"], format!("discord:{OTHER_USER_ID}"));

    // A replay: the same signed request a second time is refused and changes nothing.
    let (deny, deny_token) = click(
        &format!("deny:{run}:approve"),
        USER_ID,
        &[SOC_ROLE],
        &card.id,
    );
    let bytes = serde_json::to_vec(&deny).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = sign(&ts, &bytes);
    let (status, _) = send_raw(&s.server, &bytes, Some(&ts), Some(&signature)).await;
    assert_eq!(status, 200);
    assert_eq!(
        followup(&s.discord, &deny_token).await.0,
        format!("Denied: {run} approve will not run.")
    );
    s.server
        .wait_run(&run, "finished", |r| r["status"] != "waiting")
        .await;
    let (status, answer) = send_raw(&s.server, &bytes, Some(&ts), Some(&signature)).await;
    assert_eq!(
        (status, &answer["error"]),
        (409, &json!("replayed")),
        "{answer}"
    );

    // A late click: "already decided by", and the decision stands.
    let (late, late_token) = click(&approve, OTHER_USER_ID, &[SOC_ROLE], &card.id);
    let (status, _) = interact(&s, &late).await;
    assert_eq!(status, 200);
    assert_eq!(
        followup(&s.discord, &late_token).await.0,
        "Already decided by dmitri (deny).".to_owned()
    );
    let body = run_of(&s.server, &run).await;
    let decided = decisions(&body, "approve");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["approve"], false);
    assert_eq!(
        body["run"]["steps"]["approve"]["approval"]["outcome"],
        false
    );

    // A button that is not Cordon's gets a polite answer and does nothing.
    let (foreign_button, _) = click("hello", USER_ID, &[SOC_ROLE], &card.id);
    let (status, answer) = interact(&s, &foreign_button).await;
    assert_eq!((status, &answer["type"]), (200, &json!(4)), "{answer}");
    assert_eq!(answer["data"]["flags"], 64);
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn quorum_of_two_counts_distinct_people_across_discord_and_the_api() {
    // A step id too long for a button id: the button carries a stored key instead.
    let step = "approve_isolating_the_compromised_instance_and_detaching_its_security_groups";
    let s = setup(2, step).await;
    let run = start(&s.server, "i-0q", "finding-q").await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let card = s.discord.card().await;
    let ids = card.button_ids();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| id.len() <= 100), "{ids:?}");
    assert!(ids[0].starts_with("approve:#"), "{ids:?}");

    let (first, token) = click(&ids[0], USER_ID, &[SOC_ROLE], &card.id);
    interact(&s, &first).await;
    assert_eq!(
        followup(&s.discord, &token).await.0,
        "Your approval is recorded (1 of 2 needed)."
    );
    // The same person again (a new click) does not make two.
    let (again, token) = click(&ids[0], USER_ID, &[SOC_ROLE], &card.id);
    interact(&s, &again).await;
    assert_eq!(
        followup(&s.discord, &token).await.0,
        "dmitri has already decided on this approval"
    );
    assert_eq!(run_of(&s.server, &run).await["run"]["status"], "waiting");
    // A second person, through the admin API, completes the quorum.
    let (status, body) = s
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/{step}"),
            json!({ "decision": "approve", "identity": "cli:lead" }),
        )
        .await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("approved")),
        "{body}"
    );
    s.server.wait_run(&run, "succeeded", succeeded).await;
    let updated = s
        .discord
        .wait("the card edited", |d| {
            d.message(&card.id).filter(|m| m.button_ids().is_empty())
        })
        .await;
    let by = updated.field("Decided by").unwrap();
    assert!(
        by.contains(&format!("discord:{USER_ID} (approve via discord"))
            && by.contains("cli-lead (approve via api"),
        "{by}"
    );
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn the_cordon_command_shows_decides_and_starts_playbooks() {
    let s = setup(1, "approve").await;
    let run = start(&s.server, "i-0cmd", "finding-c").await;
    s.server.wait_run(&run, "waiting", waiting).await;

    async fn ask(s: &Setup, sub: &str, options: &[(&str, &str)], roles: &[&str]) -> String {
        let (command, token) = command(sub, options, USER_ID, roles);
        let (status, answer) = interact(s, &command).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["type"], &answer["data"]["flags"]),
            (&json!(5), &json!(64)),
            "deferred and ephemeral: {answer}"
        );
        s.discord
            .wait("the command's answer", |d| {
                d.originals(&token).into_iter().next()
            })
            .await
    }

    let status = ask(&s, "status", &[], &[]).await;
    assert!(
        status.contains("**1** open incident, **1** approval waiting") && status.contains(&run),
        "{status}"
    );
    let runs = ask(&s, "runs", &[], &[]).await;
    assert!(
        runs.contains(&format!("`{run}` contain-ec2: waiting")),
        "{runs}"
    );

    // Deciding by id follows the same rules as a click.
    let refused = ask(&s, "approve", &[("run", &run), ("step", "approve")], &[]).await;
    assert_eq!(
        refused,
        "Not allowed: you are not in the approver group `soc`."
    );
    let approved = ask(
        &s,
        "approve",
        &[("run", &run), ("step", "approve")],
        &[SOC_ROLE],
    )
    .await;
    assert_eq!(approved, format!("Approved: {run} approve goes ahead."));
    s.server.wait_run(&run, "succeeded", succeeded).await;

    // Starting a playbook takes the `chat.triggers` group.
    let refused = ask(
        &s,
        "run",
        &[("playbook", "sweep"), ("inputs", "host=web-1")],
        &[],
    )
    .await;
    assert_eq!(
        refused,
        "Not allowed: you are not in the trigger group `soc`."
    );
    let audit = s.server.state.store.audit_entries(None, 0).await.unwrap();
    let refusal = audit
        .iter()
        .find(|e| e.kind == "trigger.refused")
        .expect("the refused start is audited");
    assert_eq!(
        refusal.actor.as_deref(),
        Some(format!("discord:{USER_ID}").as_str())
    );
    assert_eq!(refusal.detail["via"], "discord");
    assert_eq!(refusal.detail["playbook"], "sweep");
    let (command, token) = command(
        "run",
        &[("playbook", "sweep"), ("inputs", "host=web-1")],
        USER_ID,
        &[SOC_ROLE],
    );
    interact(&s, &command).await;
    let started = s
        .discord
        .wait("the command's answer", |d| {
            d.originals(&token).into_iter().next()
        })
        .await;
    let manual = started
        .strip_prefix("Started `sweep`: run `")
        .and_then(|r| r.strip_suffix("`."))
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();
    // The channel hears who started what.
    assert_eq!(
        followup(&s.discord, &token).await,
        (format!("<@{USER_ID}> started `sweep`: run `{manual}`."), 0)
    );
    let body = s.server.wait_run(&manual, "succeeded", succeeded).await;
    assert_eq!(body["run"]["inputs"], json!({ "host": "web-1" }));
    assert_eq!(body["run"]["trigger"]["by"], format!("discord:{USER_ID}"));
    let unknown = ask(&s, "run", &[("playbook", "nope")], &[SOC_ROLE]).await;
    assert_eq!(unknown, "There is no playbook `nope`.");
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn rate_limits_delay_cards_and_lose_none() {
    let s = setup(1, "approve").await;
    // The first card post is rate limited; every later message spends its channel's bucket for
    // 300 ms, announced in the headers.
    s.discord.script(
        "POST /channels/",
        vec![Scripted::RateLimited {
            retry_after: 0.4,
            global: false,
        }],
    );
    s.discord.buckets(Duration::from_millis(300));
    let run = start(&s.server, "i-0rl", "finding-rl").await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let card = s.discord.card().await;
    let posts: Vec<_> = s
        .discord
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path == format!("/channels/{CHANNEL_ID}/messages"))
        .collect();
    assert_eq!(
        posts.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 200],
        "one retry, no hammering"
    );
    let waited = posts[1].at - posts[0].at;
    assert!(
        waited >= Duration::from_millis(380),
        "retried after {waited:?}"
    );

    // Two more alerts: their notes go to the thread one bucket apart, without a single 429.
    post_finding(&s.server, "i-0rl", "finding-rl-2").await;
    post_finding(&s.server, "i-0rl", "finding-rl-3").await;
    let notes = s
        .discord
        .wait("both notes in the thread", |d| {
            let notes: Vec<_> = d
                .calls()
                .into_iter()
                .filter(|c| {
                    c.path == format!("/channels/{}/messages", card.id)
                        && c.status == 200
                        && c.body["content"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("New alert"))
                })
                .collect();
            (notes.len() >= 2).then_some(notes)
        })
        .await;
    assert!(notes[1].at - notes[0].at >= Duration::from_millis(280));
    assert_eq!(
        s.discord.bucket_overruns(),
        0,
        "Cordon waited for the bucket itself"
    );
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn a_chat_outage_delays_the_card_loses_none_and_approvals_still_work() {
    let s = setup(1, "approve").await;
    s.discord.outage(Duration::from_millis(2500));
    let run = start(&s.server, "i-0out", "finding-o").await;
    s.server.wait_run(&run, "waiting", waiting).await;
    // Discord is down; the approval goes through the API meanwhile.
    let (status, body) = s
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/approve"),
            json!({ "decision": "approve", "identity": "cli:lead" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.server.wait_run(&run, "succeeded", succeeded).await;
    assert!(s.discord.messages_in(CHANNEL_ID).is_empty());
    let owed = s.server.state.outbox.pending().await.unwrap();
    assert!(!owed.is_empty(), "the card waits in the outbox");
    for entry in &owed {
        let error = entry.last_error.clone().unwrap_or_default();
        assert!(!error.contains(BOT_TOKEN), "{error}");
    }

    // Back up: the card arrives, already showing the decision, and the result follows in its
    // thread. Nothing was lost, nothing doubled.
    let card = s
        .discord
        .wait("the card, decided", |d| {
            d.messages_in(CHANNEL_ID)
                .into_iter()
                .next()
                .filter(|m| m.content.starts_with("Approved:") && m.button_ids().is_empty())
        })
        .await;
    assert!(card.field("Decided by").unwrap().contains("cli-lead"));
    s.discord
        .wait("the result in the thread", |d| {
            d.messages_in(&card.id)
                .iter()
                .any(|m| m.content == "Playbook `contain-ec2` succeeded")
                .then_some(())
        })
        .await;
    assert_eq!(s.discord.messages_in(CHANNEL_ID).len(), 1);
    assert!(
        s.discord.calls().iter().any(|c| c.status == 503),
        "the outage was seen"
    );
    let pending = s.server.state.outbox.pending().await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    s.discord.assert_valid().await;
    s.server.stop().await;
}

#[tokio::test]
async fn without_thread_permission_notes_reply_to_the_card() {
    let s = setup(1, "approve").await;
    s.discord.script("/threads", vec![Scripted::Forbidden]);
    let run = start(&s.server, "i-0nt", "finding-nt").await;
    s.server.wait_run(&run, "waiting", waiting).await;
    let card = s.discord.card().await;
    post_finding(&s.server, "i-0nt", "finding-nt-2").await;
    let note = s
        .discord
        .wait("the new alert as a reply to the card", |d| {
            d.messages_in(CHANNEL_ID)
                .into_iter()
                .find(|m| m.content.starts_with("New alert in this incident"))
        })
        .await;
    assert_eq!(note.reply_to.as_deref(), Some(card.id.as_str()));
    assert_eq!(s.discord.thread_of(&card.id), None);
    let threads = s
        .discord
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/threads"))
        .count();
    assert_eq!(threads, 1, "a refused thread is not asked for again");
    s.discord.assert_valid().await;
    s.server.stop().await;
}

/// The harness itself: a call Discord's description refuses is caught (so a test that makes one
/// fails), and the fake's answer does not hide it. And the shipped command registration passes.
#[tokio::test]
async fn prism_catches_a_call_discord_would_refuse() {
    let discord = FakeDiscord::start().await;
    let client = reqwest::Client::new();
    // A thread without its required name, and a button with a style Discord does not have.
    client
        .post(format!(
            "{}/channels/{CHANNEL_ID}/messages/1500000000000000001/threads",
            discord.base
        ))
        .header("authorization", format!("Bot {BOT_TOKEN}"))
        .json(&json!({ "auto_archive_duration": 1440 }))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/channels/{CHANNEL_ID}/messages", discord.base))
        .header("authorization", format!("Bot {BOT_TOKEN}"))
        .json(&json!({ "components": [{ "type": 1, "components": [{ "type": 2, "style": 9, "custom_id": "x" }] }] }))
        .send()
        .await
        .unwrap();
    let violations = discord.violations().await;
    assert_eq!(violations.len(), 2, "{violations:#?}");
    assert!(violations[0].contains("/threads") || violations[1].contains("/threads"));

    // The `/cordon` definition the setup steps register is one Discord takes.
    let command = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/integrations/discord/command.json"
    ))
    .unwrap();
    client
        .post(format!(
            "{}/applications/{APP_ID}/guilds/{GUILD_ID}/commands",
            discord.base
        ))
        .header("authorization", format!("Bot {BOT_TOKEN}"))
        .header("content-type", "application/json")
        .body(command)
        .send()
        .await
        .unwrap();
    assert_eq!(discord.violations().await.len(), 2, "command.json is valid");
}
