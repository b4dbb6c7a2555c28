//! Jira Cloud (REST API v3): one issue per incident, a comment per synced event, the done
//! transition on resolution, and the incident report attached; its webhook resolves, reopens and
//! approves back.
//!
//! - [`config`]: `tickets.jira` and a profile's `jira:` block.
//! - [`payload`]: the create payload, text as Atlassian Document Format.
//! - [`deliver`]: the outbox deliverer (the calls it makes are listed there).
//! - [`webhook`]: `POST /v1/tickets/jira/webhook`.

pub mod config;
pub mod deliver;
pub mod payload;
pub mod webhook;

use std::sync::Arc;

use axum::routing::post;
use serde_json::{Value, json};

pub use config::{JiraConfig, JiraProfile};
pub use deliver::JiraDeliverer;
pub use payload::{adf, adf_text, create_payload, label};

use super::webhook::Inbound;
use super::{ConnectionError, Rendered, TicketDeps, TicketProfile, TicketSystem};
use crate::engine::watch::IncidentEvent;
use crate::outbox::Deliver;

/// Jira, as a [`TicketSystem`].
pub struct Jira;

impl TicketSystem for Jira {
    fn name(&self) -> &'static str {
        "jira"
    }

    fn files(&self, profile: &TicketProfile) -> bool {
        profile.jira.is_some()
    }

    fn create(&self, profile: &TicketProfile, incident_id: &str, fields: Rendered) -> Value {
        create_payload(profile, incident_id, fields)
    }

    fn resolved(&self, profile: &TicketProfile, event: &IncidentEvent) -> Value {
        json!({ "incident": event.incident_id, "to": "done",
            "status": profile.jira.as_ref().and_then(|j| j.done_status.clone()) })
    }

    fn reopened(&self, profile: &TicketProfile, event: &IncidentEvent) -> Option<Value> {
        let status = profile.jira.as_ref()?.reopen_status.clone()?;
        Some(json!({ "incident": event.incident_id, "to": "reopen", "status": status }))
    }

    fn deliverer(&self, deps: &TicketDeps) -> Option<Result<Arc<dyn Deliver>, ConnectionError>> {
        let config = deps.config.jira.as_ref()?;
        Some(
            JiraDeliverer::new(config, deps.http.clone(), deps.store.clone())
                .map(|d| Arc::new(d) as Arc<dyn Deliver>),
        )
    }

    fn routes(&self, inbound: Arc<Inbound>) -> axum::Router {
        axum::Router::new()
            .route("/v1/tickets/jira/webhook", post(webhook::webhook))
            .with_state(inbound)
    }
}
