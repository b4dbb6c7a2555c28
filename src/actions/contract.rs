//! The contract between the engine and the actions it runs: what a call carries ([`ActionCall`]),
//! how an action fails ([`ActionError`]), and how actions are found and run by name
//! ([`ActionRunner`]). The engine calls through it; the registry, the built-ins and the
//! integrations implement it, without knowing the engine.

use async_trait::async_trait;
use serde_json::Value;

use super::ActionSpec;
use crate::model::run::Run;

/// A call of an action.
#[derive(Debug, Clone, Default)]
pub struct ActionCall {
    pub run_id: String,
    pub step_id: String,
    pub playbook: String,
    pub incident_id: Option<String>,
    /// `run id:step id`: the same on every attempt of the step.
    pub idempotency_key: String,
    /// A dry run's call of an action that plans (`ActionSpec::plans`): the action describes what
    /// it would do and changes nothing; integrations' hosts refuse every request that writes.
    pub dry_run: bool,
}

impl ActionCall {
    /// The call of the step at address `step` in `run`; the idempotency key is `run id:step id`
    /// (`run id:step id:index` in a foreach item) on every attempt.
    pub fn for_step(run: &Run, playbook: &str, step: &str) -> ActionCall {
        ActionCall {
            run_id: run.id.clone(),
            step_id: step.to_owned(),
            playbook: playbook.to_owned(),
            incident_id: run.incident_id.clone(),
            idempotency_key: crate::model::run::idempotency_key(&run.id, step),
            dry_run: false,
        }
    }
}

/// An action that failed. `retryable` errors are retried per the step's `retry`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
    pub retryable: bool,
}

impl ActionError {
    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            retryable: true,
        }
    }
}

/// Runs actions by name.
#[async_trait]
pub trait ActionRunner: Send + Sync {
    fn spec(&self, name: &str) -> Option<ActionSpec>;
    /// Whether running `name` twice with these inputs is safe (the crash rule asks). Defaults to
    /// the action's description.
    fn idempotent(&self, name: &str, _inputs: &Value) -> bool {
        self.spec(name).is_some_and(|s| s.idempotent)
    }
    async fn call(
        &self,
        name: &str,
        inputs: Value,
        call: &ActionCall,
    ) -> Result<Value, ActionError>;
}
