//! What Cordon owes another system, as stored: one entry of the durable outbox. The worker that
//! delivers entries lives in `crate::outbox`; the type lives here so the store can keep entries
//! without depending on their delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Time-ordered (UUID v7): the order entries were pushed.
    pub id: String,
    /// Which deliverer takes it: `jira`, `servicenow`, `slack`, `teams`, `discord`.
    pub target: String,
    /// Entries with the same key go out one at a time, in order (an incident id, a card id).
    pub key: String,
    /// What to do, in the deliverer's terms: `create`, `comment`, `update`...
    pub kind: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Given up on (a permanent error): kept for operators, no longer holding its key back.
    #[serde(default)]
    pub dead: bool,
    /// For the first entry of a coalesced delivery that failed: how many entries (this one and the
    /// next of its kind on its key) that try stood for. A retry stands for the same ones, since
    /// the other side may already show the first try and is looked up for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<u32>,
}

impl OutboxEntry {
    pub fn new(target: &str, key: &str, kind: &str, payload: Value) -> OutboxEntry {
        OutboxEntry {
            id: uuid::Uuid::now_v7().to_string(),
            target: target.to_owned(),
            key: key.to_owned(),
            kind: kind.to_owned(),
            payload,
            created_at: Utc::now(),
            attempts: 0,
            next_at: None,
            last_error: None,
            dead: false,
            covers: None,
        }
    }
}
