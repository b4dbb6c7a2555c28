//! Impersonation and counting: who acts is the person behind a verified credential (a personal
//! token, a signed chat payload), never a field the sender writes; quorum counts people, and the
//! person who started a run may not approve it from any platform.
//!
//! The people: Alice has a CLI identity, a Slack account and a Discord account; Bob has a CLI
//! identity; Vic may only read. Mallory is in the Slack workspace and the Discord guild, and is
//! nobody to Cordon.

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::discord::{self, FakeDiscord};
use crate::support::slack::{self, FakeSlack};
use crate::support::*;

const MALLORY_SLACK: &str = "U0MALLORY";

struct World {
    server: TestServer,
    slack: FakeSlack,
    discord: FakeDiscord,
    _playbooks: TempDir,
}

async fn world(quorum: u32) -> World {
    let slack_api = FakeSlack::start().await;
    let discord_api = FakeDiscord::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "contain",
        &approval_playbook(("contain", "Contain"), "generic", "Isolate?", "soc", quorum),
    );
    write_playbook(
        playbooks.path(),
        "ask",
        "id: ask\nname: Ask\nsteps:\n  - id: approve\n    approval:\n      prompt: go?\n      approvers: soc\n",
    );
    let alice_discord = format!("discord:{}", discord::USER_ID);
    let discord_section = discord::chat_section(&discord_api, None);
    let config = format!(
        "{}playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [alice, bob]\n{}{}{}",
        people_yaml(&[
            (
                "alice",
                &["cli:alice", "slack:U0ALICE", alice_discord.as_str()],
                &["responder"],
            ),
            ("bob", &["cli:bob"], &["responder"]),
            ("vic", &["cli:vic"], &["viewer"]),
        ]),
        playbooks.path().display(),
        all_sources(),
        slack::chat_yaml(&slack_api, None, false),
        discord_section.trim_start_matches("chat:\n"),
    );
    World {
        server: TestServer::start_with(&config).await,
        slack: slack_api,
        discord: discord_api,
        _playbooks: playbooks,
    }
}

impl World {
    /// A run of `contain` waiting for its approval.
    async fn waiting_run(&self) -> String {
        let (status, body) = self
            .server
            .post_generic(&generic_alert("Beaconing", "h-1"))
            .await;
        assert_eq!(status, 202, "{body}");
        let alert = body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
        let run = self.server.run_for_alert(&alert).await;
        self.server
            .wait_run(&run, "waiting", |r| r["status"] == "waiting")
            .await;
        run
    }

    async fn decisions(&self, run: &str) -> Vec<Value> {
        self.server.admin(&format!("/v1/runs/{run}")).await["run"]["steps"]["approve"]["approval"]
            ["decisions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `bearer` POSTs `body` to `path`.
    async fn post(&self, bearer: &str, path: &str, body: Value) -> (u16, Value) {
        self.server
            .send(
                self.server
                    .http
                    .post(format!("{}{path}", self.server.base))
                    .bearer_auth(bearer)
                    .json(&body),
            )
            .await
    }

    /// `user` clicks Approve on the Slack card of `run`.
    async fn slack_approve(&self, user: &str, run: &str) -> (u16, Value) {
        slack::approve_run(&self.slack, &self.server, user, run).await
    }

    async fn slack_signed(&self, path: &str, body: String) -> (u16, Value) {
        slack::send_signed(&self.server, path, body).await
    }

    /// What Slack shows `user` only, once it contains `text`.
    async fn slack_told(&self, user: &str, text: &str) -> String {
        self.slack
            .wait(&format!("{user} told `{text}`"), |f| {
                f.ephemerals()
                    .into_iter()
                    .find(|e| e.user == user && e.text.contains(text))
                    .map(|e| e.text)
            })
            .await
    }

    /// Alice clicks Approve on the Discord card of `run`; the answer she is given.
    async fn discord_approve(&self, run: &str) -> String {
        discord::approve_run(&self.discord, &self.server, discord::USER_ID, run).await
    }

    async fn audit(&self) -> Vec<cordon::audit::AuditEntry> {
        self.server
            .state
            .store
            .audit_entries(None, 0)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holder_cannot_decide_or_cancel_as_someone_else() {
    let w = world(2).await;
    let run = w.waiting_run().await;
    let bob = w.server.token_of("cli:bob").await;
    let vic = w.server.token_of("cli:vic").await;
    let decide = format!("/v1/runs/{run}/approvals/approve");

    // The bootstrap admin token vouches for nobody: it decides nothing, as anyone.
    for identity in ["slack:U0ALICE", "cli:lead"] {
        let (status, body) = w
            .post(
                ADMIN_TOKEN,
                &decide,
                json!({ "decision": "approve", "identity": identity }),
            )
            .await;
        assert_eq!(
            (status, body["missing_role"].as_str()),
            (403, Some("approver")),
            "{body}"
        );
    }
    // Bob's token cannot decide as Alice, on any of her identities.
    for identity in ["slack:U0ALICE", "cli:alice"] {
        let (status, body) = w
            .post(
                &bob,
                &decide,
                json!({ "decision": "approve", "identity": identity }),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("impersonation")),
            "{body}"
        );
    }
    // Cancels need a person with `responder`: not the bootstrap token, not a viewer, and not an
    // empty actor.
    let cancel = format!("/v1/runs/{run}/cancel");
    let (status, body) = w
        .post(ADMIN_TOKEN, &cancel, json!({ "identity": "" }))
        .await;
    assert_eq!(
        (status, body["missing_role"].as_str()),
        (403, Some("responder")),
        "{body}"
    );
    let (status, body) = w.post(&vic, &cancel, json!({})).await;
    assert_eq!(
        (status, body["missing_role"].as_str()),
        (403, Some("responder")),
        "{body}"
    );
    let (status, body) = w.post(&bob, &cancel, json!({ "identity": "" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("impersonation")),
        "{body}"
    );
    let (status, body) = w
        .server
        .send(
            w.server
                .http
                .post(format!("{}{cancel}", w.server.base))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    // Nothing was decided or cancelled, and the refusals for want of a role are audited.
    assert!(w.decisions(&run).await.is_empty());
    let shown = w.server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(shown["run"]["status"], "waiting");
    let refused: Vec<(Option<String>, Value)> = w
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == "access.refused")
        .map(|e| (e.actor, e.detail["role"].clone()))
        .collect();
    assert!(
        refused.contains(&(Some("bootstrap-admin-token".into()), json!("approver")))
            && refused.iter().any(
                |(a, r)| a.as_deref().is_some_and(|a| a.starts_with("token:")) && r == "responder"
            ),
        "{refused:?}"
    );

    // Each person decides with their own credential; the record names each person.
    let (status, body) = w
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = w
        .post(&bob, &decide, json!({ "decision": "approve" }))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let people: Vec<Value> = w
        .decisions(&run)
        .await
        .iter()
        .map(|d| d["person"].clone())
        .collect();
    assert_eq!(people, [json!("alice"), json!("bob")]);
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_deciding_from_slack_and_discord_counts_once() {
    let w = world(2).await;
    let run = w.waiting_run().await;

    // Alice approves in Slack: one of two.
    let (status, answer) = w.slack_approve("U0ALICE", &run).await;
    assert_eq!(status, 200, "{answer}");
    w.slack_told("U0ALICE", "recorded (1 of 2 needed)").await;
    // Alice again, from her Discord account: still Alice.
    let told = w.discord_approve(&run).await;
    assert!(told.contains("alice has already decided"), "{told}");
    let decisions = w.decisions(&run).await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["person"], "alice");
    let shown = w.server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(
        shown["run"]["status"], "waiting",
        "one person is not a quorum of two"
    );

    // Bob is the second person.
    let (status, body) = w.server.decide(&run, "approve", "approve", "cli:bob").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_who_started_a_run_cannot_approve_it_from_another_platform() {
    let w = world(1).await;
    // Alice starts `ask` from the CLI (her personal token).
    let (status, body) = w
        .server
        .post_as("cli:alice", "/v1/playbooks/ask/runs", json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();
    w.server
        .wait_run(&run, "waiting", |r| r["status"] == "waiting")
        .await;
    assert_eq!(
        w.server.admin(&format!("/v1/runs/{run}")).await["run"]["trigger"]["person"],
        "alice"
    );

    // From Slack and from Discord, she is still the person who started it.
    let (status, _) = w.slack_approve("U0ALICE", &run).await;
    assert_eq!(status, 200);
    w.slack_told("U0ALICE", "alice started this run and may not approve it")
        .await;
    let told = w.discord_approve(&run).await;
    assert!(
        told.contains("alice started this run and may not approve it"),
        "{told}"
    );
    assert!(w.decisions(&run).await.is_empty());
    let refusals = w
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == "approval.refused" && e.run_id.as_deref() == Some(run.as_str()))
        .count();
    assert_eq!(refusals, 2, "both refusals are audited");

    // Bob may.
    let (status, body) = w.server.decide(&run, "approve", "approve", "cli:bob").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_status_and_runs_are_refused_to_anyone_who_is_not_a_viewer() {
    let w = world(1).await;
    w.waiting_run().await;

    for text in ["status", "runs"] {
        let body = slack::command_body(&slack::command_payload(MALLORY_SLACK, text));
        let (status, answer) = w.slack_signed("/v1/chat/slack/commands", body).await;
        assert_eq!(status, 200, "{answer}");
        let said = answer["text"].as_str().unwrap_or_default();
        assert!(said.starts_with("Not allowed"), "{answer}");
        assert!(
            !said.contains("approval waiting"),
            "nothing of the status leaks: {said}"
        );
    }
    // Mallory clicking Approve decides nothing either.
    let run = w.waiting_run().await;
    let (status, _) = w.slack_approve(MALLORY_SLACK, &run).await;
    assert_eq!(status, 200);
    w.slack_told(MALLORY_SLACK, "not linked to a person").await;
    assert!(w.decisions(&run).await.is_empty());
    let refused = w
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == "access.refused" && e.actor.as_deref() == Some("slack:U0MALLORY"))
        .count();
    assert_eq!(refused, 2, "status and runs refusals are audited");

    // Alice is a person (every role includes viewer): she gets the status.
    let body = slack::command_body(&slack::command_payload("U0ALICE", "status"));
    let (status, answer) = w.slack_signed("/v1/chat/slack/commands", body).await;
    assert_eq!(status, 200);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("approval waiting"),
        "{answer}"
    );
    w.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_does_nothing_until_someone_other_than_the_asker_approves_it() {
    use axum::Router;
    use axum::extract::Path as UrlPath;
    use axum::routing::post;
    // A lab firewall: isolating a host answers with the VLAN it was on; releasing takes it back.
    let fw = fake::serve(
        Router::new()
            .route(
                "/hosts/{id}/isolate",
                post(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({ "host": id, "previous_vlan": "vlan-7" }))
                }),
            )
            .route(
                "/hosts/{id}/release",
                post(|UrlPath(id): UrlPath<String>| async move {
                    axum::Json(json!({ "host": id, "released": true }))
                }),
            ),
    )
    .await;
    let server = TestServer::start_with(&format!(
        "{}sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\napprovers:\n  admins: [lead]\nplaybooks:\n  paths: [{}]\nintegrations:\n  paths: [{}]\n  credentials:\n    lab:\n      token: lab-secret-token\n      endpoints: {{ fw.lab.example: \"{}\" }}\n",
        people_yaml(&[
            ("alice", &["cli:alice"], &["responder"]),
            ("lead", &["cli:lead"], &["responder"]),
        ]),
        data("playbooks/lab/lab-auto.yaml").display(),
        data("integrations/over-http/lab-fw").display(),
        fw.base,
    ))
    .await;
    let alert = json!({ "title": "Beaconing", "severity": 9, "resource": { "kind": "host", "id": "h-42" } });
    let body = server.accept("generic", alert.to_string()).await;
    let run = server
        .run_for_alert(body["alerts"][0]["alert_id"].as_str().unwrap())
        .await;
    server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(fw.requests().len(), 1, "isolated once");

    // Alice asks: an undo run waits for the undo group; the firewall hears nothing.
    let (status, asked) = server
        .act(&format!("/v1/runs/{run}/steps/isolate/undo"), "cli:alice")
        .await;
    assert_eq!(status, 202, "{asked}");
    let undo = asked["undo_run"].as_str().unwrap().to_owned();
    server
        .wait_run(&undo, "waiting", |r| r["status"] == "waiting")
        .await;
    // Asking again finds the same undo; Alice may not approve her own; a viewer-less stranger
    // cannot either.
    let (status, again) = server
        .act(&format!("/v1/runs/{run}/steps/isolate/undo"), "cli:alice")
        .await;
    assert_eq!(
        (status, again["undo_run"].as_str()),
        (202, Some(undo.as_str()))
    );
    let (status, body) = server
        .decide(&undo, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .decide(&undo, "approve", "approve", "cli:mallory")
        .await;
    assert_eq!(status, 403, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(fw.requests().len(), 1, "nothing released without approval");
    let original = server.admin(&format!("/v1/runs/{run}")).await;
    assert!(original["run"]["steps"]["isolate"]["undone"].is_null());

    // A denial ends it: still nothing released, and the original step is not undone.
    let (status, body) = server.decide(&undo, "approve", "deny", "cli:lead").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let denied = server
        .wait_run(&undo, "finished", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(denied["run"]["steps"]["undo"]["status"], "skipped");
    assert_eq!(fw.requests().len(), 1);

    // Asked again and approved by the lead: released once, marked undone by Alice's request.
    let done = server.undo(&run, "isolate", "cli:alice", "cli:lead").await;
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
    assert_eq!(fw.requests()[1].line(), "POST /hosts/h-42/release");
    let original = server
        .wait_run(&run, "undone", |r| {
            !r["steps"]["isolate"]["undone"].is_null()
        })
        .await;
    assert_eq!(original["run"]["steps"]["isolate"]["undone"]["by"], "alice");
    server.stop().await;
}
