//! Tickets: one Jira Cloud issue and/or ServiceNow incident per Cordon incident, kept in step with
//! what happens to it, both ways.
//!
//! Outbound, the [`TicketWatcher`] hears every incident event (after it is stored) and records
//! what each configured system is owed in the durable outbox: `create` once, then `comment` per
//! synced event, and on resolution a `transition` and the incident report as `attach` entries. The
//! entries of one ticket share an outbox key, so they go out one at a time, in order; the
//! deliverers ([`jira::JiraDeliverer`], [`servicenow::ServiceNowDeliverer`]) make every delivery
//! idempotent in effect: a create looks up the stored ticket, then the ticket by its label or
//! correlation id, before it creates; a comment or attachment whose earlier try may have reached
//! the other side is looked up by its marker before it is sent again.
//!
//! Comments are coalesced: a ticket gets at most one per `tickets.comment_interval`, standing for
//! every event since the last one ([`merge_comments`]). A 429 from a system holds every call to it
//! for its `Retry-After` ([`Connection::send`]); the entries wait, none is dropped.
//!
//! Inbound, [`webhook`] takes Jira's `jira:issue_updated` calls and ServiceNow business-rule calls:
//! a ticket moved to done resolves the incident, moved back reopens it, assignee changes are
//! audited, and a `/cordon approve|deny` comment by an approver decides an approval.
//!
//! [`report`] renders the incident report (Markdown or HTML), which is attached to tickets on
//! resolution and served at `GET /v1/incidents/{id}/report`.
//!
//! Ticket references live in the store's meta values, by namespace:
//! - [`NS_JIRA`] / incident id → `{"key", "id", "url"}`; [`NS_JIRA_ISSUE`] / issue id → incident id
//! - [`NS_SERVICENOW`] / incident id → `{"sys_id", "number", "url"}`
//! - [`NS_PROFILE`] / incident id → the profile name chosen for the incident (kept for its life)
//! - [`NS_QUEUED`] / `system:incident` → the create is in the outbox
//! - [`NS_SENDING`] / `system:incident` → the outbox entry last tried on that ticket

pub mod config;
pub mod report;
pub mod system;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

pub use config::{SyncEvent, TicketProfile, TicketsConfig};
pub use system::{ConnectionError, TicketOp, TicketSystem};

use crate::engine::Engine;
use crate::engine::watch::{IncidentEvent, Watcher};
use crate::failure::Failure;
use crate::model::event::EventKind;
use crate::outbox::digest::Topic;
use crate::outbox::{DeliveryError, Outbox, OutboxEntry};
use crate::script::{CompiledValue, Context, Scripts, Template};
use crate::store::{AlertQuery, Store, StoreError};

/// Jira issue of an incident.
pub const NS_JIRA: &str = "ticket.jira";
/// Incident of a Jira issue id.
pub const NS_JIRA_ISSUE: &str = "ticket.jira.issue";
/// ServiceNow incident record of an incident.
pub const NS_SERVICENOW: &str = "ticket.servicenow";
/// Profile chosen for an incident.
pub const NS_PROFILE: &str = "ticket.profile";
/// Whether a ticket's create entry was pushed.
pub const NS_QUEUED: &str = "ticket.queued";
/// The entry last tried on a ticket (a later try looks for its effect before repeating it).
pub const NS_SENDING: &str = "ticket.sending";
/// Inbound commands already handled (webhooks are retried).
pub const NS_INBOUND: &str = "ticket.inbound";

/// Declares the ticket systems: each name is a folder `tickets/<name>/` (see [`system`]) with a
/// unit struct implementing [`TicketSystem`]. Adding a system is one line here (and its
/// connection and profile blocks in `tickets/config.rs`).
macro_rules! ticket_systems {
    ($($name:ident => $system:ident),* $(,)?) => {
        $( pub mod $name; )*

        /// Every ticket system, in the order their entries are queued.
        pub const SYSTEMS: &[&dyn TicketSystem] = &[$( &$name::$system ),*];
    };
}

ticket_systems! {
    jira => Jira,
    servicenow => ServiceNow,
}

impl TicketProfile {
    /// The systems this profile files in.
    pub fn systems(&self) -> impl Iterator<Item = &'static dyn TicketSystem> + '_ {
        SYSTEMS.iter().copied().filter(|s| s.files(self))
    }
}

/// What the ticket systems are started with.
pub struct TicketDeps {
    pub config: Arc<TicketsConfig>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub outbox: Arc<Outbox>,
    pub http: reqwest::Client,
    /// Renders profiles' templates.
    pub scripts: Arc<Scripts>,
}

/// Registers the deliverers of the configured systems with the outbox and the watcher with the
/// engine; the systems' webhook routes. Called once at start.
pub fn start(deps: TicketDeps) -> axum::Router {
    // Secrets on their local-only defaults are warned about at start with the others
    // (`Config::secrets_using_defaults`).
    for system in SYSTEMS {
        match system.deliverer(&deps) {
            Some(Ok(deliverer)) => {
                deps.outbox.register(system.name(), deliverer);
                let every = deps.config.comment_interval();
                if !every.is_zero() {
                    deps.outbox.coalesce(
                        system.name(),
                        TicketOp::Comment.kind(),
                        crate::outbox::Coalesce {
                            every,
                            most: COMMENT_EVENTS,
                            merge: merge_comments,
                        },
                    );
                }
            }
            Some(Err(e)) => {
                tracing::error!(system = system.name(), error = %e, "the ticket system's connection is unusable")
            }
            None => {}
        }
    }
    let tickets = &deps.config;
    if tickets.default.is_some() || !tickets.playbooks.is_empty() {
        deps.engine.add_watcher(Arc::new(TicketWatcher {
            store: deps.store.clone(),
            outbox: deps.outbox.clone(),
            config: deps.config.clone(),
            scripts: deps.scripts.clone(),
            lock: tokio::sync::Mutex::new(()),
        }));
    }
    let inbound = Arc::new(webhook::Inbound {
        config: deps.config.clone(),
        store: deps.store.clone(),
        engine: deps.engine.clone(),
        outbox: deps.outbox.clone(),
    });
    SYSTEMS.iter().fold(axum::Router::new(), |router, system| {
        router.merge(system.routes(inbound.clone()))
    })
}

/// Turns incident events into outbox entries for every system of the incident's profile.
pub struct TicketWatcher {
    store: Arc<dyn Store>,
    outbox: Arc<Outbox>,
    config: Arc<TicketsConfig>,
    scripts: Arc<Scripts>,
    /// One event at a time, so two runs of one incident cannot both queue its create.
    lock: tokio::sync::Mutex<()>,
}

#[async_trait]
impl Watcher for TicketWatcher {
    async fn incident_events(&self, events: &[IncidentEvent]) {
        let _one_at_a_time = self.lock.lock().await;
        for event in events {
            if let Err(e) = self.handle(event).await {
                tracing::error!(incident = %event.incident_id, kind = %event.kind, error = %e, "cannot queue the ticket update");
            }
        }
    }
}

/// The sync event an incident event is, if any.
pub fn sync_event(event: &IncidentEvent) -> Option<SyncEvent> {
    use crate::model::event::{Detail, EventKind};
    Some(match &event.kind {
        EventKind::IncidentOpened => SyncEvent::Created,
        EventKind::AlertAdded => SyncEvent::AlertAdded,
        EventKind::StepFinished => SyncEvent::StepFinished,
        EventKind::ApprovalRequested => SyncEvent::ApprovalRequested,
        EventKind::ApprovalDecided | EventKind::ApprovalTimedOut => SyncEvent::ApprovalDecided,
        EventKind::EvidenceCollected => SyncEvent::EvidenceAdded,
        EventKind::StepUndone => SyncEvent::ActionUndone,
        EventKind::RunState => match event.typed_detail() {
            Detail::RunState(state) if state.to.is_finished() => SyncEvent::RunFinished,
            _ => return None,
        },
        EventKind::IncidentResolved => SyncEvent::Resolved,
        EventKind::IncidentReopened => SyncEvent::Reopened,
        _ => return None,
    })
}

impl TicketWatcher {
    async fn handle(&self, event: &IncidentEvent) -> Result<(), String> {
        let Some(sync) = sync_event(event) else {
            return Ok(());
        };
        let incident = &event.incident_id;
        let tickets = &self.config;
        let recorded = self
            .store
            .meta_get(NS_PROFILE, incident)
            .await
            .map_err(|e| e.to_string())?;
        let (name, profile) = match recorded.as_ref().and_then(Value::as_str) {
            Some(name) => match tickets.profile(name) {
                Some(profile) => (name.to_owned(), profile),
                // The profile left the config since: its incidents are no longer synced.
                None => return Ok(()),
            },
            None => match tickets.profile_for(event.playbook.as_deref()) {
                Some((name, profile)) => (name.to_owned(), profile),
                None => return Ok(()),
            },
        };
        if !profile.events.contains(&sync) {
            return Ok(());
        }
        let mut entries = Vec::new();
        let mut queued = Vec::new();
        for system in profile.systems() {
            let key = system.key(incident);
            if self
                .store
                .meta_get(NS_QUEUED, &key)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                let fields = self.render(profile, incident).await?;
                let payload = system.create(profile, incident, fields);
                entries.push(TicketOp::Create.entry(system, incident, payload));
                queued.push(key.clone());
            }
            entries.extend(self.entries_for(system, profile, event, sync).await);
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.outbox.push(entries).await.map_err(|e| e.to_string())?;
        for key in queued {
            self.store
                .meta_put(NS_QUEUED, &key, Value::Bool(true))
                .await
                .map_err(|e| e.to_string())?;
        }
        if recorded.is_none() {
            self.store
                .meta_put(NS_PROFILE, incident, Value::String(name))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// What `event` adds to a ticket in `system`.
    async fn entries_for(
        &self,
        system: &dyn TicketSystem,
        profile: &TicketProfile,
        event: &IncidentEvent,
        sync: SyncEvent,
    ) -> Vec<OutboxEntry> {
        let incident = &event.incident_id;
        let mut out = Vec::new();
        if let Some((text, topic, source)) = self.note(event).await {
            let mut comment = json!({ "incident": incident, "text": text, "topic": topic });
            if let Some(source) = source {
                comment["source"] = Value::String(source);
            }
            out.push(TicketOp::Comment.entry(system, incident, comment));
        }
        match sync {
            SyncEvent::Resolved => {
                let transition = system.resolved(profile, event);
                out.push(TicketOp::Transition.entry(system, incident, transition));
                let stamp = event.at.format("%Y%m%dT%H%M%SZ");
                for (format, ext) in [("markdown", "md"), ("html", "html")] {
                    let report = json!({ "incident": incident, "format": format,
                        "filename": format!("cordon-incident-report-{stamp}.{ext}") });
                    out.push(TicketOp::Attach.entry(system, incident, report));
                }
            }
            SyncEvent::Reopened => {
                if let Some(transition) = system.reopened(profile, event) {
                    out.push(TicketOp::Transition.entry(system, incident, transition));
                }
            }
            _ => {}
        }
        out
    }

    /// The comment for an event: its text, what it is about and (for an alert) the source;
    /// `None` when the event is the ticket's creation itself.
    async fn note(&self, event: &IncidentEvent) -> Option<(String, Topic, Option<String>)> {
        use crate::model::event::Detail;
        let step = event.step.as_deref().unwrap_or("?");
        let playbook = event.playbook.as_deref().unwrap_or("?");
        let actor = event.actor.as_deref().unwrap_or("system");
        let detail = event.typed_detail();
        let topic = match &detail {
            Detail::AlertAdded(_) => Topic::Alert,
            Detail::StepFinished(f) if f.status == crate::model::run::StepStatus::Failed => {
                Topic::StepFailed
            }
            Detail::StepFinished(_) => Topic::StepFinished,
            Detail::ApprovalRequested(_) => Topic::ApprovalRequested,
            Detail::ApprovalTimedOut(_) | Detail::ApprovalDecided(_) => Topic::ApprovalDecided,
            Detail::EvidenceCollected(_) => Topic::Evidence,
            Detail::StepUndone(_) => Topic::Undone,
            Detail::RunState(_) => Topic::RunFinished,
            Detail::IncidentResolved(_) => Topic::Resolved,
            Detail::IncidentReopened(_) => Topic::Reopened,
            _ => Topic::Message,
        };
        let mut source = None;
        let text = match detail {
            Detail::AlertAdded(added) => {
                let id = added.alert_id.as_str();
                match self.store.alert(id).await.ok().flatten() {
                    Some(a) => {
                        source = Some(a.source.clone());
                        format!(
                            "New alert joined the incident: {} (source {}, severity {}/10, alert {}).",
                            a.title, a.source, a.severity.score, a.id
                        )
                    }
                    None => format!("New alert joined the incident: {id}."),
                }
            }
            Detail::StepFinished(finished) => {
                let mut line = format!(
                    "Step `{step}` of playbook {playbook} {} (attempts: {}).",
                    finished.status, finished.attempts
                );
                if let Some(error) = &finished.error {
                    line.push_str(&format!("\nError: {error}"));
                }
                if finished.dry_run {
                    line.push_str("\n(Dry run: the action was recorded, not performed.)");
                }
                line
            }
            Detail::ApprovalRequested(asked) => format!(
                "Approval requested at step `{step}` of playbook {playbook}: {}\nApprovers: {} (quorum {}), timeout {}.\nTo decide here, comment `/cordon approve` or `/cordon deny` (or `/cordon approve {} {step}` when several approvals are open).",
                asked.prompt,
                asked.group,
                asked.quorum,
                asked.timeout,
                event.run_id.as_deref().unwrap_or("RUN"),
            ),
            Detail::ApprovalTimedOut(timed_out) => {
                let outcome = match timed_out.outcome {
                    Some(true) => "approved",
                    Some(false) => "rejected",
                    None => "closed",
                };
                format!("Approval `{step}` of playbook {playbook} timed out and was {outcome}.")
            }
            Detail::ApprovalDecided(decided) => {
                let decision = if decided.approve {
                    "approved"
                } else {
                    "denied"
                };
                let outcome = match decided.outcome {
                    Some(true) => " The approval is granted.".to_owned(),
                    Some(false) => " The approval is rejected.".to_owned(),
                    None => format!(
                        " {} of {} approvals so far.",
                        decided.approvals, decided.quorum
                    ),
                };
                format!(
                    "{actor} {decision} `{step}` of playbook {playbook} (via {}) at {}.{outcome}",
                    decided.via,
                    event.at.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            Detail::EvidenceCollected(evidence) => {
                let mut line = format!(
                    "Evidence collected by step `{step}`: {} at {}",
                    evidence.kind().unwrap_or_default(),
                    evidence.location().unwrap_or_default()
                );
                if let Some(sha) = evidence.sha256() {
                    line.push_str(&format!(" (sha256 {sha})"));
                }
                line.push('.');
                line
            }
            Detail::StepUndone(undone) => format!(
                "Step `{step}` of playbook {playbook} was undone by {actor} with {}.",
                undone.action
            ),
            Detail::RunState(state) => {
                let mut line = format!(
                    "Run {} of playbook {playbook} {}.",
                    event.run_id.as_deref().unwrap_or("?"),
                    state.to
                );
                if let Some(error) = &state.error {
                    line.push_str(&format!("\nError: {error}"));
                }
                line
            }
            Detail::IncidentResolved(changed) => format!(
                "Incident resolved by {actor} (via {}). The incident report is attached.",
                changed.via
            ),
            Detail::IncidentReopened(changed) => {
                format!("Incident reopened by {actor} (via {}).", changed.via)
            }
            // `incident.opened` is the ticket's creation itself.
            _ => return None,
        };
        Some((text, topic, source))
    }

    /// Renders the profile's templates for an incident (on a blocking thread: Rhai is CPU work).
    async fn render(&self, profile: &TicketProfile, incident_id: &str) -> Result<Rendered, String> {
        let incident = self
            .store
            .incident(incident_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no incident `{incident_id}`"))?;
        // The oldest alert is the one that opened the incident.
        let alerts = self
            .store
            .alerts(&AlertQuery {
                incident_id: Some(incident_id.to_owned()),
                limit: 10_000,
                ..AlertQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let ctx = Context {
            alert: alerts
                .last()
                .and_then(|a| serde_json::to_value(a).ok())
                .unwrap_or(Value::Null),
            incident: serde_json::to_value(&incident).unwrap_or(Value::Null),
            ..Context::default()
        };
        let scripts = self.scripts.clone();
        let profile = profile.clone();
        tokio::task::spawn_blocking(move || Rendered::render(&scripts, &profile, &ctx))
            .await
            .map_err(|e| e.to_string())
    }
}

/// A profile's templates, rendered for one incident.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub summary: String,
    pub description: String,
    pub labels: Vec<String>,
    pub severity: u8,
    pub jira_fields: Map<String, Value>,
    pub servicenow_fields: Map<String, Value>,
}

impl Rendered {
    /// Renders every template; one that fails falls back to a plain value and is logged, so a
    /// template error never costs the ticket.
    pub fn render(scripts: &Scripts, profile: &TicketProfile, ctx: &Context) -> Rendered {
        let text = |what: &str, template: &str, fallback: &str| -> String {
            let rendered = Template::compile(scripts, template, &[])
                .and_then(|t| t.render(scripts, ctx))
                .map(|v| match v {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                });
            match rendered {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(template = what, error = %e, "a ticket template failed; using a plain value");
                    fallback.to_owned()
                }
            }
        };
        let title = ctx.incident["title"]
            .as_str()
            .unwrap_or("incident")
            .to_owned();
        let id = ctx.incident["id"].as_str().unwrap_or_default().to_owned();
        let fields = |what: &str, map: Option<&std::collections::BTreeMap<String, Value>>| {
            let mut out = Map::new();
            for (name, value) in map.into_iter().flatten() {
                match CompiledValue::compile(scripts, value, &[])
                    .map_err(|e| e.error)
                    .and_then(|c| c.render(scripts, ctx))
                {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(e) => {
                        tracing::warn!(field = %format!("{what}.{name}"), error = %e, "a ticket field template failed; the field is left out")
                    }
                }
            }
            out
        };
        Rendered {
            summary: text("summary", &profile.summary, &format!("[Cordon] {title}")),
            description: text(
                "description",
                &profile.description,
                &format!("Cordon incident {id}: {title}"),
            ),
            labels: profile
                .labels
                .iter()
                .map(|l| text("labels", l, ""))
                .filter(|l| !l.trim().is_empty())
                .collect(),
            severity: ctx.incident["severity"].as_u64().unwrap_or(0).min(10) as u8,
            jira_fields: fields("jira.fields", profile.jira.as_ref().map(|j| &j.fields)),
            servicenow_fields: fields(
                "servicenow.fields",
                profile.servicenow.as_ref().map(|s| &s.fields),
            ),
        }
    }
}

/// The most events one comment lists: each is a line or a few (about 200 characters for a new
/// alert), and the comment must stay within Jira's 32 767 characters. More wait for the next one.
const COMMENT_EVENTS: usize = 60;

/// The payload of one comment standing for the `comment` entries `entries` of one ticket (oldest
/// first): the tally of what they say ("12 more alerts from 3 sources, 2 steps finished"), then
/// every one of them, so the ticket still lists each alert and step. One entry stands for itself.
pub fn merge_comments(entries: &[OutboxEntry]) -> Result<Value, DeliveryError> {
    if let [one] = entries {
        return Ok(one.payload.clone());
    }
    let Some(first) = entries.first() else {
        return Err(DeliveryError::permanent("no comments to merge"));
    };
    let topic = |e: &OutboxEntry| {
        serde_json::from_value::<Topic>(e.payload["topic"].clone()).unwrap_or_default()
    };
    let mut text = crate::outbox::digest::headline(
        entries
            .iter()
            .map(|e| (topic(e), e.payload["source"].as_str())),
    );
    for entry in entries {
        let item = entry.payload["text"].as_str().unwrap_or_default();
        for (i, line) in item.lines().enumerate() {
            text.push_str(if i == 0 { "\n- " } else { "\n  " });
            text.push_str(line);
        }
    }
    Ok(json!({ "incident": first.payload["incident"], "text": text, "topic": Topic::Message }))
}

/// A store failure while delivering: retried, since the store comes back.
pub(crate) fn store_failed(e: StoreError) -> DeliveryError {
    DeliveryError::retry(format!("store: {e}"))
}

/// An HTTP failure before any answer (refused, reset, timed out), classed by
/// [`Failure::from_transport`]. The message names the system and what failed, never a credential.
pub(crate) fn unreachable(system: &str, e: &reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "refused the connection"
    } else {
        "failed"
    };
    DeliveryError::new(Failure::from_transport(e), format!("{system} {what}"))
}

/// Turns a non-success answer into the outbox's error, classed by [`Failure::from_response`]
/// (`Retry-After` kept).
pub(crate) async fn check(
    system: &str,
    what: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, DeliveryError> {
    let status = response.status().as_u16();
    let Some(mut error) =
        DeliveryError::from_response(status, response.headers(), &format!("{system} ({what})"))
    else {
        return Ok(response);
    };
    let body = response.text().await.unwrap_or_default();
    // The other side's reason helps an operator (a missing field, a workflow rule); it holds no
    // credential of ours.
    let reason: String = body.chars().take(300).collect();
    if !reason.trim().is_empty() {
        error.message = format!("{}: {}", error.message, reason.trim());
    }
    // Refused credentials or permissions wait for an operator (the outbox retries them with its
    // backoff, so the updates still go out, in order); they say so where an operator looks.
    if error.failure == Failure::Auth {
        tracing::error!(
            system,
            what,
            status,
            "the ticket system refused Cordon's credentials or permissions; updates wait until they are fixed"
        );
    }
    Err(error)
}

/// A ticket system's REST API as the deliverers reach it: the base URL with the API's path prefix,
/// the `Authorization` value, the HTTP client and the store for ticket references.
pub(crate) struct Connection {
    /// The system's name in messages (`Jira`, `ServiceNow`).
    pub system: &'static str,
    pub base: String,
    pub authorization: crate::config::Secret,
    pub http: reqwest::Client,
    pub store: std::sync::Arc<dyn crate::store::Store>,
    /// The system's last 429: no call before its `Retry-After` is over.
    limits: crate::outbox::pace::Pacer,
}

/// The scope of a ticket system's rate limit: Jira Cloud and ServiceNow both limit per user (Jira
/// by cost per account, ServiceNow by the instance's rate limit rules), so one 429 holds every call
/// Cordon makes there. Neither publishes fixed numbers to pace by, so Cordon waits when told.
const API: &str = "api";

/// The wait after a 429 that does not say how long (both systems normally say).
const UNSAID_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Connection {
    /// `api` is the API's path under the base URL (`/rest/api/3`, `/api/now`).
    pub fn new(
        system: &'static str,
        base_url: &url::Url,
        api: &str,
        auth: config::Auth<'_>,
        http: reqwest::Client,
        store: std::sync::Arc<dyn crate::store::Store>,
    ) -> Connection {
        Connection {
            system,
            base: format!("{}{api}", base_url.as_str().trim_end_matches('/')),
            authorization: authorization(auth),
            http,
            store,
            limits: crate::outbox::pace::Pacer::new(),
        }
    }

    /// Field `field` of the stored reference to the incident's ticket (`key`, `sys_id`).
    pub async fn ticket_field(
        &self,
        namespace: &str,
        incident: &str,
        field: &str,
    ) -> Result<String, DeliveryError> {
        let reference = reference(&*self.store, namespace, incident).await?;
        reference[field].as_str().map(str::to_owned).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "the stored {} reference has no {field}",
                self.system
            ))
        })
    }

    /// Sends `request` (what it does: `what`); the answer when it is a success, else the failure
    /// it is. While the system's last 429 holds, nothing is sent: the entry waits its
    /// `Retry-After` out.
    pub async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        if let Some(wait) = self.limits.held(API) {
            return Err(DeliveryError::wait(
                format!("{} asked Cordon to slow down ({what} waits)", self.system),
                wait,
            ));
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(self.system, &e))?;
        let checked = check(self.system, what, response).await;
        if let Err(error) = &checked
            && let Failure::RateLimited { retry_after } = error.failure
        {
            self.limits.hold(API, retry_after.unwrap_or(UNSAID_WAIT));
        }
        checked
    }

    /// [`Connection::send`], and the answer's JSON.
    pub async fn json(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, DeliveryError> {
        let system = self.system;
        self.send(what, request)
            .await?
            .json()
            .await
            .map_err(|_| DeliveryError::retry(format!("{system} ({what}) answered with no JSON")))
    }

    /// Whether the incident already has its ticket (its reference is stored under `namespace`).
    pub async fn linked(&self, namespace: &str, incident: &str) -> Result<bool, DeliveryError> {
        Ok(self
            .store
            .meta_get(namespace, incident)
            .await
            .map_err(store_failed)?
            .is_some())
    }

    /// Audits and logs that `incident` is linked to `ticket` in `system` (found or created).
    pub async fn announce_link(
        &self,
        system: &str,
        incident: &str,
        ticket: &str,
        url: &str,
        found: bool,
    ) {
        audit(
            &*self.store,
            EventKind::TicketCreated,
            serde_json::json!({ "incident": incident, "system": system, "ticket": ticket, "url": url, "found_existing": found }),
        )
        .await;
        tracing::info!(
            incident,
            system,
            ticket,
            found_existing = found,
            "ticket linked to the incident"
        );
    }

    /// A request to `path` under the API, authorized, asking for JSON.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, self.authorization.expose())
            .header(reqwest::header::ACCEPT, "application/json")
    }
}

/// The `Authorization` header value for a connection.
pub(crate) fn authorization(auth: config::Auth<'_>) -> crate::config::Secret {
    use base64::Engine;
    match auth {
        config::Auth::Basic(user, secret) => crate::config::Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", secret.expose()))
        )),
        config::Auth::Bearer(token) => {
            crate::config::Secret::new(format!("Bearer {}", token.expose()))
        }
    }
}

/// Reads a ticket reference from the store.
pub(crate) async fn reference(
    store: &dyn Store,
    namespace: &str,
    incident: &str,
) -> Result<Value, DeliveryError> {
    store
        .meta_get(namespace, incident)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| {
            DeliveryError::permanent(format!(
                "incident {incident} has no ticket (its creation failed for good; see the outbox)"
            ))
        })
}

/// Whether the entry was tried before on this ticket (so its effect may already be there), and
/// marks it as being tried now.
pub(crate) async fn tried_before(
    store: &dyn Store,
    entry: &OutboxEntry,
) -> Result<bool, DeliveryError> {
    let last = store
        .meta_get(NS_SENDING, &entry.key)
        .await
        .map_err(store_failed)?;
    let before = last.as_ref().and_then(Value::as_str) == Some(entry.id.as_str());
    if !before {
        store
            .meta_put(NS_SENDING, &entry.key, Value::String(entry.id.clone()))
            .await
            .map_err(store_failed)?;
    }
    Ok(before)
}

/// The `incident` field of an entry's payload.
pub(crate) fn incident_of(entry: &OutboxEntry) -> Result<&str, DeliveryError> {
    entry.payload["incident"]
        .as_str()
        .ok_or_else(|| DeliveryError::permanent("the outbox entry names no incident"))
}

/// Records a ticket event in the audit log (who filed what where), for the report.
pub(crate) async fn audit(store: &dyn Store, kind: EventKind, detail: Value) {
    let entry = crate::audit::NewEntry::new(kind.clone())
        .actor("system".to_owned())
        .detail(detail);
    if let Err(e) = store.append_audit(vec![entry]).await {
        tracing::warn!(error = %e, %kind, "cannot audit a ticket event");
    }
}

/// The report file an `attach` entry asks for: its bytes and content type.
pub(crate) async fn report_file(
    store: &dyn Store,
    incident: &str,
    entry: &OutboxEntry,
) -> Result<(Vec<u8>, &'static str), DeliveryError> {
    let html = entry.payload["format"] == "html";
    let report = report::Report::gather(store, incident)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| DeliveryError::permanent(format!("no incident `{incident}`")))?;
    Ok(if html {
        (report.html().into_bytes(), "text/html; charset=utf-8")
    } else {
        (
            report.markdown().into_bytes(),
            "text/markdown; charset=utf-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(text: &str, topic: Topic, source: Option<&str>) -> OutboxEntry {
        let mut payload = json!({ "incident": "inc-1", "text": text, "topic": topic });
        if let Some(source) = source {
            payload["source"] = json!(source);
        }
        OutboxEntry::new("jira", "jira:inc-1", TicketOp::Comment.kind(), payload)
    }

    #[test]
    fn coalesced_comments_open_with_a_tally_and_list_every_event() {
        let entries = [
            comment(
                "New alert joined the incident: a (alert 1).",
                Topic::Alert,
                Some("falco"),
            ),
            comment(
                "Approval requested at step `approve`: Isolate?\nApprovers: soc (quorum 1).",
                Topic::ApprovalRequested,
                None,
            ),
            comment(
                "New alert joined the incident: b (alert 2).",
                Topic::Alert,
                Some("generic"),
            ),
            // Written before topics: counted as a message.
            OutboxEntry::new(
                "jira",
                "jira:inc-1",
                "comment",
                json!({ "incident": "inc-1", "text": "Old note." }),
            ),
        ];
        let merged = merge_comments(&entries).unwrap();
        assert_eq!(merged["incident"], "inc-1");
        assert_eq!(
            merged["text"],
            "2 more alerts from 2 sources, 1 approval requested, 1 message:\n\
             - New alert joined the incident: a (alert 1).\n\
             - Approval requested at step `approve`: Isolate?\n  Approvers: soc (quorum 1).\n\
             - New alert joined the incident: b (alert 2).\n\
             - Old note."
        );
        assert_eq!(merge_comments(&entries[..1]).unwrap(), entries[0].payload);
    }
}
