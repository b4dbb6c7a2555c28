//! Where the Azure integrations' tokens come from (src/integrations/azure_credentials.rs), against
//! the fake in `support/azure.rs`, which follows Microsoft's documented token endpoints: the
//! Entra ID v2.0 token endpoint with client assertions (a certificate-signed JWT it verifies
//! against the registered certificate, a federated token it verifies against the issuer's key),
//! the instance metadata service (IMDS, 2018-02-01) and the App Service identity endpoint
//! (2019-08-01). Each source's token is spent on ARM, which refuses a token of another tenant
//! than the subscription's; two tenants picked by subscription each contain their own VM.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cordon::config::{Credentials, Secret};
use cordon::engine::exec::{ActionCall, ActionError, ActionRunner};
use cordon::integrations::Integrations;
use cordon::integrations::azure_credentials::{AzureProvider, Env};
use serde_json::{Value, json};
use support::azure::{
    ARM_SCOPE, AppProof, CLIENT_ID, CLIENT_SECRET, FakeAzure, GRAPH_SCOPE, ManagedId, SeededVm,
    TENANT, VmSeed,
};

const CONTOSO: &str = "8f3e2d1c-0b9a-4c8d-9e7f-6a5b4c3d2e1f";
const FABRIKAM: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const CONTOSO_APP: &str = "c0c0c0c0-1111-4222-8333-444455556666";
const FABRIKAM_APP: &str = "fabfabfa-1111-4222-8333-444455556666";
const FABRIKAM_SECRET: &str = "fabrikam-secret~value.0123456789";
const SUB_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const SUB_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const SUB_C: &str = "cccccccc-0000-4000-8000-00000000000c";
const SYSTEM_MI: &str = "5151515a-0000-4000-8000-000000000001";
const USER_MI: &str = "0e0e0e0e-0000-4000-8000-000000000002";
const ISSUER: &str = "https://oidc.prod-aks.azure.com/00000000-test-issuer/";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:cordon:cordon";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn test_data(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("tests/data/azure/{name}"))).unwrap()
}

/// The DER of the test application's certificate.
fn app_cert_der() -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(test_data("app-cert.pem").as_bytes())
        .unwrap()
        .to_vec()
}

/// The base64 body lines of a PEM key: none may be printed anywhere.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect()
}

fn credentials(yaml: &str) -> Credentials {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn provider(yaml: &str, env: &Env) -> AzureProvider {
    AzureProvider::new(reqwest::Client::new(), "azure", &credentials(yaml), env)
        .unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn arm_url(subscription: &str) -> url::Url {
    url::Url::parse(&format!(
        "https://management.azure.com/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm?api-version=2024-07-01"
    ))
    .unwrap()
}

/// A token for ARM from `provider`, for a resource in `subscription`.
async fn arm_token(provider: &AzureProvider, subscription: &str) -> Result<Secret, String> {
    provider
        .token(&arm_url(subscription), None, ARM_SCOPE)
        .await
        .map(|(token, _)| token)
        .map_err(|e| e.message)
}

fn seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A service account token as AKS projects it: signed by the cluster's OIDC issuer, for the
/// audience Entra ID's token exchange takes.
fn service_account_token(key_file: &str, subject: &str, jti: &str) -> String {
    let now = seconds_now();
    let claims = json!({
        "aud": ["api://AzureADTokenExchange"],
        "iss": ISSUER,
        "sub": subject,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {"namespace": "cordon", "serviceaccount": {"name": "cordon"}}
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(test_data(key_file).as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

fn system_identity(tenant: &str) -> ManagedId {
    ManagedId {
        client_id: SYSTEM_MI.into(),
        object_id: "0b0b0b0b-0000-4000-8000-000000000001".into(),
        resource_id: String::new(),
        system: true,
        tenant: tenant.into(),
    }
}

fn user_identity(tenant: &str) -> ManagedId {
    ManagedId {
        client_id: USER_MI.into(),
        object_id: "0b0b0b0b-0000-4000-8000-000000000002".into(),
        resource_id: "/subscriptions/aaaaaaaa-0000-4000-8000-00000000000a/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cordon".into(),
        system: false,
        tenant: tenant.into(),
    }
}

fn seed(fake: &FakeAzure, subscription: &str, name: &str) -> SeededVm {
    fake.seed_vm(VmSeed {
        subscription,
        resource_group: "rg",
        name,
        location: "westeurope",
    })
}

/// The integrations, with `azure` credentials given by `azure` (indented under `azure:`) and
/// every Azure host routed to the fake.
fn load(fake: &FakeAzure, azure: &str) -> Integrations {
    let text = format!(
        "integrations:\n  paths: [{}, {}]\n  credentials:\n    azure:\n{azure}      endpoints:\n        management.azure.com: {base}\n        graph.microsoft.com: {base}\n        login.microsoftonline.com: {base}\n        \"169.254.169.254\": {base}\n",
        repo("integrations/azure-compute").display(),
        repo("integrations/azure-entra").display(),
        base = fake.base
    );
    let config = cordon::config::parse(&text, Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("config: {d}\n{text}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("integrations load: {d:?}"))
}

async fn call(
    integrations: &Integrations,
    action: &str,
    inputs: Value,
    account: Option<&str>,
) -> Result<Value, ActionError> {
    let call = ActionCall {
        run_id: "run-1".into(),
        step_id: "step".into(),
        playbook: "test".into(),
        incident_id: Some("inc-1".into()),
        idempotency_key: format!("run-1:{action}:{inputs}"),
        dry_run: false,
        account: account.map(str::to_owned),
    };
    integrations.call(action, inputs, &call).await
}

fn on_quarantine(fake: &FakeAzure, vm: &SeededVm) -> bool {
    vm.nics.iter().all(|nic| {
        fake.nic_nsg(nic)
            .is_some_and(|nsg| nsg.to_lowercase().ends_with("/cordon-quarantine"))
    })
}

fn arm_principals(fake: &FakeAzure, subscription: &str) -> Vec<String> {
    let mut principals: Vec<String> = fake
        .arm_callers()
        .into_iter()
        .filter(|(_, sub)| sub == subscription)
        .map(|(principal, _)| principal)
        .collect();
    principals.dedup();
    principals
}

// ---- managed identity --------------------------------------------------------------------------

#[tokio::test]
async fn a_managed_identity_from_imds_isolates_a_vm_and_a_user_assigned_one_is_asked_by_its_id() {
    let fake = FakeAzure::start().await;
    fake.add_managed_identity(system_identity(CONTOSO));
    fake.add_managed_identity(user_identity(CONTOSO));
    fake.set_subscription_tenant(SUB_A, CONTOSO);
    let vm = seed(&fake, SUB_A, "vm1");

    // No application at all: the system-assigned identity, through IMDS.
    let integrations = load(&fake, "      managed_identity: {}\n");
    call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm.id }),
        Some(SUB_A),
    )
    .await
    .unwrap();
    assert!(on_quarantine(&fake, &vm));
    assert_eq!(arm_principals(&fake, SUB_A), [format!("mi:{SYSTEM_MI}")]);
    let asked = fake.requests();
    let imds: Vec<&String> = asked
        .iter()
        .filter(|r| r.contains("/metadata/identity/oauth2/token"))
        .collect();
    assert_eq!(imds.len(), 1, "one token for every ARM call: {asked:?}");
    // The scope's resource, not the scope.
    assert!(
        imds[0].starts_with("GET ")
            && imds[0].contains("api-version=2018-02-01")
            && imds[0].contains("resource=https%3A%2F%2Fmanagement.azure.com")
            && !imds[0].contains(".default"),
        "{imds:?}"
    );
    assert!(!imds[0].contains("client_id"), "{imds:?}");

    // A user-assigned identity, by client id, by object id, by resource id.
    for (yaml, param) in [
        (format!("{{ client_id: {USER_MI} }}"), "client_id"),
        (
            "{ object_id: 0b0b0b0b-0000-4000-8000-000000000002 }".to_owned(),
            "object_id",
        ),
        (
            format!(
                "{{ resource_id: \"{}\" }}",
                user_identity(CONTOSO).resource_id
            ),
            "msi_res_id",
        ),
    ] {
        let provider = provider(
            &format!(
                "{{ managed_identity: {yaml}, endpoints: {{ \"169.254.169.254\": \"{}\" }} }}",
                fake.base
            ),
            &Env::new(),
        );
        let token = arm_token(&provider, SUB_A).await.unwrap();
        let issued = fake.issued(token.expose()).unwrap();
        assert_eq!(issued.principal, format!("mi:{USER_MI}"), "{yaml}");
        assert!(
            fake.requests()
                .last()
                .unwrap()
                .contains(&format!("&{param}=")),
            "{yaml}"
        );
    }

    // An identity the VM does not have: IMDS's own words, not retried, nothing changed.
    let vm2 = seed(&fake, SUB_A, "vm2");
    let integrations = load(
        &fake,
        "      managed_identity: { client_id: 99999999-0000-4000-8000-000000000000 }\n",
    );
    let error = call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm2.id }),
        Some(SUB_A),
    )
    .await
    .unwrap_err();
    assert!(error.message.contains("Identity not found"), "{error:?}");
    assert!(!error.retryable, "{error:?}");
    assert!(!on_quarantine(&fake, &vm2));
}

#[tokio::test]
async fn the_app_service_endpoint_is_asked_with_its_header_and_its_expires_on_is_read() {
    let fake = FakeAzure::start().await;
    fake.add_managed_identity(system_identity(CONTOSO));
    fake.add_managed_identity(user_identity(CONTOSO));
    let header = "a7f3c1e9-identity-header-value";
    fake.set_identity_header(header);
    // IMDS, were it asked, is nowhere: the App Service variables must win.
    let app_service = env(&[
        ("IDENTITY_ENDPOINT", &format!("{}/msi/token", fake.base)),
        ("IDENTITY_HEADER", header),
    ]);
    let system = provider("{}", &app_service);
    let token = arm_token(&system, SUB_A).await.unwrap();
    assert_eq!(
        fake.issued(token.expose()).unwrap().principal,
        format!("mi:{SYSTEM_MI}")
    );
    let graph = system
        .token(
            &url::Url::parse("https://graph.microsoft.com/v1.0/users/x").unwrap(),
            None,
            GRAPH_SCOPE,
        )
        .await
        .unwrap()
        .0;
    assert_eq!(fake.issued(graph.expose()).unwrap().scope, GRAPH_SCOPE);
    // `expires_on` alone (2019-08-01 sends no expires_in) makes the token reusable.
    assert_eq!(
        arm_token(&system, SUB_A).await.unwrap().expose(),
        token.expose()
    );
    assert_eq!(fake.count("/msi/token"), 2);
    let last = fake.requests().last().unwrap().clone();
    assert!(
        last.contains("api-version=2019-08-01")
            && last.contains("resource=https%3A%2F%2Fgraph.microsoft.com"),
        "{last}"
    );

    let user = provider(
        &format!("{{ managed_identity: {{ client_id: {USER_MI} }} }}"),
        &app_service,
    );
    let token = arm_token(&user, SUB_A).await.unwrap();
    assert_eq!(
        fake.issued(token.expose()).unwrap().principal,
        format!("mi:{USER_MI}")
    );

    // A wrong header is refused, and the header is in no message.
    let wrong = provider(
        "{}",
        &env(&[
            ("IDENTITY_ENDPOINT", &format!("{}/msi/token", fake.base)),
            ("IDENTITY_HEADER", "stale-identity-header-0000"),
        ]),
    );
    let error = arm_token(&wrong, SUB_A).await.unwrap_err();
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains("stale-identity-header"), "{error}");
    assert!(!format!("{wrong:?}").contains("stale-identity-header"));
}

// ---- workload identity -------------------------------------------------------------------------

#[tokio::test]
async fn workload_identity_presents_the_projected_token_and_reads_it_again_after_rotation() {
    let fake = FakeAzure::start().await;
    fake.add_app(
        CONTOSO,
        CONTOSO_APP,
        AppProof::Federated {
            issuer: ISSUER.into(),
            subject: SERVICE_ACCOUNT.into(),
            public_key_pem: test_data("issuer-public.pem"),
        },
    );
    // Tokens that last 2 s are asked for again after 1 s.
    fake.set_token_lifetime(2, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(
        &file,
        service_account_token("issuer-key.pem", SERVICE_ACCOUNT, "sa-1"),
    )
    .unwrap();
    // As the AKS workload identity webhook sets the pod's environment.
    let aks = env(&[
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ("AZURE_CLIENT_ID", CONTOSO_APP),
        ("AZURE_TENANT_ID", CONTOSO),
        ("AZURE_AUTHORITY_HOST", &format!("{}/", fake.base)),
    ]);
    let provider = provider("{}", &aks);
    let first = arm_token(&provider, SUB_A).await.unwrap();
    let issued = fake.issued(first.expose()).unwrap();
    assert_eq!(
        (issued.tenant.as_str(), issued.principal.as_str()),
        (CONTOSO, &*format!("app:{CONTOSO_APP}"))
    );
    assert_eq!(
        fake.assertions(),
        [(CONTOSO_APP.to_owned(), "sa-1".to_owned())]
    );

    // The kubelet rotates the token: the next request presents the new one.
    std::fs::write(
        &file,
        service_account_token("issuer-key.pem", SERVICE_ACCOUNT, "sa-2"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = arm_token(&provider, SUB_A).await.unwrap();
    assert_ne!(second.expose(), first.expose());
    assert_eq!(fake.assertions().last().unwrap().1, "sa-2");

    // The same, configured rather than from the environment.
    let configured = AzureProvider::new(
        reqwest::Client::new(),
        "azure",
        &credentials(&format!(
            "{{ tenant_id: {CONTOSO}, client_id: {CONTOSO_APP}, federated_token_file: {}, endpoints: {{ login.microsoftonline.com: \"{}\" }} }}",
            file.display(),
            fake.base
        )),
        &Env::new(),
    )
    .unwrap();
    arm_token(&configured, SUB_A).await.unwrap();

    // A token of another signer, or of another service account, is refused, and not printed.
    let wrong_signer = service_account_token("other-key.pem", SERVICE_ACCOUNT, "sa-x");
    let other_account = service_account_token(
        "issuer-key.pem",
        "system:serviceaccount:default:intruder",
        "sa-y",
    );
    for (token, expected) in [
        (&wrong_signer, "AADSTS700027"),
        (&other_account, "AADSTS70021"),
    ] {
        std::fs::write(&file, token).unwrap();
        let provider =
            AzureProvider::new(reqwest::Client::new(), "azure", &credentials("{}"), &aks).unwrap();
        let error = arm_token(&provider, SUB_A).await.unwrap_err();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains(token.as_str()), "{error}");
    }

    std::fs::remove_file(&file).unwrap();
    let error = arm_token(
        &AzureProvider::new(reqwest::Client::new(), "azure", &credentials("{}"), &aks).unwrap(),
        SUB_A,
    )
    .await
    .unwrap_err();
    assert!(
        error.contains("cannot read the federated token file"),
        "{error}"
    );
}

// ---- client certificate ------------------------------------------------------------------------

#[tokio::test]
async fn a_certificate_signs_client_assertions_that_entra_verifies() {
    let fake = FakeAzure::start().await;
    fake.add_app(CONTOSO, CONTOSO_APP, AppProof::Certificate(app_cert_der()));
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("cordon.pem");
    std::fs::write(
        &both,
        test_data("app-cert.pem") + test_data("app-key.pem").as_str(),
    )
    .unwrap();
    let cert = repo("tests/data/azure/app-cert.pem");
    let key = repo("tests/data/azure/app-key.pem");
    let login = format!(
        "endpoints: {{ login.microsoftonline.com: \"{}\" }}",
        fake.base
    );
    let app = format!("tenant_id: {CONTOSO}, client_id: {CONTOSO_APP}");
    let inline =
        serde_json::to_string(&(test_data("app-key.pem") + test_data("app-cert.pem").as_str()))
            .unwrap();
    for yaml in [
        format!(
            "{{ {app}, client_certificate_file: {}, {login} }}",
            both.display()
        ),
        format!(
            "{{ {app}, client_certificate_file: {}, client_certificate_key_file: {}, {login} }}",
            cert.display(),
            key.display()
        ),
        format!("{{ {app}, client_certificate: {inline}, {login} }}"),
    ] {
        let provider = provider(&yaml, &Env::new());
        let arm = arm_token(&provider, SUB_A).await.unwrap();
        assert_eq!(
            fake.issued(arm.expose()).unwrap().principal,
            format!("app:{CONTOSO_APP}")
        );
        let url = url::Url::parse("https://graph.microsoft.com/v1.0/users").unwrap();
        provider.token(&url, None, GRAPH_SCOPE).await.unwrap();
    }
    // Every assertion the fake verified was a new one.
    let assertions = fake.assertions();
    assert_eq!(assertions.len(), 6, "{assertions:?}");
    let mut ids: Vec<&String> = assertions.iter().map(|(_, jti)| jti).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{assertions:?}");

    // The registered certificate with another key: Entra refuses the signature.
    let forged = provider(
        &format!(
            "{{ {app}, client_certificate_file: {}, client_certificate_key_file: {}, {login} }}",
            cert.display(),
            repo("tests/data/azure/other-key.pem").display()
        ),
        &Env::new(),
    );
    let error = arm_token(&forged, SUB_A).await.unwrap_err();
    assert!(
        error.contains("AADSTS700027") && error.contains("signature"),
        "{error}"
    );
    for line in key_lines(&test_data("other-key.pem")) {
        assert!(!error.contains(&line) && !format!("{forged:?}").contains(&line));
    }
    assert_eq!(
        fake.assertions().len(),
        6,
        "the forged assertion was not accepted"
    );
}

// ---- several tenants ---------------------------------------------------------------------------

#[tokio::test]
async fn two_tenants_are_picked_by_subscription_and_each_vm_is_isolated_by_its_own() {
    let fake = FakeAzure::start().await;
    fake.add_app(CONTOSO, CONTOSO_APP, AppProof::Certificate(app_cert_der()));
    fake.add_app(
        FABRIKAM,
        FABRIKAM_APP,
        AppProof::Secret(FABRIKAM_SECRET.into()),
    );
    fake.set_subscription_tenant(SUB_A, CONTOSO);
    fake.set_subscription_tenant(SUB_B, FABRIKAM);
    fake.set_subscription_tenant(SUB_C, FABRIKAM);
    let vm_a = seed(&fake, SUB_A, "web-a");
    let vm_b = seed(&fake, SUB_B, "web-b");
    let vm_c = seed(&fake, SUB_C, "web-c");
    fake.seed_user_json(
        serde_json::from_str(&test_data_repo(
            "integrations/azure-entra/fixtures/user.json",
        ))
        .unwrap(),
    );
    let cert = repo("tests/data/azure/app-cert.pem");
    let key = repo("tests/data/azure/app-key.pem");
    let tenants = |b_maps_to: &str| {
        format!(
            "      tenants:\n        contoso: {{ tenant_id: {CONTOSO}, client_id: {CONTOSO_APP}, client_certificate_file: {}, client_certificate_key_file: {} }}\n        fabrikam: {{ tenant_id: {FABRIKAM}, client_id: {FABRIKAM_APP}, client_secret: \"{FABRIKAM_SECRET}\" }}\n      subscriptions:\n        \"{SUB_A}\": contoso\n        \"{SUB_B}\": {b_maps_to}\n",
            cert.display(),
            key.display()
        )
    };
    let integrations = load(&fake, &tenants("fabrikam"));

    // One incident about both VMs: each action acts through its subscription's tenant, whether
    // the alert's account says so or the VM's own id does.
    let a = call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm_a.id }),
        Some(SUB_A),
    )
    .await
    .unwrap();
    let b = call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm_b.id }),
        Some(SUB_A),
    )
    .await
    .unwrap();
    assert!(on_quarantine(&fake, &vm_a) && on_quarantine(&fake, &vm_b));
    assert_eq!(arm_principals(&fake, SUB_A), [format!("app:{CONTOSO_APP}")]);
    assert_eq!(
        arm_principals(&fake, SUB_B),
        [format!("app:{FABRIKAM_APP}")]
    );
    assert_eq!(
        a["acted_as"],
        format!("contoso: app {CONTOSO_APP} in tenant {CONTOSO} (certificate)")
    );
    assert_eq!(
        b["acted_as"],
        format!("fabrikam: app {FABRIKAM_APP} in tenant {FABRIKAM}")
    );

    // Graph names no subscription: the alert's account (a subscription, or a tenant) picks.
    let user = json!({ "user_id": "6e7b768e-07e2-4810-8459-485f84f8f204" });
    let out = call(
        &integrations,
        "azure-entra.disable_user",
        user.clone(),
        Some(SUB_B),
    )
    .await
    .unwrap();
    assert_eq!(out["acted_as"], b["acted_as"]);
    let out = call(
        &integrations,
        "azure-entra.enable_user",
        user.clone(),
        Some(CONTOSO),
    )
    .await
    .unwrap();
    assert_eq!(out["acted_as"], a["acted_as"]);
    // An action's `account` input overrides the alert's.
    let named = json!({ "user_id": "6e7b768e-07e2-4810-8459-485f84f8f204", "account": "fabrikam" });
    let out = call(
        &integrations,
        "azure-entra.disable_user",
        named,
        Some(SUB_A),
    )
    .await
    .unwrap();
    assert_eq!(out["acted_as"], b["acted_as"]);

    // A subscription no tenant covers, with no default credential: refused, nothing sent.
    let before = fake.requests().len();
    let error = call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm_c.id }),
        Some(SUB_C),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .message
            .contains(&format!("no Azure credential for `{SUB_C}`"))
            && error.message.contains("subscriptions"),
        "{error:?}"
    );
    assert!(!error.retryable);
    assert_eq!(fake.requests().len(), before);
    assert!(!on_quarantine(&fake, &vm_c));

    // A subscription mapped to the wrong tenant: ARM refuses that tenant's token.
    let wrong = load(&fake, &tenants("contoso"));
    let vm_b2 = seed(&fake, SUB_B, "web-b2");
    let error = call(
        &wrong,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm_b2.id }),
        Some(SUB_B),
    )
    .await
    .unwrap_err();
    assert!(
        error.message.contains("InvalidAuthenticationTokenTenant") || error.message.contains("401"),
        "{error:?}"
    );
    assert!(!on_quarantine(&fake, &vm_b2));
}

fn test_data_repo(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap()
}

#[tokio::test]
async fn a_default_credential_and_a_star_cover_what_no_subscription_names() {
    let fake = FakeAzure::start().await;
    fake.add_app(
        FABRIKAM,
        FABRIKAM_APP,
        AppProof::Secret(FABRIKAM_SECRET.into()),
    );
    let yaml = |star: &str| {
        format!(
            "{{ tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret: \"{CLIENT_SECRET}\", tenants: {{ fabrikam: {{ tenant_id: {FABRIKAM}, client_id: {FABRIKAM_APP}, client_secret: \"{FABRIKAM_SECRET}\" }} }}, subscriptions: {{ \"{SUB_B}\": fabrikam {star} }}, endpoints: {{ login.microsoftonline.com: \"{}\" }} }}",
            fake.base
        )
    };
    let with_default = provider(&yaml(""), &Env::new());
    let (_, acted) = with_default.pick(&arm_url(SUB_C), None).unwrap();
    assert_eq!(
        acted.unwrap(),
        format!("default: app {CLIENT_ID} in tenant {TENANT}")
    );
    let (_, acted) = with_default.pick(&arm_url(SUB_B), Some(SUB_C)).unwrap();
    assert!(
        acted.unwrap().starts_with("fabrikam: "),
        "the ARM path's subscription wins"
    );
    let issued = fake
        .issued(arm_token(&with_default, SUB_C).await.unwrap().expose())
        .unwrap();
    assert_eq!(issued.tenant, TENANT);
    let issued = fake
        .issued(arm_token(&with_default, SUB_B).await.unwrap().expose())
        .unwrap();
    assert_eq!(issued.tenant, FABRIKAM);

    let star = provider(&yaml(", \"*\": fabrikam"), &Env::new());
    let (_, acted) = star.pick(&arm_url(SUB_C), None).unwrap();
    assert!(acted.unwrap().starts_with("fabrikam: "));

    // One credential and no tenants: nothing to record, as before.
    let single = provider(
        &format!("{{ tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret: x }}"),
        &Env::new(),
    );
    assert_eq!(single.pick(&arm_url(SUB_C), None).unwrap().1, None);
}

#[test]
fn bad_azure_credentials_are_refused_at_load_saying_what_to_fix() {
    let key = test_data("app-key.pem");
    let refused = |yaml: &str| {
        AzureProvider::new(
            reqwest::Client::new(),
            "azure",
            &credentials(yaml),
            &Env::new(),
        )
        .expect_err(yaml)
    };
    for (yaml, expected) in [
        (
            format!("{{ tenant_id: {TENANT}, client_id: {CLIENT_ID} }}"),
            "without client_secret",
        ),
        (
            format!("{{ tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret: s, managed_identity: {{}} }}"),
            "keep one",
        ),
        (
            "{ managed_identity: { client_id: a, object_id: b } }".to_owned(),
            "more than one",
        ),
        (
            format!("{{ client_id: {CLIENT_ID}, managed_identity: {{}} }}"),
            "named inside it",
        ),
        (
            format!("{{ tenants: {{ contoso: {{ managed_identity: {{}} }} }}, subscriptions: {{ \"{SUB_A}\": contso }} }}"),
            "`contso` is not in integrations.credentials.azure.tenants (it has contoso)",
        ),
        (
            "{ tenants: { contoso: { managed_identity: {} } }, subscriptions: { \"prod\": contoso } }".to_owned(),
            "not a subscription id",
        ),
        (
            format!("{{ client_secret: s, client_id: {CLIENT_ID} }}"),
            "no `tenant_id`",
        ),
        (
            format!("{{ tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_certificate: {} }}", serde_json::to_string(&key).unwrap()),
            "no `BEGIN CERTIFICATE` block",
        ),
        (
            format!(
                "{{ tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_certificate: {} }}",
                serde_json::to_string(&(test_data("app-cert.pem") + key.replace("MII", "@@@").as_str())).unwrap()
            ),
            "integrations.credentials.azure.client_certificate",
        ),
    ] {
        let message = refused(&yaml);
        assert!(message.contains(expected), "{yaml}: {message}");
        for line in key_lines(&key) {
            assert!(!message.contains(&line), "{message}");
        }
    }
}

// ---- secrets -----------------------------------------------------------------------------------

/// A token service that echoes whatever it is sent into its error (a hostile or buggy
/// endpoint): the form of a token request, the headers of an identity request.
async fn echoing_endpoint() -> support::fake::FakeServer {
    use axum::http::HeaderMap;
    support::fake::serve(axum::Router::new().fallback(
        |headers: HeaderMap, body: String| async move {
            let headers: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                .collect();
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": "invalid_request",
                    "error_description": format!("you sent {body} with {}", headers.join("; "))
                })),
            )
        },
    ))
    .await
}

#[tokio::test]
async fn no_secret_key_assertion_token_or_header_reaches_an_error_or_an_output() {
    let echo = echoing_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let federated = service_account_token("issuer-key.pem", SERVICE_ACCOUNT, "sa-secret");
    std::fs::write(&token_file, &federated).unwrap();
    let key = test_data("app-key.pem");
    let inline = serde_json::to_string(&(test_data("app-cert.pem") + key.as_str())).unwrap();
    let login = format!(
        "endpoints: {{ login.microsoftonline.com: \"{}\", \"169.254.169.254\": \"{}\" }}",
        echo.base, echo.base
    );
    let app = format!("tenant_id: {CONTOSO}, client_id: {CONTOSO_APP}");
    let header = "identity-header-secret-123456";
    let cases = [
        (
            format!("{{ {app}, client_secret: \"{CLIENT_SECRET}\", {login} }}"),
            Env::new(),
        ),
        (
            format!("{{ {app}, client_certificate: {inline}, {login} }}"),
            Env::new(),
        ),
        (
            format!(
                "{{ {app}, federated_token_file: {}, {login} }}",
                token_file.display()
            ),
            Env::new(),
        ),
        (
            "{}".to_owned(),
            env(&[
                ("IDENTITY_ENDPOINT", &format!("{}/msi/token", echo.base)),
                ("IDENTITY_HEADER", header),
            ]),
        ),
    ];
    // The values, and enough of each to tell: a cut-off echo must not leave a piece of one.
    let mut forbidden = vec![
        CLIENT_SECRET[..20].to_owned(),
        header[..20].to_owned(),
        federated.clone(),
    ];
    forbidden.extend(
        federated
            .split('.')
            .skip(1)
            .map(|part| part[..40].to_owned()),
    );
    forbidden.extend(key_lines(&key));
    for (yaml, env) in cases {
        let provider = provider(&yaml, &env);
        let error = arm_token(&provider, SUB_A).await.unwrap_err();
        // The endpoint's error is passed on, with what it echoed blanked out.
        assert!(
            error.contains("400") && error.contains("you sent"),
            "{error}"
        );
        let printed = format!("{error} {provider:?}");
        for secret in &forbidden {
            assert!(!printed.contains(secret.as_str()), "{yaml}: {printed}");
        }
        // No signed assertion either: its signature part would be a base64url run of 300+.
        assert!(
            !printed
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .any(|run| run.len() > 200),
            "{printed}"
        );
        assert!(
            echo.requests()
                .iter()
                .any(|r| r.text().contains("client_assertion")
                    || r.text().contains("client_secret")
                    || r.headers.contains_key("x-identity-header")),
            "the endpoint was asked"
        );
    }

    // Through an action: the step's error carries none of it either.
    let fake = FakeAzure::start().await;
    let vm = seed(&fake, SUB_A, "vm1");
    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    azure:\n      tenant_id: {CONTOSO}\n      client_id: {CONTOSO_APP}\n      client_certificate: {inline}\n      endpoints:\n        management.azure.com: {}\n        login.microsoftonline.com: {}\n",
        repo("integrations/azure-compute").display(),
        fake.base,
        echo.base
    );
    let config = cordon::config::parse(&text, Path::new("test.yaml")).unwrap();
    let integrations =
        Integrations::load(&config.integrations, reqwest::Client::new(), None).unwrap();
    let error = call(
        &integrations,
        "azure-compute.isolate_vm",
        json!({ "vm_id": vm.id }),
        Some(SUB_A),
    )
    .await
    .unwrap_err();
    let printed = format!("{error:?}");
    for secret in &forbidden {
        assert!(!printed.contains(secret.as_str()), "{printed}");
    }
    assert!(!on_quarantine(&fake, &vm));
}

// ---- caching -----------------------------------------------------------------------------------

#[tokio::test]
async fn ten_parallel_callers_share_one_token_request_and_one_refresh() {
    let fake = FakeAzure::start().await;
    fake.add_managed_identity(system_identity(CONTOSO));
    // Tokens that last 2 s (reused for 1 s), each request taking 200 ms.
    fake.set_token_lifetime(2, Duration::from_millis(200));
    let provider = Arc::new(provider(
        &format!(
            "{{ endpoints: {{ \"169.254.169.254\": \"{}\" }} }}",
            fake.base
        ),
        &Env::new(),
    ));
    let burst = || async {
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let provider = provider.clone();
                tokio::spawn(async move { arm_token(&provider, SUB_A).await.unwrap() })
            })
            .collect();
        let mut tokens = Vec::new();
        for call in calls {
            tokens.push(call.await.unwrap().expose().to_owned());
        }
        tokens.dedup();
        tokens
    };
    let first = burst().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(fake.count("/metadata/identity/oauth2/token"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = burst().await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    assert_eq!(
        fake.count("/metadata/identity/oauth2/token"),
        2,
        "one refresh for ten callers"
    );
}
