//! Chat-ops: one card per incident on Slack, Microsoft Teams and Discord, with the same approval
//! rules on all three.
//!
//! The engine asks the [`ChatChannel`] to post and update approval requests, and tells the
//! [`ChatWatcher`] of incident events; both only push to the durable outbox, whose per-platform
//! deliverers (`slack`, `teams`, `discord`) post cards, update them in place and write thread
//! replies. A chat outage delays cards and loses none, and approvals keep working through the CLI
//! and the API meanwhile. Clicks come back through each platform's verified endpoint and go to
//! [`click`], which applies the approver rules and says what to answer the person.

pub mod commands;
pub mod platform;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use commands::{Answer, Command, Commands, Dialect};
pub use platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};

use crate::engine::EngineError;
use crate::engine::approval::DecisionError;
use crate::engine::channel::{ApprovalChannel, ApprovalOutcome, ApprovalRequest, ChannelError};
use crate::engine::service::Engine;
use crate::engine::watch::{IncidentEvent, Watcher};
use crate::http::ApiError;
use crate::outbox::{Outbox, OutboxEntry};
use crate::store::Store;

/// Declares the chat platforms: each name is a folder `chat/<name>/` (see [`platform`]) whose
/// `Config` is the `chat.<name>` section. Adding a platform is one line here.
macro_rules! chat_platforms {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $( $(#[$attr])* pub mod $name; )*

        /// The `chat:` config section: the platforms in use and who may trigger playbooks from
        /// chat.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ChatConfig {
            $( $(#[$attr])* #[serde(default)] pub $name: Option<$name::Config>, )*
            /// The approver group whose members may start playbooks by hand from chat
            /// (`/cordon run <playbook> key=value ...`); nobody when unset.
            #[serde(default)]
            pub triggers: Option<String>,
        }

        impl ChatConfig {
            /// The configured platforms' sections, by name, in the order of the list.
            pub fn sections(&self) -> Vec<(&'static str, &dyn PlatformConfig)> {
                let mut out: Vec<(&'static str, &dyn PlatformConfig)> = Vec::new();
                $(
                    $(#[$attr])*
                    if let Some(section) = &self.$name {
                        out.push((stringify!($name), section));
                    }
                )*
                out
            }
        }

        /// Every platform Cordon knows, with the error code its routes answer while it is not
        /// configured.
        #[allow(clippy::vec_init_then_push, reason = "an entry may be configured out (`#[cfg]`)")]
        fn known() -> Vec<(&'static str, &'static str)> {
            let mut out = Vec::new();
            $(
                $(#[$attr])*
                out.push((stringify!($name), concat!(stringify!($name), "_not_configured")));
            )*
            out
        }
    };
}

chat_platforms! {
    slack,
    teams,
    discord,
    #[cfg(test)]
    fake,
}

impl ChatConfig {
    /// Every secret in the section (for the warning about local defaults).
    pub fn secrets(&self) -> Vec<&crate::config::Secret> {
        self.sections()
            .into_iter()
            .flat_map(|(_, section)| section.secrets())
            .collect()
    }

    /// The configured platforms' names.
    pub fn platforms(&self) -> Vec<&'static str> {
        self.sections().into_iter().map(|(name, _)| name).collect()
    }
}

/// Starts every configured platform and registers its deliverer with the outbox.
pub async fn platforms(
    config: &ChatConfig,
    deps: &ChatDeps,
) -> Result<Vec<Arc<dyn ChatPlatform>>, PlatformError> {
    let mut out = Vec::new();
    for (name, section) in config.sections() {
        let platform = section.start(deps).await?;
        debug_assert_eq!(platform.name(), name, "a platform's name is its config key");
        deps.outbox.register(name, platform.clone().deliverer());
        out.push(platform);
    }
    Ok(out)
}

/// The routes of the started platforms, and for any other `/v1/chat/<platform>/...` path a 404
/// that says the platform is not configured.
pub fn routes(platforms: &[Arc<dyn ChatPlatform>]) -> Router {
    platforms.iter().fold(
        Router::new().route(
            "/v1/chat/{platform}/{*rest}",
            axum::routing::any(
                |axum::extract::Path((platform, _)): axum::extract::Path<(String, String)>| async move {
                    let code = known()
                        .into_iter()
                        .find(|(name, _)| *name == platform)
                        .map_or("not_found", |(_, code)| code);
                    ApiError::not_found(
                        code,
                        format!("chat platform `{platform}` is not configured on this server (chat.{platform})"),
                    )
                },
            ),
        ),
        |router, platform| router.merge(platform.clone().routes()),
    )
}

/// Posts a text to incidents' chat threads on every configured platform: `chat.notify` in
/// playbooks.
pub struct Notes {
    outbox: Arc<Outbox>,
    platforms: Vec<&'static str>,
}

impl Notes {
    pub fn new(outbox: Arc<Outbox>, platforms: Vec<&'static str>) -> Notes {
        Notes { outbox, platforms }
    }
}

#[async_trait]
impl crate::actions::builtin::Notifier for Notes {
    fn platforms(&self) -> Vec<&'static str> {
        self.platforms.clone()
    }

    async fn note(&self, incident_id: &str, text: &str) -> Result<(), crate::store::StoreError> {
        let note = ChatOp::ThreadNote(Note {
            incident_id: incident_id.to_owned(),
            text: text.to_owned(),
            standalone: true,
        });
        let entries = self
            .platforms
            .iter()
            .filter_map(|p| note.entry(p, incident_id).ok())
            .collect();
        self.outbox.push(entries).await
    }
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Everything a card shows: the incident, what is asked, and (once decided) the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// `run id:step`: the approval the buttons decide.
    pub run_id: String,
    pub step: String,
    pub playbook: String,
    pub incident_id: Option<String>,
    pub title: String,
    /// 0–10.
    pub severity: u8,
    pub resource: Option<String>,
    pub actor: Option<String>,
    /// What is asked (the playbook's prompt, with its values filled in).
    pub prompt: String,
    pub group: String,
    pub quorum: u32,
    pub timeout_at: DateTime<Utc>,
    /// Verdicts of enrichment steps so far: `step: summary`.
    #[serde(default)]
    pub enrichment: Vec<String>,
    /// Evidence collected so far: `kind at location`.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What approving will do: `action key=value, ...` per step.
    #[serde(default)]
    pub plan: Vec<String>,
    /// Guardrail notes on those steps.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The decision, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CardOutcome>,
}

/// How the approval ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardOutcome {
    pub approved: bool,
    /// `identity (approve|deny via platform at time)`, in order.
    pub decided_by: Vec<String>,
    pub at: DateTime<Utc>,
}

impl Card {
    /// The card for `request`, filled from the store (the incident, its first alert, the run's
    /// enrichment outputs and the incident's evidence).
    pub async fn build(store: &dyn Store, request: &ApprovalRequest) -> Card {
        let mut card = Card {
            run_id: request.run_id.clone(),
            step: request.step.clone(),
            playbook: request.playbook.clone(),
            incident_id: request.incident_id.clone(),
            title: request.prompt.clone(),
            severity: 0,
            resource: None,
            actor: None,
            prompt: request.prompt.clone(),
            group: request.group.clone(),
            quorum: request.quorum,
            timeout_at: request.timeout_at,
            enrichment: Vec::new(),
            evidence: Vec::new(),
            plan: request.plan.iter().map(plan_line).collect(),
            notes: request
                .plan
                .iter()
                .filter_map(|p| p["note"].as_str().map(str::to_owned))
                .collect(),
            outcome: None,
        };
        if let Some(id) = &request.incident_id
            && let Ok(Some(incident)) = store.incident(id).await
        {
            card.title = incident.title.clone();
            card.severity = incident.severity;
            card.evidence = incident
                .evidence
                .iter()
                .map(|e| {
                    format!(
                        "{} at {}",
                        e["kind"].as_str().unwrap_or("evidence"),
                        e["location"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let query = crate::store::AlertQuery {
                incident_id: Some(id.clone()),
                limit: 1,
                ..Default::default()
            };
            if let Ok(alerts) = store.alerts(&query).await
                && let Some(alert) = alerts.first()
            {
                let resource = &alert.resource;
                card.resource = resource.id.as_ref().map(|rid| {
                    let kind = resource.kind.as_deref().unwrap_or("resource");
                    let place = [resource.region.as_deref(), resource.account.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", ");
                    if place.is_empty() {
                        format!("{kind} {rid}")
                    } else {
                        format!("{kind} {rid} ({place})")
                    }
                });
                card.actor = alert.actor.as_ref().map(|a| {
                    let name = a.name.as_deref().or(a.id.as_deref()).unwrap_or("?");
                    match a.kind.as_deref() {
                        Some(kind) => format!("{kind} {name}"),
                        None => name.to_owned(),
                    }
                });
            }
        }
        if let Ok(Some(run)) = store.run(&request.run_id).await {
            card.enrichment = enrichment_verdicts(&run);
        }
        card
    }

    /// The card once `outcome` is known.
    pub fn decided(mut self, outcome: &ApprovalOutcome) -> Card {
        self.outcome = Some(CardOutcome {
            approved: outcome.approved,
            decided_by: outcome
                .decisions
                .iter()
                .map(|d| {
                    format!(
                        "{} ({} via {} at {})",
                        d.identity,
                        if d.approve { "approve" } else { "deny" },
                        d.via,
                        d.at.format("%Y-%m-%d %H:%M UTC")
                    )
                })
                .collect(),
            at: outcome
                .decisions
                .last()
                .map(|d| d.at)
                .unwrap_or_else(Utc::now),
        });
        self
    }

    /// The outbox key of the card's deliveries: one card per incident (its run's, without one).
    pub fn key(&self) -> String {
        self.incident_id
            .clone()
            .unwrap_or_else(|| format!("run:{}", self.run_id))
    }

    /// `severity N/10 · resource · actor`, for headers.
    pub fn facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![("Severity".to_owned(), format!("{}/10", self.severity))];
        if let Some(resource) = &self.resource {
            facts.push(("Resource".into(), resource.clone()));
        }
        if let Some(actor) = &self.actor {
            facts.push(("Actor".into(), actor.clone()));
        }
        facts.push((
            "Approvers".into(),
            format!("{} (quorum {})", self.group, self.quorum),
        ));
        facts.push((
            "Times out".into(),
            self.timeout_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        ));
        for line in &self.plan {
            facts.push(("Will do".into(), line.clone()));
        }
        for line in &self.notes {
            facts.push(("Guardrail".into(), line.clone()));
        }
        for line in &self.enrichment {
            facts.push(("Enrichment".into(), line.clone()));
        }
        for line in &self.evidence {
            facts.push(("Evidence".into(), line.clone()));
        }
        facts
    }
}

/// `aws-ec2.isolate_instance instance_id=i-0abc, region=us-east-1`.
fn plan_line(step: &Value) -> String {
    let inputs = step["inputs"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("{} {inputs}", step["action"].as_str().unwrap_or("?"))
        .trim_end()
        .to_owned()
}

/// `step: summary` for each finished enrichment-looking step output (a score, a verdict).
fn enrichment_verdicts(run: &crate::engine::run::Run) -> Vec<String> {
    let mut out = Vec::new();
    for (step, state) in &run.steps {
        let Some(output) = state.output.as_object() else {
            continue;
        };
        let keys = ["score", "malicious", "classification", "matched", "verdict"];
        let parts: Vec<String> = keys
            .iter()
            .filter_map(|k| output.get(*k).map(|v| format!("{k} {}", plain(v))))
            .collect();
        if !parts.is_empty() {
            out.push(format!("{step}: {}", parts.join(", ")));
        }
    }
    out
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Outbox entry kinds the platform deliverers handle. Payloads: `post_card`/`update_card` carry
/// a [`Card`]; `thread_note` carries `{ "incident_id", "text" }` (posted in the incident's card
/// thread when there is one, dropped otherwise).
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

    /// The outbox entry asking `platform` for this (entries of one `key` go out in order).
    pub fn entry(&self, platform: &str, key: &str) -> Result<OutboxEntry, serde_json::Error> {
        let payload = match self {
            ChatOp::PostCard(card) | ChatOp::UpdateCard(card) => serde_json::to_value(card)?,
            ChatOp::ThreadNote(note) => serde_json::to_value(note)?,
        };
        Ok(OutboxEntry::new(platform, key, self.kind(), payload))
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

/// The engine's approval channel for chat: posts and updates go to the outbox, one entry per
/// configured platform.
pub struct ChatChannel {
    store: Arc<dyn Store>,
    outbox: Arc<Outbox>,
    platforms: Vec<&'static str>,
}

impl ChatChannel {
    pub fn new(store: Arc<dyn Store>, outbox: Arc<Outbox>, platforms: Vec<&'static str>) -> Self {
        ChatChannel {
            store,
            outbox,
            platforms,
        }
    }

    async fn push(&self, op: ChatOp, key: &str) -> Result<(), ChannelError> {
        let entries = self
            .platforms
            .iter()
            .map(|p| op.entry(p, key))
            .collect::<Result<_, _>>()?;
        Ok(self.outbox.push(entries).await?)
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
    outbox: Arc<Outbox>,
    platforms: Vec<&'static str>,
}

/// How much of the report goes into a thread (chat messages have limits; the whole report is in
/// `cordon incidents report` and on the ticket).
const REPORT_IN_THREAD: usize = 2800;

impl ChatWatcher {
    pub fn new(store: Arc<dyn Store>, outbox: Arc<Outbox>, platforms: Vec<&'static str>) -> Self {
        ChatWatcher {
            store,
            outbox,
            platforms,
        }
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

    /// The thread line for an event, if it is one chat shows.
    fn note(event: &IncidentEvent) -> Option<String> {
        use crate::model::event::Detail;
        use crate::model::run::{RunStatus, StepStatus};
        let step = event.step.as_deref().unwrap_or("?");
        let actor = event.actor.as_deref().unwrap_or("?");
        match event.typed_detail() {
            Detail::AlertAdded(added) => {
                Some(format!("New alert in this incident: {}", added.alert_id))
            }
            Detail::StepFinished(finished) if finished.status == StepStatus::Failed => {
                Some(format!(
                    "Step `{step}` failed: {}",
                    finished.error.as_deref().unwrap_or("")
                ))
            }
            Detail::StepUndone(undone) => Some(format!(
                "Step `{step}` undone by {actor} with `{}`",
                undone.action
            )),
            Detail::EvidenceCollected(evidence) => Some(format!(
                "Evidence: {} at {}",
                evidence.kind().unwrap_or("?"),
                evidence.location().unwrap_or("?")
            )),
            Detail::RunState(state)
                if matches!(state.to, RunStatus::Succeeded | RunStatus::Failed) =>
            {
                Some(format!(
                    "Playbook `{}` {}",
                    event.playbook.as_deref().unwrap_or("?"),
                    state.to
                ))
            }
            Detail::IncidentResolved(_) => Some(format!("Incident resolved by {actor}")),
            _ => None,
        }
    }
}

#[async_trait]
impl Watcher for ChatWatcher {
    async fn incident_events(&self, events: &[IncidentEvent]) {
        let mut entries = Vec::new();
        for event in events {
            let Some(mut text) = ChatWatcher::note(event) else {
                continue;
            };
            if event.kind == crate::model::event::EventKind::IncidentResolved
                && let Some(report) = self.report(&event.incident_id).await
            {
                text = format!("{text}\n\n{report}");
            }
            let note = ChatOp::ThreadNote(Note {
                incident_id: event.incident_id.clone(),
                text,
                standalone: false,
            });
            for platform in &self.platforms {
                entries.extend(note.entry(platform, &event.incident_id).ok());
            }
        }
        if let Err(e) = self.outbox.push(entries).await {
            tracing::error!(error = %e, "could not record chat thread notes");
        }
    }
}

/// A person clicking in chat, as the platform identified them.
#[derive(Debug, Clone)]
pub struct ChatUser {
    /// `slack:U123`, `teams:<aad object id>`, `discord:<user id>`.
    pub identity: String,
    /// Platform groups the platform says they are in (`slack-group:S1`, `discord-role:R1`,
    /// `teams-group:<id>`), which approver groups may list.
    pub groups: Vec<String>,
    /// Display name, for replies.
    pub name: String,
}

/// What to tell the person who clicked (ephemeral where the platform allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickReply {
    /// The decision counted.
    pub accepted: bool,
    pub text: String,
}

/// Applies an Approve/Deny click from `platform` with the engine's rules (membership, requester,
/// quorum, already decided); refusals are audited by the engine and explained to the person.
pub async fn click(
    engine: &Arc<Engine>,
    platform: &str,
    user: &ChatUser,
    run_id: &str,
    step: &str,
    approve: bool,
) -> ClickReply {
    let verb = if approve { "approval" } else { "denial" };
    match engine
        .decide_as(
            run_id,
            step,
            &user.identity,
            &user.groups,
            approve,
            platform,
        )
        .await
    {
        Ok(decided) => ClickReply {
            accepted: true,
            text: match decided.outcome {
                Some(true) => format!("Approved: {run_id} {step} goes ahead."),
                Some(false) => format!("Denied: {run_id} {step} will not run."),
                None => format!(
                    "Your {verb} is recorded ({} of {} needed).",
                    decided.approvals, decided.quorum
                ),
            },
        },
        Err(EngineError::Decision(error)) => ClickReply {
            accepted: false,
            text: match &error {
                DecisionError::NotAllowed(_, group) => {
                    format!("Not allowed: you are not in the approver group `{group}`.")
                }
                DecisionError::AlreadyDecided(by) => format!("Already decided by {by}."),
                other => other.to_string(),
            },
        },
        Err(other) => ClickReply {
            accepted: false,
            text: format!("Could not record your {verb}: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_reads_back_from_its_entry_and_others_are_the_platforms_own() {
        let note = ChatOp::ThreadNote(Note {
            incident_id: "inc-1".into(),
            text: "Step `isolate` failed".into(),
            standalone: true,
        });
        let entry = note.entry("slack", "inc-1").unwrap();
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
}
