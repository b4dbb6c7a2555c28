//! `/cordon`: what an analyst can ask the bot, written once for every platform.
//!
//! - `status`: open incidents and the approvals waiting for a decision;
//! - `runs`: the latest runs;
//! - `approve RUN STEP` / `deny RUN STEP`: a decision, under the same rules as a button;
//! - `run PLAYBOOK key=value ...`: starts a playbook by hand, for members of the `chat.triggers`
//!   group (in person or through a platform group; values are text).
//!
//! A platform reads its own syntax into a [`Command`] (Slack's slash command and a Teams message
//! are words, [`Command::from_words`]; Discord's are sub-commands with options), asks
//! [`Commands::answer`], and shows the [`Answer`] in its own markup ([`Dialect`]): the text to the
//! person who asked alone where the platform allows it, and a started run to the channel.

use std::sync::{Arc, Weak};

use serde_json::{Map, Value, json};

use super::{ChatUser, click, cut};
use crate::alert::IncidentStatus;
use crate::audit::NewEntry;
use crate::engine::approval::ApproverGroups;
use crate::engine::channel::open_requests;
use crate::engine::run::RunStatus;
use crate::engine::{Engine, EngineError};
use crate::model::event::EventKind;
use crate::model::people::{Actor, Role};
use crate::store::{IncidentQuery, RunQuery, Store};

/// A command, read from any platform's syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    Runs,
    Decide {
        run: String,
        step: String,
        approve: bool,
    },
    Run {
        playbook: String,
        inputs: Map<String, Value>,
    },
}

/// How a platform writes text: its markup for emphasis, code and people, and how its commands
/// are typed (for the usage lines).
pub trait Dialect: Send + Sync {
    fn bold(&self, text: &str) -> String;
    /// `text` as inline code, escaped for the platform.
    fn code(&self, text: &str) -> String;
    /// `text` as plain text, escaped for the platform.
    fn plain(&self, text: &str) -> String;
    /// A person, by identity (`slack:U1` → `<@U1>`); never a ping.
    fn who(&self, identity: &str) -> String;
    /// What commands start with on this platform (`/cordon `), if anything.
    fn prefix(&self) -> &'static str;
    /// How the commands are typed on this platform: the usage line.
    fn usage(&self) -> String;
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
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

/// Said when the server is going away mid-command.
pub const SHUTTING_DOWN: &str = "Cordon is shutting down; try again in a moment.";

/// How many waiting approvals `status` lists.
const STATUS_LINES: usize = 10;

impl Command {
    /// Reads `status`, `runs`, `approve RUN STEP`, `deny RUN STEP` or `run PLAYBOOK key=value ...`
    /// from the words of a message or slash command. An unreadable command gives back what to
    /// tell the person (with `dialect`'s usage line).
    pub fn from_words(text: &str, dialect: &dyn Dialect) -> Result<Command, String> {
        let words = words(text);
        let verb = words.first().map(|w| w.to_ascii_lowercase());
        match verb.as_deref() {
            None | Some("help") => Err(dialect.usage()),
            Some("status") => Ok(Command::Status),
            Some("runs") => Ok(Command::Runs),
            Some(verb @ ("approve" | "deny")) => match words.as_slice() {
                [_, run, step] => Ok(Command::Decide {
                    run: run.clone(),
                    step: step.clone(),
                    approve: verb == "approve",
                }),
                _ => Err(format!(
                    "Usage: {}",
                    dialect.code(&format!("{}{verb} RUN STEP", dialect.prefix()))
                )),
            },
            Some("run") => {
                let Some((playbook, pairs)) = words[1..].split_first() else {
                    return Err(format!(
                        "Usage: {}",
                        dialect.code(&format!("{}run PLAYBOOK key=value ...", dialect.prefix()))
                    ));
                };
                let inputs = parse_inputs(pairs.iter().map(String::as_str))
                    .map_err(|e| format!("{}; inputs are `key=value` pairs.", dialect.plain(&e)))?;
                Ok(Command::Run {
                    playbook: playbook.clone(),
                    inputs,
                })
            }
            Some(other) => Err(format!(
                "Unknown command {}. {}",
                dialect.code(other),
                dialect.usage()
            )),
        }
    }
}

/// Splits command text into words; double quotes (straight or the curly ones chat editors type)
/// group words with spaces.
pub fn words(text: &str) -> Vec<String> {
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

/// `key=value` pairs as inputs (values are text).
pub fn parse_inputs<'a>(
    pairs: impl IntoIterator<Item = &'a str>,
) -> Result<Map<String, Value>, String> {
    let mut inputs = Map::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                inputs.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            _ => return Err(format!("`{pair}` is not `key=value`")),
        }
    }
    Ok(inputs)
}

/// Answers commands with the rules every platform shares.
pub struct Commands {
    store: Arc<dyn Store>,
    /// Held weakly: the engine holds the outbox, which holds the platforms that hold this.
    engine: Weak<Engine>,
    approvers: ApproverGroups,
    /// The approver group allowed to start playbooks from chat (`chat.triggers`).
    triggers: Option<String>,
}

impl Commands {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Weak<Engine>,
        approvers: ApproverGroups,
        triggers: Option<String>,
    ) -> Commands {
        Commands {
            store,
            engine,
            approvers,
            triggers,
        }
    }

    /// The answer to `command` from `user`, who wrote it on platform `via`.
    pub async fn answer(
        &self,
        via: &str,
        user: &ChatUser,
        command: Command,
        dialect: &dyn Dialect,
    ) -> Answer {
        match command {
            Command::Status | Command::Runs => {
                if let Err(refusal) = self
                    .allowed(via, user, Role::Viewer, "status", dialect)
                    .await
                {
                    return refusal;
                }
                if command == Command::Status {
                    self.status(dialect).await.into()
                } else {
                    self.runs(dialect).await.into()
                }
            }
            Command::Decide { run, step, approve } => {
                let Some(engine) = self.engine.upgrade() else {
                    return SHUTTING_DOWN.to_owned().into();
                };
                let reply = click(&engine, via, user, &run, &step, approve).await;
                dialect.plain(&reply.text).into()
            }
            Command::Run { playbook, inputs } => {
                self.trigger(via, user, &playbook, inputs, dialect).await
            }
        }
    }

    /// The person behind `user` when they have `role`; otherwise the answer that says why not,
    /// audited.
    async fn allowed(
        &self,
        via: &str,
        user: &ChatUser,
        role: Role,
        what: &str,
        d: &dyn Dialect,
    ) -> Result<Actor, Answer> {
        let Some(engine) = self.engine.upgrade() else {
            return Err(SHUTTING_DOWN.to_owned().into());
        };
        let actor = match engine.people().actor(&user.identity, &user.groups).await {
            Ok(actor) => actor,
            Err(_) => {
                return Err("The store cannot be read right now; try again shortly."
                    .to_owned()
                    .into());
            }
        };
        let reason = match &actor {
            Some(actor) if actor.roles.has(role) => return Ok(actor.clone()),
            Some(actor) => format!("{} lacks the role `{role}`", actor.person),
            None => format!("`{}` is no person known to Cordon", user.identity),
        };
        let entry = NewEntry::new(EventKind::AccessRefused)
            .actor(user.identity.clone())
            .detail(json!({ "role": role, "what": what, "via": via, "reason": reason, "person": actor.map(|a| a.person) }));
        if let Err(e) = self.store.append_audit(vec![entry]).await {
            tracing::warn!(error = %e, "cannot audit a refused chat command");
        }
        Err(format!(
            "Not allowed: {what} needs the role {} in Cordon, and {}.",
            d.code(role.as_str()),
            d.plain(&reason)
        )
        .into())
    }

    async fn status(&self, d: &dyn Dialect) -> String {
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
                limit: 1000,
                ..RunQuery::default()
            })
            .await;
        let (Ok(open), Ok(waiting)) = (open, waiting) else {
            return "The store cannot be read right now; try again shortly.".to_owned();
        };
        let requests: Vec<_> = waiting.iter().flat_map(open_requests).collect();
        let mut text = format!(
            "{} open incident{}, {} approval{} waiting.",
            d.bold(&open.len().to_string()),
            if open.len() == 1 { "" } else { "s" },
            d.bold(&requests.len().to_string()),
            if requests.len() == 1 { "" } else { "s" },
        );
        for r in requests.iter().take(STATUS_LINES) {
            text.push_str(&format!(
                "\n• run {} step {} ({}): {} (approvers {}, quorum {})",
                d.code(&r.run_id),
                d.code(&r.step),
                d.plain(&r.playbook),
                d.plain(&cut(&r.prompt, 200)),
                d.code(&r.group),
                r.quorum
            ));
        }
        if requests.len() > STATUS_LINES {
            text.push_str(&format!("\n… and {} more.", requests.len() - STATUS_LINES));
        }
        text
    }

    async fn runs(&self, d: &dyn Dialect) -> String {
        let Ok(runs) = self
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
        for run in &runs {
            text.push_str(&format!(
                "\n• {} {}: {} (started {})",
                d.code(&run.id),
                d.plain(&run.playbook),
                run.status.as_str(),
                run.created_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        text
    }

    async fn trigger(
        &self,
        via: &str,
        user: &ChatUser,
        playbook: &str,
        inputs: Map<String, Value>,
        d: &dyn Dialect,
    ) -> Answer {
        let Some(group) = &self.triggers else {
            let off =
                "Starting playbooks from chat is off: the config names no `chat.triggers` group.";
            return off.to_owned().into();
        };
        let actor = match self
            .allowed(via, user, Role::Responder, "starting playbooks", d)
            .await
        {
            Ok(actor) => actor,
            Err(refusal) => return refusal,
        };
        if !self.approvers.admits(group, &actor) {
            let entry = NewEntry::new(EventKind::TriggerRefused)
                .actor(user.identity.clone())
                .detail(json!({ "playbook": playbook, "via": via, "reason": format!("not in the trigger group `{group}`") }));
            if let Err(e) = self.store.append_audit(vec![entry]).await {
                tracing::warn!(error = %e, "cannot audit a refused chat trigger");
            }
            return format!(
                "Not allowed: you are not in the trigger group {}.",
                d.code(group)
            )
            .into();
        }
        let Some(engine) = self.engine.upgrade() else {
            return SHUTTING_DOWN.to_owned().into();
        };
        match engine
            .trigger(playbook, Value::Object(inputs), &actor, None, false)
            .await
        {
            Ok((id, true)) => Answer {
                text: format!("Started {}: run {}.", d.code(playbook), d.code(&id)),
                announce: Some(format!(
                    "{} started {}: run {}.",
                    d.who(&user.identity),
                    d.code(playbook),
                    d.code(&id)
                )),
            },
            Ok((id, false)) => format!(
                "{} is already running for this: run {}.",
                d.code(playbook),
                d.code(&id)
            )
            .into(),
            Err(EngineError::NoPlaybook(_)) => {
                format!("There is no playbook {}.", d.code(playbook)).into()
            }
            Err(e) => {
                tracing::warn!(error = %e, playbook, via, "a playbook start from chat failed");
                format!(
                    "Could not start {}; the server log says why.",
                    d.code(playbook)
                )
                .into()
            }
        }
    }
}

/// Plain text with backticks, for tests (and the test-only platform).
#[cfg(test)]
pub(crate) struct PlainText;

#[cfg(test)]
impl Dialect for PlainText {
    fn bold(&self, text: &str) -> String {
        text.to_owned()
    }
    fn code(&self, text: &str) -> String {
        format!("`{text}`")
    }
    fn plain(&self, text: &str) -> String {
        text.to_owned()
    }
    fn who(&self, identity: &str) -> String {
        identity.to_owned()
    }
    fn prefix(&self) -> &'static str {
        ""
    }
    fn usage(&self) -> String {
        "Usage: status | runs | approve RUN STEP | deny RUN STEP | run PLAYBOOK key=value".into()
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

    #[test]
    fn inputs_are_key_value_pairs() {
        let inputs =
            parse_inputs("instance=i-0abc  region=us-east-1 note=".split_whitespace()).unwrap();
        assert_eq!(inputs["instance"], "i-0abc");
        assert_eq!(inputs["region"], "us-east-1");
        assert_eq!(inputs["note"], "");
        assert_eq!(parse_inputs([]).unwrap().len(), 0);
        assert!(
            parse_inputs(["instance"])
                .unwrap_err()
                .contains("`instance`")
        );
        assert!(parse_inputs(["=x"]).is_err());
    }

    #[test]
    fn words_become_commands_or_say_how_to_type_them() {
        let read = |text: &str| Command::from_words(text, &PlainText);
        assert_eq!(read("STATUS"), Ok(Command::Status));
        assert_eq!(read(" runs "), Ok(Command::Runs));
        assert_eq!(
            read("deny r1 isolate"),
            Ok(Command::Decide {
                run: "r1".into(),
                step: "isolate".into(),
                approve: false
            })
        );
        let Ok(Command::Run { playbook, inputs }) = read("run sweep host=\"a b\"") else {
            panic!("run not read");
        };
        assert_eq!(
            (playbook.as_str(), &inputs["host"]),
            ("sweep", &json!("a b"))
        );
        assert_eq!(read(""), Err(PlainText.usage()));
        assert_eq!(read("approve r1"), Err("Usage: `approve RUN STEP`".into()));
        assert_eq!(
            read("run"),
            Err("Usage: `run PLAYBOOK key=value ...`".into())
        );
        assert!(
            read("run sweep host")
                .unwrap_err()
                .contains("`host` is not `key=value`")
        );
        assert_eq!(
            read("reboot"),
            Err(format!("Unknown command `reboot`. {}", PlainText.usage()))
        );
    }
}
