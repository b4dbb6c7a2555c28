//! AWS CloudTrail events.
//!
//! Shapes, one alert per record:
//!
//! - the EventBridge events `AWS API Call via CloudTrail` and `AWS Console Sign In via CloudTrail`
//!   (the record in `detail`; the alert's `raw` is the whole event);
//! - a log file, `{"Records": [...]}`, as CloudTrail writes it to S3;
//! - a JSON array of records (what `aws cloudtrail lookup-events` tooling and Stratus Red Team's
//!   detonation logs hold);
//! - a bare record (`eventName`, `eventSource`, `userIdentity`, ...).
//!
//! Follows the record reference
//! (<https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html>),
//! `userIdentity`
//! (<https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html>)
//! and the sign-in events
//! (<https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-aws-console-sign-in-events.html>).
//!
//! | Alert field | From |
//! |---|---|
//! | kind | `eventSource:eventName` (`signin.amazonaws.com:ConsoleLogin`) |
//! | severity | derived, see [`severity`]; native is `derived` |
//! | title | what happened, by whom, to what: `ConsoleLogin failed for IAM user alice` |
//! | actor | `userIdentity`, see [`principal`] |
//! | resource | see [`resource`] |
//! | network | `sourceIPAddress` when it is an address (not `cloudtrail.amazonaws.com`) |
//! | observed_at | `eventTime` |
//! | dedup_key | `aws.cloudtrail:` + `eventID` |

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, first_text, get, path, text};
use super::{FormatError, SourceKind, identity};
use crate::alert::{Actor, Alert, Network, Resource, Severity};

/// What the EventBridge envelope knows when the record does not say.
#[derive(Default)]
struct Envelope {
    region: Option<String>,
    account: Option<String>,
}

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    if body.is_array() {
        return split(raw, "");
    }
    json::object(&body, "a CloudTrail record, log file or EventBridge event")?;
    if get(&body, "detail").is_some() || get(&body, "detail-type").is_some() {
        let detail = get(&body, "detail").ok_or_else(|| FormatError::missing("detail"))?;
        let envelope = Envelope {
            region: text(&body, "region"),
            account: text(&body, "account"),
        };
        return Ok(vec![record(raw.to_owned(), detail, "detail.", &envelope)?]);
    }
    if let Some(records) = json::member(raw, "Records")? {
        return split(&records, "Records");
    }
    Ok(vec![record(
        raw.to_owned(),
        &body,
        "",
        &Envelope::default(),
    )?])
}

/// One alert per record of the array `raw` (named `at` in errors).
fn split(raw: &RawValue, at: &str) -> Result<Vec<Alert>, FormatError> {
    let shown = if at.is_empty() {
        "the payload".to_owned()
    } else {
        format!("`{at}`")
    };
    json::map_elements(raw, &shown, at, |item, value, at| {
        record(item, value, at, &Envelope::default())
    })
}

fn record(
    raw: Box<RawValue>,
    r: &Value,
    at: &str,
    envelope: &Envelope,
) -> Result<Alert, FormatError> {
    json::object(r, &json::located("the record", at))?;
    let event_name = json::required_text(r, "eventName", &format!("{at}eventName"))?;
    let event_source = json::required_text(r, "eventSource", &format!("{at}eventSource"))?;

    let principal = principal(r);
    let facts = Facts::of(r, &event_name, principal.as_ref());
    let mut alert = Alert::new(
        SourceKind::AwsCloudTrail.name(),
        format!("{event_source}:{event_name}"),
        raw,
    );
    alert.severity = Severity::new(severity(&facts), "derived");
    alert.resource = resource(r, &event_source, &event_name, principal.as_ref());
    if alert.resource.region.is_none() {
        alert.resource.region = envelope.region.clone();
    }
    if alert.resource.account.is_none() {
        alert.resource.account = envelope.account.clone();
        if alert.resource.kind.as_deref() == Some("aws.account") {
            alert.resource.id = envelope.account.clone();
        }
    }
    alert.title = title(&event_name, &facts, principal.as_ref(), &alert.resource);
    alert.description = text(r, "errorMessage").map(|m| format!("{event_name} failed: {m}"));
    if let Some(at) = json::first_time(r, &["eventTime"]) {
        alert.observed_at = at;
    }
    alert.network = Network {
        remote_ip: json::ip_at(r, "sourceIPAddress"),
        ..Network::default()
    };

    let labels = &mut alert.labels;
    let label_paths = [
        ("event_type", "eventType"),
        ("error_code", "errorCode"),
        ("console_login", "responseElements.ConsoleLogin"),
        ("mfa_used", "additionalEventData.MFAUsed"),
        ("user_agent", "userAgent"),
        ("source_ip_address", "sourceIPAddress"),
    ];
    json::copy_labels(labels, r, &label_paths);
    if let Some(cidr) = &facts.open_cidr {
        labels.insert("open_cidr".to_owned(), cidr.clone());
    }

    alert.actor = principal.map(|p| p.actor);
    if let Some(id) = text(r, "eventID") {
        alert.dedup_key = format!("aws.cloudtrail:{id}");
    }
    Ok(alert)
}

/// Who made the call: the actor, and how a title names them ("IAM user alice").
struct Principal {
    actor: Actor,
    said: String,
    root: bool,
}

/// The actor from `userIdentity`: an IAM user by ARN (principal id when the record has no ARN, as
/// failed sign-ins do), the root user, a role by its issuer's ARN (not the session, so that every
/// session of a role is one actor), a federated user, an AWS service, another account.
fn principal(r: &Value) -> Option<Principal> {
    let identity = get(r, "userIdentity")?;
    let identity_type = text(identity, "type").unwrap_or_default();
    let arn = text(identity, "arn");
    let principal_id = text(identity, "principalId");
    let account = text(identity, "accountId");
    let user_name = text(identity, "userName");
    let (key_account, key_user) = (account.clone(), user_name.clone());
    let (kind, id, name, said) = match identity_type.as_str() {
        "IAMUser" => {
            let said = format!(
                "IAM user {}",
                user_name
                    .as_deref()
                    .or(principal_id.as_deref())
                    .unwrap_or("?")
            );
            ("aws.iam.user", arn.or(principal_id), user_name, said)
        }
        "Root" => {
            let id = arn.or_else(|| account.map(|a| format!("arn:aws:iam::{a}:root")));
            (
                "aws.root",
                id,
                Some("root".to_owned()),
                "root user".to_owned(),
            )
        }
        "AssumedRole" => {
            let issuer = path(identity, "sessionContext.sessionIssuer");
            let role = issuer.and_then(|i| text(i, "userName"));
            let session = principal_id
                .as_deref()
                .and_then(|p| p.split_once(':'))
                .map(|(_, s)| s.to_owned());
            let said = match (&role, &session) {
                (Some(role), Some(session)) => format!("role {role} (session {session})"),
                (Some(role), None) => format!("role {role}"),
                (None, _) => format!("role {}", arn.as_deref().unwrap_or("?")),
            };
            let id = issuer.and_then(|i| text(i, "arn")).or(arn).or(principal_id);
            ("aws.iam.role", id, role, said)
        }
        "FederatedUser" => {
            let name = principal_id
                .as_deref()
                .and_then(|p| p.split_once(':'))
                .map(|(_, n)| n.to_owned());
            let said = format!("federated user {}", name.as_deref().unwrap_or("?"));
            ("aws.sts.federated_user", arn.or(principal_id), name, said)
        }
        "AWSService" => {
            let service = text(identity, "invokedBy");
            let said = format!("AWS service {}", service.as_deref().unwrap_or("?"));
            ("aws.service", service.clone(), service, said)
        }
        "AWSAccount" => {
            let said = format!("account {}", account.as_deref().unwrap_or("?"));
            ("aws.account", account, None, said)
        }
        other => {
            let id = arn.or(principal_id);
            let said = format!(
                "{} {}",
                if other.is_empty() { "principal" } else { other },
                id.as_deref().unwrap_or("?")
            );
            ("aws.principal", id, user_name, said)
        }
    };
    let key = match identity_type.as_str() {
        // `id` is the session issuer's ARN, else the session's own (`assumed-role/<role>/…`).
        "AssumedRole" => id.as_deref().and_then(identity::aws_from_arn).or_else(|| {
            let issuer_account = path(identity, "sessionContext.sessionIssuer.accountId")
                .and_then(json::as_text)
                .or_else(|| key_account.clone());
            identity::aws(kind, issuer_account.as_deref(), name.as_deref())
        }),
        "IAMUser" | "Root" => id
            .as_deref()
            .and_then(identity::aws_from_arn)
            .or_else(|| identity::aws(kind, key_account.as_deref(), key_user.as_deref())),
        _ => None,
    };
    let actor = Actor {
        kind: Some(kind.into()),
        id,
        name,
        key,
    };
    Some(Principal {
        actor,
        said,
        root: identity_type == "Root",
    })
}

/// What the severity and title are derived from.
struct Facts {
    /// The call failed: `errorCode` is set, or a sign-in answered `Failure`.
    failed: bool,
    /// The failure was a refusal (`AccessDenied`, `UnauthorizedOperation`, ...).
    denied: bool,
    /// A console sign-in that succeeded without MFA.
    no_mfa_login: bool,
    /// An address range open to the whole internet (`0.0.0.0/0`, `::/0`, or any `/0`) that the
    /// request added.
    open_cidr: Option<String>,
    /// The caller is the account's root user.
    root: bool,
    /// The kind of call, by name.
    class: EventClass,
}

/// Calls that weigh more than others, whatever their parameters.
#[derive(PartialEq)]
enum EventClass {
    /// Stopping or deleting the audit trail and the detectors: defense evasion.
    DefenseEvasion,
    /// New identities, keys and permissions: persistence and privilege escalation.
    IdentityChange,
    ConsoleLogin,
    OpenIngress,
    Other,
}

const DEFENSE_EVASION: [&str; 8] = [
    "StopLogging",
    "DeleteTrail",
    "UpdateTrail",
    "PutEventSelectors",
    "DeleteDetector",
    "DisableSecurityHub",
    "DeleteFlowLogs",
    "DeleteConfigurationRecorder",
];

const IDENTITY_CHANGES: [&str; 11] = [
    "CreateUser",
    "CreateAccessKey",
    "CreateLoginProfile",
    "UpdateLoginProfile",
    "AttachUserPolicy",
    "PutUserPolicy",
    "AttachRolePolicy",
    "PutRolePolicy",
    "AddUserToGroup",
    "AttachGroupPolicy",
    "UpdateAssumeRolePolicy",
];

impl Facts {
    fn of(r: &Value, event_name: &str, principal: Option<&Principal>) -> Facts {
        let error_code = text(r, "errorCode");
        let login_failed = text(r, "responseElements.ConsoleLogin")
            .is_some_and(|s| s.eq_ignore_ascii_case("Failure"));
        let is_login = event_name == "ConsoleLogin";
        let failed =
            error_code.is_some() || login_failed || (is_login && text(r, "errorMessage").is_some());
        let denied = error_code
            .as_deref()
            .is_some_and(|c| c.contains("AccessDenied") || c.contains("Unauthorized"));
        let mfa_used =
            text(r, "additionalEventData.MFAUsed").is_some_and(|s| s.eq_ignore_ascii_case("Yes"));
        let class = if DEFENSE_EVASION.contains(&event_name) {
            EventClass::DefenseEvasion
        } else if IDENTITY_CHANGES.contains(&event_name) {
            EventClass::IdentityChange
        } else if is_login {
            EventClass::ConsoleLogin
        } else if event_name == "AuthorizeSecurityGroupIngress" {
            EventClass::OpenIngress
        } else {
            EventClass::Other
        };
        let open_cidr = if class == EventClass::OpenIngress {
            get(r, "requestParameters").and_then(world_cidr)
        } else {
            None
        };
        Facts {
            failed,
            denied,
            no_mfa_login: is_login && !failed && !mfa_used,
            open_cidr,
            root: principal.is_some_and(|p| p.root),
            class,
        }
    }
}

/// A `/0` range anywhere under a `cidr…` key of the request (`cidrIp`, `cidrIpv6`, and the nested
/// `ipPermissions.items[].ipRanges.items[].cidrIp` form).
fn world_cidr(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, v)| match v {
            Value::String(s)
                if k.to_ascii_lowercase().starts_with("cidr") && s.trim().ends_with("/0") =>
            {
                Some(s.trim().to_owned())
            }
            other => world_cidr(other),
        }),
        Value::Array(items) => items.iter().find_map(world_cidr),
        _ => None,
    }
}

/// CloudTrail records carry no severity, so Cordon derives one (native value `derived`):
///
/// | Record | Score |
/// |---|---|
/// | anything done as the root user | 8 |
/// | a failed root sign-in | 6 |
/// | `StopLogging`, `DeleteTrail`, `UpdateTrail`, `PutEventSelectors`, `DeleteDetector`, `DisableSecurityHub`, `DeleteFlowLogs`, `DeleteConfigurationRecorder` | 8 |
/// | `AuthorizeSecurityGroupIngress` opening a range to the internet (`/0`) | 7 |
/// | `CreateUser`, `CreateAccessKey`, `CreateLoginProfile`, `UpdateLoginProfile`, `AttachUserPolicy`, `PutUserPolicy`, `AttachRolePolicy`, `PutRolePolicy`, `AddUserToGroup`, `AttachGroupPolicy`, `UpdateAssumeRolePolicy` | 6 |
/// | `ConsoleLogin` that succeeded without MFA | 6 |
/// | `ConsoleLogin` that failed | 4 |
/// | any other call refused (`AccessDenied…`, `Unauthorized…`) | 4 |
/// | anything else, including calls that failed for other reasons | 3 |
///
/// A call that failed did not do what it names, so the name-based rows apply only to calls that
/// succeeded.
fn severity(facts: &Facts) -> u8 {
    if facts.root {
        return if facts.failed { 6 } else { 8 };
    }
    if facts.failed {
        return if facts.denied || facts.class == EventClass::ConsoleLogin {
            4
        } else {
            3
        };
    }
    match facts.class {
        EventClass::DefenseEvasion => 8,
        EventClass::OpenIngress if facts.open_cidr.is_some() => 7,
        EventClass::IdentityChange => 6,
        EventClass::ConsoleLogin if facts.no_mfa_login => 6,
        _ => 3,
    }
}

/// The resource a record is about:
///
/// - sign-in and STS events: the principal that signed in (an identity alert);
/// - IAM events: the user, role or new access key the request names (its ARN when the response
///   has it, else its name), else the caller itself;
/// - `requestParameters.groupId` (`aws.ec2.security_group`), `instanceId` or the first
///   `instancesSet` item (`aws.ec2.instance`), `bucketName` (`aws.s3.bucket`), a CloudTrail trail
///   `name` (`aws.cloudtrail.trail`);
/// - otherwise the account.
fn resource(
    r: &Value,
    event_source: &str,
    event_name: &str,
    principal: Option<&Principal>,
) -> Resource {
    let region = text(r, "awsRegion");
    let account = first_text(r, &["recipientAccountId", "userIdentity.accountId"]);
    let params = get(r, "requestParameters");
    let param = |p: &str| params.and_then(|v| text(v, p));
    let caller = || {
        principal.map(|p| {
            (
                p.actor.kind.clone().unwrap_or_default(),
                p.actor.id.clone(),
                p.actor.name.clone(),
            )
        })
    };

    let found: Option<(String, Option<String>, Option<String>)> = match event_source {
        "signin.amazonaws.com" | "sts.amazonaws.com" => caller(),
        "iam.amazonaws.com" => {
            let new_key = text(r, "responseElements.accessKey.accessKeyId");
            if let (Some(key), "CreateAccessKey") = (new_key, event_name) {
                Some(("aws.iam.access_key".into(), Some(key), param("userName")))
            } else if let Some(user) = param("userName") {
                let id = text(r, "responseElements.user.arn").unwrap_or_else(|| user.clone());
                Some(("aws.iam.user".into(), Some(id), Some(user)))
            } else if let Some(role) = param("roleName") {
                let id = text(r, "responseElements.role.arn").unwrap_or_else(|| role.clone());
                Some(("aws.iam.role".into(), Some(id), Some(role)))
            } else {
                caller()
            }
        }
        "cloudtrail.amazonaws.com" => {
            param("name").map(|trail| ("aws.cloudtrail.trail".into(), Some(trail), None))
        }
        _ => None,
    };
    let found = found.or_else(|| {
        if let Some(group) = param("groupId") {
            Some((
                "aws.ec2.security_group".into(),
                Some(group),
                param("groupName"),
            ))
        } else if let Some(instance) =
            param("instanceId").or_else(|| param("instancesSet.items.0.instanceId"))
        {
            Some(("aws.ec2.instance".into(), Some(instance), None))
        } else {
            param("bucketName").map(|bucket| ("aws.s3.bucket".into(), Some(bucket), None))
        }
    });
    let (kind, id, name) = found.unwrap_or_else(|| ("aws.account".into(), account.clone(), None));
    Resource {
        kind: Some(kind),
        id,
        region,
        account,
        name,
    }
}

/// One line: what happened, by whom, and to what when that is not the caller or the account.
fn title(
    event_name: &str,
    facts: &Facts,
    principal: Option<&Principal>,
    resource: &Resource,
) -> String {
    let who = principal.map_or("an unknown principal", |p| p.said.as_str());
    if facts.class == EventClass::ConsoleLogin {
        return if facts.failed {
            format!("{event_name} failed for {who}")
        } else if facts.no_mfa_login {
            format!("{event_name} without MFA by {who}")
        } else {
            format!("{event_name} by {who}")
        };
    }
    let caller_id = principal.and_then(|p| p.actor.id.as_deref());
    let target = match resource.kind.as_deref() {
        Some("aws.account") | None => None,
        _ if resource.id.as_deref() == caller_id => None,
        _ => resource.name.as_deref().or(resource.id.as_deref()),
    };
    let mut title = format!("{event_name} by {who}");
    if let Some(target) = target {
        title.push_str(&format!(" on {target}"));
    }
    if let Some(cidr) = &facts.open_cidr {
        title.push_str(&format!(" opening {cidr}"));
    }
    if facts.failed {
        title.push_str(" (failed)");
    }
    title
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, assert_raw_is_body, error_of, fixture, value};
    use crate::alert::Alert;
    use crate::intake::formats::SourceKind;

    fn normalize(name: &str) -> (Vec<Alert>, Vec<u8>) {
        let body = fixture(&format!("aws_cloudtrail/{name}"));
        let alerts = SourceKind::AwsCloudTrail
            .normalize(&body)
            .expect("normalizes");
        for a in &alerts {
            assert_eq!(a.source, "aws.cloudtrail");
            assert_eq!(a.severity.native, "derived");
        }
        (alerts, body)
    }

    fn actor(a: &Alert) -> (Option<&str>, Option<&str>, Option<&str>) {
        let actor = a.actor.as_ref().expect("actor");
        (
            actor.kind.as_deref(),
            actor.id.as_deref(),
            actor.name.as_deref(),
        )
    }

    #[test]
    fn console_login_failure_of_an_iam_user() {
        let (alerts, body) = normalize("awsdocs_console_login_iam_user_failure.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(a.kind, "signin.amazonaws.com:ConsoleLogin");
        assert_eq!(a.severity.score, 4);
        assert_eq!(a.title, "ConsoleLogin failed for IAM user anaya");
        assert_eq!(
            a.description.as_deref(),
            Some("ConsoleLogin failed: Failed authentication")
        );
        // The record has no ARN, so the principal id stands in.
        assert_eq!(
            actor(a),
            (
                Some("aws.iam.user"),
                Some("AIDACKCEVSQ6C2EXAMPLE"),
                Some("anaya")
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(a.resource.id.as_deref(), Some("AIDACKCEVSQ6C2EXAMPLE"));
        assert_eq!(a.resource.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.resource.account.as_deref(), Some("111122223333"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("192.0.2.0"));
        assert_eq!(a.observed_at.to_rfc3339(), "2022-11-10T16:24:34+00:00");
        assert_eq!(
            a.dedup_key,
            "aws.cloudtrail:d38ce1b3-4575-4cb8-a632-611b8243bfc3"
        );
        assert!(a.is_identity());
        // The record has no ARN, but its account and user name make the user's key.
        assert_eq!(
            a.entity_key().as_deref(),
            Some("actor:aws:111122223333:user/anaya")
        );
    }

    #[test]
    fn console_login_failure_of_root() {
        let (alerts, body) = normalize("awsdocs_console_login_root_failure.json");
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(a.kind, "signin.amazonaws.com:ConsoleLogin");
        assert_eq!(a.severity.score, 6);
        assert_eq!(a.title, "ConsoleLogin failed for root user");
        assert_eq!(
            actor(a),
            (
                Some("aws.root"),
                Some("arn:aws:iam::111122223333:root"),
                Some("root")
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.root"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("arn:aws:iam::111122223333:root")
        );
        assert_eq!(a.resource.account.as_deref(), Some("111122223333"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("192.0.2.0"));
        assert_eq!(
            a.dedup_key,
            "aws.cloudtrail:a4fbbe77-91a0-4238-804a-64314184edb6"
        );
    }

    #[test]
    fn stop_logging() {
        let (alerts, body) = normalize("stratus_cloudtrail_stop_logging.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)[0]);
        assert_eq!(a.kind, "cloudtrail.amazonaws.com:StopLogging");
        assert_eq!(a.severity.score, 8);
        assert_eq!(
            a.title,
            "StopLogging by IAM user christophe on stratus-red-team-ct-stop-trail-buykxbqejv"
        );
        assert_eq!(
            actor(a),
            (
                Some("aws.iam.user"),
                Some("arn:aws:iam::143434273843:user/christophe"),
                Some("christophe")
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.cloudtrail.trail"));
        assert_eq!(
            a.resource.id.as_deref(),
            Some("stratus-red-team-ct-stop-trail-buykxbqejv")
        );
        assert_eq!(a.resource.region.as_deref(), Some("apiso-centralnorth-2r"));
        assert_eq!(a.resource.account.as_deref(), Some("143434273843"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("86.245.153.234"));
        assert_eq!(
            a.dedup_key,
            "aws.cloudtrail:10163ed2-2253-469d-a5ee-cbc6651f8934"
        );
    }

    #[test]
    fn security_group_opened_to_the_internet() {
        let (alerts, body) = normalize("stratus_authorize_security_group_ingress_port22.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)[0]);
        assert_eq!(a.kind, "ec2.amazonaws.com:AuthorizeSecurityGroupIngress");
        assert_eq!(a.severity.score, 7);
        assert_eq!(
            a.title,
            "AuthorizeSecurityGroupIngress by IAM user christophe on sg-003dc7f1f1c686164 opening 208.236.235.254/0"
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.ec2.security_group"));
        assert_eq!(a.resource.id.as_deref(), Some("sg-003dc7f1f1c686164"));
        assert_eq!(a.resource.region.as_deref(), Some("us-northeast-1r"));
        assert_eq!(a.resource.account.as_deref(), Some("032092706103"));
        assert_eq!(
            actor(a).1,
            Some("arn:aws:iam::032092706103:user/christophe")
        );
        assert_eq!(a.network.remote_ip.as_deref(), Some("253.243.215.253"));
        assert_eq!(
            a.labels.get("open_cidr").map(String::as_str),
            Some("208.236.235.254/0")
        );
        assert_eq!(
            a.dedup_key,
            "aws.cloudtrail:9fd68588-ecbf-4528-a345-199fa6bb0821"
        );
    }

    #[test]
    fn console_login_without_mfa() {
        let (alerts, body) = normalize("stratus_console_login_without_mfa.json");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw(a, &body, &value(&body)[0]);
        assert_eq!(a.kind, "signin.amazonaws.com:ConsoleLogin");
        assert_eq!(a.severity.score, 6);
        assert_eq!(
            a.title,
            "ConsoleLogin without MFA by IAM user stratus-red-team-nmfalu-jfzdtsvchl"
        );
        let arn = "arn:aws:iam::562283505220:user/stratus-red-team-nmfalu-jfzdtsvchl";
        assert_eq!(
            actor(a),
            (
                Some("aws.iam.user"),
                Some(arn),
                Some("stratus-red-team-nmfalu-jfzdtsvchl")
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(a.resource.id.as_deref(), Some(arn));
        assert_eq!(a.resource.region.as_deref(), Some("eu-west-2r"));
        assert_eq!(a.resource.account.as_deref(), Some("562283505220"));
        // Written `225.01.00.16` (anonymized with leading zeros): read as decimal.
        assert_eq!(a.network.remote_ip.as_deref(), Some("225.1.0.16"));
        assert_eq!(a.labels.get("mfa_used").map(String::as_str), Some("No"));
        assert_eq!(
            a.dedup_key,
            "aws.cloudtrail:865d9377-9c6b-4fd7-8aad-725e95f6a140"
        );
    }

    #[test]
    fn admin_user_and_access_key_created() {
        let (alerts, body) = normalize("stratus_iam_create_admin_user_and_access_key.json");
        assert_eq!(alerts.len(), 3);
        let records = value(&body);
        for (i, a) in alerts.iter().enumerate() {
            assert_raw(a, &body, &records[i]);
            assert_eq!(a.severity.score, 6);
            assert_eq!(
                actor(a),
                (
                    Some("aws.iam.user"),
                    Some("arn:aws:iam::229654561268:user/christophe"),
                    Some("christophe")
                )
            );
            assert_eq!(a.resource.region.as_deref(), Some("ap-isob-central-3r"));
            assert_eq!(a.resource.account.as_deref(), Some("229654561268"));
            assert_eq!(a.network.remote_ip.as_deref(), Some("75.50.255.67"));
            // Identity alerts: all three group under the caller's key.
            assert_eq!(
                a.entity_key().as_deref(),
                Some("actor:aws:229654561268:user/christophe")
            );
        }
        let [attach, key, user] = [&alerts[0], &alerts[1], &alerts[2]];
        assert_eq!(attach.kind, "iam.amazonaws.com:AttachUserPolicy");
        assert_eq!(
            attach.title,
            "AttachUserPolicy by IAM user christophe on malicious-iam-user"
        );
        assert_eq!(attach.resource.kind.as_deref(), Some("aws.iam.user"));
        assert_eq!(attach.resource.id.as_deref(), Some("malicious-iam-user"));
        assert_eq!(key.kind, "iam.amazonaws.com:CreateAccessKey");
        assert_eq!(key.resource.kind.as_deref(), Some("aws.iam.access_key"));
        assert_eq!(key.resource.id.as_deref(), Some("AKIAXAFZN8JEPF6L682H"));
        assert_eq!(key.resource.name.as_deref(), Some("malicious-iam-user"));
        assert_eq!(
            key.dedup_key,
            "aws.cloudtrail:94faedcc-0fa4-46e6-9322-022e8e934f04"
        );
        assert_eq!(user.kind, "iam.amazonaws.com:CreateUser");
        assert_eq!(
            user.title,
            "CreateUser by IAM user christophe on malicious-iam-user"
        );
        assert_eq!(
            user.resource.id.as_deref(),
            Some("arn:aws:iam::229654561268:user/malicious-iam-user")
        );
        assert_eq!(user.resource.name.as_deref(), Some("malicious-iam-user"));
    }

    #[test]
    fn eventbridge_event_and_log_file() {
        let body = fixture("aws_cloudtrail/stratus_cloudtrail_stop_logging.json");
        let record = value(&body)[0].clone();
        let event = json!({"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.cloudtrail",
                           "account": "143434273843", "region": "eu-west-1", "detail": record});
        let event_body = event.to_string();
        let alerts = SourceKind::AwsCloudTrail
            .normalize(event_body.as_bytes())
            .expect("event");
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].raw.get(), event_body);
        assert_eq!(alerts[0].kind, "cloudtrail.amazonaws.com:StopLogging");

        let file = json!({"Records": [record.clone(), record]}).to_string();
        let alerts = SourceKind::AwsCloudTrail
            .normalize(file.as_bytes())
            .expect("log file");
        assert_eq!(alerts.len(), 2);
    }

    #[test]
    fn assumed_role_and_denied_calls() {
        let record = json!({
            "eventName": "RunInstances", "eventSource": "ec2.amazonaws.com", "errorCode": "Client.UnauthorizedOperation",
            "sourceIPAddress": "ec2.amazonaws.com", "awsRegion": "eu-west-1",
            "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLE:alice", "accountId": "123456789012",
                "arn": "arn:aws:sts::123456789012:assumed-role/Admin/alice",
                "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/Admin", "userName": "Admin"}}}
        });
        let alerts = SourceKind::AwsCloudTrail
            .normalize(record.to_string().as_bytes())
            .expect("normalizes");
        let a = &alerts[0];
        assert_eq!(a.severity.score, 4);
        assert_eq!(
            a.title,
            "RunInstances by role Admin (session alice) (failed)"
        );
        assert_eq!(
            actor(a),
            (
                Some("aws.iam.role"),
                Some("arn:aws:iam::123456789012:role/Admin"),
                Some("Admin")
            )
        );
        assert_eq!(a.resource.kind.as_deref(), Some("aws.account"));
        assert_eq!(a.resource.id.as_deref(), Some("123456789012"));
        assert_eq!(
            a.network.remote_ip, None,
            "a service name is not an address"
        );
        // Every session of the role is the role; the account is only where it happened, so the
        // alert is about the role.
        assert_eq!(
            a.entity_key().as_deref(),
            Some("actor:aws:123456789012:role/Admin")
        );
        // Without the session issuer, the session's own ARN gives the role.
        let mut bare = record.clone();
        bare["userIdentity"]
            .as_object_mut()
            .unwrap()
            .remove("sessionContext");
        let b = SourceKind::AwsCloudTrail
            .normalize(bare.to_string().as_bytes())
            .expect("normalizes")
            .remove(0);
        assert_eq!(
            b.actor.and_then(|x| x.key).as_deref(),
            Some("aws:123456789012:role/Admin")
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let err = error_of(
            SourceKind::AwsCloudTrail.normalize(br#"{"eventSource":"iam.amazonaws.com"}"#),
        );
        assert!(err.contains("`eventName`"), "{err}");
        let err = error_of(
            SourceKind::AwsCloudTrail
                .normalize(br#"{"detail-type":"x","detail":{"eventName":"A"}}"#),
        );
        assert!(err.contains("`detail.eventSource`"), "{err}");
        let err = error_of(
            SourceKind::AwsCloudTrail
                .normalize(br#"{"Records":[{"eventName":"A","eventSource":"s"},{}]}"#),
        );
        assert!(err.contains("`Records[1].eventName`"), "{err}");
        let err = error_of(SourceKind::AwsCloudTrail.normalize(br#"[7]"#));
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = error_of(SourceKind::AwsCloudTrail.normalize(br#"{"Records":"x"}"#));
        assert!(err.contains("must be a JSON array"), "{err}");
    }
}
