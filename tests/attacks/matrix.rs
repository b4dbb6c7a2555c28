//! The approvals matrix: three people with six identities across Slack, Discord, Teams, the CLI
//! (personal tokens) and OIDC, one server with every platform, and every approval rule checked
//! through the platform it comes from. The audit names the person behind each decision.
//!
//! - Alice: `slack:U0ALICE`, `cli:alice`
//! - Bob: `discord:<USER_ID>`, `teams:<APPROVER>`
//! - Carol: `oidc:carol-subject`, `teams:<SECOND>`

use serde_json::{Value, json};

use crate::support::discord::{self, FakeDiscord};
use crate::support::oidc::Issuer;
use crate::support::slack::{self, FakeSlack};
use crate::support::teams::{self, Connector, Identity, Signer, claims};
use crate::support::*;

const BOB_TEAMS: &str = "00000000-1111-2222-3333-444444444444";
const CAROL_TEAMS: &str = "c5e99701-2a32-49c1-a660-4629ceeb8c61";

struct World {
    server: TestServer,
    slack: FakeSlack,
    discord: FakeDiscord,
    connector: Connector,
    signer: Signer,
    issuer: Issuer,
    _identity: Identity,
    _playbooks: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let slack_api = FakeSlack::start().await;
        let discord_api = FakeDiscord::start().await;
        let signer = Signer::signing();
        let identity = Identity::start(&[&signer]).await;
        let connector = Connector::start().await;
        let issuer = Issuer::start().await;
        let playbooks = tempfile::tempdir().unwrap();
        write_playbook(
            playbooks.path(),
            "contain",
            &approval_playbook(("contain", "Contain"), "generic", "Isolate?", "soc", 2),
        );
        write_playbook(
            playbooks.path(),
            "ask",
            "id: ask\nname: Ask\nsteps:\n  - id: approve\n    approval:\n      prompt: go?\n      approvers: soc\n      quorum: 2\n",
        );
        let bob_discord = format!("discord:{}", discord::USER_ID);
        let bob_teams = format!("teams:{BOB_TEAMS}");
        let carol_teams = format!("teams:{CAROL_TEAMS}");
        let discord_section = discord::chat_section(&discord_api, None);
        let config = format!(
            "{}oidc:\n  issuer: {}\n  audience: cordon\nplaybooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [alice, bob, carol]\n{}{}{}  teams:\n    app_id: {}\n    app_password: {}\n    tenant_id: {}\n    openid_metadata_url: {}\n    token_url: {}\n",
            people_yaml(&[
                ("alice", &["slack:U0ALICE", "cli:alice"], &["responder"]),
                (
                    "bob",
                    &[bob_discord.as_str(), bob_teams.as_str()],
                    &["responder"]
                ),
                (
                    "carol",
                    &["oidc:carol-subject", carol_teams.as_str()],
                    &["responder"]
                ),
            ]),
            issuer.url,
            playbooks.path().display(),
            all_sources(),
            slack::chat_yaml(&slack_api, None, false),
            discord_section.trim_start_matches("chat:\n"),
            teams::APP_ID,
            teams::APP_PASSWORD,
            teams::TENANT,
            identity.metadata_url(),
            identity.token_url(),
        );
        let server = TestServer::start_with(&config).await;
        let w = World {
            server,
            slack: slack_api,
            discord: discord_api,
            connector,
            signer,
            issuer,
            _identity: identity,
            _playbooks: playbooks,
        };
        let (status, body) = w.teams(&teams::installed(&w.connector.service_url())).await;
        assert_eq!(status, 200, "{body}");
        w
    }

    async fn teams(&self, activity: &Value) -> (u16, Value) {
        let service = activity["serviceUrl"].as_str().unwrap_or_default();
        let token = self.signer.sign(&claims(service));
        self.server
            .send(
                self.server
                    .http
                    .post(format!("{}/v1/chat/teams/messages", self.server.base))
                    .bearer_auth(token)
                    .json(activity),
            )
            .await
    }

    /// A Teams click by `aad` on `run`; what Teams shows them.
    async fn teams_click(&self, run: &str, decision: &str, aad: &str) -> String {
        let click =
            teams::execute_click(&self.connector.service_url(), run, "approve", decision, aad);
        let (status, answer) = self.teams(&click).await;
        assert_eq!(status, 200, "{answer}");
        answer.to_string()
    }

    async fn slack_click(&self, user: &str, run: &str) {
        let (status, answer) = slack::approve_run(&self.slack, &self.server, user, run).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Bob clicks in Discord; what he is told.
    async fn discord_click(&self, run: &str) -> String {
        discord::approve_run(&self.discord, &self.server, discord::USER_ID, run).await
    }

    /// A decision through the API with an OIDC token of Carol's.
    async fn carol_oidc(&self, run: &str, decision: &str) -> (u16, Value) {
        let token = self
            .issuer
            .token("cordon", &[("sub", "carol-subject")])
            .await;
        self.server
            .send(
                self.server
                    .http
                    .post(format!(
                        "{}/v1/runs/{run}/approvals/approve",
                        self.server.base
                    ))
                    .bearer_auth(token)
                    .json(&json!({ "decision": decision })),
            )
            .await
    }

    async fn run(&self, run: &str) -> Value {
        self.server.admin(&format!("/v1/runs/{run}")).await
    }

    /// `(person, via, approve)` of each decision on `run`.
    async fn decisions(&self, run: &str) -> Vec<(String, String, bool)> {
        self.run(run).await["run"]["steps"]["approve"]["approval"]["decisions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                (
                    d["person"].as_str().unwrap_or("-").to_owned(),
                    d["via"].as_str().unwrap().to_owned(),
                    d["approve"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    async fn alert_run(&self, host: &str) -> String {
        let (status, body) = self
            .server
            .post_generic(&generic_alert("Beaconing", host))
            .await;
        assert_eq!(status, 202, "{body}");
        let run = self
            .server
            .run_for_alert(body["alerts"][0]["alert_id"].as_str().unwrap())
            .await;
        self.server
            .wait_run(&run, "waiting", |r| r["status"] == "waiting")
            .await;
        run
    }
}

fn d(person: &str, via: &str, approve: bool) -> (String, String, bool) {
    (person.to_owned(), via.to_owned(), approve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_on_six_identities_decide_by_the_same_rules_everywhere() {
    let w = World::start().await;

    // 1. Quorum counts people: Alice in Slack, Alice again with her CLI token (refused), Bob in
    //    Teams makes two.
    let run = w.alert_run("h-1").await;
    w.slack_click("U0ALICE", &run).await;
    let (status, body) = w
        .server
        .decide(&run, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(status, 409, "the same person twice: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("alice has already decided")
    );
    assert_eq!(w.run(&run).await["run"]["status"], "waiting");
    let said = w.teams_click(&run, "approve", BOB_TEAMS).await;
    assert!(!said.contains("Not allowed"), "{said}");
    let done = w
        .server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(
        w.decisions(&run).await,
        [d("alice", "slack", true), d("bob", "teams", true)]
    );
    // The audit names the person and the identity of each decision.
    let decided: Vec<(Value, Value)> = done["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval.decided")
        .map(|e| (e["detail"]["person"].clone(), e["actor"].clone()))
        .collect();
    assert_eq!(
        decided,
        [
            (json!("alice"), json!("slack:U0ALICE")),
            (json!("bob"), json!(format!("teams:{BOB_TEAMS}")))
        ]
    );

    // 2. The requester may not approve from any platform: Bob starts `ask` with a token, then
    //    tries Discord and Teams. Carol (OIDC) and Alice (CLI) make the quorum; Carol's Teams
    //    account is still Carol.
    let (status, body) = w
        .server
        .post_as(
            &format!("teams:{BOB_TEAMS}"),
            "/v1/playbooks/ask/runs",
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let ask = body["run_id"].as_str().unwrap().to_owned();
    w.server
        .wait_run(&ask, "waiting", |r| r["status"] == "waiting")
        .await;
    let told = w.discord_click(&ask).await;
    assert!(
        told.contains("bob started this run and may not approve it"),
        "{told}"
    );
    let said = w.teams_click(&ask, "approve", BOB_TEAMS).await;
    assert!(said.contains("bob started this run"), "{said}");
    let (status, body) = w.carol_oidc(&ask, "approve").await;
    assert_eq!(
        (status, body["approvals"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let said = w.teams_click(&ask, "approve", CAROL_TEAMS).await;
    assert!(said.contains("carol has already decided"), "{said}");
    let (status, body) = w
        .server
        .decide(&ask, "approve", "approve", "cli:alice")
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let decisions = w.decisions(&ask).await;
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0], d("carol", "api", true));
    assert_eq!(decisions[1], d("alice", "api", true));

    // 3. One deny ends it, whoever approved before: Alice approves in Slack, Carol denies in
    //    Teams; a later approval is refused and names who decided.
    let run = w.alert_run("h-2").await;
    w.slack_click("U0ALICE", &run).await;
    let said = w.teams_click(&run, "deny", CAROL_TEAMS).await;
    assert!(!said.contains("Not allowed"), "{said}");
    w.server
        .wait_run(&run, "finished", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(
        w.decisions(&run).await,
        [d("alice", "slack", true), d("carol", "teams", false)]
    );
    let (status, body) = w
        .server
        .decide(&run, "approve", "approve", &format!("teams:{BOB_TEAMS}"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already decided by alice (approve), carol (deny)"),
        "{body}"
    );

    // 4. A credential limited to `viewer` decides nothing, though its person is in the group.
    let run = w.alert_run("h-3").await;
    let (_, created) = w
        .server
        .send(
            w.server
                .http
                .post(format!("{}/v1/tokens", w.server.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "person": "alice", "roles": ["viewer"] })),
        )
        .await;
    let viewer = created["token"].as_str().unwrap();
    let (status, body) = w
        .server
        .send(
            w.server
                .http
                .post(format!("{}/v1/runs/{run}/approvals/approve", w.server.base))
                .bearer_auth(viewer)
                .json(&json!({ "decision": "approve" })),
        )
        .await;
    assert_eq!(
        (status, body["missing_role"].as_str()),
        (403, Some("approver")),
        "{body}"
    );
    assert!(w.decisions(&run).await.is_empty());
    w.server.stop().await;
}
