//! A card as Block Kit: a header, the facts, what is asked, enrichment verdicts and evidence, and
//! Approve / Deny buttons (or, once decided, who decided and when).
//!
//! Everything from an alert is escaped before it enters `mrkdwn` text, so an attacker-chosen
//! title cannot mention `@channel` or forge a link; every text is cut to Block Kit's limits.

use serde::{Deserialize, Serialize};
use slack_morphism::prelude::*;

use crate::chat::{Card, Dialect};

/// `action_id`s of the two buttons.
pub(super) const APPROVE: &str = "cordon_approve";
pub(super) const DENY: &str = "cordon_deny";

/// What a button carries: the approval it decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ButtonValue {
    pub run: String,
    pub step: String,
}

/// The approval and the choice a clicked button stands for, if it is one of Cordon's.
pub(super) fn parse_button(action_id: &str, value: Option<&str>) -> Option<(ButtonValue, bool)> {
    let approve = match action_id {
        APPROVE => true,
        DENY => false,
        _ => return None,
    };
    let value: ButtonValue = serde_json::from_str(value?).ok()?;
    Some((value, approve))
}

/// Escapes the three characters Slack's `mrkdwn` treats as control characters.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) use crate::chat::cut;

/// An identity as people read it: a Slack user as a mention, anyone else as written.
pub(super) fn who(identity: &str) -> String {
    match identity.strip_prefix("slack:") {
        Some(user) if !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("<@{user}>")
        }
        _ => format!("`{}`", escape(identity).replace('`', "'")),
    }
}

/// Slack's `mrkdwn`, for the answers to `/cordon`.
pub(super) struct Mrkdwn;

impl Dialect for Mrkdwn {
    fn bold(&self, text: &str) -> String {
        format!("*{}*", escape(text))
    }

    fn code(&self, text: &str) -> String {
        format!("`{}`", escape(text).replace('`', "'"))
    }

    fn plain(&self, text: &str) -> String {
        escape(text)
    }

    fn who(&self, identity: &str) -> String {
        who(identity)
    }

    fn prefix(&self) -> &'static str {
        "/cordon "
    }

    fn usage(&self) -> String {
        "Usage: `/cordon status` · `/cordon runs` · `/cordon approve RUN STEP` · `/cordon deny RUN STEP` · `/cordon run PLAYBOOK key=value ...`".to_owned()
    }
}

fn markdown(text: String) -> SlackBlockText {
    SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))
}

fn plain(text: &str, max: usize) -> SlackBlockPlainTextOnly {
    SlackBlockPlainTextOnly::from(cut(text, max))
}

/// A bulleted list under a bold title, at most `max_lines` lines.
fn list(title: &str, lines: &[String], max_lines: usize) -> String {
    let mut text = format!("*{title}*");
    for line in lines.iter().take(max_lines) {
        text.push_str("\n• ");
        text.push_str(&escape(&cut(line, 300)));
    }
    if lines.len() > max_lines {
        text.push_str(&format!("\n…and {} more", lines.len() - max_lines));
    }
    cut(&text, 3000)
}

/// The notification text of a card (what Slack shows where blocks cannot be shown).
pub(super) fn card_text(card: &Card) -> String {
    let status = match &card.outcome {
        None => "Approval needed",
        Some(o) if o.approved => "Approved",
        Some(_) => "Denied",
    };
    cut(
        &format!(
            "{status}: {} (severity {}/10) — {}",
            card.title, card.severity, card.prompt
        ),
        3000,
    )
}

/// The card's blocks.
pub(super) fn card_blocks(card: &Card) -> Vec<SlackBlock> {
    let mut blocks: Vec<SlackBlock> = Vec::new();
    blocks.push(SlackHeaderBlock::new(plain(&card.title, 150)).into());

    let mut fields = vec![markdown(format!("*Severity*\n{}/10", card.severity))];
    if let Some(resource) = &card.resource {
        fields.push(markdown(cut(
            &format!("*Resource*\n{}", escape(resource)),
            2000,
        )));
    }
    if let Some(actor) = &card.actor {
        fields.push(markdown(cut(&format!("*Actor*\n{}", escape(actor)), 2000)));
    }
    if let Some(at_source) = &card.at_source {
        fields.push(markdown(cut(
            &format!("*At the source*\n{}", escape(at_source)),
            2000,
        )));
    }
    fields.push(markdown(cut(
        &format!(
            "*Approvers*\n`{}` (quorum {})",
            escape(&card.group),
            card.quorum
        ),
        2000,
    )));
    if card.outcome.is_none() {
        fields.push(markdown(format!(
            "*Times out*\n{}",
            card.timeout_at.format("%Y-%m-%d %H:%M UTC")
        )));
    }
    blocks.push(SlackSectionBlock::new().with_fields(fields).into());

    blocks.push(
        SlackSectionBlock::new()
            .with_text(markdown(cut(
                &format!("*Asks:* {}", escape(&card.prompt)),
                3000,
            )))
            .into(),
    );
    for (title, lines) in [
        ("Will do", &card.plan),
        ("Guardrails", &card.notes),
        ("Enrichment", &card.enrichment),
        ("Evidence", &card.evidence),
    ] {
        if !lines.is_empty() {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(markdown(list(title, lines, 10)))
                    .into(),
            );
        }
    }

    match &card.outcome {
        None => {
            let value = serde_json::to_string(&ButtonValue {
                run: card.run_id.clone(),
                step: card.step.clone(),
            })
            .unwrap_or_default();
            blocks.push(
                SlackActionsBlock::new(vec![
                    SlackBlockButtonElement::new(plain("Approve", 75))
                        .with_action_id(APPROVE.into())
                        .with_value(value.clone())
                        .with_style(SlackBlockButtonStyle::Primary)
                        .into(),
                    SlackBlockButtonElement::new(plain("Deny", 75))
                        .with_action_id(DENY.into())
                        .with_value(value)
                        .with_style(SlackBlockButtonStyle::Danger)
                        .into(),
                ])
                .with_block_id("cordon_decide".into())
                .into(),
            );
        }
        Some(outcome) => {
            let verdict = if outcome.approved {
                ":white_check_mark: *Approved*"
            } else {
                ":no_entry: *Denied*"
            };
            let mut text = format!("{verdict} at {}", outcome.at.format("%Y-%m-%d %H:%M UTC"));
            for decision in &outcome.decided_by {
                let (identity, rest) = decision.split_once(' ').unwrap_or((decision, ""));
                text.push_str(&format!("\n• {} {}", who(identity), escape(rest)));
            }
            if outcome.decided_by.is_empty() {
                text.push_str("\n• by timeout");
            }
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(markdown(cut(&text, 3000)))
                    .into(),
            );
        }
    }

    blocks.push(
        SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(cut(
                &format!(
                    "Playbook `{}` · run `{}` · step `{}`{}",
                    escape(&card.playbook),
                    escape(&card.run_id),
                    escape(&card.step),
                    card.incident_id
                        .as_deref()
                        .map(|i| format!(" · incident `{}`", escape(i)))
                        .unwrap_or_default()
                ),
                2000,
            )),
        )])
        .into(),
    );
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::CardOutcome;
    use chrono::{TimeZone, Utc};

    fn card() -> Card {
        Card {
            run_id: "run-1".into(),
            step: "approve".into(),
            playbook: "aws-ec2-compromise".into(),
            incident_id: Some("inc-1".into()),
            title: "Backdoor <!channel> & friends".into(),
            severity: 8,
            resource: Some("aws.ec2.instance i-0abc (us-east-1)".into()),
            actor: None,
            at_source: None,
            prompt: "Isolate i-0abc in us-east-1, detaching sg-1, sg-2?".into(),
            group: "on-call".into(),
            quorum: 1,
            timeout_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            enrichment: vec!["reputation: score 97".into()],
            evidence: (0..12)
                .map(|i| format!("ebs.snapshot at snap-{i}"))
                .collect(),
            plan: vec!["aws-ec2.isolate_instance instance_id=i-0abc, region=us-east-1".into()],
            notes: vec![
                "`i-0abc` is protected (guardrail `i-0abc`): this step will be refused".into(),
            ],
            outcome: None,
        }
    }

    fn json(card: &Card) -> String {
        serde_json::to_string(&card_blocks(card)).unwrap()
    }

    #[test]
    fn a_card_says_where_the_alerts_stand_at_their_source_once_one_stopped_firing() {
        assert!(!json(&card()).contains("At the source"));
        let mut c = card();
        c.at_source = Some("1 firing, 1 resolved at the source".into());
        let text = json(&c);
        assert!(
            text.contains("*At the source*\\n1 firing, 1 resolved at the source"),
            "{text}"
        );
    }

    #[test]
    fn an_open_card_has_the_facts_and_two_buttons_carrying_the_approval() {
        let text = json(&card());
        assert!(text.contains("Isolate i-0abc in us-east-1, detaching sg-1, sg-2?"));
        assert!(text.contains("i-0abc (us-east-1)"));
        assert!(text.contains("reputation: score 97"));
        assert!(
            text.contains(
                "*Will do*\\n• aws-ec2.isolate_instance instance_id=i-0abc, region=us-east-1"
            ),
            "{text}"
        );
        assert!(text.contains("*Guardrails*"), "{text}");
        assert!(text.contains("…and 2 more"), "evidence is capped: {text}");
        let blocks: serde_json::Value = serde_json::from_str(&text).unwrap();
        let actions = blocks
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("buttons");
        let buttons = actions["elements"].as_array().unwrap();
        assert_eq!(buttons.len(), 2);
        let (value, approve) = parse_button(
            buttons[0]["action_id"].as_str().unwrap(),
            buttons[0]["value"].as_str(),
        )
        .unwrap();
        assert_eq!(
            (value.run.as_str(), value.step.as_str(), approve),
            ("run-1", "approve", true)
        );
        let (_, approve) = parse_button(
            buttons[1]["action_id"].as_str().unwrap(),
            buttons[1]["value"].as_str(),
        )
        .unwrap();
        assert!(!approve);
    }

    #[test]
    fn alert_text_cannot_mention_or_link() {
        let mut c = card();
        c.resource = Some("<https://evil.example|click> <!here>".into());
        let text = json(&c);
        assert!(!text.contains("<!here>") && !text.contains("<https://evil"));
        assert!(text.contains("&lt;!here&gt;"));
    }

    #[test]
    fn a_decided_card_names_who_and_when_and_has_no_buttons() {
        let mut c = card();
        c.outcome = Some(CardOutcome {
            approved: true,
            decided_by: vec!["slack:U123 (approve via slack at 2026-01-02 03:10 UTC)".into()],
            at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 10, 0).unwrap(),
        });
        let text = json(&c);
        assert!(!text.contains("\"actions\""));
        assert!(text.contains("*Approved* at 2026-01-02 03:10 UTC"));
        assert!(text.contains("<@U123> (approve via slack"));
        assert!(card_text(&c).starts_with("Approved: "));
    }

    #[test]
    fn long_texts_fit_block_kit_limits() {
        let mut c = card();
        c.title = "x".repeat(500);
        c.prompt = "y".repeat(5000);
        let blocks: serde_json::Value = serde_json::to_value(card_blocks(&c)).unwrap();
        assert_eq!(
            blocks[0]["text"]["text"].as_str().unwrap().chars().count(),
            150
        );
        for block in blocks.as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= 3000);
            }
        }
    }

    #[test]
    fn foreign_buttons_and_garbled_values_are_not_decisions() {
        assert_eq!(parse_button("info", Some("{}")), None);
        assert_eq!(parse_button(APPROVE, Some("not json")), None);
        assert_eq!(parse_button(DENY, None), None);
    }
}
