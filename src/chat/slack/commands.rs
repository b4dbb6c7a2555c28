//! `/cordon`: what an analyst can ask the bot from any channel.
//!
//! - `status`: open incidents and the approvals waiting for a decision;
//! - `runs`: the latest runs;
//! - `approve RUN STEP` / `deny RUN STEP`: a decision, with the same rules as a button;
//! - `run PLAYBOOK key=value ...`: starts a playbook by hand, for members of the `chat.triggers`
//!   group (values are strings; quote one with spaces: `note="two words"`).
//!
//! Answers are ephemeral (only the caller sees them), except a started run, which the channel
//! sees.

use serde_json::{Value, json};

use super::Slack;
use super::blocks::escape;
use crate::alert::IncidentStatus;
use crate::audit::NewEntry;
use crate::chat::{ChatUser, click};
use crate::engine::EngineError;
use crate::engine::channel::open_requests;
use crate::engine::run::RunStatus;
use crate::store::{IncidentQuery, RunQuery};

/// A slash command as Slack sent it (over HTTP or Socket Mode).
#[derive(Debug, Clone)]
pub(super) struct CommandCall {
    pub user_id: String,
    pub user_name: Option<String>,
    pub text: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommandReply {
    pub text: String,
    /// Shown to the channel rather than only to the caller.
    pub public: bool,
}

impl CommandReply {
    fn private(text: impl Into<String>) -> CommandReply {
        CommandReply {
            text: text.into(),
            public: false,
        }
    }
}

pub(super) const SHUTTING_DOWN: &str = "Cordon is shutting down; try again in a moment.";

const USAGE: &str = "Usage: `/cordon status` · `/cordon runs` · `/cordon approve RUN STEP` · `/cordon deny RUN STEP` · `/cordon run PLAYBOOK key=value ...`";

/// Splits command text into words; double quotes (straight or the curly ones Slack's editor
/// types) group words with spaces.
pub(super) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' | '“' | '”' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(current);
    }
    out
}

impl Slack {
    /// The person behind a Slack user id, with the Slack user groups approver groups list.
    pub(super) async fn chat_user(&self, user_id: &str, name: Option<&str>) -> ChatUser {
        ChatUser {
            identity: format!("slack:{user_id}"),
            groups: self.groups_of(user_id).await,
            name: name.unwrap_or(user_id).to_owned(),
        }
    }

    /// Answers a `/cordon` command.
    pub(super) async fn command(&self, call: &CommandCall) -> CommandReply {
        let words = words(&call.text);
        let verb = words.first().map(|w| w.to_ascii_lowercase());
        match verb.as_deref() {
            None | Some("help") => CommandReply::private(USAGE),
            Some("status") => self.status().await,
            Some("runs") => self.runs().await,
            Some(verb @ ("approve" | "deny")) => {
                let [_, run, step] = words.as_slice() else {
                    return CommandReply::private(format!("Usage: `/cordon {verb} RUN STEP`"));
                };
                let Some(engine) = self.engine() else {
                    return CommandReply::private(SHUTTING_DOWN);
                };
                let user = self
                    .chat_user(&call.user_id, call.user_name.as_deref())
                    .await;
                let reply = click(&engine, "slack", &user, run, step, verb == "approve").await;
                CommandReply::private(escape(&reply.text))
            }
            Some("run") => self.trigger(call, &words[1..]).await,
            Some(other) => {
                CommandReply::private(format!("Unknown command `{}`. {USAGE}", escape(other)))
            }
        }
    }

    async fn status(&self) -> CommandReply {
        let open = self
            .store
            .incidents(&IncidentQuery {
                status: Some(IncidentStatus::Open),
                limit: 1000,
            })
            .await;
        let waiting = self
            .store
            .runs(&RunQuery {
                status: Some(RunStatus::Waiting),
                limit: 50,
                ..RunQuery::default()
            })
            .await;
        let (Ok(open), Ok(waiting)) = (open, waiting) else {
            return CommandReply::private("The store cannot be read right now; try again.");
        };
        let requests: Vec<_> = waiting.iter().flat_map(open_requests).collect();
        let mut text = format!(
            "*{} open incident(s)*, *{} approval(s) waiting*",
            open.len(),
            requests.len()
        );
        for r in requests.iter().take(20) {
            text.push_str(&format!(
                "\n• run `{}` step `{}`: {} (approvers `{}`, quorum {})",
                escape(&r.run_id),
                escape(&r.step),
                escape(&super::blocks::cut(&r.prompt, 200)),
                escape(&r.group),
                r.quorum
            ));
        }
        CommandReply::private(text)
    }

    async fn runs(&self) -> CommandReply {
        let Ok(runs) = self
            .store
            .runs(&RunQuery {
                limit: 10,
                ..RunQuery::default()
            })
            .await
        else {
            return CommandReply::private("The store cannot be read right now; try again.");
        };
        if runs.is_empty() {
            return CommandReply::private("No runs yet.");
        }
        let mut text = String::from("*Latest runs*");
        for run in &runs {
            text.push_str(&format!(
                "\n• `{}` `{}` {} (started {})",
                escape(&run.id),
                escape(&run.playbook),
                run.status.as_str(),
                run.created_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        CommandReply::private(text)
    }

    async fn trigger(&self, call: &CommandCall, args: &[String]) -> CommandReply {
        let Some((playbook, pairs)) = args.split_first() else {
            return CommandReply::private("Usage: `/cordon run PLAYBOOK key=value ...`");
        };
        let mut inputs = serde_json::Map::new();
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return CommandReply::private(format!(
                    "`{}` is not `key=value`. Usage: `/cordon run PLAYBOOK key=value ...`",
                    escape(pair)
                ));
            };
            inputs.insert(key.to_owned(), Value::String(value.to_owned()));
        }
        let user = self
            .chat_user(&call.user_id, call.user_name.as_deref())
            .await;
        let Some(group) = &self.triggers else {
            return CommandReply::private(
                "Starting playbooks from chat is off: the config names no `chat.triggers` group.",
            );
        };
        let allowed = self.approvers.is_member(group, &user.identity)
            || user
                .groups
                .iter()
                .any(|g| self.approvers.is_member(group, g));
        if !allowed {
            let entry = NewEntry::new("trigger.refused")
                .actor(user.identity.clone())
                .detail(json!({ "playbook": playbook, "via": "slack", "reason": format!("not in the trigger group `{group}`") }));
            if let Err(e) = self.store.append_audit(vec![entry]).await {
                tracing::warn!(error = %e, "cannot audit a refused chat trigger");
            }
            return CommandReply::private(format!(
                "Not allowed: you are not in the trigger group `{}`.",
                escape(group)
            ));
        }
        let Some(engine) = self.engine() else {
            return CommandReply::private(SHUTTING_DOWN);
        };
        match engine
            .trigger(playbook, Value::Object(inputs), &user.identity, None, false)
            .await
        {
            Ok((run, true)) => CommandReply {
                text: format!(
                    "{} started `{}`: run `{}`.",
                    super::blocks::who(&user.identity),
                    escape(playbook),
                    escape(&run)
                ),
                public: true,
            },
            Ok((run, false)) => CommandReply::private(format!(
                "`{}` is already running for this: run `{}`.",
                escape(playbook),
                escape(&run)
            )),
            Err(EngineError::NoPlaybook(_)) => {
                CommandReply::private(format!("No playbook `{}` is loaded.", escape(playbook)))
            }
            Err(other) => CommandReply::private(format!(
                "Could not start `{}`: {}",
                escape(playbook),
                escape(&other.to_string())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_keep_quoted_values_whole() {
        assert_eq!(
            words("run  aws-ec2-compromise instance=i-0abc note=\"two words\" x=“curly quotes”"),
            vec![
                "run",
                "aws-ec2-compromise",
                "instance=i-0abc",
                "note=two words",
                "x=curly quotes"
            ]
        );
        assert_eq!(words("   "), Vec::<String>::new());
        assert_eq!(words("empty=\"\""), vec!["empty="]);
    }
}
