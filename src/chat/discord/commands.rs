//! `/cordon`: what an analyst can ask from Discord. Sub-commands (registered as in
//! `integrations/discord/README.md`):
//! - `status`: open incidents and the approvals waiting;
//! - `runs`: the latest runs;
//! - `approve run:<id> step:<id>` / `deny ...`: a decision by id, under the same rules as a click;
//! - `run playbook:<id> inputs:key=value ...`: starts a playbook by hand, for members of the
//!   `chat.triggers` group (in person or through a Discord role).
//!
//! Answers are ephemeral: only the person who asked sees them; a started run is also announced
//! to the channel.

use serde_json::{Map, Value, json};

use super::interactions::{CommandData, option};
use crate::app::AppState;
use crate::audit::NewEntry;
use crate::chat::{ChatUser, click};
use crate::engine::EngineError;
use crate::engine::run::RunStatus;
use crate::store::{IncidentQuery, RunQuery};

const HELP: &str = "Try `/cordon status`, `/cordon runs`, `/cordon approve run:<id> step:<id>`, `/cordon deny run:<id> step:<id>` or `/cordon run playbook:<id> inputs:key=value ...`.";

/// What to answer a command.
pub(super) struct Answer {
    /// For the person who asked.
    pub text: String,
    /// For everyone in the channel too (a started run).
    pub announce: Option<String>,
}

impl From<String> for Answer {
    fn from(text: String) -> Answer {
        Answer {
            text,
            announce: None,
        }
    }
}

/// The answer to `/cordon ...` from `user`.
pub(super) async fn run(app: &AppState, user: &ChatUser, data: &CommandData) -> Answer {
    let Some((sub, options)) = data.sub() else {
        return HELP.to_owned().into();
    };
    match sub {
        "status" => status(app).await.into(),
        "runs" => runs(app).await.into(),
        "approve" | "deny" => match (option(options, "run"), option(options, "step")) {
            (Some(run_id), Some(step)) => {
                click(&app.engine, "discord", user, run_id, step, sub == "approve")
                    .await
                    .text
                    .into()
            }
            _ => format!("Usage: `/cordon {sub} run:<run id> step:<step id>`.").into(),
        },
        "run" => {
            let (playbook, inputs) = (option(options, "playbook"), option(options, "inputs"));
            trigger(app, user, playbook, inputs).await
        }
        other => format!("Cordon has no `/cordon {other}`. {HELP}").into(),
    }
}

async fn status(app: &AppState) -> String {
    let open = app
        .store
        .incidents(&IncidentQuery {
            status: Some(crate::alert::IncidentStatus::Open),
            limit: 1000,
        })
        .await;
    let waiting = app
        .store
        .runs(&RunQuery {
            status: Some(RunStatus::Waiting),
            limit: 1000,
            ..RunQuery::default()
        })
        .await;
    let (Ok(open), Ok(waiting)) = (open, waiting) else {
        return "The store cannot be read right now; try again shortly.".to_owned();
    };
    let requests: Vec<_> = waiting
        .iter()
        .flat_map(crate::engine::channel::open_requests)
        .collect();
    let mut text = format!(
        "**{}** open incident{}, **{}** approval{} waiting.",
        open.len(),
        if open.len() == 1 { "" } else { "s" },
        requests.len(),
        if requests.len() == 1 { "" } else { "s" },
    );
    for request in requests.iter().take(10) {
        text.push_str(&format!(
            "\n• `{}` step `{}` ({}): {} (group `{}`, quorum {})",
            request.run_id,
            request.step,
            request.playbook,
            request.prompt,
            request.group,
            request.quorum
        ));
    }
    if requests.len() > 10 {
        text.push_str(&format!("\n… and {} more.", requests.len() - 10));
    }
    text
}

async fn runs(app: &AppState) -> String {
    let Ok(runs) = app
        .store
        .runs(&RunQuery {
            limit: 10,
            ..RunQuery::default()
        })
        .await
    else {
        return "The store cannot be read right now; try again shortly.".to_owned();
    };
    if runs.is_empty() {
        return "No runs yet.".to_owned();
    }
    let mut text = String::from("Latest runs:");
    for run in runs {
        text.push_str(&format!(
            "\n• `{}` {}: {} ({})",
            run.id,
            run.playbook,
            run.status.as_str(),
            run.created_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    text
}

/// `key=value key2=value2` as inputs (values are text).
pub(super) fn parse_inputs(text: &str) -> Result<Map<String, Value>, String> {
    let mut inputs = Map::new();
    for pair in text.split_whitespace() {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                inputs.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            _ => return Err(format!("`{pair}` is not `key=value`")),
        }
    }
    Ok(inputs)
}

async fn trigger(
    app: &AppState,
    user: &ChatUser,
    playbook: Option<&str>,
    inputs: Option<&str>,
) -> Answer {
    let Some(group) = &app.config.chat.triggers else {
        let off = "Starting playbooks from chat is off: the config names no `chat.triggers` group.";
        return off.to_owned().into();
    };
    let Some(playbook) = playbook else {
        let usage = "Usage: `/cordon run playbook:<id> inputs:key=value ...`.";
        return usage.to_owned().into();
    };
    let groups = crate::app::approver_groups(&app.config);
    let member = groups.is_member(group, &user.identity)
        || user.groups.iter().any(|g| groups.is_member(group, g));
    if !member {
        let entry = NewEntry::new("trigger.refused")
            .actor(user.identity.clone())
            .detail(json!({ "playbook": playbook, "via": "discord", "reason": format!("not in the trigger group `{group}`") }));
        if let Err(e) = app.store.append_audit(vec![entry]).await {
            tracing::warn!(error = %e, "cannot audit a refused chat trigger");
        }
        return format!("Not allowed: you are not in the trigger group `{group}`.").into();
    }
    let inputs = match parse_inputs(inputs.unwrap_or("")) {
        Ok(inputs) => inputs,
        Err(e) => return format!("{e}; inputs are `key=value` pairs separated by spaces.").into(),
    };
    match app
        .engine
        .trigger(playbook, Value::Object(inputs), &user.identity, None, false)
        .await
    {
        Ok((id, true)) => Answer {
            text: format!("Started `{playbook}`: run `{id}`."),
            announce: Some(format!(
                "{} started `{playbook}`: run `{id}`.",
                mention(&user.identity)
            )),
        },
        Ok((id, false)) => format!("`{playbook}` is already running for this: run `{id}`.").into(),
        Err(EngineError::NoPlaybook(_)) => format!("There is no playbook `{playbook}`.").into(),
        Err(e) => {
            tracing::warn!(error = %e, playbook, "a playbook start from Discord failed");
            format!("Could not start `{playbook}`; the server log says why.").into()
        }
    }
}

/// `<@id>` for a Discord identity: shown as the person's name (Cordon's messages ping nobody).
fn mention(identity: &str) -> String {
    match identity.strip_prefix("discord:") {
        Some(id) => format!("<@{id}>"),
        None => identity.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_key_value_pairs() {
        let inputs = parse_inputs("instance=i-0abc  region=us-east-1 note=").unwrap();
        assert_eq!(inputs["instance"], "i-0abc");
        assert_eq!(inputs["region"], "us-east-1");
        assert_eq!(inputs["note"], "");
        assert_eq!(parse_inputs("").unwrap().len(), 0);
        assert!(parse_inputs("instance").unwrap_err().contains("`instance`"));
        assert!(parse_inputs("=x").is_err());
    }
}
