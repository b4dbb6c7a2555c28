//! The `email:` section: the SMTP server, profiles (a sender and recipients), and the incident
//! events that send mail on their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, Diagnostic, HumanDuration, Secret};
use crate::playbook::position;

/// Email over SMTP (README, "Email").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The server mail goes through. Without it email is off, and `email.send` steps fail saying so.
    pub smtp: Option<SmtpConfig>,
    /// Who mail comes from and goes to, by profile name; `email.send` steps and `notify` rules
    /// name a profile.
    #[serde(default)]
    pub profiles: BTreeMap<String, EmailProfile>,
    /// Incident events that send mail with no playbook involved (a resolved incident's report to
    /// the SOC, say).
    #[serde(default)]
    pub notify: Vec<NotifyRule>,
}

/// How Cordon reaches the SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default by `tls`: 587 for `starttls`, 465 for `implicit`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls` (default: the session must upgrade, or nothing is sent), `implicit` (TLS from the
    /// first byte, "SMTPS") or `none` (plain text; loopback servers only when a password is set).
    #[serde(default)]
    pub tls: SmtpTls,
    /// For AUTH (PLAIN or LOGIN, whichever the server offers), always inside TLS.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A PEM file of extra certificate authorities to trust (a private CA), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The name Cordon gives in EHLO (default: this machine's host name).
    pub hello_name: Option<String>,
    /// How long one SMTP command may take (default `30s`).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        })
    }
}

/// How the SMTP session is encrypted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Implicit,
    None,
}

/// A sender and its recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailProfile {
    /// `Cordon <cordon@example.com>` or a bare address.
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub reply_to: Option<String>,
}

/// Mail sent on incident events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    pub profile: String,
    /// `opened`, `resolved` (with the incident report attached), `reopened`.
    pub events: Vec<NotifyEvent>,
    /// Only incidents of at least this severity (0-10; default every incident).
    #[serde(default)]
    pub min_severity: u8,
    /// The report's format when one is attached: `markdown` (default) or `html`.
    #[serde(default)]
    pub report: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Opened,
    Resolved,
    Reopened,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    #[default]
    Markdown,
    Html,
}

/// What serde cannot see: addresses that do not parse, profiles no one defined, a password sent
/// in plain text across a network. Each at its place in `text`.
pub fn check(config: &Config, text: &str, file: &Path) -> Vec<Diagnostic> {
    let email = &config.email;
    let Ok(tree) = position::index(text) else {
        return Vec::new();
    };
    let at = |path: &[&str], index: Option<usize>, message: String| {
        let pos = tree.pos_at(path, index);
        Diagnostic::new(file, pos.line, pos.column, message)
    };
    let mut problems = Vec::new();
    if let Some(smtp) = &email.smtp {
        if smtp.password.is_some() && smtp.username.is_none() {
            problems.push(at(
                &["email", "smtp", "password"],
                None,
                "email.smtp.password is set without a username".into(),
            ));
        }
        if smtp.tls == SmtpTls::None && smtp.password.is_some() && !is_loopback(&smtp.host) {
            problems.push(
                at(
                    &["email", "smtp", "tls"],
                    None,
                    format!(
                        "email.smtp: `tls: none` would send the password to {} in plain text",
                        smtp.host
                    ),
                )
                .with_hint("use `tls: starttls` or `tls: implicit` (plain text is for a relay on this machine)"),
            );
        }
    }
    for (name, profile) in &email.profiles {
        let base = ["email", "profiles", name.as_str()];
        let field = |f: &'static str| [base[0], base[1], base[2], f];
        if let Err(e) = profile.from.parse::<lettre::message::Mailbox>() {
            problems.push(at(
                &field("from"),
                None,
                format!(
                    "email.profiles.{name}.from: `{}` is not an address: {e}",
                    profile.from
                ),
            ));
        }
        if profile.to.is_empty() {
            problems.push(at(
                &base,
                None,
                format!("email.profiles.{name} has no `to` recipient"),
            ));
        }
        for (list, addresses) in [("to", &profile.to), ("cc", &profile.cc)] {
            for (i, address) in addresses.iter().enumerate() {
                if let Err(e) = address.parse::<lettre::message::Mailbox>() {
                    problems.push(at(
                        &field(list),
                        Some(i),
                        format!("email.profiles.{name}.{list}: `{address}` is not an address: {e}"),
                    ));
                }
            }
        }
        if let Some(reply_to) = &profile.reply_to
            && let Err(e) = reply_to.parse::<lettre::message::Mailbox>()
        {
            problems.push(at(
                &field("reply_to"),
                None,
                format!("email.profiles.{name}.reply_to: `{reply_to}` is not an address: {e}"),
            ));
        }
    }
    for (i, rule) in email.notify.iter().enumerate() {
        if !email.profiles.contains_key(&rule.profile) {
            let known: Vec<&str> = email.profiles.keys().map(String::as_str).collect();
            problems.push(
                at(
                    &["email", "notify"],
                    Some(i),
                    format!("email.notify: no profile `{}`", rule.profile),
                )
                .with_hint(if known.is_empty() {
                    "define it under email.profiles".to_owned()
                } else {
                    format!("profiles: {}", known.join(", "))
                }),
            );
        }
    }
    if (!email.profiles.is_empty() || !email.notify.is_empty()) && email.smtp.is_none() {
        problems.push(
            at(
                &["email"],
                None,
                "email: profiles are set but no `smtp` server".into(),
            )
            .with_hint("add email.smtp: { host, port, tls, username, password }"),
        );
    }
    problems
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
