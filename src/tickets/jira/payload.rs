//! What Cordon sends Jira: the create payload of an issue, text as Atlassian Document Format.

use serde_json::{Value, json};

use crate::tickets::{Rendered, TicketProfile};

/// Jira's limit on a text field (summary is 255, descriptions and comments 32 767).
pub(super) const MAX_TEXT: usize = 32_000;
const MAX_SUMMARY: usize = 255;
pub(super) const SYSTEM: &str = "Jira";

/// The label Cordon finds an incident's issue by.
pub fn label(incident: &str) -> String {
    format!("cordon-{incident}")
}

/// The `create` entry's payload: the issue's fields, rendered.
pub fn create_payload(profile: &TicketProfile, incident: &str, rendered: Rendered) -> Value {
    let Some(jira) = &profile.jira else {
        return Value::Null;
    };
    let mut labels: Vec<String> = rendered
        .labels
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("-"))
        .collect();
    labels.push(label(incident));
    labels.dedup();
    let mut fields = json!({
        "project": { "key": jira.project },
        "issuetype": { "name": jira.issue_type },
        "summary": truncate(&rendered.summary.replace('\n', " "), MAX_SUMMARY),
        "description": adf(&truncate(&rendered.description, MAX_TEXT)),
        "labels": labels,
    });
    if let Some(priorities) = &jira.priorities {
        fields["priority"] = json!({ "name": priorities.for_severity(rendered.severity) });
    }
    for (name, value) in rendered.jira_fields {
        fields[name] = value;
    }
    json!({ "incident": incident, "fields": fields })
}

/// Text as an Atlassian Document Format document: a paragraph per line, `code` spans marked.
pub fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut content = Vec::new();
            for (i, part) in line.split('`').enumerate() {
                if part.is_empty() {
                    continue;
                }
                let mut node = json!({ "type": "text", "text": part });
                if i % 2 == 1 {
                    node["marks"] = json!([{ "type": "code" }]);
                }
                content.push(node);
            }
            json!({ "type": "paragraph", "content": content })
        })
        .collect();
    json!({ "type": "doc", "version": 1, "content": paragraphs })
}

/// The plain text of an ADF document (or of a wiki-markup string, as webhooks may send).
pub fn adf_text(value: &Value) -> String {
    fn walk(node: &Value, out: &mut String) {
        match node {
            Value::String(s) => out.push_str(s),
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("text") {
                    out.push_str(text);
                }
                if let Some(Value::Array(children)) = map.get("content") {
                    for (i, child) in children.iter().enumerate() {
                        if i > 0 && child["type"] == "paragraph" {
                            out.push('\n');
                        }
                        walk(child, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(value, &mut out);
    out
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_adf_paragraphs_with_code_marks() {
        let doc = adf("Step `isolate` finished.\n\nSecond line");
        assert_eq!(doc["type"], "doc");
        assert_eq!(doc["version"], 1);
        let paragraphs = doc["content"].as_array().unwrap();
        assert_eq!(paragraphs.len(), 2);
        assert_eq!(paragraphs[0]["content"][1]["text"], "isolate");
        assert_eq!(paragraphs[0]["content"][1]["marks"][0]["type"], "code");
        assert_eq!(adf_text(&doc), "Step isolate finished.\nSecond line");
        assert_eq!(adf_text(&json!("/cordon approve")), "/cordon approve");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let long = "x".repeat(300);
        let cut = truncate(&long, MAX_SUMMARY);
        assert_eq!(cut.chars().count(), MAX_SUMMARY);
        assert!(cut.ends_with('…'));
    }
}
