//! A [`Card`] as an Adaptive Card, and the data its buttons send back.
//!
//! The buttons are `Action.Execute` (Universal Actions: Teams answers them with an
//! `adaptiveCard/action` invoke that the bot answers with the refreshed card or a message only the
//! clicker sees). Clients that predate Universal Actions use each button's `fallback`, an
//! `Action.Submit` with the same data, which arrives as a `message` activity.
//!
//! Teams reads a TextBlock's text and a fact's value as Markdown, where `[click](https://…)` is a
//! link showing only `click`. Everything on the card that comes from an alert or a playbook's
//! values (title, prompt, facts, who decided) goes through [`escape`], so it shows as written.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::{Card, Dialect};

/// Adaptive Card schema version: 1.4 is the first with `Action.Execute`.
pub const VERSION: &str = "1.4";

/// The attachment content type of an Adaptive Card.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// What an Approve / Deny button sends back, in `value.action.data` (`Action.Execute`) or `value`
/// (`Action.Submit`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ButtonData {
    /// Always `approval`: tells Cordon's buttons from other submits in the conversation.
    pub cordon: String,
    pub run_id: String,
    pub step: String,
    /// `approve` or `deny`.
    pub decision: String,
}

impl ButtonData {
    /// The button data in `value`, if it is Cordon's: `Ok(None)` for other payloads, `Err` for
    /// Cordon's with missing or wrong fields.
    pub fn from_value(value: &Value) -> Result<Option<(String, String, bool)>, String> {
        if value.get("cordon").and_then(Value::as_str) != Some("approval") {
            return Ok(None);
        }
        let data: ButtonData = serde_json::from_value(value.clone())
            .map_err(|e| format!("the button data is incomplete: {e}"))?;
        let approve = match data.decision.as_str() {
            "approve" => true,
            "deny" => false,
            other => {
                return Err(format!(
                    "the button's decision is `{other}`; expected `approve` or `deny`"
                ));
            }
        };
        if data.run_id.is_empty() || data.step.is_empty() {
            return Err("the button names no run or step".to_owned());
        }
        Ok(Some((data.run_id, data.step, approve)))
    }
}

/// `text` as Adaptive Card Markdown that shows exactly `text`: CommonMark's backslash escape before
/// every character that could open a link, an autolink, emphasis or code, and before a list or
/// heading marker at the start of a line. An `_` between two letters or digits opens nothing in
/// CommonMark, so ids such as `instance_id` stay as they are.
pub fn escape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for (i, &c) in chars.iter().enumerate() {
        let word = |at: Option<&char>| at.is_some_and(|c| c.is_alphanumeric());
        let special = match c {
            '\\' | '[' | ']' | '<' | '>' | '*' | '`' | '~' => true,
            '_' => !(word(i.checked_sub(1).and_then(|p| chars.get(p))) && word(chars.get(i + 1))),
            '-' | '+' | '#' | '=' => line_start,
            _ => false,
        };
        if special {
            out.push('\\');
        }
        out.push(c);
        line_start = c == '\n' || c == '\r' || (line_start && c == ' ');
    }
    out
}

/// `text` inside a code span: a backtick in it cannot close the span.
fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

/// The Adaptive Card showing `card`: the incident, what is asked, then either the buttons or the
/// outcome.
pub fn adaptive(card: &Card) -> Value {
    let marker = match card.severity {
        8.. => "🔴",
        5..=7 => "🟠",
        _ => "🟡",
    };
    let mut body = vec![
        json!({
            "type": "TextBlock",
            "text": format!("{marker} {}", escape(&card.title)),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": true,
        }),
        json!({ "type": "TextBlock", "text": escape(&card.prompt), "wrap": true }),
        json!({
            "type": "FactSet",
            "facts": card
                .facts()
                .into_iter()
                .map(|(title, value)| json!({ "title": title, "value": escape(&value) }))
                .collect::<Vec<_>>(),
        }),
        json!({
            "type": "TextBlock",
            "text": format!(
                "Playbook {}, run {} step {}",
                code(&card.playbook),
                code(&card.run_id),
                code(&card.step)
            ),
            "isSubtle": true,
            "size": "Small",
            "wrap": true,
        }),
    ];
    let mut content = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": VERSION,
        "msteams": { "width": "Full" },
    });
    match &card.outcome {
        Some(outcome) => {
            let verdict = if outcome.approved {
                "Approved"
            } else {
                "Denied"
            };
            body.push(json!({
                "type": "TextBlock",
                "text": format!(
                    "{verdict} at {} by {}",
                    outcome.at.format("%Y-%m-%d %H:%M UTC"),
                    escape(&outcome.decided_by.join("; "))
                ),
                "weight": "Bolder",
                "color": if outcome.approved { "Good" } else { "Attention" },
                "wrap": true,
            }));
        }
        None => {
            content["actions"] = json!([
                button(card, "Approve", "approve", "positive"),
                button(card, "Deny", "deny", "destructive"),
            ]);
        }
    }
    content["body"] = Value::Array(body);
    content
}

fn button(card: &Card, title: &str, decision: &str, style: &str) -> Value {
    let data = json!({
        "cordon": "approval",
        "run_id": card.run_id,
        "step": card.step,
        "decision": decision,
    });
    json!({
        "type": "Action.Execute",
        "title": title,
        "verb": format!("cordon.{decision}"),
        "style": style,
        "data": data,
        "fallback": { "type": "Action.Submit", "title": title, "style": style, "data": data },
    })
}

/// A message activity carrying `card` as its one attachment.
pub fn activity(card: &Card) -> Value {
    json!({
        "type": "message",
        "summary": card.title,
        "attachments": [{ "contentType": CONTENT_TYPE, "content": adaptive(card) }],
    })
}

/// A plain-text message activity (thread replies).
pub fn text_activity(text: &str) -> Value {
    json!({ "type": "message", "textFormat": "markdown", "text": text })
}

/// The answer to an `adaptiveCard/action` invoke that replaces the card for the clicker.
pub fn invoke_card(card: &Card) -> Value {
    json!({ "statusCode": 200, "type": CONTENT_TYPE, "value": adaptive(card) })
}

/// The answer to an `adaptiveCard/action` invoke that shows a message to the clicker only.
pub fn invoke_message(text: &str) -> Value {
    json!({ "statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text })
}

/// The Markdown Teams shows in text messages, for the answers to commands.
pub struct TeamsMarkdown;

impl Dialect for TeamsMarkdown {
    fn bold(&self, text: &str) -> String {
        format!("**{}**", self.plain(text))
    }

    fn code(&self, text: &str) -> String {
        format!(
            "`{}`",
            text.replace('`', "'")
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        )
    }

    /// Links escaped (`[`, `]`, and `\\` so no escape is undone), then HTML-escaped: Teams text
    /// messages take both. Emphasis and code are left to show, as the engine's answers use them.
    fn plain(&self, text: &str) -> String {
        text.replace('\\', "\\\\")
            .replace('[', "\\[")
            .replace(']', "\\]")
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    fn who(&self, identity: &str) -> String {
        self.code(identity)
    }

    fn prefix(&self) -> &'static str {
        ""
    }

    fn usage(&self) -> String {
        "Ask me (after @Cordon in a channel): `status` · `runs` · `approve RUN STEP` · `deny RUN STEP` · `run PLAYBOOK key=value ...`".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::CardOutcome;

    fn card() -> Card {
        Card {
            run_id: "r1".into(),
            step: "approve".into(),
            playbook: "contain".into(),
            incident_id: Some("i1".into()),
            title: "Tor relay on i-0abc".into(),
            severity: 8,
            resource: Some("aws.ec2.instance i-0abc (us-east-1)".into()),
            actor: None,
            at_source: None,
            prompt: "Isolate i-0abc in us-east-1?".into(),
            group: "soc".into(),
            quorum: 1,
            timeout_at: chrono::Utc::now(),
            enrichment: vec!["intel: score 90".into()],
            evidence: vec![],
            plan: vec!["aws-ec2.isolate_instance instance_id=i-0abc".into()],
            notes: vec![],
            outcome: None,
        }
    }

    #[test]
    fn the_card_says_what_approving_will_do() {
        let text = adaptive(&card()).to_string();
        assert!(
            text.contains(
                r#"{"title":"Will do","value":"aws-ec2.isolate_instance instance_id=i-0abc"}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_card_says_where_the_alerts_stand_at_their_source_once_one_stopped_firing() {
        assert!(!adaptive(&card()).to_string().contains("At the source"));
        let mut c = card();
        c.at_source =
            Some("2 resolved at the source; none firing since 2026-01-02 03:04 UTC".into());
        let text = adaptive(&c).to_string();
        assert!(
            text.contains(
                r#"{"title":"At the source","value":"2 resolved at the source; none firing since 2026-01-02 03:04 UTC"}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn buttons_carry_the_run_and_step_for_both_action_kinds() {
        let content = adaptive(&card());
        let approve = &content["actions"][0];
        assert_eq!(approve["type"], "Action.Execute");
        assert_eq!(approve["fallback"]["type"], "Action.Submit");
        for data in [&approve["data"], &approve["fallback"]["data"]] {
            assert_eq!(
                ButtonData::from_value(data).unwrap(),
                Some(("r1".into(), "approve".into(), true))
            );
        }
        assert_eq!(
            ButtonData::from_value(&content["actions"][1]["data"]).unwrap(),
            Some(("r1".into(), "approve".into(), false))
        );
        let text = content.to_string();
        assert!(text.contains("Isolate i-0abc in us-east-1?") && text.contains("intel: score 90"));
    }

    #[test]
    fn a_decided_card_has_no_buttons_and_says_who() {
        let mut decided = card();
        decided.outcome = Some(CardOutcome {
            approved: true,
            decided_by: vec!["teams:abc (approve via teams at 2026-01-01 10:00 UTC)".into()],
            at: chrono::Utc::now(),
        });
        let content = adaptive(&decided);
        assert!(content.get("actions").is_none());
        assert!(content.to_string().contains("Approved at"));
        assert!(content.to_string().contains("teams:abc"));
    }

    #[test]
    fn alert_text_shows_as_written_not_as_links_or_emphasis() {
        let mut c = card();
        c.title = "[click](https://evil.example) **now**".into();
        c.resource = Some("<https://evil.example>".into());
        c.prompt = "- list\n# heading".into();
        let content = adaptive(&c);
        let title = content["body"][0]["text"].as_str().unwrap();
        assert_eq!(
            title,
            "🔴 \\[click\\](https://evil.example) \\*\\*now\\*\\*"
        );
        assert_eq!(content["body"][1]["text"], "\\- list\n\\# heading");
        let text = content.to_string();
        assert!(
            !text.contains("[click](") && !text.contains("\"<https"),
            "{text}"
        );
        assert_eq!(escape("i-0abc (us-east-1)"), "i-0abc (us-east-1)");
        assert_eq!(escape("instance_id=_x_"), "instance_id=\\_x\\_");
    }

    #[test]
    fn other_payloads_are_not_buttons_and_broken_ones_are_errors() {
        assert_eq!(
            ButtonData::from_value(&json!({ "actionId": "info" })).unwrap(),
            None
        );
        assert!(ButtonData::from_value(&json!({ "cordon": "approval", "run_id": "r" })).is_err());
        assert!(
            ButtonData::from_value(
                &json!({ "cordon": "approval", "run_id": "r", "step": "s", "decision": "maybe" })
            )
            .is_err()
        );
    }
}
