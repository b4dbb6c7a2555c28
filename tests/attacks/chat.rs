//! Chat and terminal: an attacker who can install the Teams bot somewhere, or who chooses an
//! alert's text, tries to move where approval cards go, to put a live link on a card that hides
//! where it leads, or to send escape sequences to an analyst's terminal.

use serde_json::{Value, json};

use crate::support::discord::{self, FakeDiscord};
use crate::support::teams::{self, APP_ID, APP_PASSWORD, Connector, Identity, Signer, TENANT};
use crate::support::{Client, TestServer, cli, config_text, write_playbook};

const LINK: &str = "[click](https://evil.example)";

/// Asks `soc` to approve, for any generic alert.
const PLAYBOOK: &str = r#"id: ask
name: Ask before containing
on:
  source: generic
steps:
  - id: approve
    approval:
      prompt: "Contain ${{ alert.resource.id }}?"
      approvers: soc
      timeout: 30m
"#;

const GENERIC: &str =
    "sources:\n  generic:\n    auth:\n      bearer:\n        token: test-intake-token\n";

async fn alert(client: &Client, title: &str) {
    let body = json!({
        "title": title, "kind": "test.beacon", "severity": 8,
        "resource": { "kind": "host", "id": "web-1" },
    });
    let (status, answer) = client.post_alert("generic", body.to_string()).await;
    assert_eq!(status, 202, "{answer}");
}

struct TeamsWorld {
    connector: Connector,
    signer: Signer,
    server: TestServer,
    _identity: Identity,
    _playbooks: tempfile::TempDir,
}

/// Cordon with Teams, with or without `tenant_id`, the bot installed in the recorded team.
async fn teams_world(tenant_id: bool) -> TeamsWorld {
    let signer = Signer::signing();
    let identity = Identity::start(&[&signer]).await;
    let connector = Connector::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(playbooks.path(), "ask", PLAYBOOK);
    let tenant = if tenant_id {
        format!("    tenant_id: {TENANT}\n")
    } else {
        String::new()
    };
    let server = TestServer::start_with(&format!(
        "{GENERIC}playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [\"teams:00000000-1111-2222-3333-444444444444\"]\nchat:\n  teams:\n    app_id: {APP_ID}\n    app_password: {APP_PASSWORD}\n{tenant}    openid_metadata_url: {}\n    token_url: {}\n",
        playbooks.path().display(),
        identity.metadata_url(),
        identity.token_url(),
    ))
    .await;
    let w = TeamsWorld {
        connector,
        signer,
        server,
        _identity: identity,
        _playbooks: playbooks,
    };
    let (status, body) = w.send(&teams::installed(&w.connector.service_url())).await;
    assert_eq!(status, 200, "{body}");
    w
}

impl TeamsWorld {
    /// Posts `activity` with the token the Bot Connector would send for its service URL.
    async fn send(&self, activity: &Value) -> (u16, Value) {
        let service = activity["serviceUrl"].as_str().unwrap_or_default();
        let token = self.signer.sign(&teams::claims(service));
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

    /// The first card Cordon posts, wherever it goes.
    async fn first_card(&self) -> teams::Message {
        self.connector
            .wait_for("a card", |m| m.iter().any(|m| m.card().is_some()))
            .await
            .into_iter()
            .find(|m| m.card().is_some())
            .unwrap()
    }
}

#[tokio::test]
async fn a_personal_teams_install_does_not_move_the_cards() {
    let w = teams_world(true).await;
    // Anyone in the tenant can add the bot to a chat with themselves: Teams then tells the bot.
    let mut personal = teams::installed(&w.connector.service_url());
    personal["conversation"] = json!({
        "conversationType": "personal",
        "tenantId": TENANT,
        "id": "a:1attacker-personal-chat",
    });
    personal["channelData"] = json!({ "tenant": { "id": TENANT } });
    let (status, body) = w.send(&personal).await;
    assert_eq!(status, 200, "{body}");

    alert(&w.server, "Beacon from web-1").await;
    let card = w.first_card().await;
    assert_eq!(
        card.conversation,
        teams::recorded_channel(),
        "the card goes to the team channel"
    );
    assert!(
        !w.connector
            .messages()
            .iter()
            .any(|m| m.conversation.contains("attacker")),
        "nothing is posted in the personal chat"
    );
    w.connector.assert_valid();
}

#[tokio::test]
async fn a_teams_install_from_another_tenant_does_not_move_the_cards() {
    // A multi-tenant bot without `tenant_id`: any organization can install it in its own team.
    let w = teams_world(false).await;
    let other_tenant = "ffffffff-0000-4000-8000-00000000beef";
    let other_service = format!("{}/emea/{other_tenant}/", w.connector.base);
    let mut foreign = teams::installed(&other_service);
    foreign["conversation"]["id"] = json!("19:attacker-channel@thread.tacv2");
    foreign["conversation"]["tenantId"] = json!(other_tenant);
    foreign["channelData"]["tenant"]["id"] = json!(other_tenant);
    foreign["channelData"]["team"]["id"] = json!("19:attacker-team@thread.tacv2");
    let (status, body) = w.send(&foreign).await;
    assert_eq!(status, 200, "{body}");

    alert(&w.server, "Beacon from web-1").await;
    let card = w.first_card().await;
    assert_eq!(card.conversation, teams::recorded_channel());
    assert!(
        !w.connector
            .seen()
            .iter()
            .any(|s| s.path.contains("attacker")),
        "nothing is sent to the other tenant's team"
    );
    w.connector.assert_valid();
}

#[tokio::test]
async fn link_markup_in_an_alert_shows_as_text_on_the_teams_card() {
    let w = teams_world(true).await;
    alert(&w.server, &format!("{LINK} to keep your account")).await;
    let card = w.first_card().await;
    let content = card.card().unwrap();
    let title = content["body"][0]["text"].as_str().unwrap();
    assert!(
        title.ends_with("\\[click\\](https://evil.example) to keep your account"),
        "the title's brackets are escaped, so Teams shows them: {title}"
    );
    assert!(
        !content.to_string().contains("[click]("),
        "no Markdown link anywhere on the card: {content}"
    );
    w.connector.assert_valid();
}

#[tokio::test]
async fn link_markup_and_mass_mentions_in_an_alert_show_as_text_on_the_discord_card() {
    let fake = FakeDiscord::start().await;
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(playbooks.path(), "ask", PLAYBOOK);
    let server = TestServer::start_with(&format!(
        "{GENERIC}playbooks:\n  paths: [\"{}\"]\napprovers:\n  soc: [\"discord:{}\"]\n{}",
        playbooks.path().display(),
        discord::USER_ID,
        discord::chat_section(&fake, None),
    ))
    .await;
    alert(&server, &format!("{LINK} @everyone")).await;
    let card = fake.card().await;
    assert_eq!(
        card.content,
        "Approval needed: \\[click\\](https://evil.example) @\u{200B}everyone"
    );
    assert_eq!(
        card.embeds[0]["title"],
        "\\[click\\](https://evil.example) @\u{200B}everyone"
    );
    let shown = format!("{} {}", card.content, card.embeds);
    assert!(!shown.contains("[click]("), "{shown}");
    fake.assert_valid().await;
}

#[tokio::test]
async fn terminal_escapes_in_an_alert_do_not_reach_the_terminal() {
    let server = TestServer::start_with(GENERIC).await;
    alert(&server, "\u{1b}[2J\u{1b}]0;pwned\u{7}Reverse shell").await;
    let dir = server.stop().await;
    let config = dir.path().join("cordon.yaml");
    std::fs::write(&config, config_text(dir.path(), GENERIC)).unwrap();

    let (code, out, err) = cli(&config, &["alerts", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {out:?}"
    );
    assert!(
        out.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}Reverse shell"),
        "the title is shown with its escapes visible: {out}"
    );
    let alert_id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let (code, out, err) = cli(&config, &["alerts", "show", alert_id]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
}
