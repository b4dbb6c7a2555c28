//! The `chat.slack` config section, checked as it is read.

use serde::Deserialize;

use crate::config::{HumanDuration, Secret};

/// The `chat.slack` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSlackConfig")]
pub struct SlackConfig {
    /// The bot token (`xoxb-...`) cards are posted and updated with.
    pub bot_token: Secret,
    /// The channel cards go to, by id (`C0123ABCD`); the bot must be a member.
    pub channel: String,
    /// The app's signing secret: it verifies every request to `/v1/chat/slack/interactions` and
    /// `/v1/chat/slack/commands`. Without it those endpoints answer 404 (Socket Mode needs none).
    pub signing_secret: Option<Secret>,
    /// Take clicks and slash commands over Socket Mode (a WebSocket Cordon opens to Slack), for a
    /// bot with no public URL. Needs `app_token`.
    pub socket_mode: bool,
    /// The app-level token (`xapp-...`, scope `connections:write`) Socket Mode connects with.
    pub app_token: Option<Secret>,
    /// The Web API's base URL (default `https://slack.com/api`).
    pub api_url: String,
    /// How long the members of a Slack user group are remembered (default `60s`).
    pub group_cache: HumanDuration,
    /// Time allowed for one Web API call (default `10s`).
    pub request_timeout: HumanDuration,
}

/// The section as written, checked into a [`SlackConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlackConfig {
    bot_token: Secret,
    channel: String,
    #[serde(default)]
    signing_secret: Option<Secret>,
    #[serde(default)]
    socket_mode: bool,
    #[serde(default)]
    app_token: Option<Secret>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    group_cache: Option<HumanDuration>,
    #[serde(default)]
    request_timeout: Option<HumanDuration>,
}

impl TryFrom<RawSlackConfig> for SlackConfig {
    type Error = String;

    fn try_from(raw: RawSlackConfig) -> Result<SlackConfig, String> {
        if raw.channel.trim().is_empty() {
            return Err("chat.slack.channel is empty: name the channel id cards go to".into());
        }
        if raw.socket_mode && raw.app_token.is_none() {
            return Err(
                "chat.slack.socket_mode needs chat.slack.app_token (an app-level `xapp-` token with connections:write)"
                    .into(),
            );
        }
        if !raw.socket_mode && raw.signing_secret.is_none() {
            return Err(
                "chat.slack needs a way to hear clicks: set signing_secret (HTTP interactivity) or socket_mode with app_token"
                    .into(),
            );
        }
        let api_url = raw
            .api_url
            .unwrap_or_else(|| "https://slack.com/api".into())
            .trim_end_matches('/')
            .to_owned();
        match url::Url::parse(&api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(format!(
                    "chat.slack.api_url `{api_url}` is not an http(s) URL"
                ));
            }
        }
        Ok(SlackConfig {
            bot_token: raw.bot_token,
            channel: raw.channel.trim().to_owned(),
            signing_secret: raw.signing_secret,
            socket_mode: raw.socket_mode,
            app_token: raw.app_token,
            api_url,
            group_cache: raw.group_cache.unwrap_or(HumanDuration::secs(60)),
            request_timeout: raw.request_timeout.unwrap_or(HumanDuration::secs(10)),
        })
    }
}
