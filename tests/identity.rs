//! One principal, one incident, whichever source tells of it: pairs of real-shaped alerts from the
//! shared fixtures, posted over real HTTP, joining one incident when they are about one principal
//! (by its account-qualified key, docs/alerts.md "Identity keys") and not when only a name agrees.

mod support;

use serde_json::{Value, json};
use support::*;

const ACCOUNT: &str = "562283505220";
const OTHER_ACCOUNT: &str = "999988887777";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ALICE_OID: &str = "b0b2c3d4-0000-1111-2222-333344445555";

fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&read_fixture(&format!("alerts/{rel}"))).unwrap()
}

/// The incident `body` (posted to `source`) lands in.
async fn incident_of(server: &TestServer, source: &str, body: &Value) -> String {
    let answer = server.accept(source, body.to_string()).await;
    assert_eq!(answer["alerts"][0]["duplicate"], false, "{answer}");
    answer["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Stratus Red Team's console sign-in without MFA (CloudTrail), by IAM user `user` of `account`,
/// as event `event_id`.
fn cloudtrail_login(account: &str, user: &str, event_id: &str) -> Value {
    let mut record =
        fixture_json("aws_cloudtrail/stratus_console_login_without_mfa.json")[0].clone();
    record["eventID"] = json!(event_id);
    record["recipientAccountId"] = json!(account);
    record["userIdentity"] = json!({
        "accountId": account,
        "arn": format!("arn:aws:iam::{account}:user/{user}"),
        "principalId": "AIDA1ERT0661IN5R239V",
        "type": "IAMUser",
        "userName": user,
    });
    record
}

/// The same sign-in by a session of role `role` (as an SSO or federated console sign-in is).
fn cloudtrail_role_login(account: &str, role: &str, session: &str, event_id: &str) -> Value {
    let mut record = cloudtrail_login(account, "x", event_id);
    record["userIdentity"] = json!({
        "type": "AssumedRole",
        "principalId": format!("AROA1ERT0661IN5R239V:{session}"),
        "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
        "accountId": account,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROA1ERT0661IN5R239V",
                "arn": format!("arn:aws:iam::{account}:role/{role}"),
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2024-08-02T08:50:00Z", "mfaAuthenticated": "false"},
        },
    });
    record
}

/// GuardDuty's sample `UnauthorizedAccess:IAMUser/MaliciousIPCaller` finding, about principal
/// `name` (`userType` `user_type`) of `account`, with finding id `id`.
fn guardduty_finding(account: &str, user_type: &str, name: &str, id: &str) -> Value {
    let mut finding = fixture_json(
        "aws_guardduty/sekoia_detail_accesskey_apicall__UnauthorizedAccess_IAMUser_MaliciousIPCaller.json",
    );
    finding["id"] = json!(id);
    finding["accountId"] = json!(account);
    finding["arn"] = json!(format!(
        "arn:aws:guardduty:us-east-1:{account}:detector/d/finding/{id}"
    ));
    let key = &mut finding["resource"]["accessKeyDetails"];
    key["userType"] = json!(user_type);
    key["userName"] = json!(name);
    finding
}

#[tokio::test]
async fn guardduty_and_cloudtrail_about_one_iam_user_join_one_incident_and_another_account_does_not()
 {
    let server = TestServer::start().await;
    let user = "stratus-red-team-nmfalu-jfzdtsvchl";
    let login = incident_of(
        &server,
        "aws.cloudtrail",
        &cloudtrail_login(ACCOUNT, user, "865d9377-9c6b-4fd7-8aad-725e95f6a140"),
    )
    .await;
    // GuardDuty names the user by name only; its finding's account makes it the same user.
    let finding = incident_of(
        &server,
        "aws.guardduty",
        &guardduty_finding(ACCOUNT, "IAMUser", user, "16dd674a4cb5437c9a66d14f11839b02"),
    )
    .await;
    assert_eq!(finding, login, "one user, one incident");

    // The same user name in another account is another user.
    let other = incident_of(
        &server,
        "aws.guardduty",
        &guardduty_finding(
            OTHER_ACCOUNT,
            "IAMUser",
            user,
            "26dd674a4cb5437c9a66d14f11839b02",
        ),
    )
    .await;
    assert_ne!(other, login);
    let other_login = incident_of(
        &server,
        "aws.cloudtrail",
        &cloudtrail_login(OTHER_ACCOUNT, user, "965d9377-9c6b-4fd7-8aad-725e95f6a140"),
    )
    .await;
    assert_eq!(other_login, other);

    let incident = server.admin(&format!("/v1/incidents/{login}")).await;
    assert_eq!(incident["incident"]["alert_count"], 2, "{incident}");
    assert_eq!(
        incident["incident"]["entity"],
        format!("actor:aws:{ACCOUNT}:user/{user}")
    );
    // The actor's id is still each source's own, for playbooks.
    let actors: Vec<&str> = incident["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["actor"]["id"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&user), "{actors:?}");
    assert!(
        actors.contains(&format!("arn:aws:iam::{ACCOUNT}:user/{user}").as_str()),
        "{actors:?}"
    );
}

#[tokio::test]
async fn sessions_of_a_role_and_a_finding_about_the_role_join_one_incident() {
    let server = TestServer::start().await;
    let first = incident_of(
        &server,
        "aws.cloudtrail",
        &cloudtrail_role_login(ACCOUNT, "SOCAdmin", "alice", "e1"),
    )
    .await;
    let second = incident_of(
        &server,
        "aws.cloudtrail",
        &cloudtrail_role_login(ACCOUNT, "SOCAdmin", "bob", "e2"),
    )
    .await;
    assert_eq!(second, first, "two sessions of one role");
    let finding = incident_of(
        &server,
        "aws.guardduty",
        &guardduty_finding(
            ACCOUNT,
            "AssumedRole",
            "SOCAdmin",
            "36dd674a4cb5437c9a66d14f11839b02",
        ),
    )
    .await;
    assert_eq!(finding, first, "GuardDuty's finding about the role");
    let elsewhere = incident_of(
        &server,
        "aws.cloudtrail",
        &cloudtrail_role_login(OTHER_ACCOUNT, "SOCAdmin", "alice", "e3"),
    )
    .await;
    assert_ne!(
        elsewhere, first,
        "the role of the same name in another account"
    );
    let incident = server.admin(&format!("/v1/incidents/{first}")).await;
    assert_eq!(
        incident["incident"]["entity"],
        format!("actor:aws:{ACCOUNT}:role/SOCAdmin")
    );
}

/// Defender for Cloud's example alert, as a Defender for Resource Manager alert about Entra ID
/// user `oid` (UPN alice@contoso.com) acting on its subscription.
fn defender_alert(oid: &str, alert_id: &str) -> Value {
    let mut alert = fixture_json("azure/defender_for_cloud_alert_arm_example_2022-01-01.json")
        ["responses"]["200"]["body"]
        .clone();
    let props = &mut alert["properties"];
    props["alertType"] = json!("ARM_AnomalousOperation.Persistence");
    props["systemAlertId"] = json!(alert_id);
    props["alertDisplayName"] =
        json!("Suspicious invocation of a high-risk 'Persistence' operation detected");
    props["compromisedEntity"] = json!("alice@contoso.com");
    props["resourceIdentifiers"] = json!([{
        "type": "AzureResource",
        "azureResourceId": "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23",
    }]);
    props["entities"] = json!([
        {"$id": "1", "type": "account", "name": "alice", "upnSuffix": "contoso.com",
         "aadTenantId": TENANT, "aadUserId": oid},
        {"$id": "2", "type": "ip", "address": "192.0.2.1"},
    ]);
    alert
}

/// Sentinel's example incident as the Logic App incident trigger sends it, its related entities
/// naming Entra ID user `oid`.
fn sentinel_trigger(oid: &str, incident_name: &str) -> Value {
    let mut incident = fixture_json("azure/sentinel_incident_arm_example_2024-09-01.json")
        ["responses"]["200"]["body"]
        .clone();
    incident["name"] = json!(incident_name);
    let props = &mut incident["properties"];
    props["status"] = json!("New");
    props["classification"] = Value::Null;
    props["relatedEntities"] = json!([
        {"id": "/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/entities/e1",
         "name": "e1", "type": "Microsoft.SecurityInsights/entities", "kind": "Account",
         "properties": {"accountName": "alice", "upnSuffix": "contoso.com", "aadTenantId": TENANT,
                        "aadUserId": oid, "displayName": "Alice", "friendlyName": "alice"}},
        {"id": "e2", "name": "e2", "type": "Microsoft.SecurityInsights/entities", "kind": "Ip",
         "properties": {"address": "192.0.2.1", "friendlyName": "192.0.2.1"}},
    ]);
    json!({
        "eventUniqueId": "e632ac8e-b6bb-4a71-ae4e-5e1f2b3c4d5e",
        "objectSchemaType": "Incident",
        "objectEventType": "Create",
        "workspaceInfo": {"SubscriptionId": "d0cfe6b2-9ac0-4464-9919-dccaee2e48c0",
                          "ResourceGroupName": "myRg", "WorkspaceName": "myWorkspace"},
        "workspaceId": "f419f624-acad-4d89-b86d-f62fa387f019",
        "object": incident,
    })
}

#[tokio::test]
async fn defender_and_sentinel_about_one_entra_user_join_one_incident() {
    let server = TestServer::start().await;
    let defender = incident_of(&server, "azure.defender", &defender_alert(ALICE_OID, "a-1")).await;
    let sentinel = incident_of(
        &server,
        "azure.sentinel",
        &sentinel_trigger(ALICE_OID, "73e01a99-5cd7-4139-a149-9f2736ff2ab5"),
    )
    .await;
    assert_eq!(sentinel, defender);
    // Another user with the same name (another object id) is another incident.
    let other = incident_of(
        &server,
        "azure.sentinel",
        &sentinel_trigger(
            "c0c0c0c0-0000-1111-2222-333344445555",
            "83e01a99-5cd7-4139-a149-9f2736ff2ab5",
        ),
    )
    .await;
    assert_ne!(other, defender);
    let incident = server.admin(&format!("/v1/incidents/{defender}")).await;
    assert_eq!(
        incident["incident"]["entity"],
        format!("actor:azure:{TENANT}:{ALICE_OID}")
    );
    // The UPN stays the actor's id: what the azure-risky-user playbook hands to Graph.
    for alert in incident["alerts"].as_array().unwrap() {
        assert_eq!(alert["actor"]["id"], "alice@contoso.com", "{alert}");
    }
}

/// Event Threat Detection's bad-IP notification (SCC), as finding `name` of `category` by
/// `principal` in project `project`.
fn scc_finding(name: &str, category: &str, principal: &str, project: &str) -> Value {
    let mut notification = fixture_json("gcp_scc/sra_notification_etd_bad_ip.json");
    let finding = &mut notification["finding"];
    finding["name"] = json!(format!(
        "organizations/0000000000000/sources/0000000000000000000/findings/{name}"
    ));
    finding["category"] = json!(category);
    finding["resourceName"] = json!(format!(
        "//cloudresourcemanager.googleapis.com/projects/{project}"
    ));
    finding["access"] = json!({"principalEmail": principal, "callerIp": "203.0.113.7"});
    // About the project, not the instance the sample names.
    finding["sourceProperties"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("instanceDetails");
    notification
}

#[tokio::test]
async fn scc_findings_of_two_categories_about_one_service_account_join_one_incident() {
    let server = TestServer::start().await;
    let account = "deployer@soc-prod.iam.gserviceaccount.com";
    let bad_ip = incident_of(
        &server,
        "gcp.scc",
        &scc_finding("f1", "C2: Bad IP", account, "111111111111"),
    )
    .await;
    let grant = incident_of(
        &server,
        "gcp.scc",
        &scc_finding(
            "f2",
            "Persistence: IAM Anomalous Grant",
            account,
            "222222222222",
        ),
    )
    .await;
    assert_eq!(grant, bad_ip, "one service account, two projects' findings");
    // The same account name in another project is another account.
    let other = incident_of(
        &server,
        "gcp.scc",
        &scc_finding(
            "f3",
            "Persistence: IAM Anomalous Grant",
            "deployer@soc-test.iam.gserviceaccount.com",
            "222222222222",
        ),
    )
    .await;
    assert_ne!(other, bad_ip);
    let incident = server.admin(&format!("/v1/incidents/{bad_ip}")).await;
    assert_eq!(
        incident["incident"]["entity"],
        format!("actor:gcp:soc-prod:{account}")
    );
}
