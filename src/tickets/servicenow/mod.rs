//! ServiceNow (Table API on `incident`, Attachment API): one incident record per Cordon incident,
//! a work note per synced event, state and close code on resolution, the report attached; its
//! business rule's calls resolve, reopen and approve back.
//!
//! - [`config`]: `tickets.servicenow` and a profile's `servicenow:` block.
//! - [`payload`]: the record's create payload and the markers that find a work note again.
//! - [`deliver`]: the outbox deliverer (the calls it makes are listed there).
//! - [`webhook`]: `POST /v1/tickets/servicenow/webhook`.

pub mod config;
pub mod deliver;
pub mod payload;
pub mod webhook;

use std::sync::Arc;

use axum::routing::post;
use serde_json::{Value, json};

pub use config::{ServiceNowConfig, ServiceNowProfile};
pub use deliver::ServiceNowDeliverer;
pub use payload::{create_payload, marker, urgency_impact};

use super::webhook::Inbound;
use super::{ConnectionError, Rendered, TicketDeps, TicketProfile, TicketSystem};
use crate::engine::watch::IncidentEvent;
use crate::model::event::Detail;
use crate::outbox::Deliver;

/// ServiceNow, as a [`TicketSystem`].
pub struct ServiceNow;

impl TicketSystem for ServiceNow {
    fn name(&self) -> &'static str {
        "servicenow"
    }

    fn files(&self, profile: &TicketProfile) -> bool {
        profile.servicenow.is_some()
    }

    fn create(&self, profile: &TicketProfile, incident_id: &str, fields: Rendered) -> Value {
        create_payload(profile, incident_id, fields)
    }

    fn resolved(&self, profile: &TicketProfile, event: &IncidentEvent) -> Value {
        let sn = profile.servicenow.as_ref();
        let via = match event.typed_detail() {
            Detail::IncidentResolved(changed) => changed.via,
            _ => "cordon".to_owned(),
        };
        json!({ "incident": event.incident_id, "to": "done",
            "state": sn.map(|s| s.resolved_state.clone()),
            "close_code": sn.map(|s| s.close_code.clone()),
            "close_notes": format!("Resolved in Cordon by {} (via {via}).", event.actor.as_deref().unwrap_or("system")) })
    }

    fn reopened(&self, profile: &TicketProfile, event: &IncidentEvent) -> Option<Value> {
        let sn = profile.servicenow.as_ref()?;
        Some(json!({ "incident": event.incident_id, "to": "reopen", "state": sn.reopen_state }))
    }

    fn deliverer(&self, deps: &TicketDeps) -> Option<Result<Arc<dyn Deliver>, ConnectionError>> {
        let config = deps.config.servicenow.as_ref()?;
        Some(
            ServiceNowDeliverer::new(config, deps.http.clone(), deps.store.clone())
                .map(|d| Arc::new(d) as Arc<dyn Deliver>),
        )
    }

    fn routes(&self, inbound: Arc<Inbound>) -> axum::Router {
        axum::Router::new()
            .route("/v1/tickets/servicenow/webhook", post(webhook::webhook))
            .with_state(inbound)
    }
}
