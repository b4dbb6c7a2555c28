//! Slack: incident cards with Approve / Deny buttons, updated in place after the decision, with
//! the incident's later alerts and results in the card's thread; clicks and the `/cordon` slash
//! command come back over HTTP (verified with the signing secret) or over Socket Mode.
//!
//! # Layout (the roles every platform has, [`crate::chat::platform`])
//! - `config`: the `chat.slack` section ([`SlackConfig`]).
//! - `api`: the Web API calls (slack-morphism's client, form-encoded as the Web API describes).
//! - `render`: a [`Card`](super::Card) as Block Kit, the buttons' values, Slack's `mrkdwn`.
//! - `inbound`: the verified HTTP endpoints and what a click or a `/cordon` command does (both
//!   transports; the commands themselves are [`crate::chat::commands`]).
//! - `deliver`: the outbox deliverer: post, update, thread replies, rate limits.
//! - `socket`: Socket Mode, feeding the same handlers from Slack's WebSocket.

mod api;
mod config;
mod deliver;
mod inbound;
mod render;
mod socket;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_trait::async_trait;
use slack_morphism::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use super::commands::Commands;
use super::platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};
use crate::config::Secret;
use crate::engine::Engine;
use crate::outbox::Deliver;
use crate::store::Store;

pub use config::SlackConfig;
pub(crate) use inbound::read_offline;

/// The `chat.slack` section.
pub type Config = SlackConfig;

/// The metadata namespace of Slack's message references (`card:<incident>` for an incident's
/// card, `approval:<run>:<step>` for the message carrying an approval's buttons).
pub const META: &str = "chat.slack";

/// The members of a user group, and when Slack said so.
type Members = (Instant, Arc<BTreeSet<String>>);

/// Slack, as the server holds it: the Web API client, the inbound rules and what they remember.
pub struct Slack {
    config: SlackConfig,
    web: api::Web,
    /// Held weakly: the engine holds the outbox, which holds this deliverer.
    engine: Weak<Engine>,
    /// Where the messages Cordon posted are remembered.
    store: Arc<dyn Store>,
    /// The `/cordon` commands.
    commands: Arc<Commands>,
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

#[async_trait]
impl PlatformConfig for SlackConfig {
    fn secrets(&self) -> Vec<&Secret> {
        let mut out = vec![&self.bot_token];
        out.extend(self.signing_secret.iter().chain(&self.app_token));
        out
    }

    /// Builds the client and starts Socket Mode when configured. Fails only when the HTTPS
    /// client cannot be built (no system root certificates).
    async fn start(&self, deps: &ChatDeps) -> Result<Arc<dyn ChatPlatform>, PlatformError> {
        let client = Arc::new(api::client(&self.api_url)?);
        let user_groups = deps
            .approvers
            .0
            .values()
            .flatten()
            .filter_map(|m| m.strip_prefix("slack-group:"))
            .map(str::to_owned)
            .collect();
        let this = Arc::new(Slack {
            web: api::Web::new(
                client.clone(),
                &self.api_url,
                self.bot_token.clone(),
                self.request_timeout.0,
            ),
            config: self.clone(),
            engine: deps.engine.clone(),
            store: deps.store.clone(),
            commands: deps.commands.clone(),
            user_groups,
            group_members: Mutex::new(HashMap::new()),
            verifier: self.signing_secret.as_ref().map(|s| {
                SlackEventSignatureVerifier::new(&SlackSigningSecret::new(s.expose().to_owned()))
            }),
            seen: Mutex::new(HashMap::new()),
            socket: Mutex::new(None),
        });
        if self.socket_mode
            && let Some(app_token) = &self.app_token
        {
            let socket = socket::SocketMode::start(client, Arc::downgrade(&this), app_token).await;
            if let Ok(mut slot) = this.socket.lock() {
                *slot = Some(socket);
            }
        }
        tracing::info!(channel = %self.channel, socket_mode = self.socket_mode, "Slack is on");
        Ok(this)
    }
}

impl ChatPlatform for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn deliverer(self: Arc<Self>) -> Arc<dyn Deliver> {
        self
    }

    fn routes(self: Arc<Self>) -> axum::Router {
        inbound::routes(self)
    }
}

impl Slack {
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
