//! The `chat.teams` config section.

use serde::Deserialize;

use super::graph;
use crate::config::Secret;

/// The `chat.teams` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The bot's Microsoft App ID: the client id of its Entra app registration. Inbound tokens
    /// must name it as their audience.
    pub app_id: String,
    /// The app registration's client secret, for the Connector API token.
    pub app_password: Secret,
    /// The Entra tenant (directory) id. When set, activities from other tenants are refused, and
    /// tokens come from the tenant's endpoint (single-tenant bots; required for Entra groups).
    /// Unset: the tenant of the first team the bot is installed in is the only one whose installs
    /// move the cards.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Where cards are posted: a channel's conversation id (`19:…@thread.tacv2`). Unset: the team
    /// channel of the bot's tenant the bot was last installed in (remembered when Teams tells the
    /// bot; personal and group chats and other tenants never move the cards).
    #[serde(default)]
    pub channel_id: Option<String>,
    /// The Connector service URL to post to before Teams has told the bot its own (it does when the
    /// bot is installed, `https://smba.trafficmanager.net/<region>/<tenant>/`).
    #[serde(default)]
    pub service_url: Option<url::Url>,
    /// The Bot Framework OpenID metadata whose key set signs inbound tokens (default
    /// `https://login.botframework.com/v1/.well-known/openidconfiguration`).
    #[serde(default = "default_openid_metadata_url")]
    pub openid_metadata_url: url::Url,
    /// The issuer inbound tokens must name (default `https://api.botframework.com`).
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The OAuth 2.0 token endpoint for the Connector API token (default
    /// `https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token`, or the tenant's
    /// endpoint when `tenant_id` is set).
    #[serde(default)]
    pub token_url: Option<url::Url>,
    /// The scope of the Connector API token (default `https://api.botframework.com/.default`).
    #[serde(default = "default_scope")]
    pub token_scope: String,
    /// Entra group membership for approver groups that list `teams-group:<group object id>`:
    /// looked up with Microsoft Graph on each click. Off when unset.
    #[serde(default)]
    pub entra_groups: Option<graph::GraphConfig>,
}

fn default_openid_metadata_url() -> url::Url {
    url::Url::parse("https://login.botframework.com/v1/.well-known/openidconfiguration")
        .expect("constant URL")
}

fn default_issuer() -> String {
    "https://api.botframework.com".to_owned()
}

fn default_scope() -> String {
    "https://api.botframework.com/.default".to_owned()
}

impl TeamsConfig {
    /// The token endpoint in use: the configured one, else the tenant's, else Bot Framework's.
    pub fn token_url(&self) -> url::Url {
        if let Some(url) = &self.token_url {
            return url.clone();
        }
        let authority = self.tenant_id.as_deref().unwrap_or("botframework.com");
        url::Url::parse(&format!(
            "https://login.microsoftonline.com/{authority}/oauth2/v2.0/token"
        ))
        .unwrap_or_else(|_| {
            url::Url::parse("https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token")
                .expect("constant URL")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_endpoint_follows_the_tenant() {
        let mut config: TeamsConfig =
            serde_yaml::from_str("app_id: app\napp_password: pw\n").unwrap();
        assert_eq!(
            config.token_url().as_str(),
            "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
        );
        config.tenant_id = Some("t-1".into());
        assert_eq!(
            config.token_url().as_str(),
            "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
        );
    }
}
