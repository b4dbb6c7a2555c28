//! Who may decide an approval, and what a decision does. The same rules apply whatever the decision
//! came through (API, CLI, chat): only members of the approver group decide; the identity that
//! triggered a manual run may not approve it; quorum counts distinct people; one deny ends it; a
//! decision after the outcome is refused with who decided.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::run::{Decision, Run, StepStatus};

/// Approver groups from the config: a group lists identities (`cli:alice`, `slack:U123`,
/// `teams:<aad object id>`, `discord:<user id>`) and other groups (`group:<name>`).
#[derive(Debug, Clone, Default)]
pub struct ApproverGroups(pub BTreeMap<String, Vec<String>>);

impl ApproverGroups {
    /// Whether `identity` belongs to `group`, following `group:` references (cycles are harmless).
    pub fn is_member(&self, group: &str, identity: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![group.to_owned()];
        while let Some(g) = todo.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            for member in self.0.get(&g).into_iter().flatten() {
                match member.strip_prefix("group:") {
                    Some(inner) => todo.push(inner.to_owned()),
                    None if member == identity => return true,
                    None => {}
                }
            }
        }
        false
    }
}

/// Why a decision was refused. Each says what the person can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("run has no approval step `{0}`")]
    NoSuchApproval(String),
    #[error("approval `{0}` is not waiting for a decision")]
    NotWaiting(String),
    #[error("the run is {0}; it takes no decisions")]
    RunFinished(String),
    #[error("already decided by {0}")]
    AlreadyDecided(String),
    #[error("{0} is not in the approver group `{1}`")]
    NotAllowed(String, String),
    #[error("{0} triggered this run and may not approve it")]
    Requester(String),
    #[error("{0} has already decided on this approval")]
    Repeated(String),
}

impl DecisionError {
    /// The code of the JSON error answer.
    pub fn code(&self) -> &'static str {
        match self {
            DecisionError::NoSuchApproval(_) => "not_found",
            DecisionError::NotWaiting(_)
            | DecisionError::RunFinished(_)
            | DecisionError::AlreadyDecided(_)
            | DecisionError::Repeated(_) => "conflict",
            DecisionError::NotAllowed(..) | DecisionError::Requester(_) => "forbidden",
        }
    }
}

/// What a valid decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// `Some(outcome)` when this decision settled the approval.
    pub outcome: Option<bool>,
    pub approvals: usize,
    pub quorum: u32,
}

/// Applies a decision by `identity` to approval `step` of `run`.
pub fn decide(
    run: &mut Run,
    step: &str,
    identity: &str,
    approve: bool,
    via: &str,
    groups: &ApproverGroups,
    now: DateTime<Utc>,
) -> Result<Decided, DecisionError> {
    decide_with(run, step, identity, &[], approve, via, groups, now)
}

/// As [`decide`], for a person who is also a member of the platform groups `also` (a Slack user
/// group `slack-group:S0123`, a Discord role `discord-role:<id>`, a Teams AAD group
/// `teams-group:<object id>`), which approver groups may list. Quorum still counts `identity`.
#[allow(clippy::too_many_arguments)]
pub fn decide_with(
    run: &mut Run,
    step: &str,
    identity: &str,
    also: &[String],
    approve: bool,
    via: &str,
    groups: &ApproverGroups,
    now: DateTime<Utc>,
) -> Result<Decided, DecisionError> {
    let requester = run.trigger.by.clone();
    let finished = run.status.is_finished().then(|| run.status.to_string());
    let state = run
        .steps
        .get_mut(step)
        .ok_or_else(|| DecisionError::NoSuchApproval(step.to_owned()))?;
    let approval = state
        .approval
        .as_mut()
        .ok_or_else(|| DecisionError::NoSuchApproval(step.to_owned()))?;
    if approval.outcome.is_some() {
        let by: Vec<String> = approval
            .decisions
            .iter()
            .map(|d| {
                format!(
                    "{} ({})",
                    d.identity,
                    if d.approve { "approve" } else { "deny" }
                )
            })
            .collect();
        return Err(DecisionError::AlreadyDecided(by.join(", ")));
    }
    if let Some(status) = finished {
        return Err(DecisionError::RunFinished(status));
    }
    if state.status != StepStatus::Waiting {
        return Err(DecisionError::NotWaiting(step.to_owned()));
    }
    let member = groups.is_member(&approval.group, identity)
        || also.iter().any(|m| groups.is_member(&approval.group, m));
    if !member {
        return Err(DecisionError::NotAllowed(
            identity.to_owned(),
            approval.group.clone(),
        ));
    }
    if approve && requester.as_deref() == Some(identity) {
        return Err(DecisionError::Requester(identity.to_owned()));
    }
    if approval.decisions.iter().any(|d| d.identity == identity) {
        return Err(DecisionError::Repeated(identity.to_owned()));
    }
    approval.decisions.push(Decision {
        identity: identity.to_owned(),
        approve,
        at: now,
        via: via.to_owned(),
    });
    let approvals = approval.approvers().len();
    if !approve {
        approval.outcome = Some(false);
    } else if approvals >= approval.quorum as usize {
        approval.outcome = Some(true);
    }
    Ok(Decided {
        outcome: approval.outcome,
        approvals,
        quorum: approval.quorum,
    })
}

/// Settles approvals whose timeout has passed with their timeout decision; returns the step ids.
pub fn expire(run: &mut Run, now: DateTime<Utc>) -> Vec<String> {
    let mut expired = Vec::new();
    for (id, state) in run.steps.iter_mut() {
        if state.status != StepStatus::Waiting {
            continue;
        }
        if let Some(approval) = state.approval.as_mut()
            && approval.outcome.is_none()
            && approval.timeout_at <= now
        {
            approval.decisions.push(Decision {
                identity: "system".into(),
                approve: approval.on_timeout_approve,
                at: now,
                via: "timeout".into(),
            });
            approval.outcome = Some(approval.on_timeout_approve);
            expired.push(id.clone());
        }
    }
    expired
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::*;
    use crate::engine::run::{ApprovalState, RunStatus, StepState, Trigger};

    fn waiting_run(quorum: u32, by: Option<&str>) -> Run {
        let now = Utc::now();
        let mut step = StepState::new(StepStatus::Waiting);
        step.approval = Some(ApprovalState {
            prompt: "Isolate?".into(),
            group: "soc".into(),
            quorum,
            timeout_at: now + TimeDelta::minutes(30),
            on_timeout_approve: false,
            decisions: vec![],
            outcome: None,
            plan: vec![],
        });
        Run {
            id: "r1".into(),
            playbook: "p".into(),
            status: RunStatus::Waiting,
            trigger: Trigger {
                kind: if by.is_some() { "manual" } else { "alert" }.into(),
                by: by.map(str::to_owned),
            },
            incident_id: None,
            alert_id: None,
            concurrency_key: "k".into(),
            inputs: serde_json::Value::Null,
            vars: serde_json::Value::Null,
            order: vec!["ok".into()],
            steps: [("ok".to_owned(), step)].into(),
            cursor: 0,
            outputs: serde_json::Value::Null,
            error: None,
            dry_run: false,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    fn groups() -> ApproverGroups {
        ApproverGroups(
            [
                (
                    "soc".to_owned(),
                    vec![
                        "cli:alice".to_owned(),
                        "cli:bob".to_owned(),
                        "group:leads".to_owned(),
                    ],
                ),
                (
                    "leads".to_owned(),
                    vec!["teams:42".to_owned(), "group:soc".to_owned()],
                ),
            ]
            .into(),
        )
    }

    #[test]
    fn members_decide_through_nested_groups_and_cycles_are_harmless() {
        let g = groups();
        assert!(g.is_member("soc", "teams:42"));
        assert!(g.is_member("leads", "cli:alice"));
        assert!(!g.is_member("soc", "cli:mallory"));
        assert!(!g.is_member("nope", "cli:alice"));
    }

    #[test]
    fn quorum_counts_distinct_people_and_one_deny_ends_it() {
        let now = Utc::now();
        let mut run = waiting_run(2, None);
        assert_eq!(
            decide(&mut run, "ok", "cli:alice", true, "api", &groups(), now)
                .unwrap()
                .outcome,
            None
        );
        assert_eq!(
            decide(&mut run, "ok", "cli:alice", true, "api", &groups(), now),
            Err(DecisionError::Repeated("cli:alice".into()))
        );
        assert_eq!(
            decide(&mut run, "ok", "teams:42", true, "teams", &groups(), now)
                .unwrap()
                .outcome,
            Some(true)
        );
        let late = decide(&mut run, "ok", "cli:bob", false, "api", &groups(), now).unwrap_err();
        assert!(
            late.to_string()
                .contains("already decided by cli:alice (approve), teams:42 (approve)"),
            "{late}"
        );

        let mut run = waiting_run(3, None);
        decide(&mut run, "ok", "cli:alice", true, "api", &groups(), now).unwrap();
        assert_eq!(
            decide(&mut run, "ok", "cli:bob", false, "api", &groups(), now)
                .unwrap()
                .outcome,
            Some(false)
        );
    }

    #[test]
    fn outsiders_and_requesters_are_refused() {
        let now = Utc::now();
        let mut run = waiting_run(1, Some("cli:alice"));
        assert_eq!(
            decide(&mut run, "ok", "cli:mallory", true, "api", &groups(), now),
            Err(DecisionError::NotAllowed(
                "cli:mallory".into(),
                "soc".into()
            ))
        );
        assert_eq!(
            decide(&mut run, "ok", "cli:alice", true, "api", &groups(), now),
            Err(DecisionError::Requester("cli:alice".into()))
        );
        // The requester may still deny their own run.
        assert_eq!(
            decide(&mut run, "ok", "cli:alice", false, "api", &groups(), now)
                .unwrap()
                .outcome,
            Some(false)
        );
        assert!(run.steps["ok"].approval.as_ref().unwrap().decisions.len() == 1);
    }

    #[test]
    fn timeouts_take_the_timeout_decision() {
        let mut run = waiting_run(1, None);
        let later = Utc::now() + TimeDelta::hours(1);
        assert_eq!(expire(&mut run, later), vec!["ok".to_owned()]);
        let approval = run.steps["ok"].approval.as_ref().unwrap();
        assert_eq!(
            (approval.outcome, approval.decisions[0].identity.as_str()),
            (Some(false), "system")
        );
        let mut run = waiting_run(1, None);
        run.status = RunStatus::Cancelled;
        assert_eq!(
            decide(
                &mut run,
                "ok",
                "cli:alice",
                true,
                "api",
                &groups(),
                Utc::now()
            ),
            Err(DecisionError::RunFinished("cancelled".into()))
        );
    }
}
