//! Where the AWS integrations' credentials come from (src/integrations/aws_credentials.rs):
//! a role assumed per account through moto's STS, with a containment run in two accounts in one
//! incident and the role of each action in the audit; the default chain against a fake IMDSv2 and
//! a fake container credentials endpoint that answer as AWS documents them, and a web identity
//! token file exchanged at moto's STS; and one refresh for ten callers when credentials expire.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use cordon::config::Credentials;
use cordon::integrations::aws_credentials::{AwsProvider, Env};
use serde_json::{Value, json};
use support::moto::{Moto, QueryApi, xml_value, xml_values};
use support::*;

const REGION: &str = "eu-west-2";
const ACCOUNT_A: &str = "111111111111";
const ACCOUNT_B: &str = "222222222222";

fn role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/cordon-responder")
}

/// An instance in the account of `key` with one network interface on a group of its own: the
/// instance, the interface and the group.
async fn instance_in(moto: &Moto, key: &str) -> (String, String, String) {
    let ec2 = QueryApi::ec2(REGION);
    let vpc = xml_value(
        &moto
            .query_as(key, ec2, "CreateVpc", &[("CidrBlock", "10.1.0.0/16")])
            .await,
        "vpcId",
    );
    let subnet = xml_value(
        &moto
            .query_as(
                key,
                ec2,
                "CreateSubnet",
                &[
                    ("VpcId", &vpc),
                    ("CidrBlock", "10.1.1.0/24"),
                    ("AvailabilityZone", "eu-west-2a"),
                ],
            )
            .await,
        "subnetId",
    );
    let group = xml_value(
        &moto
            .query_as(
                key,
                ec2,
                "CreateSecurityGroup",
                &[
                    ("VpcId", &vpc),
                    ("GroupName", "app"),
                    ("GroupDescription", "app"),
                ],
            )
            .await,
        "groupId",
    );
    let launched = moto
        .query_as(
            key,
            ec2,
            "RunInstances",
            &[
                ("ImageId", "ami-12c6146b"),
                ("InstanceType", "t3.micro"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("NetworkInterface.1.DeviceIndex", "0"),
                ("NetworkInterface.1.SubnetId", &subnet),
                ("NetworkInterface.1.SecurityGroupId.1", &group),
            ],
        )
        .await;
    (
        xml_value(&launched, "instanceId"),
        xml_value(&launched, "networkInterfaceId"),
        group,
    )
}

/// The groups of a network interface, read in the account of `key`.
async fn interface_groups(moto: &Moto, key: &str, eni: &str) -> BTreeSet<String> {
    let xml = moto
        .query_as(
            key,
            QueryApi::ec2(REGION),
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", eni)],
        )
        .await;
    xml_values(&xml, "groupId").into_iter().collect()
}

#[tokio::test]
async fn a_role_is_assumed_per_account_and_one_incident_is_contained_in_both() {
    let moto = Moto::start().await;
    let key_a = moto.key_in(&role(ACCOUNT_A)).await;
    let key_b = moto.key_in(&role(ACCOUNT_B)).await;
    let (instance_a, eni_a, group_a) = instance_in(&moto, &key_a).await;
    let (instance_b, eni_b, group_b) = instance_in(&moto, &key_b).await;

    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    // A principal seen in two accounts: one incident, one run, an instance isolated in each.
    write_playbook(
        &playbooks,
        "contain-both",
        r#"id: contain-both
name: Isolate the instances an alert names, each in its account
on:
  source: generic
steps:
  - id: isolate
    foreach:
      items: alert.raw.instances
      as: target
      steps:
        - id: instance
          uses: aws-ec2.isolate_instance
          with:
            instance_id: "${{ target.id }}"
            region: eu-west-2
            account: "${{ target.account }}"
"#,
    );
    let config = format!(
        r#"playbooks:
  paths: ["{playbooks}"]
integrations:
  paths: ["{repo}/integrations"]
  credentials:
    aws:
      access_key_id: AKIAIOSFODNN7EXAMPLE
      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
      region: {REGION}
      roles:
        "{ACCOUNT_A}": {{ role_arn: "{role_a}", external_id: soc-7, session_name: cordon-soc }}
        "*": {{ role_arn: "{role_b}" }}
      endpoints:
        "ec2.*.amazonaws.com": "{moto}"
        "sts.*.amazonaws.com": "{moto}"
{sources}"#,
        playbooks = playbooks.display(),
        repo = env!("CARGO_MANIFEST_DIR"),
        role_a = role(ACCOUNT_A),
        role_b = role(ACCOUNT_B),
        moto = moto.base,
        sources = all_sources(),
    );
    let server = TestServer::start_in(dir, &config).await;
    let alert = json!({
        "title": "Access key used from two accounts",
        "kind": "multi-account",
        "severity": 8,
        "resource": { "kind": "aws.ec2.instance", "id": instance_a, "account": ACCOUNT_A },
        "instances": [
            { "id": instance_a, "account": ACCOUNT_A },
            { "id": instance_b, "account": ACCOUNT_B },
        ],
    });
    let (status, body) = server.post_generic(alert.to_string().as_bytes()).await;
    assert_eq!(status, 202, "{body}");
    let alert = body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;
    let shown = server
        .wait_run(&run, "finished", |r| {
            ["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(shown["run"]["status"], "succeeded", "{}", shown["run"]);

    // Each instance is cut off in its own account, with a quarantine group made there.
    let steps = &shown["run"]["steps"];
    for (address, key, eni, group, account) in [
        ("instance[0]", &key_a, &eni_a, &group_a, ACCOUNT_A),
        ("instance[1]", &key_b, &eni_b, &group_b, ACCOUNT_B),
    ] {
        let output = &steps[address]["output"];
        let quarantine = output["quarantine_group"].as_str().unwrap_or_else(|| {
            panic!("{address}: {output}; steps: {steps}");
        });
        let groups = interface_groups(&moto, key, eni).await;
        assert_eq!(groups, BTreeSet::from([quarantine.to_owned()]), "{address}");
        assert!(!groups.contains(group.as_str()));
        assert_eq!(output["acted_as"], role(account), "{address}");
        // The audit says which role acted, step by step.
        let finished: Vec<&Value> = shown["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "step.finished" && e["step"] == address)
            .collect();
        assert_eq!(finished.len(), 1, "{address}");
        assert_eq!(finished[0]["detail"]["acted_as"], role(account));
    }
    // The group of account A is not in account B: each account was changed by its own role.
    let in_b = moto
        .query_as(&key_b, QueryApi::ec2(REGION), "DescribeSecurityGroups", &[])
        .await;
    let quarantine_a = steps["instance[0]"]["output"]["quarantine_group"]
        .as_str()
        .unwrap();
    assert!(!in_b.contains(quarantine_a), "{in_b}");
    let verify = server.admin("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
}

/// Serves AWS-shaped credentials as IMDSv2 does (a session token first, then the role's
/// credentials for that token only) and as the container endpoint does (for its authorization
/// token only), counting the credential requests.
struct FakeMetadata {
    base: String,
    served: Arc<AtomicUsize>,
}

const IMDS_TOKEN: &str = "imds-session-token-1";
const CONTAINER_TOKEN: &str = "pod-identity-token-9";

impl FakeMetadata {
    /// `lifetime`: how long each set of credentials lasts.
    async fn start(lifetime: Duration) -> FakeMetadata {
        let served = Arc::new(AtomicUsize::new(0));
        let credentials = {
            let served = served.clone();
            move || {
                let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                let expiration =
                    chrono::Utc::now() + chrono::TimeDelta::from_std(lifetime).unwrap();
                json!({
                    "Code": "Success",
                    "LastUpdated": chrono::Utc::now().to_rfc3339(),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": format!("ASIAFAKE{n:08}"),
                    "SecretAccessKey": format!("secret-{n}"),
                    "Token": format!("session-{n}"),
                    "Expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
            }
        };
        let imds = credentials.clone();
        let app = Router::new()
            .route(
                "/latest/api/token",
                put(|headers: HeaderMap| async move {
                    match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                        Some(_) => (StatusCode::OK, IMDS_TOKEN.to_owned()),
                        None => (StatusCode::BAD_REQUEST, String::new()),
                    }
                }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(|headers: HeaderMap| async move {
                    if headers
                        .get("x-aws-ec2-metadata-token")
                        .map(|v| v.as_bytes())
                        == Some(IMDS_TOKEN.as_bytes())
                    {
                        (StatusCode::OK, "cordon-instance-role\n".to_owned())
                    } else {
                        (StatusCode::UNAUTHORIZED, String::new())
                    }
                }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/cordon-instance-role",
                get(move |headers: HeaderMap| async move {
                    if headers
                        .get("x-aws-ec2-metadata-token")
                        .map(|v| v.as_bytes())
                        == Some(IMDS_TOKEN.as_bytes())
                    {
                        (StatusCode::OK, imds().to_string())
                    } else {
                        (StatusCode::UNAUTHORIZED, String::new())
                    }
                }),
            )
            .route(
                "/v1/credentials",
                get(move |headers: HeaderMap| async move {
                    if headers.get("authorization").map(|v| v.as_bytes())
                        == Some(CONTAINER_TOKEN.as_bytes())
                    {
                        (StatusCode::OK, credentials().to_string())
                    } else {
                        (StatusCode::FORBIDDEN, String::new())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeMetadata { base, served }
    }
}

fn env(pairs: &[(&str, &str)]) -> Env {
    let mut env: Env = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // No shared files: HOME points nowhere.
    env.entry("HOME".into())
        .or_insert_with(|| "/nonexistent-home".into());
    env
}

fn chain(extra: &str) -> Credentials {
    let yaml = format!("{{ {extra} }}");
    serde_yaml::from_str(&yaml).unwrap()
}

#[tokio::test]
async fn the_chain_finds_the_instance_profile_through_imds_v2() {
    let fake = FakeMetadata::start(Duration::from_secs(3600)).await;
    let provider = AwsProvider::new(
        reqwest::Client::new(),
        &chain(""),
        env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &fake.base)]),
    )
    .unwrap();
    let signing = provider.signing(None).await.unwrap();
    assert_eq!(
        signing.credentials.access_key_id.expose(),
        "ASIAFAKE00000001"
    );
    assert_eq!(
        signing.credentials.session_token.as_ref().unwrap().expose(),
        "session-1"
    );
    assert_eq!(signing.identity, "instance profile cordon-instance-role");
    assert_eq!(signing.role, None);
    // Cached: the next request is signed with the same credentials, fetched once.
    provider.signing(None).await.unwrap();
    assert_eq!(fake.served.load(Ordering::SeqCst), 1);

    // Disabled, the chain says what it looked for instead of calling the service.
    let off = AwsProvider::new(
        reqwest::Client::new(),
        &chain(""),
        env(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &fake.base),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]),
    )
    .unwrap();
    let error = off.signing(None).await.err().unwrap();
    assert!(error.message.contains("no AWS credentials"), "{error}");
    assert_eq!(fake.served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_chain_uses_the_container_endpoint_with_its_token_file_and_refuses_a_foreign_one() {
    let fake = FakeMetadata::start(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token, CONTAINER_TOKEN).unwrap();
    let url = format!("{}/v1/credentials", fake.base);
    let provider = AwsProvider::new(
        reqwest::Client::new(),
        &chain(""),
        env(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.to_str().unwrap(),
            ),
            // Lower in the chain than the container endpoint: never asked.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"),
        ]),
    )
    .unwrap();
    let signing = provider.signing(None).await.unwrap();
    assert_eq!(signing.identity, "container");
    assert_eq!(signing.credentials.secret_access_key.expose(), "secret-1");

    // A token the endpoint does not know is refused, and the error carries no credential.
    std::fs::write(&token, "stolen").unwrap();
    let wrong = AwsProvider::new(
        reqwest::Client::new(),
        &chain(""),
        env(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.to_str().unwrap(),
            ),
        ]),
    )
    .unwrap();
    let error = wrong.signing(None).await.err().unwrap();
    assert!(error.message.contains("403"), "{error}");
    assert!(!error.message.contains("stolen"), "{error}");

    // A full URI on another host than the agent's is never called.
    let foreign = AwsProvider::new(
        reqwest::Client::new(),
        &chain(""),
        env(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.0.0.8/creds",
        )]),
    )
    .unwrap();
    let error = foreign.signing(None).await.err().unwrap();
    assert!(error.message.contains("must be HTTPS"), "{error}");
}

#[tokio::test]
async fn a_web_identity_token_file_is_exchanged_at_sts_and_a_role_assumed_with_it() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c29jOmNvcmRvbiJ9.c2ln",
    )
    .unwrap();
    let own = "arn:aws:iam::333333333333:role/cordon-irsa";
    let credentials = chain(&format!(
        r#"roles: {{ "{ACCOUNT_A}": {{ role_arn: "{}" }} }}, endpoints: {{ "sts.*.amazonaws.com": "{}" }}"#,
        role(ACCOUNT_A),
        moto.base
    ));
    let provider = AwsProvider::new(
        reqwest::Client::new(),
        &credentials,
        env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", own),
            ("AWS_REGION", REGION),
        ]),
    )
    .unwrap();
    let base = provider.signing(None).await.unwrap();
    assert_eq!(base.identity, format!("web identity {own}"));
    assert!(base.credentials.session_token.is_some());
    // moto gives the key of an assumed role to the role's account: it is Cordon's own account.
    let who = moto
        .query_as(
            base.credentials.access_key_id.expose(),
            QueryApi {
                service: "sts",
                region: "us-east-1",
                version: "2011-06-15",
            },
            "GetCallerIdentity",
            &[],
        )
        .await;
    assert_eq!(xml_value(&who, "Account"), "333333333333", "{who}");

    // For a resource in account A, the role there is assumed with those credentials.
    let in_a = provider.signing(Some(ACCOUNT_A)).await.unwrap();
    assert_eq!(in_a.role.as_deref(), Some(role(ACCOUNT_A).as_str()));
    assert_ne!(
        in_a.credentials.access_key_id.expose(),
        base.credentials.access_key_id.expose()
    );
    // An account with no role (and no `*`) is acted on by Cordon's own identity.
    let other = provider.signing(Some("444444444444")).await.unwrap();
    assert_eq!(other.role, None);
}

#[tokio::test]
async fn expired_credentials_are_fetched_once_for_ten_steps_at_once() {
    // Credentials that last 2 s are renewed after 1 s (half their life).
    let fake = FakeMetadata::start(Duration::from_secs(2)).await;
    let provider = Arc::new(
        AwsProvider::new(
            reqwest::Client::new(),
            &chain(""),
            env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &fake.base)]),
        )
        .unwrap(),
    );
    let first = provider.signing(None).await.unwrap();
    assert_eq!(first.credentials.access_key_id.expose(), "ASIAFAKE00000001");
    // Credentials expire by the clock: let it pass their renewal time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let steps: Vec<_> = (0..10)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.signing(None).await.unwrap() })
        })
        .collect();
    for step in steps {
        let signing = step.await.unwrap();
        assert_eq!(
            signing.credentials.access_key_id.expose(),
            "ASIAFAKE00000002"
        );
    }
    assert_eq!(
        fake.served.load(Ordering::SeqCst),
        2,
        "one refresh served all ten"
    );
}
