//! Microsoft Sentinel incidents.
//!
//! Shapes:
//!
//! - one incident as the ARM resource `Microsoft.SecurityInsights/incidents` (`{id, name, etag,
//!   properties: {title, severity, status, incidentNumber, ...}}`);
//! - the body of the Logic App / playbook incident trigger, which carries that resource in
//!   `object` (the alert's `raw` is the whole body);
//! - a list, `{"value": [...]}` (an Incidents - List answer): one alert per incident.
//!
//! Follows the `Incident` resource of the SecurityInsights REST API, version 2024-09-01
//! (<https://learn.microsoft.com/rest/api/securityinsights/incidents/get>).
//!
//! A Sentinel incident names no single resource, and Sentinel sends the same incident again when
//! it changes; so the alert's resource is the incident itself (`azure.sentinel.incident`, by ARM
//! id), which keeps every update of one incident in one Cordon incident. An incident about an Entra
//! ID user (an `Account` among its related entities) is about that user instead: it joins the
//! user's incident, where updates of it follow it by its dedup key.
//!
//! | Alert field | From |
//! |---|---|
//! | kind | the first of `additionalData.alertProductNames`, else `SentinelIncident` |
//! | severity | `severity` (`High`, `Medium`, `Low`, `Informational`) |
//! | title | `title` |
//! | resource | the incident: `azure.sentinel.incident`, its subscription as the account |
//! | actor | the first Entra ID user among `relatedEntities` (`kind` `Account`), as the Logic App incident trigger sends them; keyed `azure:<tenant>:<object id>` (`aadTenantId`, `aadUserId`), so the incident joins other sources' alerts about the user |
//! | labels | `status`, `classification`, `incident_number`, `owner`, `tactics`, `products`, `tags` |
//! | state | `status`: `Closed` is `resolved`, or `suppressed` when classified `FalsePositive` or `BenignPositive`; `New` and `Active` are `firing` |
//! | observed_at | `lastActivityTimeUtc`, else `firstActivityTimeUtc`, else `createdTimeUtc` |
//! | dedup_key | `azure.sentinel:` + the incident `name` (its GUID), else its `id` |

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, path, text};
use super::{FormatError, SourceKind, azure_defender};
use crate::alert::{Alert, AlertState, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    json::object(&body, "a Sentinel incident")?;
    if get(&body, "value").is_some_and(Value::is_array) {
        let list = json::member(raw, "value")?.ok_or_else(|| FormatError::missing("value"))?;
        return json::map_elements(&list, "`value`", "value", |item, value, at| {
            incident(item, value, at, None)
        });
    }
    if let Some(object) = get(&body, "object").filter(|o| o.is_object()) {
        let workspace_subscription = text(&body, "workspaceInfo.SubscriptionId");
        return Ok(vec![incident(
            raw.to_owned(),
            object,
            "object.",
            workspace_subscription,
        )?]);
    }
    Ok(vec![incident(raw.to_owned(), &body, "", None)?])
}

fn incident(
    raw: Box<RawValue>,
    resource: &Value,
    at: &str,
    workspace_subscription: Option<String>,
) -> Result<Alert, FormatError> {
    json::object(resource, &json::located("the incident", at))?;
    let props = get(resource, "properties")
        .ok_or_else(|| FormatError::missing(&format!("{at}properties")))?;
    let title = json::required_text(props, "title", &format!("{at}properties.title"))?;
    let products = path(props, "additionalData.alertProductNames")
        .map(json::texts)
        .unwrap_or_default();
    let kind = products
        .first()
        .cloned()
        .unwrap_or_else(|| "SentinelIncident".to_owned());

    let mut alert = Alert::new(SourceKind::AzureSentinel.name(), kind, raw);
    alert.title = title;
    alert.severity =
        text(props, "severity").map_or_else(|| Severity::new(5, ""), |s| Severity::from_label(&s));
    alert.description = text(props, "description");
    if let Some(at) = json::first_time(
        props,
        &[
            "lastActivityTimeUtc",
            "firstActivityTimeUtc",
            "createdTimeUtc",
        ],
    ) {
        alert.observed_at = at;
    }

    let arm_id = text(resource, "id");
    let number = text(props, "incidentNumber");
    alert.resource = Resource {
        kind: Some("azure.sentinel.incident".into()),
        id: arm_id.clone().or_else(|| text(resource, "name")),
        region: text(resource, "location"),
        account: arm_id
            .as_deref()
            .and_then(|id| json::segment_after(id, "subscriptions"))
            .or(workspace_subscription),
        name: number.as_ref().map(|n| format!("incident {n}")),
    };

    let labels = &mut alert.labels;
    let label_paths: [(&str, &[&str]); 6] = [
        ("status", &["status"]),
        ("classification", &["classification"]),
        ("incident_number", &["incidentNumber"]),
        ("provider", &["providerName"]),
        (
            "owner",
            &["owner.userPrincipalName", "owner.email", "owner.assignedTo"],
        ),
        ("incident_url", &["incidentUrl"]),
    ];
    for (label, paths) in label_paths {
        if let Some(value) = first_text(props, paths) {
            labels.insert(label.to_owned(), value);
        }
    }
    let tactics = path(props, "additionalData.tactics")
        .map(json::texts)
        .unwrap_or_default();
    let tags: Vec<String> = get(props, "labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| text(l, "labelName"))
        .collect();
    for (label, values) in [("tactics", tactics), ("products", products), ("tags", tags)] {
        if !values.is_empty() {
            labels.insert(label.to_owned(), values.join(","));
        }
    }

    let status = text(props, "status");
    let closed = status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("Closed"));
    let dismissed = text(props, "classification").is_some_and(|c| {
        c.eq_ignore_ascii_case("FalsePositive") || c.eq_ignore_ascii_case("BenignPositive")
    });
    alert.state = match (closed, dismissed) {
        (false, _) => AlertState::Firing,
        (true, false) => AlertState::Resolved,
        (true, true) => AlertState::Suppressed,
    };
    alert.source_state = status;
    alert.actor = get(props, "relatedEntities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| text(e, "kind").is_some_and(|k| k.eq_ignore_ascii_case("Account")))
        .filter_map(|e| azure_defender::account(get(e, "properties").unwrap_or(e)))
        .find(|actor| actor.kind.as_deref() == Some("azure.user"));
    if let Some(id) = text(resource, "name").or(arm_id) {
        alert.dedup_key = format!("azure.sentinel:{id}");
    }
    Ok(alert)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, error_of, fixture, value};
    use crate::alert::AlertState;
    use crate::intake::formats::SourceKind;

    /// The fixture is the API example `{parameters, responses: {"200": {body}}}`; the incident
    /// is the body.
    fn example_incident() -> serde_json::Value {
        let example = value(&fixture(
            "azure/sentinel_incident_arm_example_2024-09-01.json",
        ));
        example["responses"]["200"]["body"].clone()
    }

    #[test]
    fn arm_incident() {
        let body = serde_json::to_vec_pretty(&example_incident()).expect("JSON");
        let alerts = SourceKind::AzureSentinel
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &example_incident());
        assert_eq!(a.source, "azure.sentinel");
        assert_eq!(a.kind, "SentinelIncident");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "High"));
        assert_eq!(a.title, "My incident");
        assert_eq!(a.description.as_deref(), Some("This is a demo incident"));
        assert_eq!(a.resource.kind.as_deref(), Some("azure.sentinel.incident"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some(
                "/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5"
            )
        );
        assert_eq!(a.resource.name.as_deref(), Some("incident 3177"));
        assert_eq!(
            a.resource.account.as_deref(),
            Some("d0cfe6b2-9ac0-4464-9919-dccaee2e48c0")
        );
        assert!(
            a.actor.is_none(),
            "the owner is who handles it, not who did it"
        );
        assert_eq!(a.network.remote_ip, None);
        assert_eq!(a.labels.get("status").map(String::as_str), Some("Closed"));
        assert_eq!(
            a.labels.get("owner").map(String::as_str),
            Some("john@contoso.com")
        );
        assert_eq!(
            a.labels.get("incident_number").map(String::as_str),
            Some("3177")
        );
        assert_eq!(
            a.labels.get("tactics").map(String::as_str),
            Some("InitialAccess,Persistence")
        );
        assert_eq!(a.observed_at.to_rfc3339(), "2019-01-01T13:05:30+00:00");
        assert_eq!(
            a.dedup_key,
            "azure.sentinel:73e01a99-5cd7-4139-a149-9f2736ff2ab5"
        );
    }

    #[test]
    fn logic_app_trigger_and_lists() {
        let mut incident = example_incident();
        incident["properties"]["additionalData"]["alertProductNames"] =
            json!(["Microsoft Defender for Cloud"]);
        let trigger = json!({"objectSchemaType": "incident", "workspaceInfo": {"SubscriptionId": "s1"}, "object": incident});
        let body = trigger.to_string();
        let alerts = SourceKind::AzureSentinel
            .normalize(body.as_bytes())
            .expect("trigger");
        assert_eq!(alerts[0].raw.get(), body);
        assert_eq!(alerts[0].kind, "Microsoft Defender for Cloud");

        let list =
            serde_json::to_vec(&json!({"value": [example_incident(), incident]})).expect("JSON");
        let alerts = SourceKind::AzureSentinel.normalize(&list).expect("list");
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            alerts[1].labels.get("products").map(String::as_str),
            Some("Microsoft Defender for Cloud")
        );
    }

    #[test]
    fn a_closed_incident_is_resolved_or_suppressed_by_its_classification() {
        // The example is closed as a false positive.
        let state_of = |incident: &serde_json::Value| {
            let body = serde_json::to_vec(incident).expect("JSON");
            let a = SourceKind::AzureSentinel
                .normalize(&body)
                .expect("normalizes")
                .remove(0);
            (a.state, a.source_state, a.dedup_key)
        };
        let closed = example_incident();
        let (state, word, key) = state_of(&closed);
        assert_eq!(
            (state, word.as_deref()),
            (AlertState::Suppressed, Some("Closed"))
        );
        let mut true_positive = closed.clone();
        true_positive["properties"]["classification"] = json!("TruePositive");
        assert_eq!(state_of(&true_positive).0, AlertState::Resolved);
        let mut active = closed.clone();
        active["properties"]["status"] = json!("Active");
        let (state, word, active_key) = state_of(&active);
        assert_eq!(
            (state, word.as_deref()),
            (AlertState::Firing, Some("Active"))
        );
        assert_eq!(active_key, key, "one incident's updates follow each other");
        let mut new = closed;
        new["properties"]["status"] = json!("New");
        assert_eq!(state_of(&new).0, AlertState::Firing);
    }

    #[test]
    fn missing_fields_are_named() {
        let err =
            error_of(SourceKind::AzureSentinel.normalize(br#"{"properties":{"severity":"High"}}"#));
        assert!(err.contains("`properties.title`"), "{err}");
        let err = error_of(SourceKind::AzureSentinel.normalize(br#"{"name":"x"}"#));
        assert!(err.contains("`properties`"), "{err}");
        let err = error_of(
            SourceKind::AzureSentinel.normalize(br#"{"value":[{"properties":{"title":7}},{}]}"#),
        );
        assert!(err.contains("`value[1].properties`"), "{err}");
    }
}
