//! Discord: incident cards with Approve / Deny buttons posted through the HTTP API, clicks and the
//! `/cordon` command through the HTTP interactions endpoint, verified with the application's
//! Ed25519 public key. No gateway connection: Cordon needs none to post, edit and be clicked.
//!
//! serenity provides the models and the builders (which serialize to Discord's JSON) and the
//! signature verifier; requests go out through Cordon's own HTTP client.
//!
//! - [`config`]: the `chat.discord` section.
//! - [`api`]: the REST client (base URL, bot token, rate-limit buckets and 429s).
//! - [`render`]: a card as an embed with buttons; the buttons' ids.
//! - [`deliver`]: the outbox deliverer (card, thread, update in place, thread notes).
//! - [`inbound`]: `POST /v1/chat/discord/interactions`: clicks, and `/cordon` read into the
//!   shared [`crate::chat::commands`].

pub mod api;
pub mod config;
pub mod deliver;
pub mod inbound;
pub mod render;

use std::sync::Arc;

use async_trait::async_trait;

use super::platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};
use crate::outbox::Deliver;

pub use config::DiscordConfig;
pub use deliver::DiscordDelivery;

/// The `chat.discord` section.
pub type Config = DiscordConfig;

/// Discord, started: the deliverer of `discord` outbox entries and the interactions endpoint.
pub struct Discord {
    delivery: Arc<DiscordDelivery>,
    inbound: Arc<inbound::Inbound>,
}

#[async_trait]
impl PlatformConfig for DiscordConfig {
    fn secrets(&self) -> Vec<&crate::config::Secret> {
        vec![&self.bot_token]
    }

    async fn start(&self, deps: &ChatDeps) -> Result<Arc<dyn ChatPlatform>, PlatformError> {
        let api = Arc::new(api::Api::new(
            deps.http.clone(),
            &self.api_base_url,
            self.bot_token.clone(),
        ));
        Ok(Arc::new(Discord {
            delivery: Arc::new(DiscordDelivery::new(
                api.clone(),
                deps.store.clone(),
                self.channel_id.as_str(),
            )),
            inbound: Arc::new(inbound::Inbound::new(self.clone(), api, deps)),
        }))
    }
}

impl ChatPlatform for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn deliverer(self: Arc<Self>) -> Arc<dyn Deliver> {
        self.delivery.clone()
    }

    fn routes(self: Arc<Self>) -> axum::Router {
        inbound::routes(self.inbound.clone())
    }
}
