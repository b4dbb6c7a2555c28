//! What Cordon sends to chat, through the durable outbox: approval cards and their updates (the
//! engine's [`ChatChannel`]), thread notes about the incident ([`ChatWatcher`]) and `chat.notify`
//! ([`Notes`]), each a [`ChatOp`] per configured platform.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Card;
use crate::engine::channel::{ApprovalChannel, ApprovalOutcome, ApprovalRequest, ChannelError};
use crate::engine::watch::{IncidentEvent, Watcher};
use crate::outbox::digest::{self, Topic};
use crate::outbox::{DeliveryError, Outbox, OutboxEntry};
use crate::store::Store;

/// Outbox entry kinds the platform deliverers handle. Payloads: `post_card`/`update_card` carry
/// a [`Card`]; `thread_note` carries a [`Note`] (posted in the incident's card thread when there
/// is one, dropped otherwise). Thread notes are coalesced: a run of them on one incident goes out
/// as one note ([`merge_notes`]), at most one per `chat.note_interval`.
pub const POST_CARD: &str = "post_card";
pub const UPDATE_CARD: &str = "update_card";
pub const THREAD_NOTE: &str = "thread_note";

/// A thread note's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub incident_id: String,
    pub text: String,
    /// From `chat.notify`: posted in the channel when the incident has no card yet (other notes
    /// are dropped then: the card, when it comes, shows what the incident holds).
    #[serde(default)]
    pub standalone: bool,
    /// What the note is about, for the tally of a coalesced note.
    #[serde(default)]
    pub topic: Topic,
    /// For a new alert: its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Note {
    /// A note of `text` about `topic` in `incident_id`'s thread.
    pub fn new(incident_id: &str, text: String, topic: Topic) -> Note {
        Note {
            incident_id: incident_id.to_owned(),
            text,
            standalone: false,
            topic,
            source: None,
        }
    }
}

/// New alerts a coalesced note names one by one; the rest are counted.
const ALERTS_NAMED: usize = 5;

/// The payload of one note standing for the `thread_note` entries `entries` (oldest first):
/// the tally of what they say ("12 more alerts from 3 sources, 1 step failed"), the first few new
/// alerts, and everything else line by line (failures, evidence, results, the report). One entry
/// stands for itself.
pub fn merge_notes(entries: &[OutboxEntry]) -> Result<serde_json::Value, DeliveryError> {
    if let [one] = entries {
        return Ok(one.payload.clone());
    }
    let notes = entries
        .iter()
        .map(|e| serde_json::from_value::<Note>(e.payload.clone()))
        .collect::<Result<Vec<Note>, _>>()
        .map_err(|e| {
            DeliveryError::permanent(format!("a `thread_note` that does not read: {e}"))
        })?;
    let Some(first) = notes.first() else {
        return Err(DeliveryError::permanent("no thread notes to merge"));
    };
    let mut lines = vec![digest::headline(
        notes.iter().map(|n| (n.topic, n.source.as_deref())),
    )];
    let alerts: Vec<&Note> = notes.iter().filter(|n| n.topic == Topic::Alert).collect();
    lines.extend(alerts.iter().take(ALERTS_NAMED).map(|n| n.text.clone()));
    if alerts.len() > ALERTS_NAMED {
        lines.push(format!(
            "… and {} more (`cordon incidents report {}` lists every alert)",
            alerts.len() - ALERTS_NAMED,
            first.incident_id
        ));
    }
    lines.extend(
        notes
            .iter()
            .filter(|n| n.topic != Topic::Alert)
            .map(|n| n.text.clone()),
    );
    let merged = Note {
        incident_id: first.incident_id.clone(),
        text: lines.join("\n"),
        standalone: notes.iter().any(|n| n.standalone),
        topic: Topic::Message,
        source: None,
    };
    serde_json::to_value(merged)
        .map_err(|e| DeliveryError::permanent(format!("cannot encode a merged note: {e}")))
}

/// What a chat outbox entry asks of a platform: its kind and payload, read once for every
/// deliverer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatOp {
    /// The incident's card (or, for a later request of the incident, a card in its thread).
    PostCard(Card),
    /// The decided card, in place of the request's message.
    UpdateCard(Card),
    /// A reply in the incident card's thread.
    ThreadNote(Note),
}

impl ChatOp {
    /// The entry's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChatOp::PostCard(_) => POST_CARD,
            ChatOp::UpdateCard(_) => UPDATE_CARD,
            ChatOp::ThreadNote(_) => THREAD_NOTE,
        }
    }

    /// The entry's payload.
    fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            ChatOp::PostCard(card) | ChatOp::UpdateCard(card) => serde_json::to_value(card),
            ChatOp::ThreadNote(note) => serde_json::to_value(note),
        }
    }

    /// The operation `entry` asks for; `None` for a kind of the platform's own. A payload that
    /// does not read is a permanent failure: retrying cannot fix it.
    pub fn read(entry: &OutboxEntry) -> Result<Option<ChatOp>, crate::outbox::DeliveryError> {
        let bad = |e: serde_json::Error| {
            crate::outbox::DeliveryError::permanent(format!(
                "a `{}` entry that does not read: {e}",
                entry.kind
            ))
        };
        let card = || serde_json::from_value::<Card>(entry.payload.clone()).map_err(bad);
        Ok(Some(match entry.kind.as_str() {
            POST_CARD => ChatOp::PostCard(card()?),
            UPDATE_CARD => ChatOp::UpdateCard(card()?),
            THREAD_NOTE => {
                ChatOp::ThreadNote(serde_json::from_value(entry.payload.clone()).map_err(bad)?)
            }
            _ => return Ok(None),
        }))
    }
}

/// Where chat operations go: the outbox, one entry per configured platform.
#[derive(Clone)]
pub struct Fanout {
    outbox: Arc<Outbox>,
    platforms: Vec<&'static str>,
}

impl Fanout {
    pub fn new(outbox: Arc<Outbox>, platforms: Vec<&'static str>) -> Fanout {
        Fanout { outbox, platforms }
    }

    /// The entries asking every platform for `op` (entries of one `key` go out in order); the
    /// payload is serialized once.
    pub fn entries(&self, op: &ChatOp, key: &str) -> Result<Vec<OutboxEntry>, serde_json::Error> {
        let payload = op.payload()?;
        Ok(self
            .platforms
            .iter()
            .map(|p| OutboxEntry::new(p, key, op.kind(), payload.clone()))
            .collect())
    }
}

/// The engine's approval channel for chat: posts and updates go to the outbox, one entry per
/// configured platform.
pub struct ChatChannel {
    store: Arc<dyn Store>,
    fanout: Fanout,
}

impl ChatChannel {
    pub fn new(store: Arc<dyn Store>, fanout: Fanout) -> Self {
        ChatChannel { store, fanout }
    }

    async fn push(&self, op: ChatOp, key: &str) -> Result<(), ChannelError> {
        let entries = self.fanout.entries(&op, key)?;
        Ok(self.fanout.outbox.push(entries).await?)
    }
}

#[async_trait]
impl ApprovalChannel for ChatChannel {
    fn name(&self) -> &str {
        "chat"
    }

    async fn post(&self, request: &ApprovalRequest) -> Result<(), ChannelError> {
        let card = Card::build(&*self.store, request).await;
        let key = card.key();
        self.push(ChatOp::PostCard(card), &key).await
    }

    async fn update(
        &self,
        request: &ApprovalRequest,
        outcome: &ApprovalOutcome,
    ) -> Result<(), ChannelError> {
        let card = Card::build(&*self.store, request).await.decided(outcome);
        let key = card.key();
        self.push(ChatOp::UpdateCard(card), &key).await
    }
}

/// Thread replies: later alerts of an incident, the results of its actions, and its report when
/// it is resolved.
pub struct ChatWatcher {
    store: Arc<dyn Store>,
    fanout: Fanout,
}

/// How much of the report goes into a thread (chat messages have limits; the whole report is in
/// `cordon incidents report` and on the ticket).
const REPORT_IN_THREAD: usize = 2800;

impl ChatWatcher {
    pub fn new(store: Arc<dyn Store>, fanout: Fanout) -> Self {
        ChatWatcher { store, fanout }
    }

    /// The resolved incident's report, cut to fit a message.
    async fn report(&self, incident_id: &str) -> Option<String> {
        let report = crate::tickets::report::markdown(&*self.store, incident_id)
            .await
            .ok()??;
        if report.chars().count() <= REPORT_IN_THREAD {
            return Some(report);
        }
        let cut: String = report.chars().take(REPORT_IN_THREAD).collect();
        Some(format!(
            "{cut}\n\n… (the full report: `cordon incidents report {incident_id}`)"
        ))
    }

    /// The thread note for an event, if it is one chat shows.
    async fn note(&self, event: &IncidentEvent) -> Option<Note> {
        use crate::model::event::Detail;
        use crate::model::run::{RunStatus, StepStatus};
        let step = event.step.as_deref().unwrap_or("?");
        let actor = event.actor.as_deref().unwrap_or("?");
        let note = |text: String, topic: Topic| Some(Note::new(&event.incident_id, text, topic));
        match event.typed_detail() {
            Detail::AlertAdded(added) => {
                // The source, for the tally of a coalesced note ("from 3 sources").
                let source = match self.store.alert(&added.alert_id).await {
                    Ok(Some(alert)) => Some(alert.source),
                    _ => None,
                };
                let text = match &source {
                    Some(source) => {
                        format!("New alert in this incident: {} ({source})", added.alert_id)
                    }
                    None => format!("New alert in this incident: {}", added.alert_id),
                };
                Some(Note {
                    source,
                    ..Note::new(&event.incident_id, text, Topic::Alert)
                })
            }
            Detail::StepFinished(finished) if finished.status == StepStatus::Failed => note(
                format!(
                    "Step `{step}` failed: {}",
                    finished.error.as_deref().unwrap_or("")
                ),
                Topic::StepFailed,
            ),
            Detail::StepUndone(undone) => note(
                format!("Step `{step}` undone by {actor} with `{}`", undone.action),
                Topic::Undone,
            ),
            Detail::EvidenceCollected(evidence) => note(
                format!(
                    "Evidence: {} at {}",
                    evidence.kind().unwrap_or("?"),
                    evidence.location().unwrap_or("?")
                ),
                Topic::Evidence,
            ),
            Detail::RunState(state)
                if matches!(state.to, RunStatus::Succeeded | RunStatus::Failed) =>
            {
                note(
                    format!(
                        "Playbook `{}` {}",
                        event.playbook.as_deref().unwrap_or("?"),
                        state.to
                    ),
                    Topic::RunFinished,
                )
            }
            Detail::IncidentResolved(_) => {
                note(format!("Incident resolved by {actor}"), Topic::Resolved)
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Watcher for ChatWatcher {
    async fn incident_events(&self, events: &[IncidentEvent]) {
        let mut entries = Vec::new();
        for event in events {
            let Some(mut note) = self.note(event).await else {
                continue;
            };
            if event.kind == crate::model::event::EventKind::IncidentResolved
                && let Some(report) = self.report(&event.incident_id).await
            {
                note.text = format!("{}\n\n{report}", note.text);
            }
            let note = ChatOp::ThreadNote(note);
            entries.extend(
                self.fanout
                    .entries(&note, &event.incident_id)
                    .unwrap_or_default(),
            );
        }
        if let Err(e) = self.fanout.outbox.push(entries).await {
            tracing::error!(error = %e, "could not record chat thread notes");
        }
    }
}

/// Posts a text to incidents' chat threads on every configured platform: `chat.notify` in
/// playbooks.
pub struct Notes(pub Fanout);

#[async_trait]
impl crate::actions::builtin::Notifier for Notes {
    fn platforms(&self) -> Vec<&'static str> {
        self.0.platforms.clone()
    }

    async fn note(&self, incident_id: &str, text: &str) -> Result<(), crate::store::StoreError> {
        let note = ChatOp::ThreadNote(Note {
            standalone: true,
            ..Note::new(incident_id, text.to_owned(), Topic::Message)
        });
        let entries = self.0.entries(&note, incident_id).unwrap_or_default();
        self.0.outbox.push(entries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_reads_back_from_its_entry_and_others_are_the_platforms_own() {
        let note = ChatOp::ThreadNote(Note {
            standalone: true,
            ..Note::new("inc-1", "Step `isolate` failed".into(), Topic::StepFailed)
        });
        let entry = OutboxEntry::new("slack", "inc-1", note.kind(), note.payload().unwrap());
        assert_eq!(
            (entry.target.as_str(), entry.kind.as_str()),
            ("slack", THREAD_NOTE)
        );
        assert_eq!(ChatOp::read(&entry).unwrap(), Some(note));

        let reply = OutboxEntry::new("teams", "reply:1", "reply", serde_json::json!({}));
        assert_eq!(ChatOp::read(&reply).unwrap(), None);

        let broken = OutboxEntry::new("discord", "inc-1", POST_CARD, serde_json::json!({"x": 1}));
        let error = ChatOp::read(&broken).unwrap_err();
        assert!(error.is_permanent(), "{error}");
    }

    fn entry(note: Note) -> OutboxEntry {
        let op = ChatOp::ThreadNote(note);
        OutboxEntry::new("slack", "inc-1", op.kind(), op.payload().unwrap())
    }

    #[test]
    fn a_storm_of_notes_is_one_note_with_a_tally_a_few_alerts_and_everything_else() {
        let mut entries: Vec<OutboxEntry> = (0..12)
            .map(|i| {
                let source = ["aws.guardduty", "aws.securityhub", "falco"][i % 3];
                entry(Note {
                    source: Some(source.into()),
                    ..Note::new(
                        "inc-1",
                        format!("New alert in this incident: a{i} ({source})"),
                        Topic::Alert,
                    )
                })
            })
            .collect();
        entries.insert(
            3,
            entry(Note::new(
                "inc-1",
                "Step `isolate` failed: denied".into(),
                Topic::StepFailed,
            )),
        );
        let merged: Note = serde_json::from_value(merge_notes(&entries).unwrap()).unwrap();
        let lines: Vec<&str> = merged.text.lines().collect();
        assert_eq!(lines[0], "12 more alerts from 3 sources, 1 step failed:");
        assert_eq!(lines[1], "New alert in this incident: a0 (aws.guardduty)");
        assert_eq!(
            lines[6],
            "… and 7 more (`cordon incidents report inc-1` lists every alert)"
        );
        assert_eq!(lines[7], "Step `isolate` failed: denied");
        assert_eq!(lines.len(), 8);
        assert_eq!(merged.incident_id, "inc-1");
        assert!(!merged.standalone);

        // One note stands for itself.
        let one = &entries[..1];
        assert_eq!(merge_notes(one).unwrap(), one[0].payload);
    }
}
