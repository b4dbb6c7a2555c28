//! Discord (built by the chat issue): config, card rendering, delivery and the verified inbound
//! endpoint.

use serde::Deserialize;

/// The `chat.discord` config section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {}
