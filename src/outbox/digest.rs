//! Several outbox entries said as one. Thread notes and ticket comments of an incident are
//! coalesced (see [`super::Coalesce`]): during a storm an incident gets one message per interval,
//! opening with a tally of what happened since the last one ("12 more alerts from 3 sources,
//! 2 steps finished"), instead of a message per alert.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What one coalesced entry is about, for the tally.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// A new alert joined the incident (its source is kept beside).
    Alert,
    StepFinished,
    StepFailed,
    ApprovalRequested,
    ApprovalDecided,
    Evidence,
    Undone,
    RunFinished,
    Resolved,
    Reopened,
    /// Anything else: a playbook's own message (`chat.notify`), an entry written before topics.
    #[default]
    Message,
}

/// The tally of `items` (each a topic and, for alerts, the source), in a fixed order:
/// `12 more alerts from 3 sources, 2 steps finished, 1 step failed`. Empty for no items.
pub fn tally<'a>(items: impl IntoIterator<Item = (Topic, Option<&'a str>)>) -> String {
    let mut counts: BTreeMap<Topic, usize> = BTreeMap::new();
    let mut sources: BTreeSet<&str> = BTreeSet::new();
    for (topic, source) in items {
        *counts.entry(topic).or_default() += 1;
        if topic == Topic::Alert
            && let Some(source) = source
        {
            sources.insert(source);
        }
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    counts
        .into_iter()
        .map(|(topic, n)| match topic {
            Topic::Alert => {
                let mut text = plural(n, "more alert", "more alerts");
                match sources.len() {
                    0 => {}
                    1 => text.push_str(&format!(" from {}", sources.first().unwrap_or(&""))),
                    s => text.push_str(&format!(" from {s} sources")),
                }
                text
            }
            Topic::StepFinished => plural(n, "step finished", "steps finished"),
            Topic::StepFailed => plural(n, "step failed", "steps failed"),
            Topic::ApprovalRequested => plural(n, "approval requested", "approvals requested"),
            Topic::ApprovalDecided => plural(n, "approval decision", "approval decisions"),
            Topic::Evidence => plural(n, "piece of evidence", "pieces of evidence"),
            Topic::Undone => plural(n, "step undone", "steps undone"),
            Topic::RunFinished => plural(n, "playbook run ended", "playbook runs ended"),
            Topic::Resolved => "resolved".to_owned(),
            Topic::Reopened => "reopened".to_owned(),
            Topic::Message => plural(n, "message", "messages"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line of a coalesced message: the tally, capitalized, with a colon (`12 more alerts
/// from 3 sources, 2 steps finished:`).
pub fn headline<'a>(items: impl IntoIterator<Item = (Topic, Option<&'a str>)>) -> String {
    let tally = tally(items);
    let mut chars = tally.chars();
    let mut line: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    line.push(':');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_topic_once_in_a_fixed_order() {
        let mut items = vec![(Topic::StepFinished, None), (Topic::StepFinished, None)];
        for (i, source) in ["aws.guardduty", "falco", "generic"]
            .iter()
            .cycle()
            .take(12)
            .enumerate()
        {
            items.insert(i % 3, (Topic::Alert, Some(*source)));
        }
        assert_eq!(
            tally(items),
            "12 more alerts from 3 sources, 2 steps finished"
        );
        assert_eq!(
            tally([(Topic::Alert, Some("falco")), (Topic::StepFailed, None)]),
            "1 more alert from falco, 1 step failed"
        );
        assert_eq!(
            tally([(Topic::Resolved, None), (Topic::Message, None)]),
            "resolved, 1 message"
        );
        assert_eq!(tally([]), "");
        assert_eq!(
            headline([(Topic::Alert, Some("falco")), (Topic::Alert, Some("falco"))]),
            "2 more alerts from falco:"
        );
    }
}
