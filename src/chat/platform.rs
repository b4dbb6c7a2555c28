//! The shape every chat platform has: a config section that starts it, and once started, an
//! outbox deliverer and the routes its callbacks arrive on.
//!
//! A platform is a folder, `chat/<name>/`, with the same files in each:
//!
//! | file | role |
//! | --- | --- |
//! | `mod.rs` | the platform's state and its [`ChatPlatform`] and [`PlatformConfig`] impls |
//! | `config.rs` | the `chat.<name>` config section (`Config`), checked when the config is read |
//! | `api.rs` | the platform's HTTP API client: calls, rate limits, errors |
//! | `render.rs` | a [`Card`](super::Card) and a note in the platform's format; button ids |
//! | `inbound.rs` | the verified callback routes: clicks and commands |
//! | `deliver.rs` | the outbox deliverer: post, update in place, thread notes |
//!
//! (and files for what only that platform has: Slack's Socket Mode, Teams' token validation).
//! Registering it is one line in the list in `chat/mod.rs`; `app.rs` then starts it when its
//! section is in the config, registers its deliverer and serves its routes.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use axum::Router;

use super::commands::Commands;
use crate::config::Secret;
use crate::engine::Engine;
use crate::engine::approval::ApproverGroups;
use crate::outbox::{Deliver, Outbox};
use crate::store::Store;

/// What a platform is started with.
#[derive(Clone)]
pub struct ChatDeps {
    pub store: Arc<dyn Store>,
    /// Held weakly: the engine holds the outbox, which holds the platforms' deliverers.
    pub engine: Weak<Engine>,
    pub outbox: Arc<Outbox>,
    pub http: reqwest::Client,
    pub approvers: ApproverGroups,
    /// The `/cordon` commands, answered the same on every platform.
    pub commands: Arc<Commands>,
    /// The largest request body a callback may send (`server.max_body_bytes`).
    pub max_body_bytes: usize,
}

/// Why a platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Its HTTPS client found no root certificates on the system to trust.
    #[error("no system root certificates for {platform}'s TLS: {source}")]
    Tls {
        platform: &'static str,
        source: std::io::Error,
    },
}

/// A platform's config section: what it keeps secret and how it starts.
#[async_trait]
pub trait PlatformConfig: Send + Sync {
    /// Every secret in the section (for the warning about local defaults).
    fn secrets(&self) -> Vec<&Secret>;

    /// Starts the platform: builds its clients and starts what runs in the background.
    async fn start(&self, deps: &ChatDeps) -> Result<Arc<dyn ChatPlatform>, PlatformError>;
}

/// A started platform.
pub trait ChatPlatform: Send + Sync {
    /// Its name: the outbox target of its entries and its config key.
    fn name(&self) -> &'static str;

    /// What delivers its outbox entries (`post_card`, `update_card`, `thread_note`, ...).
    fn deliverer(self: Arc<Self>) -> Arc<dyn Deliver>;

    /// Its callback routes, with their own state.
    fn routes(self: Arc<Self>) -> Router;
}
