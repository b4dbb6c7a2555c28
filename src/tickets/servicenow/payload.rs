//! What Cordon sends ServiceNow: the create payload of an incident record and the markers that
//! find a work note again.

use serde_json::{Value, json};

use crate::tickets::{Rendered, TicketProfile};

pub(super) const SYSTEM: &str = "ServiceNow";
/// `short_description` is 160 characters on a stock instance.
const MAX_SHORT: usize = 160;

/// Urgency and impact (1 high … 3 low) for a severity; together they set the priority.
pub fn urgency_impact(severity: u8) -> (&'static str, &'static str) {
    match severity {
        9.. => ("1", "1"),
        7..=8 => ("1", "2"),
        4..=6 => ("2", "2"),
        _ => ("3", "3"),
    }
}

/// The `create` entry's payload: the incident record, rendered.
pub fn create_payload(profile: &TicketProfile, incident: &str, rendered: Rendered) -> Value {
    let Some(sn) = &profile.servicenow else {
        return Value::Null;
    };
    let (urgency, impact) = urgency_impact(rendered.severity);
    let short: String = rendered
        .summary
        .replace('\n', " ")
        .chars()
        .take(MAX_SHORT)
        .collect();
    let mut record = json!({
        "short_description": short,
        "description": rendered.description,
        "urgency": urgency,
        "impact": impact,
        "correlation_id": incident,
        "correlation_display": "Cordon",
    });
    if !sn.category.is_empty() {
        record["category"] = Value::String(sn.category.clone());
    }
    if let Some(group) = &sn.assignment_group {
        record["assignment_group"] = Value::String(group.clone());
    }
    for (name, value) in rendered.servicenow_fields {
        record[name] = value;
    }
    json!({ "incident": incident, "record": record })
}

/// The line that ends every work note: finds the note again (sys_journal_field) after a retry.
pub fn marker(entry_id: &str) -> String {
    format!("Cordon ref {entry_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_sets_urgency_and_impact() {
        assert_eq!(urgency_impact(10), ("1", "1"));
        assert_eq!(urgency_impact(7), ("1", "2"));
        assert_eq!(urgency_impact(5), ("2", "2"));
        assert_eq!(urgency_impact(0), ("3", "3"));
    }
}
