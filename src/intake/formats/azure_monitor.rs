//! Azure Monitor alerts, in the common alert schema.
//!
//! One shape: `{"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {...},
//! "alertContext": {...}, "customProperties": {...}}}`, which an action group's webhook, Logic App
//! or Function action sends when "Enable the common alert schema" is on. The older per-signal
//! schemas are refused with a message that says so.
//!
//! Follows <https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-common-schema>.
//!
//! | Alert field | From `data.essentials` |
//! |---|---|
//! | kind | `alertRule` |
//! | severity | `severity`: `Sev0` 10, `Sev1` 8, `Sev2` 5, `Sev3` 3, `Sev4` 1 |
//! | title | `alertRule on <first configuration item>`, `(resolved)` when resolved |
//! | description | `description` |
//! | resource | the first of `alertTargetIDs` (`azure.vm` for a virtual machine, else `azure.resource`), named after the first of `configurationItems` |
//! | labels | `signal_type`, `monitor_condition`, `monitoring_service`, and `customProperties` |
//! | state | `monitorCondition`: `Resolved` is `resolved`, `Fired` (or none) `firing` |
//! | observed_at | `resolvedDateTime` when resolved, else `firedDateTime` |
//! | dedup_key | `azure.monitor:` + `alertId` |

use serde_json::value::RawValue;

use super::json::{self, get, path, text};
use super::{FormatError, SourceKind, azure_defender};
use crate::alert::{Alert, AlertState, Resource, Severity};

const COMMON_SCHEMA: &str = "azureMonitorCommonAlertSchema";

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    json::object(&body, "an Azure Monitor alert")?;
    if let Some(schema) = text(&body, "schemaId").filter(|s| !s.eq_ignore_ascii_case(COMMON_SCHEMA))
    {
        return Err(FormatError::new(format!(
            "schemaId `{schema}` is not the common alert schema; enable the common alert schema \
             on the action group"
        )));
    }
    let essentials =
        path(&body, "data.essentials").ok_or_else(|| FormatError::missing("data.essentials"))?;
    json::object(essentials, "`data.essentials`")?;
    let rule = json::required_text(essentials, "alertRule", "data.essentials.alertRule")?;

    let mut alert = Alert::new(
        SourceKind::AzureMonitor.name(),
        rule.clone(),
        raw.to_owned(),
    );
    alert.severity = match text(essentials, "severity") {
        Some(sev) => severity(&sev),
        None => Severity::new(5, ""),
    };
    alert.description = text(essentials, "description");
    if let Some(at) = json::first_time(essentials, &["firedDateTime"]) {
        alert.observed_at = at;
    }

    let target = text(essentials, "alertTargetIDs.0");
    alert.resource = Resource {
        kind: Some(azure_defender::resource_kind(target.as_deref()).to_owned()),
        region: None,
        account: target
            .as_deref()
            .and_then(|id| json::segment_after(id, "subscriptions")),
        name: text(essentials, "configurationItems.0")
            .or_else(|| target.as_deref().and_then(json::last_segment)),
        id: target,
    };

    let condition = text(essentials, "monitorCondition");
    let resolved = condition
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("Resolved"));
    let mut title = match &alert.resource.name {
        Some(name) => format!("{rule} on {name}"),
        None => rule,
    };
    if resolved {
        title.push_str(" (resolved)");
        alert.state = AlertState::Resolved;
        if let Some(at) = json::first_time(essentials, &["resolvedDateTime"]) {
            alert.observed_at = at;
        }
    }
    alert.title = title;
    alert.source_state = condition;

    // Custom properties are the rule author's own labels; Cordon's own names win on a clash.
    if let Some(custom) = path(&body, "data.customProperties") {
        alert.labels = json::labels_of(custom);
    }
    let label_paths = [
        ("signal_type", "signalType"),
        ("monitor_condition", "monitorCondition"),
        ("monitoring_service", "monitoringService"),
        ("alert_rule_id", "alertRuleId"),
    ];
    json::copy_labels(&mut alert.labels, essentials, &label_paths);
    if let Some(id) = get(essentials, "alertId").and_then(json::as_text) {
        alert.dedup_key = format!("azure.monitor:{id}");
    }
    Ok(vec![alert])
}

/// `Sev0` (critical) … `Sev4` (verbose); anything else is read as a word.
fn severity(sev: &str) -> Severity {
    let score = match sev.trim().to_ascii_lowercase().as_str() {
        "sev0" => 10,
        "sev1" => 8,
        "sev2" => 5,
        "sev3" => 3,
        "sev4" => 1,
        _ => return Severity::from_label(sev),
    };
    Severity::new(score, sev)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw_is_body, error_of, fixture, value};
    use crate::alert::AlertState;
    use crate::intake::formats::SourceKind;

    #[test]
    fn the_same_alert_fired_is_firing_and_its_resolution_follows_it() {
        let body = fixture("azure/azure_monitor_common_alert_schema_metric_sample.json");
        let resolved = &SourceKind::AzureMonitor.normalize(&body).expect("resolved")[0];
        // The notification the action group sent first, when the alert fired.
        let mut fired = value(&body);
        fired["data"]["essentials"]["monitorCondition"] = json!("Fired");
        fired["data"]["essentials"]
            .as_object_mut()
            .expect("essentials")
            .remove("resolvedDateTime");
        let fired = serde_json::to_vec(&fired).expect("JSON");
        let a = &SourceKind::AzureMonitor.normalize(&fired).expect("fired")[0];
        assert_eq!(
            (a.state, a.source_state.as_deref()),
            (AlertState::Firing, Some("Fired"))
        );
        assert_eq!(a.title, "WCUS-R2-Gen2 on wcus-r2-gen2");
        assert_eq!(
            a.observed_at.to_rfc3339(),
            "2019-03-22T13:58:24.371321300+00:00"
        );
        assert_eq!(a.dedup_key, resolved.dedup_key, "one alert id for both");
    }

    #[test]
    fn common_schema_metric_alert_resolved() {
        let body = fixture("azure/azure_monitor_common_alert_schema_metric_sample.json");
        let alerts = SourceKind::AzureMonitor
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(a.source, "azure.monitor");
        assert_eq!(a.kind, "WCUS-R2-Gen2");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (3, "Sev3"));
        assert_eq!(a.title, "WCUS-R2-Gen2 on wcus-r2-gen2 (resolved)");
        assert_eq!(a.description, None, "the description is empty");
        assert_eq!(a.resource.kind.as_deref(), Some("azure.vm"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some(
                "/subscriptions/<subscription ID>/resourcegroups/pipelinealertrg/providers/microsoft.compute/virtualmachines/wcus-r2-gen2"
            )
        );
        assert_eq!(a.resource.name.as_deref(), Some("wcus-r2-gen2"));
        assert_eq!(a.resource.account.as_deref(), Some("<subscription ID>"));
        assert_eq!(a.resource.region, None);
        assert!(a.actor.is_none());
        assert_eq!(a.network.remote_ip, None);
        assert_eq!(
            a.labels.get("monitor_condition").map(String::as_str),
            Some("Resolved")
        );
        assert_eq!(
            a.labels.get("signal_type").map(String::as_str),
            Some("Metric")
        );
        assert_eq!(a.labels.get("Key1").map(String::as_str), Some("Value1"));
        assert_eq!(
            (a.state, a.source_state.as_deref()),
            (AlertState::Resolved, Some("Resolved"))
        );
        assert_eq!(
            a.observed_at.to_rfc3339(),
            "2019-03-22T14:03:16.224631300+00:00",
            "when it was resolved"
        );
        assert_eq!(
            a.dedup_key,
            "azure.monitor:/subscriptions/<subscription ID>/providers/Microsoft.AlertsManagement/alerts/aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e"
        );
    }

    #[test]
    fn severities_map_onto_the_scale() {
        let mut alert = value(&fixture(
            "azure/azure_monitor_common_alert_schema_metric_sample.json",
        ));
        for (sev, score) in [
            ("Sev0", 10),
            ("Sev1", 8),
            ("Sev2", 5),
            ("Sev4", 1),
            ("Critical", 9),
        ] {
            alert["data"]["essentials"]["severity"] = json!(sev);
            let alerts = SourceKind::AzureMonitor
                .normalize(alert.to_string().as_bytes())
                .expect("normalizes");
            assert_eq!(
                (alerts[0].severity.score, alerts[0].severity.native.as_str()),
                (score, sev)
            );
        }
    }

    #[test]
    fn other_schemas_and_missing_fields_are_named() {
        let err = error_of(
            SourceKind::AzureMonitor
                .normalize(br#"{"schemaId":"AzureMonitorMetricAlert","data":{}}"#),
        );
        assert!(err.contains("common alert schema"), "{err}");
        let err = error_of(
            SourceKind::AzureMonitor.normalize(br#"{"schemaId":"azureMonitorCommonAlertSchema"}"#),
        );
        assert!(err.contains("`data.essentials`"), "{err}");
        let err = error_of(
            SourceKind::AzureMonitor.normalize(br#"{"data":{"essentials":{"severity":"Sev1"}}}"#),
        );
        assert!(err.contains("`data.essentials.alertRule`"), "{err}");
        let err = error_of(SourceKind::AzureMonitor.normalize(br#"{"data":{"essentials":[1]}}"#));
        assert!(err.contains("must be a JSON object"), "{err}");
    }
}
