//! The AWS integrations (`integrations/aws-*`) against moto, the AWS emulator: every action is
//! called through the real runtime, and moto's state is read back after it. CloudTrail's
//! `LookupEvents` is not in moto, so it runs against a local fake serving recorded pages; S3's
//! `Content-MD5` is checked by a local fake too, since moto ignores it. The stock AWS playbooks run
//! end to end through the server: a GuardDuty finding posted over HTTP, an approval over the admin
//! API, moto's state after.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderMap, Method, StatusCode};
use cordon::engine::exec::{ActionCall, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use support::moto::{ACCOUNT, Moto, QueryApi, xml_value, xml_values};
use support::*;

const REGION: &str = "eu-west-2";
/// A run id as the engine makes them (UUIDv7).
const RUN: &str = "0190f6f0-1c2d-7b3a-8c4d-5e6f70819203";

// ---------------------------------------------------------------------------------------------
// Set-up

/// The `integrations:` section: the repo's integrations, AWS credentials whose every endpoint is
/// moto (or `cloudtrail` / `s3` when given).
fn integrations_yaml(moto: &str, cloudtrail: Option<&str>, s3: Option<&str>) -> String {
    format!(
        r#"integrations:
  paths: ["{repo}/integrations"]
  credentials:
    aws:
      access_key_id: AKIAIOSFODNN7EXAMPLE
      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
      endpoints:
        "ec2.*.amazonaws.com": "{moto}"
        "iam.amazonaws.com": "{moto}"
        "ssm.*.amazonaws.com": "{moto}"
        "s3.*.amazonaws.com": "{s3}"
        "cloudtrail.*.amazonaws.com": "{cloudtrail}"
  settings:
    aws-ssm: {{ evidence_bucket: cordon-evidence }}
"#,
        repo = env!("CARGO_MANIFEST_DIR"),
        s3 = s3.unwrap_or(moto),
        cloudtrail = cloudtrail.unwrap_or("http://127.0.0.1:9"),
    )
}

fn load(yaml: &str) -> Integrations {
    let config = cordon::config::parse(yaml, std::path::Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("integrations load: {d:?}"))
}

fn call(step: &str, incident: Option<&str>) -> ActionCall {
    ActionCall {
        run_id: RUN.into(),
        step_id: step.into(),
        playbook: "test".into(),
        incident_id: incident.map(str::to_owned),
        idempotency_key: format!("{RUN}:{step}"),
        dry_run: false,
        account: None,
    }
}

/// Runs an action; panics with its error if it fails.
async fn run(integrations: &Integrations, action: &str, inputs: Value, call: &ActionCall) -> Value {
    integrations
        .call(action, inputs, call)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{action} failed: {} (retryable: {})",
                e.message, e.retryable
            )
        })
}

/// An instance in its own VPC with two network interfaces and two EBS volumes:
/// eth0 on groups `web` + `db`, eth1 on `db`.
struct Ec2World {
    vpc: String,
    web: String,
    db: String,
    instance: String,
    eth0: String,
    eth1: String,
    volumes: BTreeSet<String>,
}

async fn ec2_world(moto: &Moto) -> Ec2World {
    let vpc = xml_value(
        &moto
            .ec2(REGION, "CreateVpc", &[("CidrBlock", "10.0.0.0/16")])
            .await,
        "vpcId",
    );
    let subnet = xml_value(
        &moto
            .ec2(
                REGION,
                "CreateSubnet",
                &[
                    ("VpcId", &vpc),
                    ("CidrBlock", "10.0.1.0/24"),
                    ("AvailabilityZone", "eu-west-2a"),
                ],
            )
            .await,
        "subnetId",
    );
    let mut groups = Vec::new();
    for name in ["web", "db"] {
        let xml = moto
            .ec2(
                REGION,
                "CreateSecurityGroup",
                &[
                    ("VpcId", &vpc),
                    ("GroupName", name),
                    ("GroupDescription", name),
                ],
            )
            .await;
        groups.push(xml_value(&xml, "groupId"));
    }
    let (web, db) = (groups[0].clone(), groups[1].clone());
    // The groups go on the interface, not on the instance: moto reports an attached interface's
    // groups as its own plus the instance's launch groups, which would hide the swap.
    let launched = moto
        .ec2(
            REGION,
            "RunInstances",
            &[
                ("ImageId", "ami-12c6146b"),
                ("InstanceType", "t3.micro"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("NetworkInterface.1.DeviceIndex", "0"),
                ("NetworkInterface.1.SubnetId", &subnet),
                ("NetworkInterface.1.SecurityGroupId.1", &web),
                ("NetworkInterface.1.SecurityGroupId.2", &db),
            ],
        )
        .await;
    let instance = xml_value(&launched, "instanceId");
    let eth0 = xml_value(&launched, "networkInterfaceId");
    let eth1 = xml_value(
        &moto
            .ec2(
                REGION,
                "CreateNetworkInterface",
                &[("SubnetId", &subnet), ("SecurityGroupId.1", &db)],
            )
            .await,
        "networkInterfaceId",
    );
    moto.ec2(
        REGION,
        "AttachNetworkInterface",
        &[
            ("NetworkInterfaceId", &eth1),
            ("InstanceId", &instance),
            ("DeviceIndex", "1"),
        ],
    )
    .await;
    let data = xml_value(
        &moto
            .ec2(
                REGION,
                "CreateVolume",
                &[("Size", "10"), ("AvailabilityZone", "eu-west-2a")],
            )
            .await,
        "volumeId",
    );
    moto.ec2(
        REGION,
        "AttachVolume",
        &[
            ("VolumeId", &data),
            ("InstanceId", &instance),
            ("Device", "/dev/sdf"),
        ],
    )
    .await;
    let described = moto
        .ec2(REGION, "DescribeInstances", &[("InstanceId.1", &instance)])
        .await;
    let volumes: BTreeSet<String> = xml_values(&described, "volumeId").into_iter().collect();
    assert_eq!(volumes.len(), 2, "a root volume and {data}: {described}");
    Ec2World {
        vpc,
        web,
        db,
        instance,
        eth0,
        eth1,
        volumes,
    }
}

/// The group ids of a network interface, as moto has them.
async fn interface_groups(moto: &Moto, eni: &str) -> BTreeSet<String> {
    let xml = moto
        .ec2(
            REGION,
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", eni)],
        )
        .await;
    xml_values(&xml, "groupId").into_iter().collect()
}

/// A resource's tags, as moto has them.
async fn tags(moto: &Moto, resource: &str) -> BTreeMap<String, String> {
    let xml = moto
        .ec2(
            REGION,
            "DescribeTags",
            &[
                ("Filter.1.Name", "resource-id"),
                ("Filter.1.Value.1", resource),
            ],
        )
        .await;
    xml_values(&xml, "key")
        .into_iter()
        .zip(xml_values(&xml, "value"))
        .collect()
}

/// The ids of the groups named `name` in `vpc`.
async fn groups_named(moto: &Moto, vpc: &str, name: &str) -> Vec<String> {
    let xml = moto
        .ec2(
            REGION,
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", name),
            ],
        )
        .await;
    xml_values(&xml, "groupId")
}

/// The rule ids of a security group, inbound and outbound.
async fn group_rules(moto: &Moto, group: &str) -> Vec<String> {
    let xml = moto
        .ec2(
            REGION,
            "DescribeSecurityGroupRules",
            &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", group)],
        )
        .await;
    xml_values(&xml, "securityGroupRuleId")
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `interfaces` of an isolate_instance output, as interface id → previous groups.
fn previous_groups(output: &Value) -> BTreeMap<String, BTreeSet<String>> {
    output["interfaces"]
        .as_array()
        .expect("interfaces is a list")
        .iter()
        .map(|i| {
            let groups = i["previous_groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap().to_owned())
                .collect();
            (i["id"].as_str().unwrap().to_owned(), groups)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// aws-ec2

#[tokio::test]
async fn isolation_moves_every_interface_onto_a_closed_group_repeats_safely_and_is_undone() {
    let moto = Moto::start().await;
    let w = ec2_world(&moto).await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    let inputs = json!({ "instance_id": w.instance, "region": REGION });
    let isolate = call("isolate", None);

    let first = run(&aws, "aws-ec2.isolate_instance", inputs.clone(), &isolate).await;
    let quarantine = first["quarantine_group"].as_str().unwrap().to_owned();
    assert_eq!(first["vpc_id"], w.vpc.as_str());
    assert_eq!(
        previous_groups(&first),
        BTreeMap::from([
            (w.eth0.clone(), set(&[&w.web, &w.db])),
            (w.eth1.clone(), set(&[&w.db])),
        ])
    );
    for eni in [&w.eth0, &w.eth1] {
        assert_eq!(
            interface_groups(&moto, eni).await,
            set(&[&quarantine]),
            "{eni}"
        );
    }
    assert_eq!(
        group_rules(&moto, &quarantine).await,
        Vec::<String>::new(),
        "the quarantine group lets nothing in or out (the default egress rule is gone)"
    );
    assert_eq!(
        tags(&moto, &quarantine).await["cordon:purpose"],
        "quarantine"
    );
    assert_eq!(tags(&moto, &w.instance).await["cordon:isolated-by"], RUN);

    // Someone opens the quarantine group in the meantime; the repeat closes it again and still
    // records what the interfaces had before the first isolation, not the quarantine group.
    moto.ec2(
        REGION,
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", &quarantine),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ],
    )
    .await;
    let again = run(&aws, "aws-ec2.isolate_instance", inputs.clone(), &isolate).await;
    assert_eq!(again, first, "a repeat reports the same isolation");
    assert_eq!(group_rules(&moto, &quarantine).await, Vec::<String>::new());
    assert_eq!(
        groups_named(&moto, &w.vpc, "cordon-quarantine").await,
        std::slice::from_ref(&quarantine),
        "one quarantine group per VPC"
    );

    let mut undo_inputs = inputs.clone();
    undo_inputs["previous"] = first.clone();
    let released = run(
        &aws,
        "aws-ec2.release_instance",
        undo_inputs,
        &call("isolate:undo", None),
    )
    .await;
    assert_eq!(released["skipped"], json!([]));
    assert_eq!(
        interface_groups(&moto, &w.eth0).await,
        set(&[&w.web, &w.db])
    );
    assert_eq!(interface_groups(&moto, &w.eth1).await, set(&[&w.db]));
    assert!(
        !tags(&moto, &w.instance)
            .await
            .contains_key("cordon:isolated-by")
    );
    for eni in [&w.eth0, &w.eth1] {
        assert!(
            !tags(&moto, eni)
                .await
                .keys()
                .any(|k| k.starts_with("cordon:")),
            "release leaves no cordon tag on {eni}"
        );
    }
}

#[tokio::test]
async fn an_unknown_instance_is_refused_with_its_id_and_nothing_is_created() {
    let moto = Moto::start().await;
    let w = ec2_world(&moto).await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    let error = aws
        .call(
            "aws-ec2.isolate_instance",
            json!({ "instance_id": "i-0123456789abcdef0", "region": REGION }),
            &call("isolate", None),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "instance i-0123456789abcdef0 was not found in eu-west-2"
    );
    assert!(!error.retryable);
    assert!(
        groups_named(&moto, &w.vpc, "cordon-quarantine")
            .await
            .is_empty()
    );

    let error = aws
        .call(
            "aws-ec2.isolate_instance",
            json!({ "instance_id": w.instance, "region": "eu-west-2.evil.example" }),
            &call("isolate", None),
        )
        .await
        .unwrap_err();
    assert!(
        error.message.contains("must match the pattern"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn every_volume_is_snapshotted_once_with_tags_and_evidence() {
    let moto = Moto::start().await;
    let w = ec2_world(&moto).await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    let inputs = json!({ "instance_id": w.instance, "region": REGION });
    let step = call("snapshot", Some("inc-42"));

    let out = run(&aws, "aws-ec2.snapshot_volumes", inputs.clone(), &step).await;
    let snapshots = out["snapshots"].as_array().unwrap();
    let volumes: BTreeSet<String> = snapshots
        .iter()
        .map(|s| s["volume_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(volumes, w.volumes);
    let evidence = out["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    for (snapshot, record) in snapshots.iter().zip(evidence) {
        let id = snapshot["snapshot_id"].as_str().unwrap();
        assert_eq!(record["kind"], "ebs-snapshot");
        assert_eq!(
            record["location"],
            format!("arn:aws:ec2:{REGION}:{ACCOUNT}:snapshot/{id}")
        );
        assert_eq!(record["details"]["instance_id"], w.instance.as_str());
        assert_eq!(record["run_id"], RUN, "the host completes the record");
    }

    let xml = moto
        .ec2(
            REGION,
            "DescribeSnapshots",
            &[
                ("Filter.1.Name", "tag:cordon:incident"),
                ("Filter.1.Value.1", "inc-42"),
            ],
        )
        .await;
    let in_moto: BTreeSet<String> = xml_values(&xml, "snapshotId").into_iter().collect();
    let reported: BTreeSet<String> = snapshots
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(in_moto, reported);
    let one = tags(&moto, reported.first().unwrap()).await;
    assert_eq!(one["cordon:run"], RUN);
    assert_eq!(one["cordon:instance"], w.instance);
    assert_eq!(one["cordon:incident"], "inc-42");

    // A repeat of the same step (a retry, a restart) takes no new snapshot.
    let again = run(&aws, "aws-ec2.snapshot_volumes", inputs.clone(), &step).await;
    assert_eq!(again["snapshots"], out["snapshots"]);
    let xml = moto
        .ec2(REGION, "DescribeSnapshots", &[("Owner.1", "self")])
        .await;
    let ours = xml_values(&xml, "snapshotId")
        .into_iter()
        .filter(|id| reported.contains(id))
        .count();
    let all_of_the_instance = xml
        .matches(&format!("<value>{}</value>", w.instance))
        .count();
    assert_eq!((ours, all_of_the_instance), (2, 2));

    // Another step is another piece of evidence.
    let other = run(
        &aws,
        "aws-ec2.snapshot_volumes",
        inputs,
        &call("snapshot2", Some("inc-42")),
    )
    .await;
    assert_ne!(
        other["snapshots"][0]["snapshot_id"],
        out["snapshots"][0]["snapshot_id"]
    );
}

// ---------------------------------------------------------------------------------------------
// aws-iam

async fn access_key_status(moto: &Moto, user: &str) -> String {
    xml_value(
        &moto.iam("ListAccessKeys", &[("UserName", user)]).await,
        "Status",
    )
}

#[tokio::test]
async fn an_access_key_is_disabled_and_enabled_again_unless_it_was_off_before() {
    let moto = Moto::start().await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    moto.iam("CreateUser", &[("UserName", "alice")]).await;
    let key = xml_value(
        &moto.iam("CreateAccessKey", &[("UserName", "alice")]).await,
        "AccessKeyId",
    );

    // No user name: found from the key.
    let disabled = run(
        &aws,
        "aws-iam.disable_access_key",
        json!({ "access_key_id": key }),
        &call("disable_key", None),
    )
    .await;
    assert_eq!(
        disabled,
        json!({ "access_key_id": key, "user_name": "alice", "previous_status": "Active", "status": "Inactive" })
    );
    assert_eq!(access_key_status(&moto, "alice").await, "Inactive");

    let enabled = run(
        &aws,
        "aws-iam.enable_access_key",
        json!({ "access_key_id": key, "previous": disabled }),
        &call("disable_key:undo", None),
    )
    .await;
    assert_eq!(enabled["status"], "Active");
    assert_eq!(enabled["changed"], true);
    assert_eq!(access_key_status(&moto, "alice").await, "Active");

    // A key someone had already disabled stays disabled after the undo.
    moto.iam(
        "UpdateAccessKey",
        &[
            ("UserName", "alice"),
            ("AccessKeyId", &key),
            ("Status", "Inactive"),
        ],
    )
    .await;
    let disabled = run(
        &aws,
        "aws-iam.disable_access_key",
        json!({ "access_key_id": key, "user_name": "alice" }),
        &call("disable_again", None),
    )
    .await;
    assert_eq!(disabled["previous_status"], "Inactive");
    let undone = run(
        &aws,
        "aws-iam.enable_access_key",
        json!({ "access_key_id": key, "user_name": "alice", "previous": disabled }),
        &call("disable_again:undo", None),
    )
    .await;
    assert_eq!(undone["changed"], false);
    assert_eq!(access_key_status(&moto, "alice").await, "Inactive");

    let error = aws
        .call(
            "aws-iam.disable_access_key",
            json!({ "access_key_id": "AKIAI44QH8DHBEXAMPLE", "user_name": "alice" }),
            &call("wrong_key", None),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "access key AKIAI44QH8DHBEXAMPLE does not belong to IAM user alice"
    );
}

/// The statements of a principal's inline policy in moto, or `None` when it has none.
async fn inline_statements(
    moto: &Moto,
    action: &str,
    who: (&str, &str),
    name: &str,
) -> Option<Vec<Value>> {
    let (status, xml) = moto
        .try_query(QueryApi::IAM, action, &[who, ("PolicyName", name)])
        .await;
    if status == 404 {
        assert!(xml.contains("NoSuchEntity"), "{xml}");
        return None;
    }
    assert_eq!(status, 200, "{xml}");
    let encoded = xml_value(&xml, "PolicyDocument");
    let decoded: String = url::form_urlencoded::parse(format!("d={encoded}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let policy: Value = serde_json::from_str(&decoded).unwrap();
    Some(policy["Statement"].as_array().unwrap().clone())
}

#[tokio::test]
async fn role_sessions_are_revoked_per_run_and_each_undo_removes_only_its_own() {
    let moto = Moto::start().await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    moto.iam(
        "CreateRole",
        &[
            ("RoleName", "app-server"),
            ("AssumeRolePolicyDocument", trust),
        ],
    )
    .await;
    let role = ("RoleName", "app-server");
    let policy = "cordon-revoke-sessions";
    let before = chrono::Utc::now().timestamp();

    let first_call = call("revoke", None);
    let first = run(
        &aws,
        "aws-iam.revoke_role_sessions",
        json!({ "role_name": format!("arn:aws:iam::{ACCOUNT}:role/app-server") }),
        &first_call,
    )
    .await;
    assert_eq!(first["role_name"], "app-server");
    let statements = inline_statements(&moto, "GetRolePolicy", role, policy)
        .await
        .unwrap();
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(
        (
            s["Effect"].as_str(),
            s["Action"].clone(),
            s["Resource"].clone()
        ),
        (Some("Deny"), json!(["*"]), json!(["*"]))
    );
    let issued = s["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap();
    let issued = chrono::DateTime::parse_from_rfc3339(issued)
        .unwrap()
        .timestamp();
    assert!(
        issued >= before && issued <= chrono::Utc::now().timestamp(),
        "revoked as of now"
    );
    assert_eq!(
        first["revoked_before"],
        s["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    );

    // The same step again changes nothing; another incident adds its own statement.
    let again = run(
        &aws,
        "aws-iam.revoke_role_sessions",
        json!({ "role_name": "app-server" }),
        &first_call,
    )
    .await;
    assert_eq!(again, first);
    assert_eq!(
        inline_statements(&moto, "GetRolePolicy", role, policy)
            .await
            .unwrap()
            .len(),
        1
    );
    let second = run(
        &aws,
        "aws-iam.revoke_role_sessions",
        json!({ "role_name": "app-server" }),
        &ActionCall {
            run_id: "other-run".into(),
            idempotency_key: "other-run:revoke".into(),
            ..call("revoke", None)
        },
    )
    .await;
    assert_ne!(second["statement_id"], first["statement_id"]);
    assert_eq!(
        inline_statements(&moto, "GetRolePolicy", role, policy)
            .await
            .unwrap()
            .len(),
        2
    );

    let undone = run(
        &aws,
        "aws-iam.restore_role_sessions",
        json!({ "role_name": "app-server", "previous": first }),
        &call("revoke:undo", None),
    )
    .await;
    assert_eq!(
        (undone["removed"].clone(), undone["remaining"].clone()),
        (json!(true), json!(1))
    );
    let left = inline_statements(&moto, "GetRolePolicy", role, policy)
        .await
        .unwrap();
    assert_eq!(
        left[0]["Sid"], second["statement_id"],
        "the other incident's revocation stays"
    );

    run(
        &aws,
        "aws-iam.restore_role_sessions",
        json!({ "role_name": "app-server", "previous": second }),
        &call("revoke:undo", None),
    )
    .await;
    assert_eq!(
        inline_statements(&moto, "GetRolePolicy", role, policy).await,
        None,
        "the policy is deleted once empty"
    );
}

#[tokio::test]
async fn a_quarantined_user_is_denied_everything_until_released() {
    let moto = Moto::start().await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    moto.iam("CreateUser", &[("UserName", "mallory")]).await;
    let user = ("UserName", "mallory");

    let quarantined = run(
        &aws,
        "aws-iam.quarantine_user",
        json!({ "user_name": "mallory" }),
        &call("quarantine", None),
    )
    .await;
    let statements = inline_statements(&moto, "GetUserPolicy", user, "cordon-deny-all")
        .await
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Effect"], "Deny");
    assert_eq!(statements[0]["Action"], json!(["*"]));
    assert_eq!(statements[0]["Resource"], json!(["*"]));
    assert_eq!(statements[0]["Sid"], quarantined["statement_id"]);
    assert!(
        moto.iam("ListUserPolicies", &[user])
            .await
            .contains("<member>cordon-deny-all</member>")
    );

    let again = run(
        &aws,
        "aws-iam.quarantine_user",
        json!({ "user_name": "mallory" }),
        &call("quarantine", None),
    )
    .await;
    assert_eq!(again, quarantined);
    assert_eq!(
        inline_statements(&moto, "GetUserPolicy", user, "cordon-deny-all")
            .await
            .unwrap()
            .len(),
        1
    );

    let released = run(
        &aws,
        "aws-iam.release_user",
        json!({ "user_name": "mallory", "previous": quarantined }),
        &call("quarantine:undo", None),
    )
    .await;
    assert_eq!(released["removed"], true);
    assert_eq!(
        inline_statements(&moto, "GetUserPolicy", user, "cordon-deny-all").await,
        None
    );
    assert!(
        !moto
            .iam("ListUserPolicies", &[user])
            .await
            .contains("cordon-deny-all")
    );

    let error = aws
        .call(
            "aws-iam.quarantine_user",
            json!({ "user_name": "nobody" }),
            &call("q2", None),
        )
        .await
        .unwrap_err();
    assert_eq!(error.message, "IAM user nobody was not found");
}

// ---------------------------------------------------------------------------------------------
// aws-s3

const BLOCK_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

async fn create_bucket(moto: &Moto, bucket: &str) {
    let (status, body) = moto
        .s3(
            Method::PUT,
            REGION,
            &format!("/{bucket}"),
            &format!(
                "<CreateBucketConfiguration xmlns=\"{BLOCK_NAMESPACE}\"><LocationConstraint>{REGION}</LocationConstraint></CreateBucketConfiguration>"
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The bucket's Block Public Access settings in moto, or `None` when it has none.
async fn public_access_block(moto: &Moto, bucket: &str) -> Option<BTreeMap<String, String>> {
    let (status, body) = moto
        .s3(
            Method::GET,
            REGION,
            &format!("/{bucket}?publicAccessBlock"),
            "",
        )
        .await;
    if status == 404 {
        assert!(
            body.contains("NoSuchPublicAccessBlockConfiguration"),
            "{body}"
        );
        return None;
    }
    assert_eq!(status, 200, "{body}");
    Some(
        [
            "BlockPublicAcls",
            "IgnorePublicAcls",
            "BlockPublicPolicy",
            "RestrictPublicBuckets",
        ]
        .iter()
        .map(|name| (name.to_string(), xml_value(&body, name)))
        .collect(),
    )
}

fn settings(values: [&str; 4]) -> Option<BTreeMap<String, String>> {
    let names = [
        "BlockPublicAcls",
        "IgnorePublicAcls",
        "BlockPublicPolicy",
        "RestrictPublicBuckets",
    ];
    Some(
        names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), v.to_owned()))
            .collect(),
    )
}

#[tokio::test]
async fn public_access_is_blocked_and_the_previous_settings_come_back_on_undo() {
    let moto = Moto::start().await;
    let aws = load(&integrations_yaml(&moto.base, None, None));
    create_bucket(&moto, "acme-exports").await;
    create_bucket(&moto, "acme-partial").await;
    let (status, body) = moto
        .s3(
            Method::PUT,
            REGION,
            "/acme-partial?publicAccessBlock",
            &format!("<PublicAccessBlockConfiguration xmlns=\"{BLOCK_NAMESPACE}\"><BlockPublicAcls>true</BlockPublicAcls><IgnorePublicAcls>false</IgnorePublicAcls><BlockPublicPolicy>false</BlockPublicPolicy><RestrictPublicBuckets>false</RestrictPublicBuckets></PublicAccessBlockConfiguration>"),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A bucket without any configuration: blocked, then the configuration is deleted again.
    let inputs = json!({ "bucket": "acme-exports", "region": REGION });
    let blocked = run(
        &aws,
        "aws-s3.block_public_access",
        inputs.clone(),
        &call("block", None),
    )
    .await;
    assert_eq!(blocked["previous_configuration"], Value::Null);
    assert_eq!(
        public_access_block(&moto, "acme-exports").await,
        settings(["true"; 4])
    );
    let mut undo = inputs.clone();
    undo["previous"] = blocked;
    run(
        &aws,
        "aws-s3.restore_public_access",
        undo,
        &call("block:undo", None),
    )
    .await;
    assert_eq!(public_access_block(&moto, "acme-exports").await, None);

    // A bucket with some settings on: those come back.
    let inputs = json!({ "bucket": "acme-partial", "region": REGION });
    let blocked = run(
        &aws,
        "aws-s3.block_public_access",
        inputs.clone(),
        &call("block2", None),
    )
    .await;
    assert_eq!(
        blocked["previous_configuration"],
        json!({ "BlockPublicAcls": true, "IgnorePublicAcls": false, "BlockPublicPolicy": false, "RestrictPublicBuckets": false })
    );
    assert_eq!(
        public_access_block(&moto, "acme-partial").await,
        settings(["true"; 4])
    );
    let mut undo = inputs.clone();
    undo["previous"] = blocked;
    run(
        &aws,
        "aws-s3.restore_public_access",
        undo,
        &call("block2:undo", None),
    )
    .await;
    assert_eq!(
        public_access_block(&moto, "acme-partial").await,
        settings(["true", "false", "false", "false"])
    );

    let error = aws
        .call(
            "aws-s3.block_public_access",
            json!({ "bucket": "no-such-bucket", "region": REGION }),
            &call("block3", None),
        )
        .await
        .unwrap_err();
    assert_eq!(error.message, "bucket no-such-bucket does not exist");
}

/// A fake S3 that checks what moto does not: the `Content-MD5` of a PUT. It has no configuration
/// for any bucket and takes every well-formed PUT.
async fn fake_s3() -> fake::FakeServer {
    fake::serve(axum::Router::new().fallback(|method: Method, headers: HeaderMap, body: String| async move {
        if method == Method::GET {
            return (StatusCode::NOT_FOUND, "<Error><Code>NoSuchPublicAccessBlockConfiguration</Code><Message>The public access block configuration was not found</Message></Error>".to_owned());
        }
        use base64::Engine;
        use md5::Digest;
        let expected = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
        match headers.get("content-md5").and_then(|v| v.to_str().ok()) {
            Some(given) if given == expected => (StatusCode::OK, String::new()),
            _ => (StatusCode::BAD_REQUEST, "<Error><Code>InvalidDigest</Code><Message>The Content-MD5 you specified was invalid.</Message></Error>".to_owned()),
        }
    }))
    .await
}

#[tokio::test]
async fn the_put_carries_the_content_md5_s3_insists_on() {
    let s3 = fake_s3().await;
    let aws = load(&integrations_yaml(
        "http://127.0.0.1:9",
        None,
        Some(&s3.base),
    ));
    run(
        &aws,
        "aws-s3.block_public_access",
        json!({ "bucket": "acme-exports", "region": REGION }),
        &call("block", None),
    )
    .await;
    let seen = s3.requests();
    let requests: Vec<String> = seen.iter().map(|r| r.line()).collect();
    assert_eq!(
        requests,
        [
            "GET /acme-exports?publicAccessBlock",
            "PUT /acme-exports?publicAccessBlock"
        ]
    );
    let (headers, body) = (&seen[1].headers, seen[1].text());
    assert!(
        body.starts_with(&format!(
            "<PublicAccessBlockConfiguration xmlns=\"{BLOCK_NAMESPACE}\">"
        )),
        "{body}"
    );
    let authorization = headers["authorization"].to_str().unwrap();
    assert!(
        authorization.contains(&format!("/{REGION}/s3/aws4_request")),
        "{authorization}"
    );
    assert!(
        headers.contains_key("x-amz-content-sha256"),
        "S3 refuses SigV4 without it"
    );
}

// ---------------------------------------------------------------------------------------------
// aws-cloudtrail

/// A fake CloudTrail answering `LookupEvents` with the recorded pages of
/// `integrations/aws-cloudtrail/fixtures/` (the second after the first's `NextToken`).
async fn fake_cloudtrail() -> fake::FakeServer {
    let page = |n: u8| {
        std::fs::read_to_string(format!(
            "{}/integrations/aws-cloudtrail/fixtures/lookup_events_page{n}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let (first, second) = (page(1), page(2));
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            if target != Some("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents")
            {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"__type":"UnknownOperationException","message":"no such operation"}"#
                        .to_owned(),
                );
            }
            let request: Value = serde_json::from_str(&body).unwrap_or_default();
            match request["NextToken"].as_str() {
                None => (StatusCode::OK, first),
                Some("cordon-test-page-2") => (StatusCode::OK, second),
                Some(_) => (
                    StatusCode::BAD_REQUEST,
                    r#"{"__type":"InvalidNextTokenException","message":"bad token"}"#.to_owned(),
                ),
            }
        }
    });
    fake::serve(app).await
}

#[tokio::test]
async fn the_activity_timeline_is_every_page_oldest_first_with_evidence() {
    let cloudtrail = fake_cloudtrail().await;
    let aws = load(&integrations_yaml(
        "http://127.0.0.1:9",
        Some(&cloudtrail.base),
        None,
    ));
    let out = run(
        &aws,
        "aws-cloudtrail.lookup_events",
        json!({ "region": "us-east-1", "username": "christophe",
                "since": "2024-07-31T00:00:00Z", "until": "2024-08-02T00:00:00Z" }),
        &call("timeline", Some("inc-7")),
    )
    .await;

    let names = texts(&out["events"], "name");
    assert_eq!(
        names,
        [
            "StopLogging",
            "CreateUser",
            "CreateAccessKey",
            "AttachUserPolicy"
        ]
    );
    let first = &out["events"][0];
    assert_eq!(first["time"], "2024-07-31T13:06:24Z");
    assert_eq!(first["source"], "cloudtrail.amazonaws.com");
    assert_eq!(first["user"], "christophe");
    assert_eq!(first["source_ip"], "86.245.153.234");
    assert_eq!(first["access_key_id"], "AKIAGGWFBBHBE7D3M9WI");
    assert_eq!(first["read_only"], false);
    assert_eq!(
        first["resources"],
        json!([{ "type": "AWS::CloudTrail::Trail", "name": "stratus-red-team-ct-stop-trail-buykxbqejv" }])
    );
    assert_eq!(
        out["events"][3]["resources"][1],
        json!({ "type": "AWS::IAM::User", "name": "malicious-iam-user" })
    );
    assert_eq!(
        (out["count"].clone(), out["truncated"].clone()),
        (json!(4), json!(false))
    );

    let evidence = &out["evidence"][0];
    assert_eq!(evidence["kind"], "activity-timeline");
    assert_eq!(
        evidence["location"],
        "cloudtrail:us-east-1:Username=christophe@2024-07-31T00:00:00Z/2024-08-02T00:00:00Z"
    );
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(out["events"].to_string()));
    assert_eq!(
        evidence["sha256"], digest,
        "the digest is of the timeline as returned"
    );
    assert_eq!(evidence["incident_id"], "inc-7");

    let seen = cloudtrail.requests();
    assert_eq!(seen.len(), 2, "two pages");
    let (headers, body) = (&seen[0].headers, seen[0].text());
    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .contains("/us-east-1/cloudtrail/aws4_request")
    );
    let request: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        request["LookupAttributes"],
        json!([{ "AttributeKey": "Username", "AttributeValue": "christophe" }])
    );
    assert_eq!(
        (request["StartTime"].clone(), request["EndTime"].clone()),
        (json!(1722384000), json!(1722556800))
    );
    let second: Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(second["NextToken"], "cordon-test-page-2");
    assert_eq!(
        second["LookupAttributes"], request["LookupAttributes"],
        "a next page asks the same"
    );
}

#[tokio::test]
async fn a_lookup_names_exactly_one_thing() {
    let aws = load(&integrations_yaml(
        "http://127.0.0.1:9",
        Some("http://127.0.0.1:9"),
        None,
    ));
    for inputs in [
        json!({ "region": "us-east-1" }),
        json!({ "region": "us-east-1", "username": "alice", "resource_name": "i-0abc" }),
    ] {
        let error = aws
            .call(
                "aws-cloudtrail.lookup_events",
                inputs,
                &call("timeline", None),
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.message,
            "give exactly one of username, access_key_id and resource_name"
        );
    }
    let error = aws
        .call(
            "aws-cloudtrail.lookup_events",
            json!({ "region": "us-east-1", "username": "alice", "since": "2024-08-02T00:00:00Z", "until": "2024-08-01T00:00:00Z" }),
            &call("timeline", None),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "since (2024-08-02T00:00:00Z) must be before until (2024-08-01T00:00:00Z)"
    );
}

// ---------------------------------------------------------------------------------------------
// aws-ssm

// aws-ssm.capture_memory has its own file, tests/memory.rs: it needs a fake instance in front
// of moto's SSM, which reports every command done at once.

// ---------------------------------------------------------------------------------------------
// The stock playbooks through the server

/// Server config: the given stock playbooks, the repo's integrations on moto (and the fake
/// CloudTrail), every source, and the on-call group.
fn server_config(moto: &str, cloudtrail: Option<&str>, playbooks: &[&str]) -> String {
    let files: Vec<String> = playbooks
        .iter()
        .map(|p| format!("\"{}/playbooks/{p}.yaml\"", env!("CARGO_MANIFEST_DIR")))
        .collect();
    format!(
        "playbooks:\n  paths: [{}]\napprovers:\n  on-call: [cli:analyst, cli:lead]\n{}{}",
        files.join(", "),
        integrations_yaml(moto, cloudtrail, None),
        all_sources()
    )
}

/// A GuardDuty sample finding from the shared fixtures, edited by `edit`.
fn guardduty(fixture: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut finding: Value =
        serde_json::from_slice(&read_fixture(&format!("alerts/aws_guardduty/{fixture}"))).unwrap();
    edit(&mut finding);
    serde_json::to_vec(&finding).unwrap()
}

fn tor_relay(instance: &str) -> Vec<u8> {
    guardduty(
        "sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
        |f| {
            f["region"] = json!(REGION);
            f["resource"]["instanceDetails"]["instanceId"] = json!(instance);
        },
    )
}

/// Posts an alert; gives the id of the run it started.
async fn start(server: &TestServer, source: &str, body: Vec<u8>) -> String {
    let answer = server.accept(source, body).await;
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    server.run_for_alert(&alert).await
}

async fn decide(server: &TestServer, run: &str, decision: &str) {
    let (status, body) = server.decide(run, "approve", decision, "cli:analyst").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_guardduty_ec2_finding_is_snapshotted_then_isolated_on_approval_and_undone() {
    let moto = Moto::start().await;
    let w = ec2_world(&moto).await;
    let server =
        TestServer::start_with(&server_config(&moto.base, None, &["aws-ec2-compromise"])).await;
    let run = start(&server, "aws.guardduty", tor_relay(&w.instance)).await;

    let prompt = server.wait_prompt(&run, "approve").await;
    assert!(
        prompt.starts_with(&format!(
            "Isolate EC2 instance {}? UnauthorizedAccess:EC2/TorRelay on {}",
            w.instance, w.instance
        )),
        "{prompt}"
    );
    assert!(prompt.contains("2 volume snapshot(s) taken"), "{prompt}");
    assert_eq!(
        interface_groups(&moto, &w.eth0).await,
        set(&[&w.web, &w.db]),
        "nothing is isolated before the approval"
    );

    decide(&server, &run, "approve").await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    let quarantine = done["run"]["outputs"]["quarantine_group"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(interface_groups(&moto, &w.eth0).await, set(&[&quarantine]));
    assert_eq!(interface_groups(&moto, &w.eth1).await, set(&[&quarantine]));

    let incident = done["run"]["incident_id"].as_str().unwrap();
    let incident = server.admin(&format!("/v1/incidents/{incident}")).await;
    let kinds = texts(&incident["incident"]["evidence"], "kind");
    assert_eq!(kinds, ["ebs-snapshot", "ebs-snapshot"]);

    // Undo through the API, approved by a second person: the interfaces get their groups back.
    let undo = server
        .undo(&run, "isolate", "cli:analyst", "cli:lead")
        .await;
    assert_eq!(undo["run"]["status"], "succeeded", "{undo}");
    assert_eq!(
        undo["run"]["steps"]["undo"]["action"],
        "aws-ec2.release_instance"
    );
    assert_eq!(
        interface_groups(&moto, &w.eth0).await,
        set(&[&w.web, &w.db])
    );
    assert_eq!(interface_groups(&moto, &w.eth1).await, set(&[&w.db]));
}

#[tokio::test]
async fn a_denied_ec2_isolation_leaves_the_network_as_it_was() {
    let moto = Moto::start().await;
    let w = ec2_world(&moto).await;
    let server =
        TestServer::start_with(&server_config(&moto.base, None, &["aws-ec2-compromise"])).await;
    let run = start(&server, "aws.guardduty", tor_relay(&w.instance)).await;
    server.wait_run(&run, "waiting", waiting).await;

    decide(&server, &run, "deny").await;
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["outputs"]["isolated"], false);
    assert_eq!(
        interface_groups(&moto, &w.eth0).await,
        set(&[&w.web, &w.db])
    );
    assert_eq!(interface_groups(&moto, &w.eth1).await, set(&[&w.db]));
    assert!(
        groups_named(&moto, &w.vpc, "cordon-quarantine")
            .await
            .is_empty(),
        "no quarantine group was even made"
    );
    assert!(
        !tags(&moto, &w.instance)
            .await
            .contains_key("cordon:isolated-by")
    );
}

#[tokio::test]
async fn a_guardduty_key_finding_gets_a_timeline_and_the_key_is_disabled_only_when_approved() {
    let moto = Moto::start().await;
    let cloudtrail = fake_cloudtrail().await;
    moto.iam("CreateUser", &[("UserName", "alice")]).await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let xml = moto.iam("CreateAccessKey", &[("UserName", "alice")]).await;
        keys.push(xml_value(&xml, "AccessKeyId"));
    }
    let server = TestServer::start_with(&server_config(
        &moto.base,
        Some(&cloudtrail.base),
        &["aws-credential-compromise"],
    ))
    .await;
    let finding = |key: &str| {
        guardduty(
            "sekoia_detail_accesskey_apicall__UnauthorizedAccess_IAMUser_MaliciousIPCaller.json",
            |f| {
                f["id"] = json!(format!("finding-{key}"));
                f["resource"]["accessKeyDetails"]["accessKeyId"] = json!(key);
                f["resource"]["accessKeyDetails"]["userName"] = json!("alice");
            },
        )
    };
    let status_of = |xml: &str, key: &str| -> String {
        let at = xml
            .find(&format!("<AccessKeyId>{key}</AccessKeyId>"))
            .unwrap();
        xml_value(&xml[at..], "Status")
    };

    // Approved: the first key is disabled.
    let approved = start(&server, "aws.guardduty", finding(&keys[0])).await;
    let prompt = server.wait_prompt(&approved, "approve").await;
    assert!(prompt.contains("4 CloudTrail event(s) in the last 24 h: StopLogging, CreateUser, CreateAccessKey, AttachUserPolicy"), "{prompt}");
    assert!(
        prompt.ends_with(&format!(
            "Contain: disable access key {} of IAM user alice?",
            keys[0]
        )),
        "{prompt}"
    );
    decide(&server, &approved, "approve").await;
    let done = server.wait_run(&approved, "finished", finished).await;
    assert_eq!(
        done["run"]["outputs"]["key_disabled"], true,
        "{}",
        done["run"]
    );

    // Denied: the second key stays active.
    let denied = start(&server, "aws.guardduty", finding(&keys[1])).await;
    server.wait_run(&denied, "waiting", waiting).await;
    decide(&server, &denied, "deny").await;
    let done = server.wait_run(&denied, "finished", finished).await;
    assert_eq!(
        done["run"]["outputs"]["key_disabled"], false,
        "{}",
        done["run"]
    );

    let listed = moto.iam("ListAccessKeys", &[("UserName", "alice")]).await;
    assert_eq!(status_of(&listed, &keys[0]), "Inactive");
    assert_eq!(status_of(&listed, &keys[1]), "Active");

    let incident = done["run"]["incident_id"].as_str().unwrap();
    let incident = server.admin(&format!("/v1/incidents/{incident}")).await;
    let kinds = texts(&incident["incident"]["evidence"], "kind");
    assert!(kinds.contains(&"activity-timeline"), "{kinds:?}");
}

#[tokio::test]
async fn an_exposed_bucket_is_blocked_when_approved_and_left_alone_when_denied() {
    let moto = Moto::start().await;
    create_bucket(&moto, "acme-exports").await;
    create_bucket(&moto, "acme-reports").await;
    let server =
        TestServer::start_with(&server_config(&moto.base, None, &["aws-s3-exposure"])).await;

    let approved = start(
        &server,
        "aws.guardduty",
        guardduty(
            "sekoia_detail_s3bucket_apicall__Discovery_S3_MaliciousIPCaller_Custom.json",
            |f| {
                f["region"] = json!(REGION);
                f["resource"]["s3BucketDetails"][0]["name"] = json!("acme-exports");
            },
        ),
    )
    .await;
    server.wait_run(&approved, "waiting", waiting).await;
    decide(&server, &approved, "approve").await;
    let done = server.wait_run(&approved, "finished", finished).await;
    assert_eq!(done["run"]["outputs"]["blocked"], true, "{}", done["run"]);

    let denied = start(
        &server,
        "aws.guardduty",
        guardduty(
            "sekoia_detail_s3bucket_apicall__Discovery_S3_MaliciousIPCaller_Custom.json",
            |f| {
                f["id"] = json!("another-finding");
                f["region"] = json!(REGION);
                f["resource"]["s3BucketDetails"][0]["name"] = json!("acme-reports");
            },
        ),
    )
    .await;
    server.wait_run(&denied, "waiting", waiting).await;
    decide(&server, &denied, "deny").await;
    let done = server.wait_run(&denied, "finished", finished).await;
    assert_eq!(done["run"]["outputs"]["blocked"], false, "{}", done["run"]);

    assert_eq!(
        public_access_block(&moto, "acme-exports").await,
        settings(["true"; 4])
    );
    assert_eq!(public_access_block(&moto, "acme-reports").await, None);
}
