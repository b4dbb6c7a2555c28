//! Who may decide an approval, and what a decision does. The same rules apply whatever the decision
//! came through (API, CLI, chat, console): only people in the approver group decide, with a
//! credential that carries the `approver` role; the person who started a run may not approve it,
//! from any platform; quorum counts distinct people, so one person deciding from two platforms
//! counts once; one deny ends it; a decision after the outcome is refused with who decided.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::run::{Decision, Run, StepStatus};
use crate::model::people::{Actor, Role};

/// Approver groups from the config: a group lists people (by id; identities in the config are
/// turned into the person who has them), other groups (`group:<name>`) and platform groups
/// (`slack-group:S0123`, `teams-group:<id>`, `discord-role:<id>`).
#[derive(Debug, Clone, Default)]
pub struct ApproverGroups(pub BTreeMap<String, Vec<String>>);

impl ApproverGroups {
    /// Whether `actor` belongs to `group`: listed by person id, in a platform group the platform
    /// vouched for, or through a group the person joined in the store; following `group:`
    /// references (cycles are harmless).
    pub fn admits(&self, group: &str, actor: &Actor) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![group.to_owned()];
        while let Some(g) = todo.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if actor
                .also
                .iter()
                .any(|a| a.strip_prefix("group:") == Some(&g))
            {
                return true;
            }
            for member in self.0.get(&g).into_iter().flatten() {
                match member.strip_prefix("group:") {
                    Some(inner) => todo.push(inner.to_owned()),
                    None if *member == actor.person || actor.also.contains(member) => return true,
                    None => {}
                }
            }
        }
        false
    }

    /// Whether a group of this name exists.
    pub fn has(&self, group: &str) -> bool {
        self.0.contains_key(group)
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
    #[error("{0} decides no approvals with this credential: it lacks the role `approver`")]
    NoApproverRole(String),
    #[error("{0} started this run and may not approve it")]
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
            DecisionError::NotAllowed(..)
            | DecisionError::NoApproverRole(_)
            | DecisionError::Requester(_) => "forbidden",
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

/// Applies `actor`'s decision to approval `step` of `run`.
pub fn decide(
    run: &mut Run,
    step: &str,
    actor: &Actor,
    approve: bool,
    via: &str,
    groups: &ApproverGroups,
    now: DateTime<Utc>,
) -> Result<Decided, DecisionError> {
    let requester = run.trigger.person.clone();
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
                    d.who(),
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
    if !groups.admits(&approval.group, actor) {
        return Err(DecisionError::NotAllowed(
            actor.person.clone(),
            approval.group.clone(),
        ));
    }
    if !actor.roles.has(Role::Approver) {
        return Err(DecisionError::NoApproverRole(actor.person.clone()));
    }
    if approve && requester.as_deref() == Some(actor.person.as_str()) {
        return Err(DecisionError::Requester(actor.person.clone()));
    }
    if approval.decisions.iter().any(|d| d.who() == actor.person) {
        return Err(DecisionError::Repeated(actor.person.clone()));
    }
    approval.decisions.push(Decision {
        identity: actor.identity.clone(),
        person: Some(actor.person.clone()),
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
                person: None,
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
    use crate::model::people::Roles;

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
            parent: None,
            id: "r1".into(),
            playbook: "p".into(),
            status: RunStatus::Waiting,
            trigger: Trigger {
                kind: if by.is_some() { "manual" } else { "alert" }.into(),
                by: by.map(|p| format!("cli:{p}")),
                person: by.map(str::to_owned),
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
                        "alice".to_owned(),
                        "bob".to_owned(),
                        "group:leads".to_owned(),
                    ],
                ),
                (
                    "leads".to_owned(),
                    vec![
                        "carol".to_owned(),
                        "slack-group:S1".to_owned(),
                        "group:soc".to_owned(),
                    ],
                ),
            ]
            .into(),
        )
    }

    fn as_(person: &str, identity: &str) -> Actor {
        Actor {
            person: person.into(),
            identity: identity.into(),
            roles: Roles::of([Role::Approver]),
            also: vec![],
        }
    }

    #[test]
    fn members_decide_through_nested_groups_platform_groups_and_stored_groups() {
        let g = groups();
        assert!(g.admits("soc", &as_("carol", "teams:42")));
        assert!(g.admits("leads", &as_("alice", "cli:alice")));
        assert!(!g.admits("soc", &as_("mallory", "cli:mallory")));
        assert!(!g.admits("nope", &as_("alice", "cli:alice")));
        let mut dave = as_("dave", "slack:UDAVE");
        assert!(!g.admits("soc", &dave));
        dave.also = vec!["slack-group:S1".into()];
        assert!(
            g.admits("soc", &dave),
            "through a Slack user group in leads"
        );
        let erin = Actor {
            also: vec!["group:leads".into()],
            ..as_("erin", "oidc:erin")
        };
        assert!(g.admits("soc", &erin), "a group joined in the store");
    }

    #[test]
    fn quorum_counts_people_not_identities_and_one_deny_ends_it() {
        let now = Utc::now();
        let mut run = waiting_run(2, None);
        let alice_slack = as_("alice", "slack:UALICE");
        let alice_discord = as_("alice", "discord:111");
        assert_eq!(
            decide(&mut run, "ok", &alice_slack, true, "slack", &groups(), now)
                .unwrap()
                .outcome,
            None
        );
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &alice_discord,
                true,
                "discord",
                &groups(),
                now
            ),
            Err(DecisionError::Repeated("alice".into()))
        );
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &as_("carol", "teams:42"),
                true,
                "teams",
                &groups(),
                now
            )
            .unwrap()
            .outcome,
            Some(true)
        );
        let late = decide(
            &mut run,
            "ok",
            &as_("bob", "cli:bob"),
            false,
            "api",
            &groups(),
            now,
        )
        .unwrap_err();
        assert!(
            late.to_string()
                .contains("already decided by alice (approve), carol (approve)"),
            "{late}"
        );

        let mut run = waiting_run(3, None);
        decide(&mut run, "ok", &alice_slack, true, "slack", &groups(), now).unwrap();
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &as_("bob", "cli:bob"),
                false,
                "api",
                &groups(),
                now
            )
            .unwrap()
            .outcome,
            Some(false)
        );
    }

    #[test]
    fn outsiders_requesters_on_any_platform_and_narrow_credentials_are_refused() {
        let now = Utc::now();
        let mut run = waiting_run(1, Some("alice"));
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &as_("mallory", "cli:mallory"),
                true,
                "api",
                &groups(),
                now
            ),
            Err(DecisionError::NotAllowed("mallory".into(), "soc".into()))
        );
        // Alice started the run from the CLI; her Discord identity is still Alice.
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &as_("alice", "discord:111"),
                true,
                "discord",
                &groups(),
                now
            ),
            Err(DecisionError::Requester("alice".into()))
        );
        let viewer_token = Actor {
            roles: Roles::of([Role::Viewer]),
            ..as_("bob", "token:t1")
        };
        assert_eq!(
            decide(&mut run, "ok", &viewer_token, true, "api", &groups(), now),
            Err(DecisionError::NoApproverRole("bob".into()))
        );
        // The requester may still deny their own run.
        assert_eq!(
            decide(
                &mut run,
                "ok",
                &as_("alice", "cli:alice"),
                false,
                "api",
                &groups(),
                now
            )
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
                &as_("alice", "cli:alice"),
                true,
                "api",
                &groups(),
                Utc::now()
            ),
            Err(DecisionError::RunFinished("cancelled".into()))
        );
    }
}
