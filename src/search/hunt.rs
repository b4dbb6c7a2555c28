//! Pivots: everything Cordon holds about one entity (an IP address, a principal, a resource, a
//! pod, a key) over a window: its alerts, their incidents, those incidents' evidence, the actions
//! runs took on them and the decisions people made, and the entities seen with it, with counts.
//! The same for `cordon hunt`, `GET /v1/hunt/{entity}` and the `core.hunt` action.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use super::doc::{Doc, normalize_term};
use super::query::{Expr, Numeric, Op};
use super::{Hit, Request, SearchError, hydrate};
use crate::store::{RunQuery, Store};

/// The most alerts a hunt reads (newest first); `alerts_truncated` says when there were more.
pub const MAX_ALERTS: usize = 1000;
/// The most incidents a hunt follows.
pub const MAX_INCIDENTS: usize = 100;
/// The co-occurring entities listed.
pub const MAX_CO_OCCURRING: usize = 25;
/// The window when none is given.
pub const DEFAULT_WINDOW: &str = "7d";

/// Audit entries that record a decision (a person's or a timeout's).
const DECISIONS: &[&str] = &[
    "approval.decided",
    "approval.refused",
    "approval.timed_out",
    "step.retried_by_person",
    "step.skipped_by_person",
    "step.undone",
    "undo.requested",
];

/// What a hunt found.
#[derive(Debug, Clone, Serialize)]
pub struct Hunt {
    pub entity: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Alerts naming the entity (as IP, actor id or key, resource id or name, domain), newest
    /// first.
    pub alerts: Vec<Hit>,
    pub alerts_truncated: bool,
    /// Their incidents and incidents about the entity, newest first.
    pub incidents: Vec<Hit>,
    pub evidence: Vec<Evidence>,
    pub actions: Vec<ActionTaken>,
    pub decisions: Vec<Decision>,
    /// Other entities in the same alerts, most frequent first.
    pub co_occurring: Vec<CoOccurring>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub incident_id: String,
    pub record: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionTaken {
    pub incident_id: String,
    pub run_id: String,
    pub playbook: String,
    pub step: String,
    pub action: String,
    pub status: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub run_id: String,
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub detail: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CoOccurring {
    pub entity: String,
    /// The fields it appeared as (`ip`, `actor.key`, `resource`, ...).
    pub fields: Vec<String>,
    /// Alerts it shares with the hunted entity.
    pub count: u32,
}

/// Hunts `entity` over the `window` (`7d`, `24h`; default 7 days) ending at `now`.
pub async fn hunt(
    store: &dyn Store,
    entity: &str,
    window: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Hunt, SearchError> {
    let entity = entity.trim();
    if entity.is_empty() {
        return Err(SearchError::Param {
            name: "entity",
            message: "name an IP address, principal, resource, pod or key".into(),
        });
    }
    let window_text = window.filter(|w| !w.is_empty()).unwrap_or(DEFAULT_WINDOW);
    let window: Duration =
        super::query::parse_duration(window_text).ok_or_else(|| SearchError::Param {
            name: "window",
            message: format!("`{window_text}` is not a duration (30m, 24h, 7d, 2w)"),
        })?;
    let since = now - window;
    let term = normalize_term("entity", entity);
    let in_window = |doc_type: &str| {
        Expr::And(vec![
            Expr::Term {
                term: term.clone(),
                prefix: false,
            },
            Expr::Term {
                term: normalize_term("type", doc_type),
                prefix: false,
            },
            Expr::Cmp {
                field: Numeric::Time,
                op: Op::Ge,
                value: since.timestamp_millis(),
            },
            Expr::Cmp {
                field: Numeric::Time,
                op: Op::Le,
                value: now.timestamp_millis(),
            },
        ])
    };
    let refs = store
        .search(&Request {
            expr: in_window("alert"),
            after: None,
            limit: MAX_ALERTS + 1,
        })
        .await?;
    let alerts_truncated = refs.len() > MAX_ALERTS;
    let mut alerts = Vec::new();
    let mut incident_ids = BTreeSet::new();
    let mut co: BTreeMap<String, (BTreeSet<String>, u32)> = BTreeMap::new();
    let hunted = term.trim_start_matches("entity=").to_owned();
    for r in refs.iter().take(MAX_ALERTS) {
        let Some(alert) = store.alert(&r.id).await? else {
            continue;
        };
        incident_ids.insert(alert.incident_id.clone());
        let doc = Doc::from_alert(&alert);
        let mut seen = BTreeSet::new();
        for t in &doc.terms {
            let Some((field, value)) = t.split_once('=') else {
                continue;
            };
            if !matches!(
                field,
                "ip" | "actor"
                    | "actor.key"
                    | "actor.name"
                    | "resource"
                    | "resource.name"
                    | "domain"
            ) || value == hunted
            {
                continue;
            }
            let entry = co.entry(value.to_owned()).or_default();
            entry.0.insert(field.to_owned());
            if seen.insert(value.to_owned()) {
                entry.1 += 1;
            }
        }
        if let Some(hit) = hydrate(store, r).await? {
            alerts.push(hit);
        }
    }
    for r in store
        .search(&Request {
            expr: in_window("incident"),
            after: None,
            limit: MAX_INCIDENTS,
        })
        .await?
    {
        incident_ids.insert(r.id);
    }
    let mut incidents = Vec::new();
    let mut evidence = Vec::new();
    let mut actions = Vec::new();
    let mut decisions = Vec::new();
    for id in incident_ids.iter().take(MAX_INCIDENTS) {
        let Some(incident) = store.incident(id).await? else {
            continue;
        };
        for record in &incident.evidence {
            evidence.push(Evidence {
                incident_id: incident.id.clone(),
                record: record.clone(),
            });
        }
        let runs = store
            .runs(&RunQuery {
                incident_id: Some(incident.id.clone()),
                limit: 100,
                ..RunQuery::default()
            })
            .await?;
        for run in runs {
            for step_id in &run.order {
                let Some(step) = run.steps.get(step_id) else {
                    continue;
                };
                let Some(action) = &step.action else { continue };
                actions.push(ActionTaken {
                    incident_id: incident.id.clone(),
                    run_id: run.id.clone(),
                    playbook: run.playbook.clone(),
                    step: step_id.clone(),
                    action: action.clone(),
                    status: serde_json::to_value(step.status).unwrap_or(Value::Null),
                    finished_at: step.finished_at,
                });
            }
            for entry in store.audit_entries(Some(&run.id), 0).await? {
                if DECISIONS.contains(&entry.kind.as_str()) {
                    decisions.push(Decision {
                        run_id: run.id.clone(),
                        seq: entry.seq,
                        at: entry.at,
                        kind: entry.kind,
                        step: entry.step,
                        actor: entry.actor,
                        detail: entry.detail,
                    });
                }
            }
        }
        let created = incident.created_at;
        incidents.push(Hit {
            doc_type: super::DocType::Incident,
            incident_id: incident.id.clone(),
            id: incident.id,
            time: created,
            title: incident.title,
            severity: incident.severity,
            source: incident.sources.join(","),
            kind: String::new(),
            status: incident.status.to_string(),
        });
    }
    incidents.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    decisions.sort_by_key(|d| d.seq);
    let mut co_occurring: Vec<CoOccurring> = co
        .into_iter()
        .map(|(entity, (fields, count))| CoOccurring {
            entity,
            fields: fields.into_iter().collect(),
            count,
        })
        .collect();
    co_occurring.sort_by(|a, b| b.count.cmp(&a.count).then(a.entity.cmp(&b.entity)));
    co_occurring.truncate(MAX_CO_OCCURRING);
    Ok(Hunt {
        entity: entity.to_owned(),
        since,
        until: now,
        alerts,
        alerts_truncated,
        incidents,
        evidence,
        actions,
        decisions,
        co_occurring,
    })
}
