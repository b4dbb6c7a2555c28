//! Microsoft Teams end to end, through the real server on 127.0.0.1: GuardDuty findings in over
//! HTTP become one Adaptive Card per incident in a team channel of a stateful Bot Connector fake
//! (every call also checked by Prism against the official Connector API description); clicks
//! come back as the recorded Teams activities, edited with the run and step and signed like the
//! Bot Connector signs them, with keys the local OpenID metadata publishes.

mod support;

use serde_json::{Value, json};
use support::teams::{self, APP_ID, APP_PASSWORD, Connector, Identity, Signer, TENANT, claims};
use support::{ADMIN_TOKEN, INTAKE_TOKEN, TestServer, read_fixture, write_playbook};

/// In the approver group `soc` by identity (the person in the recorded Action.Submit click).
const APPROVER: &str = "00000000-1111-2222-3333-444444444444";
/// In `soc` too (the person in the recorded Action.Execute invoke).
const SECOND: &str = "c5e99701-2a32-49c1-a660-4629ceeb8c61";
/// In `soc` only through the Entra group [`GROUP`].
const GROUP_MEMBER: &str = "77777777-0000-4000-8000-000000000007";
const GROUP: &str = "5e2b8c1f-0d3a-4c6e-9f7b-2a1d4e6f8a90";
/// In no approver group.
const OUTSIDER: &str = "99999999-0000-4000-8000-000000000009";

const PLAYBOOK: &str = "teams-contain";
const STEP: &str = "approve";

struct World {
    connector: Connector,
    identity: Identity,
    signer: Signer,
    server: TestServer,
    _playbooks: tempfile::TempDir,
}

/// The channel `Setup::configured_channel` names in the config.
const CONFIGURED_CHANNEL: &str = "19:cordon-soc@thread.tacv2";

#[derive(Default)]
struct Setup {
    quorum: u32,
    /// Name [`CONFIGURED_CHANNEL`] and the Connector's service URL in the config, and send no
    /// installation activity.
    configured_channel: bool,
    /// Look up Entra groups with (the local) Microsoft Graph.
    graph: bool,
    password: Option<&'static str>,
}

fn playbook(quorum: u32) -> String {
    format!(
        r#"id: {PLAYBOOK}
name: Contain an EC2 instance from Teams
on:
  source: aws.guardduty
  when: alert.resource.kind == "aws.ec2.instance"
# Each finding is decided on its own, so a later finding of the incident asks again.
concurrency: alert.id
steps:
  - id: {STEP}
    approval:
      prompt: "Isolate ${{{{ alert.resource.id }}}} in ${{{{ alert.resource.region }}}}?"
      approvers: soc
      quorum: {quorum}
      timeout: 30m
  - id: isolate
    if: steps.{STEP}.approved
    uses: core.log
    with: {{ message: isolated }}
"#
    )
}

async fn world(setup: Setup) -> World {
    let signer = Signer::signing();
    let identity = Identity::start(&[&signer]).await;
    let connector = Connector::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(playbooks.path(), PLAYBOOK, &playbook(setup.quorum.max(1)));
    let mut more = String::new();
    if setup.configured_channel {
        more.push_str(&format!(
            "    channel_id: \"{CONFIGURED_CHANNEL}\"\n    service_url: {}\n",
            connector.service_url()
        ));
    }
    if setup.graph {
        more.push_str(&format!(
            "    entra_groups:\n      url: {base}\n      token_url: {base}/{TENANT}/oauth2/v2.0/token\n",
            base = identity.base
        ));
    }
    let extra = format!(
        r#"sources:
  aws.guardduty:
    auth:
      bearer:
        token: {INTAKE_TOKEN}
people:
  ann:
    roles: [responder]
    identities: ["teams:{APPROVER}"]
  sam:
    roles: [responder]
    identities: ["teams:{SECOND}"]
  gus:
    roles: [responder]
    identities: ["teams:{GROUP_MEMBER}"]
  otto:
    roles: [viewer]
    identities: ["teams:{OUTSIDER}"]
playbooks:
  paths: ["{playbooks}"]
approvers:
  soc: ["teams:{APPROVER}", "teams:{SECOND}", "teams-group:{GROUP}", "cli:lead"]
chat:
  teams:
    app_id: {APP_ID}
    app_password: {password}
    tenant_id: {TENANT}
    openid_metadata_url: {metadata}
    token_url: {token}
{more}"#,
        playbooks = playbooks.path().display(),
        password = setup.password.unwrap_or(APP_PASSWORD),
        metadata = identity.metadata_url(),
        token = identity.token_url(),
    );
    let server = TestServer::start_with(&extra).await;
    let w = World {
        connector,
        identity,
        signer,
        server,
        _playbooks: playbooks,
    };
    if !setup.configured_channel {
        let (status, body) = w.send(&teams::installed(&w.connector.service_url())).await;
        assert_eq!(status, 200, "{body}");
    }
    w
}

impl World {
    /// Posts `activity` to the messaging endpoint with a token the Bot Connector would send.
    async fn send(&self, activity: &Value) -> (u16, Value) {
        let service = activity["serviceUrl"].as_str().unwrap_or_default();
        let token = self.signer.sign(&claims(service));
        self.send_with(activity, Some(&token)).await
    }

    async fn send_with(&self, activity: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .server
            .http
            .post(format!("{}/v1/chat/teams/messages", self.server.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(activity).unwrap());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.server.send(request).await
    }

    /// An Action.Execute click on the card of `run`.
    async fn execute(&self, run: &str, decision: &str, who: &str) -> (u16, Value) {
        let click = teams::execute_click(&self.connector.service_url(), run, STEP, decision, who);
        self.send(&click).await
    }

    /// Posts a GuardDuty Tor-relay finding about `instance` (finding id `finding`); the run it
    /// starts, once it waits for approval.
    async fn finding(&self, instance: &str, finding: &str) -> String {
        let mut body: Value = serde_json::from_slice(&read_fixture(
            "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
        ))
        .unwrap();
        body["id"] = json!(finding);
        body["resource"]["instanceDetails"]["instanceId"] = json!(instance);
        for field in ["title", "description"] {
            let text = body[field]
                .as_str()
                .unwrap_or_default()
                .replace("i-99999999", instance);
            body[field] = json!(text);
        }
        let (status, answer) = self
            .server
            .post_alert("aws.guardduty", serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(status, 202, "{answer}");
        let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
        let run = self.server.run_for_alert(&alert).await;
        self.server.wait_run(&run, "waiting", waiting).await;
        run
    }

    async fn run(&self, id: &str) -> Value {
        self.server.admin(&format!("/v1/runs/{id}")).await["run"].clone()
    }

    async fn decisions(&self, run: &str) -> Vec<Value> {
        self.run(run).await["steps"][STEP]["approval"]["decisions"]
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

    /// The incident's card, once posted in the recorded channel.
    async fn card(&self) -> teams::Message {
        let channel = teams::recorded_channel();
        self.connector
            .wait_for("the incident card", |m| {
                m.iter()
                    .any(|m| m.conversation == channel && m.reply_to.is_none())
            })
            .await;
        self.connector.posts(&channel).remove(0)
    }
}

fn waiting(run: &Value) -> bool {
    run["status"] == "waiting"
}

fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[tokio::test]
async fn a_guardduty_finding_becomes_a_card_one_click_contains_it_and_the_card_and_thread_show_it()
{
    let w = world(Setup::default()).await;
    let run = w.finding("i-0abc1234", "finding-1").await;

    // One card in the channel the bot was installed in, with what the analyst needs to decide.
    let card = w.card().await;
    let text = card.text();
    for expected in [
        "Isolate i-0abc1234 in eu-west-2?",
        "8/10",
        "aws.ec2.instance i-0abc1234",
        "soc (quorum 1)",
    ] {
        assert!(text.contains(expected), "card lacks {expected:?}: {text}");
    }
    let buttons = card.buttons();
    assert_eq!(
        buttons
            .iter()
            .map(|b| b["title"].clone())
            .collect::<Vec<_>>(),
        vec![json!("Approve"), json!("Deny")]
    );
    for button in &buttons {
        assert_eq!(button["type"], "Action.Execute");
        assert_eq!(button["fallback"]["type"], "Action.Submit");
        assert_eq!(button["data"]["run_id"], run.as_str());
        assert_eq!(button["data"]["step"], STEP);
        assert_eq!(button["fallback"]["data"], button["data"]);
    }
    assert_eq!(card.card().unwrap()["version"], "1.4");

    // The click is answered with the decided card, in place.
    let (status, answer) = w.execute(&run, "approve", APPROVER).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.card.adaptive");
    assert!(answer["value"].get("actions").is_none(), "{answer}");
    assert!(answer["value"].to_string().contains("Approved"), "{answer}");

    // The run goes on.
    let done = w.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
    assert_eq!(done["run"]["steps"]["isolate"]["status"], "succeeded");
    let decisions = w.decisions(&run).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["identity"], format!("teams:{APPROVER}"));
    assert_eq!(decisions[0]["via"], "teams");

    // Everyone else sees the card updated (who, when, no buttons), and the result in its thread.
    let card_id = card.id.clone();
    let messages = w
        .connector
        .wait_for("the decided card and the result", |m| {
            m.iter().any(|m| m.id == card_id && m.updates == 1)
                && m.iter().any(|m| {
                    m.reply_to.as_deref() == Some(card_id.as_str())
                        && m.text()
                            .contains(&format!("Playbook `{PLAYBOOK}` succeeded"))
                })
        })
        .await;
    let updated = messages.iter().find(|m| m.id == card_id).unwrap();
    assert!(updated.buttons().is_empty(), "{:?}", updated.activity);
    assert!(updated.text().contains("Approved at"));
    assert!(updated.text().contains(&format!("teams:{APPROVER}")));
    assert_eq!(
        w.connector.posts(&teams::recorded_channel()).len(),
        1,
        "one card per incident"
    );
    let result = w.connector.replies(&card_id);
    assert!(
        result.iter().all(|m| m.conversation
            == format!("{};messageid={card_id}", teams::recorded_channel())),
        "replies go into the card's thread: {result:?}"
    );

    // One token for every Connector call, from the configured endpoint, for the Connector scope.
    let tokens = w.identity.tokens();
    assert_eq!(
        tokens,
        vec![(
            "botframework.com".to_owned(),
            "https://api.botframework.com/.default".to_owned()
        )]
    );
    assert!(
        w.connector
            .seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer connector-token-1"))
    );
    // One fetch of the key set for the installation and the click.
    assert_eq!(w.identity.key_fetches(), 1);
    // Where the bot was installed is remembered for proactive posting.
    let install = w
        .server
        .state
        .store
        .meta_get("chat.teams", "install:latest")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(install["conversation_id"], teams::recorded_channel());
    assert_eq!(install["service_url"], w.connector.service_url());
    assert_eq!(install["tenant_id"], TENANT);
    w.connector.assert_valid();
}

#[tokio::test]
async fn a_later_alert_of_the_incident_and_its_request_go_into_the_card_thread() {
    let w = world(Setup::default()).await;
    let first = w.finding("i-0def5678", "finding-a").await;
    let card = w.card().await;
    let second = w.finding("i-0def5678", "finding-b").await;
    assert_ne!(first, second);

    // The second alert and its approval request are replies to the card, not new cards.
    let card_id = card.id.clone();
    let messages = w
        .connector
        .wait_for("the second request in the thread", |m| {
            m.iter().any(|m| {
                m.reply_to.as_deref() == Some(card_id.as_str())
                    && m.buttons()
                        .iter()
                        .any(|b| b["data"]["run_id"] == second.as_str())
            })
        })
        .await;
    assert!(
        messages
            .iter()
            .any(|m| m.reply_to.as_deref() == Some(card_id.as_str())
                && m.text().contains("New alert in this incident")),
        "{messages:#?}"
    );
    assert_eq!(w.connector.posts(&teams::recorded_channel()).len(), 1);

    // An older client clicks Approve on the request in the thread (Action.Submit): decided, the
    // answer is a reply, and that request's card loses its buttons.
    let request = messages
        .iter()
        .find(|m| {
            m.buttons()
                .iter()
                .any(|b| b["data"]["run_id"] == second.as_str())
        })
        .unwrap()
        .clone();
    let click = teams::submit_click(
        &w.connector.service_url(),
        &request,
        &second,
        STEP,
        "approve",
        APPROVER,
    );
    let (status, body) = w.send(&click).await;
    assert_eq!((status, body), (200, json!({})));
    w.server.wait_run(&second, "finished", finished).await;
    let messages = w
        .connector
        .wait_for("the answer and the updated request", |m| {
            m.iter().any(|m| m.text().contains("Test User: Approved"))
                && m.iter().any(|m| m.id == request.id && m.updates == 1)
        })
        .await;
    let updated = messages.iter().find(|m| m.id == request.id).unwrap();
    assert!(updated.buttons().is_empty());
    // The first request is still open, its card untouched.
    assert!(waiting(&w.run(&first).await));
    let root = messages.iter().find(|m| m.id == card_id).unwrap();
    assert_eq!((root.updates, root.buttons().len()), (0, 2));
    w.connector.assert_valid();
}

#[tokio::test]
async fn refused_activities_get_a_json_error_and_decide_nothing() {
    let w = world(Setup::default()).await;
    let run = w.finding("i-0aaa0001", "finding-r").await;
    let card = w.card().await;
    let service = w.connector.service_url();
    let click = teams::execute_click(&service, &run, STEP, "approve", APPROVER);
    let rotated = Signer::rotated();
    let now = chrono::Utc::now().timestamp();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&service);
        edit(&mut c);
        c
    };

    let cases: Vec<(&str, Option<String>, Value, u16, &str)> = vec![
        ("no token", None, click.clone(), 401, "missing_token"),
        (
            "a signature by a key that is not the one named",
            Some(rotated.sign_as(teams::KID, &claims(&service))),
            click.clone(),
            401,
            "bad_signature",
        ),
        (
            "a key the Bot Framework does not publish",
            Some(rotated.sign(&claims(&service))),
            click.clone(),
            401,
            "unknown_key",
        ),
        (
            "another bot's token",
            Some(
                w.signer
                    .sign(&with(&|c| c["aud"] = json!("another-app-id"))),
            ),
            click.clone(),
            401,
            "wrong_audience",
        ),
        (
            "an expired token",
            Some(w.signer.sign(&with(&|c| {
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }))),
            click.clone(),
            401,
            "token_expired",
        ),
        (
            "another issuer",
            Some(
                w.signer
                    .sign(&with(&|c| c["iss"] = json!("https://sts.windows.net/x/"))),
            ),
            click.clone(),
            401,
            "wrong_issuer",
        ),
        (
            "a token issued for another service URL",
            Some(
                w.signer
                    .sign(&claims("https://smba.trafficmanager.net/emea/")),
            ),
            click.clone(),
            401,
            "wrong_service_url",
        ),
        (
            "the recorded click's own tenant, which this bot does not serve",
            Some(w.signer.sign(&claims(&service))),
            {
                let mut c = click.clone();
                c["channelData"]["tenant"]["id"] = json!("56653e9d-2158-46ee-90d7-675c39642038");
                c["conversation"]["tenantId"] = json!("56653e9d-2158-46ee-90d7-675c39642038");
                c
            },
            403,
            "wrong_tenant",
        ),
        (
            "a button without its step",
            Some(w.signer.sign(&claims(&service))),
            {
                let mut c = click.clone();
                c["value"]["action"]["data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("step");
                c
            },
            400,
            "bad_button",
        ),
    ];
    for (what, token, activity, status, code) in cases {
        let (got, body) = w.send_with(&activity, token.as_deref()).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // Not an activity at all, with a valid token.
    let (status, body) = w
        .server
        .send(
            w.server
                .http
                .post(format!("{}/v1/chat/teams/messages", w.server.base))
                .bearer_auth(w.signer.sign(&claims(&service)))
                .body("{\"not\": \"an activity\""),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_activity")),
        "{body}"
    );

    // Someone outside the approver group: told privately, audited, nothing decided.
    let (status, answer) = w.execute(&run, "approve", OUTSIDER).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], "application/vnd.microsoft.activity.message");
    assert_eq!(
        answer["value"],
        "Not allowed: you are not in the approver group `soc`."
    );
    let refused: Vec<_> = w
        .audit(&run)
        .await
        .into_iter()
        .filter(|e| e.kind == "approval.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].actor.as_deref(),
        Some(format!("teams:{OUTSIDER}").as_str())
    );
    assert_eq!(refused[0].detail["via"], "teams");

    assert!(waiting(&w.run(&run).await));
    assert!(w.decisions(&run).await.is_empty());
    assert!(
        !w.audit(&run)
            .await
            .iter()
            .any(|e| e.kind == "approval.decided"),
        "nothing was decided"
    );
    // The card still offers its buttons: nobody decided.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let card = w
        .connector
        .messages()
        .into_iter()
        .find(|m| m.id == card.id)
        .unwrap();
    assert_eq!((card.updates, card.buttons().len()), (0, 2));
    w.connector.assert_valid();
}

#[tokio::test]
async fn a_replayed_click_counts_once_and_a_late_click_hears_who_decided() {
    let w = world(Setup {
        quorum: 2,
        ..Setup::default()
    })
    .await;
    let run = w.finding("i-0bbb0002", "finding-q").await;
    w.card().await;

    let click = teams::execute_click(&w.connector.service_url(), &run, STEP, "approve", APPROVER);
    let token = w.signer.sign(&claims(&w.connector.service_url()));
    let (_, answer) = w.send_with(&click, Some(&token)).await;
    assert_eq!(
        answer["value"],
        "Your approval is recorded (1 of 2 needed)."
    );
    // The same signed request again: the same person, still one approval.
    let (status, answer) = w.send_with(&click, Some(&token)).await;
    assert_eq!(status, 200);
    assert!(
        answer["value"]
            .as_str()
            .is_some_and(|t| t.contains("has already decided on this approval")),
        "{answer}"
    );
    assert_eq!(w.decisions(&run).await.len(), 1);
    assert!(waiting(&w.run(&run).await));

    let (_, answer) = w.execute(&run, "approve", SECOND).await;
    assert_eq!(
        answer["type"], "application/vnd.microsoft.card.adaptive",
        "{answer}"
    );
    w.server.wait_run(&run, "finished", finished).await;

    // After the decision: "already decided by …", nothing added.
    let (status, answer) = w.execute(&run, "deny", GROUP_MEMBER).await;
    assert_eq!(status, 200);
    let text = answer["value"].as_str().unwrap_or_default();
    assert!(text.starts_with("Already decided by"), "{answer}");
    assert!(text.contains("ann (approve)"), "{text}");
    assert_eq!(w.decisions(&run).await.len(), 2);
    assert_eq!(w.run(&run).await["status"], "succeeded");
    w.connector.assert_valid();
}

#[tokio::test]
async fn a_quorum_of_two_is_met_across_teams_and_the_api_and_the_card_shows_both() {
    let w = world(Setup {
        quorum: 2,
        ..Setup::default()
    })
    .await;
    let run = w.finding("i-0ccc0003", "finding-x").await;
    let card = w.card().await;
    let (_, answer) = w.execute(&run, "approve", APPROVER).await;
    assert_eq!(
        answer["value"],
        "Your approval is recorded (1 of 2 needed)."
    );
    let (status, body) = w
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/{STEP}"),
            json!({ "decision": "approve", "identity": "cli:lead" }),
        )
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    w.server.wait_run(&run, "finished", finished).await;
    let card_id = card.id.clone();
    let messages = w
        .connector
        .wait_for("the card decided by both", |m| {
            m.iter().any(|m| m.id == card_id && m.updates == 1)
        })
        .await;
    let text = messages.iter().find(|m| m.id == card_id).unwrap().text();
    assert!(
        text.contains(&format!("teams:{APPROVER}")) && text.contains("cli-lead"),
        "{text}"
    );
    w.connector.assert_valid();
}

#[tokio::test]
async fn members_of_an_entra_group_approve_through_microsoft_graph() {
    let w = world(Setup {
        graph: true,
        ..Setup::default()
    })
    .await;
    w.identity.set_groups(GROUP_MEMBER, &[GROUP]);
    w.identity.set_groups(OUTSIDER, &["another-group"]);
    let run = w.finding("i-0ddd0004", "finding-g").await;
    w.card().await;

    let (_, answer) = w.execute(&run, "approve", OUTSIDER).await;
    assert_eq!(
        answer["value"],
        "Not allowed: you are not in the approver group `soc`."
    );
    let (_, answer) = w.execute(&run, "approve", GROUP_MEMBER).await;
    assert_eq!(
        answer["type"], "application/vnd.microsoft.card.adaptive",
        "{answer}"
    );
    w.server.wait_run(&run, "finished", finished).await;
    assert_eq!(
        w.decisions(&run).await[0]["identity"],
        format!("teams:{GROUP_MEMBER}")
    );
    assert_eq!(w.identity.graph_calls(), 2);
    // The Graph token comes from the tenant's endpoint for Graph's scope, separate from the
    // Connector's.
    let tokens = w.identity.tokens();
    assert!(
        tokens.contains(&(
            TENANT.to_owned(),
            "https://graph.microsoft.com/.default".to_owned()
        )),
        "{tokens:?}"
    );
    w.connector.assert_valid();
}

#[tokio::test]
async fn signing_keys_are_cached_and_fetched_again_when_microsoft_rolls_them() {
    let w = world(Setup::default()).await;
    assert_eq!(w.identity.key_fetches(), 1);
    let rotated = Signer::rotated();
    let service = w.connector.service_url();
    let hello = teams::installed(&service);
    let (status, body) = w
        .send_with(&hello, Some(&rotated.sign(&claims(&service))))
        .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unknown_key")));

    w.identity.publish(&rotated);
    // Unknown keys trigger at most one fetch a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = w
        .send_with(&hello, Some(&rotated.sign(&claims(&service))))
        .await;
    assert_eq!(status, 200, "{body}");
    let fetched = w.identity.key_fetches();
    for _ in 0..3 {
        let (status, _) = w.send(&hello).await;
        assert_eq!(status, 200);
        let (status, _) = w
            .send_with(&hello, Some(&rotated.sign(&claims(&service))))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        w.identity.key_fetches(),
        fetched,
        "known keys come from the cache"
    );
}

#[tokio::test]
async fn rate_limits_outages_and_refused_tokens_delay_cards_and_lose_none() {
    let w = world(Setup::default()).await;
    // Teams throttles the first post (429, Retry-After 1), then refuses the token once.
    w.connector.fail_next(1, 429, Some(1));
    let started = std::time::Instant::now();
    let run = w.finding("i-0eee0005", "finding-o").await;
    let card = w.card().await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "the post waited for Retry-After"
    );
    w.connector.fail_next(1, 401, None);
    // Teams is down while the analyst approves through the API: the run does not wait for it.
    w.connector.fail_next(2, 503, None);
    let (status, body) = w
        .server
        .admin_post(
            &format!("/v1/runs/{run}/approvals/{STEP}"),
            json!({ "decision": "approve", "identity": "cli:lead" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = w.server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded");
    // Once Teams is back, the card is updated and the result is in the thread.
    let card_id = card.id.clone();
    w.connector
        .wait_for("the update and result after the outage", |m| {
            m.iter().any(|m| m.id == card_id && m.updates == 1)
                && m.iter().any(|m| {
                    m.reply_to.as_deref() == Some(card_id.as_str())
                        && m.text().contains("succeeded")
                })
        })
        .await;
    assert_eq!(w.connector.posts(&teams::recorded_channel()).len(), 1);
    // The entry leaves the outbox just after Teams has the message.
    support::wait_until(
        std::time::Duration::from_secs(10),
        || "the outbox to empty after the outage".to_owned(),
        async || w.server.state.outbox.pending().await.unwrap().is_empty(),
    )
    .await;
    // The refused token was dropped and a new one fetched; no more than that.
    assert_eq!(w.identity.tokens().len(), 2, "{:?}", w.identity.tokens());
    let refused = w
        .connector
        .seen()
        .iter()
        .position(|s| s.authorization.as_deref() == Some("Bearer connector-token-2"));
    assert!(refused.is_some(), "later calls use the new token");
    w.connector.assert_valid();
}

#[tokio::test]
async fn cards_go_to_the_configured_channel_before_the_bot_is_installed() {
    let w = world(Setup {
        configured_channel: true,
        ..Setup::default()
    })
    .await;
    let run = w.finding("i-0fff0006", "finding-c").await;
    let posted = w
        .connector
        .wait_for("a card in the configured channel", |m| !m.is_empty())
        .await;
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].conversation, CONFIGURED_CHANNEL);
    assert_eq!(posted[0].buttons()[0]["data"]["run_id"], run.as_str());
    w.connector.assert_valid();
}

#[tokio::test]
async fn a_wrong_app_password_holds_cards_back_and_never_shows() {
    let w = world(Setup {
        password: Some("not-the-password"),
        ..Setup::default()
    })
    .await;
    w.finding("i-0aaa0007", "finding-p").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let entry = loop {
        let pending = w.server.state.outbox.pending().await.unwrap();
        if let Some(entry) = pending.into_iter().find(|e| e.last_error.is_some()) {
            break entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the post never failed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let error = entry.last_error.unwrap();
    assert!(error.contains("401 invalid_client"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
    assert!(
        !entry.dead,
        "the card waits for a fixed config instead of being dropped"
    );
    assert!(w.connector.messages().is_empty());
    let config = format!("{:?}", w.server.state.config.chat.teams);
    assert!(!config.contains("not-the-password"), "{config}");
}

#[tokio::test]
async fn without_teams_configured_the_endpoint_is_not_found() {
    let server = TestServer::start_with("").await;
    let (status, body) = server
        .send(
            server
                .http
                .post(format!("{}/v1/chat/teams/messages", server.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "type": "message" })),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("teams_not_configured"))
    );
}

#[tokio::test]
async fn removing_the_bot_holds_cards_until_it_is_installed_again() {
    let w = world(Setup::default()).await;
    let mut removed = teams::installed(&w.connector.service_url());
    let bot = removed["membersAdded"].clone();
    removed.as_object_mut().unwrap().remove("membersAdded");
    removed["membersRemoved"] = bot;
    removed["channelData"]["eventType"] = json!("teamMemberRemoved");
    let (status, _) = w.send(&removed).await;
    assert_eq!(status, 200);

    w.finding("i-0abc0008", "finding-u").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pending = w.server.state.outbox.pending().await.unwrap();
        if pending.iter().any(|e| {
            e.last_error
                .as_deref()
                .is_some_and(|m| m.contains("no conversation to post to yet"))
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(w.connector.messages().is_empty());

    let (status, _) = w.send(&teams::installed(&w.connector.service_url())).await;
    assert_eq!(status, 200);
    w.card().await;
    w.connector.assert_valid();
}

#[tokio::test]
async fn the_connector_fake_reports_what_prism_refuses() {
    // The check the other tests rely on: a request outside the description is caught.
    let connector = Connector::start().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v3/conversations/abc/activities",
            connector.base
        ))
        .bearer_auth("connector-token-1")
        .json(&json!({ "type": "card", "textFormat": "html" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let violations = connector.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("textFormat"), "{violations:?}");
}

#[test]
fn the_shipped_app_package_names_one_bot_for_teams_with_its_icons() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/teams");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["manifestVersion"], "1.17");
    let bots = manifest["bots"].as_array().unwrap();
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0]["botId"], manifest["id"], "the app is the bot's");
    assert!(
        bots[0]["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("team"))
    );
    assert_eq!(
        bots[0]["isNotificationOnly"], false,
        "clicks come back to the bot"
    );
    assert!(manifest["description"]["short"].as_str().unwrap().len() <= 80);
    // Teams wants a 192×192 colour icon and a 32×32 outline; PNG keeps the size at bytes 16..24.
    for (key, size) in [("color", 192u32), ("outline", 32)] {
        let png = std::fs::read(folder.join(manifest["icons"][key].as_str().unwrap())).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (size, size), "{key} icon");
    }
}

/// The recorded channel message that @mentions the bot (`mention` in
/// `callbacks/teams/vercel_chat_replay_actions_reactions_teams.json`), saying `words` after the
/// mention, from `aad`, as message `id` of this test's service.
fn command_message(service_url: &str, id: &str, words: &str, aad: &str) -> Value {
    let recorded: Value = serde_json::from_slice(&read_fixture(
        "callbacks/teams/vercel_chat_replay_actions_reactions_teams.json",
    ))
    .unwrap();
    let mut activity = recorded["mention"].clone();
    let mention = activity["entities"][0]["text"].as_str().unwrap().to_owned();
    activity["text"] = json!(format!("{mention} {words}"));
    activity["id"] = json!(id);
    activity["serviceUrl"] = json!(service_url);
    activity["from"]["aadObjectId"] = json!(aad);
    activity["channelData"]["tenant"]["id"] = json!(TENANT);
    activity["conversation"]["tenantId"] = json!(TENANT);
    activity["conversation"]["id"] = json!(format!("{};messageid={id}", teams::recorded_channel()));
    activity
}

impl World {
    /// Says `words` to the bot (after its @mention) as message `id`; the bot's answer in the
    /// message's thread.
    async fn ask(&self, id: &str, words: &str, aad: &str) -> String {
        let message = command_message(&self.connector.service_url(), id, words, aad);
        self.connector.said(&message);
        let (status, body) = self.send(&message).await;
        assert_eq!((status, body), (200, json!({})), "{words}");
        let messages = self
            .connector
            .wait_for(&format!("the answer to `{words}`"), |m| {
                m.iter().any(|m| m.reply_to.as_deref() == Some(id))
            })
            .await;
        let answer = messages
            .into_iter()
            .find(|m| m.reply_to.as_deref() == Some(id))
            .unwrap();
        assert!(answer.conversation.ends_with(&format!(";messageid={id}")));
        answer.text()
    }
}

#[tokio::test]
async fn messages_to_the_bot_are_the_cordon_commands_under_the_same_rules() {
    let w = world(Setup::default()).await;
    let run = w.finding("i-0c0ffee", "finding-commands").await;

    let status = w.ask("9001", "status", APPROVER).await;
    assert!(
        status.starts_with("**1** open incident, **1** approval waiting."),
        "{status}"
    );
    assert!(
        status.contains(&format!("run `{run}` step `{STEP}`")) && status.contains("i-0c0ffee"),
        "{status}"
    );
    let runs = w.ask("9002", "runs", APPROVER).await;
    assert!(
        runs.contains(&format!("`{run}` {PLAYBOOK}: waiting")),
        "{runs}"
    );

    // Someone outside `soc` cannot decide by message either; nothing is recorded.
    let refused = w
        .ask("9003", &format!("approve {run} {STEP}"), OUTSIDER)
        .await;
    assert_eq!(
        refused,
        "Not allowed: you are not in the approver group `soc`."
    );
    assert!(w.decisions(&run).await.is_empty());
    // Starting playbooks from chat is off without `chat.triggers`.
    let trigger = w.ask("9004", &format!("run {PLAYBOOK}"), APPROVER).await;
    assert!(
        trigger.contains("Starting playbooks from chat is off"),
        "{trigger}"
    );
    let nonsense = w.ask("9005", "frobnicate <b>now</b>", APPROVER).await;
    assert!(
        nonsense.starts_with("Unknown command `frobnicate`.") && !nonsense.contains("<b>"),
        "{nonsense}"
    );

    // An approver decides by message: the run goes ahead and the decision says it came from Teams.
    let approved = w
        .ask("9006", &format!("approve {run} {STEP}"), APPROVER)
        .await;
    assert_eq!(approved, format!("Approved: {run} {STEP} goes ahead."));
    w.server.wait_run(&run, "finished", finished).await;
    let decisions = w.decisions(&run).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["identity"], format!("teams:{APPROVER}"));
    assert_eq!(decisions[0]["via"], "teams");
    w.connector.assert_valid();
}
