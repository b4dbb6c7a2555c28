//! What happens to runs and incidents, as the audit log records it and watchers (chat threads,
//! tickets) hear it: an [`EventKind`], and for the kinds someone reads back, a typed [`Detail`].
//!
//! A kind is stored as the dotted string it always was (`run.state`, `step.finished`), so stored
//! entries and the audit chain's hashes do not change; a kind this version does not know (written
//! by another one, or by hand) is kept as [`EventKind::Other`] and written back as it came.
//!
//! The detail stays JSON where it is stored. [`Detail::parse`] reads it with its kind into one of
//! the structs below, which are also what the engine writes, so writer and readers share one
//! shape per kind. A detail that does not have its kind's shape (an entry of an older version,
//! one edited by hand) reads as [`Detail::Other`], as do the kinds nobody reads field by field.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::run::{RunStatus, StepStatus};

/// Defines [`EventKind`] from one table of variants and their stored names.
macro_rules! event_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// What kind of thing happened, stored as its dotted name.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[doc = $doc])* $variant,)*
            /// A kind this version does not know, kept as it was written.
            Other(String),
        }

        impl EventKind {
            /// Every kind this version knows.
            pub const ALL: &[EventKind] = &[$(EventKind::$variant),*];

            /// The kind as stored: `run.state`, `step.finished`, ...
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Other(name) => name,
                }
            }

            /// The kind stored as `name`.
            pub fn parse(name: &str) -> EventKind {
                match name {
                    $($name => EventKind::$variant,)*
                    other => EventKind::Other(other.to_owned()),
                }
            }
        }
    };
}

event_kinds! {
    /// A run was created (`detail`: playbook, trigger, alert, incident, dry run).
    RunCreated = "run.created",
    /// A run changed status ([`RunState`]).
    RunState = "run.state",
    /// A side-effect step is about to call its action ([`StepStarted`]).
    StepStarted = "step.started",
    /// A `call` step started its child run (`detail`: playbook, child run id).
    StepCalled = "step.called",
    /// A step finished, successfully or not ([`StepFinished`]).
    StepFinished = "step.finished",
    /// A step was skipped by its condition ([`StepFinished`]).
    StepSkipped = "step.skipped",
    /// A step failed an attempt and waits for the next.
    StepRetrying = "step.retrying",
    /// A step found started after a restart is tried again.
    StepResumed = "step.resumed",
    /// A step found started after a restart may have run and is not idempotent: a person decides.
    StepNeedsDecision = "step.needs_decision",
    /// A person chose to run such a step again.
    StepRetriedByPerson = "step.retried_by_person",
    /// A person chose to skip such a step.
    StepSkippedByPerson = "step.skipped_by_person",
    /// A person undid a finished step with its action's undo ([`StepUndone`]).
    StepUndone = "step.undone",
    /// An undo failed ([`StepUndoFailed`]).
    StepUndoFailed = "step.undo_failed",
    /// A run asked people to approve a step ([`ApprovalRequested`]).
    ApprovalRequested = "approval.requested",
    /// A person approved or rejected a step ([`ApprovalDecided`]).
    ApprovalDecided = "approval.decided",
    /// A decision was turned away, for example because its author may not approve
    /// ([`ApprovalRefused`]).
    ApprovalRefused = "approval.refused",
    /// An approval ran out of time ([`ApprovalTimedOut`]).
    ApprovalTimedOut = "approval.timed_out",
    /// An approval was settled when the run came back to it.
    ApprovalClosed = "approval.closed",
    /// A step collected a piece of evidence ([`EvidenceCollected`]).
    EvidenceCollected = "evidence.collected",
    /// A side-effect action was refused: an input names a protected resource.
    GuardrailProtected = "guardrail.protected",
    /// A side-effect action went over its blast radius and waits for approval.
    GuardrailBlastRadius = "guardrail.blast_radius",
    /// A new alert opened an incident ([`AlertAdded`]).
    IncidentOpened = "incident.opened",
    /// A new alert joined an open incident ([`AlertAdded`]).
    AlertAdded = "alert.added",
    /// An alert's source changed its state: resolved, suppressed, firing again
    /// ([`AlertStateChanged`]).
    AlertStateChanged = "alert.state_changed",
    /// A person (or a ticket) resolved an incident ([`IncidentStatusChanged`]).
    IncidentResolved = "incident.resolved",
    /// A person (or a ticket) reopened an incident ([`IncidentStatusChanged`]).
    IncidentReopened = "incident.reopened",
    /// A chat command was refused (who may not trigger what).
    TriggerRefused = "trigger.refused",
    /// A request or command was refused for want of a role (`{"role", "what", "via"}`).
    AccessRefused = "access.refused",
    /// A person was added or changed through the API (`{"person", "roles", "identities"}`).
    PersonSaved = "person.saved",
    /// A stored person was removed, and their tokens revoked.
    PersonRemoved = "person.removed",
    /// A personal token was created (`{"token", "person", "roles", "expires_at"}`; never the secret).
    TokenCreated = "token.created",
    /// A personal token was revoked.
    TokenRevoked = "token.revoked",
    /// A person asked to undo a finished step; the undo waits for approval in its own run.
    UndoRequested = "undo.requested",
    /// A ticket was filed for an incident ([`TicketCreated`]).
    TicketCreated = "ticket.created",
    /// A ticket was assigned in its system ([`TicketAssigned`]).
    TicketAssigned = "ticket.assigned",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventKind {
    fn from(name: &str) -> EventKind {
        EventKind::parse(name)
    }
}

impl From<String> for EventKind {
    fn from(name: String) -> EventKind {
        EventKind::parse(&name)
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventKind, D::Error> {
        Ok(EventKind::parse(&String::deserialize(deserializer)?))
    }
}

/// `alert.added` and `incident.opened`: the alert that joined, or opened, the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertAdded {
    pub alert_id: String,
}

/// `alert.state_changed`: the source of one of the incident's alerts says it is now in `state`.
/// The notification saying so is the alert `alert_id`, which follows the earlier alert `follows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertStateChanged {
    pub alert_id: String,
    pub follows: String,
    pub state: crate::alert::AlertState,
}

/// `run.state`: a run moved from one status to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub from: RunStatus,
    pub to: RunStatus,
    /// The step a run is held at, when it moves to `needs_decision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why a finished run failed. A finish always writes it (`null` when the run did not fail);
    /// other moves leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunState {
    /// A move from `from` to `to`, with no step or error.
    pub fn moved(from: RunStatus, to: RunStatus) -> RunState {
        RunState {
            from,
            to,
            step: None,
            error: None,
        }
    }
}

/// `step.started`: a side-effect action is about to run, recorded before it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStarted {
    pub action: String,
    pub attempt: u32,
    /// `run id:step id`, the same on every attempt.
    pub idempotency_key: Option<String>,
}

/// `step.finished` and `step.skipped`: how a step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFinished {
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<String>,
    /// The action was recorded, not performed.
    pub dry_run: bool,
    /// The identity the action's requests were signed as, when an integration says (the AWS role
    /// assumed in the resource's account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_as: Option<String>,
}

/// `step.undone`: the undo action that reversed a step, and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepUndone {
    pub action: String,
    pub output: Value,
}

/// `step.undo_failed`: the undo action that failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepUndoFailed {
    pub action: String,
    pub error: String,
}

/// `approval.requested`: what people are asked, who may answer, how many must, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    pub prompt: String,
    /// The approver group.
    pub group: String,
    pub quorum: u32,
    /// As written in the playbook (`30m`).
    pub timeout: String,
}

/// `approval.decided`: one person's decision, and where the approval stands after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub approve: bool,
    /// Where the decision came from: `api`, `cli`, `slack`, `teams`, `discord`, a ticket.
    pub via: String,
    /// `Some` when this decision settled the approval: granted or rejected.
    pub outcome: Option<bool>,
    pub approvals: usize,
    pub quorum: u32,
}

/// `approval.refused`: a decision turned away, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRefused {
    pub approve: bool,
    pub via: String,
    pub reason: String,
}

/// `approval.timed_out`: how the playbook settles an approval nobody decided in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalTimedOut {
    /// Granted, rejected, or `None`: closed without either.
    pub outcome: Option<bool>,
}

/// `evidence.collected`: one evidence record, whole, as the action returned it (records are
/// free-form beyond the fields read here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EvidenceCollected(pub Value);

impl EvidenceCollected {
    /// `ebs-snapshot`, `memory-image`, `activity-timeline`, ...
    pub fn kind(&self) -> Option<&str> {
        self.0["kind"].as_str()
    }

    /// Where it is kept: an ARN, a URL, an object key.
    pub fn location(&self) -> Option<&str> {
        self.0["location"].as_str()
    }

    pub fn sha256(&self) -> Option<&str> {
        self.0["sha256"].as_str()
    }
}

/// `incident.resolved` and `incident.reopened`: which incident, and through what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentStatusChanged {
    pub incident: String,
    /// `api`, `cli`, `slack`, a ticket system.
    pub via: String,
}

/// `ticket.created`: the ticket filed (or found) for an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketCreated {
    pub system: String,
    pub ticket: String,
    pub url: String,
}

/// `ticket.assigned`: who a ticket was assigned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketAssigned {
    pub system: String,
    pub ticket: String,
    pub to: String,
}

/// Defines [`Detail`]: one variant per kind read field by field, named as the kind.
macro_rules! details {
    ($($variant:ident($shape:ty),)*) => {
        /// An event's kind with its detail read into that kind's shape.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Detail {
            $($variant($shape),)*
            /// A kind read as plain JSON, or a detail without its kind's shape.
            Other(EventKind, Value),
        }

        impl Detail {
            /// Reads `detail` as the shape of `kind`.
            pub fn parse(kind: &EventKind, detail: &Value) -> Detail {
                let parsed = match kind {
                    $(EventKind::$variant => <$shape>::deserialize(detail).map(Detail::$variant),)*
                    _ => return Detail::Other(kind.clone(), detail.clone()),
                };
                parsed.unwrap_or_else(|_| Detail::Other(kind.clone(), detail.clone()))
            }

            /// The kind and the detail as stored. A shape holds only the fields it names, so a
            /// detail read with more gives back just those.
            pub fn into_parts(self) -> (EventKind, Value) {
                match self {
                    $(Detail::$variant(shape) => (EventKind::$variant, to_value(&shape)),)*
                    Detail::Other(kind, detail) => (kind, detail),
                }
            }
        }
    };
}

details! {
    RunState(RunState),
    StepStarted(StepStarted),
    StepFinished(StepFinished),
    StepSkipped(StepFinished),
    StepUndone(StepUndone),
    StepUndoFailed(StepUndoFailed),
    ApprovalRequested(ApprovalRequested),
    ApprovalDecided(ApprovalDecided),
    ApprovalRefused(ApprovalRefused),
    ApprovalTimedOut(ApprovalTimedOut),
    EvidenceCollected(EvidenceCollected),
    IncidentOpened(AlertAdded),
    AlertAdded(AlertAdded),
    AlertStateChanged(AlertStateChanged),
    IncidentResolved(IncidentStatusChanged),
    IncidentReopened(IncidentStatusChanged),
    TicketCreated(TicketCreated),
    TicketAssigned(TicketAssigned),
}

/// A shape as JSON. The shapes are plain structs of strings, numbers and JSON, which always
/// serialize.
fn to_value(shape: &impl Serialize) -> Value {
    serde_json::to_value(shape).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_is_stored_as_its_dotted_name_and_read_back() {
        for kind in EventKind::ALL {
            let stored = serde_json::to_value(kind).expect("json");
            assert_eq!(stored, json!(kind.as_str()));
            assert!(kind.as_str().contains('.'), "{kind}");
            assert_eq!(
                &serde_json::from_value::<EventKind>(stored).expect("read"),
                kind
            );
        }
        let names: std::collections::HashSet<_> =
            EventKind::ALL.iter().map(EventKind::as_str).collect();
        assert_eq!(names.len(), EventKind::ALL.len(), "two kinds share a name");
        assert_eq!(EventKind::parse("run.state"), EventKind::RunState);
        assert_eq!(EventKind::RunState, "run.state");
    }

    #[test]
    fn an_unknown_kind_is_kept_as_written() {
        let kind = EventKind::parse("incident.merged");
        assert_eq!(kind, EventKind::Other("incident.merged".into()));
        assert_eq!(
            serde_json::to_value(&kind).expect("json"),
            json!("incident.merged")
        );
        let detail = json!({ "into": "inc-2" });
        assert_eq!(
            Detail::parse(&kind, &detail).into_parts(),
            (kind.clone(), detail)
        );
    }

    #[test]
    fn details_read_into_their_kinds_shape_and_write_back_the_same_json() {
        let cases = [
            (EventKind::AlertAdded, json!({ "alert_id": "a-1" })),
            (
                EventKind::AlertStateChanged,
                json!({ "alert_id": "a-2", "follows": "a-1", "state": "resolved" }),
            ),
            (
                EventKind::RunState,
                json!({ "from": "running", "to": "needs_decision", "step": "isolate" }),
            ),
            (
                EventKind::RunState,
                json!({ "from": "queued", "to": "running" }),
            ),
            (
                EventKind::StepStarted,
                json!({ "action": "aws-ec2.isolate_instance", "attempt": 1, "idempotency_key": "r:isolate" }),
            ),
            (
                EventKind::StepFinished,
                json!({ "status": "failed", "attempts": 3, "error": "timed out", "dry_run": false }),
            ),
            (
                EventKind::StepSkipped,
                json!({ "status": "skipped", "attempts": 0, "error": null, "dry_run": false }),
            ),
            (
                EventKind::StepUndone,
                json!({ "action": "aws-ec2.release_instance", "output": { "ok": true } }),
            ),
            (
                EventKind::ApprovalRequested,
                json!({ "prompt": "Isolate?", "group": "secops", "quorum": 2, "timeout": "30m" }),
            ),
            (
                EventKind::ApprovalDecided,
                json!({ "approve": true, "via": "slack", "outcome": null, "approvals": 1, "quorum": 2 }),
            ),
            (EventKind::ApprovalTimedOut, json!({ "outcome": false })),
            (
                EventKind::IncidentResolved,
                json!({ "incident": "inc-1", "via": "cli" }),
            ),
        ];
        for (kind, detail) in cases {
            let parsed = Detail::parse(&kind, &detail);
            assert!(!matches!(parsed, Detail::Other(..)), "{kind}: {detail}");
            assert_eq!(parsed.into_parts(), (kind, detail));
        }
    }

    #[test]
    fn a_detail_without_its_kinds_shape_reads_as_plain_json() {
        let detail = json!({ "from": "running" });
        assert_eq!(
            Detail::parse(&EventKind::RunState, &detail),
            Detail::Other(EventKind::RunState, detail)
        );
        // Evidence records are free-form: kept whole, and what they lack reads as absent.
        let record = json!({ "kind": "disk", "size_gb": 8 });
        let Detail::EvidenceCollected(evidence) =
            Detail::parse(&EventKind::EvidenceCollected, &record)
        else {
            panic!("not evidence");
        };
        assert_eq!((evidence.kind(), evidence.location()), (Some("disk"), None));
        assert_eq!(
            Detail::EvidenceCollected(evidence).into_parts(),
            (EventKind::EvidenceCollected, record)
        );
    }
}
