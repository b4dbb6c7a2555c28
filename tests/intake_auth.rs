//! Senders that authenticate their own way, over real HTTP on 127.0.0.1:0, attacks first:
//!
//! - Google Cloud Pub/Sub push with an OIDC token (`auth.google_oidc`): the tests sign tokens the
//!   way Google does (RS256, `kid`, `iss` `https://accounts.google.com`, `aud`, `email`,
//!   `email_verified`) and serve the public keys from a local key set shaped like
//!   `https://www.googleapis.com/oauth2/v3/certs` (`{"keys": [{kty, alg, use, kid, n, e}]}`);
//! - Azure Monitor secure webhook (`auth.entra_id`): Entra ID access tokens, v1
//!   (`iss` `https://sts.windows.net/<tenant>/`, `appid`) and v2 (`iss`
//!   `https://login.microsoftonline.com/<tenant>/v2.0`, `azp`), keys from a local key set shaped
//!   like `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`;
//! - a plain webhook with a token in the query string (`auth.query_token`).
//!
//! Every refusal is a 401 with a JSON code naming what was wrong, never quotes the token, stores
//! nothing (no alert, no incident) and is counted in `cordon_alerts_rejected_total`.
//!
//! The RSA keys are the committed test keys of `tests/data/teams/` (see its README).

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use support::fake::{self, FakeServer};
use support::teams::Signer;
use support::*;

const AUDIENCE: &str = "https://cordon.example.com/v1/alerts/gcp.scc";
const PUSH_ACCOUNT: &str = "scc-push@soc-project.iam.gserviceaccount.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP_ID_URI: &str = "api://cordon-alerts";
/// Azure Monitor's action groups app ("AzNS AAD Webhook"), the default caller.
const AZURE_MONITOR_APP: &str = "461e8683-5575-4561-ac7f-899cc907d62a";
const QUERY_TOKEN: &str = "plain-webhook-token-7f3e";

/// A key set on 127.0.0.1 whose keys the test can change (a rotation), counting its reads.
struct KeySet {
    server: FakeServer,
    keys: Arc<Mutex<Vec<Value>>>,
}

impl KeySet {
    async fn start(signers: &[&Signer]) -> KeySet {
        let keys = Arc::new(Mutex::new(
            signers.iter().map(|s| jwk(s)).collect::<Vec<_>>(),
        ));
        let served = keys.clone();
        let router = Router::new().route(
            "/keys",
            get(move || {
                let keys = served.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        KeySet {
            server: fake::serve(router).await,
            keys,
        }
    }

    fn url(&self) -> String {
        format!("{}/keys", self.server.base)
    }

    fn publish(&self, signer: &Signer) {
        self.keys.lock().unwrap().push(jwk(signer));
    }

    fn reads(&self) -> usize {
        self.server.count("GET /keys")
    }
}

/// The key as Google's and Entra ID's key sets list an RSA key.
fn jwk(signer: &Signer) -> Value {
    let mut key = signer.jwk();
    let key = key.as_object_mut().unwrap();
    key.remove("endorsements");
    key.insert("alg".into(), json!("RS256"));
    Value::Object(key.clone())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a Pub/Sub push token, valid now.
fn google_claims() -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "sub": "113774264463038321964",
        "email": PUSH_ACCOUNT,
        "email_verified": true,
        "iat": now() - 5,
        "exp": now() + 3600,
    })
}

/// The claims of an Azure Monitor secure-webhook token (v1, as Azure Monitor gets them), valid now.
fn entra_v1_claims() -> Value {
    json!({
        "aud": APP_ID_URI,
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": now() - 5,
        "nbf": now() - 5,
        "exp": now() + 3600,
        "appid": AZURE_MONITOR_APP,
        "appidacr": "2",
        "idp": format!("https://sts.windows.net/{TENANT}/"),
        "oid": "9a1c2f0e-0b2b-4c7e-9a55-3c1d4e5f6a7b",
        "roles": ["ActionGroupsSecureWebhook"],
        "sub": "9a1c2f0e-0b2b-4c7e-9a55-3c1d4e5f6a7b",
        "tid": TENANT,
        "ver": "1.0",
    })
}

/// The same token as the v2 endpoint issues it.
fn entra_v2_claims() -> Value {
    let mut claims = entra_v1_claims();
    let map = claims.as_object_mut().unwrap();
    map.remove("appid");
    map.insert(
        "iss".into(),
        json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0")),
    );
    map.insert("azp".into(), json!(AZURE_MONITOR_APP));
    map.insert("ver".into(), json!("2.0"));
    claims
}

/// `claims` with `changes` applied (`null` removes a claim).
fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// An SCC notification from the shared fixtures, wrapped as Pub/Sub pushes it.
fn pubsub_push(fixture: &str) -> Vec<u8> {
    let data = read_fixture(&format!("alerts/gcp_scc/{fixture}"));
    serde_json::to_vec(&json!({
        "message": {
            "attributes": {},
            "data": base64::engine::general_purpose::STANDARD.encode(&data),
            "messageId": "2070443601311540",
            "message_id": "2070443601311540",
            "publishTime": "2021-02-26T19:13:55.749Z",
            "publish_time": "2021-02-26T19:13:55.749Z",
        },
        "subscription": "projects/soc-project/subscriptions/scc-to-cordon",
    }))
    .unwrap()
}

fn azure_monitor_alert() -> Vec<u8> {
    read_fixture("alerts/azure/azure_monitor_common_alert_schema_metric_sample.json")
}

fn google_source(keys: &KeySet) -> String {
    format!(
        "sources:\n  gcp.scc:\n    auth:\n      google_oidc:\n        audience: {AUDIENCE}\n        service_account: {PUSH_ACCOUNT}\n        jwks_url: {}\n",
        keys.url()
    )
}

fn entra_source(keys: &KeySet) -> String {
    format!(
        "sources:\n  azure.monitor:\n    auth:\n      entra_id:\n        tenant: {TENANT}\n        audience: [{APP_ID_URI}, 0b9f8a7e-1111-2222-3333-444455556666]\n        jwks_url: {}\n",
        keys.url()
    )
}

async fn post_with_token(
    server: &TestServer,
    source: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = server
        .http
        .post(format!("{}/v1/alerts/{source}", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    server.send(request).await
}

/// Asserts a refusal with `code`: a 401 (or `status`) that does not quote `token`, nothing stored,
/// the refusal counted.
async fn assert_refused(
    server: &TestServer,
    (status, body): (u16, Value),
    code: &str,
    token: Option<&str>,
) {
    assert_eq!(status, 401, "{code}: {body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a refusal says what was wrong: {body}");
    if let Some(token) = token {
        let text = body.to_string();
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!text.contains(part), "the answer quotes the token: {text}");
        }
    }
    assert!(
        server.stored_alerts().await.is_empty(),
        "a refused request ({code}) stored an alert"
    );
    assert!(
        server.stored_incidents().await.is_empty(),
        "a refused request ({code}) opened an incident"
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

/// HS256 with the RSA public key (PEM) as the shared secret: the classic algorithm confusion.
fn hs256_with_public_key(claims: &Value) -> String {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let pem = std::fs::read_to_string(data("teams/signing-key.pem")).unwrap();
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let public = rsa::RsaPublicKey::from(&private)
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(support::teams::KID.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap()
}

/// `alg: none`, unsigned.
fn unsigned(claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({ "alg": "none", "typ": "JWT", "kid": support::teams::KID });
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn pubsub_push_tokens_that_fail_any_check_are_refused_and_store_nothing() {
    let google = Signer::signing();
    let attacker = Signer::rotated();
    let keys = KeySet::start(&[&google]).await;
    let server = TestServer::start_with(&google_source(&keys)).await;
    let body = || pubsub_push("sra_notification_etd_bad_ip.json");

    let response = post_with_token(&server, "gcp.scc", None, body()).await;
    assert_refused(&server, response, "missing_token", None).await;

    let cases: Vec<(&str, String)> = vec![
        (
            "wrong_audience",
            google.sign(&with(
                google_claims(),
                json!({"aud": "https://elsewhere.example.com/push"}),
            )),
        ),
        (
            // A key of the attacker's, under a kid the set does not have.
            "unknown_key",
            attacker.sign_as("attacker-key", &google_claims()),
        ),
        (
            // A key of the attacker's, under the kid of Google's key.
            "bad_signature",
            attacker.sign_as(&google.kid, &google_claims()),
        ),
        (
            "token_expired",
            google.sign(&with(
                google_claims(),
                json!({"iat": now() - 7200, "exp": now() - 3600}),
            )),
        ),
        (
            "token_not_yet_valid",
            google.sign(&with(google_claims(), json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong_issuer",
            google.sign(&with(
                google_claims(),
                json!({"iss": "https://accounts.evil.example"}),
            )),
        ),
        (
            "wrong_sender",
            google.sign(&with(
                google_claims(),
                json!({"email": "someone-else@soc-project.iam.gserviceaccount.com"}),
            )),
        ),
        (
            "wrong_sender",
            google.sign(&with(google_claims(), json!({"email_verified": false}))),
        ),
        (
            "bad_token",
            google.sign(&with(google_claims(), json!({"email": null}))),
        ),
        (
            "bad_token",
            google.sign(&with(google_claims(), json!({"exp": null}))),
        ),
        ("wrong_algorithm", hs256_with_public_key(&google_claims())),
        ("bad_token", unsigned(&google_claims())),
        ("bad_token", "not-a-jwt".to_owned()),
    ];
    for (code, token) in &cases {
        let response = post_with_token(&server, "gcp.scc", Some(token), body()).await;
        assert_refused(&server, response, code, Some(token)).await;
    }

    // The same push with Google's token is taken: the refusals were about the tokens.
    let token = google.sign(&google_claims());
    let (status, answer) = post_with_token(&server, "gcp.scc", Some(&token), body()).await;
    assert_eq!(status, 202, "{answer}");
    let stored = server.stored_alerts().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["source"], "gcp.scc");
    assert_eq!(stored[0]["kind"], "C2: Bad IP");
    // The issuer without a scheme is Google's too.
    let token = google.sign(&with(
        google_claims(),
        json!({"iss": "accounts.google.com"}),
    ));
    let (status, answer) = post_with_token(
        &server,
        "gcp.scc",
        Some(&token),
        pubsub_push("sra_notification_sha_public_dataset.json"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn made_up_key_ids_cannot_make_cordon_hammer_the_key_set_and_a_rotated_key_is_taken() {
    let google = Signer::signing();
    let rotated = Signer::rotated();
    let keys = KeySet::start(&[&google]).await;
    let server = TestServer::start_with(&google_source(&keys)).await;

    let token = google.sign(&google_claims());
    let (status, answer) = post_with_token(
        &server,
        "gcp.scc",
        Some(&token),
        pubsub_push("sra_notification_etd_bad_ip.json"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(keys.reads(), 1);

    // Thirty tokens naming keys nobody published: at most one more read.
    for i in 0..30 {
        let forged = rotated.sign_as(&format!("made-up-{i}"), &google_claims());
        let (status, answer) = post_with_token(
            &server,
            "gcp.scc",
            Some(&forged),
            pubsub_push("sra_notification_sha_public_dataset.json"),
        )
        .await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "unknown_key");
    }
    assert!(keys.reads() <= 2, "key set read {} times", keys.reads());

    // Google rolls its keys: a token under the new key is taken once the set may be read again.
    keys.publish(&rotated);
    let token = rotated.sign(&google_claims());
    let push = pubsub_push("sra_notification_sha_public_bucket_acl.json");
    wait_until(
        std::time::Duration::from_secs(8),
        || "a token signed with the rotated key to be accepted".into(),
        async || {
            post_with_token(&server, "gcp.scc", Some(&token), push.clone())
                .await
                .0
                == 202
        },
    )
    .await;
    assert!(keys.reads() <= 3, "key set read {} times", keys.reads());
    assert_eq!(server.stored_alerts().await.len(), 2);
}

#[tokio::test]
async fn without_its_key_set_a_source_answers_503_and_stores_nothing() {
    let google = Signer::signing();
    let keys = KeySet::start(&[&google]).await;
    keys.server.refuse().await;
    let server = TestServer::start_with(&google_source(&keys)).await;
    let token = google.sign(&google_claims());
    let (status, answer) = post_with_token(
        &server,
        "gcp.scc",
        Some(&token),
        pubsub_push("sra_notification_etd_bad_ip.json"),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "keys_unavailable");
    assert!(server.stored_alerts().await.is_empty());
}

#[tokio::test]
async fn azure_monitor_secure_webhook_tokens_that_fail_any_check_are_refused() {
    let entra = Signer::signing();
    let attacker = Signer::rotated();
    let keys = KeySet::start(&[&entra]).await;
    let server = TestServer::start_with(&entra_source(&keys)).await;

    let response = post_with_token(&server, "azure.monitor", None, azure_monitor_alert()).await;
    assert_refused(&server, response, "missing_token", None).await;

    let other_tenant = "0a0a0a0a-1111-2222-3333-444444444444";
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong_audience",
            entra.sign(&with(
                entra_v1_claims(),
                json!({"aud": "https://management.azure.com/"}),
            )),
        ),
        (
            // A token of another tenant's, signed by a key the tenant's set has (the keys are
            // shared across tenants): the issuer gives it away.
            "wrong_issuer",
            entra.sign(&with(
                entra_v1_claims(),
                json!({"iss": format!("https://sts.windows.net/{other_tenant}/"), "tid": other_tenant}),
            )),
        ),
        (
            // Any app can get a token for the audience; only Azure Monitor's is the sender.
            "wrong_sender",
            entra.sign(&with(
                entra_v1_claims(),
                json!({"appid": "c0ffee00-1111-2222-3333-444444444444"}),
            )),
        ),
        (
            "wrong_sender",
            entra.sign(&with(
                entra_v2_claims(),
                json!({"azp": "c0ffee00-1111-2222-3333-444444444444"}),
            )),
        ),
        (
            "bad_token",
            entra.sign(&with(entra_v1_claims(), json!({"appid": null}))),
        ),
        (
            "token_expired",
            entra.sign(&with(
                entra_v1_claims(),
                json!({"nbf": now() - 7200, "exp": now() - 3600}),
            )),
        ),
        (
            "unknown_key",
            attacker.sign_as("attacker-key", &entra_v1_claims()),
        ),
        (
            "bad_signature",
            attacker.sign_as(&entra.kid, &entra_v1_claims()),
        ),
        ("wrong_algorithm", hs256_with_public_key(&entra_v1_claims())),
        ("bad_token", unsigned(&entra_v1_claims())),
    ];
    for (code, token) in &cases {
        let response =
            post_with_token(&server, "azure.monitor", Some(token), azure_monitor_alert()).await;
        assert_refused(&server, response, code, Some(token)).await;
    }
}

#[tokio::test]
async fn azure_monitor_secure_webhook_takes_v1_and_v2_tokens_for_either_audience() {
    let entra = Signer::signing();
    let keys = KeySet::start(&[&entra]).await;
    let server = TestServer::start_with(&entra_source(&keys)).await;

    let v1 = entra.sign(&entra_v1_claims());
    let (status, answer) =
        post_with_token(&server, "azure.monitor", Some(&v1), azure_monitor_alert()).await;
    assert_eq!(status, 202, "{answer}");
    let stored = server.stored_alerts().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["source"], "azure.monitor");
    assert_eq!(stored[0]["kind"], "WCUS-R2-Gen2");

    // The v2 token, for the app id rather than its URI: the same alert again, a repeat.
    let v2 = entra.sign(&with(
        entra_v2_claims(),
        json!({"aud": "0b9f8a7e-1111-2222-3333-444455556666"}),
    ));
    let (status, answer) =
        post_with_token(&server, "azure.monitor", Some(&v2), azure_monitor_alert()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["alerts"][0]["duplicate"], true);
    assert_eq!(keys.reads(), 1, "keys are cached");
}

#[tokio::test]
async fn a_plain_webhook_token_in_the_query_string_is_compared_and_never_echoed() {
    let server = TestServer::start_with(&format!(
        "sources:\n  azure.monitor:\n    auth:\n      query_token:\n        token: {QUERY_TOKEN}\n"
    ))
    .await;
    let url = format!("{}/v1/alerts/azure.monitor", server.base);
    let post = |query: &str| {
        server
            .http
            .post(format!("{url}{query}"))
            .body(azure_monitor_alert())
    };

    let response = server.send(post("")).await;
    assert_refused(&server, response, "unauthorized", None).await;
    let wrong = "plain-webhook-token-7f3f";
    let response = server.send(post(&format!("?token={wrong}"))).await;
    assert!(!response.1.to_string().contains(wrong), "{}", response.1);
    assert_refused(&server, response, "unauthorized", None).await;
    // A bearer header with the right token is not the configured way in.
    let response = server.send(post("").bearer_auth(QUERY_TOKEN)).await;
    assert_refused(&server, response, "unauthorized", None).await;

    let (status, answer) = server.send(post(&format!("?token={QUERY_TOKEN}"))).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(server.stored_alerts().await.len(), 1);
}

#[test]
fn sender_auth_settings_are_checked_when_the_config_loads() {
    let load = |auth: &str| {
        cordon::config::parse(
            &format!("sources:\n  azure.monitor:\n    auth:\n{auth}"),
            std::path::Path::new("cordon.yaml"),
        )
        .map(|_| ())
        .map_err(|d| d.to_string())
    };
    let bad_tenant =
        load("      entra_id:\n        tenant: \"../evil\"\n        audience: api://cordon\n")
            .unwrap_err();
    assert!(bad_tenant.contains("tenant"), "{bad_tenant}");
    let no_audience =
        load("      entra_id:\n        tenant: contoso\n        audience: []\n").unwrap_err();
    assert!(no_audience.contains("audience"), "{no_audience}");
    let two = load("      query_token:\n        token: t\n      bearer:\n        token: t\n")
        .unwrap_err();
    assert!(two.contains("exactly one of"), "{two}");
    assert!(
        load("      google_oidc:\n        audience: a\n        service_account: s@p.iam.gserviceaccount.com\n").is_ok()
    );
}
