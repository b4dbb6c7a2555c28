//! The seam the chat platforms plug into: when a run asks for approval, every configured channel is
//! asked to post the request; when the approval is decided (by anyone, through any channel, the CLI
//! or the API), every channel is asked to update what it posted. Channels never block the engine:
//! a failing channel is logged, and approvals keep working through the CLI and the API.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::run::{Decision, Run};
use crate::store::StoreError;

/// An approval request as channels show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    pub run_id: String,
    pub step: String,
    pub playbook: String,
    pub incident_id: Option<String>,
    pub prompt: String,
    pub group: String,
    pub quorum: u32,
    pub timeout_at: DateTime<Utc>,
    /// What the approved steps will do: `{ step, action, inputs, note? }` each.
    pub plan: Vec<serde_json::Value>,
}

/// How an approval ended, for channels to show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalOutcome {
    pub approved: bool,
    pub decisions: Vec<Decision>,
}

/// Why a channel could not take a request or an outcome. The chat channel queues both for its
/// platforms in the outbox, so what can fail is the queueing; an outage of the platform only
/// delays the delivery.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The store did not take the entries.
    #[error(transparent)]
    Queue(#[from] StoreError),
    /// What was to be shown could not be written as an entry's payload.
    #[error("cannot encode the card: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A place approval requests are posted to and updated in (Slack, Teams, Discord).
#[async_trait]
pub trait ApprovalChannel: Send + Sync {
    /// `slack`, `teams`, `discord`.
    fn name(&self) -> &str;
    /// Shows a new request (a card with Approve / Deny).
    async fn post(&self, request: &ApprovalRequest) -> Result<(), ChannelError>;
    /// Shows the outcome where the request was posted (the card updated, its buttons gone).
    async fn update(
        &self,
        request: &ApprovalRequest,
        outcome: &ApprovalOutcome,
    ) -> Result<(), ChannelError>;
}

/// The approval requests of `run` that are open, for posting.
pub fn open_requests(run: &Run) -> Vec<ApprovalRequest> {
    run.steps
        .iter()
        .filter_map(|(step, state)| {
            let a = state.approval.as_ref()?;
            (a.outcome.is_none()).then(|| request(run, step, a))
        })
        .collect()
}

/// The request and outcome of approval `step` of `run`, once decided.
pub fn decided(run: &Run, step: &str) -> Option<(ApprovalRequest, ApprovalOutcome)> {
    let a = run.steps.get(step)?.approval.as_ref()?;
    let approved = a.outcome?;
    Some((
        request(run, step, a),
        ApprovalOutcome {
            approved,
            decisions: a.decisions.clone(),
        },
    ))
}

fn request(run: &Run, step: &str, a: &super::run::ApprovalState) -> ApprovalRequest {
    ApprovalRequest {
        run_id: run.id.clone(),
        step: step.to_owned(),
        playbook: run.playbook.clone(),
        incident_id: run.incident_id.clone(),
        prompt: a.prompt.clone(),
        group: a.group.clone(),
        quorum: a.quorum,
        timeout_at: a.timeout_at,
        plan: a.plan.clone(),
    }
}
