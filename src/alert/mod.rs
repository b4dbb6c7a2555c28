//! The one normalized [`Alert`] every source is turned into, and the [`Incident`] alerts group into.
//!
//! Normalizers (in `intake::formats`) fill an [`Alert`] from a source's own payload; the store assigns
//! it to an incident. The source's payload is kept byte for byte in [`Alert::raw`], so nothing a
//! responder may need later is lost to normalization.

mod severity;

pub use severity::Severity;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One security alert, normalized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// Cordon's id for the alert (a UUIDv7, so ids sort by arrival).
    pub id: String,
    /// The source it came from, as in the URL: `aws.guardduty`, `falco`, `generic`, ...
    pub source: String,
    /// The source's own type or rule name, e.g. `UnauthorizedAccess:EC2/TorRelay`.
    pub kind: String,
    /// Severity on Cordon's 0–10 scale, with the source's own value kept.
    pub severity: Severity,
    /// One line for a human.
    pub title: String,
    /// Longer text, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the source saw it (falls back to when Cordon received it).
    pub observed_at: DateTime<Utc>,
    /// When Cordon received it.
    pub received_at: DateTime<Utc>,
    /// The resource the alert is about.
    #[serde(default)]
    pub resource: Resource,
    /// Who did it, when the source says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Network facts: the remote address is what enrichment looks up first.
    #[serde(default)]
    pub network: Network,
    /// Free-form labels from the source (tags, Kubernetes labels, product names).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alerts with the same key inside the dedup window are counted as repeats of one alert.
    pub dedup_key: String,
    /// Where the alert stood at its source when this notification was sent: `firing` for every
    /// source that has no lifecycle (see [`AlertState`]).
    #[serde(default)]
    pub state: AlertState,
    /// The source's own word for [`Alert::state`], as it wrote it (`resolved`, `ARCHIVED`,
    /// `Dismissed`, `INACTIVE`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_state: Option<String>,
    /// The earlier alert (same dedup key) whose state at the source this notification changed:
    /// `firing` then `resolved` are two alerts, the second following the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// The later alert that changed this one's state at the source; the alert's state there is
    /// then that alert's (or the one following it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_by: Option<String>,
    /// How many times this alert was received (1 for the first time).
    #[serde(default = "one")]
    pub repeat_count: u32,
    /// When the latest repeat arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The incident the alert belongs to; set by the store when the alert is accepted.
    #[serde(default)]
    pub incident_id: String,
    /// The source's payload for this alert, byte for byte as received.
    pub raw: Box<RawValue>,
}

fn one() -> u32 {
    1
}

/// The resource an alert is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Cordon's resource kind: `aws.ec2.instance`, `aws.iam.user`, `aws.iam.access_key`,
    /// `aws.s3.bucket`, `aws.eks.cluster`, `aws.account`, `azure.vm`, `azure.user`,
    /// `gcp.project`, `k8s.pod`, `host`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The provider's id: `i-0abc...`, an ARN, an Azure resource id, a pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Region or location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// AWS account, Azure subscription, GCP project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// A display name, when different from the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who did what the alert is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `aws.iam.user`, `aws.iam.role`, `aws.root`, `azure.user`, `gcp.service_account`, `k8s.user`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A stable id: ARN, principal id, UPN, e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The principal's one key across sources, account-qualified (`aws:<account>:user/<name>`,
    /// `aws:<account>:role/<name>` for a role and its sessions, `aws:<account>:root`,
    /// `azure:<tenant>:<object id>`, `gcp:<project>:<service account email>`): alerts about one
    /// principal from different sources group by it. Absent when the source does not say enough
    /// (no account, say); the alert then groups by `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Resource kinds that only say where something happened (an account, subscription or project; a
/// Sentinel incident, which names no resource of its own): an alert about one of them that names
/// an actor with a key is about the actor.
const PLACES: [&str; 5] = [
    "aws.account",
    "azure.subscription",
    "gcp.project",
    "gcp.organization",
    "azure.sentinel.incident",
];

/// Network facts of an alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Alert {
    /// A fresh alert from `source` with a new id, received now. Normalizers set the other fields,
    /// then call [`Alert::finish`].
    pub fn new(source: &str, kind: impl Into<String>, raw: Box<RawValue>) -> Alert {
        let now = Utc::now();
        Alert {
            id: new_id(),
            source: source.to_owned(),
            kind: kind.into(),
            severity: Severity::new(0, ""),
            title: String::new(),
            description: None,
            observed_at: now,
            received_at: now,
            resource: Resource::default(),
            actor: None,
            network: Network::default(),
            labels: BTreeMap::new(),
            dedup_key: String::new(),
            state: AlertState::Firing,
            source_state: None,
            follows: None,
            followed_by: None,
            repeat_count: 1,
            last_seen_at: None,
            incident_id: String::new(),
            raw,
        }
    }

    /// Fills what a normalizer left empty: a title from the kind, and a dedup key from the alert's
    /// fingerprint (source, kind, resource and actor) when the source gave no stable id.
    pub fn finish(mut self) -> Alert {
        if self.title.trim().is_empty() {
            self.title = self.kind.clone();
        }
        if self.dedup_key.is_empty() {
            self.dedup_key = self.fingerprint();
        }
        self
    }

    /// `source|kind|resource id|actor id`: what makes two alerts "the same alert again".
    pub fn fingerprint(&self) -> String {
        let actor = self
            .actor
            .as_ref()
            .and_then(|a| a.id.as_deref())
            .unwrap_or("");
        format!(
            "{}|{}|{}|{}",
            self.source,
            self.kind,
            self.resource.id.as_deref().unwrap_or(""),
            actor
        )
    }

    /// Whether the alert is about an identity (a user, role, key or sign-in) rather than a workload.
    /// Identity alerts group into incidents by actor, the rest by resource. An alert whose resource
    /// is only a place (an account, subscription, project, Sentinel incident) and whose actor has a
    /// key ([`Actor::key`]) is about the actor too.
    pub fn is_identity(&self) -> bool {
        let kind = self.resource.kind.as_deref().unwrap_or("");
        let identity_kind = kind.starts_with("aws.iam.")
            || kind == "aws.root"
            || kind == "azure.user"
            || kind == "gcp.service_account"
            || kind == "k8s.user";
        let keyed_actor = self.actor.as_ref().is_some_and(|a| a.key.is_some());
        identity_kind
            || (self.resource.id.is_none() && self.actor_id().is_some())
            || (keyed_actor && PLACES.contains(&kind))
    }

    /// The actor's id, if the alert names one.
    pub fn actor_id(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.id.as_deref())
    }

    /// The entity this alert is about, as an incident grouping key: `actor:<key>` (else
    /// `actor:<id>`) for identity alerts, `resource:<kind>:<id>` otherwise; `None` when the alert
    /// names neither.
    pub fn entity_key(&self) -> Option<String> {
        if self.is_identity()
            && let Some(actor) = self.actor.as_ref()
            && let Some(key) = actor.key.as_deref().or(actor.id.as_deref())
        {
            return Some(format!("actor:{key}"));
        }
        let id = self.resource.id.as_deref()?;
        Some(format!(
            "resource:{}:{id}",
            self.resource.kind.as_deref().unwrap_or("")
        ))
    }
}

/// Where an alert stands at its source, in Cordon's words for every source's own: the lifecycle a
/// playbook matches with `on.state` and reads as `alert.state`.
///
/// | state | Alertmanager | Azure Monitor | GuardDuty | Security Hub | Defender for Cloud | Sentinel | SCC |
/// |---|---|---|---|---|---|---|---|
/// | `firing` | `firing` | `Fired` | not archived | `Workflow.Status` `NEW`, `NOTIFIED` | `Active`, `InProgress` | `New`, `Active` | `ACTIVE` |
/// | `resolved` | `resolved` | `Resolved` | | `RESOLVED`, or `RecordState` `ARCHIVED` | `Resolved` | `Closed` (true positive, undetermined) | `INACTIVE` |
/// | `suppressed` | | | `archived` | `SUPPRESSED` | `Dismissed` | `Closed` as false or benign positive | |
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Active at the source. Sources with no lifecycle (Falco, CloudTrail) only send this.
    #[default]
    Firing,
    /// The source says the condition ended or was fixed.
    Resolved,
    /// The source was told the alert needs no attention: archived, suppressed, dismissed, or
    /// closed as a false or benign positive.
    Suppressed,
}

impl AlertState {
    /// Every state, in lifecycle order.
    pub const ALL: [AlertState; 3] = [
        AlertState::Firing,
        AlertState::Resolved,
        AlertState::Suppressed,
    ];

    /// The name playbooks, the API and reports use: `firing`, `resolved`, `suppressed`.
    pub fn name(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Suppressed => "suppressed",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<AlertState> {
        AlertState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the source still considers the alert active.
    pub fn is_firing(self) -> bool {
        self == AlertState::Firing
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl std::fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        })
    }
}

/// Alerts about one entity inside a window: one chat thread, one ticket, one set of runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    /// The first alert's title.
    pub title: String,
    /// The highest severity of its alerts (0–10).
    pub severity: u8,
    pub status: IncidentStatus,
    /// The grouping key (see [`Alert::entity_key`]); `None` for an alert that names no entity,
    /// which then gets an incident of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Sources that contributed alerts.
    pub sources: Vec<String>,
    /// Distinct alerts in the incident. An alert whose state changed at its source counts once,
    /// though each change is stored as an alert of its own (see [`Alert::follows`]).
    pub alert_count: u32,
    /// Alerts received including repeats.
    pub event_count: u32,
    /// Its alerts by their state at the source: how many are resolved or suppressed there (the
    /// other `alert_count` minus these are firing), and since when none is firing.
    #[serde(default)]
    pub at_source: AtSource,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Values playbooks stored on the incident (`core.set`), for later runs and the report.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Evidence collected by playbooks: kind, location, sha256 when known, collected at, by which
    /// run, step and action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<serde_json::Value>,
}

/// An incident's alerts by their state at the source. An alert counts once however many
/// notifications changed its state: `firing` then `resolved` is one resolved alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtSource {
    /// Alerts their source says are resolved.
    #[serde(default)]
    pub resolved: u32,
    /// Alerts their source says need no attention.
    #[serde(default)]
    pub suppressed: u32,
    /// Since when no alert of the incident is firing at its source; `None` while one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_since: Option<DateTime<Utc>>,
}

impl AtSource {
    /// The count of alerts in `state`; firing ones are not counted (they are the rest).
    fn counter(&mut self, state: AlertState) -> Option<&mut u32> {
        match state {
            AlertState::Firing => None,
            AlertState::Resolved => Some(&mut self.resolved),
            AlertState::Suppressed => Some(&mut self.suppressed),
        }
    }
}

impl Incident {
    /// A new open incident started by `alert`.
    pub fn open_for(alert: &Alert) -> Incident {
        let mut incident = Incident {
            id: new_id(),
            title: alert.title.clone(),
            severity: alert.severity.score,
            status: IncidentStatus::Open,
            entity: alert.entity_key(),
            sources: vec![alert.source.clone()],
            alert_count: 1,
            event_count: 1,
            at_source: AtSource::default(),
            created_at: alert.received_at,
            updated_at: alert.received_at,
            values: BTreeMap::new(),
            evidence: Vec::new(),
        };
        incident.count_state(None, alert.state, alert.received_at);
        incident
    }

    /// Adds a new alert to the incident.
    pub fn add(&mut self, alert: &Alert) {
        self.alert_count += 1;
        self.event_count += 1;
        self.severity = self.severity.max(alert.severity.score);
        if !self.sources.contains(&alert.source) {
            self.sources.push(alert.source.clone());
        }
        self.updated_at = alert.received_at;
        self.count_state(None, alert.state, alert.received_at);
    }

    /// Alerts of the incident still firing at their source.
    pub fn firing(&self) -> u32 {
        self.alert_count
            .saturating_sub(self.at_source.resolved)
            .saturating_sub(self.at_source.suppressed)
    }

    /// Where its alerts stand at their sources, in a line for cards and reports: `None` while
    /// every alert fires (the usual case, and the only one for sources with no lifecycle), else
    /// `1 firing, 1 resolved at the source`, or, once none fires,
    /// `1 resolved, 1 suppressed at the source; none firing since 2024-05-01 12:05 UTC`.
    pub fn at_source_summary(&self) -> Option<String> {
        let s = &self.at_source;
        if s.resolved == 0 && s.suppressed == 0 {
            return None;
        }
        let firing = self.firing();
        let parts: Vec<String> = [
            (firing, "firing"),
            (s.resolved, "resolved"),
            (s.suppressed, "suppressed"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, word)| format!("{n} {word}"))
        .collect();
        let mut line = format!("{} at the source", parts.join(", "));
        if let Some(since) = s.quiet_since {
            line.push_str(&format!(
                "; none firing since {}",
                since.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        Some(line)
    }

    /// Counts one of its alerts moving at the source from `from` (`None`: a new alert) to `to`,
    /// at `at`. The incident is quiet at the source from the moment its last firing alert stops
    /// firing until one fires again.
    pub fn count_state(&mut self, from: Option<AlertState>, to: AlertState, at: DateTime<Utc>) {
        if let Some(n) = from.and_then(|from| self.at_source.counter(from)) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.at_source.counter(to) {
            *n = n.saturating_add(1);
        }
        if self.firing() > 0 {
            self.at_source.quiet_since = None;
        } else if self.at_source.quiet_since.is_none() {
            self.at_source.quiet_since = Some(at);
        }
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        let raw = RawValue::from_string("{}".into()).expect("raw");
        let mut alert = Alert::new("alertmanager", "HighCPU", raw);
        alert.state = state;
        alert.received_at = "2024-05-01T12:00:00Z".parse().expect("time");
        alert.finish()
    }

    #[test]
    fn the_state_is_stored_by_name_and_an_alert_stored_before_it_existed_is_firing() {
        let resolved = serde_json::to_value(alert(AlertState::Resolved)).expect("JSON");
        assert_eq!(resolved["state"], "resolved");
        let mut old = resolved.clone();
        old.as_object_mut().expect("object").remove("state");
        let old: Alert = serde_json::from_value(old).expect("reads");
        assert_eq!(old.state, AlertState::Firing);
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "id": "i", "title": "t", "severity": 5, "status": "open", "sources": ["falco"],
            "alert_count": 3, "event_count": 3,
            "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"
        }))
        .expect("an incident stored before states were counted");
        assert_eq!(incident.firing(), 3);
        assert_eq!(incident.at_source_summary(), None);
    }

    #[test]
    fn the_summary_says_how_many_alerts_stand_where_and_since_when_none_fires() {
        let mut incident = Incident::open_for(&alert(AlertState::Firing));
        assert_eq!(incident.at_source_summary(), None);
        incident.add(&alert(AlertState::Resolved));
        assert_eq!(
            incident.at_source_summary().as_deref(),
            Some("1 firing, 1 resolved at the source")
        );
        let at = "2024-05-01T12:05:00Z".parse().expect("time");
        incident.count_state(Some(AlertState::Firing), AlertState::Suppressed, at);
        assert_eq!(
            incident.at_source_summary().as_deref(),
            Some("1 resolved, 1 suppressed at the source; none firing since 2024-05-01 12:05 UTC")
        );
        incident.count_state(Some(AlertState::Suppressed), AlertState::Firing, at);
        assert_eq!(incident.at_source.quiet_since, None);
        assert_eq!(incident.firing(), 1);
    }
}
