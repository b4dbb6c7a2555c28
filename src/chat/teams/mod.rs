//! Microsoft Teams through the Bot Framework.
//!
//! - [`config`] is the `chat.teams` section.
//! - [`render`] renders a [`Card`](crate::chat::Card) as an Adaptive Card whose Approve / Deny
//!   buttons are `Action.Execute` (Universal Actions), falling back to `Action.Submit` on clients
//!   that predate them; both carry the run id and step.
//! - [`api`] makes the Connector API calls.
//! - [`deliver`] is the outbox deliverer: it posts the incident's card to the team channel through
//!   the Connector API at the conversation's `serviceUrl`, updates it in place once decided, and
//!   writes later alerts, results and click answers as replies in the card's thread.
//! - [`token`] fetches and caches the client-credentials token the Connector API (and Microsoft
//!   Graph, for Entra groups) takes.
//! - [`jwt`] validates the Bot Framework token on every inbound activity: RS256 against the keys
//!   published in the Bot Framework OpenID metadata (cached, refreshed when a token names a key
//!   not seen yet), issuer, audience = the app id, lifetime, the key's channel endorsement and the
//!   `serviceurl` claim against the activity.
//! - [`inbound`] is `POST /v1/chat/teams/messages`: card clicks go to [`crate::chat::click`],
//!   messages to the bot are the shared [`crate::chat::commands`] (`status`, `runs`, `approve`,
//!   `deny`, `run`), and the bot's installation in a team is remembered as the conversation cards
//!   are posted to.
//! - [`graph`] looks up the clicking person's Entra groups (`teams-group:<object id>`) with
//!   Microsoft Graph, when enabled.

pub mod api;
pub mod config;
pub mod deliver;
pub mod graph;
pub mod inbound;
pub mod jwt;
pub mod render;
pub mod token;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};
use crate::outbox::Deliver;

pub use config::TeamsConfig;
pub use deliver::Deliverer;

/// The `chat.teams` section.
pub type Config = TeamsConfig;

/// Teams, started: the Connector API deliverer of `teams` outbox entries and the bot's messaging
/// endpoint.
pub struct Teams {
    deliverer: Arc<Deliverer>,
    inbound: Arc<inbound::Inbound>,
}

#[async_trait]
impl PlatformConfig for TeamsConfig {
    fn secrets(&self) -> Vec<&crate::config::Secret> {
        vec![&self.app_password]
    }

    async fn start(&self, deps: &ChatDeps) -> Result<Arc<dyn ChatPlatform>, PlatformError> {
        let config = Arc::new(self.clone());
        Ok(Arc::new(Teams {
            deliverer: Arc::new(Deliverer::new(
                config.clone(),
                deps.store.clone(),
                deps.http.clone(),
            )),
            inbound: Arc::new(inbound::Inbound::new(config, deps)),
        }))
    }
}

impl ChatPlatform for Teams {
    fn name(&self) -> &'static str {
        "teams"
    }

    fn deliverer(self: Arc<Self>) -> Arc<dyn Deliver> {
        self.deliverer.clone()
    }

    fn routes(self: Arc<Self>) -> axum::Router {
        inbound::routes(self.inbound.clone())
    }
}

/// The store namespace of Teams' durable values: where the bot is installed and which Teams
/// message shows which card.
pub const META: &str = "chat.teams";

/// Outbox kind of an answer to an `Action.Submit` click (older clients, which cannot be answered
/// in place): `{ service_url, conversation_id, reply_to, text }`, posted as a thread reply.
pub const REPLY: &str = "reply";

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn channel_conversations_are_told_apart() {
        assert!(is_channel("19:x@thread.tacv2", None));
        assert!(!is_channel("a:x", None));
        assert!(!is_channel("19:x@thread.v2", Some("groupChat")));
    }
}
