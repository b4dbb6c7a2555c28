//! The Jira parts of the `tickets:` section: the connection (`tickets.jira`) and a profile's
//! `jira:` block.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Secret;
use crate::tickets::config::{Auth, SeverityNames, WebhookAuth};

/// The Jira Cloud connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// The site, e.g. `https://example.atlassian.net` (or, for OAuth 2.0 apps,
    /// `https://api.atlassian.com/ex/jira/<cloud id>`).
    pub base_url: url::Url,
    /// The account's email, with `api_token` (basic auth).
    #[serde(default)]
    pub email: Option<String>,
    /// An API token of the account in `email`.
    #[serde(default)]
    pub api_token: Option<Secret>,
    /// An OAuth 2.0 access token, instead of `email` and `api_token`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// How Jira's webhook calls prove they come from Jira. Without it the webhook route answers
    /// 404.
    #[serde(default)]
    pub webhook: Option<WebhookAuth>,
    /// Jira account ids → Cordon identities (`cli:alice`), for approvals by comment and for who
    /// resolved an incident. Accounts not listed act as `jira:<account id>`.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

impl JiraConfig {
    pub fn auth(&self) -> Result<Auth<'_>, String> {
        match (&self.email, &self.api_token, &self.bearer) {
            (Some(email), Some(token), None) => Ok(Auth::Basic(email, token)),
            (None, None, Some(bearer)) => Ok(Auth::Bearer(bearer)),
            _ => Err(
                "tickets.jira needs either `email` and `api_token`, or `bearer` (an OAuth 2.0 token)"
                    .to_owned(),
            ),
        }
    }
}

/// Jira specifics of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraProfile {
    /// The project key issues are filed in (`SEC`).
    pub project: String,
    /// The issue type's name (default `Task`).
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// Jira priority names by severity (default Highest / High / Medium / Low); `null` sets no
    /// priority (for projects whose create screen has none).
    #[serde(default = "default_priorities")]
    pub priorities: Option<SeverityNames>,
    /// The status a resolved incident moves its issue to (matched by name, case-insensitively);
    /// default: the first available transition to a status in the Done category.
    #[serde(default)]
    pub done_status: Option<String>,
    /// The status a reopened incident moves its issue back to; unset: the issue stays where it is.
    #[serde(default)]
    pub reopen_status: Option<String>,
    /// More fields to set on create, by field id (`customfield_10010`); string values may be
    /// templates, and a value that is exactly one template keeps its type (a map, a list).
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

fn default_issue_type() -> String {
    "Task".to_owned()
}

fn default_priorities() -> Option<SeverityNames> {
    Some(SeverityNames {
        critical: "Highest".to_owned(),
        high: "High".to_owned(),
        medium: "Medium".to_owned(),
        low: "Low".to_owned(),
    })
}
