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
}

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
    /// Identity alerts group into incidents by actor, the rest by resource.
    pub fn is_identity(&self) -> bool {
        let kind = self.resource.kind.as_deref().unwrap_or("");
        let identity_kind = kind.starts_with("aws.iam.")
            || kind == "aws.root"
            || kind == "azure.user"
            || kind == "gcp.service_account"
            || kind == "k8s.user";
        identity_kind || (self.resource.id.is_none() && self.actor_id().is_some())
    }

    /// The actor's id, if the alert names one.
    pub fn actor_id(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.id.as_deref())
    }

    /// The entity this alert is about, as an incident grouping key: `actor:<id>` for identity
    /// alerts, `resource:<kind>:<id>` otherwise; `None` when the alert names neither.
    pub fn entity_key(&self) -> Option<String> {
        if self.is_identity()
            && let Some(actor) = self.actor_id()
        {
            return Some(format!("actor:{actor}"));
        }
        let id = self.resource.id.as_deref()?;
        Some(format!(
            "resource:{}:{id}",
            self.resource.kind.as_deref().unwrap_or("")
        ))
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
    /// Distinct alerts in the incident.
    pub alert_count: u32,
    /// Alerts received including repeats.
    pub event_count: u32,
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

impl Incident {
    /// A new open incident started by `alert`.
    pub fn open_for(alert: &Alert) -> Incident {
        Incident {
            id: new_id(),
            title: alert.title.clone(),
            severity: alert.severity.score,
            status: IncidentStatus::Open,
            entity: alert.entity_key(),
            sources: vec![alert.source.clone()],
            alert_count: 1,
            event_count: 1,
            created_at: alert.received_at,
            updated_at: alert.received_at,
            values: BTreeMap::new(),
            evidence: Vec::new(),
        }
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
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
