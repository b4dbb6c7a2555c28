//! A fake of the Azure APIs the Azure integrations call, on 127.0.0.1:0. No Azure emulator exists,
//! so this follows the published request and response shapes (the REST API reference and the
//! examples in azure-rest-api-specs) of exactly what the integrations use:
//!
//! | API | version | operations |
//! |---|---|---|
//! | Entra ID token endpoint | v2.0 | `POST /{tenant}/oauth2/v2.0/token` (client credentials: a client secret, or a client assertion, RFC 7523: a certificate-signed JWT or a federated token) |
//! | Azure Instance Metadata Service, managed identity | `2018-02-01` | `GET /metadata/identity/oauth2/token` (`Metadata: true`; `resource`; `client_id`, `object_id`, `msi_res_id`) |
//! | App Service / Container Apps / Functions identity endpoint | `2019-08-01` | `GET /msi/token` (`X-IDENTITY-HEADER`; `resource`; `client_id`, `principal_id`, `mi_res_id`) |
//! | Microsoft.Compute (ComputeRP) | `2024-07-01` | `virtualMachines` GET |
//! | Microsoft.Compute (DiskRP) | `2024-03-02` | `disks` GET; `snapshots` GET, PUT (`createOption: Copy`) |
//! | Microsoft.Network | `2024-05-01` | `networkInterfaces` GET, PUT; `networkSecurityGroups` GET, PUT |
//! | Microsoft Graph | `v1.0` | `users/{id}` GET (`$select`), PATCH; `users/{id}/revokeSignInSessions` POST |
//!
//! Disks and snapshots belong to the Disk resource provider, whose api-versions are not the
//! virtual machines' (there is no `2024-07-01` for disks), hence two Compute versions.
//!
//! ARM requests need a bearer token issued for `https://management.azure.com/.default`, Graph
//! requests one for `https://graph.microsoft.com/.default`; an ARM call with another api-version
//! than the one listed gets ARM's `InvalidApiVersionParameter` error. Errors have the services'
//! shapes: ARM `{"error":{"code","message"}}`, Graph `{"error":{"code","message","innerError"}}`,
//! Entra `{"error","error_description","error_codes",...}`. Where ARM's exact code for a
//! validation failure is not published, the code is this fake's own; the shape is ARM's.
//!
//! Client assertions are checked as Entra ID documents it ("Microsoft identity platform
//! application authentication certificate credentials", "Workload identity federation"): a
//! certificate assertion is an RS256 JWT whose `x5t` is the base64url SHA-1 thumbprint of a
//! certificate registered on the application (`x5t#S256`, when present, its SHA-256), signed
//! by that certificate's key, with `aud` the token endpoint, `iss` = `sub` = the client id, a
//! `jti`, and a validity of at most ten minutes; a federated assertion is a JWT signed by the
//! trusted issuer's key with the federated credential's `iss`, `sub` and the audience
//! `api://AzureADTokenExchange`. The identity endpoints answer as their pages document
//! (`expires_in` and `expires_on` as strings); their error bodies are not documented beyond
//! IMDS's `{error, error_description}`, which both use here. ARM refuses a token of another
//! tenant than the subscription's with `InvalidAuthenticationTokenTenant`.
//!
//! Tests seed a VM ([`FakeAzure::seed_vm`]) and users ([`FakeAzure::seed_user`]) and read the
//! state back (NIC → NSG, NSG rules, snapshots, `accountEnabled`, revocations, token requests).
#![allow(dead_code)]
// The checks of a token request give the refusal to answer as their error; a test fake's
// responses are not worth boxing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fake::{self, FakeServer};

/// The tenant, client id and secret the fake's token endpoint accepts.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "5b8f5a3e-1c2d-4e6f-8a9b-0c1d2e3f4a5b";
pub const CLIENT_SECRET: &str = "fake-azure-client-secret-6Qz~";

pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub const VM_API: &str = "2024-07-01";
pub const DISK_API: &str = "2024-03-02";
pub const NETWORK_API: &str = "2024-05-01";

/// What a test seeds: one VM with two NICs (the first on an existing NSG `web-nsg`, the second on
/// none), an OS disk and one data disk.
pub struct VmSeed<'a> {
    pub subscription: &'a str,
    pub resource_group: &'a str,
    pub name: &'a str,
    pub location: &'a str,
}

/// The ids of what [`FakeAzure::seed_vm`] created.
#[derive(Debug, Clone)]
pub struct SeededVm {
    pub id: String,
    pub nics: Vec<String>,
    /// The NSG the first NIC starts on (the second starts on none).
    pub web_nsg: String,
    pub os_disk: String,
    pub data_disk: String,
}

/// How an application proves who it is to the fake's token endpoint.
#[derive(Clone)]
pub enum AppProof {
    Secret(String),
    /// The DER of a certificate registered on the application.
    Certificate(Vec<u8>),
    /// A federated identity credential: the tokens of `issuer` about `subject`, verified with
    /// the issuer's public key (SPKI PEM).
    Federated {
        issuer: String,
        subject: String,
        public_key_pem: String,
    },
}

/// A managed identity the identity endpoints answer for.
#[derive(Clone, Debug)]
pub struct ManagedId {
    pub client_id: String,
    pub object_id: String,
    pub resource_id: String,
    /// The system-assigned identity (asked for without an id).
    pub system: bool,
    pub tenant: String,
}

/// An access token the fake issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub scope: String,
    pub tenant: String,
    /// `app:<client id>` or `mi:<client id>`.
    pub principal: String,
}

#[derive(Default)]
struct State {
    /// The fake's own base URL: the authority a client assertion's `aud` names.
    base: String,
    /// Issued access token → what it was issued for.
    tokens: HashMap<String, Issued>,
    /// Applications by (tenant, client id).
    apps: HashMap<(String, String), AppProof>,
    managed: Vec<ManagedId>,
    /// App Service's `IDENTITY_HEADER`.
    identity_header: Option<String>,
    /// Subscription (lower-cased) → its tenant; ARM refuses tokens of any other.
    subscription_tenants: HashMap<String, String>,
    /// `expires_in` of the tokens issued.
    lifetime: Option<u64>,
    /// How long a token request takes.
    token_delay: std::time::Duration,
    /// Every client assertion accepted: (client id, its `jti`).
    assertions: Vec<(String, String)>,
    /// (principal, subscription) of every ARM request that passed the token checks.
    arm_callers: Vec<(String, String)>,
    /// The scope of every successful token request, in order.
    token_requests: Vec<String>,
    /// Token requests refused (wrong client, secret, tenant, scope).
    token_refusals: usize,
    /// ARM resources by lower-cased id.
    resources: BTreeMap<String, Value>,
    /// GETs a new snapshot still answers `Updating` to, per snapshot (lower-cased id).
    snapshot_pending: HashMap<String, u32>,
    /// How many GETs each new snapshot answers `Updating` to.
    pending_gets: u32,
    /// Graph users by object id.
    users: BTreeMap<String, Value>,
    /// `revokeSignInSessions` calls per user object id.
    revocations: HashMap<String, u32>,
    counter: u64,
}

/// The running fake.
pub struct FakeAzure {
    pub base: String,
    state: Arc<Mutex<State>>,
    server: FakeServer,
}

impl FakeAzure {
    pub async fn start() -> FakeAzure {
        let mut initial = State::default();
        initial.apps.insert(
            (TENANT.to_owned(), CLIENT_ID.to_owned()),
            AppProof::Secret(CLIENT_SECRET.to_owned()),
        );
        let state = Arc::new(Mutex::new(initial));
        let shared = state.clone();
        let server = fake::serve(axum::Router::new().fallback(move |request: Request| {
            let state = shared.clone();
            async move { handle(state, request).await }
        }))
        .await;
        state.lock().unwrap().base = server.base.clone();
        FakeAzure {
            base: server.base.clone(),
            state,
            server,
        }
    }

    /// The `credentials.azure` block of a Cordon config pointing every Azure host at this fake;
    /// `secret` is the client secret to configure.
    pub fn credentials_yaml(&self, secret: &str) -> String {
        format!(
            "    azure:\n      tenant_id: {TENANT}\n      client_id: {CLIENT_ID}\n      client_secret: \"{secret}\"\n      endpoints:\n        management.azure.com: {base}\n        graph.microsoft.com: {base}\n        login.microsoftonline.com: {base}\n",
            base = self.base
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Seeds a VM, its two NICs, the NSG of the first NIC and its two disks.
    pub fn seed_vm(&self, seed: VmSeed<'_>) -> SeededVm {
        let VmSeed {
            subscription,
            resource_group,
            name,
            location,
        } = seed;
        let rg = format!("/subscriptions/{subscription}/resourceGroups/{resource_group}");
        let vm_id = format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
        let nsg_id = format!("{rg}/providers/Microsoft.Network/networkSecurityGroups/web-nsg");
        let nic_ids: Vec<String> = (0..2)
            .map(|i| format!("{rg}/providers/Microsoft.Network/networkInterfaces/{name}-nic{i}"))
            .collect();
        let os_disk = format!("{rg}/providers/Microsoft.Compute/disks/{name}_OsDisk_1");
        let data_disk = format!("{rg}/providers/Microsoft.Compute/disks/{name}_data0");

        let mut state = self.lock();
        let web_rules = vec![json!({
            "name": "allow-https",
            "properties": {
                "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "443",
                "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                "access": "Allow", "priority": 100, "direction": "Inbound"
            }
        })];
        let nsg = nsg_resource(&nsg_id, location, &json!({}), &web_rules, &mut state);
        state.resources.insert(nsg_id.to_lowercase(), nsg);
        for (i, nic_id) in nic_ids.iter().enumerate() {
            let mut properties = json!({
                "provisioningState": "Succeeded",
                "resourceGuid": guid(&mut state),
                "ipConfigurations": [{
                    "name": "ipconfig1",
                    "id": format!("{nic_id}/ipConfigurations/ipconfig1"),
                    "properties": {
                        "provisioningState": "Succeeded",
                        "privateIPAddress": format!("10.0.{i}.4"),
                        "privateIPAllocationMethod": "Dynamic",
                        "subnet": { "id": format!("{rg}/providers/Microsoft.Network/virtualNetworks/{resource_group}-vnet/subnets/default") },
                        "primary": true,
                        "privateIPAddressVersion": "IPv4"
                    }
                }],
                "dnsSettings": { "dnsServers": [], "appliedDnsServers": [] },
                "macAddress": format!("00-0D-3A-1B-C7-2{i}"),
                "enableAcceleratedNetworking": false,
                "enableIPForwarding": false,
                "primary": i == 0,
                "virtualMachine": { "id": vm_id },
                "vnetEncryptionSupported": false
            });
            if i == 0 {
                properties["networkSecurityGroup"] = json!({ "id": nsg_id });
            }
            let nic = json!({
                "name": last_segment(nic_id),
                "id": nic_id,
                "etag": etag(&mut state),
                "type": "Microsoft.Network/networkInterfaces",
                "location": location,
                "tags": { "owner": "web-team" },
                "properties": properties
            });
            state.resources.insert(nic_id.to_lowercase(), nic);
        }
        for (disk_id, size) in [(&os_disk, 30), (&data_disk, 128)] {
            let disk = json!({
                "name": last_segment(disk_id),
                "id": disk_id,
                "type": "Microsoft.Compute/disks",
                "location": location,
                "managedBy": vm_id,
                "sku": { "name": "Premium_LRS", "tier": "Premium" },
                "properties": {
                    "creationData": { "createOption": if disk_id == &os_disk { "FromImage" } else { "Empty" } },
                    "diskSizeGB": size,
                    "diskState": "Attached",
                    "uniqueId": guid(&mut state),
                    "timeCreated": "2024-11-02T08:15:00.0000000+00:00",
                    "provisioningState": "Succeeded",
                    "encryption": { "type": "EncryptionAtRestWithPlatformKey" }
                }
            });
            state.resources.insert(disk_id.to_lowercase(), disk);
        }
        let vm = json!({
            "name": name,
            "id": vm_id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": location,
            "tags": { "env": "prod" },
            "properties": {
                "vmId": guid(&mut state),
                "hardwareProfile": { "vmSize": "Standard_D2s_v5" },
                "storageProfile": {
                    "imageReference": { "publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest" },
                    "osDisk": {
                        "osType": "Linux",
                        "name": last_segment(&os_disk),
                        "createOption": "FromImage",
                        "caching": "ReadWrite",
                        "managedDisk": { "storageAccountType": "Premium_LRS", "id": os_disk },
                        "deleteOption": "Delete",
                        "diskSizeGB": 30
                    },
                    "dataDisks": [{
                        "lun": 0,
                        "name": last_segment(&data_disk),
                        "createOption": "Attach",
                        "caching": "ReadOnly",
                        "managedDisk": { "storageAccountType": "Premium_LRS", "id": data_disk },
                        "deleteOption": "Detach",
                        "diskSizeGB": 128,
                        "toBeDetached": false
                    }],
                    "diskControllerType": "SCSI"
                },
                "osProfile": { "computerName": name, "adminUsername": "azureuser", "secrets": [] },
                "networkProfile": {
                    "networkInterfaces": [
                        { "id": nic_ids[0], "properties": { "primary": true } },
                        { "id": nic_ids[1], "properties": { "primary": false } }
                    ]
                },
                "provisioningState": "Succeeded",
                "timeCreated": "2024-11-02T08:15:00.0000000+00:00"
            }
        });
        state.resources.insert(vm_id.to_lowercase(), vm);
        SeededVm {
            id: vm_id,
            nics: nic_ids,
            web_nsg: nsg_id,
            os_disk,
            data_disk,
        }
    }

    /// Seeds an Entra ID user.
    pub fn seed_user(&self, id: &str, upn: &str, display_name: &str, enabled: bool) {
        let user = json!({
            "id": id,
            "userPrincipalName": upn,
            "displayName": display_name,
            "givenName": display_name.split(' ').next().unwrap_or(display_name),
            "surname": display_name.split(' ').nth(1),
            "mail": upn,
            "jobTitle": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": "en-US",
            "businessPhones": [],
            "accountEnabled": enabled,
            "signInSessionsValidFromDateTime": "2024-01-01T00:00:00Z"
        });
        self.lock().users.insert(id.to_owned(), user);
    }

    /// Seeds an NSG as someone else left it (for tests of reuse).
    pub fn seed_nsg(&self, id: &str, location: &str, rules: Vec<Value>) {
        let mut state = self.lock();
        let nsg = nsg_resource(id, location, &json!({}), &rules, &mut state);
        state.resources.insert(id.to_lowercase(), nsg);
    }

    /// How many GETs each snapshot created from now on answers `Updating` to before `Succeeded`.
    pub fn set_snapshot_pending_gets(&self, n: u32) {
        self.lock().pending_gets = n;
    }

    /// The NSG id the NIC is on, as stored.
    pub fn nic_nsg(&self, nic_id: &str) -> Option<String> {
        self.resource(nic_id).and_then(|nic| {
            nic["properties"]["networkSecurityGroup"]["id"]
                .as_str()
                .map(str::to_owned)
        })
    }

    /// A NIC's tags.
    pub fn nic_tags(&self, nic_id: &str) -> Value {
        self.resource(nic_id)
            .map(|nic| nic["tags"].clone())
            .unwrap_or(Value::Null)
    }

    /// A stored ARM resource by id (any case).
    pub fn resource(&self, id: &str) -> Option<Value> {
        self.lock().resources.get(&id.to_lowercase()).cloned()
    }

    /// Every stored resource of an ARM type (`Microsoft.Compute/snapshots`).
    pub fn resources_of(&self, kind: &str) -> Vec<Value> {
        self.lock()
            .resources
            .values()
            .filter(|r| {
                r["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            })
            .cloned()
            .collect()
    }

    pub fn snapshots(&self) -> Vec<Value> {
        self.resources_of("Microsoft.Compute/snapshots")
    }

    /// Every NSG's id.
    pub fn nsg_ids(&self) -> Vec<String> {
        self.resources_of("Microsoft.Network/networkSecurityGroups")
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// A user's `accountEnabled`.
    pub fn user_enabled(&self, id: &str) -> Option<bool> {
        self.lock()
            .users
            .get(id)
            .and_then(|u| u["accountEnabled"].as_bool())
    }

    /// How many times the user's sessions were revoked.
    pub fn revocations(&self, id: &str) -> u32 {
        self.lock().revocations.get(id).copied().unwrap_or(0)
    }

    /// Successful token requests for `scope`.
    pub fn token_requests(&self, scope: &str) -> usize {
        self.lock()
            .token_requests
            .iter()
            .filter(|s| *s == scope)
            .count()
    }

    pub fn token_refusals(&self) -> usize {
        self.lock().token_refusals
    }

    /// Registers an application of `tenant`.
    pub fn add_app(&self, tenant: &str, client_id: &str, proof: AppProof) {
        self.lock()
            .apps
            .insert((tenant.to_owned(), client_id.to_owned()), proof);
    }

    /// Registers a managed identity.
    pub fn add_managed_identity(&self, identity: ManagedId) {
        self.lock().managed.push(identity);
    }

    /// The `IDENTITY_HEADER` App Service gives the process.
    pub fn set_identity_header(&self, header: &str) {
        self.lock().identity_header = Some(header.to_owned());
    }

    /// The tenant `subscription` belongs to: ARM refuses tokens of another tenant for it.
    pub fn set_subscription_tenant(&self, subscription: &str, tenant: &str) {
        self.lock()
            .subscription_tenants
            .insert(subscription.to_lowercase(), tenant.to_owned());
    }

    /// The `expires_in` of the tokens issued from now on (default 3599 s, or one day for a
    /// managed identity), and how long each token request takes.
    pub fn set_token_lifetime(&self, seconds: u64, delay: std::time::Duration) {
        let mut state = self.lock();
        state.lifetime = Some(seconds);
        state.token_delay = delay;
    }

    /// Every client assertion accepted: (client id, `jti`).
    pub fn assertions(&self) -> Vec<(String, String)> {
        self.lock().assertions.clone()
    }

    /// (principal, subscription) of every ARM request that passed the token checks.
    pub fn arm_callers(&self) -> Vec<(String, String)> {
        self.lock().arm_callers.clone()
    }

    /// What the token was issued for, when the fake issued it.
    pub fn issued(&self, token: &str) -> Option<Issued> {
        self.lock().tokens.get(token).cloned()
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.server.requests().iter().map(|r| r.line()).collect()
    }

    /// The JSON bodies sent with requests whose `METHOD path` contains `what`, in order.
    pub fn bodies(&self, what: &str) -> Vec<Value> {
        self.server
            .requests()
            .iter()
            .filter(|r| format!("{} {}", r.method, r.uri.path()).contains(what))
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Seeds a Graph user given as the `user` resource (it needs `id` and `userPrincipalName`).
    pub fn seed_user_json(&self, user: Value) {
        let id = user["id"].as_str().expect("the user has an id").to_owned();
        self.lock().users.insert(id, user);
    }

    /// Requests whose `METHOD path?query` contains `what`.
    pub fn count(&self, what: &str) -> usize {
        self.server.count(what)
    }
}

async fn handle(state: Arc<Mutex<State>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let is_token = path.ends_with("/token");
    let delay = state.lock().unwrap().token_delay;
    if is_token && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().unwrap();
    if path == "/metadata/identity/oauth2/token" {
        return imds(&mut state, &parts.method, &parts.headers, &query);
    }
    if path == "/msi/token" {
        return app_service(&mut state, &parts.method, &parts.headers, &query);
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    if segments.len() == 4
        && segments[1] == "oauth2"
        && segments[2] == "v2.0"
        && segments[3] == "token"
    {
        return token(&mut state, &parts.method, &segments[0], &body);
    }
    if segments.first().is_some_and(|s| s == "v1.0") {
        return graph(
            &mut state,
            &parts.method,
            &parts.headers,
            &segments[1..],
            &query,
            &body,
        );
    }
    if segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
    {
        return arm(
            &mut state,
            &parts.method,
            &parts.headers,
            &path,
            &segments,
            &query,
            &body,
        );
    }
    (StatusCode::NOT_FOUND, "no such endpoint in the fake").into_response()
}

/// Decodes `%XX` escapes in a path segment (`alice%40contoso.com`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- Entra ID ----------------------------------------------------------------------------------

fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: 0b5a1c2e-8f3d-4e6a-9b7c-1d2e3f4a5b6c Correlation ID: 7e8f9a0b-1c2d-3e4f-5a6b-7c8d9e0f1a2b Timestamp: 2025-01-01 00:00:00Z"),
            "error_codes": [code],
            "timestamp": "2025-01-01 00:00:00Z",
            "trace_id": "0b5a1c2e-8f3d-4e6a-9b7c-1d2e3f4a5b6c",
            "correlation_id": "7e8f9a0b-1c2d-3e4f-5a6b-7c8d9e0f1a2b",
            "error_uri": "https://login.microsoftonline.com/error?code={code}"
        })),
    )
        .into_response()
}

fn token(state: &mut State, method: &Method, tenant: &str, body: &Bytes) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let refused = |state: &mut State, r: Response| {
        state.token_refusals += 1;
        r
    };
    if !state.apps.keys().any(|(t, _)| t == tenant) {
        return refused(
            state,
            entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            ),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refused(
            state,
            entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            ),
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let Some(proof) = state
        .apps
        .get(&(tenant.to_owned(), client_id.clone()))
        .cloned()
    else {
        return refused(
            state,
            entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            ),
        );
    };
    let audience = format!("{}/{tenant}/oauth2/v2.0/token", state.base);
    let checked = match &proof {
        AppProof::Secret(secret) => {
            if form.get("client_secret") == Some(secret) {
                Ok(None)
            } else {
                Err(entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ))
            }
        }
        AppProof::Certificate(der) => {
            check_certificate_assertion(&form, der, &client_id, &audience).map(Some)
        }
        AppProof::Federated {
            issuer,
            subject,
            public_key_pem,
        } => check_federated_assertion(&form, issuer, subject, public_key_pem).map(Some),
    };
    let jti = match checked {
        Ok(jti) => jti,
        Err(response) => return refused(state, response),
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope != ARM_SCOPE && scope != GRAPH_SCOPE {
        return refused(
            state,
            entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            ),
        );
    }
    if let Some(jti) = jti {
        state.assertions.push((client_id.clone(), jti));
    }
    let lifetime = state.lifetime.unwrap_or(3599);
    let access_token = issue(state, &scope, tenant, &format!("app:{client_id}"));
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token
    }))
    .into_response()
}

/// A new access token for `scope`, recorded as issued to `principal` of `tenant`.
fn issue(state: &mut State, scope: &str, tenant: &str, principal: &str) -> String {
    state.counter += 1;
    let access_token = format!(
        "eyJ0eXAiOiJKV1QifQ.fake-{}-{}.sig",
        if scope == ARM_SCOPE { "arm" } else { "graph" },
        state.counter
    );
    state.tokens.insert(
        access_token.clone(),
        Issued {
            scope: scope.to_owned(),
            tenant: tenant.to_owned(),
            principal: principal.to_owned(),
        },
    );
    state.token_requests.push(scope.to_owned());
    access_token
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An `AADSTS700027`-style refusal of a client assertion.
fn bad_assertion(code: u32, description: &str) -> Response {
    entra_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        description,
    )
}

/// The assertion of a token request, checked for its type.
fn assertion_of(form: &HashMap<String, String>) -> Result<&str, Response> {
    if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    form.get("client_assertion")
        .map(String::as_str)
        .ok_or_else(|| {
            entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion'.",
            )
        })
}

/// Checks a certificate-signed client assertion; gives its `jti`.
fn check_certificate_assertion(
    form: &HashMap<String, String>,
    der: &[u8],
    client_id: &str,
    audience: &str,
) -> Result<String, Response> {
    use base64::Engine as _;
    use sha1::Digest as _;
    let assertion = assertion_of(form)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| bad_assertion(50027, "JWT token is invalid or malformed."))?;
    let thumbprint = b64.encode(sha1::Sha1::digest(der));
    if header.x5t.as_deref() != Some(thumbprint.as_str()) {
        return Err(bad_assertion(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}']",
                header.x5t.unwrap_or_default()
            ),
        ));
    }
    if let Some(s256) = &header.x5t_s256
        && *s256 != b64.encode(sha2::Sha256::digest(der))
    {
        return Err(bad_assertion(
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - x5t#S256 does not match.]",
        ));
    }
    let der = rustls_pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).expect("the registered certificate parses");
    let spki = cert.subject_public_key_info();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem("PUBLIC KEY", spki.as_ref()).as_bytes())
        .expect("the certificate's key is RSA");
    let claims = verified(assertion, &key, audience, client_id)?;
    if claims["sub"] != client_id {
        return Err(bad_assertion(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let (nbf, exp) = (claims["nbf"].as_u64(), claims["exp"].as_u64());
    if !matches!((nbf, exp), (Some(nbf), Some(exp)) if exp > nbf && exp - nbf <= 600) {
        return Err(bad_assertion(
            700024,
            "Client assertion is not within its valid time range (nbf to exp must be at most 10 minutes).",
        ));
    }
    claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad_assertion(50027, "The client assertion has no jti."))
}

/// Checks a federated token against the application's federated identity credential; gives
/// its `jti` (or its `iat` when it has none).
fn check_federated_assertion(
    form: &HashMap<String, String>,
    issuer: &str,
    subject: &str,
    public_key_pem: &str,
) -> Result<String, Response> {
    let assertion = assertion_of(form)?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .expect("the issuer key is RSA");
    let claims = verified(assertion, &key, "api://AzureADTokenExchange", issuer)?;
    if claims["sub"] != subject {
        return Err(bad_assertion(
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{}'. Assertion Audience: 'api://AzureADTokenExchange'.",
                claims["sub"].as_str().unwrap_or_default()
            ),
        ));
    }
    Ok(claims["jti"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| claims["iat"].to_string()))
}

/// The claims of an RS256 JWT signed by `key` for `audience` from `issuer`, unexpired.
fn verified(
    assertion: &str,
    key: &jsonwebtoken::DecodingKey,
    audience: &str,
    issuer: &str,
) -> Result<Value, Response> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    jsonwebtoken::decode::<Value>(assertion, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => {
                    bad_assertion(700027, "Client assertion failed signature validation.")
                }
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => bad_assertion(
                    700024,
                    "Client assertion is not within its valid time range.",
                ),
                ErrorKind::InvalidAudience => bad_assertion(
                    700212,
                    &format!(
                        "The client assertion's audience does not match. Expected: '{audience}'."
                    ),
                ),
                ErrorKind::InvalidIssuer => bad_assertion(
                    70021,
                    "No matching federated identity record found for presented assertion issuer.",
                ),
                other => bad_assertion(
                    50027,
                    &format!("JWT token is invalid or malformed: {other:?}."),
                ),
            }
        })
}

/// `der` as a PEM block labelled `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

// ---- Managed identity endpoints ---------------------------------------------------------------

/// `{error, error_description}`, as IMDS answers.
fn identity_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// The managed identity a request names by one of the three ids (`params`: the names of the
/// client id, object id and resource id parameters), else the system-assigned one.
fn managed_identity(
    state: &State,
    query: &HashMap<String, String>,
    params: [&str; 3],
) -> Result<ManagedId, Response> {
    let [client, object, resource] = params;
    let found = if let Some(id) = query.get(client) {
        state.managed.iter().find(|m| &m.client_id == id)
    } else if let Some(id) = query.get(object) {
        state.managed.iter().find(|m| &m.object_id == id)
    } else if let Some(id) = query.get(resource) {
        state
            .managed
            .iter()
            .find(|m| m.resource_id.eq_ignore_ascii_case(id))
    } else {
        state.managed.iter().find(|m| m.system)
    };
    found.cloned().ok_or_else(|| {
        identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        )
    })
}

/// The scope of a managed identity's `resource` (ARM or Graph), or the refusal.
fn resource_scope(query: &HashMap<String, String>) -> Result<String, Response> {
    let Some(resource) = query.get("resource") else {
        return Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        ));
    };
    let scope = format!("{}/.default", resource.trim_end_matches('/'));
    if scope != ARM_SCOPE && scope != GRAPH_SCOPE {
        return Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant."
            ),
        ));
    }
    Ok(scope)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn imds(
    state: &mut State,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if query.get("api-version").map(String::as_str) != Some("2018-02-01") {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing or not supported",
        );
    }
    let scope = match resource_scope(query) {
        Ok(scope) => scope,
        Err(refused) => return refused,
    };
    let identity = match managed_identity(state, query, ["client_id", "object_id", "msi_res_id"]) {
        Ok(identity) => identity,
        Err(refused) => return refused,
    };
    let lifetime = state.lifetime.unwrap_or(86399);
    let token = issue(
        state,
        &scope,
        &identity.tenant,
        &format!("mi:{}", identity.client_id),
    );
    let now = now();
    axum::Json(json!({
        "access_token": token,
        "client_id": identity.client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": query["resource"],
        "token_type": "Bearer"
    }))
    .into_response()
}

fn app_service(
    state: &mut State,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let given = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if given.is_none() || given != state.identity_header.as_deref() {
        return identity_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "The X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER",
        );
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "api-version 2019-08-01 is required",
        );
    }
    let scope = match resource_scope(query) {
        Ok(scope) => scope,
        Err(refused) => return refused,
    };
    let identity = match managed_identity(state, query, ["client_id", "principal_id", "mi_res_id"])
    {
        Ok(identity) => identity,
        Err(refused) => return refused,
    };
    let lifetime = state.lifetime.unwrap_or(86399);
    let token = issue(
        state,
        &scope,
        &identity.tenant,
        &format!("mi:{}", identity.client_id),
    );
    // 2019-08-01 answers `expires_on` (epoch seconds, a string) and no `expires_in`.
    axum::Json(json!({
        "access_token": token,
        "expires_on": (now() + lifetime).to_string(),
        "resource": query["resource"],
        "token_type": "Bearer",
        "client_id": identity.client_id
    }))
    .into_response()
}

/// The scope of the request's bearer token: `Err` when missing, `Ok(None)` when unknown.
fn bearer_scope(state: &State, headers: &HeaderMap) -> Result<Option<String>, ()> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(())?;
    Ok(state.tokens.get(token).map(|issued| issued.scope.clone()))
}

/// What the request's bearer token was issued for.
fn bearer_issued(state: &State, headers: &HeaderMap) -> Option<Issued> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    state.tokens.get(token).cloned()
}

/// The 401s a service answers (error code, message) when the bearer token is missing, was never
/// issued, or was issued for another audience.
struct Refusals {
    missing: (&'static str, &'static str),
    unknown: (&'static str, &'static str),
    other_audience: (&'static str, &'static str),
}

/// The service's 401, built by `error`, unless the request's bearer token was issued for `scope`.
fn refusal(
    state: &State,
    headers: &HeaderMap,
    scope: &str,
    refusals: &Refusals,
    error: fn(StatusCode, &str, &str) -> Response,
) -> Option<Response> {
    let (code, message) = match bearer_scope(state, headers) {
        Err(()) => refusals.missing,
        Ok(None) => refusals.unknown,
        Ok(Some(issued)) if issued != scope => refusals.other_audience,
        Ok(Some(_)) => return None,
    };
    Some(error(StatusCode::UNAUTHORIZED, code, message))
}

// ---- ARM ---------------------------------------------------------------------------------------

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-ms-failure-cause", "gateway")],
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn arm_ok(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn arm(
    state: &mut State,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    segments: &[String],
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let refusals = Refusals {
        missing: (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ),
        unknown: ("InvalidAuthenticationToken", "The access token is invalid."),
        other_audience: (
            "InvalidAuthenticationTokenAudience",
            "The access token has been obtained for wrong audience or resource 'https://graph.microsoft.com'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
        ),
    };
    if let Some(refused) = refusal(state, headers, ARM_SCOPE, &refusals, arm_error) {
        return refused;
    }
    let issued = bearer_issued(state, headers).expect("checked by refusal");
    let subscription = segments.get(1).cloned().unwrap_or_default().to_lowercase();
    if let Some(tenant) = state.subscription_tenants.get(&subscription)
        && *tenant != issued.tenant
    {
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenTenant",
            &format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{tenant}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{tenant}' to get the token.",
                issued.tenant
            ),
        );
    }
    state.arm_callers.push((issued.principal, subscription));
    // /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}
    let shape_ok = segments.len() == 8
        && segments[2].eq_ignore_ascii_case("resourcegroups")
        && segments[4].eq_ignore_ascii_case("providers");
    if !shape_ok {
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace.",
        );
    }
    let kind = format!("{}/{}", segments[5], segments[6]).to_lowercase();
    let version = match kind.as_str() {
        "microsoft.compute/virtualmachines" => VM_API,
        "microsoft.compute/disks" | "microsoft.compute/snapshots" => DISK_API,
        "microsoft.network/networkinterfaces" | "microsoft.network/networksecuritygroups" => {
            NETWORK_API
        }
        _ => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidResourceType",
                &format!(
                    "The resource type '{}' could not be found in the namespace '{}'.",
                    segments[6], segments[5]
                ),
            );
        }
    };
    match query.get("api-version") {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        Some(v) if v != version => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{v}' is invalid. The supported versions are '{version}'."
                ),
            );
        }
        Some(_) => {}
    }
    let id = path.to_owned();
    let key = id.to_lowercase();
    let not_found = || {
        arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource '{}/{}/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                segments[5], segments[6], segments[7], segments[3]
            ),
        )
    };
    let parsed: Option<Value> = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    let invalid_content = || {
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        )
    };
    match (method.as_str(), kind.as_str()) {
        ("GET", "microsoft.network/networksecuritygroups") => match state.resources.get(&key) {
            Some(nsg) => {
                let mut nsg = nsg.clone();
                // The NICs on the group, as the real GET lists them.
                let nics: Vec<Value> = state
                    .resources
                    .values()
                    .filter(|r| {
                        r["properties"]["networkSecurityGroup"]["id"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(&id))
                    })
                    .map(|r| json!({ "id": r["id"] }))
                    .collect();
                if !nics.is_empty() {
                    nsg["properties"]["networkInterfaces"] = Value::Array(nics);
                }
                arm_ok(StatusCode::OK, nsg)
            }
            None => not_found(),
        },
        ("GET", "microsoft.compute/snapshots") => match state.resources.get(&key).cloned() {
            Some(mut snapshot) => {
                let pending = state.snapshot_pending.get_mut(&key);
                match pending {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => {
                        snapshot["properties"]["provisioningState"] = json!("Succeeded");
                        state.resources.insert(key.clone(), snapshot.clone());
                    }
                }
                arm_ok(StatusCode::OK, snapshot)
            }
            None => not_found(),
        },
        ("GET", _) => match state.resources.get(&key) {
            Some(resource) => arm_ok(StatusCode::OK, resource.clone()),
            None => not_found(),
        },
        ("PUT", "microsoft.compute/snapshots") => {
            let Some(body) = parsed else {
                return invalid_content();
            };
            put_snapshot(state, &id, &key, &body)
        }
        ("PUT", "microsoft.network/networksecuritygroups") => {
            let Some(body) = parsed else {
                return invalid_content();
            };
            put_nsg(state, &id, &key, &body)
        }
        ("PUT", "microsoft.network/networkinterfaces") => {
            let Some(body) = parsed else {
                return invalid_content();
            };
            put_nic(state, &id, &key, &body)
        }
        (m, _) => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("The requested resource does not support http method '{m}'."),
        ),
    }
}

fn location_of(body: &Value) -> Option<String> {
    body["location"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// `West Europe` and `westeurope` name the same region.
fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(' ', "").to_lowercase();
    norm(a) == norm(b)
}

fn location_required() -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "LocationRequired",
        "The location property is required for this definition.",
    )
}

fn put_snapshot(state: &mut State, id: &str, key: &str, body: &Value) -> Response {
    let Some(location) = location_of(body) else {
        return location_required();
    };
    let creation = &body["properties"]["creationData"];
    if creation["createOption"] != "Copy" {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "This fake creates snapshots with createOption 'Copy' only.",
        );
    }
    let Some(source) = creation["sourceResourceId"].as_str() else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Required parameter 'sourceResourceId' is missing (null).",
        );
    };
    let source_key = format!("/{}", source.trim_start_matches('/')).to_lowercase();
    let Some(disk) = state.resources.get(&source_key).cloned() else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Resource {source} is not found."),
        );
    };
    if !same_location(&location, disk["location"].as_str().unwrap_or("")) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Copy requires the snapshot and its source in the same location; use CopyStart across regions.",
        );
    }
    let tags = body.get("tags").cloned().unwrap_or(json!({}));
    if let Some(existing) = state.resources.get(key).cloned() {
        let existing_source = existing["properties"]["creationData"]["sourceResourceId"]
            .as_str()
            .unwrap_or("");
        if !existing_source.eq_ignore_ascii_case(source) {
            return arm_error(
                StatusCode::CONFLICT,
                "PropertyChangeNotAllowed",
                "Changing property 'sourceResourceId' is not allowed.",
            );
        }
        let mut updated = existing;
        updated["tags"] = tags;
        state.resources.insert(key.to_owned(), updated.clone());
        return arm_ok(StatusCode::OK, updated);
    }
    let snapshot = json!({
        "name": last_segment(id),
        "id": id,
        "type": "Microsoft.Compute/snapshots",
        "location": location,
        "tags": tags,
        "sku": { "name": "Standard_LRS", "tier": "Standard" },
        "properties": {
            "creationData": {
                "createOption": "Copy",
                "sourceResourceId": source,
                "sourceUniqueId": disk["properties"]["uniqueId"]
            },
            "diskSizeGB": disk["properties"]["diskSizeGB"],
            "incremental": body["properties"]["incremental"].as_bool().unwrap_or(false),
            "timeCreated": chrono::Utc::now().to_rfc3339(),
            "provisioningState": "Updating",
            "uniqueId": guid(state)
        }
    });
    state.resources.insert(key.to_owned(), snapshot.clone());
    let pending = state.pending_gets;
    state.snapshot_pending.insert(key.to_owned(), pending);
    (
        StatusCode::ACCEPTED,
        [(
            "azure-asyncoperation",
            format!(
                "https://management.azure.com/subscriptions/{}/providers/Microsoft.Compute/locations/{location}/DiskOperations/{}?api-version={DISK_API}",
                id.split('/').nth(2).unwrap_or(""),
                guid(state)
            ),
        )],
        axum::Json(snapshot),
    )
        .into_response()
}

const RULE_FIELDS: [&str; 4] = ["protocol", "access", "direction", "priority"];

/// The first problem with the rules of an NSG PUT, as ARM's answer.
fn check_rules(rules: &[Value]) -> Option<Response> {
    let mut seen: Vec<(String, u64)> = Vec::new();
    for rule in rules {
        let name = rule["name"].as_str().unwrap_or("");
        let p = &rule["properties"];
        if name.is_empty() {
            return Some(arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestFormat",
                "Cannot parse the request: a security rule has no name.",
            ));
        }
        for field in RULE_FIELDS {
            if p[field].is_null() {
                return Some(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestFormat",
                    &format!("Security rule {name} has no value for property {field}."),
                ));
            }
        }
        let has = |one: &str, many: &str| {
            p[one].is_string() || p[many].as_array().is_some_and(|a| !a.is_empty())
        };
        if !has("sourceAddressPrefix", "sourceAddressPrefixes")
            || !has("destinationAddressPrefix", "destinationAddressPrefixes")
            || !has("sourcePortRange", "sourcePortRanges")
            || !has("destinationPortRange", "destinationPortRanges")
        {
            return Some(arm_error(
                StatusCode::BAD_REQUEST,
                "SecurityRuleParameterMissing",
                &format!(
                    "Security rule {name} must name its source and destination addresses and ports."
                ),
            ));
        }
        let priority = p["priority"].as_u64().unwrap_or(0);
        if !(100..=4096).contains(&priority) {
            return Some(arm_error(
                StatusCode::BAD_REQUEST,
                "SecurityRuleInvalidPriority",
                &format!(
                    "Security rule {name} has invalid Priority. Value provided: {priority} Allowed range 100-4096."
                ),
            ));
        }
        let direction = p["direction"].as_str().unwrap_or("").to_owned();
        if seen
            .iter()
            .any(|(d, pr)| *d == direction && *pr == priority)
        {
            return Some(arm_error(
                StatusCode::BAD_REQUEST,
                "SecurityRuleConflict",
                &format!(
                    "Security rule {name} conflicts with another rule: same priority {priority} and direction {direction}."
                ),
            ));
        }
        seen.push((direction, priority));
    }
    None
}

fn default_rules(nsg_id: &str) -> Value {
    let rule =
        |name: &str, desc: &str, src: &str, dst: &str, access: &str, priority: u32, dir: &str| {
            json!({
                "name": name,
                "id": format!("{nsg_id}/defaultSecurityRules/{name}"),
                "properties": {
                    "provisioningState": "Succeeded", "description": desc, "protocol": "*",
                    "sourcePortRange": "*", "destinationPortRange": "*",
                    "sourceAddressPrefix": src, "destinationAddressPrefix": dst,
                    "access": access, "priority": priority, "direction": dir
                }
            })
        };
    json!([
        rule(
            "AllowVnetInBound",
            "Allow inbound traffic from all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow",
            65000,
            "Inbound"
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            "Allow inbound traffic from azure load balancer",
            "AzureLoadBalancer",
            "*",
            "Allow",
            65001,
            "Inbound"
        ),
        rule(
            "DenyAllInBound",
            "Deny all inbound traffic",
            "*",
            "*",
            "Deny",
            65500,
            "Inbound"
        ),
        rule(
            "AllowVnetOutBound",
            "Allow outbound traffic from all VMs to all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow",
            65000,
            "Outbound"
        ),
        rule(
            "AllowInternetOutBound",
            "Allow outbound traffic from all VMs to Internet",
            "*",
            "Internet",
            "Allow",
            65001,
            "Outbound"
        ),
        rule(
            "DenyAllOutBound",
            "Deny all outbound traffic",
            "*",
            "*",
            "Deny",
            65500,
            "Outbound"
        ),
    ])
}

fn nsg_resource(
    id: &str,
    location: &str,
    tags: &Value,
    rules: &[Value],
    state: &mut State,
) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let name = r["name"].as_str().unwrap_or("").to_owned();
            r["id"] = json!(format!("{id}/securityRules/{name}"));
            r["properties"]["provisioningState"] = json!("Succeeded");
            r
        })
        .collect();
    json!({
        "name": last_segment(id),
        "id": id,
        "etag": etag(state),
        "type": "Microsoft.Network/networkSecurityGroups",
        "location": location,
        "tags": tags,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": guid(state),
            "securityRules": rules,
            "defaultSecurityRules": default_rules(id)
        }
    })
}

fn put_nsg(state: &mut State, id: &str, key: &str, body: &Value) -> Response {
    let Some(location) = location_of(body) else {
        return location_required();
    };
    let rules: Vec<Value> = body["properties"]["securityRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(problem) = check_rules(&rules) {
        return problem;
    }
    let existing = state.resources.get(key).cloned();
    if let Some(existing) = &existing
        && !same_location(existing["location"].as_str().unwrap_or(""), &location)
    {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceLocation",
            &format!(
                "The resource '{}' already exists in location '{}' in resource group. A resource with the same name cannot be created in location '{location}'.",
                last_segment(id),
                existing["location"].as_str().unwrap_or("")
            ),
        );
    }
    let tags = body.get("tags").cloned().unwrap_or(json!({}));
    let mut nsg = nsg_resource(id, &location, &tags, &rules, state);
    if let Some(existing) = &existing {
        nsg["properties"]["resourceGuid"] = existing["properties"]["resourceGuid"].clone();
    }
    state.resources.insert(key.to_owned(), nsg.clone());
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    arm_ok(status, nsg)
}

fn put_nic(state: &mut State, id: &str, key: &str, body: &Value) -> Response {
    let Some(location) = location_of(body) else {
        return location_required();
    };
    let props = &body["properties"];
    if props["ipConfigurations"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
            &format!("Network interface {id} must have at least one IP configuration."),
        );
    }
    let nsg = &props["networkSecurityGroup"];
    if !nsg.is_null() {
        let Some(nsg_id) = nsg["id"].as_str() else {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestFormat",
                "Cannot parse the request: networkSecurityGroup has no id.",
            );
        };
        match state.resources.get(&nsg_id.to_lowercase()) {
            None => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidResourceReference",
                    &format!(
                        "Resource {nsg_id} referenced by resource {id} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
                    ),
                );
            }
            Some(found) if !same_location(found["location"].as_str().unwrap_or(""), &location) => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidResourceReference",
                    &format!(
                        "Resource {nsg_id} referenced by resource {id} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let existing = state.resources.get(key).cloned();
    let mut nic = existing.clone().unwrap_or_else(|| {
        json!({
            "name": last_segment(id),
            "id": id,
            "type": "Microsoft.Network/networkInterfaces",
            "properties": { "provisioningState": "Succeeded" }
        })
    });
    // PUT replaces the writable properties; read-only ones (macAddress, virtualMachine,
    // provisioningState, resourceGuid) stay as the service knows them.
    const READ_ONLY: [&str; 5] = [
        "provisioningState",
        "resourceGuid",
        "macAddress",
        "virtualMachine",
        "vnetEncryptionSupported",
    ];
    let mut properties = props.as_object().cloned().unwrap_or_default();
    for field in READ_ONLY {
        properties.remove(field);
        if let Some(v) = nic["properties"].get(field) {
            properties.insert(field.to_owned(), v.clone());
        }
    }
    if nsg.is_null() {
        properties.remove("networkSecurityGroup");
    }
    nic["properties"] = Value::Object(properties);
    nic["location"] = json!(location);
    nic["tags"] = body.get("tags").cloned().unwrap_or(json!({}));
    nic["etag"] = json!(etag(state));
    state.resources.insert(key.to_owned(), nic.clone());
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    arm_ok(status, nic)
}

// ---- Microsoft Graph ---------------------------------------------------------------------------

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": "2025-01-01T00:00:00",
                    "request-id": "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9",
                    "client-request-id": "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
                }
            }
        })),
    )
        .into_response()
}

/// The properties `GET /users/{id}` returns without `$select`.
const USER_DEFAULT: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// The properties PATCH may set in this fake.
const USER_WRITABLE: [&str; 4] = [
    "accountEnabled",
    "displayName",
    "jobTitle",
    "officeLocation",
];

fn graph(
    state: &mut State,
    method: &Method,
    headers: &HeaderMap,
    segments: &[String],
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let refusals = Refusals {
        missing: ("InvalidAuthenticationToken", "Access token is empty."),
        unknown: (
            "InvalidAuthenticationToken",
            "IDX14100: JWT is not well formed, there are no dots (.).",
        ),
        other_audience: ("InvalidAuthenticationToken", "Invalid audience."),
    };
    if let Some(refused) = refusal(state, headers, GRAPH_SCOPE, &refusals, graph_error) {
        return refused;
    }
    if segments.len() < 2 || !segments[0].eq_ignore_ascii_case("users") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.first().map(String::as_str).unwrap_or("")
            ),
        );
    }
    let wanted = &segments[1];
    let Some(id) = state
        .users
        .values()
        .find(|u| {
            u["id"].as_str() == Some(wanted.as_str())
                || u["userPrincipalName"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(wanted))
        })
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{wanted}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let action = segments.get(2).map(String::as_str);
    match (method.as_str(), action) {
        ("GET", None) => {
            let user = &state.users[&id];
            let select: Vec<String> = match query.get("$select") {
                Some(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
                None => USER_DEFAULT.iter().map(|s| (*s).to_owned()).collect(),
            };
            let context = match query.get("$select") {
                Some(s) => format!("https://graph.microsoft.com/v1.0/$metadata#users({s})/$entity"),
                None => "https://graph.microsoft.com/v1.0/$metadata#users/$entity".to_owned(),
            };
            let mut out = serde_json::Map::new();
            out.insert("@odata.context".into(), json!(context));
            for p in select {
                if let Some(v) = user.get(&p) {
                    out.insert(p, v.clone());
                } else {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!(
                            "Could not find a property named '{p}' on type 'microsoft.graph.user'."
                        ),
                    );
                }
            }
            (StatusCode::OK, axum::Json(Value::Object(out))).into_response()
        }
        ("PATCH", None) => {
            let Some(patch) = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.as_object().cloned())
            else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Empty Payload. JSON content expected.",
                );
            };
            for (k, v) in &patch {
                if !USER_WRITABLE.contains(&k.as_str()) {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("Invalid property '{k}'."),
                    );
                }
                if k == "accountEnabled" && !v.is_boolean() {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        "Invalid value specified for property 'accountEnabled' of resource 'User'.",
                    );
                }
            }
            let user = state.users.get_mut(&id).unwrap();
            for (k, v) in patch {
                user[&k] = v;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", Some(a))
            if a.eq_ignore_ascii_case("revokeSignInSessions")
                || a.eq_ignore_ascii_case("microsoft.graph.revokeSignInSessions") =>
        {
            *state.revocations.entry(id.clone()).or_default() += 1;
            if let Some(user) = state.users.get_mut(&id) {
                user["signInSessionsValidFromDateTime"] = json!(chrono::Utc::now().to_rfc3339());
            }
            (
                StatusCode::OK,
                axum::Json(json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                    "value": true
                })),
            )
                .into_response()
        }
        (m, _) => graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            &format!("The HTTP method '{m}' is not allowed here."),
        ),
    }
}

// ---- helpers -----------------------------------------------------------------------------------

fn last_segment(id: &str) -> String {
    id.rsplit('/').next().unwrap_or("").to_owned()
}

fn guid(state: &mut State) -> String {
    state.counter += 1;
    format!("00000000-0000-4000-8000-{:012x}", state.counter)
}

fn etag(state: &mut State) -> String {
    state.counter += 1;
    format!("W/\"{:08x}-0000-0000-0000-000000000000\"", state.counter)
}
