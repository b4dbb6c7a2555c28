//! Paging and email: the `pagerduty` and `opsgenie` integrations against fakes that check every
//! body against the services' API descriptions (tests/support/paging.rs), and `email.send` /
//! `email.notify` against a real SMTP server (aiosmtpd), with TLS, AUTH and an outage.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use support::paging::{FakePaging, SmtpOptions, SmtpPeer, TestCa};
use support::{TestServer, all_sources, wait_until, write_playbook};

/// Routing keys of two PagerDuty services (Events API v2 keys are 32 characters).
fn pd_key(service: &str) -> String {
    format!("{:0<32}", format!("pdkey{service}"))
}
const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";
const SMTP_PASSWORD: &str = "smtp-pass-4c1e9b";

/// Every log line of this test binary (the in-process servers log through it), for the secrets
/// check.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Writer(sink.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The config sections of a server paging through `fake` and mailing through `email` (the
/// `email:` section's body), with its playbooks in `dir/playbooks`.
fn config(dir: &std::path::Path, fake: &FakePaging, email: &str) -> String {
    let integrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations");
    format!(
        "{sources}integrations:\n  paths: [{integrations}]\n  credentials:\n    pagerduty:\n      keys: {{ default: {default}, payments: {payments} }}\n      endpoints: {{ \"events.pagerduty.com\": \"{base}\" }}\n    opsgenie:\n      api_key: {GENIE_KEY}\n      endpoints: {{ \"api.eu.opsgenie.com\": \"{base}\" }}\n  settings:\n    pagerduty: {{ console_url: \"https://cordon.example.com/\" }}\n    opsgenie: {{ region: eu }}\nplaybooks:\n  paths: [{playbooks}]\ntickets:\n  retry: {{ base: 100ms, max: 400ms }}\n{email}",
        sources = all_sources(),
        integrations = integrations.display(),
        default = pd_key("default"),
        payments = pd_key("payments"),
        base = fake.base,
        playbooks = dir.join("playbooks").display(),
    )
}

/// A server in a new folder holding `playbooks` (name, YAML).
async fn server(fake: &FakePaging, email: &str, playbooks: &[(&str, &str)]) -> TestServer {
    logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    for (name, yaml) in playbooks {
        write_playbook(&dir.path().join("playbooks"), name, yaml);
    }
    let text = config(dir.path(), fake, email);
    TestServer::start_in(dir, &text).await
}

/// Posts a generic alert of severity `severity`; its alert and incident ids.
async fn alert(server: &TestServer, title: &str, severity: u8) -> (String, String) {
    let body = serde_json::to_vec(&json!({
        "title": title,
        "kind": "test.paging",
        "severity": severity,
        "resource": { "kind": "host", "id": "web-1" },
    }))
    .unwrap();
    let (status, answer) = server.post_generic(&body).await;
    assert_eq!(status, 202, "{answer}");
    (
        answer["alerts"][0]["alert_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned(),
        answer["alerts"][0]["incident_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned(),
    )
}

/// The incident's report as `cordon incidents report` prints it.
async fn incident_report(server: &TestServer, incident: &str) -> String {
    cordon::tickets::report::Report::gather(&*server.state.store, incident)
        .await
        .unwrap()
        .expect("the incident")
        .markdown()
}

/// Runs the playbook the alert starts to its end; the run as the API shows it.
async fn finished_run(server: &TestServer, alert_id: &str) -> Value {
    let run = server.run_for_alert(alert_id).await;
    server.wait_run(&run, "finished", support::finished).await["run"].clone()
}

const PAGERDUTY: &str = r#"
id: page-pagerduty
name: Page, acknowledge and resolve through PagerDuty
on: { source: generic }
steps:
  - id: trigger
    uses: pagerduty.trigger
    with:
      summary: "${{ alert.title }} on ${{ alert.resource.id }}"
      severity: "${{ alert.severity.score }}"
      service: payments
      class: "${{ alert.kind }}"
      details: { resource: "${{ alert.resource.id }}" }
    retry: { attempts: 3, backoff: 100ms }
  - id: acknowledge
    uses: pagerduty.acknowledge
    with: { service: payments }
  - id: resolve
    uses: pagerduty.resolve
    with: { service: payments }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_triggers_acknowledges_and_resolves_one_alert_per_incident_and_a_429_is_retried()
{
    let fake = FakePaging::start(GENIE_KEY).await;
    let server = server(&fake, "", &[("page", PAGERDUTY)]).await;
    fake.throttle(1);
    let (alert_id, incident) = alert(&server, "Crypto miner", 8).await;
    let run = finished_run(&server, &alert_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["steps"]["trigger"]["attempts"], 2,
        "the 429 was tried again: {run}"
    );

    let pd = fake.pagerduty.lock().unwrap();
    assert_eq!(pd.throttled, 1);
    assert!(
        pd.refused.is_empty(),
        "every body was valid: {:?}",
        pd.refused
    );
    let key = pd_key("payments");
    let events: Vec<(&str, &str, &str)> = pd
        .events
        .iter()
        .map(|(k, a, d)| (k.as_str(), a.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        events,
        [
            (key.as_str(), "trigger", incident.as_str()),
            (key.as_str(), "acknowledge", incident.as_str()),
            (key.as_str(), "resolve", incident.as_str()),
        ],
        "the service's own routing key, the incident id as dedup_key"
    );
    let page = pd.alerts[&(key.clone(), incident.clone())].clone();
    drop(pd);
    assert_eq!(page.status, "resolved");
    assert_eq!(page.severity, "error", "severity 8 is PagerDuty's error");
    assert_eq!(page.summary, "Crypto miner on web-1");
    assert_eq!(page.custom_details["resource"], "web-1");
    assert_eq!(
        page.links[0]["href"],
        format!("https://cordon.example.com/v1/incidents/{incident}/report?format=html"),
        "links back to the incident's report"
    );
    let output = &run["steps"]["trigger"]["output"];
    assert_eq!(output["dedup_key"], incident.as_str());
    assert_eq!(output["severity"], "error");
    assert_eq!(output["status"], "success");
    assert!(
        !run.to_string().contains(&key),
        "the routing key is in no output"
    );
}

const PAGERDUTY_INVALID: &str = r#"
id: page-invalid
name: Page with a summary PagerDuty refuses, then on a service with no key
on: { source: generic }
steps:
  - id: empty
    uses: pagerduty.trigger
    with: { summary: "", severity: 5 }
    on_error: continue
  - id: unknown
    uses: pagerduty.trigger
    with: { summary: "x", severity: 5, service: nosuch }
    on_error: continue
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_pagerduty_refuses_fails_its_step_saying_why_and_opens_nothing() {
    let fake = FakePaging::start(GENIE_KEY).await;
    let server = server(&fake, "", &[("page", PAGERDUTY_INVALID)]).await;
    let (alert_id, _) = alert(&server, "Scan", 5).await;
    let run = finished_run(&server, &alert_id).await;
    let empty = run["steps"]["empty"]["error"].as_str().unwrap_or_default();
    assert!(
        empty.contains("PagerDuty refused the trigger event") && empty.contains("payload.summary"),
        "{run}"
    );
    let unknown = run["steps"]["unknown"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        unknown.contains("keys has no `nosuch`") && unknown.contains("default, payments"),
        "{run}"
    );
    let pd = fake.pagerduty.lock().unwrap();
    assert!(pd.alerts.is_empty() && pd.events.is_empty());
    assert_eq!(pd.refused.len(), 1, "the unknown service never left Cordon");
}

const OPSGENIE: &str = r#"
id: page-opsgenie
name: Page through Opsgenie, note, close
on: { source: generic }
steps:
  - id: create
    uses: opsgenie.create_alert
    with:
      message: "${{ alert.title }} on ${{ alert.resource.id }}"
      severity: "${{ alert.severity.score }}"
      description: "Cordon incident ${{ incident.id }}"
      responders: [{ type: team, name: SOC }]
      tags: [cordon, "${{ alert.source }}"]
      details: { resource: "${{ alert.resource.id }}", severity: "${{ alert.severity.score }}" }
  - id: note
    uses: opsgenie.add_note
    with: { note: "Instance isolated by Cordon" }
  - id: close
    uses: opsgenie.close_alert
    with: { note: "Contained" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsgenie_creates_notes_and_closes_the_alert_of_the_incident_on_the_eu_host() {
    let fake = FakePaging::start(GENIE_KEY).await;
    let server = server(&fake, "", &[("page", OPSGENIE)]).await;
    let (alert_id, incident) = alert(&server, "Tor relay", 7).await;
    let run = finished_run(&server, &alert_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let og = fake.opsgenie.lock().unwrap();
    assert!(
        og.refused.is_empty(),
        "every request was valid: {:?}",
        og.refused
    );
    assert!(og.failed.is_empty(), "{:?}", og.failed);
    let page = og.alerts[&incident].clone();
    drop(og);
    assert_eq!(page.status, "closed");
    assert_eq!(page.priority, "P2", "severity 7 is P2");
    assert_eq!(page.message, "Tor relay on web-1");
    assert_eq!(page.notes, ["Instance isolated by Cordon", "Contained"]);
    assert_eq!(page.tags, ["cordon", "generic"]);
    assert_eq!(page.responders, [json!({"type": "team", "name": "SOC"})]);
    assert_eq!(page.details["cordon_incident"], incident.as_str());
    assert_eq!(
        page.details["severity"], "7",
        "details are text, as Opsgenie takes them"
    );
    let requests = fake.server.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(
            r.headers["authorization"],
            format!("GenieKey {GENIE_KEY}").as_str()
        );
    }
    assert_eq!(
        requests[1].line(),
        format!("POST /v2/alerts/{incident}/notes?identifierType=alias")
    );
    assert!(
        run["steps"]["create"]["output"]["request_id"].is_string(),
        "{run}"
    );
}

/// The `email:` section for `peer` with the `soc` profile.
fn email(peer: &SmtpPeer, ca: Option<&TestCa>, notify: &str) -> String {
    format!(
        "email:\n{}  profiles:\n    soc:\n      from: \"Cordon <cordon@example.com>\"\n      to: [soc@example.com, oncall@example.com]\n      cc: [lead@example.com]\n{notify}",
        peer.config(ca)
    )
}

const MAIL: &str = r#"
id: mail-report
name: Mail the SOC with the report
on: { source: generic }
steps:
  - id: mail
    uses: email.send
    with:
      profile: soc
      subject: "Incident ${{ incident.id }}: ${{ alert.title }}"
      text: "Alert ${{ alert.title }} on ${{ alert.resource.id }}."
      html: "<p>Alert <b>${{ alert.title }}</b> on ${{ alert.resource.id }}.</p>"
      attach_report: true
"#;

/// Waits until `peer` has received `n` messages.
async fn received(peer: &SmtpPeer, n: usize) -> Vec<Value> {
    wait_until(
        Duration::from_secs(15),
        || format!("{n} messages (got {})", peer.messages().len()),
        async || peer.messages().len() >= n,
    )
    .await;
    peer.messages()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_reaches_the_smtp_server_with_both_bodies_and_the_report_attached() {
    let fake = FakePaging::start(GENIE_KEY).await;
    let peer = SmtpPeer::start(
        SmtpOptions {
            tls: "none",
            auth: None,
        },
        None,
    );
    let server = server(&fake, &email(&peer, None, ""), &[("mail", MAIL)]).await;
    let (alert_id, incident) = alert(&server, "Crypto miner", 8).await;
    let run = finished_run(&server, &alert_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = &run["steps"]["mail"]["output"];
    let mail = received(&peer, 1).await.remove(0);

    assert_eq!(mail["mail_from"], "cordon@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        json!(["soc@example.com", "oncall@example.com", "lead@example.com"])
    );
    let h = &mail["headers"];
    assert_eq!(h["From"], "Cordon <cordon@example.com>");
    assert_eq!(h["To"], "soc@example.com, oncall@example.com");
    assert_eq!(h["Cc"], "lead@example.com");
    assert_eq!(h["Subject"], format!("Incident {incident}: Crypto miner"));
    assert_eq!(h["Message-ID"], output["message_id"], "{output}");
    assert!(h["Message-ID"].as_str().unwrap().ends_with("@example.com>"));
    let date = chrono::DateTime::parse_from_rfc2822(h["Date"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - date.to_utc()).num_seconds().abs() < 60,
        "{date}"
    );
    assert_eq!(mail["content_type"], "multipart/mixed");

    let parts = mail["parts"].as_array().unwrap();
    let part = |t: &str| {
        parts
            .iter()
            .find(|p| p["content_type"] == t)
            .unwrap_or_else(|| panic!("no {t} part in {mail}"))
    };
    part("multipart/alternative");
    assert_eq!(
        part("text/plain")["content"].as_str().unwrap().trim(),
        "Alert Crypto miner on web-1."
    );
    assert_eq!(
        part("text/html")["content"].as_str().unwrap().trim(),
        "<p>Alert <b>Crypto miner</b> on web-1.</p>"
    );
    let report = part("text/markdown");
    assert_eq!(report["disposition"], "attachment");
    assert_eq!(report["filename"], format!("incident-{incident}.md"));
    assert_eq!(report["charset"], "utf-8");
    let content = report["content"].as_str().unwrap();
    // The report as `cordon incidents report` prints it, up to
    // the time it was rendered.
    let served = incident_report(&server, &incident).await;
    let first_line = |t: &str| t.lines().next().unwrap_or_default().to_owned();
    assert_eq!(first_line(content), first_line(&served));
    assert!(
        content.contains("Crypto miner") && content.contains("mail-report"),
        "{content}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth_and_implicit_tls_deliver_to_a_server_with_a_private_ca() {
    let fake = FakePaging::start(GENIE_KEY).await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::make(certs.path());
    for tls in ["starttls", "implicit"] {
        let peer = SmtpPeer::start(
            SmtpOptions {
                tls,
                auth: Some(("cordon".into(), SMTP_PASSWORD.into())),
            },
            Some(&ca),
        );
        let server = server(&fake, &email(&peer, Some(&ca), ""), &[("mail", MAIL)]).await;
        let (alert_id, _) = alert(&server, "Crypto miner", 8).await;
        assert_eq!(
            finished_run(&server, &alert_id).await["status"],
            "succeeded"
        );
        let mail = received(&peer, 1).await.remove(0);
        assert_eq!(
            mail["auth_login"], "cordon",
            "{tls}: AUTH with the configured user"
        );
        assert_eq!(mail["tls"], true, "{tls}");
        assert_eq!(mail["headers"]["To"], "soc@example.com, oncall@example.com");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_out_an_smtp_outage_and_goes_out_once() {
    let fake = FakePaging::start(GENIE_KEY).await;
    // The server is down when the incident opens.
    let mut peer = SmtpPeer::on(
        support::free_port(),
        SmtpOptions {
            tls: "none",
            auth: None,
        },
        None,
    );
    let notify = "  notify:\n    - { profile: soc, events: [opened], min_severity: 5 }\n";
    let server = server(&fake, &email(&peer, None, notify), &[]).await;
    let (_, incident) = alert(&server, "Crypto miner", 8).await;
    let outbox = server.state.outbox.clone();
    wait_until(
        Duration::from_secs(10),
        || "a failed try".to_owned(),
        async || {
            outbox
                .pending()
                .await
                .unwrap()
                .iter()
                .any(|e| e.target == "email" && e.attempts >= 2)
        },
    )
    .await;
    let waiting = outbox.pending().await.unwrap();
    let entry = waiting.iter().find(|e| e.target == "email").unwrap();
    assert!(!entry.dead, "an outage never sets mail aside");
    assert!(
        entry
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("SMTP"),
        "{:?}",
        entry.last_error
    );
    // A low-severity incident sends nothing (min_severity 5).
    alert(&server, "Port scan", 2).await;

    peer.listen();
    let mails = received(&peer, 1).await;
    wait_until(
        Duration::from_secs(10),
        || "the outbox to empty".to_owned(),
        async || outbox.pending().await.unwrap().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mails_after = peer.messages();
    assert_eq!(mails_after.len(), 1, "sent once: {mails_after:?}");
    let h = &mails[0]["headers"];
    assert_eq!(
        h["Subject"],
        "[Cordon] Incident opened: Crypto miner (severity 8)"
    );
    let text = mails[0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == "text/plain")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains(&incident), "{text}");
}

const LEAKY: &str = r#"
id: leaky
name: Every way a secret could leak
on: { source: generic }
steps:
  - id: unknown_service
    uses: pagerduty.trigger
    with: { summary: "x", severity: 9, service: nosuch }
    on_error: continue
  - id: paged
    uses: pagerduty.trigger
    with: { summary: "x", severity: 9 }
    on_error: continue
  - id: refused
    uses: opsgenie.create_alert
    with: { message: "x", severity: 9 }
    on_error: continue
  - id: mail
    uses: email.send
    with: { profile: soc, subject: "s", text: "t" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_routing_key_genie_key_or_smtp_password_reaches_a_log_an_output_or_an_error() {
    // Opsgenie knows another key than the one configured, and the SMTP server another password:
    // both refuse, and their refusals travel through errors, logs and the outbox.
    let fake = FakePaging::start("another-genie-key").await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::make(certs.path());
    let peer = SmtpPeer::start(
        SmtpOptions {
            tls: "starttls",
            auth: Some(("cordon".into(), "the-right-password".into())),
        },
        Some(&ca),
    );
    let config = email(&peer, Some(&ca), "").replace("the-right-password", SMTP_PASSWORD);
    let server = server(&fake, &config, &[("leaky", LEAKY)]).await;
    let (alert_id, incident) = alert(&server, "Crypto miner", 9).await;
    let run = finished_run(&server, &alert_id).await;
    let refused = run["steps"]["refused"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.contains("refused the API key"), "{run}");
    let outbox = server.state.outbox.clone();
    wait_until(
        Duration::from_secs(10),
        || "the refused login".to_owned(),
        async || {
            outbox.pending().await.unwrap().iter().any(|e| {
                e.target == "email" && e.last_error.as_deref().is_some_and(|m| m.contains("535"))
            })
        },
    )
    .await;
    assert!(peer.messages().is_empty());

    let mut seen = vec![run.to_string()];
    seen.push(
        server
            .admin(&format!("/v1/incidents/{incident}"))
            .await
            .to_string(),
    );
    seen.push(serde_json::to_string(&outbox.pending().await.unwrap()).unwrap());
    seen.push(incident_report(&server, &incident).await);
    seen.push(String::from_utf8_lossy(&logs().lock().unwrap()).into_owned());
    let seen = seen.join("\n");
    assert!(seen.contains("delivery failed"), "the logs were captured");
    for secret in [
        pd_key("default"),
        pd_key("payments"),
        GENIE_KEY.to_owned(),
        SMTP_PASSWORD.to_owned(),
    ] {
        assert!(!seen.contains(&secret), "`{secret}` leaked");
    }
    // The routing key did go where it belongs: in the body of the one accepted event.
    let pd = fake.pagerduty.lock().unwrap();
    assert_eq!(pd.events.len(), 1);
    assert_eq!(pd.events[0].0, pd_key("default"));
}
