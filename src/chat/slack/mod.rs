//! Slack: incident cards with Approve / Deny buttons, updated in place after the decision, with
//! the incident's later alerts and results in the card's thread; clicks and the `/cordon` slash
//! command come back over HTTP (verified with the signing secret) or over Socket Mode.
//!
//! # Layout
//! - [`SlackConfig`]: the `chat.slack` config section.
//! - `blocks`: a [`Card`](super::Card) as Block Kit, and the buttons' values.
//! - `web`: the Web API calls (slack-morphism's client, form-encoded as the Web API describes).
//! - `deliver`: the outbox deliverer: post, update, thread replies, rate limits.
//! - `inbound`: the verified HTTP endpoints and what a click or a command does (both transports).
//! - `commands`: the `/cordon` slash command.
//! - `socket`: Socket Mode, feeding the same handlers from Slack's WebSocket.

mod blocks;
mod commands;
mod deliver;
mod inbound;
mod socket;
mod web;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde::Deserialize;
use slack_morphism::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use crate::config::{Config, HumanDuration, Secret};
use crate::engine::Engine;
use crate::engine::approval::ApproverGroups;
use crate::store::Store;

pub(crate) use inbound::read_offline;
pub use inbound::{commands, interactions};

/// The metadata namespace of Slack's message references (`card:<incident>` for an incident's
/// card, `approval:<run>:<step>` for the message carrying an approval's buttons).
pub const META: &str = "chat.slack";

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

/// The members of a user group, and when Slack said so.
type Members = (Instant, Arc<BTreeSet<String>>);

/// Slack, as the server holds it: the Web API client, the inbound rules and what they remember.
pub struct Slack {
    config: SlackConfig,
    web: web::Web,
    /// Held weakly: the engine holds the outbox, which holds this deliverer.
    engine: Weak<Engine>,
    store: Arc<dyn Store>,
    approvers: ApproverGroups,
    /// The approver group allowed to start playbooks from chat (`chat.triggers`).
    triggers: Option<String>,
    /// Slack user group ids that approver groups list (`slack-group:<id>`): the only groups
    /// worth asking Slack about.
    user_groups: BTreeSet<String>,
    /// Members of those groups, as last asked, and when.
    group_members: Mutex<HashMap<String, Members>>,
    verifier: Option<SlackEventSignatureVerifier>,
    /// Signatures of requests taken in the last five minutes: a request replayed inside the
    /// window Slack's signature allows is refused.
    seen: Mutex<HashMap<String, i64>>,
    socket: Mutex<Option<socket::SocketMode>>,
}

impl Slack {
    /// Builds the client and registers the deliverer with the outbox; starts Socket Mode when
    /// configured. Fails only when the HTTPS client cannot be built (no system root certificates).
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        outbox: &crate::outbox::Outbox,
    ) -> Result<Option<Arc<Slack>>, String> {
        let Some(slack) = &config.chat.slack else {
            return Ok(None);
        };
        let client = Arc::new(web::client(&slack.api_url)?);
        let user_groups = config
            .approvers
            .values()
            .flatten()
            .filter_map(|m| m.strip_prefix("slack-group:"))
            .map(str::to_owned)
            .collect();
        let this = Arc::new(Slack {
            web: web::Web::new(
                client.clone(),
                &slack.api_url,
                slack.bot_token.clone(),
                slack.request_timeout.0,
            ),
            config: slack.clone(),
            engine: Arc::downgrade(&engine),
            store,
            approvers: ApproverGroups(config.approvers.clone()),
            triggers: config.chat.triggers.clone(),
            user_groups,
            group_members: Mutex::new(HashMap::new()),
            verifier: slack.signing_secret.as_ref().map(|s| {
                SlackEventSignatureVerifier::new(&SlackSigningSecret::new(s.expose().to_owned()))
            }),
            seen: Mutex::new(HashMap::new()),
            socket: Mutex::new(None),
        });
        outbox.register("slack", this.clone());
        if slack.socket_mode
            && let Some(app_token) = &slack.app_token
        {
            let socket = socket::SocketMode::start(client, Arc::downgrade(&this), app_token).await;
            if let Ok(mut slot) = this.socket.lock() {
                *slot = Some(socket);
            }
        }
        tracing::info!(channel = %slack.channel, socket_mode = slack.socket_mode, "Slack is on");
        Ok(Some(this))
    }

    /// The engine, unless the server is going away.
    fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.upgrade()
    }

    /// The Slack user groups (`slack-group:<id>`, as approver groups list them) `user` is in.
    /// Only groups the config names are asked about, each at most once per `group_cache`; a group
    /// Slack cannot list right now counts as not containing the user.
    async fn groups_of(&self, user: &str) -> Vec<String> {
        let mut out = Vec::new();
        for group in &self.user_groups {
            let cached = self.group_members.lock().ok().and_then(|cache| {
                cache
                    .get(group)
                    .filter(|(at, _)| at.elapsed() < self.config.group_cache.0)
                    .map(|(_, members)| members.clone())
            });
            let members = match cached {
                Some(members) => members,
                None => match self.web.user_group_members(group).await {
                    Ok(members) => {
                        let members = Arc::new(members.into_iter().collect::<BTreeSet<_>>());
                        if let Ok(mut cache) = self.group_members.lock() {
                            cache.insert(group.clone(), (Instant::now(), members.clone()));
                        }
                        members
                    }
                    Err(error) => {
                        tracing::warn!(group = %group, %error, "cannot list the Slack user group's members; counting the user as not in it");
                        continue;
                    }
                },
            };
            if members.contains(user) {
                out.push(format!("slack-group:{group}"));
            }
        }
        out
    }
}

impl Drop for Slack {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.socket.lock()
            && let Some(socket) = slot.take()
        {
            socket.stop();
        }
    }
}
