//! The `tickets:` config section: the connections to Jira Cloud and ServiceNow, and the ticket
//! profiles (what a ticket looks like and which events it follows), one default and one per playbook.
//!
//! Templates in profiles (`summary`, `description`, `labels`, `fields`) are `${{ expr }}` Rhai
//! templates reading `incident` and `alert` (the incident's first alert); they are compiled while
//! the config loads, so a syntax error is reported at its line like any other config error.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{HumanDuration, Secret};

pub use super::jira::config::{JiraConfig, JiraProfile};
pub use super::servicenow::config::{ServiceNowConfig, ServiceNowProfile};

/// The `tickets:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RawTicketsConfig")]
pub struct TicketsConfig {
    /// The Jira Cloud site Cordon files issues in, and its webhook's credentials.
    pub jira: Option<JiraConfig>,
    /// The ServiceNow instance Cordon files incidents in, and its webhook's credentials.
    pub servicenow: Option<ServiceNowConfig>,
    /// Backoff of the outbox's retries (it delivers ticket and chat updates alike).
    pub retry: RetryConfig,
    /// The profile for incidents whose playbook has none of its own. Without it, only incidents
    /// touched by a playbook listed in `playbooks` get tickets.
    pub default: Option<TicketProfile>,
    /// Profiles by playbook id, used instead of `default` for incidents a listed playbook runs on.
    pub playbooks: BTreeMap<String, TicketProfile>,
    /// At most one comment (work note) per ticket this often (default `10s`; see
    /// [`TicketsConfig::comment_interval`]).
    pub comment_interval: Option<HumanDuration>,
}

/// `tickets.comment_interval` when the config does not say.
pub const DEFAULT_COMMENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest `tickets.comment_interval`: longer would keep a ticket hours behind its incident.
const MAX_COMMENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTicketsConfig {
    #[serde(default)]
    jira: Option<JiraConfig>,
    #[serde(default)]
    servicenow: Option<ServiceNowConfig>,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    default: Option<TicketProfile>,
    #[serde(default)]
    playbooks: BTreeMap<String, TicketProfile>,
    #[serde(default)]
    comment_interval: Option<HumanDuration>,
}

impl TryFrom<RawTicketsConfig> for TicketsConfig {
    type Error = String;

    fn try_from(raw: RawTicketsConfig) -> Result<TicketsConfig, String> {
        let profiles = raw
            .default
            .iter()
            .map(|p| ("tickets.default".to_owned(), p))
            .chain(
                raw.playbooks
                    .iter()
                    .map(|(id, p)| (format!("tickets.playbooks.{id}"), p)),
            );
        for (name, profile) in profiles {
            if profile.jira.is_none() && profile.servicenow.is_none() {
                return Err(format!(
                    "{name} names no system: add a `jira:` or `servicenow:` block (or both)"
                ));
            }
            if profile.jira.is_some() && raw.jira.is_none() {
                return Err(format!(
                    "{name} files Jira issues, but the Jira connection `tickets.jira` is not set"
                ));
            }
            if profile.servicenow.is_some() && raw.servicenow.is_none() {
                return Err(format!(
                    "{name} files ServiceNow incidents, but the connection `tickets.servicenow` is not set"
                ));
            }
        }
        if let Some(jira) = &raw.jira {
            jira.auth()?;
        }
        if let Some(servicenow) = &raw.servicenow {
            servicenow.auth()?;
        }
        if raw.retry.base.0.is_zero() || raw.retry.max.0 < raw.retry.base.0 {
            return Err(
                "tickets.retry: `base` must be above zero and `max` at least `base`".to_owned(),
            );
        }
        if raw
            .comment_interval
            .is_some_and(|i| i.0 > MAX_COMMENT_INTERVAL)
        {
            return Err("tickets.comment_interval: at most `1h`".to_owned());
        }
        Ok(TicketsConfig {
            jira: raw.jira,
            servicenow: raw.servicenow,
            retry: raw.retry,
            default: raw.default,
            playbooks: raw.playbooks,
            comment_interval: raw.comment_interval,
        })
    }
}

impl TicketsConfig {
    /// How often a ticket gets a comment (a work note) at most (`tickets.comment_interval`,
    /// default 10 s). What happens in between waits and goes into the next one, opening with a
    /// tally ("12 more alerts from 3 sources, 2 steps finished") and listing every event, so a
    /// storm of alerts is a few comments per ticket rather than one per alert. The ticket's
    /// creation, transitions and attachments are not held back. `0s` turns this off: a comment
    /// per event, as they come.
    pub fn comment_interval(&self) -> std::time::Duration {
        self.comment_interval
            .map_or(DEFAULT_COMMENT_INTERVAL, |interval| interval.0)
    }

    /// The profile for events of `playbook` (`None` for events outside a run).
    pub fn profile_for(&self, playbook: Option<&str>) -> Option<(&str, &TicketProfile)> {
        if let Some(id) = playbook
            && let Some((id, profile)) = self.playbooks.get_key_value(id)
        {
            return Some((id.as_str(), profile));
        }
        self.default.as_ref().map(|p| ("default", p))
    }

    /// A profile by the name [`TicketsConfig::profile_for`] gave.
    pub fn profile(&self, name: &str) -> Option<&TicketProfile> {
        match name {
            "default" => self.default.as_ref(),
            id => self.playbooks.get(id),
        }
    }

    /// Every secret in the section (for the warning about local defaults).
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out = Vec::new();
        if let Some(j) = &self.jira {
            out.extend(j.api_token.iter().chain(&j.bearer));
            out.extend(j.webhook.iter().flat_map(|w| w.secrets()));
        }
        if let Some(s) = &self.servicenow {
            out.extend(s.password.iter().chain(&s.bearer));
            out.extend(s.webhook.iter().flat_map(|w| w.secrets()));
        }
        out
    }
}

/// The outbox's retry backoff: the first retry waits `base`, each next one twice as long, up to
/// `max`. A `Retry-After` from the other side wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First retry delay (default `1s`).
    #[serde(default = "default_retry_base")]
    pub base: HumanDuration,
    /// Longest delay between two tries (default `5m`).
    #[serde(default = "default_retry_max")]
    pub max: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: default_retry_base(),
            max: default_retry_max(),
        }
    }
}

fn default_retry_base() -> HumanDuration {
    HumanDuration::secs(1)
}

fn default_retry_max() -> HumanDuration {
    HumanDuration::secs(300)
}

/// How Cordon authenticates to a ticket system.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// HTTP basic: a user (Jira: the account's email) and a secret (Jira: an API token).
    Basic(&'a str, &'a Secret),
    /// An OAuth 2.0 access token.
    Bearer(&'a Secret),
}

/// How an inbound ticket webhook is authenticated: an `hmac_secret` (an HMAC-SHA256 of the raw
/// body in `X-Hub-Signature: sha256=<hex>`, which is how Jira signs webhooks that have a secret;
/// for ServiceNow, in `X-Cordon-Signature` as hex or base64), or a shared `token` (sent as
/// `?token=`, `Authorization: Bearer`, or `X-Cordon-Token`). Exactly one of them.
///
/// Only a signature proves what the body says, so only a signed webhook may decide approvals (as
/// the user the platform names in the body); a token-authenticated call may still move the
/// incident's status, which is then recorded as done by the ticket system, not by a person.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawWebhookAuth")]
pub enum WebhookAuth {
    Token(Secret),
    Hmac {
        secret: Secret,
        /// How far the call's signed timestamp may be from now.
        max_age: std::time::Duration,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhookAuth {
    /// A shared token; the body it comes with is not signed (decisions are refused).
    #[serde(default)]
    token: Option<Secret>,
    /// The secret the platform signs each call's body with (recommended).
    #[serde(default)]
    hmac_secret: Option<Secret>,
    /// With `hmac_secret`: how old (or how far ahead) a call's signed timestamp (Jira's
    /// `timestamp`, the business rule's `sent_at`) may be; older calls are refused as replays
    /// (default `1h`).
    #[serde(default)]
    max_age: Option<HumanDuration>,
}

/// The default of `max_age`: long enough for a ticket system's retries after a short outage.
pub const DEFAULT_WEBHOOK_MAX_AGE: HumanDuration = HumanDuration::secs(3600);

impl TryFrom<RawWebhookAuth> for WebhookAuth {
    type Error = String;

    fn try_from(raw: RawWebhookAuth) -> Result<WebhookAuth, String> {
        match (raw.token, raw.hmac_secret, raw.max_age) {
            (Some(_), None, Some(_)) => Err(
                "webhook: `max_age` needs `hmac_secret` (a token-authenticated body carries no signed time)"
                    .to_owned(),
            ),
            (Some(t), None, None) => Ok(WebhookAuth::Token(t)),
            (None, Some(secret), max_age) => {
                let max_age = max_age.unwrap_or(DEFAULT_WEBHOOK_MAX_AGE).0;
                if max_age.is_zero() {
                    return Err("webhook: `max_age` must be above zero".to_owned());
                }
                Ok(WebhookAuth::Hmac { secret, max_age })
            }
            _ => Err("webhook takes exactly one of `token`, `hmac_secret`".to_owned()),
        }
    }
}

impl WebhookAuth {
    fn secrets(&self) -> Vec<&Secret> {
        match self {
            WebhookAuth::Token(s) | WebhookAuth::Hmac { secret: s, .. } => vec![s],
        }
    }
}

/// Events a ticket can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncEvent {
    /// File the ticket as soon as the incident opens (else: at its first synced event).
    Created,
    /// A new alert joined the incident.
    AlertAdded,
    /// A playbook step finished (succeeded or failed).
    StepFinished,
    ApprovalRequested,
    /// A decision on an approval, and approvals that timed out.
    ApprovalDecided,
    EvidenceAdded,
    /// A person reversed a containment step.
    ActionUndone,
    /// A run ended (succeeded, failed, cancelled).
    RunFinished,
    /// The incident was resolved: a note, the done transition, and the incident report attached.
    Resolved,
    Reopened,
}

impl SyncEvent {
    pub const ALL: [SyncEvent; 10] = [
        SyncEvent::Created,
        SyncEvent::AlertAdded,
        SyncEvent::StepFinished,
        SyncEvent::ApprovalRequested,
        SyncEvent::ApprovalDecided,
        SyncEvent::EvidenceAdded,
        SyncEvent::ActionUndone,
        SyncEvent::RunFinished,
        SyncEvent::Resolved,
        SyncEvent::Reopened,
    ];
}

/// What a ticket looks like and what it follows. A profile files in every system it has a block
/// for (`jira`, `servicenow`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawProfile")]
pub struct TicketProfile {
    /// The ticket's title (template; default `[Cordon] ${{ incident.title }}`).
    pub summary: String,
    /// The ticket's description (template; lines become paragraphs).
    pub description: String,
    /// Labels (Jira) — templates; `cordon-<incident id>` is always added, as Cordon finds its
    /// issue by it.
    pub labels: Vec<String>,
    /// Which events become comments / work notes (default: all).
    pub events: Vec<SyncEvent>,
    pub jira: Option<JiraProfile>,
    pub servicenow: Option<ServiceNowProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default = "default_summary")]
    summary: String,
    #[serde(default = "default_description")]
    description: String,
    #[serde(default = "default_labels")]
    labels: Vec<String>,
    #[serde(default = "default_events")]
    events: Vec<SyncEvent>,
    #[serde(default)]
    jira: Option<JiraProfile>,
    #[serde(default)]
    servicenow: Option<ServiceNowProfile>,
}

impl TryFrom<RawProfile> for TicketProfile {
    type Error = String;

    fn try_from(raw: RawProfile) -> Result<TicketProfile, String> {
        let scripts = crate::script::Scripts::default();
        let check = |what: &str, text: &str| {
            crate::script::Template::compile(&scripts, text, &[])
                .map(|_| ())
                .map_err(|e| format!("{what}: {e}"))
        };
        check("summary", &raw.summary)?;
        check("description", &raw.description)?;
        for label in &raw.labels {
            check("labels", label)?;
        }
        let fields = [
            ("jira.fields", raw.jira.as_ref().map(|j| &j.fields)),
            (
                "servicenow.fields",
                raw.servicenow.as_ref().map(|s| &s.fields),
            ),
        ];
        for (what, fields) in fields {
            for (name, value) in fields.into_iter().flatten() {
                crate::script::CompiledValue::compile(&scripts, value, &[])
                    .map_err(|e| format!("{what}.{name}: {}", e.error))?;
            }
        }
        Ok(TicketProfile {
            summary: raw.summary,
            description: raw.description,
            labels: raw.labels,
            events: raw.events,
            jira: raw.jira,
            servicenow: raw.servicenow,
        })
    }
}

fn default_summary() -> String {
    "[Cordon] ${{ incident.title }}".to_owned()
}

fn default_description() -> String {
    "Cordon opened incident ${{ incident.id }}: ${{ incident.title }}\nSeverity ${{ incident.severity }}/10 from ${{ alert.source }}; entity: ${{ incident.entity }}\nFirst alert: ${{ alert.title }}".to_owned()
}

fn default_labels() -> Vec<String> {
    vec!["cordon".to_owned()]
}

fn default_events() -> Vec<SyncEvent> {
    SyncEvent::ALL.to_vec()
}

/// Names by severity band: `critical` (9–10), `high` (7–8), `medium` (4–6), `low` (0–3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityNames {
    pub critical: String,
    pub high: String,
    pub medium: String,
    pub low: String,
}

impl SeverityNames {
    pub fn for_severity(&self, severity: u8) -> &str {
        match severity {
            9.. => &self.critical,
            7..=8 => &self.high,
            4..=6 => &self.medium,
            _ => &self.low,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TicketsConfig, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_profile_with_defaults_and_an_override() {
        let config = parse(
            "jira: { base_url: https://example.atlassian.net, email: bot@example.com, api_token: t }\ndefault:\n  jira: { project: SEC }\nplaybooks:\n  aws-ec2-compromise:\n    summary: \"EC2 ${{ alert.resource.id }}\"\n    events: [created, resolved]\n    jira: { project: CLOUD, issue_type: Incident, priorities: null }\n",
        )
        .unwrap();
        let (name, profile) = config.profile_for(Some("aws-ec2-compromise")).unwrap();
        assert_eq!(name, "aws-ec2-compromise");
        assert_eq!(profile.events, [SyncEvent::Created, SyncEvent::Resolved]);
        assert!(profile.jira.as_ref().unwrap().priorities.is_none());
        let (name, profile) = config.profile_for(Some("other")).unwrap();
        assert_eq!(name, "default");
        assert_eq!(profile.events.len(), SyncEvent::ALL.len());
        let jira = profile.jira.as_ref().unwrap();
        assert_eq!(jira.issue_type, "Task");
        assert_eq!(jira.priorities.as_ref().unwrap().for_severity(9), "Highest");
        assert_eq!(config.retry.base.0.as_secs(), 1);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let no_connection = parse("default:\n  jira: { project: SEC }\n").unwrap_err();
        assert!(
            no_connection.contains("`tickets.jira` is not set"),
            "{no_connection}"
        );
        let no_system = parse("default: { summary: x }\n").unwrap_err();
        assert!(no_system.contains("names no system"), "{no_system}");
        let two_auths = parse(
            "jira: { base_url: https://x.atlassian.net, email: a@b.c, api_token: t, bearer: b }\n",
        )
        .unwrap_err();
        assert!(two_auths.contains("either"), "{two_auths}");
        let bad_template = parse(
            "servicenow: { base_url: https://x.service-now.com, bearer: b }\ndefault:\n  summary: \"${{ incident.title + }}\"\n  servicenow: {}\n",
        )
        .unwrap_err();
        assert!(bad_template.contains("summary"), "{bad_template}");
        let webhook = parse(
            "servicenow: { base_url: https://x.service-now.com, bearer: b, webhook: { token: a, hmac_secret: b } }\n",
        )
        .unwrap_err();
        assert!(webhook.contains("exactly one"), "{webhook}");
        let window = parse(
            "servicenow: { base_url: https://x.service-now.com, bearer: b, webhook: { token: a, max_age: 5m } }\n",
        )
        .unwrap_err();
        assert!(window.contains("needs `hmac_secret`"), "{window}");
        let signed = parse(
            "servicenow: { base_url: https://x.service-now.com, bearer: b, webhook: { hmac_secret: s } }\n",
        )
        .unwrap();
        let auth = signed.servicenow.unwrap().webhook.unwrap();
        assert!(
            matches!(auth, WebhookAuth::Hmac { max_age, .. } if max_age == DEFAULT_WEBHOOK_MAX_AGE.0)
        );
    }
}
