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
//! - [`interactions`]: `POST /v1/chat/discord/interactions`; [`commands`]: `/cordon`.

pub mod api;
mod commands;
pub mod config;
pub mod deliver;
pub mod interactions;
pub mod render;

use std::sync::Arc;

pub use config::DiscordConfig;
pub use deliver::DiscordDelivery;
pub use interactions::router;

/// The outbox deliverer for `config` (registered as target `discord`).
pub fn delivery(
    config: &DiscordConfig,
    http: reqwest::Client,
    store: Arc<dyn crate::store::Store>,
) -> Arc<DiscordDelivery> {
    let api = Arc::new(api::Api::new(
        http,
        &config.api_base_url,
        config.bot_token.clone(),
    ));
    Arc::new(DiscordDelivery::new(api, store, config.channel_id.as_str()))
}
