//! The ServiceNow parts of the `tickets:` section: the connection (`tickets.servicenow`) and a
//! profile's `servicenow:` block.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Secret;
use crate::tickets::config::{Auth, WebhookAuth};

/// The ServiceNow connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// The instance, e.g. `https://example.service-now.com`.
    pub base_url: url::Url,
    /// A user with the roles in integrations/servicenow/README.md, with `password` (basic auth).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// An OAuth 2.0 access token, instead of `username` and `password`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// How the business rule's calls prove they come from the instance. Without it the webhook
    /// route answers 404.
    #[serde(default)]
    pub webhook: Option<WebhookAuth>,
    /// ServiceNow user names → Cordon identities. Users not listed act as `servicenow:<user>`.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

impl ServiceNowConfig {
    pub fn auth(&self) -> Result<Auth<'_>, String> {
        match (&self.username, &self.password, &self.bearer) {
            (Some(user), Some(password), None) => Ok(Auth::Basic(user, password)),
            (None, None, Some(bearer)) => Ok(Auth::Bearer(bearer)),
            _ => Err(
                "tickets.servicenow needs either `username` and `password`, or `bearer` (an OAuth 2.0 token)"
                    .to_owned(),
            ),
        }
    }
}

/// ServiceNow specifics of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowProfile {
    /// The assignment group's sys_id or name.
    #[serde(default)]
    pub assignment_group: Option<String>,
    /// The incident category (default `security`; empty leaves it unset).
    #[serde(default = "default_category")]
    pub category: String,
    /// `state` of a resolved incident (default `6`, Resolved).
    #[serde(default = "default_resolved_state")]
    pub resolved_state: String,
    /// `close_code` on resolution (default `Solution provided`).
    #[serde(default = "default_close_code")]
    pub close_code: String,
    /// `state` of a reopened incident (default `2`, In Progress).
    #[serde(default = "default_reopen_state")]
    pub reopen_state: String,
    /// More fields to set on create (`cmdb_ci`, `u_custom`...), string values may be templates.
    /// `urgency` and `impact` here override the ones Cordon derives from the severity.
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

fn default_category() -> String {
    "security".to_owned()
}

fn default_resolved_state() -> String {
    "6".to_owned()
}

fn default_close_code() -> String {
    "Solution provided".to_owned()
}

fn default_reopen_state() -> String {
    "2".to_owned()
}
