//! The shape every ticket system has. A system is a folder, `tickets/<name>/`, with the same files
//! in each:
//!
//! | file | role |
//! | --- | --- |
//! | `mod.rs` | the system's [`TicketSystem`] impl: its name, payloads, deliverer and routes |
//! | `config.rs` | its connection (`tickets.<name>`) and its block in a profile |
//! | `payload.rs` | what Cordon sends it: the create payload and the text format |
//! | `deliver.rs` | the outbox deliverer: create once, comment, transition, attach |
//! | `webhook.rs` | its inbound webhook, read into the rules every system shares ([`super::webhook`]) |
//!
//! The watcher ([`super::TicketWatcher`]) turns incident events into `create`, `comment`,
//! `transition` and `attach` outbox entries for every system a profile names.

use std::sync::Arc;

use serde_json::Value;

use super::webhook::Inbound;
use super::{Rendered, TicketDeps, TicketProfile};
use crate::engine::watch::IncidentEvent;
use crate::outbox::Deliver;
use crate::outbox::{DeliveryError, OutboxEntry};

/// Why a configured connection cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// Its credentials do not make one way to sign in (the config check says the same at load).
    #[error("{0}")]
    Credentials(String),
}

/// One ticket system.
pub trait TicketSystem: Send + Sync {
    /// Its name: the outbox target of its entries and the prefix of its people's identities
    /// (`jira:<account id>`).
    fn name(&self) -> &'static str;

    /// The outbox key of an incident's ticket in this system: its entries go out in order.
    fn key(&self, incident_id: &str) -> String {
        format!("{}:{incident_id}", self.name())
    }

    /// Whether `profile` files tickets here.
    fn files(&self, profile: &TicketProfile) -> bool;

    /// The `create` entry's payload for an incident.
    fn create(&self, profile: &TicketProfile, incident_id: &str, fields: Rendered) -> Value;

    /// The `transition` entry's payload when the incident is resolved.
    fn resolved(&self, profile: &TicketProfile, event: &IncidentEvent) -> Value;

    /// The `transition` entry's payload when the incident is reopened, if the profile says how.
    fn reopened(&self, profile: &TicketProfile, event: &IncidentEvent) -> Option<Value>;

    /// The deliverer of its outbox entries, when its connection is configured (an error when the
    /// connection is unusable).
    fn deliverer(&self, deps: &TicketDeps) -> Option<Result<Arc<dyn Deliver>, ConnectionError>>;

    /// Its webhook route (which answers 404 while the system is not configured).
    fn routes(&self, inbound: Arc<Inbound>) -> axum::Router;
}

/// What a ticket outbox entry asks of a system. Entries of one ticket share its key
/// ([`TicketSystem::key`]), so they go out one at a time, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketOp {
    /// File the ticket (once: a retry finds the ticket filed before).
    Create,
    /// A comment (Jira) or work note (ServiceNow) for a synced event.
    Comment,
    /// Move the ticket to done, or back.
    Transition,
    /// Attach the incident report.
    Attach,
}

impl TicketOp {
    const ALL: [TicketOp; 4] = [
        TicketOp::Create,
        TicketOp::Comment,
        TicketOp::Transition,
        TicketOp::Attach,
    ];

    /// The entry's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            TicketOp::Create => "create",
            TicketOp::Comment => "comment",
            TicketOp::Transition => "transition",
            TicketOp::Attach => "attach",
        }
    }

    /// The entry for `system`'s ticket of `incident_id`.
    pub fn entry(
        self,
        system: &dyn TicketSystem,
        incident_id: &str,
        payload: Value,
    ) -> OutboxEntry {
        OutboxEntry::new(
            system.name(),
            &system.key(incident_id),
            self.kind(),
            payload,
        )
    }

    /// What `entry` asks; a kind no ticket system knows is a permanent failure.
    pub fn of(entry: &OutboxEntry, system: &str) -> Result<TicketOp, DeliveryError> {
        TicketOp::ALL
            .into_iter()
            .find(|op| op.kind() == entry.kind)
            .ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "unknown {system} outbox entry kind `{}`",
                    entry.kind
                ))
            })
    }
}
