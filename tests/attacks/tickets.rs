//! The ticket webhooks (`/v1/tickets/jira/webhook`, `/v1/tickets/servicenow/webhook`): an
//! attacker who can edit some ticket, knows a webhook token, or has a copy of a signed call tries
//! to resolve incidents and approve containment. A stateful fake Jira and ServiceNow (tests/support/
//! tickets.rs) receive what Cordon files; the calls back are made as the platforms make them.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::tickets::*;
use crate::support::*;

const JIRA_SECRET: &str = "attack-jira-webhook-secret";
const JIRA_TOKEN_WEBHOOK: &str = "attack-jira-webhook-token";
const SN_TOKEN: &str = "attack-servicenow-webhook-token";
/// Jira accounts mapped to the two approvers of the `soc` group.
const LEAD_ACCOUNT: &str = "5bcede20b3e37a158c364fef";
const SECOND_ACCOUNT: &str = "557058:0f0e8f7a-second";

/// A server with the generic source, a playbook asking `soc` (`cli:lead`, `cli:second`) for a
/// quorum of `quorum`, and `tickets`.
async fn server(quorum: u32, tickets: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "contain",
        &approval_playbook(("contain", "Contain"), "generic", "Isolate?", "soc", quorum),
    );
    let extra = format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\nplaybooks:\n  paths: [{}]\n{}approvers:\n  soc: [lead, second]\n{tickets}",
        playbooks.display(),
        people_yaml(&[
            ("lead", &["cli:lead"], &["responder"]),
            ("second", &["cli:second"], &["responder"]),
        ]),
    );
    TestServer::start_in(dir, &extra).await
}

/// The Jira connection; `webhook` is its `webhook:` block.
fn jira_tickets(base: &str, webhook: &str) -> String {
    format!(
        r#"tickets:
  retry: {{ base: 50ms, max: 500ms }}
  jira:
    base_url: {base}
    email: {JIRA_EMAIL}
    api_token: {JIRA_TOKEN}
    webhook: {webhook}
    users: {{ "{LEAD_ACCOUNT}": "cli:lead", "{SECOND_ACCOUNT}": "cli:second" }}
  default:
    jira: {{ project: SEC }}
"#
    )
}

fn servicenow_tickets(base: &str) -> String {
    format!(
        r#"tickets:
  retry: {{ base: 50ms, max: 500ms }}
  servicenow:
    base_url: {base}
    username: {SN_USER}
    password: {SN_PASSWORD}
    webhook: {{ token: {SN_TOKEN} }}
    users: {{ beth.anglin: "cli:lead", abel.tuter: "cli:second" }}
  default:
    servicenow: {{}}
"#
    )
}

/// Posts an alert that starts the playbook; its run and incident ids once the run waits.
async fn waiting_run(server: &TestServer, host: &str) -> (String, String) {
    let (status, body) = server
        .post_alert("generic", generic_alert("Beaconing", host))
        .await;
    assert_eq!(status, 202, "{body}");
    let alert = body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let incident = body["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = server.run_for_alert(&alert).await;
    server.wait_run(&run, "waiting", waiting).await;
    (run, incident)
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Posts `body` to the Jira webhook, signed with `secret` as Jira signs.
async fn signed_jira(server: &TestServer, body: &Value, secret: &str) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    server
        .send(
            server
                .http
                .post(format!("{}/v1/tickets/jira/webhook", server.base))
                .header("content-type", "application/json")
                .header(
                    "x-hub-signature",
                    format!("sha256={}", hmac_hex(secret, &bytes)),
                )
                .body(bytes),
        )
        .await
}

/// Posts `body` to the Jira webhook with the shared token in the URL.
async fn token_jira(server: &TestServer, body: &Value) -> (u16, Value) {
    server
        .send(
            server
                .http
                .post(format!(
                    "{}/v1/tickets/jira/webhook?token={JIRA_TOKEN_WEBHOOK}",
                    server.base
                ))
                .json(body),
        )
        .await
}

/// A Jira Cloud `jira:issue_updated` call moving `issue` (id, key) to Done, sent at `at_ms`,
/// labelled `labels`, as change `change`.
fn jira_done(issue: (&str, &str), labels: &[String], change: &str, at_ms: i64) -> Value {
    json!({
        "timestamp": at_ms,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": { "accountId": LEAD_ACCOUNT, "displayName": "Lead" },
        "issue": { "id": issue.0, "key": issue.1, "fields": {
            "labels": labels,
            "status": { "id": "10002", "name": "Done",
                "statusCategory": { "id": 3, "key": "done", "name": "Done" } } } },
        "changelog": { "id": change, "items": [{ "field": "status", "fieldtype": "jira",
            "fieldId": "status", "from": "10001", "fromString": "In Progress",
            "to": "10002", "toString": "Done" }] }
    })
}

/// A Jira Cloud `comment_created` call: `account` commented `text` on `issue`.
fn jira_comment(issue: (&str, &str), id: &str, account: &str, text: &str) -> Value {
    json!({
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "webhookEvent": "comment_created",
        "issue": { "id": issue.0, "key": issue.1, "fields": {} },
        "comment": { "id": id, "author": { "accountId": account, "displayName": "Someone" },
            "body": text, "created": "2026-11-26T10:00:00.000+0000" }
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn incident_status(server: &TestServer, id: &str) -> String {
    server.admin(&format!("/v1/incidents/{id}")).await["incident"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The Jira issue Cordon filed for the first incident: (id, key).
async fn filed_issue(jira: &FakeJira) -> (String, String) {
    jira.wait("the issue", |d| !d.issues.is_empty()).await;
    let issue = jira.data().issues[0].clone();
    (issue.id, issue.key)
}

/// The audit entries of `kind` in the server's log.
async fn audited(server: &TestServer, run: &str, kind: &str) -> Vec<Value> {
    server.admin(&format!("/v1/runs/{run}")).await["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_jira_issue_with_the_label_resolves_nothing() {
    let jira = FakeJira::start(None).await;
    let webhook = format!("{{ hmac_secret: {JIRA_SECRET} }}");
    let server = server(1, &jira_tickets(&jira.base, &webhook)).await;
    let (_run, incident) = waiting_run(&server, "h-1").await;
    let (filed_id, filed_key) = filed_issue(&jira).await;

    // Anyone who can create an issue in the site can label it `cordon-<incident>` and close it;
    // Jira signs that call like any other.
    let labels = vec!["cordon".to_owned(), format!("cordon-{incident}")];
    let foreign = jira_done(("99999", "OTHER-7"), &labels, "70001", now_ms());
    let (status, body) = signed_jira(&server, &foreign, JIRA_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|i| i.contains("OTHER-7")),
        "{body}"
    );
    assert_eq!(incident_status(&server, &incident).await, "open");

    // The filed issue itself still counts.
    let filed = jira_done((&filed_id, &filed_key), &labels, "70002", now_ms());
    let (status, body) = signed_jira(&server, &filed, JIRA_SECRET).await;
    assert_eq!(
        (status, &body["applied"]),
        (200, &json!(["incident resolved"]))
    );
    assert_eq!(incident_status(&server, &incident).await, "resolved");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_jira_comment_authors_do_not_meet_a_quorum_of_two() {
    let jira = FakeJira::start(None).await;
    let webhook = format!("{{ token: {JIRA_TOKEN_WEBHOOK} }}");
    let server = server(2, &jira_tickets(&jira.base, &webhook)).await;
    let (run, _incident) = waiting_run(&server, "h-2").await;
    let (id, key) = filed_issue(&jira).await;

    // The token (it travels in the URL) does not sign the body: both authors are the sender's say.
    for (comment, account) in [("8001", LEAD_ACCOUNT), ("8002", SECOND_ACCOUNT)] {
        let forged = jira_comment((&id, &key), comment, account, "/cordon approve");
        let (status, body) = token_jira(&server, &forged).await;
        assert_eq!(status, 200, "{body}");
        let said = body["applied"][0].as_str().unwrap_or_default();
        assert!(
            said.starts_with("command refused") && said.contains("hmac_secret"),
            "{body}"
        );
    }
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(shown["run"]["status"], "waiting", "{shown}");
    assert_eq!(
        shown["run"]["steps"]["approve"]["approval"]["decisions"],
        json!([]),
        "{shown}"
    );
    let refused = audited(&server, &run, "approval.refused").await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused.iter().all(|e| e["actor"] == "jira"), "{refused:#?}");
    // And the person who wrote the comment is told why, on the issue.
    jira.wait("the refusal", |d| {
        d.ops
            .iter()
            .any(|o| o.contains("was not applied") && o.contains("shared token"))
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_servicenow_updated_by_values_do_not_meet_a_quorum_of_two() {
    let sn = FakeServiceNow::start().await;
    let server = server(2, &servicenow_tickets(&sn.base)).await;
    let (run, incident) = waiting_run(&server, "h-3").await;
    sn.wait("the record", |d| !d.records.is_empty()).await;
    let sys_id = sn.data().records[0]["sys_id"].as_str().unwrap().to_owned();

    for (count, user) in [("11", "beth.anglin"), ("12", "abel.tuter")] {
        let forged = json!({ "sys_id": sys_id, "number": "INC0010001",
            "correlation_id": incident, "state": "2", "previous_state": "2",
            "updated_by": user, "sys_mod_count": count, "work_notes": "/cordon approve" });
        let (status, body) = server
            .send(
                server
                    .http
                    .post(format!("{}/v1/tickets/servicenow/webhook", server.base))
                    .header("x-cordon-token", SN_TOKEN)
                    .json(&forged),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["applied"][0]
                .as_str()
                .is_some_and(|s| s.starts_with("command refused")),
            "{body}"
        );
    }
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(shown["run"]["status"], "waiting", "{shown}");
    let refused = audited(&server, &run, "approval.refused").await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servicenow_record_carrying_the_correlation_id_resolves_nothing() {
    let sn = FakeServiceNow::start().await;
    let server = server(1, &servicenow_tickets(&sn.base)).await;
    let (_run, incident) = waiting_run(&server, "h-4").await;
    sn.wait("the record", |d| !d.records.is_empty()).await;

    // Another record, whose correlation_id someone set to the Cordon incident's id.
    let foreign = json!({ "sys_id": "0123456789abcdef0123456789abcdef", "number": "INC0099999",
        "correlation_id": incident, "state": "6", "previous_state": "2",
        "updated_by": "mallory", "sys_mod_count": "3" });
    let (status, body) = server
        .send(
            server
                .http
                .post(format!("{}/v1/tickets/servicenow/webhook", server.base))
                .header("x-cordon-token", SN_TOKEN)
                .json(&foreign),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ignored"].is_string(), "{body}");
    assert_eq!(incident_status(&server, &incident).await, "open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_jira_status_change_changes_nothing_twice() {
    let jira = FakeJira::start(None).await;
    let webhook = format!("{{ hmac_secret: {JIRA_SECRET}, max_age: 10m }}");
    let server = server(1, &jira_tickets(&jira.base, &webhook)).await;
    let (_run, incident) = waiting_run(&server, "h-5").await;
    let (id, key) = filed_issue(&jira).await;

    let done = jira_done((&id, &key), &[], "71001", now_ms());
    let (status, body) = signed_jira(&server, &done, JIRA_SECRET).await;
    assert_eq!(
        (status, &body["applied"]),
        (200, &json!(["incident resolved"]))
    );
    let (status, _) = server
        .act(&format!("/v1/incidents/{incident}/reopen"), "cli:lead")
        .await;
    assert_eq!(status, 200);

    // The same signed call again (a proxy's log, a sandbox's copy): it was applied once already.
    let (status, body) = signed_jira(&server, &done, JIRA_SECRET).await;
    assert_eq!((status, &body["applied"]), (200, &json!([])), "{body}");
    assert_eq!(incident_status(&server, &incident).await, "open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_jira_call_older_than_the_window_is_refused() {
    let jira = FakeJira::start(None).await;
    let webhook = format!("{{ hmac_secret: {JIRA_SECRET}, max_age: 10m }}");
    let server = server(1, &jira_tickets(&jira.base, &webhook)).await;
    let (_run, incident) = waiting_run(&server, "h-6").await;
    let (id, key) = filed_issue(&jira).await;

    let an_hour_ago = now_ms() - Duration::from_secs(3600).as_millis() as i64;
    let old = jira_done((&id, &key), &[], "72001", an_hour_ago);
    let (status, body) = signed_jira(&server, &old, JIRA_SECRET).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("replay")),
        "{body}"
    );
    let mut undated = jira_done((&id, &key), &[], "72002", now_ms());
    undated.as_object_mut().unwrap().remove("timestamp");
    let (status, body) = signed_jira(&server, &undated, JIRA_SECRET).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(incident_status(&server, &incident).await, "open");
    server.stop().await;
}
