//! AWS Security Hub findings in the AWS Security Finding Format (ASFF).
//!
//! Shapes, one alert per finding:
//!
//! - the EventBridge event `Security Hub Findings - Imported` (or `- Custom Action`), findings in
//!   `detail.findings[]`;
//! - a `{"Findings": [...]}` object (a `GetFindings` answer or a `BatchImportFindings` request);
//! - a JSON array of findings;
//! - a bare finding (`SchemaVersion`, `Id`, `GeneratorId`, `Severity`, `Resources`, ...).
//!
//! Each alert's `raw` is the exact text of its finding.
//!
//! Follows the ASFF reference
//! (<https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-findings-format.html>) and
//! the EventBridge formats
//! (<https://docs.aws.amazon.com/securityhub/latest/userguide/securityhub-cwe-event-formats.html>).
//!
//! | Alert field | From |
//! |---|---|
//! | kind | `GeneratorId` (the control or rule, `aws-foundational-security-best-practices/v/1.0.0/EC2.2`), else `Types[0]` |
//! | severity | `Severity.Normalized` (0–100), else `Severity.Label`; native is the label when present |
//! | resource | `Resources[0]`, see [`resource_kind`] and [`resource_id`] |
//! | actor | the principal of an `AwsIamAccessKey` resource |
//! | network | `Network` (its direction decides which side is remote), else `Action.*.RemoteIpDetails` |
//! | state | `Workflow.Status` (else the older `WorkflowState`): `RESOLVED` is `resolved`, `SUPPRESSED` `suppressed`; else `RecordState` `ARCHIVED` (the product no longer reports it) is `resolved`; else `firing` |
//! | observed_at | `LastObservedAt`, else `UpdatedAt`, else `CreatedAt` |
//! | dedup_key | `aws.securityhub:` + `Id` |

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, path, text};
use super::{FormatError, SourceKind, identity};
use crate::alert::{Actor, Alert, AlertState, Network, Resource, Severity};

/// What the EventBridge envelope knows when a finding does not say.
#[derive(Default)]
struct Envelope {
    region: Option<String>,
    account: Option<String>,
}

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    if body.is_array() {
        return split(raw, "", &Envelope::default());
    }
    json::object(&body, "a Security Hub finding or EventBridge event")?;
    if get(&body, "detail").is_some() || get(&body, "detail-type").is_some() {
        let envelope = Envelope {
            region: text(&body, "region"),
            account: text(&body, "account"),
        };
        let detail = json::member(raw, "detail")?.ok_or_else(|| FormatError::missing("detail"))?;
        let findings = json::member(&detail, "findings")
            .map_err(|_| FormatError::new("`detail` must be a JSON object"))?
            .ok_or_else(|| FormatError::missing("detail.findings"))?;
        return split(&findings, "detail.findings", &envelope);
    }
    if let Some(findings) = json::member(raw, "Findings")? {
        return split(&findings, "Findings", &Envelope::default());
    }
    Ok(vec![finding(
        raw.to_owned(),
        &body,
        "",
        &Envelope::default(),
    )?])
}

/// One alert per finding of the array `raw` (named `at` in errors).
fn split(raw: &RawValue, at: &str, envelope: &Envelope) -> Result<Vec<Alert>, FormatError> {
    let shown = if at.is_empty() {
        "the payload".to_owned()
    } else {
        format!("`{at}`")
    };
    json::map_elements(raw, &shown, at, |item, value, at| {
        finding(item, value, at, envelope)
    })
}

fn finding(
    raw: Box<RawValue>,
    f: &Value,
    at: &str,
    envelope: &Envelope,
) -> Result<Alert, FormatError> {
    json::object(f, &json::located("the finding", at))?;
    let id = json::required_text(f, "Id", &format!("{at}Id"))?;
    let kind = first_text(f, &["GeneratorId", "Types.0"])
        .ok_or_else(|| FormatError::missing(&format!("{at}GeneratorId")))?;

    let mut alert = Alert::new(SourceKind::AwsSecurityHub.name(), kind, raw);
    alert.severity = severity(f);
    if let Some(title) = text(f, "Title") {
        alert.title = title;
    }
    alert.description = text(f, "Description");
    if let Some(at) = json::first_time(f, &["LastObservedAt", "UpdatedAt", "CreatedAt"]) {
        alert.observed_at = at;
    }
    alert.resource = resource(f, envelope);
    alert.actor = actor(f);
    alert.network = network(f);

    let label_paths: [(&str, &[&str]); 6] = [
        (
            "control_id",
            &[
                "ProductFields.ControlId",
                "Compliance.SecurityControlId",
                "ProductFields.RuleId",
            ],
        ),
        ("compliance_status", &["Compliance.Status"]),
        ("workflow_status", &["Workflow.Status", "WorkflowState"]),
        ("record_state", &["RecordState"]),
        (
            "product",
            &["ProductName", "ProductFields.aws/securityhub/ProductName"],
        ),
        ("type", &["Types.0"]),
    ];
    for (label, paths) in label_paths {
        if let Some(value) = first_text(f, paths) {
            alert.labels.insert(label.to_owned(), value);
        }
    }
    (alert.state, alert.source_state) = state(f);
    alert.dedup_key = format!("aws.securityhub:{id}");
    Ok(alert)
}

/// The finding's state at the source and the word that decided it: the workflow status a person
/// or automation set, else the record state the product set.
fn state(f: &Value) -> (AlertState, Option<String>) {
    let workflow = first_text(f, &["Workflow.Status", "WorkflowState"]);
    match workflow.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("RESOLVED") => return (AlertState::Resolved, workflow),
        Some("SUPPRESSED") => return (AlertState::Suppressed, workflow),
        _ => {}
    }
    let record = text(f, "RecordState");
    if record
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("ARCHIVED"))
    {
        return (AlertState::Resolved, record);
    }
    (AlertState::Firing, workflow.or(record))
}

/// `Severity.Normalized` on its 0–100 scale, else the label's word. The label (`MEDIUM`) is what
/// the console shows, so it is the native value whenever the finding has one.
fn severity(f: &Value) -> Severity {
    let label = text(f, "Severity.Label");
    let normalized = path(f, "Severity.Normalized");
    match (normalized.and_then(json::number), label) {
        (Some(score), Some(label)) => Severity::from_scaled(score, 100.0, label),
        (Some(score), None) => Severity::from_scaled(
            score,
            100.0,
            normalized.and_then(json::as_text).unwrap_or_default(),
        ),
        (None, Some(label)) => Severity::from_label(&label),
        (None, None) => Severity::new(5, ""),
    }
}

/// The first of `Resources`; a finding without one is about its account.
fn resource(f: &Value, envelope: &Envelope) -> Resource {
    let account = text(f, "AwsAccountId").or_else(|| envelope.account.clone());
    let region = || text(f, "Region").or_else(|| envelope.region.clone());
    let Some(r) = path(f, "Resources.0") else {
        return Resource {
            kind: Some("aws.account".into()),
            id: account.clone(),
            region: region(),
            account,
            name: None,
        };
    };
    let asff_type = text(r, "Type").unwrap_or_default();
    let kind = resource_kind(&asff_type);
    let details = get(r, "Details").and_then(|d| get(d, &asff_type));
    Resource {
        id: text(r, "Id").map(|id| resource_id(&kind, id)),
        kind: Some(kind),
        region: text(r, "Region").or_else(region),
        account,
        name: details.and_then(|d| first_text(d, &["UserName", "GroupName", "RoleName", "Name"])),
    }
}

/// Cordon's resource kind for an ASFF resource type; types without a mapping become `aws.` and
/// the type without its `Aws` prefix, lowercased (`AwsLambdaFunction` → `aws.lambdafunction`).
fn resource_kind(asff_type: &str) -> String {
    let known = match asff_type {
        "AwsEc2Instance" => "aws.ec2.instance",
        "AwsEc2SecurityGroup" => "aws.ec2.security_group",
        "AwsIamUser" => "aws.iam.user",
        "AwsIamRole" => "aws.iam.role",
        "AwsIamAccessKey" => "aws.iam.access_key",
        "AwsS3Bucket" => "aws.s3.bucket",
        "AwsEksCluster" => "aws.eks.cluster",
        "AwsAccount" | "" => "aws.account",
        other => {
            let bare = other.strip_prefix("Aws").unwrap_or(other);
            return format!("aws.{}", bare.to_ascii_lowercase());
        }
    };
    known.to_owned()
}

/// The id the service's own API takes, which is what playbooks pass to actions: ASFF gives ARNs,
/// so an instance becomes `i-…`, a security group `sg-…`, a bucket its name and an account its
/// number. Other resources keep the ARN (IAM principals are named by ARN across Cordon).
fn resource_id(kind: &str, id: String) -> String {
    let short = match kind {
        "aws.ec2.instance" | "aws.ec2.security_group" if id.starts_with("arn:") => {
            id.rsplit('/').next()
        }
        "aws.s3.bucket" if id.starts_with("arn:") => id.rsplit(':').next(),
        // `AWS::::Account:111111111111`
        "aws.account" => id
            .rsplit(':')
            .next()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        _ => None,
    };
    match short {
        Some(short) if !short.is_empty() => short.to_owned(),
        _ => id,
    }
}

/// The principal behind an access-key resource (GuardDuty findings imported into Security Hub
/// carry one).
fn actor(f: &Value) -> Option<Actor> {
    let r = path(f, "Resources.0")?;
    let details = path(r, "Details.AwsIamAccessKey")?;
    let name = first_text(details, &["PrincipalName", "UserName"]);
    let id = name.clone().or_else(|| text(details, "PrincipalId"))?;
    let kind = match text(details, "PrincipalType")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "iamuser" => "aws.iam.user",
        "assumedrole" | "role" => "aws.iam.role",
        "root" => "aws.root",
        "federateduser" => "aws.sts.federated_user",
        _ => "aws.principal",
    };
    let account =
        first_text(r, &["Details.AwsIamAccessKey.AccountId"]).or_else(|| text(f, "AwsAccountId"));
    Some(Actor {
        kind: Some(kind.into()),
        key: identity::aws(kind, account.as_deref(), name.as_deref()),
        id: Some(id),
        name,
    })
}

/// `Network`: the source is the remote side, unless `Direction` is `OUT`. Findings that describe
/// an action instead (`Action.NetworkConnectionAction`, ...) name the remote party there.
fn network(f: &Value) -> Network {
    let ip = |v: &Value, paths: &[&str]| paths.iter().find_map(|p| json::ip_at(v, p));
    let Some(n) = get(f, "Network") else {
        let Some(action) = get(f, "Action") else {
            return Network::default();
        };
        return Network {
            remote_ip: ip(
                action,
                &[
                    "NetworkConnectionAction.RemoteIpDetails.IpAddressV4",
                    "AwsApiCallAction.RemoteIpDetails.IpAddressV4",
                    "PortProbeAction.PortProbeDetails.0.RemoteIpDetails.IpAddressV4",
                ],
            ),
            remote_port: path(action, "NetworkConnectionAction.RemotePortDetails.Port")
                .and_then(json::port),
            local_ip: None,
            domain: text(action, "DnsRequestAction.Domain"),
        };
    };
    let outbound = text(n, "Direction").is_some_and(|d| d.eq_ignore_ascii_case("OUT"));
    let (remote, local) = if outbound {
        ("Destination", "Source")
    } else {
        ("Source", "Destination")
    };
    Network {
        remote_ip: ip(n, &[&format!("{remote}IpV4"), &format!("{remote}IpV6")]),
        remote_port: get(n, &format!("{remote}Port")).and_then(json::port),
        local_ip: ip(n, &[&format!("{local}IpV4"), &format!("{local}IpV6")]),
        domain: text(n, &format!("{remote}Domain")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, assert_raw_is_body, error_of, fixture, value};
    use crate::alert::{Alert, AlertState};
    use crate::intake::formats::SourceKind;

    /// The bare IAM.3 fixture with `change` applied to it, normalized.
    fn changed(change: impl Fn(&mut serde_json::Value)) -> Alert {
        let mut finding = value(&fixture(
            "aws_securityhub/asff_finding_afsbp_iam.3_access_keys.json",
        ));
        change(&mut finding);
        let body = serde_json::to_vec(&finding).expect("JSON");
        let mut alerts = SourceKind::AwsSecurityHub
            .normalize(&body)
            .expect("normalizes");
        alerts.remove(0)
    }

    #[test]
    fn the_workflow_status_and_record_state_say_where_the_finding_stands() {
        let new = changed(|_| {});
        assert_eq!(
            (new.state, new.source_state.as_deref()),
            (AlertState::Firing, Some("NEW"))
        );
        let resolved = changed(|f| f["Workflow"]["Status"] = json!("RESOLVED"));
        assert_eq!(
            (resolved.state, resolved.source_state.as_deref()),
            (AlertState::Resolved, Some("RESOLVED"))
        );
        assert_eq!(resolved.dedup_key, new.dedup_key, "follows the new finding");
        let suppressed = changed(|f| f["Workflow"]["Status"] = json!("SUPPRESSED"));
        assert_eq!(suppressed.state, AlertState::Suppressed);
        let notified = changed(|f| f["Workflow"]["Status"] = json!("NOTIFIED"));
        assert_eq!(notified.state, AlertState::Firing);
        // The product archived it (the control passes, the resource is gone) while the workflow
        // still says NEW.
        let archived = changed(|f| f["RecordState"] = json!("ARCHIVED"));
        assert_eq!(
            (archived.state, archived.source_state.as_deref()),
            (AlertState::Resolved, Some("ARCHIVED"))
        );
        // The older field, before `Workflow` existed.
        let older = changed(|f| {
            f.as_object_mut().expect("object").remove("Workflow");
            f["WorkflowState"] = json!("RESOLVED");
        });
        assert_eq!(older.state, AlertState::Resolved);
    }

    fn normalize(name: &str) -> (Vec<Alert>, Vec<u8>) {
        let body = fixture(&format!("aws_securityhub/{name}"));
        let alerts = SourceKind::AwsSecurityHub
            .normalize(&body)
            .expect("normalizes");
        for a in &alerts {
            assert_eq!(a.source, "aws.securityhub");
            assert_eq!(a.resource.account.as_deref(), Some("111111111111"));
            assert_eq!(a.resource.region.as_deref(), Some("us-east-1"));
        }
        (alerts, body)
    }

    #[test]
    fn bare_finding_iam_user_access_keys() {
        let (alerts, body) = normalize("asff_finding_afsbp_iam.3_access_keys.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(
            a.kind,
            "aws-foundational-security-best-practices/v/1.0.0/IAM.3"
        );
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (4, "MEDIUM")
        );
        assert_eq!(
            a.title,
            "IAM.3 IAM users' access keys should be rotated every 90 days or less"
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("arn:aws:iam::111111111111:user/test-admin2")
        );
        assert_eq!(a.resource.name.as_deref(), Some("test-admin2"));
        assert!(a.actor.is_none());
        assert!(a.is_identity());
        assert_eq!(
            a.labels.get("control_id").map(String::as_str),
            Some("IAM.3")
        );
        assert_eq!(
            a.labels.get("compliance_status").map(String::as_str),
            Some("FAILED")
        );
        assert_eq!(a.observed_at.to_rfc3339(), "2022-01-24T14:16:38.468+00:00");
        assert_eq!(
            a.dedup_key,
            "aws.securityhub:arn:aws:securityhub:us-east-1:111111111111:subscription/aws-foundational-security-best-practices/v/1.0.0/IAM.3/finding/882c084c-8772-446e-9c3b-e926c4a1a8ef"
        );
    }

    #[test]
    fn bare_finding_default_security_group() {
        let (alerts, body) = normalize("asff_finding_afsbp_ec2.2_default_sg.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(
            a.kind,
            "aws-foundational-security-best-practices/v/1.0.0/EC2.2"
        );
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (0, "INFORMATIONAL")
        );
        assert_eq!(
            a.title,
            "EC2.2 The VPC default security group should not allow inbound and outbound traffic"
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.security_group"));
        assert_eq!(a.resource.id.as_deref(), Some("sg-1234123f"));
        assert_eq!(a.resource.name.as_deref(), Some("default"));
        assert_eq!(a.network.remote_ip, None);
        assert!(
            a.dedup_key
                .starts_with("aws.securityhub:arn:aws:securityhub:us-east-1:111111111111:")
        );
    }

    #[test]
    fn eventbridge_imported_ebs_default_encryption() {
        let (alerts, body) = normalize("eventbridge_imported_afsbp_ec2.7.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)["detail"]["findings"][0]);
        assert_eq!(
            a.kind,
            "aws-foundational-security-best-practices/v/1.0.0/EC2.7"
        );
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (0, "INFORMATIONAL")
        );
        assert_eq!(a.title, "EC2.7 EBS default encryption should be enabled");
        assert_eq!(a.resource.kind.as_deref(), Some("aws.account"));
        assert_eq!(a.resource.id.as_deref(), Some("111111111111"));
        assert_eq!(
            a.labels.get("control_id").map(String::as_str),
            Some("EC2.7")
        );
    }

    #[test]
    fn eventbridge_imported_cis_access_key_rotation() {
        let (alerts, body) = normalize("eventbridge_imported_cis_1.4_access_key_rotation.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)["detail"]["findings"][0]);
        assert_eq!(
            a.kind,
            "arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.4"
        );
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (4, "MEDIUM")
        );
        assert_eq!(
            a.title,
            "1.4 Ensure access keys are rotated every 90 days or less"
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.account"));
        assert_eq!(a.resource.id.as_deref(), Some("111111111111"));
        assert_eq!(a.labels.get("control_id").map(String::as_str), Some("1.4"));
        assert_eq!(
            a.labels.get("compliance_status").map(String::as_str),
            Some("WARNING")
        );
        assert_eq!(a.observed_at.to_rfc3339(), "2020-05-27T03:38:29.560+00:00");
    }

    /// An event with several findings gives one alert per finding, each with its own exact text.
    #[test]
    fn several_findings_split_into_several_alerts() {
        let one = value(&fixture(
            "aws_securityhub/asff_finding_afsbp_iam.3_access_keys.json",
        ));
        let two = value(&fixture(
            "aws_securityhub/asff_finding_afsbp_ec2.2_default_sg.json",
        ));
        let event = json!({"detail-type": "Security Hub Findings - Imported", "region": "eu-west-1",
                           "detail": {"findings": [one, two]}});
        let body = serde_json::to_vec_pretty(&event).expect("JSON");
        let alerts = SourceKind::AwsSecurityHub
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 2);
        assert_raw(&alerts[0], &body, &one);
        assert_raw(&alerts[1], &body, &two);
        assert_eq!(alerts[1].resource.id.as_deref(), Some("sg-1234123f"));

        let list = serde_json::to_vec(&json!({"Findings": [one]})).expect("JSON");
        assert_eq!(
            SourceKind::AwsSecurityHub
                .normalize(&list)
                .expect("list")
                .len(),
            1
        );
    }

    #[test]
    fn network_and_access_key_principal() {
        let finding = json!({
            "Id": "f-1", "GeneratorId": "gd", "Severity": {"Label": "HIGH"},
            "Network": {"Direction": "IN", "SourceIpV4": "203.0.113.9", "SourcePort": 4444,
                        "DestinationIpV4": "10.0.0.5"},
            "Resources": [{"Type": "AwsIamAccessKey", "Id": "AKIA1",
                           "Details": {"AwsIamAccessKey": {"PrincipalName": "alice", "PrincipalType": "IAMUser"}}}]
        });
        let alerts = SourceKind::AwsSecurityHub
            .normalize(finding.to_string().as_bytes())
            .expect("normalizes");
        let a = &alerts[0];
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "HIGH"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(a.network.remote_port, Some(4444));
        assert_eq!(a.network.local_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.access_key"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(
            (actor.kind.as_deref(), actor.id.as_deref()),
            (Some("aws.iam.user"), Some("alice"))
        );
        assert_eq!(actor.key, None, "no account, no key");

        // With the finding's account, the key GuardDuty and CloudTrail give the same user.
        let mut in_account = finding.clone();
        in_account["AwsAccountId"] = json!("123456789012");
        let a = SourceKind::AwsSecurityHub
            .normalize(in_account.to_string().as_bytes())
            .expect("normalizes")
            .remove(0);
        assert_eq!(
            a.entity_key().as_deref(),
            Some("actor:aws:123456789012:user/alice")
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let err =
            error_of(SourceKind::AwsSecurityHub.normalize(br#"{"detail-type":"x","detail":{}}"#));
        assert!(err.contains("`detail.findings`"), "{err}");
        let err = error_of(
            SourceKind::AwsSecurityHub
                .normalize(br#"{"detail":{"findings":[{"Id":"a","GeneratorId":"g"},{}]}}"#),
        );
        assert!(err.contains("`detail.findings[1].Id`"), "{err}");
        let err = error_of(SourceKind::AwsSecurityHub.normalize(br#"{"Id":"a"}"#));
        assert!(err.contains("`GeneratorId`"), "{err}");
        let err = error_of(SourceKind::AwsSecurityHub.normalize(br#"{"rule":"x"}"#));
        assert!(err.contains("`Id`"), "{err}");
        let err = error_of(SourceKind::AwsSecurityHub.normalize(br#"{"detail":{"findings":[1]}}"#));
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = error_of(SourceKind::AwsSecurityHub.normalize(br#"{"detail":{"findings":{}}}"#));
        assert!(err.contains("must be a JSON array"), "{err}");
        let err = error_of(SourceKind::AwsSecurityHub.normalize(br#"{"detail":7}"#));
        assert!(err.contains("`detail`"), "{err}");
    }
}
