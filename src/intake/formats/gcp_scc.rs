//! Google Cloud Security Command Center findings, from SCC notifications.
//!
//! Shapes:
//!
//! - the Pub/Sub push request, `{"message": {"data": <base64>, "messageId", "publishTime",
//!   "attributes"}, "subscription"}`, whose `data` is a `NotificationMessage`;
//! - the `NotificationMessage` itself, `{"notificationConfigName", "finding": {...},
//!   "resource": {...}}`, as a pull subscriber or a Cloud Function receives it after decoding.
//!
//! Either way the alert's `raw` is the body as received (for push, the envelope).
//!
//! Follows the notification format
//! (<https://cloud.google.com/security-command-center/docs/how-to-notifications>), the `Finding`
//! resource (<https://cloud.google.com/security-command-center/docs/reference/rest/v1/organizations.sources.findings>)
//! and Pub/Sub push delivery (<https://cloud.google.com/pubsub/docs/push>).
//!
//! | Alert field | From `finding` |
//! |---|---|
//! | kind | `category` (`C2: Bad IP`, `PUBLIC_BUCKET_ACL`) |
//! | severity | `severity` (`CRITICAL`, `HIGH`, `MEDIUM`, `LOW`), else Security Health Analytics' `sourceProperties.SeverityLevel`; unspecified scores 5 |
//! | title | `<category> on <resource name>` |
//! | resource | see [`resource`] |
//! | actor | `access.principalEmail` (or Event Threat Detection's `sourceProperties.properties.principalEmail`) |
//! | network | `indicator.ipAddresses`, `connections[0]`, or Event Threat Detection's `sourceProperties.properties.ip` / `ipConnection` |
//! | state | `state` `INACTIVE` is `resolved`; else `mute` `MUTED` is `suppressed`; else `firing` |
//! | observed_at | `eventTime`, else `createTime` |
//! | dedup_key | `gcp.scc:` + finding `name` |

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, path, text};
use super::{FormatError, SourceKind, identity};
use crate::alert::{Actor, Alert, AlertState, Network, Resource, Severity};

/// Pub/Sub writes standard, padded base64; relays differ on padding and some use the URL-safe
/// alphabet, and neither changes what the data says.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    json::object(&body, "an SCC notification or Pub/Sub push request")?;
    let decoded;
    let (notification, at) = match get(&body, "message") {
        Some(message) => {
            decoded = decode(message)?;
            (&decoded, "message.data.")
        }
        None => (&body, ""),
    };
    json::object(notification, "`message.data`")?;
    let finding = get(notification, "finding")
        .ok_or_else(|| FormatError::missing(&format!("{at}finding")))?;
    json::object(finding, &format!("`{at}finding`"))?;
    let name = json::required_text(finding, "name", &format!("{at}finding.name"))?;
    let category = json::required_text(finding, "category", &format!("{at}finding.category"))?;

    let mut alert = Alert::new(SourceKind::GcpScc.name(), category.clone(), raw.to_owned());
    alert.severity = severity(finding);
    alert.resource = resource(finding, notification);
    // A finding about a service-account key is about the account: it joins the account's incident,
    // and the key is a label for the actions that disable it.
    if let Some((account, key)) = alert.resource.id.as_deref().and_then(service_account_key) {
        alert
            .labels
            .insert("gcp.service_account_key".to_owned(), key);
        alert.resource.id = Some(account);
    }
    if alert.resource.kind.as_deref() == Some("gcp.service_account")
        && let Some(email) = alert.resource.name.clone()
    {
        alert.labels.insert("gcp.service_account".to_owned(), email);
    }
    alert.title = match alert
        .resource
        .name
        .as_deref()
        .or(alert.resource.id.as_deref())
    {
        Some(target) => format!("{category} on {target}"),
        None => category,
    };
    alert.description = first_text(
        finding,
        &[
            "description",
            "sourceProperties.Explanation",
            "sourceProperties.description",
        ],
    );
    if let Some(at) = json::first_time(finding, &["eventTime", "createTime"]) {
        alert.observed_at = at;
    }
    alert.actor = actor(finding);
    alert.network = network(finding);

    let labels = &mut alert.labels;
    let label_paths = [
        ("state", "state"),
        ("finding_class", "findingClass"),
        ("rule_name", "sourceProperties.detectionCategory.ruleName"),
        ("scanner", "sourceProperties.ScannerName"),
        ("external_uri", "externalUri"),
        ("source", "parent"),
    ];
    json::copy_labels(labels, finding, &label_paths);
    if let Some(marks) = path(finding, "securityMarks.marks") {
        for (key, value) in json::labels_of(marks) {
            labels.insert(format!("mark:{key}"), value);
        }
    }
    let state = text(finding, "state");
    let mute = text(finding, "mute");
    (alert.state, alert.source_state) = if state
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("INACTIVE"))
    {
        (AlertState::Resolved, state)
    } else if mute
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("MUTED"))
    {
        (AlertState::Suppressed, mute)
    } else {
        (AlertState::Firing, state)
    };
    alert.dedup_key = format!("gcp.scc:{name}");
    Ok(vec![alert])
}

/// The `NotificationMessage` in a push request's `message.data`.
fn decode(message: &Value) -> Result<Value, FormatError> {
    let data = json::required_text(message, "data", "message.data")?;
    let bytes = STANDARD
        .decode(&data)
        .or_else(|_| URL_SAFE.decode(&data))
        .map_err(|e| FormatError::new(format!("`message.data` is not base64: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FormatError::new(format!("`message.data` does not hold JSON: {e}")))
}

/// `severity` unless unspecified, else the severity Security Health Analytics writes in its
/// source properties. Older findings (such as Event Threat Detection's from 2019) have neither,
/// and score 5 with no native value.
fn severity(finding: &Value) -> Severity {
    text(finding, "severity")
        .filter(|s| !s.eq_ignore_ascii_case("SEVERITY_UNSPECIFIED"))
        .or_else(|| text(finding, "sourceProperties.SeverityLevel"))
        .map_or_else(|| Severity::new(5, ""), |s| Severity::from_label(&s))
}

/// The resource: the VM an Event Threat Detection finding names in
/// `sourceProperties.properties.instanceDetails` (the finding's `resourceName` is then only its
/// project), else `resourceName` read as a full resource name (see [`parse_resource_name`]).
/// The id is the full resource name, `//service.googleapis.com/…`; the name is the last part
/// (bucket, dataset, instance, project). The account is the project, from the name or else from
/// `sourceProperties.ProjectId` or the notification's `resource.project`.
fn resource(finding: &Value, notification: &Value) -> Resource {
    let instance = text(finding, "sourceProperties.properties.instanceDetails")
        .filter(|i| i.starts_with("/projects/") || i.starts_with("projects/"));
    let full_name = match instance {
        Some(instance) => Some(format!(
            "//compute.googleapis.com/{}",
            instance.trim_start_matches('/')
        )),
        None => {
            first_text(finding, &["resourceName"]).or_else(|| text(notification, "resource.name"))
        }
    };
    let parsed = full_name
        .as_deref()
        .map(parse_resource_name)
        .unwrap_or_default();
    let account = parsed
        .project
        .or_else(|| text(finding, "sourceProperties.ProjectId"))
        .or_else(|| {
            text(notification, "resource.project")
                .as_deref()
                .and_then(json::last_segment)
        })
        .or_else(|| text(notification, "resource.projectDisplayName"));
    Resource {
        kind: Some(parsed.kind.unwrap_or_else(|| "gcp.resource".to_owned())),
        id: full_name,
        region: parsed.location,
        account,
        name: parsed.name,
    }
}

/// `(//iam.googleapis.com/projects/P/serviceAccounts/E, the whole key name)` when `full_name` names
/// a service-account key (`…/serviceAccounts/E/keys/K`).
fn service_account_key(full_name: &str) -> Option<(String, String)> {
    let rest = full_name.strip_prefix("//iam.googleapis.com/")?;
    let (account, key) = rest.split_once("/keys/")?;
    let segments: Vec<&str> = account.split('/').collect();
    let [_, _, accounts, _] = segments.as_slice() else {
        return None;
    };
    (*accounts == "serviceAccounts" && !key.is_empty() && !key.contains('/')).then(|| {
        (
            format!("//iam.googleapis.com/{account}"),
            full_name.to_owned(),
        )
    })
}

/// What a full resource name says.
#[derive(Default, Debug, PartialEq)]
struct ResourceName {
    kind: Option<String>,
    name: Option<String>,
    project: Option<String>,
    location: Option<String>,
}

/// Reads `//<service>.googleapis.com/<collection>/<id>/…`:
///
/// - Resource Manager names give `gcp.project`, `gcp.folder`, `gcp.organization`;
/// - Cloud Storage names (`//storage.googleapis.com/<bucket>`) give `gcp.storage.bucket`;
/// - IAM service accounts give `gcp.service_account`, the kind actors have too;
/// - any other gives `gcp.<service>.<collection>`, the collection being the segment before the
///   last, singular and in snake case: `//bigquery.googleapis.com/projects/p/datasets/d` is
///   `gcp.bigquery.dataset`, `//compute.googleapis.com/projects/p/zones/z/instances/i` is
///   `gcp.compute.instance`.
///
/// The project and the zone, region or location are taken from the path when it has them.
fn parse_resource_name(full_name: &str) -> ResourceName {
    let rest = full_name.trim_start_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let service = host.strip_suffix(".googleapis.com").unwrap_or(host);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let after = |collection: &str| {
        segments
            .windows(2)
            .find(|pair| {
                pair.first()
                    .is_some_and(|c| c.eq_ignore_ascii_case(collection))
            })
            .and_then(|pair| pair.get(1))
            .map(|s| (*s).to_owned())
    };
    let project = after("projects");
    let location = after("zones")
        .or_else(|| after("regions"))
        .or_else(|| after("locations"));
    let (kind, name) = match service {
        "" => ("gcp.resource".to_owned(), None),
        "cloudresourcemanager" => {
            let collection = segments.first().copied().unwrap_or("");
            let kind = match collection {
                "organizations" => "gcp.organization",
                "folders" => "gcp.folder",
                _ => "gcp.project",
            };
            (kind.to_owned(), segments.get(1).map(|s| (*s).to_owned()))
        }
        "storage" => (
            "gcp.storage.bucket".to_owned(),
            segments.first().map(|s| (*s).to_owned()),
        ),
        _ => {
            // `…/<collection>/<id>`: the last segment names the resource, the one before it says
            // what it is.
            let last_id = segments.len().checked_sub(1);
            let collection = last_id
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| segments.get(i))
                .copied();
            let kind = match collection {
                // The one identity SCC names as a resource; `gcp.service_account` across Cordon.
                Some("serviceAccounts") if service == "iam" => "gcp.service_account".to_owned(),
                // A key is named after its account (`…/serviceAccounts/E/keys/K`).
                Some("keys") if service == "iam" && segments.len() >= 4 => {
                    return ResourceName {
                        kind: Some("gcp.service_account".to_owned()),
                        name: segments.get(segments.len() - 3).map(|s| (*s).to_owned()),
                        project,
                        location,
                    };
                }
                Some(collection) => format!("gcp.{service}.{}", singular(collection)),
                None => format!("gcp.{service}"),
            };
            (
                kind,
                last_id
                    .and_then(|i| segments.get(i))
                    .map(|s| (*s).to_owned()),
            )
        }
    };
    ResourceName {
        kind: Some(kind),
        name,
        project,
        location,
    }
}

/// `datasets` → `dataset`, `policies` → `policy`, `addresses` → `address`,
/// `backendServices` → `backend_service`.
fn singular(collection: &str) -> String {
    let mut lower = String::with_capacity(collection.len());
    for c in collection.chars() {
        if c.is_ascii_uppercase() && !lower.is_empty() {
            lower.push('_');
        }
        lower.push(c.to_ascii_lowercase());
    }
    if let Some(stem) = lower.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = lower.strip_suffix("sses") {
        format!("{stem}ss")
    } else {
        lower.strip_suffix('s').unwrap_or(&lower).to_owned()
    }
}

/// The principal that acted: a service account or a user, by e-mail.
fn actor(finding: &Value) -> Option<Actor> {
    let email = first_text(
        finding,
        &[
            "access.principalEmail",
            "sourceProperties.properties.principalEmail",
        ],
    )?;
    let kind = if email.ends_with(".gserviceaccount.com") {
        "gcp.service_account"
    } else {
        "gcp.user"
    };
    Some(Actor {
        kind: Some(kind.into()),
        key: identity::gcp(&email),
        id: Some(email.clone()),
        name: Some(email),
    })
}

/// The bad address: the finding's indicator, else its first connection's destination, else what
/// Event Threat Detection's source properties carry.
fn network(finding: &Value) -> Network {
    let ip = |paths: &[&str]| paths.iter().find_map(|p| json::ip_at(finding, p));
    let etd_ip = path(finding, "sourceProperties.properties.ip")
        .map(json::texts)
        .unwrap_or_default()
        .iter()
        .find_map(|s| json::ip(s));
    Network {
        remote_ip: ip(&["indicator.ipAddresses.0", "connections.0.destinationIp"])
            .or(etd_ip)
            .or_else(|| ip(&["sourceProperties.properties.ipConnection.destIp"])),
        remote_port: [
            "connections.0.destinationPort",
            "sourceProperties.properties.ipConnection.destPort",
        ]
        .iter()
        .find_map(|p| path(finding, p).and_then(json::port)),
        local_ip: ip(&[
            "connections.0.sourceIp",
            "sourceProperties.properties.ipConnection.srcIp",
        ]),
        domain: first_text(
            finding,
            &[
                "indicator.domains.0",
                "sourceProperties.properties.domain.0",
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::super::json::testing::{assert_raw_is_body, error_of, fixture};
    use super::*;
    use crate::intake::formats::SourceKind;

    #[test]
    fn an_inactive_finding_is_resolved_and_a_muted_one_suppressed() {
        let body = fixture("gcp_scc/sra_notification_sha_public_bucket_acl.json");
        let active = &SourceKind::GcpScc.normalize(&body).expect("active")[0];
        assert_eq!(
            (active.state, active.source_state.as_deref()),
            (AlertState::Firing, Some("ACTIVE"))
        );
        let mut notification: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        notification["finding"]["state"] = json!("INACTIVE");
        let inactive = serde_json::to_vec(&notification).expect("JSON");
        let a = &SourceKind::GcpScc.normalize(&inactive).expect("inactive")[0];
        assert_eq!(
            (a.state, a.source_state.as_deref()),
            (AlertState::Resolved, Some("INACTIVE"))
        );
        assert_eq!(a.dedup_key, active.dedup_key);
        notification["finding"]["state"] = json!("ACTIVE");
        notification["finding"]["mute"] = json!("MUTED");
        let muted = serde_json::to_vec(&notification).expect("JSON");
        let a = &SourceKind::GcpScc.normalize(&muted).expect("muted")[0];
        assert_eq!(
            (a.state, a.source_state.as_deref()),
            (AlertState::Suppressed, Some("MUTED"))
        );
    }

    /// Normalizes the fixture as decoded and as a Pub/Sub push request, checks both agree, and
    /// returns the decoded form's alert.
    fn both_forms(name: &str) -> Alert {
        let body = fixture(&format!("gcp_scc/{name}"));
        let alerts = SourceKind::GcpScc.normalize(&body).expect("decoded form");
        assert_eq!(alerts.len(), 1);
        let decoded = alerts.into_iter().next().expect("one alert");
        assert_raw_is_body(&decoded, &body);

        let push = json!({
            "message": {"data": STANDARD.encode(&body), "messageId": "2070443601311540",
                        "publishTime": "2021-02-26T19:13:55.749Z", "attributes": {}},
            "subscription": "projects/myproject/subscriptions/mysubscription"
        });
        let push_body = serde_json::to_vec(&push).expect("JSON");
        let pushed = SourceKind::GcpScc.normalize(&push_body).expect("push form");
        assert_eq!(pushed.len(), 1);
        let pushed = &pushed[0];
        assert_raw_is_body(pushed, &push_body);
        assert_eq!(
            (
                &pushed.kind,
                &pushed.severity,
                &pushed.title,
                &pushed.description
            ),
            (
                &decoded.kind,
                &decoded.severity,
                &decoded.title,
                &decoded.description
            )
        );
        assert_eq!(
            (&pushed.resource, &pushed.actor, &pushed.network),
            (&decoded.resource, &decoded.actor, &decoded.network)
        );
        assert_eq!(
            (&pushed.labels, &pushed.dedup_key, pushed.observed_at),
            (&decoded.labels, &decoded.dedup_key, decoded.observed_at)
        );
        assert_eq!(decoded.source, "gcp.scc");
        decoded
    }

    #[test]
    fn event_threat_detection_bad_ip() {
        let a = both_forms("sra_notification_etd_bad_ip.json");
        assert_eq!(a.kind, "C2: Bad IP");
        // 2019 findings carry no severity.
        assert_eq!((a.severity.score, a.severity.native.as_str()), (5, ""));
        assert_eq!(a.title, "C2: Bad IP on bad-ip-caller");
        assert_eq!(a.resource.kind.as_deref(), Some("gcp.compute.instance"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some(
                "//compute.googleapis.com/projects/test-project-15511551515/zones/us-central1-a/instances/bad-ip-caller"
            )
        );
        assert_eq!(a.resource.name.as_deref(), Some("bad-ip-caller"));
        assert_eq!(a.resource.region.as_deref(), Some("us-central1-a"));
        assert_eq!(
            a.resource.account.as_deref(),
            Some("test-project-15511551515")
        );
        // This sample has no address in it (real ETD findings put it in `properties.ip`).
        assert_eq!(a.network.remote_ip, None);
        assert!(a.actor.is_none());
        assert_eq!(
            a.labels.get("rule_name").map(String::as_str),
            Some("bad_ip")
        );
        assert_eq!(a.labels.get("state").map(String::as_str), Some("ACTIVE"));
        assert_eq!(a.observed_at.to_rfc3339(), "2019-11-22T18:34:36.153+00:00");
        assert_eq!(
            a.dedup_key,
            "gcp.scc:organizations/0000000000000/sources/0000000000000000000/findings/6a30ce604c11417995b1fa260753f3b5"
        );
    }

    #[test]
    fn security_health_analytics_public_bucket() {
        let a = both_forms("sra_notification_sha_public_bucket_acl.json");
        assert_eq!(a.kind, "PUBLIC_BUCKET_ACL");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "High"));
        assert_eq!(a.title, "PUBLIC_BUCKET_ACL on this-is-public-on-purpose");
        assert!(
            a.description
                .as_deref()
                .is_some_and(|d| d.starts_with("This bucket is public"))
        );
        assert_eq!(a.resource.kind.as_deref(), Some("gcp.storage.bucket"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("//storage.googleapis.com/this-is-public-on-purpose")
        );
        assert_eq!(
            a.resource.name.as_deref(),
            Some("this-is-public-on-purpose")
        );
        assert_eq!(a.resource.account.as_deref(), Some("test-project"));
        assert_eq!(a.resource.region, None);
        assert_eq!(a.labels.get("mark:babab").map(String::as_str), Some("3"));
        assert_eq!(
            a.labels.get("scanner").map(String::as_str),
            Some("STORAGE_SCANNER")
        );
        assert_eq!(
            a.dedup_key,
            "gcp.scc:organizations/154584661726/sources/2673592633662526977/findings/782e52631d61da6117a3772137c270d8"
        );
    }

    #[test]
    fn security_health_analytics_public_dataset() {
        let a = both_forms("sra_notification_sha_public_dataset.json");
        assert_eq!(a.kind, "PUBLIC_DATASET");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "High"));
        assert_eq!(a.title, "PUBLIC_DATASET on public_dataset123");
        assert_eq!(a.resource.kind.as_deref(), Some("gcp.bigquery.dataset"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("//bigquery.googleapis.com/projects/test-project/datasets/public_dataset123")
        );
        assert_eq!(a.resource.account.as_deref(), Some("test-project"));
        assert_eq!(a.observed_at.to_rfc3339(), "2019-10-03T18:40:22.538+00:00");
    }

    #[test]
    fn current_findings_with_severity_indicator_and_principal() {
        let notification = json!({"finding": {
            "name": "organizations/1/sources/2/findings/3", "category": "Persistence: IAM Anomalous Grant",
            "severity": "CRITICAL", "resourceName": "//cloudresourcemanager.googleapis.com/projects/123",
            "indicator": {"ipAddresses": ["203.0.113.5"]},
            "access": {"principalEmail": "evil@proj.iam.gserviceaccount.com"}}});
        let alerts = SourceKind::GcpScc
            .normalize(notification.to_string().as_bytes())
            .expect("normalizes");
        let a = &alerts[0];
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (9, "CRITICAL")
        );
        assert_eq!(a.resource.kind.as_deref(), Some("gcp.project"));
        assert_eq!(a.resource.account.as_deref(), Some("123"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("203.0.113.5"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(actor.kind.as_deref(), Some("gcp.service_account"));
        // A project is only where it happened: the finding is about the service account.
        assert_eq!(
            a.entity_key().as_deref(),
            Some("actor:gcp:proj:evil@proj.iam.gserviceaccount.com")
        );
    }

    #[test]
    fn resource_names() {
        let parsed =
            parse_resource_name("//compute.googleapis.com/projects/p/regions/r/addresses/a");
        assert_eq!(parsed.kind.as_deref(), Some("gcp.compute.address"));
        assert_eq!(
            (parsed.project.as_deref(), parsed.location.as_deref()),
            (Some("p"), Some("r"))
        );
        assert_eq!(
            parse_resource_name("//cloudresourcemanager.googleapis.com/folders/9")
                .kind
                .as_deref(),
            Some("gcp.folder")
        );
        assert_eq!(
            parse_resource_name("//iam.googleapis.com/projects/p/serviceAccounts/x")
                .kind
                .as_deref(),
            Some("gcp.service_account")
        );
        assert_eq!(
            parse_resource_name("//compute.googleapis.com/projects/p/global/backendServices/b")
                .kind
                .as_deref(),
            Some("gcp.compute.backend_service")
        );
        assert_eq!(
            parse_resource_name("").kind.as_deref(),
            Some("gcp.resource")
        );
        assert_eq!(
            parse_resource_name("//x.googleapis.com/a").kind.as_deref(),
            Some("gcp.x")
        );
    }

    #[test]
    fn missing_fields_and_bad_data_are_named() {
        let err = error_of(SourceKind::GcpScc.normalize(br#"{"notificationConfigName":"x"}"#));
        assert!(err.contains("`finding`"), "{err}");
        let err = error_of(SourceKind::GcpScc.normalize(br#"{"finding":{"category":"X"}}"#));
        assert!(err.contains("`finding.name`"), "{err}");
        let err = error_of(SourceKind::GcpScc.normalize(br#"{"message":{"messageId":"1"}}"#));
        assert!(err.contains("`message.data`"), "{err}");
        let err = error_of(SourceKind::GcpScc.normalize(br#"{"message":{"data":"!!!"}}"#));
        assert!(err.contains("not base64"), "{err}");
        let data = STANDARD.encode(br#"{"finding":{"name":"n"}}"#);
        let err = error_of(
            SourceKind::GcpScc
                .normalize(format!(r#"{{"message":{{"data":"{data}"}}}}"#).as_bytes()),
        );
        assert!(err.contains("`message.data.finding.category`"), "{err}");
        let data = STANDARD.encode(b"not json");
        let err = error_of(
            SourceKind::GcpScc
                .normalize(format!(r#"{{"message":{{"data":"{data}"}}}}"#).as_bytes()),
        );
        assert!(err.contains("does not hold JSON"), "{err}");
    }

    #[test]
    fn a_finding_about_a_service_account_key_is_about_its_account() {
        let key = "//iam.googleapis.com/projects/shop-prod/serviceAccounts/ci@shop-prod.iam.gserviceaccount.com/keys/0123abcd";
        let body = json!({ "finding": {
            "name": "organizations/1/sources/2/findings/3",
            "category": "Initial Access: Leaked service account key",
            "resourceName": key,
            "state": "ACTIVE",
        }});
        let a = &SourceKind::GcpScc
            .normalize(body.to_string().as_bytes())
            .expect("normalizes")[0];
        assert_eq!(a.resource.kind.as_deref(), Some("gcp.service_account"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some(
                "//iam.googleapis.com/projects/shop-prod/serviceAccounts/ci@shop-prod.iam.gserviceaccount.com"
            )
        );
        assert_eq!(
            a.resource.name.as_deref(),
            Some("ci@shop-prod.iam.gserviceaccount.com")
        );
        assert_eq!(a.resource.account.as_deref(), Some("shop-prod"));
        assert_eq!(a.labels["gcp.service_account_key"], key);
        assert_eq!(
            a.labels["gcp.service_account"],
            "ci@shop-prod.iam.gserviceaccount.com"
        );
        assert_eq!(
            service_account_key("//iam.googleapis.com/projects/p/roles/r/keys/k"),
            None
        );
    }
}
