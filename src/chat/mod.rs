//! Chat-ops: one card per incident on Slack, Microsoft Teams and Discord, with the same approval
//! rules on all three.
//!
//! The engine asks the [`ChatChannel`] to post and update approval requests (as a [`Card`],
//! `card.rs`), and tells the [`ChatWatcher`] of incident events; both (`outbound.rs`) only push
//! [`ChatOp`]s to the durable outbox, whose per-platform deliverers (`slack`, `teams`, `discord`)
//! post cards, update them in place and write thread replies. A chat outage delays cards and loses
//! none, and approvals keep working through the CLI and the API meanwhile. Clicks come back through
//! each platform's verified endpoint and go to [`click`], which applies the approver rules and says
//! what to answer the person.

mod card;
pub mod commands;
mod outbound;
pub mod platform;

use std::sync::Arc;

use axum::Router;
use serde::Deserialize;

pub use card::{Card, CardOutcome};
pub use commands::{Answer, Command, Commands, Dialect};
pub use outbound::{
    ChatChannel, ChatOp, ChatWatcher, Fanout, Note, Notes, POST_CARD, THREAD_NOTE, UPDATE_CARD,
};
pub use platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};

use crate::engine::EngineError;
use crate::engine::approval::DecisionError;
use crate::engine::service::Engine;
use crate::http::ApiError;

/// Declares the chat platforms: each name is a folder `chat/<name>/` (see [`platform`]) whose
/// `Config` is the `chat.<name>` section. Adding a platform is one line here.
macro_rules! chat_platforms {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $( $(#[$attr])* pub mod $name; )*

        /// The `chat:` config section: the platforms in use and who may trigger playbooks from
        /// chat.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ChatConfig {
            $( $(#[$attr])* #[serde(default)] pub $name: Option<$name::Config>, )*
            /// The approver group whose members may start playbooks by hand from chat
            /// (`/cordon run <playbook> key=value ...`); nobody when unset.
            #[serde(default)]
            pub triggers: Option<String>,
            /// At most one thread note per incident and platform this often (default `10s`; see
            /// [`ChatConfig::note_interval`]).
            #[serde(default)]
            pub note_interval: Option<crate::config::HumanDuration>,
        }

        impl ChatConfig {
            /// The configured platforms' sections, by name, in the order of the list.
            pub fn sections(&self) -> Vec<(&'static str, &dyn PlatformConfig)> {
                let mut out: Vec<(&'static str, &dyn PlatformConfig)> = Vec::new();
                $(
                    $(#[$attr])*
                    if let Some(section) = &self.$name {
                        out.push((stringify!($name), section));
                    }
                )*
                out
            }
        }

        /// Every platform Cordon knows, with the error code its routes answer while it is not
        /// configured.
        #[allow(clippy::vec_init_then_push, reason = "an entry may be configured out (`#[cfg]`)")]
        fn known() -> Vec<(&'static str, &'static str)> {
            let mut out = Vec::new();
            $(
                $(#[$attr])*
                out.push((stringify!($name), concat!(stringify!($name), "_not_configured")));
            )*
            out
        }
    };
}

chat_platforms! {
    slack,
    teams,
    discord,
    #[cfg(test)]
    fake,
}

impl ChatConfig {
    /// Every secret in the section (for the warning about local defaults).
    pub fn secrets(&self) -> Vec<&crate::config::Secret> {
        self.sections()
            .into_iter()
            .flat_map(|(_, section)| section.secrets())
            .collect()
    }

    /// The configured platforms' names.
    pub fn platforms(&self) -> Vec<&'static str> {
        self.sections().into_iter().map(|(name, _)| name).collect()
    }

    /// How often an incident's thread gets a note at most, per platform (`chat.note_interval`,
    /// default 10 s). What happens in between (more alerts, failed steps, evidence) waits and is
    /// summed up in the next note, so a storm of alerts cannot flood a channel; cards and their
    /// updates are not held back. `0s` turns this off: a note per event, as they come.
    pub fn note_interval(&self) -> std::time::Duration {
        self.note_interval
            .map_or(DEFAULT_NOTE_INTERVAL, |interval| interval.0)
    }
}

/// `chat.note_interval` when the config does not say.
pub const DEFAULT_NOTE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts every configured platform, registers its deliverer with the outbox and has its thread
/// notes coalesced (`chat.note_interval`).
pub async fn platforms(
    config: &ChatConfig,
    deps: &ChatDeps,
) -> Result<Vec<Arc<dyn ChatPlatform>>, PlatformError> {
    let mut out = Vec::new();
    for (name, section) in config.sections() {
        let platform = section.start(deps).await?;
        debug_assert_eq!(platform.name(), name, "a platform's name is its config key");
        deps.outbox.register(name, platform.clone().deliverer());
        if !config.note_interval().is_zero() {
            deps.outbox.coalesce(
                name,
                THREAD_NOTE,
                crate::outbox::Coalesce {
                    every: config.note_interval(),
                    // A merged note names a few new alerts and counts the rest.
                    most: 500,
                    merge: outbound::merge_notes,
                },
            );
        }
        out.push(platform);
    }
    Ok(out)
}

/// The routes of the started platforms, and for any other `/v1/chat/<platform>/...` path a 404
/// that says the platform is not configured.
pub fn routes(platforms: &[Arc<dyn ChatPlatform>]) -> Router {
    platforms.iter().fold(
        Router::new().route(
            "/v1/chat/{platform}/{*rest}",
            axum::routing::any(
                |axum::extract::Path((platform, _)): axum::extract::Path<(String, String)>| async move {
                    let code = known()
                        .into_iter()
                        .find(|(name, _)| *name == platform)
                        .map_or("not_found", |(_, code)| code);
                    ApiError::not_found(
                        code,
                        format!("chat platform `{platform}` is not configured on this server (chat.{platform})"),
                    )
                },
            ),
        ),
        |router, platform| router.merge(platform.clone().routes()),
    )
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A person clicking in chat, as the platform identified them.
#[derive(Debug, Clone)]
pub struct ChatUser {
    /// `slack:U123`, `teams:<aad object id>`, `discord:<user id>`.
    pub identity: String,
    /// Platform groups the platform says they are in (`slack-group:S1`, `discord-role:R1`,
    /// `teams-group:<id>`), which approver groups may list.
    pub groups: Vec<String>,
    /// Display name, for replies.
    pub name: String,
}

/// What to tell the person who clicked (ephemeral where the platform allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickReply {
    /// The decision counted.
    pub accepted: bool,
    pub text: String,
}

/// Applies an Approve/Deny click from `platform` with the engine's rules (membership, requester,
/// quorum, already decided); refusals are audited by the engine and explained to the person.
pub async fn click(
    engine: &Arc<Engine>,
    platform: &str,
    user: &ChatUser,
    run_id: &str,
    step: &str,
    approve: bool,
) -> ClickReply {
    let verb = if approve { "approval" } else { "denial" };
    let actor = match engine.people().actor(&user.identity, &user.groups).await {
        Ok(Some(actor)) => actor,
        Ok(None) => {
            let reason = format!("`{}` is no person known to Cordon", user.identity);
            let entry = crate::model::audit::NewEntry::new(
                crate::model::event::EventKind::ApprovalRefused,
            )
            .run(run_id.to_owned())
            .step(step.to_owned())
            .actor(user.identity.clone())
            .detail(serde_json::json!({ "approve": approve, "via": platform, "reason": reason }));
            if let Err(e) = engine.store().append_audit(vec![entry]).await {
                tracing::warn!(error = %e, "cannot audit a refused decision");
            }
            return ClickReply {
                accepted: false,
                text: format!(
                    "Not allowed: your {platform} account is not linked to a person in Cordon; ask an admin to add `{}` to your identities.",
                    user.identity
                ),
            };
        }
        Err(e) => {
            return ClickReply {
                accepted: false,
                text: format!("Could not record your {verb}: {e}"),
            };
        }
    };
    match engine.decide(run_id, step, &actor, approve, platform).await {
        Ok(decided) => ClickReply {
            accepted: true,
            text: match decided.outcome {
                Some(true) => format!("Approved: {run_id} {step} goes ahead."),
                Some(false) => format!("Denied: {run_id} {step} will not run."),
                None => format!(
                    "Your {verb} is recorded ({} of {} needed).",
                    decided.approvals, decided.quorum
                ),
            },
        },
        Err(EngineError::Decision(error)) => ClickReply {
            accepted: false,
            text: match &error {
                DecisionError::NotAllowed(_, group) => {
                    format!("Not allowed: you are not in the approver group `{group}`.")
                }
                DecisionError::AlreadyDecided(by) => format!("Already decided by {by}."),
                other => other.to_string(),
            },
        },
        Err(other) => ClickReply {
            accepted: false,
            text: format!("Could not record your {verb}: {other}"),
        },
    }
}
