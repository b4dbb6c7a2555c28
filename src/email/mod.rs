//! Email over SMTP, through the durable outbox: a mail is recorded before it is sent, and the
//! outbox worker hands it to the SMTP server with retries, so an outage of the server delays mail
//! and loses none (README, "Email").
//!
//! Mail comes from two places: `email.send` steps in playbooks ([`Mail::queue_for_step`], through
//! the built-in actions' [`crate::actions::builtin::Mailer`]), and incident events the config's
//! `email.notify` rules name ([`EmailWatcher`]). Each outbox entry holds the whole message as
//! written (sender, recipients, subject, both bodies, its `Message-ID`); only the incident report
//! is rendered when the mail goes out, so it tells everything up to then. The [`SmtpDeliverer`]
//! builds the MIME message (multipart/alternative text and HTML, and the report as an attachment
//! in multipart/mixed) and sends it over STARTTLS, implicit TLS or plain SMTP, with AUTH when
//! the config has a username.
//!
//! A mail's `Message-ID` is fixed when it is queued (from the step's idempotency key, or the
//! event), so a repeat after a crash between "sent" and "recorded as sent" carries the same id,
//! which mail systems use to drop duplicates.

pub mod config;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use config::{EmailConfig, EmailProfile, NotifyEvent, ReportFormat, SmtpConfig, SmtpTls};

use crate::actions::{ActionCall, ActionError};
use crate::config::Secret;
use crate::engine::watch::{IncidentEvent, Watcher};
use crate::model::event::EventKind;
use crate::outbox::{Deliver, DeliveryError, Failure, Outbox, OutboxEntry};
use crate::store::Store;

/// The outbox target of mail.
pub const TARGET: &str = "email";
/// The one kind of entry: send this message.
const KIND: &str = "send";

/// One message, as queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub profile: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: String,
    /// The HTML part; when absent, the text in a `<pre>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The incident the mail is about (its report is attached when `report` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportFormat>,
    /// `<...@domain>`, fixed when queued.
    pub message_id: String,
    pub written_at: DateTime<Utc>,
}

impl Mail {
    /// A mail to `profile`'s recipients; `seed` makes its Message-ID (the same seed, the same id).
    pub fn new(
        config: &EmailConfig,
        profile: &str,
        subject: &str,
        text: &str,
        seed: &str,
    ) -> Result<Mail, String> {
        let p = config.profiles.get(profile).ok_or_else(|| {
            let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("no email profile `{profile}`: the config has none (email.profiles)")
            } else {
                format!(
                    "no email profile `{profile}` (email.profiles has {})",
                    known.join(", ")
                )
            }
        })?;
        let domain = p
            .from
            .parse::<Mailbox>()
            .map(|m| m.email.domain().to_owned())
            .unwrap_or_else(|_| "cordon.invalid".to_owned());
        let digest = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
        Ok(Mail {
            profile: profile.to_owned(),
            from: p.from.clone(),
            to: p.to.clone(),
            cc: p.cc.clone(),
            reply_to: p.reply_to.clone(),
            subject: one_line(subject),
            text: text.to_owned(),
            html: None,
            incident: None,
            report: None,
            message_id: format!("<cordon.{digest}@{domain}>"),
            written_at: Utc::now(),
        })
    }

    /// The outbox entry: mail about one incident goes out in the order it was written.
    pub fn entry(&self) -> OutboxEntry {
        let key = self
            .incident
            .clone()
            .unwrap_or_else(|| format!("profile:{}", self.profile));
        OutboxEntry::new(
            TARGET,
            &key,
            KIND,
            serde_json::to_value(self).unwrap_or(Value::Null),
        )
    }

    /// The MIME message: text and HTML as alternatives, the report (if any) attached.
    fn message(
        &self,
        report: Option<(String, Vec<u8>, &'static str)>,
    ) -> Result<lettre::Message, String> {
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| format!("`{text}` is not an address: {e}"))
        };
        let mut builder = lettre::Message::builder()
            .from(mailbox(&self.from)?)
            .subject(self.subject.clone())
            .date(SystemTime::from(self.written_at))
            .message_id(Some(self.message_id.clone()));
        for to in &self.to {
            builder = builder.to(mailbox(to)?);
        }
        for cc in &self.cc {
            builder = builder.cc(mailbox(cc)?);
        }
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(mailbox(reply_to)?);
        }
        let html = self
            .html
            .clone()
            .unwrap_or_else(|| html_of_text(&self.text));
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::plain(self.text.clone()))
            .singlepart(SinglePart::html(html));
        let body = match report {
            None => alternative,
            Some((name, bytes, content_type)) => {
                let content_type = ContentType::parse(content_type).map_err(|e| e.to_string())?;
                MultiPart::mixed()
                    .multipart(alternative)
                    .singlepart(Attachment::new(name).body(bytes, content_type))
            }
        };
        builder.multipart(body).map_err(|e| e.to_string())
    }
}

/// A header value on one line (a template may render line breaks).
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Plain text as HTML: escaped, its line breaks kept.
fn html_of_text(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    format!(
        "<!DOCTYPE html>\n<html><body><pre style=\"font-family: sans-serif; white-space: pre-wrap\">{escaped}</pre></body></html>\n"
    )
}

/// Queues mail for `email.send` steps (the built-in actions' [`crate::actions::builtin::Mailer`]).
pub struct StepMailer {
    config: Arc<EmailConfig>,
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
}

/// Where a step's mail is recorded as queued, by idempotency key: a retried step does not queue
/// it twice.
const NS_QUEUED: &str = "email.queued";

#[async_trait]
impl crate::actions::builtin::Mailer for StepMailer {
    async fn send(&self, inputs: &Value, call: &ActionCall) -> Result<Value, ActionError> {
        let text = |name: &str| inputs.get(name).and_then(Value::as_str);
        let required = |name: &str| {
            text(name)
                .ok_or_else(|| ActionError::permanent(format!("input `{name}` must be a string")))
        };
        let mut mail = Mail::new(
            &self.config,
            required("profile")?,
            required("subject")?,
            required("text")?,
            &call.idempotency_key,
        )
        .map_err(ActionError::permanent)?;
        mail.html = text("html").map(str::to_owned);
        mail.incident = call.incident_id.clone();
        let attach = inputs.get("attach_report").and_then(Value::as_bool) == Some(true);
        if attach {
            if mail.incident.is_none() {
                return Err(ActionError::permanent(
                    "attach_report: this run has no incident to report on",
                ));
            }
            mail.report = Some(match text("report_format") {
                Some("html") => ReportFormat::Html,
                _ => ReportFormat::Markdown,
            });
        }
        let output = json!({
            "profile": mail.profile,
            "to": mail.to,
            "cc": mail.cc,
            "subject": mail.subject,
            "message_id": mail.message_id,
            "report_attached": mail.report.is_some(),
        });
        let queued = |e: crate::store::StoreError| {
            ActionError::retryable(format!("could not queue the mail: {e}"))
        };
        if self
            .store
            .meta_get(NS_QUEUED, &call.idempotency_key)
            .await
            .map_err(queued)?
            .is_some()
        {
            return Ok(output);
        }
        self.outbox.push(vec![mail.entry()]).await.map_err(queued)?;
        self.store
            .meta_put(NS_QUEUED, &call.idempotency_key, json!(mail.message_id))
            .await
            .map_err(queued)?;
        Ok(output)
    }
}

/// Sends mail on the incident events `email.notify` names.
pub struct EmailWatcher {
    config: Arc<EmailConfig>,
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Watcher for EmailWatcher {
    async fn incident_events(&self, events: &[IncidentEvent]) {
        for event in events {
            let which = match event.kind {
                EventKind::IncidentOpened => NotifyEvent::Opened,
                EventKind::IncidentResolved => NotifyEvent::Resolved,
                EventKind::IncidentReopened => NotifyEvent::Reopened,
                _ => continue,
            };
            if let Err(e) = self.notify(event, which).await {
                tracing::error!(incident = %event.incident_id, kind = %event.kind, error = %e, "cannot queue the email notification");
            }
        }
    }
}

impl EmailWatcher {
    async fn notify(&self, event: &IncidentEvent, which: NotifyEvent) -> Result<(), String> {
        let rules: Vec<_> = self
            .config
            .notify
            .iter()
            .filter(|r| r.events.contains(&which))
            .collect();
        if rules.is_empty() {
            return Ok(());
        }
        let incident = self
            .store
            .incident(&event.incident_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no incident `{}`", event.incident_id))?;
        let (verb, report) = match which {
            NotifyEvent::Opened => ("opened", false),
            NotifyEvent::Resolved => ("resolved", true),
            NotifyEvent::Reopened => ("reopened", false),
        };
        let mut entries = Vec::new();
        for rule in rules {
            if incident.severity < rule.min_severity {
                continue;
            }
            let subject = format!(
                "[Cordon] Incident {verb}: {} (severity {})",
                incident.title, incident.severity
            );
            let mut text = format!(
                "Incident {} was {verb}{}.\n\nTitle: {}\nSeverity: {}\nSources: {}\nAlerts: {}\nOpened: {}\n",
                incident.id,
                event
                    .actor
                    .as_deref()
                    .map(|a| format!(" by {a}"))
                    .unwrap_or_default(),
                incident.title,
                incident.severity,
                incident.sources.join(", "),
                incident.alert_count,
                incident.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            );
            if report {
                text.push_str("\nThe incident report is attached.\n");
            }
            text.push_str(&format!(
                "\nFull report: cordon incidents report {}\n",
                incident.id
            ));
            let seed = format!(
                "{}:{}:{}:{}",
                event.incident_id,
                event.kind,
                event.at.to_rfc3339(),
                rule.profile
            );
            let mut mail = Mail::new(&self.config, &rule.profile, &subject, &text, &seed)?;
            mail.incident = Some(incident.id.clone());
            mail.report = report.then_some(rule.report);
            entries.push(mail.entry());
        }
        self.outbox.push(entries).await.map_err(|e| e.to_string())
    }
}

/// Sends queued mail to the SMTP server.
pub struct SmtpDeliverer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    store: Arc<dyn Store>,
    /// Blanked out of every error, should a server repeat it.
    password: Option<Secret>,
}

impl SmtpDeliverer {
    /// The deliverer of `smtp`; an error when its CA file cannot be read or TLS cannot be set up.
    pub fn new(smtp: &SmtpConfig, store: Arc<dyn Store>) -> Result<SmtpDeliverer, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port())
            .timeout(Some(smtp.timeout.0));
        if smtp.tls != SmtpTls::None {
            let mut params = TlsParameters::builder(smtp.host.clone());
            if let Some(file) = &smtp.ca_file {
                let pem = std::fs::read(file).map_err(|e| {
                    format!("email.smtp.ca_file: cannot read {}: {e}", file.display())
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    format!(
                        "email.smtp.ca_file: {} is not a PEM certificate: {e}",
                        file.display()
                    )
                })?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("email.smtp: cannot set up TLS: {e}"))?;
            builder = builder.tls(match smtp.tls {
                // Required, not opportunistic: a server (or someone in between) that does not
                // offer STARTTLS gets nothing, rather than the mail and the password in clear.
                SmtpTls::Starttls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            });
        }
        if let Some(name) = &smtp.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        if let (Some(username), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_owned(),
            ));
        }
        Ok(SmtpDeliverer {
            transport: builder.build(),
            store,
            password: smtp.password.clone(),
        })
    }

    /// What went wrong, for the outbox: refused credentials wait for an operator, a 4xx and
    /// anything on the way (connection, TLS, timeout) is tried again, a 5xx about the message
    /// itself sets it aside.
    fn failure(&self, error: &lettre::transport::smtp::Error) -> DeliveryError {
        let mut message = format!("the SMTP server: {error}");
        if let Some(password) = &self.password
            && !password.expose().is_empty()
        {
            message = message.replace(password.expose(), "**redacted**");
        }
        let code = error.status().map(|c| c.to_string());
        let failure = match code.as_deref() {
            // 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
            // 454 temporary authentication failure.
            Some("530" | "534" | "535" | "454") => Failure::Auth,
            _ if error.is_permanent() => Failure::Permanent,
            _ => Failure::Retryable,
        };
        DeliveryError::new(failure, message)
    }
}

#[async_trait]
impl Deliver for SmtpDeliverer {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let mail: Mail = serde_json::from_value(entry.payload.clone())
            .map_err(|e| DeliveryError::permanent(format!("not a queued mail: {e}")))?;
        let report = match (&mail.report, &mail.incident) {
            (Some(format), Some(incident)) => {
                Some(report_file(&*self.store, incident, *format).await?)
            }
            _ => None,
        };
        let message = mail
            .message(report)
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| self.failure(&e))
    }
}

/// The report as `cordon incidents report` prints it, as an attachment: name, bytes, type.
async fn report_file(
    store: &dyn Store,
    incident: &str,
    format: ReportFormat,
) -> Result<(String, Vec<u8>, &'static str), DeliveryError> {
    let report = crate::tickets::report::Report::gather(store, incident)
        .await
        .map_err(|e| DeliveryError::retry(format!("cannot read the incident report: {e}")))?
        .ok_or_else(|| {
            DeliveryError::permanent(format!("no incident `{incident}` to report on"))
        })?;
    Ok(match format {
        ReportFormat::Markdown => (
            format!("incident-{incident}.md"),
            report.markdown().into_bytes(),
            "text/markdown; charset=utf-8",
        ),
        ReportFormat::Html => (
            format!("incident-{incident}.html"),
            report.html().into_bytes(),
            "text/html; charset=utf-8",
        ),
    })
}

/// The mailer `email.send` steps use, when the config has an SMTP server.
pub fn mailer(
    config: &EmailConfig,
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
) -> Option<Arc<dyn crate::actions::builtin::Mailer>> {
    config.smtp.as_ref()?;
    Some(Arc::new(StepMailer {
        config: Arc::new(config.clone()),
        outbox,
        store,
    }))
}

/// Registers the SMTP deliverer with the outbox and the notification watcher with the engine.
/// A deliverer that cannot be built is logged: mail waits in the outbox until a restart with a
/// working config.
pub fn start(
    config: &EmailConfig,
    store: Arc<dyn Store>,
    outbox: Arc<Outbox>,
    engine: &crate::engine::Engine,
) {
    let Some(smtp) = &config.smtp else { return };
    match SmtpDeliverer::new(smtp, store.clone()) {
        Ok(deliverer) => outbox.register(TARGET, Arc::new(deliverer)),
        Err(e) => tracing::error!(error = %e, "email cannot be sent; mail waits in the outbox"),
    }
    if !config.notify.is_empty() {
        engine.add_watcher(Arc::new(EmailWatcher {
            config: Arc::new(config.clone()),
            outbox,
            store,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        serde_yaml::from_str(
            "smtp: { host: mail.example.com }\nprofiles:\n  soc: { from: \"Cordon <cordon@example.com>\", to: [soc@example.com], cc: [lead@example.com] }\n",
        )
        .unwrap()
    }

    #[test]
    fn a_mail_has_both_parts_the_report_attached_and_a_message_id_fixed_by_its_seed() {
        let config = config();
        let mut mail = Mail::new(&config, "soc", "Incident\nopened", "a < b", "run:step").unwrap();
        let again = Mail::new(&config, "soc", "x", "y", "run:step").unwrap();
        assert_eq!(mail.message_id, again.message_id);
        assert!(
            mail.message_id.ends_with("@example.com>"),
            "{}",
            mail.message_id
        );
        assert_eq!(mail.subject, "Incident opened", "one header line");
        mail.incident = Some("inc-1".into());
        let text = mail
            .message(Some((
                "incident-inc-1.md".into(),
                b"# Report".to_vec(),
                "text/markdown; charset=utf-8",
            )))
            .unwrap()
            .formatted();
        let text = String::from_utf8_lossy(&text);
        for needle in [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "filename=\"incident-inc-1.md\"",
            "Cc: lead@example.com",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn text_without_html_is_escaped_into_the_html_part() {
        let html = html_of_text("<script>alert(1)</script> & \"x\"");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn an_unknown_profile_names_the_profiles_there_are() {
        let error = Mail::new(&config(), "noc", "s", "t", "k").unwrap_err();
        assert!(error.contains("`noc`") && error.contains("soc"), "{error}");
    }
}
