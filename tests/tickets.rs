//! Tickets through the real server: a Jira issue (checked against the official v3 description
//! by Prism, and for its sequence by a stateful fake) and a ServiceNow incident (a fake following
//! the Table API sample) per incident, created once, a comment per event in order, the done
//! transition and the report attached; inbound webhooks from the recorded Jira payloads and a
//! business-rule call; an outage of refused connections, 503s and 429s, also across a SIGKILL and
//! restart of the binary; and the incident report of an end-to-end incident.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::tickets::*;
use support::*;

const WEBHOOK_SECRET: &str = "jira-webhook-secret-for-tests";
const SN_WEBHOOK_TOKEN: &str = "servicenow-webhook-token-for-tests";
/// The account that changed the issue in the recorded Jira payloads.
const JIRA_ACCOUNT: &str = "5bcede20b3e37a158c364fef";

/// The sections loading the lab playbook `playbook` (`lab-approve`: capture, ask the `soc`
/// group, isolate when approved; `lab-auto`: capture and isolate) of `tests/data/playbooks/lab/`
/// and its offline lab firewall integration, the `soc` approvers, the generic source, and
/// `tickets`.
fn lab(playbook: &str, tickets: &str) -> String {
    format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\nplaybooks:\n  paths: [{}]\nintegrations:\n  paths: [{}]\npeople:\n  lead:\n    roles: [responder]\n    identities: [cli:lead]\napprovers:\n  soc: [lead]\n{tickets}",
        data(&format!("playbooks/lab/{playbook}.yaml")).display(),
        data("integrations/offline/lab-fw").display(),
    )
}

fn jira_tickets(base: &str) -> String {
    format!(
        r#"tickets:
  retry: {{ base: 50ms, max: 500ms }}
  comment_interval: 0s
  jira:
    base_url: {base}
    email: {JIRA_EMAIL}
    api_token: {JIRA_TOKEN}
    webhook: {{ hmac_secret: {WEBHOOK_SECRET} }}
    users: {{ "{JIRA_ACCOUNT}": "cli:lead" }}
  default:
    labels: [cordon, "sev-${{{{ incident.severity }}}}"]
    jira:
      project: SEC
      fields: {{ customfield_10010: "${{{{ alert.source }}}}" }}
"#
    )
}

fn servicenow_tickets(base: &str) -> String {
    format!(
        r#"tickets:
  retry: {{ base: 50ms, max: 500ms }}
  comment_interval: 0s
  servicenow:
    base_url: {base}
    username: {SN_USER}
    password: {SN_PASSWORD}
    webhook: {{ token: {SN_WEBHOOK_TOKEN} }}
    users: {{ beth.anglin: "cli:lead" }}
  default:
    servicenow:
      assignment_group: Security Operations
      fields: {{ cmdb_ci: "${{{{ alert.resource.id }}}}" }}
"#
    )
}

fn alert(title: &str, host: &str) -> String {
    json!({ "title": title, "severity": 9, "dedup_key": title, "resource": { "kind": "host", "id": host } })
        .to_string()
}

/// Posts an alert; its id and incident id.
async fn post(server: &TestServer, title: &str, host: &str) -> (String, String) {
    let (status, body) = server.post_alert("generic", alert(title, host)).await;
    assert_eq!(status, 202, "{body}");
    let a = &body["alerts"][0];
    (
        a["alert_id"].as_str().unwrap().to_owned(),
        a["incident_id"].as_str().unwrap().to_owned(),
    )
}

/// Waits until the outbox has delivered everything, and checks nothing was given up on.
async fn drained(server: &TestServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = server.state.outbox.pending().await.unwrap();
        assert!(
            pending.iter().all(|e| !e.dead),
            "an outbox entry failed for good: {pending:#?}"
        );
        if pending.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox still holds {pending:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts `texts` start with `expected`'s prefixes, one for one, in order.
fn in_order(texts: &[String], expected: &[&str]) {
    assert_eq!(
        texts.len(),
        expected.len(),
        "expected {} notes, got {texts:#?}",
        expected.len()
    );
    // Jira shows `code` as a mark, so backticks are not compared.
    for (text, prefix) in texts.iter().zip(expected) {
        assert!(
            text.replace('`', "").starts_with(&prefix.replace('`', "")),
            "`{text}` should start with `{prefix}`; all: {texts:#?}"
        );
    }
}

/// Waits until an update starting with `prefix` is queued or delivered (so what a test does next
/// is queued after it).
async fn noted(server: &TestServer, delivered: impl Fn() -> Vec<String>, prefix: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending = server.state.outbox.pending().await.unwrap();
        let queued = pending.iter().any(|e| {
            e.payload["text"]
                .as_str()
                .is_some_and(|t| t.replace('`', "").starts_with(&prefix.replace('`', "")))
        });
        if queued
            || delivered()
                .iter()
                .any(|t| t.replace('`', "").starts_with(&prefix.replace('`', "")))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{prefix}` was never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn post_jira(server: &TestServer, body: &Value, secret: Option<&str>) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut request = server
        .http
        .post(format!("{}/v1/tickets/jira/webhook", server.base))
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request.header(
            "x-hub-signature",
            format!("sha256={}", hmac_hex(secret, &bytes)),
        );
    }
    server.send(request.body(bytes)).await
}

/// A recorded Jira payload, about `issue` (id, key), sent now: Jira Cloud's `timestamp` is epoch
/// milliseconds (the recording's is a string), and each change has its own changelog id.
fn jira_payload(name: &str, issue: (&str, &str)) -> Value {
    static CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(50_000);
    let mut payload: Value =
        serde_json::from_slice(&read_fixture(&format!("callbacks/jira/{name}"))).unwrap();
    payload["issue"]["id"] = Value::String(issue.0.to_owned());
    payload["issue"]["key"] = Value::String(issue.1.to_owned());
    payload["timestamp"] = json!(chrono::Utc::now().timestamp_millis());
    if payload["changelog"].is_object() {
        let id = CHANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        payload["changelog"]["id"] = json!(id.to_string());
    }
    payload
}

/// The recorded status change, made a change to Done.
fn jira_done(issue: (&str, &str)) -> Value {
    let mut payload = jira_payload("jira_to_matrix_issue_updated_status_changed.json", issue);
    payload["changelog"]["items"][0]["to"] = json!("10002");
    payload["changelog"]["items"][0]["toString"] = json!("Done");
    payload["issue"]["fields"]["status"] = json!({ "id": "10002", "name": "Done",
        "statusCategory": { "id": 3, "key": "done", "colorName": "green", "name": "Done" } });
    payload
}

/// The recorded status change payload, turned into a comment by `account` (as Jira sends
/// `issue_commented`).
fn jira_comment(issue: (&str, &str), id: &str, account: &str, text: &str) -> Value {
    let mut payload = jira_payload("jira_to_matrix_issue_updated_status_changed.json", issue);
    let object = payload.as_object_mut().unwrap();
    object.remove("changelog");
    object.insert("issue_event_type_name".into(), json!("issue_commented"));
    object.insert(
        "comment".into(),
        json!({ "id": id, "author": { "accountId": account, "displayName": "Someone" }, "body": text,
            "created": "2026-11-26T10:00:00.000+0000" }),
    );
    payload
}

async fn incident_status(server: &TestServer, id: &str) -> String {
    server.admin(&format!("/v1/incidents/{id}")).await["incident"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn report(server: &TestServer, id: &str, format: &str) -> (u16, String, String) {
    let response = server
        .http
        .get(format!(
            "{}/v1/incidents/{id}/report?format={format}",
            server.base
        ))
        .bearer_auth(server.token_of(support::TESTER).await)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jira_issue_follows_the_incident_once_in_order_within_the_v3_contract() {
    let jira = FakeJira::start(Some(prism_jira())).await;
    // The first create reaches Jira but its answer is lost: the retry must find the issue.
    jira.control()
        .lose_next_create
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let server = TestServer::start_with(&lab("lab-approve", &jira_tickets(&jira.base))).await;

    let (first, incident) = post(&server, "Beaconing to 203.0.113.7", "h-42").await;
    let run = server.run_for_alert(&first).await;
    server
        .wait_run(&run, "waiting", |r| r["status"] == "waiting")
        .await;
    noted(&server, || jira.comments("SEC-1"), "Approval requested").await;
    let (second, joined) = post(&server, "Beaconing again", "h-42").await;
    assert_eq!(joined, incident);
    let (status, body) = server.decide(&run, "approve", "approve", "cli:lead").await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    noted(&server, || jira.comments("SEC-1"), &format!("Run {run}")).await;
    let (status, body) = server
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:lead")
        .await;
    assert_eq!(status, 200, "{body}");
    jira.wait_reports().await;
    drained(&server).await;

    // One issue, created once although the first answer was lost.
    let data = jira.data();
    assert_eq!(data.issues.len(), 1, "{:#?}", data.ops);
    assert_eq!(
        data.ops.iter().filter(|o| o.starts_with("create")).count(),
        1
    );
    let issue = data.issues[0].clone();
    assert_eq!(issue.key, "SEC-1");
    let fields = &issue.fields;
    assert_eq!(fields["summary"], "[Cordon] Beaconing to 203.0.113.7");
    assert_eq!(fields["issuetype"]["name"], "Task");
    assert_eq!(fields["priority"]["name"], "Highest");
    assert_eq!(fields["customfield_10010"], "generic");
    assert_eq!(
        fields["labels"],
        json!(["cordon", "sev-9", format!("cordon-{incident}")])
    );
    assert_eq!(fields["description"]["type"], "doc");
    let description = cordon::tickets::jira::adf_text(&fields["description"]);
    assert!(description.contains(&incident), "{description}");

    // A comment per event, in the order things happened, none twice.
    let comments = jira.comments("SEC-1");
    in_order(
        &comments,
        &[
            "Step `capture` of playbook lab-approve succeeded",
            "Evidence collected by step `capture`: host-state at fw://hosts/h-42 (sha256 ",
            "Approval requested at step `approve` of playbook lab-approve: Isolate h-42?",
            "New alert joined the incident: Beaconing again",
            "lead approved `approve` of playbook lab-approve (via api)",
            "Step `approve` of playbook lab-approve succeeded",
            "Step `isolate` of playbook lab-approve succeeded",
            &format!("Run {run} of playbook lab-approve succeeded"),
            "Incident resolved by lead (via api)",
        ],
    );
    let entries: std::collections::HashSet<String> = issue
        .comments
        .iter()
        .map(|c| {
            c["properties"][0]["value"]["entry"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        entries.len(),
        issue.comments.len(),
        "every comment names its own entry"
    );
    assert_eq!(issue.status, 2, "the issue is Done");
    let data = jira.data();
    let tail: Vec<&str> = data
        .ops
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail[0],
        "comment SEC-1 Incident resolved by lead (via api). The incident report is attached."
    );
    assert_eq!(tail[1], "transition SEC-1 Done");
    assert!(
        tail[2].starts_with("attach SEC-1 cordon-incident-report-") && tail[2].ends_with(".md")
    );
    assert!(tail[3].ends_with(".html"));

    // The attached report is the incident's.
    let markdown = String::from_utf8(issue.attachments[0].2.clone()).unwrap();
    for needle in [
        &incident,
        &first,
        &second,
        &run,
        "lead",
        "lab-fw.isolate",
        "fw://hosts/h-42",
    ] {
        assert!(
            markdown.contains(needle),
            "the report lacks {needle}:\n{markdown}"
        );
    }
    assert!(String::from_utf8_lossy(&issue.attachments[1].2).starts_with("<!doctype html>"));

    // The ticket is linked in the report, and nothing of the API token leaked into it.
    let (_, _, text) = report(&server, &incident, "markdown").await;
    assert!(text.contains("Jira: SEC-1"), "{text}");
    assert!(!text.contains(JIRA_TOKEN));
    jira.assert_no_violations();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_webhooks_resolve_reopen_record_assignees_and_decide_approvals() {
    let jira = FakeJira::start(Some(prism_jira())).await;
    let server = TestServer::start_with(&lab("lab-approve", &jira_tickets(&jira.base))).await;
    let (first, incident) = post(&server, "Beaconing", "h-7").await;
    let run = server.run_for_alert(&first).await;
    server
        .wait_run(&run, "waiting", |r| r["status"] == "waiting")
        .await;
    jira.wait("the issue", |d| {
        d.ops
            .iter()
            .any(|o| o.starts_with("comment SEC-1 Approval requested"))
    })
    .await;
    let issue_id = jira.data().issues[0].id.clone();
    let issue = (issue_id.as_str(), "SEC-1");

    // Bad credentials change nothing.
    let done = jira_done(issue);
    let (status, body) = post_jira(&server, &done, Some("not-the-secret")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = post_jira(&server, &done, None).await;
    assert_eq!(status, 401);
    let mut tampered = serde_json::to_vec(&done).unwrap();
    let signature = hmac_hex(WEBHOOK_SECRET, &tampered);
    tampered.extend_from_slice(b" ");
    let (status, _) = server
        .send(
            server
                .http
                .post(format!("{}/v1/tickets/jira/webhook", server.base))
                .header("x-hub-signature", format!("sha256={signature}"))
                .body(tampered),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(incident_status(&server, &incident).await, "open");

    // Signed but not JSON: 400 with what is wrong; about no Cordon issue: ignored.
    let (status, body) = server
        .send(
            server
                .http
                .post(format!("{}/v1/tickets/jira/webhook", server.base))
                .header(
                    "x-hub-signature",
                    format!("sha256={}", hmac_hex(WEBHOOK_SECRET, b"{nope")),
                )
                .body("{nope"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_payload");
    let (status, body) = post_jira(
        &server,
        &jira_done(("11442", "INDEV-6")),
        Some(WEBHOOK_SECRET),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body["ignored"].as_str().unwrap().contains("INDEV-6"),
        "{body}"
    );

    // A `/cordon approve` by someone who is no approver is refused, and told so on the issue.
    let stranger = jira_comment(issue, "9000", "557058:stranger", "/cordon approve");
    let (status, body) = post_jira(&server, &stranger, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["applied"][0]
            .as_str()
            .unwrap()
            .starts_with("command refused"),
        "{body}"
    );
    jira.wait("the refusal", |d| {
        d.ops.iter().any(|o| {
            o.starts_with("comment SEC-1 /cordon approve by jira:557058:stranger was not applied")
        })
    })
    .await;
    assert_eq!(
        server.admin(&format!("/v1/runs/{run}")).await["run"]["status"],
        "waiting"
    );

    // The approver's comment decides it, once, however often Jira sends it.
    let approve = jira_comment(issue, "9001", JIRA_ACCOUNT, "/cordon approve");
    let (status, body) = post_jira(&server, &approve, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["applied"][0]
            .as_str()
            .unwrap()
            .starts_with("approved `approve`"),
        "{body}"
    );
    let shown = server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let decision = &shown["run"]["steps"]["approve"]["approval"]["decisions"][0];
    assert_eq!(decision["identity"], "cli:lead");
    assert_eq!(decision["via"], "jira");
    let (status, body) = post_jira(&server, &approve, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200);
    assert_eq!(body["applied"], json!([]));

    // The issue moved to Done: the incident is resolved, by the mapped person, via Jira.
    let (status, body) = post_jira(&server, &done, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], json!(["incident resolved"]));
    assert_eq!(incident_status(&server, &incident).await, "resolved");

    // The recorded change back to In Progress reopens it.
    let reopened = jira_payload("jira_to_matrix_issue_updated_status_changed.json", issue);
    let (status, body) = post_jira(&server, &reopened, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], json!(["incident reopened"]));
    assert_eq!(incident_status(&server, &incident).await, "open");

    // The recorded assignment is audited.
    let assigned = jira_payload("jira_to_matrix_issue_updated_assigned.json", issue);
    let (status, body) = post_jira(&server, &assigned, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let (_, _, text) = report(&server, &incident, "markdown").await;
    assert!(text.contains("ticket.assigned"), "{text}");
    assert!(
        text.contains("jira ticket SEC-1 assigned to Иванов Иван Иванович"),
        "{text}"
    );
    assert!(
        text.contains("| incident.resolved | cli:lead | via jira |"),
        "{text}"
    );
    assert!(
        text.contains("| incident.reopened | cli:lead | via jira |"),
        "{text}"
    );
    assert!(
        text.contains("| ticket.assigned | jira:5c07f55ba1b46046f530e0f3 |"),
        "{text}"
    );

    // The Jira side heard about both, in order.
    jira.wait("the reopen note", |d| {
        d.ops
            .iter()
            .any(|o| o.contains("Incident reopened by cli:lead (via jira)"))
    })
    .await;
    drained(&server).await;
    let comments = jira.comments("SEC-1");
    let resolved = comments
        .iter()
        .position(|c| c.starts_with("Incident resolved by cli:lead (via jira)"))
        .unwrap();
    let reopened = comments
        .iter()
        .position(|c| c.starts_with("Incident reopened by cli:lead (via jira)"))
        .unwrap();
    assert!(resolved < reopened, "{comments:#?}");
    jira.assert_no_violations();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servicenow_incident_follows_the_incident_and_its_business_rule_calls_back() {
    let sn = FakeServiceNow::start().await;
    sn.control()
        .lose_next_create
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let server = TestServer::start_with(&lab("lab-auto", &servicenow_tickets(&sn.base))).await;
    let (first, incident) = post(&server, "Beaconing", "h-9").await;
    let run = server.run_for_alert(&first).await;
    server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let notes = || {
        sn.data()
            .journal
            .iter()
            .map(|j| j["value"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    noted(&server, notes, &format!("Run {run}")).await;
    let (status, _) = server
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:lead")
        .await;
    assert_eq!(status, 200);
    sn.wait("both report files", |d| d.attachments.len() == 2)
        .await;
    drained(&server).await;

    let data = sn.data();
    assert_eq!(
        data.records.len(),
        1,
        "created once although its answer was lost: {:#?}",
        data.ops
    );
    let record = data.records[0].clone();
    assert_eq!(record["correlation_id"], incident.as_str());
    assert_eq!(record["correlation_display"], "Cordon");
    assert_eq!(record["short_description"], "[Cordon] Beaconing");
    assert_eq!(
        (&record["urgency"], &record["impact"]),
        (&json!("1"), &json!("1"))
    );
    assert_eq!(record["assignment_group"], "Security Operations");
    assert_eq!(record["category"], "security");
    assert_eq!(record["cmdb_ci"], "h-9");
    assert_eq!(record["state"], "6");
    assert_eq!(record["close_code"], "Solution provided");
    assert!(record["close_notes"].as_str().unwrap().contains("by lead"));
    let notes: Vec<String> = data
        .journal
        .iter()
        .map(|j| j["value"].as_str().unwrap().to_owned())
        .collect();
    let number = record["number"].as_str().unwrap().to_owned();
    let ops = data.ops.clone();
    let attachments: Vec<(String, Vec<u8>)> = data
        .attachments
        .iter()
        .map(|a| (a.2.clone(), a.3.clone()))
        .collect();
    in_order(
        &notes,
        &[
            "Step `capture` of playbook lab-auto succeeded",
            "Evidence collected by step `capture`: host-state at fw://hosts/h-9",
            "Step `isolate` of playbook lab-auto succeeded",
            &format!("Run {run} of playbook lab-auto succeeded"),
            "Incident resolved by lead (via api)",
        ],
    );
    let refs: std::collections::HashSet<&str> = notes
        .iter()
        .map(|n| n.rsplit("Cordon ref ").next().unwrap())
        .collect();
    assert_eq!(refs.len(), notes.len(), "{notes:#?}");
    assert_eq!(ops.iter().filter(|o| o.starts_with("create")).count(), 1);
    assert!(ops.iter().any(|o| o == &format!("update {number} close_code=Solution provided close_notes=Resolved in Cordon by lead (via api). state=6")), "{ops:#?}");
    assert!(attachments[0].0.ends_with(".md") && attachments[1].0.ends_with(".html"));
    assert!(String::from_utf8_lossy(&attachments[0].1).contains(&first));

    // The business rule's call back: a bad token changes nothing.
    let call = |body: Value, token: &str| {
        server
            .http
            .post(format!("{}/v1/tickets/servicenow/webhook", server.base))
            .header("x-cordon-token", token.to_owned())
            .json(&body)
    };
    let reopen = json!({ "sys_id": record["sys_id"], "number": number, "correlation_id": incident,
        "state": "2", "previous_state": "6", "updated_by": "beth.anglin", "sys_mod_count": "7" });
    let (status, body) = server.send(call(reopen.clone(), "wrong")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(incident_status(&server, &incident).await, "resolved");
    let (status, body) = server
        .send(call(json!({ "state": "2" }), SN_WEBHOOK_TOKEN))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("correlation_id"));

    // Back to In Progress reopens; Resolved again resolves; an assignment is audited.
    let (status, body) = server.send(call(reopen, SN_WEBHOOK_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], json!(["incident reopened"]));
    assert_eq!(incident_status(&server, &incident).await, "open");
    let resolve = json!({ "sys_id": record["sys_id"], "number": number, "correlation_id": incident,
        "state": "6", "previous_state": "2", "updated_by": "beth.anglin", "sys_mod_count": "9",
        "assigned_to": "beth.anglin", "previous_assigned_to": "" });
    let (status, body) = server.send(call(resolve, SN_WEBHOOK_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["applied"],
        json!(["incident resolved", "assignee recorded: beth.anglin"])
    );
    assert_eq!(incident_status(&server, &incident).await, "resolved");
    sn.wait("the second resolution", |d| d.attachments.len() == 4)
        .await;
    drained(&server).await;
    let ops = sn.data().ops.clone();
    assert!(
        ops.iter().any(|o| o == &format!("update {number} state=2")),
        "{ops:#?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jira_outage_delays_updates_and_loses_none() {
    let jira = FakeJira::start(Some(prism_jira())).await;
    jira.refuse().await;
    let server = TestServer::start_with(&lab("lab-auto", &jira_tickets(&jira.base))).await;
    let (first, incident) = post(&server, "Beaconing", "h-3").await;
    let run = server.run_for_alert(&first).await;
    server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    noted(&server, Vec::new, &format!("Run {run}")).await;
    let (status, _) = server
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:lead")
        .await;
    assert_eq!(status, 200);
    // Refused for a while: everything waits in the outbox.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(jira.data().requests.is_empty());
    let waiting = server.state.outbox.pending().await.unwrap();
    assert_eq!(waiting.len(), 9, "{waiting:#?}");
    assert!(waiting[0].attempts >= 2, "{:#?}", waiting[0]);

    // Back, but unavailable for three requests, refusing Cordon's (rotated) token once, then rate
    // limited for two (Retry-After: 1).
    let control = jira.control();
    control
        .unauthorized
        .store(1, std::sync::atomic::Ordering::SeqCst);
    control
        .unavailable
        .store(3, std::sync::atomic::Ordering::SeqCst);
    control
        .throttled
        .store(2, std::sync::atomic::Ordering::SeqCst);
    jira.accept().await;
    jira.wait_reports().await;
    drained(&server).await;
    assert_eq!(
        control.served_503.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(
        control.served_429.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert_eq!(
        control.served_401.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    lab_auto_story_told_once(&jira, &run);
    jira.assert_no_violations();
    server.stop().await;
}

/// Jira holds the story of run `run` of `lab-auto`, each part once and in order: the issue, a
/// comment per step, the evidence, the run and the resolution, the done transition, the report
/// files.
fn lab_auto_story_told_once(jira: &FakeJira, run: &str) {
    let ops = jira.data().ops.clone();
    assert_eq!(ops.len(), 9, "{ops:#?}");
    assert_eq!(ops[0], "create SEC-1");
    in_order(
        &jira.comments("SEC-1"),
        &[
            "Step `capture` of playbook lab-auto succeeded",
            "Evidence collected by step `capture`",
            "Step `isolate` of playbook lab-auto succeeded",
            &format!("Run {run} of playbook lab-auto succeeded"),
            "Incident resolved by lead (via api)",
        ],
    );
    assert_eq!(ops[6], "transition SEC-1 Done");
    assert!(ops[7].ends_with(".md") && ops[8].ends_with(".html"));
}

fn process_config(dir: &Path, jira: &str) -> PathBuf {
    let path = dir.join("cordon.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\n{}",
        dir.join("store").display(),
        lab("lab-auto", &jira_tickets(jira))
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_owed_to_jira_survive_sigkill_and_restart() {
    let jira = FakeJira::start(Some(prism_jira())).await;
    jira.refuse().await;
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), &jira.base);

    // Everything happens while Jira is down; then the process is killed.
    let mut cordon = Process::start(&config);
    let answer = cordon.accept("generic", alert("Beaconing", "h-5")).await;
    let incident = answer["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = cordon.admin("/v1/runs").await;
        if let Some(run) = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "succeeded")
        {
            break run["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The run's last update is queued right after its state is stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, resolved) = cordon
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:lead")
        .await;
    assert_eq!(status, 200, "{resolved}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    cordon.child.kill().unwrap();
    cordon.child.wait().unwrap();
    assert!(jira.data().ops.is_empty());

    // Jira is back but holds its answer to the first comment after adding it; Cordon is killed
    // while it waits, so it cannot know the comment landed.
    jira.control()
        .hold_next_comment_ms
        .store(10_000, std::sync::atomic::Ordering::SeqCst);
    jira.accept().await;
    let mut cordon = Process::start(&config);
    jira.wait("the first comment", |d| {
        d.ops.iter().any(|o| o.starts_with("comment"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    cordon.child.kill().unwrap();
    cordon.child.wait().unwrap();
    assert_eq!(jira.data().ops.len(), 2, "{:#?}", jira.data().ops);

    // After the restart every update arrives, in order, none twice.
    let cordon = Process::start(&config);
    jira.wait_reports().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab_auto_story_told_once(&jira, &run);
    // The comment whose answer never came was looked up, found, and not sent again.
    assert!(
        jira.data()
            .requests
            .iter()
            .any(|r| r == "GET /rest/api/3/issue/SEC-1/comment"),
        "{:#?}",
        jira.data().requests
    );
    jira.assert_no_violations();
    drop(cordon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_report_has_every_alert_decision_action_and_evidence() {
    let server = TestServer::start_with(&lab("lab-approve", "")).await;
    let (first, incident) = post(&server, "Beaconing to 203.0.113.7", "h-42").await;
    let run = server.run_for_alert(&first).await;
    server
        .wait_run(&run, "waiting", |r| r["status"] == "waiting")
        .await;
    let (second, _) = post(&server, "Beaconing <again> | twice", "h-42").await;
    let (status, body) = server.decide(&run, "approve", "approve", "cli:lead").await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_run(&run, "succeeded", |r| r["status"] == "succeeded")
        .await;
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    let (status, _) = server
        .act(&format!("/v1/incidents/{incident}/resolve"), "cli:lead")
        .await;
    assert_eq!(status, 200);
    let evidence =
        server.admin(&format!("/v1/incidents/{incident}")).await["incident"]["evidence"][0].clone();
    let sha = evidence["sha256"].as_str().unwrap().to_owned();

    let (status, content_type, markdown) = report(&server, &incident, "markdown").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(
        markdown.starts_with("# Incident report: Beaconing to 203.0.113.7\n"),
        "{markdown}"
    );
    for needle in [
        // Every alert.
        first.as_str(),
        second.as_str(),
        "| alert received | generic | Beaconing to 203.0.113.7",
        "Beaconing &lt;again&gt; \\| twice",
        // The decision: who, when, where, on what.
        "| Isolate h-42? | soc (quorum 1) | lead | approve |",
        "| api | approved |",
        // The action and its undo.
        "| isolate | lab-fw.isolate | succeeded |",
        &format!("{run}:isolate"),
        "undone by cli-analyst at ",
        "with lab-fw.release",
        // The evidence with its hash.
        &format!("| host-state | fw://hosts/h-42 | {sha} |"),
        // The resolution.
        "| incident.resolved | lead | via api |",
    ] {
        assert!(
            markdown.contains(needle),
            "the report lacks `{needle}`:\n{markdown}"
        );
    }

    let (status, content_type, html) = report(&server, &incident, "html").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        html.contains("<td>Beaconing &lt;again&gt; | twice</td>"),
        "{html}"
    );
    assert!(html.contains(&format!("<td>{sha}</td>")));
    assert!(!html.contains("<again>"));

    let (status, _, body) = report(&server, &incident, "pdf").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = report(&server, "no-such-incident", "markdown").await;
    assert_eq!(status, 404);
    let (status, _) = server
        .send(
            server
                .http
                .get(format!("{}/v1/incidents/{incident}/report", server.base)),
        )
        .await;
    assert_eq!(status, 401);

    // `cordon incidents report` through the running server, then on the store it left.
    let config = server.dir.path().join("cli.yaml");
    std::fs::write(&config, config_text(server.dir.path(), "")).unwrap();
    let reader = server.token_of(TESTER).await;
    let (code, out, err) = cli_with(
        &config,
        Some(&reader),
        &["incidents", "report", &incident, "--server", &server.base],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# Incident report: Beaconing to 203.0.113.7"),
        "{out}"
    );
    assert!(out.contains(&format!("| host-state | fw://hosts/h-42 | {sha} |")));
    let (code, out, err) = cli_with(
        &config,
        Some(&reader),
        &[
            "incidents",
            "report",
            &incident,
            "--html",
            "--server",
            &server.base,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("<!doctype html>"));
    let dir = server.stop().await;
    let config = dir.path().join("cli.yaml");
    let (code, out, err) = cli(&config, &["incidents", "report", &incident]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&second) && out.contains("undone by cli-analyst"),
        "{out}"
    );
    let (code, _, err) = cli(&config, &["incidents", "report", "no-such-incident"]);
    assert_eq!(code, 1);
    assert!(err.contains("no incident `no-such-incident`"), "{err}");
}
