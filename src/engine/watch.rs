//! Watchers: those who mirror incidents elsewhere (ticket systems, chat threads) hear of every
//! event of every run, after it is stored, and of incident changes made by people. A watcher only
//! records what it owes (in the durable outbox); it never calls out while the engine waits.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::exec::Event;
use super::run::Run;
use crate::model::event::{Detail, EventKind};

/// One thing that happened to an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentEvent {
    pub incident_id: String,
    /// The audit kind: `run.created`, `run.state`, `step.finished`, `approval.requested`,
    /// `evidence.collected`, `incident.resolved`, ...
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

impl IncidentEvent {
    /// The kind with the detail read into its shape.
    pub fn typed_detail(&self) -> Detail {
        Detail::parse(&self.kind, &self.detail)
    }

    /// The incident events of `events` in `run` (none when the run has no incident).
    pub fn of_run(run: &Run, events: &[Event]) -> Vec<IncidentEvent> {
        let Some(incident) = &run.incident_id else {
            return Vec::new();
        };
        let at = Utc::now();
        events
            .iter()
            .map(|e| IncidentEvent {
                incident_id: incident.clone(),
                kind: e.kind.clone(),
                run_id: Some(run.id.clone()),
                playbook: Some(run.playbook.clone()),
                step: e.step.clone(),
                actor: crate::model::people::shown_as(e.actor.as_deref(), &e.detail),
                detail: e.detail.clone(),
                at,
            })
            .collect()
    }
}

/// Hears incident events. Errors are the watcher's to log; they never fail the run.
#[async_trait]
pub trait Watcher: Send + Sync {
    async fn incident_events(&self, events: &[IncidentEvent]);
}
