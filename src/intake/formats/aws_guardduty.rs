//! Amazon GuardDuty findings.
//!
//! Two shapes, both holding the finding in GuardDuty's lowerCamelCase wire format (the
//! `GetFindings` finding object):
//!
//! - the EventBridge event GuardDuty emits, `{"detail-type": "GuardDuty Finding", "detail":
//!   <finding>, "region", "account", ...}` (also what an SNS topic behind that EventBridge rule
//!   carries in `Message`; the SNS layer unwraps it before this normalizer runs);
//! - a bare finding (`schemaVersion`, `accountId`, `type`, `severity`, `resource`, `service`), as
//!   exported to S3 or forwarded by log shippers.
//!
//! Keys match in any case, so boto3's PascalCase export reads too.
//!
//! Follows the EventBridge event format
//! (<https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings_eventbridge.html>) and the
//! finding reference (<https://docs.aws.amazon.com/guardduty/latest/APIReference/API_Finding.html>).
//!
//! | Alert field | From |
//! |---|---|
//! | kind | `type` (`UnauthorizedAccess:EC2/TorRelay`) |
//! | severity | `severity` on GuardDuty's 0–10 scale; native is the number as written |
//! | resource | by `resource.resourceType`, see [`resource`] |
//! | actor | `resource.accessKeyDetails`, or the Kubernetes user of an EKS finding |
//! | network | `service.action.*.remoteIpDetails` (the first port probe for port probes) |
//! | state | `suppressed` when `service.archived` is true (archived by hand or by a suppression rule), else `firing` |
//! | observed_at | `updatedAt`, else `service.eventLastSeen`, else the event's `time` |
//! | dedup_key | `aws.guardduty:` + finding `id` |

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, path, text};
use super::{FormatError, SourceKind, identity, kubernetes};
use crate::alert::{Actor, Alert, AlertState, Network, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let event = json::parse(raw)?;
    json::object(&event, "a GuardDuty finding or EventBridge event")?;
    let is_event = get(&event, "detail-type").is_some() || get(&event, "detail").is_some();
    let (finding, at) = if is_event {
        let detail = get(&event, "detail").ok_or_else(|| FormatError::missing("detail"))?;
        json::object(detail, "`detail`")?;
        (detail, "detail.")
    } else {
        (&event, "")
    };

    let kind = json::required_text(finding, "type", &format!("{at}type"))?;
    let severity =
        get(finding, "severity").ok_or_else(|| FormatError::missing(&format!("{at}severity")))?;
    let score = json::number(severity).ok_or_else(|| {
        FormatError::new(format!(
            "`{at}severity` must be a number, got {}",
            json::kind_of(severity)
        ))
    })?;

    let mut alert = Alert::new(SourceKind::AwsGuardDuty.name(), kind, raw.to_owned());
    alert.severity =
        Severity::from_scaled(score, 10.0, json::as_text(severity).unwrap_or_default());
    if let Some(title) = text(finding, "title") {
        alert.title = title;
    }
    alert.description = text(finding, "description");
    if let Some(at) = json::first_time(finding, &["updatedAt", "service.eventLastSeen"])
        .or_else(|| json::first_time(&event, &["time"]).filter(|_| is_event))
    {
        alert.observed_at = at;
    }

    alert.resource = resource(finding, &mut alert.labels);
    if alert.resource.region.is_none() && is_event {
        alert.resource.region = text(&event, "region");
    }
    if alert.resource.account.is_none() && is_event {
        alert.resource.account = text(&event, "account");
    }
    alert.actor = actor(finding);
    let (network, remote_ips) = network(finding);
    alert.network = network;

    let labels = &mut alert.labels;
    let label_paths = [
        ("resource_type", "resource.resourceType"),
        ("action_type", "service.action.actionType"),
        ("resource_role", "service.resourceRole"),
        ("feature", "service.featureName"),
        ("count", "service.count"),
        ("finding_arn", "arn"),
    ];
    json::copy_labels(labels, finding, &label_paths);
    if remote_ips.len() > 1 {
        labels.insert("remote_ips".to_owned(), remote_ips.join(","));
    }
    // Findings made by "Generate sample findings" say so; a responder wants to know before acting.
    if path(finding, "service.additionalInfo.sample").and_then(Value::as_bool) == Some(true) {
        labels.insert("sample".to_owned(), "true".to_owned());
    }
    if let Some(tags) = path(finding, "resource.instanceDetails.tags").and_then(Value::as_array) {
        for tag in tags {
            if let (Some(key), Some(value)) = (text(tag, "key"), text(tag, "value")) {
                labels.insert(format!("tag:{key}"), value);
            }
        }
    }

    // GuardDuty has no "resolved": a finding someone looked at, or a suppression rule matched, is
    // archived, and its later updates say so.
    if path(finding, "service.archived").and_then(Value::as_bool) == Some(true) {
        alert.state = AlertState::Suppressed;
        alert.source_state = Some("archived".to_owned());
    }

    if let Some(id) = text(finding, "id") {
        alert.dedup_key = format!("aws.guardduty:{id}");
    }
    Ok(vec![alert])
}

/// The resource by `resource.resourceType`: an EC2 instance by instance id, an access key by key
/// id (named after its user), an S3 bucket by name, an EKS cluster by name unless the finding names
/// a workload in it, an ECS task by ARN, a container by the pod it runs in or else its container
/// id, an RDS instance by identifier, a Lambda function by name. Other types become `aws.<type>`
/// without an id; a finding without a resource is about the account. A Kubernetes workload
/// (`kubernetesDetails.kubernetesWorkloadDetails`, as EKS Runtime Monitoring and EKS audit log
/// findings give it) is named as every source names it ([`super::kubernetes`]), with the EKS
/// cluster's name as the cluster.
fn resource(finding: &Value, labels: &mut BTreeMap<String, String>) -> Resource {
    let region = text(finding, "region");
    let account = text(finding, "accountId");
    let Some(r) = get(finding, "resource") else {
        return Resource {
            kind: Some("aws.account".into()),
            id: account.clone(),
            region,
            account,
            name: None,
        };
    };
    let resource_type = text(r, "resourceType").unwrap_or_default();
    if let Some(workload) = workload(r, labels) {
        return Resource {
            region,
            account,
            ..workload
        };
    }
    let (kind, id, name) = match resource_type.to_ascii_lowercase().as_str() {
        "instance" => (
            "aws.ec2.instance".to_owned(),
            text(r, "instanceDetails.instanceId"),
            name_tag(path(r, "instanceDetails.tags")),
        ),
        "accesskey" => (
            "aws.iam.access_key".to_owned(),
            text(r, "accessKeyDetails.accessKeyId"),
            text(r, "accessKeyDetails.userName"),
        ),
        "s3bucket" => (
            "aws.s3.bucket".to_owned(),
            text(r, "s3BucketDetails.0.name"),
            None,
        ),
        "ekscluster" => (
            "aws.eks.cluster".to_owned(),
            text(r, "eksClusterDetails.name"),
            None,
        ),
        "ecscluster" => match text(r, "ecsClusterDetails.taskDetails.arn") {
            Some(task) => (
                "aws.ecs.task".to_owned(),
                Some(task),
                text(r, "ecsClusterDetails.name"),
            ),
            None => (
                "aws.ecs.cluster".to_owned(),
                text(r, "ecsClusterDetails.name"),
                None,
            ),
        },
        "container" => container(r),
        "rdsdbinstance" => (
            "aws.rds.db_instance".to_owned(),
            text(r, "rdsDbInstanceDetails.dbInstanceIdentifier"),
            None,
        ),
        "lambda" => (
            "aws.lambda.function".to_owned(),
            text(r, "lambdaDetails.functionName"),
            None,
        ),
        "" => ("aws.account".to_owned(), account.clone(), None),
        other => (format!("aws.{other}"), None, None),
    };
    Resource {
        kind: Some(kind),
        id,
        region,
        account,
        name,
    }
}

/// The Kubernetes workload a finding names (`kubernetesWorkloadDetails`: name, namespace, type),
/// in the EKS cluster it names.
fn workload(r: &Value, labels: &mut BTreeMap<String, String>) -> Option<Resource> {
    let workload = path(r, "kubernetesDetails.kubernetesWorkloadDetails")?;
    let name = text(workload, "name")?;
    let namespace = text(workload, "namespace")?;
    let kind = text(workload, "type").unwrap_or_default();
    let cluster = kubernetes::cluster(text(r, "eksClusterDetails.name"));
    Some(
        kubernetes::Workload {
            cluster: cluster.as_deref(),
            namespace: Some(&namespace),
            kind: &kind,
            name: &name,
        }
        .resource(labels),
    )
}

/// A container: the ECS task it belongs to when the finding says, else the container itself (as
/// GuardDuty's malware scans of EBS volumes report it). A container in a Kubernetes pod is the pod
/// ([`workload`]).
fn container(r: &Value) -> (String, Option<String>, Option<String>) {
    if let Some(task) = text(r, "ecsClusterDetails.taskDetails.arn") {
        return (
            "aws.ecs.task".to_owned(),
            Some(task),
            text(r, "containerDetails.name"),
        );
    }
    (
        "container".to_owned(),
        text(r, "containerDetails.id"),
        text(r, "containerDetails.name"),
    )
}

/// The `Name` tag of an EC2 instance, which is what people call it.
fn name_tag(tags: Option<&Value>) -> Option<String> {
    tags?
        .as_array()?
        .iter()
        .find(|t| text(t, "key").as_deref() == Some("Name"))
        .and_then(|t| text(t, "value"))
}

/// Who acted: for Kubernetes findings the Kubernetes user (who made the API call); otherwise the
/// principal of `accessKeyDetails`, identified by user name (GuardDuty gives no ARN), else
/// principal id.
fn actor(finding: &Value) -> Option<Actor> {
    let r = get(finding, "resource")?;
    if let Some(user) = text(r, "kubernetesDetails.kubernetesUserDetails.username") {
        return Some(Actor {
            kind: Some("k8s.user".into()),
            id: Some(user.clone()),
            name: Some(user),
            ..Actor::default()
        });
    }
    let key = get(r, "accessKeyDetails")?;
    let name = text(key, "userName");
    let id = name.clone().or_else(|| text(key, "principalId"))?;
    let kind = match text(key, "userType")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "iamuser" => "aws.iam.user",
        "role" | "assumedrole" => "aws.iam.role",
        "root" => "aws.root",
        "federateduser" => "aws.sts.federated_user",
        _ => "aws.principal",
    };
    let account = text(finding, "accountId");
    Some(Actor {
        kind: Some(kind.into()),
        key: identity::aws(kind, account.as_deref(), name.as_deref()),
        id: Some(id),
        name,
    })
}

/// Where each action type keeps the remote party.
const REMOTE_DETAILS: [&str; 5] = [
    "networkConnectionAction.remoteIpDetails",
    "awsApiCallAction.remoteIpDetails",
    "kubernetesApiCallAction.remoteIpDetails",
    "rdsLoginAttemptAction.remoteIpDetails",
    "portProbeAction.portProbeDetails.0.remoteIpDetails",
];

/// The network facts of `service.action`, and every remote address a port probe lists.
fn network(finding: &Value) -> (Network, Vec<String>) {
    let Some(action) = path(finding, "service.action") else {
        return (Network::default(), Vec::new());
    };
    let address = |details: &Value| {
        first_text(details, &["ipAddressV4", "ipAddressV6"])
            .as_deref()
            .and_then(json::ip)
    };
    let remote_ip = REMOTE_DETAILS
        .iter()
        .filter_map(|p| path(action, p))
        .find_map(address);
    let probes = path(action, "portProbeAction.portProbeDetails").and_then(Value::as_array);
    let remote_ips = probes
        .into_iter()
        .flatten()
        .filter_map(|probe| get(probe, "remoteIpDetails").and_then(address))
        .collect();
    let network = Network {
        remote_ip,
        remote_port: path(action, "networkConnectionAction.remotePortDetails.port")
            .and_then(json::port),
        local_ip: [
            "networkConnectionAction.localIpDetails",
            "portProbeAction.portProbeDetails.0.localIpDetails",
        ]
        .iter()
        .filter_map(|p| path(action, p))
        .find_map(address),
        domain: first_text(
            action,
            &[
                "dnsRequestAction.domain",
                "awsApiCallAction.domainDetails.domain",
            ],
        ),
    };
    (network, remote_ips)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::json::testing::{assert_raw_is_body, error_of, fixture, value};
    use crate::alert::{Alert, AlertState};
    use crate::intake::formats::SourceKind;

    #[test]
    fn an_archived_finding_is_suppressed_and_follows_its_active_self() {
        let name =
            "aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json";
        let body = fixture(name);
        let active = &SourceKind::AwsGuardDuty.normalize(&body).expect("active")[0];
        assert_eq!(active.state, AlertState::Firing);
        assert_eq!(active.source_state, None);
        // The same finding once archived: GuardDuty's `service.archived` turns true.
        let mut archived = value(&body);
        archived["service"]["archived"] = Value::Bool(true);
        let body = serde_json::to_vec(&archived).expect("JSON");
        let a = &SourceKind::AwsGuardDuty.normalize(&body).expect("archived")[0];
        assert_eq!(a.state, AlertState::Suppressed);
        assert_eq!(a.source_state.as_deref(), Some("archived"));
        assert_eq!(a.dedup_key, active.dedup_key);
    }

    fn one(name: &str) -> (Alert, Vec<u8>) {
        let body = fixture(&format!("aws_guardduty/{name}"));
        let mut alerts = SourceKind::AwsGuardDuty
            .normalize(&body)
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let alert = alerts.remove(0);
        assert_raw_is_body(&alert, &body);
        assert_eq!(alert.source, "aws.guardduty");
        assert_eq!(alert.resource.region.as_deref(), Some("eu-west-2"));
        assert_eq!(alert.resource.account.as_deref(), Some("111111111111"));
        assert_eq!(alert.labels.get("sample").map(String::as_str), Some("true"));
        (alert, body)
    }

    #[test]
    fn ec2_tor_relay() {
        let (a, _) = one("sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json");
        assert_eq!(a.kind, "UnauthorizedAccess:EC2/TorRelay");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (8, "8"));
        assert_eq!(
            a.title,
            "EC2 instance i-99999999 is communicating with a Tor Exit node."
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.instance"));
        assert_eq!(a.resource.id.as_deref(), Some("i-99999999"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(a.network.remote_port, Some(80));
        assert_eq!(a.network.local_ip.as_deref(), Some("10.0.0.23"));
        assert!(a.actor.is_none());
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:00f996e6c7804e4c8b4b61e60f5fc423"
        );
        assert_eq!(a.observed_at.to_rfc3339(), "2023-03-20T15:33:12.408+00:00");
        assert_eq!(
            a.labels.get("action_type").map(String::as_str),
            Some("NETWORK_CONNECTION")
        );
        assert_eq!(
            a.labels
                .get("tag:GeneratedFindingInstanceTag1")
                .map(String::as_str),
            Some("GeneratedFindingInstanceValue1")
        );
    }

    #[test]
    fn ec2_port_probe_lists_every_prober() {
        let (a, _) =
            one("sekoia_detail_instance_portprobe__Recon_EC2_PortProbeUnprotectedPort.json");
        assert_eq!(a.kind, "Recon:EC2/PortProbeUnprotectedPort");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (2, "2"));
        assert_eq!(
            a.title,
            "Unprotected port on EC2 instance i-99999999 is being probed."
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.instance"));
        assert_eq!(a.resource.id.as_deref(), Some("i-99999999"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(a.network.local_ip.as_deref(), Some("10.0.0.23"));
        assert_eq!(
            a.labels.get("remote_ips").map(String::as_str),
            Some("198.51.100.0,198.51.100.1")
        );
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:ae7f69675d8744f78ab7ab2aab229d30"
        );
    }

    #[test]
    fn iam_malicious_ip_caller() {
        let (a, _) = one(
            "sekoia_detail_accesskey_apicall__UnauthorizedAccess_IAMUser_MaliciousIPCaller.json",
        );
        assert_eq!(a.kind, "UnauthorizedAccess:IAMUser/MaliciousIPCaller");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (5, "5"));
        assert_eq!(
            a.title,
            "API GeneratedFindingAPIName was invoked from a known malicious IP address."
        );
        assert_eq!(
            a.description.as_deref(),
            Some(
                "API GeneratedFindingAPIName was invoked from a malicious IP address 198.51.100.0."
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.access_key"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("GeneratedFindingAccessKeyId")
        );
        assert_eq!(a.resource.name.as_deref(), Some("GeneratedFindingUserName"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(actor.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(actor.id.as_deref(), Some("GeneratedFindingUserName"));
        // The finding's account qualifies the user name, as CloudTrail's ARN does.
        assert_eq!(
            actor.key.as_deref(),
            Some("aws:111111111111:user/GeneratedFindingUserName")
        );
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert!(a.is_identity());
        assert_eq!(
            a.entity_key().as_deref(),
            Some("actor:aws:111111111111:user/GeneratedFindingUserName")
        );
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:16dd674a4cb5437c9a66d14f11839b02"
        );
    }

    #[test]
    fn iam_anomalous_behavior_with_unknown_user_type() {
        let (a, _) = one(
            "sekoia_detail_accesskey_unusualbehavior__Exfiltration_IAMUser_AnomalousBehavior.json",
        );
        assert_eq!(a.kind, "Exfiltration:IAMUser/AnomalousBehavior");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (8, "8"));
        assert!(a.title.starts_with(
            "User GeneratedFindingUserType : GeneratedFindingUserName is anomalously"
        ));
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.access_key"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("GeneratedFindingAccessKeyId")
        );
        let actor = a.actor.as_ref().expect("actor");
        // userType is "GeneratedFindingUserType": a principal of a type Cordon does not know.
        assert_eq!(actor.kind.as_deref(), Some("aws.principal"));
        assert_eq!(actor.id.as_deref(), Some("GeneratedFindingUserName"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:53a87f7e55ce432c833e952613829048"
        );
    }

    #[test]
    fn s3_malicious_ip_caller() {
        let (a, _) =
            one("sekoia_detail_s3bucket_apicall__Discovery_S3_MaliciousIPCaller_Custom.json");
        assert_eq!(a.kind, "Discovery:S3/MaliciousIPCaller.Custom");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (8, "8"));
        assert_eq!(a.resource.kind.as_deref(), Some("aws.s3.bucket"));
        assert_eq!(a.resource.id.as_deref(), Some("bucketName"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(actor.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(actor.id.as_deref(), Some("GeneratedFindingUserName"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:3941673a580340dcb61648a3e15def75"
        );
    }

    #[test]
    fn eks_admin_access_to_default_service_account() {
        let (a, _) = one(
            "sekoia_detail_ekscluster__Policy_Kubernetes_AdminAccessToDefaultServiceAccount.json",
        );
        assert_eq!(
            a.kind,
            "Policy:Kubernetes/AdminAccessToDefaultServiceAccount"
        );
        assert_eq!((a.severity.score, a.severity.native.as_str()), (8, "8"));
        assert_eq!(
            a.title,
            "The default service account was granted admin privileges."
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.eks.cluster"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("GeneratedFindingEKSClusterName")
        );
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(actor.kind.as_deref(), Some("k8s.user"));
        assert_eq!(actor.id.as_deref(), Some("GeneratedFindingUserName"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(
            a.labels.get("action_type").map(String::as_str),
            Some("KUBERNETES_API_CALL")
        );
    }

    #[test]
    fn container_malware_scan() {
        let (a, _) = one("sekoia_detail_container__Execution_Container_SuspiciousFile.json");
        assert_eq!(a.kind, "Execution:Container/SuspiciousFile");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (6, "6"));
        assert_eq!(
            a.title,
            "2 security risk(s) detected including EICAR-Test-File on Container e6cf2e24515c1df7f4."
        );
        assert_eq!(a.resource.kind.as_deref(), Some("container"));
        assert_eq!(a.resource.id.as_deref(), Some("e6cf2e24515c1df7f4"));
        assert_eq!(
            a.resource.name.as_deref(),
            Some("GeneratedFindingContainerName")
        );
        assert!(a.actor.is_none());
        assert_eq!(a.network.remote_ip, None);
        assert_eq!(
            a.labels.get("feature").map(String::as_str),
            Some("EbsVolumeScan")
        );
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:16f05caa14654697a0725be23b9e1a0f"
        );
    }

    /// The SNS layer hands over the `Message` string's content; the test does that unwrapping.
    #[test]
    fn eventbridge_event_from_sns_ssh_brute_force() {
        let envelope = value(&fixture(
            "aws_guardduty/sns_wrapped_eventbridge_ec2_sshbruteforce_sample.json",
        ));
        let message = envelope["Message"].as_str().expect("Message string");
        let alerts = SourceKind::AwsGuardDuty
            .normalize(message.as_bytes())
            .expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.raw.get(), message);
        assert_eq!(a.kind, "UnauthorizedAccess:EC2/SSHBruteForce");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (2, "2"));
        assert_eq!(
            a.title,
            "198.51.100.0 is performing SSH brute force attacks against i-99999999."
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.instance"));
        assert_eq!(a.resource.id.as_deref(), Some("i-99999999"));
        assert_eq!(a.resource.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.resource.account.as_deref(), Some("785665517223"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("198.51.100.0"));
        assert_eq!(a.network.remote_port, Some(32794));
        assert_eq!(a.observed_at.to_rfc3339(), "2018-11-08T20:21:59.714+00:00");
        assert_eq!(
            a.dedup_key,
            "aws.guardduty:f0b37a7d5504bba0ec3493e776a0c54f"
        );
        assert_eq!(a.labels.get("sample").map(String::as_str), Some("true"));
    }

    #[test]
    fn event_without_a_finding_type_names_the_field() {
        let err = error_of(
            SourceKind::AwsGuardDuty
                .normalize(br#"{"detail-type":"GuardDuty Finding","detail":{}}"#),
        );
        assert!(err.contains("`detail.type`"), "{err}");
        let err =
            error_of(SourceKind::AwsGuardDuty.normalize(br#"{"detail-type":"GuardDuty Finding"}"#));
        assert!(err.contains("`detail`"), "{err}");
        let err =
            error_of(SourceKind::AwsGuardDuty.normalize(br#"{"rule":"x","priority":"Error"}"#));
        assert!(err.contains("`type`"), "{err}");
        let err = error_of(SourceKind::AwsGuardDuty.normalize(br#"{"type":"Recon:EC2/Portscan"}"#));
        assert!(err.contains("`severity`"), "{err}");
        let err = error_of(
            SourceKind::AwsGuardDuty
                .normalize(br#"{"type":"Recon:EC2/Portscan","severity":"high"}"#),
        );
        assert!(err.contains("must be a number"), "{err}");
    }

    #[test]
    fn pascal_case_and_odd_types_are_read_leniently() {
        let body = br#"{"Type":"Recon:EC2/Portscan","Severity":"5.0","Id":7,"Title":12,
            "Resource":{"ResourceType":"Instance","InstanceDetails":{"InstanceId":"i-1","Tags":"x"}},
            "Service":{"Action":{"NetworkConnectionAction":{"RemoteIpDetails":{"IpAddressV4":5}}}}}"#;
        let alerts = SourceKind::AwsGuardDuty
            .normalize(body)
            .expect("normalizes");
        let a = &alerts[0];
        assert_eq!((a.severity.score, a.severity.native.as_str()), (5, "5.0"));
        assert_eq!(a.resource.id.as_deref(), Some("i-1"));
        assert_eq!(a.title, "12");
        assert_eq!(a.dedup_key, "aws.guardduty:7");
        assert_eq!(a.network.remote_ip, None);
        let _: Value = serde_json::from_str(a.raw.get()).expect("raw JSON");
    }
}
