//! Cards as Discord messages: one embed (what happened, what is asked, who decided) and, while the
//! approval is open, an Approve and a Deny button whose `custom_id` names the run and step.
//!
//! Every text that comes from an alert is escaped ([`escape`]: `[click](https://…)` shows as
//! written, not as a masked link, and `@everyone` as text) and clipped to Discord's limits (the
//! embed's 6000 characters in all), and messages allow no mentions, so nothing pings anyone.

use serenity::all::{
    ButtonStyle, CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed,
    CreateEmbedFooter, CreateMessage, EditMessage,
};

use super::api::clip;
use crate::chat::{Card, Dialect};

/// Discord's longest `custom_id`.
pub const MAX_CUSTOM_ID: usize = 100;

/// What a button decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonTarget {
    /// `approve:<run>:<step>` / `deny:<run>:<step>`.
    Direct {
        approve: bool,
        run_id: String,
        step: String,
    },
    /// `approve:#<key>`: a run and step too long for a `custom_id`, stored under the key.
    Stored { approve: bool, key: String },
}

/// The `custom_id` of a button for `run_id`/`step`; longer than Discord allows when the step id is
/// very long (then use [`stored_button_id`]).
pub fn button_id(approve: bool, run_id: &str, step: &str) -> String {
    format!("{}:{run_id}:{step}", verb(approve))
}

/// The `custom_id` of a button whose run and step are stored under `key`.
pub fn stored_button_id(approve: bool, key: &str) -> String {
    format!("{}:#{key}", verb(approve))
}

fn verb(approve: bool) -> &'static str {
    if approve { "approve" } else { "deny" }
}

/// Reads a button's `custom_id`; `None` for a button that is not Cordon's.
pub fn parse_button(custom_id: &str) -> Option<ButtonTarget> {
    let (verb, rest) = custom_id.split_once(':')?;
    let approve = match verb {
        "approve" => true,
        "deny" => false,
        _ => return None,
    };
    if let Some(key) = rest.strip_prefix('#') {
        return (!key.is_empty()).then(|| ButtonTarget::Stored {
            approve,
            key: key.to_owned(),
        });
    }
    // Run ids hold no `:`; step ids may.
    let (run_id, step) = rest.split_once(':')?;
    (!run_id.is_empty() && !step.is_empty()).then(|| ButtonTarget::Direct {
        approve,
        run_id: run_id.to_owned(),
        step: step.to_owned(),
    })
}

/// `text` as Discord markdown that shows exactly `text`: a backslash before every character that
/// could open a masked link, a mention or timestamp (`<@…>`, `<t:…>`), emphasis, a spoiler, code
/// or a quote, and before a list or heading marker at the start of a line; `@everyone` and
/// `@here` get a zero-width space after the `@`. An `_` between two letters or digits opens
/// nothing, so ids such as `instance_id` stay as they are.
pub fn escape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for (i, &c) in chars.iter().enumerate() {
        let word = |at: Option<&char>| at.is_some_and(|c| c.is_alphanumeric());
        let special = match c {
            '\\' | '[' | ']' | '<' | '>' | '*' | '`' | '~' | '|' => true,
            '_' => !(word(i.checked_sub(1).and_then(|p| chars.get(p))) && word(chars.get(i + 1))),
            '-' | '+' | '#' => line_start,
            _ => false,
        };
        if special {
            out.push('\\');
        }
        out.push(c);
        line_start = c == '\n' || c == '\r' || (line_start && c == ' ');
    }
    out.replace("@everyone", "@\u{200B}everyone")
        .replace("@here", "@\u{200B}here")
}

/// `text` with what could make a masked link, an autolink or a mention escaped (`\\`, `[`, `]`,
/// `<`, `>`, `@everyone`, `@here`), and Markdown emphasis and code left to show.
pub fn escape_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '\\' | '[' | ']' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out.replace("@everyone", "@\u{200B}everyone")
        .replace("@here", "@\u{200B}here")
}

/// Discord's markdown, for the answers to `/cordon` (messages allow no mentions, so none pings).
pub struct Markdown;

/// How `/cordon` is typed on Discord (sub-commands with options, `integrations/discord/README.md`).
pub const HELP: &str = "Try `/cordon status`, `/cordon runs`, `/cordon approve run:<id> step:<id>`, `/cordon deny run:<id> step:<id>` or `/cordon run playbook:<id> inputs:key=value ...`.";

impl Dialect for Markdown {
    fn bold(&self, text: &str) -> String {
        format!("**{text}**")
    }

    fn code(&self, text: &str) -> String {
        format!("`{}`", text.replace('`', "'"))
    }

    /// Links and mentions escaped; emphasis and code left alone, since answers put values the
    /// engine wrote in `code` and alert text here is a line in a list, not a card.
    fn plain(&self, text: &str) -> String {
        escape_links(text)
    }

    /// `<@id>` for a Discord identity: shown as the person's name.
    fn who(&self, identity: &str) -> String {
        match identity.strip_prefix("discord:") {
            Some(id) => format!("<@{id}>"),
            None => identity.to_owned(),
        }
    }

    fn prefix(&self) -> &'static str {
        "/cordon "
    }

    fn usage(&self) -> String {
        HELP.to_owned()
    }
}

/// Mentions nobody, whatever the text says.
pub fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// The first line of the message (what notifications show).
fn headline(card: &Card) -> String {
    let text = match &card.outcome {
        None => format!("Approval needed: {}", escape(&card.title)),
        Some(o) if o.approved => format!("Approved: {}", escape(&card.title)),
        Some(_) => format!("Denied: {}", escape(&card.title)),
    };
    clip(&text, 300)
}

/// The card's embed.
pub fn embed(card: &Card) -> CreateEmbed {
    let (color, status) = match &card.outcome {
        None if card.severity >= 8 => (0xED4245, "Approval needed"),
        None if card.severity >= 5 => (0xE67E22, "Approval needed"),
        None => (0xFEE75C, "Approval needed"),
        Some(o) if o.approved => (0x57F287, "Approved"),
        Some(_) => (0x95A5A6, "Denied"),
    };
    let mut embed = CreateEmbed::new()
        .title(clip(&escape(&card.title), 256))
        .description(clip(
            &format!("**{status}:** {}", escape(&card.prompt)),
            1000,
        ))
        .colour(color)
        .field("Severity", format!("{}/10", card.severity), true);
    if let Some(resource) = &card.resource {
        embed = embed.field("Resource", clip(&escape(resource), 200), true);
    }
    if let Some(actor) = &card.actor {
        embed = embed.field("Actor", clip(&escape(actor), 200), true);
    }
    if let Some(at_source) = &card.at_source {
        embed = embed.field("At the source", clip(&escape(at_source), 200), true);
    }
    embed = embed.field(
        "Approvers",
        clip(
            &format!("{} (quorum {})", escape(&card.group), card.quorum),
            200,
        ),
        true,
    );
    if card.outcome.is_none() {
        embed = embed.field("Times out", discord_time(card.timeout_at), true);
    }
    // Field budgets keep the whole embed under Discord's 6000 characters.
    for (name, items, max) in [
        ("Will do", &card.plan, 700),
        ("Guardrails", &card.notes, 400),
        ("Enrichment", &card.enrichment, 800),
        ("Evidence", &card.evidence, 800),
    ] {
        if !items.is_empty() {
            embed = embed.field(name, lines(items, max), false);
        }
    }
    if let Some(outcome) = &card.outcome {
        let by = if outcome.decided_by.is_empty() {
            "nobody".to_owned()
        } else {
            lines(&outcome.decided_by, 700)
        };
        embed = embed.field("Decided by", by, false).field(
            "Decided at",
            discord_time(outcome.at),
            true,
        );
    }
    embed.footer(CreateEmbedFooter::new(clip(
        &format!(
            "Cordon · {} · run {} · step {}",
            card.playbook, card.run_id, card.step
        ),
        300,
    )))
}

/// `<t:…:f> (<t:…:R>)`: shown in each reader's own time zone.
fn discord_time(at: chrono::DateTime<chrono::Utc>) -> String {
    let t = at.timestamp();
    format!("<t:{t}:f> (<t:{t}:R>)")
}

/// Bullet lines, clipped to `max` characters in all.
fn lines(items: &[String], max: usize) -> String {
    let text = items
        .iter()
        .map(|l| format!("• {}", clip(&escape(l), 300)))
        .collect::<Vec<_>>()
        .join("\n");
    clip(&text, max)
}

/// Approve / Deny, for a card that is still open.
pub fn buttons(approve_id: String, deny_id: String) -> Vec<CreateActionRow> {
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(approve_id)
            .label("Approve")
            .style(ButtonStyle::Success),
        CreateButton::new(deny_id)
            .label("Deny")
            .style(ButtonStyle::Danger),
    ])]
}

/// A new card message; `ids` are the buttons' `custom_id`s (none once decided).
pub fn message(card: &Card, ids: Option<(String, String)>) -> CreateMessage {
    let mut message = CreateMessage::new()
        .content(headline(card))
        .embed(embed(card))
        .allowed_mentions(no_mentions());
    if card.outcome.is_none()
        && let Some((approve, deny)) = ids
    {
        message = message.components(buttons(approve, deny));
    }
    message
}

/// The card edited in place after the decision: the outcome shown, the buttons gone.
pub fn edit(card: &Card) -> EditMessage {
    EditMessage::new()
        .content(headline(card))
        .embed(embed(card))
        .components(Vec::new())
        .allowed_mentions(no_mentions())
}

/// A plain text message (a thread note), clipped to Discord's 2000 characters.
pub fn note(text: &str) -> CreateMessage {
    CreateMessage::new()
        .content(clip(text, 2000))
        .allowed_mentions(no_mentions())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::Value;

    use super::*;
    use crate::chat::CardOutcome;

    fn card() -> Card {
        Card {
            run_id: "0197a0b1-0000-7000-8000-000000000001".into(),
            step: "approve".into(),
            playbook: "aws-ec2-compromise".into(),
            incident_id: Some("inc-1".into()),
            title: "@everyone UnauthorizedAccess:EC2/SSHBruteForce".into(),
            severity: 8,
            resource: Some("aws.ec2.instance i-0abc (us-east-1, 123456789012)".into()),
            actor: None,
            at_source: None,
            prompt: "Isolate i-0abc in us-east-1?".into(),
            group: "soc-l2".into(),
            quorum: 1,
            timeout_at: Utc::now(),
            enrichment: vec!["intel: score 97".into()],
            evidence: vec!["x".repeat(5000)],
            plan: vec!["aws-ec2.isolate_instance instance_id=i-0abc, region=us-east-1".into()],
            notes: vec![
                "`i-0abc` is protected (guardrail `i-0abc`): this step will be refused".into(),
            ],
            outcome: None,
        }
    }

    #[test]
    fn an_open_card_has_both_buttons_and_pings_nobody() {
        let c = card();
        let ids = (
            button_id(true, &c.run_id, &c.step),
            button_id(false, &c.run_id, &c.step),
        );
        let json = serde_json::to_value(message(&c, Some(ids))).unwrap();
        let buttons = &json["components"][0]["components"];
        assert_eq!(
            buttons[0]["custom_id"],
            format!("approve:{}:approve", c.run_id)
        );
        assert_eq!(buttons[0]["style"], 3);
        assert_eq!(
            buttons[1]["custom_id"],
            format!("deny:{}:approve", c.run_id)
        );
        assert_eq!(buttons[1]["style"], 4);
        assert_eq!(json["allowed_mentions"]["parse"], Value::Array(vec![]));
        let embed = &json["embeds"][0];
        assert!(
            embed["description"]
                .as_str()
                .unwrap()
                .contains("Isolate i-0abc")
        );
        let evidence = embed["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Evidence")
            .unwrap();
        assert!(evidence["value"].as_str().unwrap().chars().count() <= 1024);
        let field = |name: &str| {
            embed["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .map(|f| f["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(
            field("Will do").unwrap(),
            "• aws-ec2.isolate_instance instance_id=i-0abc, region=us-east-1"
        );
        assert!(field("Guardrails").unwrap().contains("will be refused"));
    }

    #[test]
    fn a_card_says_where_the_alerts_stand_at_their_source_once_one_stopped_firing() {
        let field = |c: &Card| {
            let embed = serde_json::to_value(embed(c)).unwrap();
            embed["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "At the source")
                .map(|f| f["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(field(&card()), None, "nothing to say while all fire");
        let mut c = card();
        c.at_source =
            Some("1 resolved at the source; none firing since 2026-01-02 03:04 UTC".into());
        assert_eq!(
            field(&c).as_deref(),
            Some("1 resolved at the source; none firing since 2026-01-02 03:04 UTC")
        );
    }

    #[test]
    fn the_longest_card_fits_in_one_embed() {
        let long = |n: usize| (0..n).map(|i| format!("{i} {}", "y".repeat(400))).collect();
        let mut c = card();
        c.title = "t".repeat(1000);
        c.prompt = "p".repeat(10_000);
        c.resource = Some("r".repeat(1000));
        c.actor = Some("a".repeat(1000));
        c.at_source = Some("s".repeat(1000));
        c.group = "g".repeat(1000);
        c.plan = long(20);
        c.notes = long(20);
        c.enrichment = long(20);
        c.evidence = long(20);
        c.outcome = Some(CardOutcome {
            approved: false,
            decided_by: long(20),
            at: Utc::now(),
        });
        let embed = serde_json::to_value(embed(&c)).unwrap();
        let mut total = embed["title"].as_str().unwrap().chars().count()
            + embed["description"].as_str().unwrap().chars().count()
            + embed["footer"]["text"].as_str().unwrap().chars().count();
        for f in embed["fields"].as_array().unwrap() {
            let (name, value) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
            assert!(value.chars().count() <= 1024, "{name}");
            total += name.chars().count() + value.chars().count();
        }
        assert!(total <= 6000, "{total} characters");
    }

    #[test]
    fn a_decided_card_says_who_and_has_no_buttons() {
        let mut c = card();
        c.outcome = Some(CardOutcome {
            approved: true,
            decided_by: vec!["discord:42 (approve via discord at 2026-11-26 10:00 UTC)".into()],
            at: Utc::now(),
        });
        let json = serde_json::to_value(edit(&c)).unwrap();
        assert_eq!(json["components"], Value::Array(vec![]));
        assert!(json["content"].as_str().unwrap().starts_with("Approved:"));
        let fields = json["embeds"][0]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["name"] == "Decided by"
                && f["value"].as_str().unwrap().contains("discord:42"))
        );
        let json = serde_json::to_value(message(&c, Some(("a".into(), "d".into())))).unwrap();
        assert!(json.get("components").is_none());
    }

    #[test]
    fn alert_text_shows_as_written_not_as_masked_links_or_mentions() {
        let mut c = card();
        c.title = "[click](https://evil.example) @everyone".into();
        c.actor = Some("<@123> ||spoiler|| `code`".into());
        let json = serde_json::to_value(message(&c, None)).unwrap();
        let embed = &json["embeds"][0];
        assert_eq!(
            embed["title"],
            "\\[click\\](https://evil.example) @\u{200B}everyone"
        );
        assert_eq!(
            json["content"],
            "Approval needed: \\[click\\](https://evil.example) @\u{200B}everyone"
        );
        let text = json.to_string();
        assert!(!text.contains("[click]("), "{text}");
        assert!(text.contains("\\\\<@123\\\\> \\\\|\\\\|spoiler"), "{text}");
        assert_eq!(
            escape("aws-ec2.isolate_instance"),
            "aws-ec2.isolate_instance"
        );
    }

    #[test]
    fn button_ids_round_trip_and_foreign_ones_are_not_ours() {
        assert_eq!(
            parse_button("approve:r1:contain:ec2"),
            Some(ButtonTarget::Direct {
                approve: true,
                run_id: "r1".into(),
                step: "contain:ec2".into()
            })
        );
        assert_eq!(
            parse_button(&stored_button_id(false, "ab12")),
            Some(ButtonTarget::Stored {
                approve: false,
                key: "ab12".into()
            })
        );
        for foreign in [
            "hello",
            "approve:",
            "approve:r1",
            "deny:#",
            "isolate:r1:s",
            "",
        ] {
            assert_eq!(parse_button(foreign), None, "{foreign}");
        }
    }
}
