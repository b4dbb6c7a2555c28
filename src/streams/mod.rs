//! Streams: Cordon's events out to the rest of a SOC's tooling, and alerts in from NATS JetStream
//! (docs/streams.md).
//!
//! Out: every new alert, incident change, run event and audit entry becomes an [`Event`], and for
//! each configured destination whose [`Filter`] lets it through, an entry of the durable outbox
//! (target `stream:<name>`). The outbox delivers them with retries, so an outage of the
//! destination delays events and loses none. Entries are keyed by lane, an incident always in the
//! same lane ([`lane_of`]), so one incident's events go out in the order they happened, and a
//! lane's entries go out in batches ([`merge`]). Deliverers: [`http`] (webhook, Splunk HEC,
//! Elasticsearch/OpenSearch bulk), [`syslog`] (RFC 5424 over TLS, RFC 3164) and [`nats`]
//! (JetStream subjects).
//!
//! Alerts, incident and run events are heard as the engine's watchers hear them, right after they
//! are stored ([`Streams`]); audit entries are read from the log itself, behind a cursor
//! ([`audit_tail`]), so every entry is forwarded whichever code path wrote it.
//!
//! In: [`intake`] consumes alerts from a JetStream stream with a durable consumer and stores
//! them as `POST /v1/alerts/{source}` does.

pub mod config;
pub mod http;
pub mod intake;
pub mod nats;
pub mod syslog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use self::config::{
    Destination, EventType, Filter, IntakeConfig, JetstreamIntake, StreamsConfig, Target,
};
use crate::engine::watch::{IncidentEvent, Watcher};
use crate::model::outbox::OutboxEntry;
use crate::outbox::{Coalesce, Deliver, DeliveryError, Outbox};
use crate::store::Store;

/// The outbox kind of every stream entry (one event each; a batch is a run of them).
const KIND: &str = "event";

/// The outbox target of destination `name`.
pub fn target(name: &str) -> String {
    format!("stream:{name}")
}

/// One thing that happened, as every destination receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and stable across retries (a UUIDv7; `audit-<seq>` for audit entries): what a
    /// destination deduplicates on (Elasticsearch `_id`, `Nats-Msg-Id`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What happened: `alert.received`, `incident.opened`, `run.state`, `step.finished`, or the
    /// audit entry's kind.
    pub event: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The alert's severity, or the incident's (0-10), when the event is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    /// The alert's source, or the incident's sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The facts: the alert document, the run event's detail, the audit entry as stored.
    pub data: Value,
}

impl Event {
    fn new(kind: EventType, event: impl Into<String>, at: DateTime<Utc>, data: Value) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            event: event.into(),
            at,
            incident_id: None,
            run_id: None,
            severity: None,
            sources: Vec::new(),
            data,
        }
    }

    /// The entry for a stored audit entry.
    pub fn of_audit(entry: &crate::model::audit::AuditEntry) -> Event {
        let mut event = Event::new(
            EventType::Audit,
            entry.kind.clone(),
            entry.at,
            serde_json::to_value(entry).unwrap_or(Value::Null),
        );
        event.id = format!("audit-{}", entry.seq);
        event.run_id = entry.run_id.clone();
        event
    }
}

impl Filter {
    /// Whether `event` goes to the destination.
    pub fn admits(&self, event: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&event.kind) {
            return false;
        }
        if let (Some(min), Some(severity)) = (self.min_severity, event.severity)
            && severity < min
        {
            return false;
        }
        if !self.sources.is_empty()
            && !event.sources.is_empty()
            && !event.sources.iter().any(|s| self.sources.contains(s))
        {
            return false;
        }
        true
    }
}

/// The lane an incident's events take among `lanes` (FNV-1a of its id: the same on every replica
/// and across restarts, unlike the standard library's hasher).
pub fn lane_of(incident: Option<&str>, kind: EventType, lanes: u32) -> String {
    if kind == EventType::Audit {
        return "audit".to_owned();
    }
    let Some(id) = incident else {
        return "lane-0".to_owned();
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("lane-{}", hash % u64::from(lanes.max(1)))
}

/// The payload standing for a run of entries: `{"events": [...]}` in order. One entry alone is its
/// own event.
pub fn merge(entries: &[OutboxEntry]) -> Result<Value, DeliveryError> {
    if let [one] = entries {
        return Ok(one.payload.clone());
    }
    Ok(json!({ "events": entries.iter().map(|e| e.payload.clone()).collect::<Vec<_>>() }))
}

/// The events a delivery carries, oldest first (see [`merge`]).
pub fn events_of(entry: &OutboxEntry) -> Result<Vec<Event>, DeliveryError> {
    let bad = |e: serde_json::Error| {
        DeliveryError::permanent(format!("a stream entry is not an event: {e}"))
    };
    match entry.payload.get("events") {
        Some(list) => serde_json::from_value(list.clone()).map_err(bad),
        None => Ok(vec![
            serde_json::from_value(entry.payload.clone()).map_err(bad)?,
        ]),
    }
}

/// The configured destinations, ready to queue events for.
pub struct Streams {
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
    destinations: Vec<(String, Destination)>,
}

impl Streams {
    /// Registers a deliverer for every enabled destination of `config` with `outbox` (a
    /// destination that cannot be built is logged and left out), with its batching. `None` when
    /// no destination is enabled.
    pub fn start(
        config: &StreamsConfig,
        store: Arc<dyn Store>,
        outbox: Arc<Outbox>,
        http: reqwest::Client,
    ) -> Option<Arc<Streams>> {
        let mut destinations = Vec::new();
        for (name, destination) in config {
            if !destination.enabled {
                continue;
            }
            let deliverer: Result<Arc<dyn Deliver>, String> = match &destination.to {
                Target::Webhook(t) => Ok(Arc::new(http::Webhook::new(t.clone(), http.clone()))),
                Target::SplunkHec(t) => Ok(Arc::new(http::SplunkHec::new(t.clone(), http.clone()))),
                Target::Elasticsearch(t) => {
                    Ok(Arc::new(http::Elastic::new(t.clone(), http.clone())))
                }
                Target::Syslog(t) => syslog::Syslog::new(t.clone())
                    .map(|s| Arc::new(s) as Arc<dyn Deliver>)
                    .map_err(|e| e.to_string()),
                Target::Jetstream(t) => Ok(Arc::new(nats::Publisher::new(t.clone()))),
            };
            match deliverer {
                Ok(deliverer) => {
                    let target = target(name);
                    outbox.register(&target, deliverer);
                    outbox.coalesce(
                        &target,
                        KIND,
                        Coalesce {
                            every: destination.batch.max_wait.0,
                            most: destination.batch.max_events.max(1),
                            merge,
                        },
                    );
                    destinations.push((name.clone(), destination.clone()));
                }
                Err(e) => {
                    tracing::error!(stream = %name, kind = destination.to.kind(), error = %e, "a stream destination cannot start; its events are not queued")
                }
            }
        }
        if destinations.is_empty() {
            return None;
        }
        let streams = Arc::new(Streams {
            outbox,
            store,
            destinations,
        });
        if streams.wants(EventType::Audit) {
            tokio::spawn(audit_tail(Arc::downgrade(&streams)));
        }
        Some(streams)
    }

    fn wants(&self, kind: EventType) -> bool {
        self.destinations
            .iter()
            .any(|(_, d)| d.filter.kinds.is_empty() || d.filter.kinds.contains(&kind))
    }

    /// Queues `events` for every destination that takes them, durably.
    pub async fn queue(&self, events: &[Event]) -> Result<(), crate::store::StoreError> {
        let mut entries = Vec::new();
        for (name, destination) in &self.destinations {
            let target = target(name);
            for event in events.iter().filter(|e| destination.filter.admits(e)) {
                let lane = lane_of(event.incident_id.as_deref(), event.kind, destination.lanes);
                let payload = serde_json::to_value(event).unwrap_or(Value::Null);
                entries.push(OutboxEntry::new(&target, &lane, KIND, payload));
            }
        }
        self.outbox.push(entries).await
    }

    /// The events for incident events the engine told: each incident's severity and sources
    /// (read once per incident), and for an alert that is news, the alert itself.
    async fn events_of(&self, told: &[IncidentEvent]) -> Vec<Event> {
        let mut incidents: HashMap<String, Option<(u8, Vec<String>)>> = HashMap::new();
        let mut out = Vec::new();
        for e in told {
            if !incidents.contains_key(&e.incident_id) {
                let about = match self.store.incident(&e.incident_id).await {
                    Ok(Some(i)) => Some((i.severity, i.sources.clone())),
                    _ => None,
                };
                incidents.insert(e.incident_id.clone(), about);
            }
            let about = incidents.get(&e.incident_id).cloned().flatten();
            let alert_id = e.detail.get("alert_id").and_then(Value::as_str);
            if e.run_id.is_none()
                && self.wants(EventType::Alert)
                && let Some(alert_id) = alert_id
                && let Ok(Some(alert)) = self.store.alert(alert_id).await
            {
                let mut event = Event::new(
                    EventType::Alert,
                    "alert.received",
                    alert.received_at,
                    serde_json::to_value(&alert).unwrap_or(Value::Null),
                );
                event.incident_id = Some(e.incident_id.clone());
                event.severity = Some(alert.severity.score);
                event.sources = vec![alert.source.clone()];
                out.push(event);
            }
            let kind = if e.run_id.is_some() {
                EventType::Run
            } else {
                EventType::Incident
            };
            let mut data = json!({ "detail": e.detail });
            for (key, value) in [
                ("playbook", &e.playbook),
                ("step", &e.step),
                ("actor", &e.actor),
            ] {
                if let Some(value) = value {
                    data[key] = Value::String(value.clone());
                }
            }
            let mut event = Event::new(kind, e.kind.as_str(), e.at, data);
            event.incident_id = Some(e.incident_id.clone());
            event.run_id = e.run_id.clone();
            if let Some((severity, sources)) = about {
                event.severity = Some(severity);
                event.sources = sources;
            }
            out.push(event);
        }
        out
    }
}

#[async_trait]
impl Watcher for Streams {
    async fn incident_events(&self, told: &[IncidentEvent]) {
        if !(self.wants(EventType::Alert)
            || self.wants(EventType::Incident)
            || self.wants(EventType::Run))
        {
            return;
        }
        let events = self.events_of(told).await;
        if let Err(e) = self.queue(&events).await {
            tracing::error!(error = %e, events = events.len(), "stream events could not be queued");
        }
    }
}

/// The meta namespace and key of the audit cursor: the last sequence number queued.
const NS: &str = "streams";
const AUDIT_CURSOR: &str = "audit_cursor";
/// The named lease of the replica forwarding the audit log, on a shared store.
const AUDIT_LEASE: &str = "streams-audit";
/// Entries queued per pass.
const AUDIT_PASS: usize = 1000;

/// Follows the audit log: every second, the entries after the cursor are queued and the cursor
/// moved past them (after they are queued, so a crash in between queues some again: destinations
/// see each entry at least once, its id `audit-<seq>` the same every time). With no cursor yet,
/// forwarding starts at the log's end: history is not replayed.
async fn audit_tail(streams: std::sync::Weak<Streams>) {
    loop {
        let Some(strong) = streams.upgrade() else {
            return;
        };
        if let Err(e) = audit_pass(&strong).await {
            tracing::warn!(error = %e, "audit entries could not be queued for streams; trying again");
        }
        drop(strong);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn audit_pass(streams: &Streams) -> Result<(), crate::store::StoreError> {
    let store = &streams.store;
    if !store.is_ready() || (store.shared() && !store.lease(AUDIT_LEASE).await?) {
        return Ok(());
    }
    let mut cursor = match store.meta_get(NS, AUDIT_CURSOR).await? {
        Some(v) => v.as_u64().unwrap_or(0),
        None => {
            let end = log_end(&**store).await?;
            store.meta_put(NS, AUDIT_CURSOR, Value::from(end)).await?;
            end
        }
    };
    loop {
        let mut events = Vec::new();
        while events.len() < AUDIT_PASS {
            match store.audit_entry(cursor + events.len() as u64 + 1).await? {
                Some(entry) => events.push(Event::of_audit(&entry)),
                None => break,
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        streams.queue(&events).await?;
        cursor += events.len() as u64;
        store
            .meta_put(NS, AUDIT_CURSOR, Value::from(cursor))
            .await?;
        if events.len() < AUDIT_PASS {
            return Ok(());
        }
    }
}

/// The last sequence number in the log (0 when empty), by galloping and halving over
/// [`Store::audit_entry`]: sequence numbers start at 1 and have no gaps.
async fn log_end(store: &dyn Store) -> Result<u64, crate::store::StoreError> {
    let (mut low, mut high) = (0u64, 1u64);
    while store.audit_entry(high).await?.is_some() {
        low = high;
        high = high.saturating_mul(2);
    }
    // `low` exists (or is 0), `high` does not.
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if store.audit_entry(mid).await?.is_some() {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, severity: Option<u8>, sources: &[&str]) -> Event {
        let mut e = Event::new(kind, "x", Utc::now(), Value::Null);
        e.severity = severity;
        e.sources = sources.iter().map(|s| (*s).to_owned()).collect();
        e
    }

    #[test]
    fn the_config_takes_each_destination_and_says_where_a_wrong_one_is() {
        let text = "streams:\n  a:\n    to:\n      syslog:\n        host: 127.0.0.1\n        tls: false\n        format: rfc3164\n    filter:\n      kinds: [alert]\n  b:\n    to:\n      jetstream:\n        url: nats://127.0.0.1:4222\nintake:\n  jetstream:\n    url: nats://127.0.0.1:4222\n    stream: ALERTS\n";
        let config = crate::config::parse(text, std::path::Path::new("c.yaml")).unwrap();
        assert_eq!(config.streams["a"].to.kind(), "syslog");
        assert_eq!(config.streams["b"].lanes, 4);
        let intake = config.intake.jetstream.unwrap();
        assert_eq!(
            (intake.consumer.as_str(), intake.subject.as_str()),
            ("cordon", "cordon.alerts")
        );
        let both = "streams:\n  a:\n    to:\n      webhook: { url: \"http://x\", secret: s }\n      jetstream: { url: \"nats://x\" }\n";
        let error = crate::config::parse(both, std::path::Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("c.yaml:4:") && error.contains("exactly one of"),
            "{error}"
        );
        let typo = "streams:\n  a:\n    to:\n      syslog: { host: h, formt: rfc3164 }\n";
        let error = crate::config::parse(typo, std::path::Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("c.yaml:4:") && error.contains("formt"),
            "{error}"
        );
    }

    #[test]
    fn filters_by_kind_severity_and_source_and_let_through_what_has_neither() {
        let filter = Filter {
            kinds: vec![EventType::Alert, EventType::Audit],
            min_severity: Some(7),
            sources: vec!["falco".into()],
        };
        assert!(filter.admits(&event(EventType::Alert, Some(8), &["falco"])));
        assert!(!filter.admits(&event(EventType::Alert, Some(6), &["falco"])));
        assert!(!filter.admits(&event(EventType::Alert, Some(9), &["generic"])));
        assert!(!filter.admits(&event(EventType::Run, Some(9), &["falco"])));
        assert!(filter.admits(&event(EventType::Audit, None, &[])));
        assert!(Filter::default().admits(&event(EventType::Run, Some(0), &[])));
    }

    #[test]
    fn an_incident_keeps_its_lane_and_audit_entries_have_their_own() {
        let a = lane_of(Some("inc-1"), EventType::Run, 4);
        assert_eq!(a, lane_of(Some("inc-1"), EventType::Alert, 4));
        assert_eq!(lane_of(Some("inc-1"), EventType::Audit, 4), "audit");
        let lanes: std::collections::BTreeSet<String> = (0..100)
            .map(|i| lane_of(Some(&format!("inc-{i}")), EventType::Incident, 4))
            .collect();
        assert_eq!(lanes.len(), 4, "{lanes:?}");
    }

    #[test]
    fn a_merged_run_reads_back_as_its_events_in_order() {
        let entries: Vec<OutboxEntry> = (0..3)
            .map(|i| {
                let mut e = event(EventType::Incident, Some(i), &[]);
                e.event = format!("e{i}");
                OutboxEntry::new("stream:x", "lane-0", KIND, serde_json::to_value(e).unwrap())
            })
            .collect();
        let mut merged = entries[0].clone();
        merged.payload = merge(&entries).unwrap();
        let names: Vec<String> = events_of(&merged)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(names, ["e0", "e1", "e2"]);
        assert_eq!(events_of(&entries[1]).unwrap()[0].event, "e1");
    }
}
