//! Microsoft Teams through the Bot Framework.
//!
//! - [`card`] renders a [`Card`](crate::chat::Card) as an Adaptive Card whose Approve / Deny
//!   buttons are `Action.Execute` (Universal Actions), falling back to `Action.Submit` on clients
//!   that predate them; both carry the run id and step.
//! - [`deliver`] is the outbox deliverer: it posts the incident's card to the team channel through
//!   the Connector API at the conversation's `serviceUrl`, updates it in place once decided, and
//!   writes later alerts, results and click answers as replies in the card's thread.
//! - [`token`] fetches and caches the client-credentials token the Connector API (and Microsoft
//!   Graph, for Entra groups) takes.
//! - [`jwt`] validates the Bot Framework token on every inbound activity: RS256 against the keys
//!   published in the Bot Framework OpenID metadata (cached, refreshed when a token names a key
//!   not seen yet), issuer, audience = the app id, lifetime, the key's channel endorsement and the
//!   `serviceurl` claim against the activity.
//! - [`inbound`] is `POST /v1/chat/teams/messages`: card clicks go to [`crate::chat::click`], and
//!   the bot's installation in a team is remembered as the conversation cards are posted to.
//! - [`graph`] looks up the clicking person's Entra groups (`teams-group:<object id>`) with
//!   Microsoft Graph, when enabled.

pub mod card;
pub mod deliver;
pub mod graph;
pub mod inbound;
pub mod jwt;
pub mod token;

use serde::{Deserialize, Serialize};

use crate::config::Secret;

pub use deliver::Deliverer;
pub use inbound::routes;

/// The store namespace of Teams' durable values: where the bot is installed and which Teams
/// message shows which card.
pub const META: &str = "chat.teams";

/// Outbox kind of an answer to an `Action.Submit` click (older clients, which cannot be answered
/// in place): `{ service_url, conversation_id, reply_to, text }`, posted as a thread reply.
pub const REPLY: &str = "reply";

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
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Where cards are posted: a channel's conversation id (`19:…@thread.tacv2`). Unset: the
    /// conversation the bot was last installed in (remembered when Teams tells the bot).
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

/// Where the bot was installed (a team channel, a group chat, a personal chat): enough to post
/// there proactively. Kept in the store under [`META`] `install:<conversation id>` and
/// `install:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    pub service_url: String,
    /// The conversation without any `;messageid=` thread suffix (for a team, its General
    /// channel).
    pub conversation_id: String,
    /// `channel`, `groupChat` or `personal`.
    #[serde(default)]
    pub conversation_type: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    /// The bot's id in that conversation (`28:<app id>`).
    #[serde(default)]
    pub bot_id: Option<String>,
    pub installed_at: chrono::DateTime<chrono::Utc>,
}

/// One Teams message Cordon posted: where it is, to update it and reply in its thread. Kept
/// under [`META`] `card:<incident>` (the incident's card) and `request:<run>:<step>` (the message
/// showing that approval request: the card itself, or a card posted in its thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub service_url: String,
    /// The conversation the message was sent to (the path of its update).
    pub conversation_id: String,
    pub activity_id: String,
    /// Whether the conversation is a team channel, where replies go into the message's thread.
    #[serde(default)]
    pub channel: bool,
}

impl MessageRef {
    /// The conversation of the message's reply chain: in a team channel, the thread
    /// `<channel>;messageid=<activity id>`; elsewhere the conversation itself.
    pub fn thread(&self) -> String {
        if self.channel && !self.conversation_id.contains(";messageid=") {
            format!("{};messageid={}", self.conversation_id, self.activity_id)
        } else {
            self.conversation_id.clone()
        }
    }
}

/// Whether a conversation id names a team channel (`19:…@thread.tacv2`, `19:…@thread.skype`).
pub fn is_channel(conversation_id: &str, conversation_type: Option<&str>) -> bool {
    match conversation_type {
        Some(kind) => kind == "channel",
        None => conversation_id.starts_with("19:") && conversation_id.contains("@thread"),
    }
}

/// A service URL without its trailing slash, for joining paths and comparing.
pub fn trim_service_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Percent-encodes one path segment the way the Bot Framework SDKs do (`encodeURIComponent`):
/// conversation ids carry `:`, `@`, `;` and `=`.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_encoded_as_one_segment() {
        assert_eq!(
            path_segment("19:abc@thread.tacv2;messageid=17"),
            "19%3Aabc%40thread.tacv2%3Bmessageid%3D17"
        );
        assert_eq!(path_segment("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn channel_messages_reply_in_their_thread() {
        let mut card = MessageRef {
            service_url: "https://smba.example/amer/".into(),
            conversation_id: "19:abc@thread.tacv2".into(),
            activity_id: "1767".into(),
            channel: true,
        };
        assert_eq!(card.thread(), "19:abc@thread.tacv2;messageid=1767");
        card.conversation_id = "19:abc@thread.tacv2;messageid=1700".into();
        assert_eq!(card.thread(), "19:abc@thread.tacv2;messageid=1700");
        card.channel = false;
        card.conversation_id = "a:personal".into();
        assert_eq!(card.thread(), "a:personal");
    }

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
        assert!(is_channel("19:x@thread.tacv2", None));
        assert!(!is_channel("a:x", None));
        assert!(!is_channel("19:x@thread.v2", Some("groupChat")));
    }
}
