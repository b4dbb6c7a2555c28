//! Microsoft Defender for Cloud security alerts.
//!
//! Shapes:
//!
//! - one alert as the ARM resource `Microsoft.Security/locations/alerts` (`{id, name, type,
//!   properties: {alertType, severity, ...}}`), as the Alerts API and continuous export give it;
//! - an alert whose fields sit at the top level instead of under `properties`, read the same way;
//! - a list, `{"value": [...]}` (an Alerts - List answer): one alert per element, each keeping its
//!   own exact text.
//!
//! Follows the `Alert` resource of the Microsoft.Security REST API, version 2022-01-01
//! (<https://learn.microsoft.com/rest/api/defenderforcloud/alerts/get-subscription-level-alert>).
//!
//! | Alert field | From |
//! |---|---|
//! | kind | `alertType` (`VM_EICAR`) |
//! | severity | `severity` (`High`, `Medium`, `Low`, `Informational`) |
//! | title | `alertDisplayName` |
//! | resource | the `AzureResource` identifier (else a `host` entity's `azureID`): `azure.vm` for a virtual machine, else `azure.resource`; named after `compromisedEntity` |
//! | actor | the first `account` entity |
//! | network | the first `ip` entity's `address`, the first `dns` entity's `domainName` |
//! | state | `status`: `Resolved` is `resolved`, `Dismissed` `suppressed`, `Active` and `InProgress` `firing` |
//! | observed_at | `timeGeneratedUtc`, else `startTimeUtc` |
//! | dedup_key | `azure.defender:` + `systemAlertId` (else the resource `name`) |

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, text};
use super::{FormatError, SourceKind, identity};
use crate::alert::{Actor, Alert, AlertState, Network, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    json::object(&body, "a Defender for Cloud alert")?;
    if get(&body, "value").is_some_and(Value::is_array) {
        let list = json::member(raw, "value")?.ok_or_else(|| FormatError::missing("value"))?;
        return json::map_elements(&list, "`value`", "value", alert);
    }
    Ok(vec![alert(raw.to_owned(), &body, "")?])
}

fn alert(raw: Box<RawValue>, resource: &Value, at: &str) -> Result<Alert, FormatError> {
    json::object(resource, &json::located("the alert", at))?;
    let props = get(resource, "properties")
        .filter(|p| p.is_object())
        .unwrap_or(resource);
    let kind = json::required_text(props, "alertType", &format!("{at}properties.alertType"))?;

    let mut alert = Alert::new(SourceKind::AzureDefender.name(), kind, raw);
    alert.severity =
        text(props, "severity").map_or_else(|| Severity::new(5, ""), |s| Severity::from_label(&s));
    if let Some(title) = text(props, "alertDisplayName") {
        alert.title = title;
    }
    alert.description = text(props, "description");
    if let Some(at) = json::first_time(props, &["timeGeneratedUtc", "startTimeUtc"]) {
        alert.observed_at = at;
    }

    let entities: &[Value] = get(props, "entities")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let entity = |kind: &'static str| of_type(entities, kind);
    alert.resource = azure_resource(resource, props, entity("host").next());
    alert.actor = entity("account").find_map(account);
    alert.network = Network {
        remote_ip: entity("ip").find_map(|e| json::ip_at(e, "address")),
        domain: entity("dns").find_map(|e| text(e, "domainName")),
        ..Network::default()
    };

    let label_paths = [
        ("status", "status"),
        ("intent", "intent"),
        ("product", "productName"),
        ("compromised_entity", "compromisedEntity"),
        ("alert_uri", "alertUri"),
    ];
    json::copy_labels(&mut alert.labels, props, &label_paths);
    if let Some(techniques) = get(props, "techniques") {
        let techniques = json::texts(techniques);
        if !techniques.is_empty() {
            alert
                .labels
                .insert("techniques".to_owned(), techniques.join(","));
        }
    }
    let status = text(props, "status");
    alert.state = match status.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("resolved") => AlertState::Resolved,
        Some("dismissed") => AlertState::Suppressed,
        _ => AlertState::Firing,
    };
    alert.source_state = status;
    if let Some(id) = text(props, "systemAlertId").or_else(|| text(resource, "name")) {
        alert.dedup_key = format!("azure.defender:{id}");
    }
    Ok(alert)
}

/// The Azure resource the alert is about; its subscription is the account, and its region the
/// alert's `location`, else the location in the alert's own id (`…/locations/westeurope/alerts/…`).
fn azure_resource(resource: &Value, props: &Value, host: Option<&Value>) -> Resource {
    let identifiers: &[Value] = get(props, "resourceIdentifiers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let id = of_type(identifiers, "AzureResource")
        .find_map(|i| text(i, "azureResourceId"))
        .or_else(|| host.and_then(|h| text(h, "azureID")));
    let alert_id = text(resource, "id");
    let account = id
        .as_deref()
        .and_then(|id| json::segment_after(id, "subscriptions"))
        .or_else(|| {
            of_type(identifiers, "LogAnalytics").find_map(|i| text(i, "workspaceSubscriptionId"))
        })
        .or_else(|| {
            alert_id
                .as_deref()
                .and_then(|id| json::segment_after(id, "subscriptions"))
        });
    let region = first_text(resource, &["location", "properties.location"]).or_else(|| {
        alert_id
            .as_deref()
            .and_then(|id| json::segment_after(id, "locations"))
    });
    let name =
        text(props, "compromisedEntity").or_else(|| id.as_deref().and_then(json::last_segment));
    Resource {
        kind: Some(resource_kind(id.as_deref()).to_owned()),
        id,
        region,
        account,
        name,
    }
}

/// The entities (or resource identifiers) whose `type` is `kind`, in any case.
fn of_type<'a>(items: &'a [Value], kind: &'static str) -> impl Iterator<Item = &'a Value> {
    items
        .iter()
        .filter(move |e| text(e, "type").is_some_and(|t| t.eq_ignore_ascii_case(kind)))
}

/// `azure.vm` for a virtual machine's resource id, `azure.subscription` for a subscription's
/// (`/subscriptions/<id>`, what Defender for Resource Manager alerts name), `azure.resource` for
/// any other.
pub(super) fn resource_kind(id: Option<&str>) -> &'static str {
    let id = id.unwrap_or_default().to_ascii_lowercase();
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    if id.contains("/providers/microsoft.compute/virtualmachines/") {
        "azure.vm"
    } else if matches!(segments.as_slice(), ["subscriptions", _]) {
        "azure.subscription"
    } else {
        "azure.resource"
    }
}

/// An `account` entity: an Entra ID user (by UPN, else object id) is `azure.user`, keyed
/// `azure:<tenant>:<object id>` (`aadTenantId`, `aadUserId`); a local or domain account on a
/// machine is `host.user` (`DOMAIN\name`).
pub(super) fn account(entity: &Value) -> Option<Actor> {
    let name = first_text(entity, &["name", "accountName"]);
    let upn = match (&name, text(entity, "upnSuffix")) {
        (Some(name), Some(suffix)) => Some(format!("{name}@{suffix}")),
        _ => None,
    };
    let aad = first_text(entity, &["aadUserId", "objectGuid"]);
    if upn.is_some() || aad.is_some() {
        let key = identity::azure(
            text(entity, "aadTenantId").as_deref(),
            text(entity, "aadUserId").as_deref(),
            upn.as_deref(),
        );
        return Some(Actor {
            kind: Some("azure.user".into()),
            id: upn.or(aad),
            name,
            key,
        });
    }
    let id = match (text(entity, "ntDomain"), &name) {
        (Some(domain), Some(name)) => Some(format!("{domain}\\{name}")),
        _ => name.clone().or_else(|| text(entity, "sid")),
    };
    id.map(|id| Actor {
        kind: Some("host.user".into()),
        id: Some(id),
        name,
        key: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, error_of, fixture, value};
    use crate::alert::AlertState;
    use crate::intake::formats::SourceKind;

    #[test]
    fn the_status_says_whether_the_alert_is_active_resolved_or_dismissed() {
        let state_of = |status: &str| {
            let mut alert = example_alert();
            alert["properties"]["status"] = json!(status);
            let body = serde_json::to_vec(&alert).expect("JSON");
            let a = SourceKind::AzureDefender
                .normalize(&body)
                .expect("normalizes")
                .remove(0);
            (a.state, a.source_state.unwrap_or_default(), a.dedup_key)
        };
        let (active, word, key) = state_of("Active");
        assert_eq!((active, word.as_str()), (AlertState::Firing, "Active"));
        assert_eq!(state_of("InProgress").0, AlertState::Firing);
        let (resolved, word, resolved_key) = state_of("Resolved");
        assert_eq!(
            (resolved, word.as_str()),
            (AlertState::Resolved, "Resolved")
        );
        assert_eq!(resolved_key, key, "follows the active alert");
        assert_eq!(state_of("Dismissed").0, AlertState::Suppressed);
        // The example as published is active.
        let body = serde_json::to_vec(&example_alert()).expect("JSON");
        let a = &SourceKind::AzureDefender
            .normalize(&body)
            .expect("normalizes")[0];
        assert_eq!(a.state, AlertState::Firing);
    }

    /// The fixture is the API example `{parameters, responses: {"200": {body}}}`; the alert is
    /// the body.
    fn example_alert() -> serde_json::Value {
        let example = value(&fixture(
            "azure/defender_for_cloud_alert_arm_example_2022-01-01.json",
        ));
        example["responses"]["200"]["body"].clone()
    }

    #[test]
    fn arm_alert_eicar_on_a_vm() {
        let body = serde_json::to_vec_pretty(&example_alert()).expect("JSON");
        let alerts = SourceKind::AzureDefender
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &example_alert());
        assert_eq!(a.raw.get(), std::str::from_utf8(&body).expect("UTF-8"));
        assert_eq!(a.source, "azure.defender");
        assert_eq!(a.kind, "VM_EICAR");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "High"));
        assert_eq!(a.title, "Azure Security Center test alert (not a threat)");
        assert_eq!(
            a.description.as_deref(),
            Some(
                "This is a test alert generated by Azure Security Center. No further action is needed."
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("azure.vm"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some(
                "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/myRg1/providers/Microsoft.Compute/virtualMachines/vm1"
            )
        );
        assert_eq!(a.resource.name.as_deref(), Some("vm1"));
        assert_eq!(
            a.resource.account.as_deref(),
            Some("20ff7fc3-e762-44dd-bd96-b71116dcdc23")
        );
        assert_eq!(a.resource.region.as_deref(), Some("westeurope"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("192.0.2.1"));
        assert!(a.actor.is_none());
        assert_eq!(a.observed_at.to_rfc3339(), "2020-02-23T13:47:58+00:00");
        assert_eq!(
            a.labels.get("techniques").map(String::as_str),
            Some("T1059,T1053,T1072")
        );
        assert_eq!(a.labels.get("status").map(String::as_str), Some("Active"));
        assert_eq!(
            a.dedup_key,
            "azure.defender:2518298467986649999_4d25bfef-2d77-4a08-adc0-3e35715cc92a"
        );
    }

    #[test]
    fn an_entra_user_is_keyed_by_tenant_and_object_id_and_a_subscription_is_only_a_place() {
        let mut alert = example_alert();
        alert["properties"]["alertType"] = json!("ARM_AnomalousOperation.Persistence");
        alert["properties"]["resourceIdentifiers"] = json!([{"type": "AzureResource",
            "azureResourceId": "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23"}]);
        alert["properties"]["entities"] = json!([{"type": "account", "name": "Alice",
            "upnSuffix": "contoso.com", "aadTenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "aadUserId": "b0b2c3d4-0000-1111-2222-333344445555"}]);
        let a = SourceKind::AzureDefender
            .normalize(&serde_json::to_vec(&alert).expect("JSON"))
            .expect("normalizes")
            .remove(0);
        assert_eq!(a.resource.kind.as_deref(), Some("azure.subscription"));
        let actor = a.actor.as_ref().expect("actor");
        // The UPN stays the id playbooks use; the key is the object id.
        assert_eq!(actor.id.as_deref(), Some("Alice@contoso.com"));
        assert_eq!(
            a.entity_key().as_deref(),
            Some(
                "actor:azure:72f988bf-86f1-41af-91ab-2d7cd011db47:b0b2c3d4-0000-1111-2222-333344445555"
            )
        );
    }

    #[test]
    fn a_list_gives_one_alert_per_element() {
        let mut second = example_alert();
        second["properties"]["alertType"] = json!("SIMULATED_ALERT");
        second["properties"]["resourceIdentifiers"] = json!([{"type": "AzureResource",
            "azureResourceId": "/subscriptions/s2/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"}]);
        second["properties"]["entities"] =
            json!([{"type": "account", "name": "alice", "upnSuffix": "contoso.com"}]);
        let list = json!({"value": [example_alert(), second.clone()]});
        let body = serde_json::to_vec(&list).expect("JSON");
        let alerts = SourceKind::AzureDefender
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 2);
        assert_raw(&alerts[1], &body, &second);
        let b = &alerts[1];
        assert_eq!(b.kind, "SIMULATED_ALERT");
        assert_eq!(b.resource.kind.as_deref(), Some("azure.resource"));
        assert_eq!(b.resource.account.as_deref(), Some("s2"));
        let actor = b.actor.as_ref().expect("actor");
        assert_eq!(
            (actor.kind.as_deref(), actor.id.as_deref()),
            (Some("azure.user"), Some("alice@contoso.com"))
        );
    }

    #[test]
    fn flattened_alert_reads_the_same() {
        let props = example_alert()["properties"].clone();
        let alerts = SourceKind::AzureDefender
            .normalize(props.to_string().as_bytes())
            .expect("normalizes");
        assert_eq!(alerts[0].kind, "VM_EICAR");
        assert_eq!(alerts[0].resource.kind.as_deref(), Some("azure.vm"));
    }

    #[test]
    fn missing_alert_type_is_named() {
        let err =
            error_of(SourceKind::AzureDefender.normalize(br#"{"properties":{"severity":"High"}}"#));
        assert!(err.contains("`properties.alertType`"), "{err}");
        let err =
            error_of(SourceKind::AzureDefender.normalize(br#"{"value":[{"properties":{}}]}"#));
        assert!(err.contains("`value[0].properties.alertType`"), "{err}");
        let err =
            error_of(SourceKind::AzureDefender.normalize(br#"[{"properties":{"alertType":"x"}}]"#));
        assert!(err.contains("must be a JSON object"), "{err}");
    }
}
