//! What retention may forget, record by record, and what `cordon store stats` counts: the rules
//! both backends apply ([`super::SledStore`] inside its store thread, [`super::PostgresStore`]
//! inside one transaction per batch), so a record is pruned on one exactly when it would be on the
//! other. The pass that drives them is `crate::retention`.
//!
//! Nothing here touches the audit log: retention never removes an audit entry, so the chain stays
//! whole and `cordon audit verify` passes after any pruning (docs/retention.md says why).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Incident, IncidentStatus};
use crate::model::outbox::OutboxEntry;
use crate::model::run::Run;

/// A kind of record retention prunes, each with an age of its own (`retention:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    /// The source's payload kept byte for byte on each alert: replaced by `null`, the normalized
    /// alert stays.
    RawPayloads,
    /// Alerts whose incident is resolved (or gone).
    Alerts,
    /// Resolved incidents, with their alerts.
    Incidents,
    /// Finished runs.
    Runs,
    /// Evidence records on incidents (by `collected_at`).
    Evidence,
    /// Outbox entries given up on (delivered ones are forgotten at delivery).
    Outbox,
}

impl PruneKind {
    /// Every kind, in the order a pass prunes them: raw payloads before the alerts that hold them,
    /// incidents (with their alerts) before lone alerts.
    pub const ALL: [PruneKind; 6] = [
        PruneKind::RawPayloads,
        PruneKind::Incidents,
        PruneKind::Alerts,
        PruneKind::Evidence,
        PruneKind::Runs,
        PruneKind::Outbox,
    ];

    /// The name in the config and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PruneKind::RawPayloads => "raw_payloads",
            PruneKind::Alerts => "alerts",
            PruneKind::Incidents => "incidents",
            PruneKind::Runs => "runs",
            PruneKind::Evidence => "evidence",
            PruneKind::Outbox => "outbox",
        }
    }
}

/// One batch of a pass over one kind.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub kind: PruneKind,
    /// Records last active before this are pruned.
    pub cutoff: DateTime<Utc>,
    /// Only records whose id sorts at or before this (a UUIDv7 taken when the pass began): what
    /// arrives while a pass runs is never looked at by it.
    pub bound: String,
    /// Continue after this id (`None`: from the oldest).
    pub after: Option<String>,
    /// Look at most at this many records.
    pub limit: usize,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneBatch {
    /// Records looked at.
    pub examined: u64,
    /// Records pruned (for evidence: records removed; for raw payloads: payloads cleared).
    pub pruned: u64,
    /// Where the next batch starts; `None` when the kind is done up to the bound.
    pub next: Option<String>,
}

/// How many records of a kind are stored, and their size as stored (the documents' bytes; the
/// backend's own overhead is in [`StoreStats::on_disk_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
}

/// `cordon store stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// `sled` or `postgres`.
    pub backend: String,
    /// Per kind: alerts, raw_payloads, incidents, evidence, runs, outbox, outbox_dead, audit, meta.
    pub kinds: Vec<KindStats>,
    /// The store's size on disk (sled: its files; PostgreSQL: its tables with indexes and TOAST).
    pub on_disk_bytes: u64,
}

/// When an alert was last active: its latest repeat, else its arrival.
pub fn last_active(alert: &Alert) -> DateTime<Utc> {
    alert
        .last_seen_at
        .map_or(alert.received_at, |seen| seen.max(alert.received_at))
}

/// Whether an alert still holds its raw payload.
pub fn holds_raw(alert: &Alert) -> bool {
    alert.raw.get() != "null"
}

/// Whether the raw payload of `alert` is past its age.
pub fn raw_expired(alert: &Alert, cutoff: DateTime<Utc>) -> bool {
    holds_raw(alert) && last_active(alert) < cutoff
}

/// Replaces the alert's raw payload by `null`.
pub fn clear_raw(alert: &mut Alert) {
    if let Ok(null) = serde_json::value::RawValue::from_string("null".to_owned()) {
        alert.raw = null;
    }
}

/// Whether `alert` is past its age and its incident (`None`: gone) no longer open: an open
/// incident keeps every alert it has, whatever their age.
pub fn alert_expired(alert: &Alert, incident: Option<&Incident>, cutoff: DateTime<Utc>) -> bool {
    last_active(alert) < cutoff && incident.is_none_or(|i| i.status != IncidentStatus::Open)
}

/// Whether `incident` is resolved and untouched since before `cutoff`.
pub fn incident_expired(incident: &Incident, cutoff: DateTime<Utc>) -> bool {
    incident.status == IncidentStatus::Resolved && incident.updated_at < cutoff
}

/// Whether `run` finished before `cutoff` (an unfinished run is never pruned).
pub fn run_expired(run: &Run, cutoff: DateTime<Utc>) -> bool {
    run.status.is_finished() && run.finished_at.unwrap_or(run.updated_at) < cutoff
}

/// Whether `entry` was given up on before `cutoff` (entries still to deliver are never pruned).
pub fn outbox_expired(entry: &OutboxEntry, cutoff: DateTime<Utc>) -> bool {
    entry.dead && entry.created_at < cutoff
}

/// Removes the evidence records collected before `cutoff` from `incident`; how many. A record
/// without a readable `collected_at` is kept.
pub fn prune_evidence(incident: &mut Incident, cutoff: DateTime<Utc>) -> u64 {
    let before = incident.evidence.len();
    incident.evidence.retain(|record| {
        record
            .get("collected_at")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_none_or(|at| at.with_timezone(&Utc) >= cutoff)
    });
    (before - incident.evidence.len()) as u64
}

/// The size of the evidence records of an incident, as JSON.
pub fn evidence_bytes(incident: &Incident) -> u64 {
    incident
        .evidence
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len() as u64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_pruned_by_its_collection_time_and_unreadable_times_are_kept() {
        let raw = serde_json::value::RawValue::from_string("{}".into()).expect("raw");
        let alert = Alert::new("generic", "k", raw).finish();
        let mut incident = Incident::open_for(&alert);
        incident.evidence = vec![
            serde_json::json!({"kind": "x", "collected_at": "2026-01-01T00:00:00Z"}),
            serde_json::json!({"kind": "x", "collected_at": "2026-03-01T00:00:00.000Z"}),
            serde_json::json!({"kind": "x"}),
        ];
        let cutoff = "2026-02-01T00:00:00Z".parse().expect("time");
        assert_eq!(prune_evidence(&mut incident, cutoff), 1);
        assert_eq!(incident.evidence.len(), 2);
    }
}
