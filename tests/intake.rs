//! Alert intake over real HTTP on 127.0.0.1:0: authentication, limits, refusals that store nothing,
//! dedup and incident grouping, SNS delivery, health and metrics.

mod support;

use serde_json::{Value, json};
use support::*;

/// Asserts a refusal: the status, the JSON error code, a message naming `mentions`, nothing stored,
/// and the refusal counted in metrics under `reason`.
async fn assert_refused(
    server: &TestServer,
    (status, body): (u16, Value),
    want: u16,
    code: &str,
    mentions: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "message `{message}` should mention `{mentions}`"
    );
    assert!(
        server.stored_alerts().await.is_empty(),
        "a refused request stored an alert"
    );
    assert!(
        server.stored_incidents().await.is_empty(),
        "a refused request opened an incident"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cordon_alerts_rejected_total")
                && l.contains(&format!("reason=\"{code}\""))),
        "refusal `{code}` not counted:\n{metrics}"
    );
}

#[tokio::test]
async fn an_accepted_alert_is_stored_with_its_ids() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_generic(&generic_alert("Suspicious login", "host-1"))
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted = &body["alerts"][0];
    let alert_id = accepted["alert_id"].as_str().unwrap();
    let incident_id = accepted["incident_id"].as_str().unwrap();
    assert_eq!(accepted["duplicate"], false);

    let stored = server.admin(&format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(stored["alert"]["title"], "Suspicious login");
    assert_eq!(stored["alert"]["incident_id"], incident_id);
    assert_eq!(
        stored["alert"]["raw"]["resource"]["id"], "host-1",
        "raw payload kept"
    );
    let incident = server.admin(&format!("/v1/incidents/{incident_id}")).await;
    assert_eq!(incident["incident"]["alert_count"], 1);
    assert_eq!(incident["alerts"][0]["id"], alert_id);
}

#[tokio::test]
async fn unknown_and_disabled_sources_are_404() {
    let disabled = "sources:\n  falco:\n    enabled: false\n    auth:\n      bearer:\n        token: test-intake-token\n";
    let server = TestServer::start_with(disabled).await;
    let response = server.post_alert("splunk", "{}").await;
    assert_refused(&server, response, 404, "unknown_source", "aws.guardduty").await;
    let response = server.post_alert("falco", "{}").await;
    assert_refused(&server, response, 404, "source_disabled", "falco").await;
    let response = server.post_alert("alertmanager", "{}").await;
    assert_refused(&server, response, 404, "source_disabled", "not enabled").await;
}

#[tokio::test]
async fn missing_or_wrong_bearer_token_is_401() {
    let server = TestServer::start().await;
    let body = read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json");
    let url = format!("{}/v1/alerts/falco", server.base);
    let response = server.send(server.http.post(&url).body(body.clone())).await;
    assert_refused(&server, response, 401, "unauthorized", "Authorization").await;
    let response = server
        .send(
            server
                .http
                .post(&url)
                .bearer_auth("not-the-token")
                .body(body.clone()),
        )
        .await;
    assert_refused(&server, response, 401, "unauthorized", "not valid").await;
    let response = server
        .send(server.http.post(&url).basic_auth("u", Some("p")).body(body))
        .await;
    assert_refused(&server, response, 401, "unauthorized", "Bearer").await;
}

#[tokio::test]
async fn hmac_signature_must_match_and_be_fresh() {
    let server = TestServer::start().await;
    let body = generic_alert("x", "host-1");
    let url = format!("{}/v1/alerts/generic", server.base);
    let now = chrono::Utc::now().timestamp();
    let sign = |ts: i64, secret: &str| cordon::intake::verify::hmac_signature(secret, ts, &body);

    let response = server.send(server.http.post(&url).body(body.clone())).await;
    assert_refused(&server, response, 401, "unauthorized", "x-cordon-timestamp").await;

    let wrong = server
        .http
        .post(&url)
        .header("x-cordon-timestamp", now.to_string())
        .header("x-cordon-signature", sign(now, "another-secret"))
        .body(body.clone());
    assert_refused(
        &server,
        server.send(wrong).await,
        401,
        "unauthorized",
        "does not match",
    )
    .await;

    let tampered = server
        .http
        .post(&url)
        .header("x-cordon-timestamp", now.to_string())
        .header("x-cordon-signature", sign(now, HMAC_SECRET))
        .body(generic_alert("y", "host-1"));
    assert_refused(
        &server,
        server.send(tampered).await,
        401,
        "unauthorized",
        "does not match",
    )
    .await;

    let stale_ts = now - 600;
    let stale = server
        .http
        .post(&url)
        .header("x-cordon-timestamp", stale_ts.to_string())
        .header("x-cordon-signature", sign(stale_ts, HMAC_SECRET))
        .body(body.clone());
    assert_refused(
        &server,
        server.send(stale).await,
        401,
        "stale_timestamp",
        "replay window",
    )
    .await;

    let good = server
        .http
        .post(&url)
        .header("x-cordon-timestamp", now.to_string())
        .header("x-cordon-signature", sign(now, HMAC_SECRET))
        .body(body);
    assert_eq!(server.send(good).await.0, 202);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_or_without_content_length() {
    let limited = format!(
        "{}  falco:\n    max_body_bytes: 100\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
        "sources:\n"
    );
    let server = TestServer::start_with(&limited).await;
    let body = read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json");
    assert!(body.len() > 100);
    let response = server.post_alert("falco", body.clone()).await;
    assert_refused(&server, response, 413, "too_large", "100 bytes").await;

    // Chunked, so the size is only known while reading.
    let stream = futures_stream(body);
    let response = server
        .send(
            server
                .http
                .post(format!("{}/v1/alerts/falco", server.base))
                .bearer_auth(INTAKE_TOKEN)
                .body(stream),
        )
        .await;
    assert_refused(&server, response, 413, "too_large", "100 bytes").await;
}

fn futures_stream(body: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(16).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(tokio_stream_iter(chunks))
}

fn tokio_stream_iter(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Iter(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test]
async fn unparseable_payloads_are_400_naming_the_problem() {
    let server = TestServer::start().await;
    let response = server.post_alert("falco", "this is not json").await;
    assert_refused(&server, response, 400, "bad_payload", "not valid JSON").await;
    let response = server
        .post_alert("aws.guardduty", r#"{"hello": "world"}"#)
        .await;
    assert_refused(&server, response, 400, "bad_payload", "aws.guardduty").await;
    let response = server
        .post_alert("alertmanager", r#"{"version": "4", "alerts": []}"#)
        .await;
    assert_refused(&server, response, 400, "bad_payload", "alertmanager").await;
    let (status, body) = server.post_generic(br#"{"severity": 5}"#).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_payload")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("title"),
        "{body}"
    );
    assert!(server.stored_alerts().await.is_empty());
}

#[tokio::test]
async fn a_repeat_inside_the_window_counts_instead_of_creating_another() {
    let server = TestServer::start().await;
    let body = read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json");
    let (_, first) = server.post_alert("falco", body.clone()).await;
    let (status, second) = server.post_alert("falco", body.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(second["alerts"][0]["duplicate"], true);
    assert_eq!(second["alerts"][0]["repeat_count"], 2);
    assert_eq!(
        second["alerts"][0]["alert_id"],
        first["alerts"][0]["alert_id"]
    );
    let (_, third) = server.post_alert("falco", body).await;
    assert_eq!(third["alerts"][0]["repeat_count"], 3);

    let alerts = server.stored_alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["repeat_count"], 3);
    let incidents = server.stored_incidents().await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        (
            incidents[0]["alert_count"].as_u64(),
            incidents[0]["event_count"].as_u64()
        ),
        (Some(1), Some(3))
    );
}

#[tokio::test]
async fn windows_expire_repeats_and_incidents() {
    let sources = all_sources();
    let server = TestServer::start_with(&format!(
        "grouping:\n  dedup_window: 50ms\n  incident_window: 50ms\n{sources}"
    ))
    .await;
    let (_, first) = server.post_generic(&generic_alert("a", "host-1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    let (_, again) = server.post_generic(&generic_alert("a", "host-1")).await;
    assert_eq!(
        again["alerts"][0]["duplicate"], false,
        "the dedup window passed"
    );
    assert_ne!(
        again["alerts"][0]["incident_id"], first["alerts"][0]["incident_id"],
        "the incident window passed"
    );
    assert_eq!(server.stored_alerts().await.len(), 2);
    assert_eq!(server.stored_incidents().await.len(), 2);
}

#[tokio::test]
async fn alerts_about_one_entity_join_one_incident() {
    let server = TestServer::start().await;
    let (_, a) = server
        .post_generic(&generic_alert("Port scan", "i-0abc"))
        .await;
    let (_, b) = server
        .post_generic(&generic_alert("Crypto miner", "i-0abc"))
        .await;
    let (_, c) = server
        .post_generic(&generic_alert("Port scan", "i-0def"))
        .await;
    let incident = |v: &Value| v["alerts"][0]["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(incident(&a), incident(&b));
    assert_ne!(incident(&a), incident(&c));
    assert_eq!(b["alerts"][0]["new_incident"], false);

    // Identity alerts group by actor, whatever resource they name.
    let by_actor = |resource: &str| {
        serde_json::to_vec(&json!({
            "title": format!("API call on {resource}"),
            "resource": { "kind": "aws.iam.access_key", "id": resource },
            "actor": { "kind": "aws.iam.user", "id": "arn:aws:iam::123456789012:user/mallory" },
        }))
        .unwrap()
    };
    let (_, d) = server.post_generic(&by_actor("AKIA1")).await;
    let (_, e) = server.post_generic(&by_actor("AKIA2")).await;
    assert_eq!(incident(&d), incident(&e));

    let shown = server
        .admin(&format!("/v1/incidents/{}", incident(&a)))
        .await;
    assert_eq!(shown["incident"]["alert_count"], 2);
    assert_eq!(shown["alerts"].as_array().unwrap().len(), 2);
}

/// A Falco event and a GuardDuty EKS Runtime Monitoring finding about one pod: the shared fixtures,
/// with the cluster name Falcosidekick's `customfields` would add, and with the workload that
/// EKS Runtime Monitoring findings carry (`resource.kubernetesDetails.kubernetesWorkloadDetails`,
/// as GuardDuty's finding reference describes it) in place of the sample's null.
fn pod_alerts(cluster: &str, guardduty_cluster: &str) -> (Vec<u8>, Vec<u8>) {
    let mut falco: Value = serde_json::from_slice(
        &std::fs::read(fixture(
            "alerts/falco/falco_docs_json_output_shell_in_container.json",
        ))
        .unwrap(),
    )
    .unwrap();
    falco["output_fields"]["k8s.cluster.name"] = json!(cluster);
    let mut finding: Value = serde_json::from_slice(
        &std::fs::read(fixture(
            "alerts/aws_guardduty/sekoia_detail_ekscluster__Policy_Kubernetes_AdminAccessToDefaultServiceAccount.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let resource = &mut finding["resource"];
    resource["eksClusterDetails"]["name"] = json!(guardduty_cluster);
    resource["kubernetesDetails"]["kubernetesWorkloadDetails"] = json!({
        "name": "kubecon", "type": "pods", "uid": "4b6c8f1e-1f0e-4a57-9d0c-2d6a0c1f9a11",
        "namespace": "default", "hostNetwork": false,
        "containers": [{ "name": "kubecon", "image": "docker.io/library/alpine" }]
    });
    finding["type"] = json!("Execution:Runtime/ReverseShell");
    finding["id"] = json!(format!("runtime-{guardduty_cluster}"));
    (
        serde_json::to_vec(&falco).unwrap(),
        serde_json::to_vec(&finding).unwrap(),
    )
}

#[tokio::test]
async fn falco_and_guardduty_alerts_about_one_pod_join_one_incident() {
    let server = TestServer::start().await;
    let incident = |v: &Value| v["alerts"][0]["incident_id"].as_str().unwrap().to_owned();
    let (falco, guardduty) = pod_alerts("prod-eu", "prod-eu");
    let (status, a) = server.post_alert("falco", falco).await;
    assert_eq!(status, 202, "{a}");
    let (status, b) = server.post_alert("aws.guardduty", guardduty).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(incident(&a), incident(&b), "one pod, one incident");
    assert_eq!(b["alerts"][0]["new_incident"], false);
    let shown = server
        .admin(&format!("/v1/incidents/{}", incident(&a)))
        .await;
    assert_eq!(
        shown["incident"]["entity"],
        "resource:k8s.pod:prod-eu/default/kubecon"
    );
    for alert in shown["alerts"].as_array().unwrap() {
        assert_eq!(alert["labels"]["k8s.cluster"], "prod-eu", "{alert}");
        assert_eq!(alert["labels"]["k8s.pod.name"], "kubecon", "{alert}");
    }

    // The same namespace and pod name in another cluster is another pod.
    let (_, elsewhere) = pod_alerts("prod-eu", "staging");
    let (status, c) = server.post_alert("aws.guardduty", elsewhere).await;
    assert_eq!(status, 202, "{c}");
    assert_ne!(incident(&a), incident(&c));
}

fn sns_source(topic: &str, fake: &FakeSns, confirm: bool) -> String {
    format!(
        "sources:\n  aws.guardduty:\n    auth:\n      sns:\n        topics: [\"{topic}\"]\n        confirm_subscriptions: {confirm}\n        endpoint_override: {}\n",
        fake.base
    )
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:cordon-guardduty";

/// The recorded SNS delivery, re-addressed to our topic, sent now as a new message (its own
/// `MessageId`) and signed with the test key, so the real GuardDuty payload goes through the real
/// verification path.
fn signed_guardduty_notification(version: &str, topic: &str) -> Vec<u8> {
    let mut envelope: Value = serde_json::from_slice(&read_fixture(
        "alerts/aws_guardduty/sns_wrapped_eventbridge_ec2_sshbruteforce_sample.json",
    ))
    .unwrap();
    envelope["TopicArn"] = json!(topic);
    envelope["MessageId"] = json!(uuid::Uuid::now_v7().to_string());
    envelope["Timestamp"] = json!(sns_now());
    envelope["SigningCertURL"] =
        json!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem");
    envelope.as_object_mut().unwrap().remove("Signature");
    sign_sns(envelope, version)
}

#[tokio::test]
async fn sns_notifications_with_valid_signatures_are_stored() {
    let fake = FakeSns::start().await;
    let server = TestServer::start_with(&sns_source(TOPIC, &fake, true)).await;
    for version in ["1", "2"] {
        let body = signed_guardduty_notification(version, TOPIC);
        let (status, answer) = server
            .send(
                server
                    .http
                    .post(format!("{}/v1/alerts/aws.guardduty", server.base))
                    .header("x-amz-sns-message-type", "Notification")
                    .header("content-type", "text/plain; charset=UTF-8")
                    .body(body),
            )
            .await;
        assert_eq!(status, 202, "SignatureVersion {version}: {answer}");
    }
    let alerts = server.stored_alerts().await;
    assert_eq!(
        alerts.len(),
        1,
        "the same finding twice is one alert seen twice"
    );
    assert_eq!(alerts[0]["kind"], "UnauthorizedAccess:EC2/SSHBruteForce");
    assert_eq!(alerts[0]["repeat_count"], 2);
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.ends_with(".pem"))
            .count(),
        1,
        "certificate cached"
    );
}

#[tokio::test]
async fn sns_refuses_bad_signatures_and_foreign_topics() {
    let fake = FakeSns::start().await;
    let server = TestServer::start_with(&sns_source(TOPIC, &fake, true)).await;
    let url = format!("{}/v1/alerts/aws.guardduty", server.base);

    let mut tampered: Value =
        serde_json::from_slice(&signed_guardduty_notification("2", TOPIC)).unwrap();
    tampered["Message"] = json!(
        tampered["Message"]
            .as_str()
            .unwrap()
            .replace("198.51.100.0", "203.0.113.9")
    );
    let response = server.send(server.http.post(&url).json(&tampered)).await;
    assert_refused(&server, response, 401, "bad_signature", "signature").await;

    let foreign =
        signed_guardduty_notification("2", "arn:aws:sns:us-east-1:999999999999:someone-else");
    let response = server.send(server.http.post(&url).body(foreign)).await;
    assert_refused(&server, response, 403, "topic_not_allowed", "someone-else").await;

    let mut untrusted: Value =
        serde_json::from_slice(&signed_guardduty_notification("2", TOPIC)).unwrap();
    untrusted["SigningCertURL"] = json!("https://evil.example.com/cert.pem");
    let response = server.send(server.http.post(&url).json(&untrusted)).await;
    assert_refused(&server, response, 401, "bad_signature", "").await;

    let response = server
        .send(server.http.post(&url).body(r#"{"not":"sns"}"#))
        .await;
    assert_refused(&server, response, 400, "bad_envelope", "SNS").await;
}

/// Now, as SNS writes its `Timestamp`.
fn sns_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn subscription_confirmation(topic: &str) -> Vec<u8> {
    sign_sns(
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "TopicArn": topic,
            "Message": format!("You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=2336412f37fb"),
            "Timestamp": sns_now(),
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
        }),
        "1",
    )
}

#[tokio::test]
async fn sns_subscriptions_are_confirmed_only_for_allowed_topics() {
    let fake = FakeSns::start().await;
    let server = TestServer::start_with(&sns_source(TOPIC, &fake, true)).await;
    let url = format!("{}/v1/alerts/aws.guardduty", server.base);

    let (status, body) = server
        .send(
            server
                .http
                .post(&url)
                .body(subscription_confirmation(TOPIC)),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("subscription_confirmed")),
        "{body}"
    );
    let confirmations: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.contains("ConfirmSubscription"))
        .collect();
    assert_eq!(confirmations.len(), 1);
    assert!(
        confirmations[0].contains("Token=2336412f37fb"),
        "{confirmations:?}"
    );

    let other = "arn:aws:sns:us-east-1:999999999999:not-ours";
    let response = server
        .send(
            server
                .http
                .post(&url)
                .body(subscription_confirmation(other)),
        )
        .await;
    assert_refused(&server, response, 403, "topic_not_allowed", "not-ours").await;
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.contains("ConfirmSubscription"))
            .count(),
        1
    );
    assert!(
        server.stored_alerts().await.is_empty(),
        "a confirmation is not an alert"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = TestServer::start().await;
    let get = |path: &str| server.http.get(format!("{}{path}", server.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    server
        .post_alert(
            "falco",
            read_fixture("alerts/falco/falco_docs_json_output_shell_in_container.json"),
        )
        .await;
    server.post_alert("falco", "nope").await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cordon_alerts_accepted_total{source=\"falco\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cordon_alerts_rejected_total{source=\"falco\",reason=\"bad_payload\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cordon_http_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/v1/alerts/{source}\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("cordon_store_flush_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn the_admin_api_needs_its_token() {
    let server = TestServer::start().await;
    let (status, body) = server
        .send(server.http.get(format!("{}/v1/alerts", server.base)))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = server
        .send(
            server
                .http
                .get(format!("{}/v1/incidents", server.base))
                .bearer_auth("wrong"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .send(
            server
                .http
                .get(format!("{}/v1/alerts/nope", server.base))
                .bearer_auth(server.token_of(support::TESTER).await),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    // Every admin route checks the token before it reads anything else of the request: a
    // stranger learns nothing from validation errors.
    for (method, path, body) in [
        ("GET", "/v1/runs?status=bogus", ""),
        ("GET", "/v1/runs/nope", ""),
        ("POST", "/v1/runs/nope/cancel", "not json"),
        ("POST", "/v1/runs/nope/approvals/step", "{}"),
        ("POST", "/v1/runs/nope/steps/step/undo", "not json"),
        ("POST", "/v1/runs/nope/steps/step/resolve", "not json"),
        ("POST", "/v1/playbooks/nope/runs", "not json"),
        ("POST", "/v1/incidents/nope/bogus", "{}"),
        ("POST", "/v1/playbooks/reload", ""),
        ("GET", "/v1/incidents/nope/report?format=bogus", ""),
        ("GET", "/v1/audit/verify", ""),
    ] {
        let url = format!("{}{path}", server.base);
        let request = match method {
            "GET" => server.http.get(url),
            _ => server.http.post(url).body(body),
        };
        let (status, answer) = server.send(request).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}: {answer}"
        );
    }
}
