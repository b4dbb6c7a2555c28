//! The playbook engine: matches stored alerts to playbooks, runs them step by step on a worker pool,
//! persists every step, waits durably for approvals and timers, and resumes after a restart.

pub mod approval;
pub mod channel;
pub mod exec;
/// Runs as stored: the model's, re-exported where the engine's code has always named them.
pub use crate::model::run;
pub mod service;
pub mod testing;

pub use service::{Engine, EngineError, Playbooks};
pub mod watch;
