//! The card: what every platform shows for an approval request, built once from the store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::channel::{ApprovalOutcome, ApprovalRequest};
use crate::store::Store;

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
    /// Where the incident's alerts stand at their sources, once one of them is no longer firing
    /// there (see [`crate::alert::Incident::at_source_summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_source: Option<String>,
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
            at_source: None,
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
            card.at_source = incident.at_source_summary();
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
                        d.shown(),
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
        if let Some(at_source) = &self.at_source {
            facts.push(("At the source".into(), at_source.clone()));
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
