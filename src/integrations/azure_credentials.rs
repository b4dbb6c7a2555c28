//! Where the Azure integrations' tokens come from (`auth: { kind: azure_oauth }`), and which of
//! several credentials acts for a resource.
//!
//! Four sources, as Microsoft's own client libraries have them:
//!
//! - an Entra ID application with a **client secret** (`client_secret`);
//! - an application with a **certificate** (`client_certificate`, or `client_certificate_file`
//!   with an optional `client_certificate_key_file`): Cordon signs a client assertion, a JWT
//!   (RS256; header `x5t` and `x5t#S256`, the certificate's SHA-1 and SHA-256 thumbprints;
//!   `aud` the token endpoint, `iss` = `sub` = the client id, a fresh `jti`, ten minutes of life);
//! - **workload identity federation** (AKS): the service account token Kubernetes projects into
//!   `federated_token_file` (default `AZURE_FEDERATED_TOKEN_FILE`, with `AZURE_CLIENT_ID` and
//!   `AZURE_TENANT_ID` when the config gives none) is the client assertion, read afresh for every
//!   request because the kubelet rotates it;
//! - a **managed identity** (`managed_identity`, or an entry naming no application at all): the
//!   App Service / Container Apps / Functions endpoint when `IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER` are set (api-version 2019-08-01), else the instance metadata service
//!   (IMDS, api-version 2018-02-01) at `http://169.254.169.254`, moved by the credentials'
//!   `endpoints` entry for `169.254.169.254` or by `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
//!
//! The three application sources POST to the Entra ID v2.0 token endpoint of their tenant, at
//! `https://login.microsoftonline.com`, the `endpoints` entry for `login.microsoftonline.com`,
//! or `AZURE_AUTHORITY_HOST`. A managed identity is asked for the scope's resource
//! (`https://management.azure.com/.default` → `https://management.azure.com`), through a client
//! of its own: the metadata addresses are link-local ones the integrations' egress rules refuse,
//! and must never be reached through a proxy.
//!
//! **Several credentials.** `tenants` names more credentials, and `subscriptions` maps a
//! subscription id (or `*`) to one of them. A request about a resource uses the credential of
//! its subscription: the one in the request's ARM path (`/subscriptions/{id}/…`), else the
//! action's `account` (the action's `account` input, else the alert's account, which is the
//! subscription for Azure alerts). An `account` may also name a tenant entry, or be a tenant id.
//! Anything unmapped takes the default credential (the entry's own fields); without one it is
//! refused.
//!
//! Tokens are cached per credential and scope ([`TokenCache`]). No secret, private key, signed
//! assertion, federated token or identity header reaches an error, a log or a `Debug` output.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderValue;
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::auth::{
    AuthError, TOKEN_TIMEOUT, TokenCache, aad_error, bearer_token, error_chain, post_token_form,
};
use crate::config::{AzureCredential, Credentials, ManagedIdentity, Secret};
use crate::engine::exec::glob;
use crate::failure::Failure;

/// The environment the sources read: the process's, or a map in tests.
pub type Env = HashMap<String, String>;

/// The public cloud's Entra ID authority.
const LOGIN: &str = "https://login.microsoftonline.com";
const LOGIN_HOST: &str = "login.microsoftonline.com";
/// The instance metadata service's address, and its token path and API version.
const IMDS_HOST: &str = "169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const IMDS_API: &str = "2018-02-01";
/// The App Service / Container Apps / Functions identity endpoint's API version.
const APP_SERVICE_API: &str = "2019-08-01";
/// The client assertion type of a signed JWT (RFC 7523 section 2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a signed client assertion is valid: Entra ID takes at most ten minutes.
const ASSERTION_LIFETIME: u64 = 600;

/// Every Azure credential of one credentials entry, and which acts for which subscription.
pub struct AzureProvider {
    /// The entry's name in `integrations.credentials`, for messages.
    entry: String,
    default: Option<AzureTokens>,
    tenants: BTreeMap<String, AzureTokens>,
    /// Lower-cased subscription id, or `*` → a name in `tenants`.
    subscriptions: BTreeMap<String, String>,
}

impl From<AzureTokens> for AzureProvider {
    /// A provider with one credential.
    fn from(tokens: AzureTokens) -> AzureProvider {
        AzureProvider {
            entry: "azure".to_owned(),
            default: Some(tokens),
            tenants: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProvider")
            .field("entry", &self.entry)
            .field("default", &self.default.as_ref().map(|t| &t.identity))
            .field(
                "tenants",
                &self
                    .tenants
                    .iter()
                    .map(|(name, t)| (name, &t.identity))
                    .collect::<Vec<_>>(),
            )
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

impl AzureProvider {
    /// The provider for credentials entry `entry`: its own fields as the default credential
    /// (unless it has `tenants` and none of those fields), its `tenants`, its `subscriptions`.
    /// `env` is read for workload identity, the managed identity endpoints and the authority.
    pub fn new(
        http: reqwest::Client,
        entry: &str,
        c: &Credentials,
        env: &Env,
    ) -> Result<AzureProvider, String> {
        let at = format!("integrations.credentials.{entry}");
        let own = c.azure();
        let has_own = own.tenant_id.is_some()
            || own.client_id.is_some()
            || own.client_secret.is_some()
            || own.client_certificate.is_some()
            || own.client_certificate_file.is_some()
            || own.client_certificate_key_file.is_some()
            || own.federated_token_file.is_some()
            || own.managed_identity.is_some();
        let sources = Sources { http, c, env };
        let default = if has_own || c.tenants.is_empty() {
            Some(sources.build(&at, &own)?)
        } else {
            None
        };
        let mut tenants = BTreeMap::new();
        for (name, tenant) in &c.tenants {
            if name.is_empty() || name == "*" {
                return Err(format!("{at}.tenants: `{name}` is not a name"));
            }
            let place = format!("{at}.tenants.{name}");
            tenants.insert(name.clone(), sources.build(&place, tenant)?);
        }
        let mut subscriptions = BTreeMap::new();
        for (subscription, name) in &c.subscriptions {
            if subscription != "*" && !is_guid(subscription) {
                return Err(format!(
                    "{at}.subscriptions: `{subscription}` is not a subscription id (a GUID) or `*`"
                ));
            }
            if !tenants.contains_key(name) {
                let known: Vec<&str> = tenants.keys().map(String::as_str).collect();
                return Err(format!(
                    "{at}.subscriptions.{subscription}: `{name}` is not in {at}.tenants (it has {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            subscriptions.insert(subscription.to_ascii_lowercase(), name.clone());
        }
        Ok(AzureProvider {
            entry: entry.to_owned(),
            default,
            tenants,
            subscriptions,
        })
    }

    /// The credential for a request to `url` about a resource in `account` (see the module
    /// notes), and what the audit calls it when there is a choice (named tenants).
    pub fn pick(
        &self,
        url: &Url,
        account: Option<&str>,
    ) -> Result<(&AzureTokens, Option<String>), AuthError> {
        let key = subscription_in(url).or(account.filter(|a| !a.is_empty()));
        let named = |name: &str| self.tenants.get(name).map(|t| (name.to_owned(), t));
        let found = key
            .and_then(|key| {
                self.subscriptions
                    .get(&key.to_ascii_lowercase())
                    .and_then(|name| named(name))
                    .or_else(|| named(key))
                    .or_else(|| {
                        self.tenants
                            .iter()
                            .find(|(_, t)| {
                                t.tenant_id
                                    .as_deref()
                                    .is_some_and(|id| id.eq_ignore_ascii_case(key))
                            })
                            .map(|(name, t)| (name.clone(), t))
                    })
            })
            .or_else(|| self.subscriptions.get("*").and_then(|name| named(name)));
        let several = !self.tenants.is_empty();
        match (found, &self.default) {
            (Some((name, tokens)), _) => Ok((tokens, Some(format!("{name}: {}", tokens.identity)))),
            (None, Some(tokens)) => Ok((
                tokens,
                several.then(|| format!("default: {}", tokens.identity)),
            )),
            (None, None) => Err(AuthError::permanent(match key {
                Some(key) => format!(
                    "no Azure credential for `{key}`: map the subscription to a tenant in integrations.credentials.{entry}.subscriptions, or give the entry a default credential",
                    entry = self.entry
                ),
                None => format!(
                    "no Azure credential: the request names no subscription and the alert no account; give integrations.credentials.{entry} a default credential or a `*` subscription",
                    entry = self.entry
                ),
            })),
        }
    }

    /// A token for `scope`, for a request to `url` about a resource in `account`, with the
    /// identity that acted when there was a choice.
    pub async fn token(
        &self,
        url: &Url,
        account: Option<&str>,
        scope: &str,
    ) -> Result<(Secret, Option<String>), AuthError> {
        let (tokens, acted_as) = self.pick(url, account)?;
        Ok((tokens.token(scope).await?, acted_as))
    }

    /// Everything of the credentials that must never be printed and is in no config field: a
    /// certificate's private key read from a file (and each line of its body), the identity
    /// header of App Service.
    pub fn secrets(&self) -> Vec<Secret> {
        self.default
            .iter()
            .chain(self.tenants.values())
            .flat_map(AzureTokens::secrets)
            .collect()
    }
}

/// Whether `text` is a GUID (8-4-4-4-12 hex digits).
fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The subscription of an ARM request: `/subscriptions/{id}/…`.
fn subscription_in(url: &Url) -> Option<&str> {
    let mut segments = url.path_segments()?;
    let first = segments.next()?;
    let id = segments.next()?;
    (first.eq_ignore_ascii_case("subscriptions") && is_guid(id)).then_some(id)
}

/// What the credentials are built from.
struct Sources<'a> {
    http: reqwest::Client,
    c: &'a Credentials,
    env: &'a Env,
}

impl Sources<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The credential `c` describes, at config path `at`.
    fn build(&self, at: &str, c: &AzureCredential) -> Result<AzureTokens, String> {
        let certificate = c.client_certificate.is_some() || c.client_certificate_file.is_some();
        let given: Vec<&str> = [
            (c.client_secret.is_some(), "client_secret"),
            (certificate, "a client certificate"),
            (c.federated_token_file.is_some(), "federated_token_file"),
            (c.managed_identity.is_some(), "managed_identity"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        if given.len() > 1 {
            return Err(format!("{at} gives {}; keep one", given.join(" and ")));
        }
        if c.managed_identity.is_some() && (c.tenant_id.is_some() || c.client_id.is_some()) {
            return Err(format!(
                "{at} gives managed_identity with tenant_id or client_id: a user-assigned identity is named inside it (`managed_identity: {{ client_id: ... }}`), and it needs no tenant_id"
            ));
        }
        if c.client_certificate.is_some() && c.client_certificate_file.is_some() {
            return Err(format!(
                "{at} gives both `client_certificate` and `client_certificate_file`; keep one"
            ));
        }
        if c.client_certificate_key_file.is_some() && c.client_certificate_file.is_none() {
            return Err(format!(
                "{at}.client_certificate_key_file goes with client_certificate_file"
            ));
        }
        // Without a secret or a certificate, the environment's workload identity (AKS), as
        // Microsoft's libraries look for it; the other two use no environment variable.
        let federated = c.federated_token_file.clone().or_else(|| {
            given
                .is_empty()
                .then(|| self.var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
                .flatten()
        });
        let credential = if let Some(secret) = &c.client_secret {
            ClientCredential::Secret(secret.clone())
        } else if certificate {
            ClientCredential::Certificate(Box::new(Certificate::read(at, c)?))
        } else if let Some(file) = federated {
            ClientCredential::Federated(file)
        } else if c.tenant_id.is_some() || c.client_id.is_some() {
            return Err(format!(
                "{at} names an application (tenant_id, client_id) without client_secret, client_certificate(_file) or federated_token_file; for a managed identity write `managed_identity: {{}}` (or `{{client_id: ...}}` for a user-assigned one)"
            ));
        } else {
            let managed = c.managed_identity.clone().unwrap_or_default();
            return Ok(AzureTokens {
                tenant_id: None,
                identity: describe_managed(&managed),
                source: Source::Managed(self.managed(at, &managed)?),
                cache: TokenCache::default(),
            });
        };
        let workload = matches!(credential, ClientCredential::Federated(_));
        let from_env = |field: &Option<String>, var: &str| {
            field
                .clone()
                .or_else(|| workload.then(|| self.var(var).map(str::to_owned)).flatten())
        };
        let missing = |field: &str| {
            format!(
                "{at} has no `{field}`, which its {} needs{}",
                credential.kind(),
                if workload {
                    " (nor is it in the environment)"
                } else {
                    ""
                }
            )
        };
        let tenant_id = from_env(&c.tenant_id, "AZURE_TENANT_ID")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| missing("tenant_id"))?;
        let client_id = from_env(&c.client_id, "AZURE_CLIENT_ID")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| missing("client_id"))?;
        let login = routed(&self.c.endpoints, LOGIN_HOST)
            .or_else(|| self.var("AZURE_AUTHORITY_HOST"))
            .unwrap_or(LOGIN);
        let login = Url::parse(login)
            .map_err(|e| format!("the login endpoint `{login}` is not a URL: {e}"))?;
        Ok(AzureTokens::with(
            self.http.clone(),
            login,
            tenant_id,
            client_id,
            credential,
        ))
    }

    /// The managed identity endpoint: App Service's when its variables are set, else IMDS.
    fn managed(&self, at: &str, m: &ManagedIdentity) -> Result<ManagedTokens, String> {
        let ids: Vec<(&str, &str, &String)> = [
            ("client_id", "client_id", &m.client_id),
            ("object_id", "principal_id", &m.object_id),
            ("msi_res_id", "mi_res_id", &m.resource_id),
        ]
        .into_iter()
        .filter_map(|(imds, app, value)| value.as_ref().map(|v| (imds, app, v)))
        .collect();
        if ids.len() > 1 {
            return Err(format!(
                "{at}.managed_identity names a user-assigned identity by more than one of client_id, object_id, resource_id; keep one"
            ));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the managed identity's HTTP client: {e}"))?;
        let endpoint = match (self.var("IDENTITY_ENDPOINT"), self.var("IDENTITY_HEADER")) {
            (Some(url), Some(header)) => {
                let mut url = Url::parse(url)
                    .map_err(|e| format!("IDENTITY_ENDPOINT `{url}` is not a URL: {e}"))?;
                url.query_pairs_mut()
                    .append_pair("api-version", APP_SERVICE_API);
                if let Some((_, param, value)) = ids.first() {
                    url.query_pairs_mut().append_pair(param, value);
                }
                let mut header = HeaderValue::from_str(header)
                    .map_err(|_| "IDENTITY_HEADER is not a valid header value".to_owned())?;
                header.set_sensitive(true);
                Endpoint::AppService { url, header }
            }
            _ => {
                let base = routed(&self.c.endpoints, IMDS_HOST)
                    .or_else(|| self.var("AZURE_POD_IDENTITY_AUTHORITY_HOST"))
                    .unwrap_or("http://169.254.169.254");
                let mut url = Url::parse(base)
                    .and_then(|b| b.join(IMDS_PATH))
                    .map_err(|e| {
                        format!("the metadata service address `{base}` is not a URL: {e}")
                    })?;
                url.query_pairs_mut().append_pair("api-version", IMDS_API);
                if let Some((param, _, value)) = ids.first() {
                    url.query_pairs_mut().append_pair(param, value);
                }
                Endpoint::Imds(url)
            }
        };
        Ok(ManagedTokens { http, endpoint })
    }
}

/// The base URL `endpoints` routes `host` to.
fn routed<'a>(endpoints: &'a BTreeMap<String, String>, host: &str) -> Option<&'a str> {
    endpoints
        .iter()
        .find(|(pattern, _)| glob(pattern, host))
        .map(|(_, base)| base.as_str())
}

fn describe_managed(m: &ManagedIdentity) -> String {
    match (&m.client_id, &m.object_id, &m.resource_id) {
        (Some(id), _, _) => format!("managed identity {id}"),
        (_, Some(id), _) => format!("managed identity (object id {id})"),
        (_, _, Some(id)) => format!("managed identity {id}"),
        _ => "managed identity (system-assigned)".to_owned(),
    }
}

/// Tokens of one Azure identity, cached per scope until shortly before they expire.
pub struct AzureTokens {
    /// The tenant of an application; `None` for a managed identity.
    tenant_id: Option<String>,
    /// What the audit calls this identity (`app <client id> in tenant <tenant id>`, `managed
    /// identity <client id>`).
    identity: String,
    source: Source,
    cache: TokenCache,
}

enum Source {
    App(App),
    Managed(ManagedTokens),
}

/// An Entra ID application and its token endpoint.
struct App {
    http: reqwest::Client,
    token_url: Result<Url, AuthError>,
    client_id: String,
    credential: ClientCredential,
}

/// How an application proves who it is.
pub enum ClientCredential {
    Secret(Secret),
    Certificate(Box<Certificate>),
    /// The file the federated token (the client assertion) is read from, for each request.
    Federated(PathBuf),
}

impl ClientCredential {
    fn kind(&self) -> &'static str {
        match self {
            ClientCredential::Secret(_) => "client secret",
            ClientCredential::Certificate(_) => "client certificate",
            ClientCredential::Federated(_) => "workload identity (federated token file)",
        }
    }
}

/// A certificate and its private key, ready to sign client assertions.
pub struct Certificate {
    signing: EncodingKey,
    /// base64url SHA-1 and SHA-256 of the certificate's DER.
    x5t: String,
    x5t_s256: String,
    /// The key's PEM, kept only to take it out of anything that would print it.
    private_key: Secret,
}

impl Certificate {
    /// Reads the certificate and key of `c` (inline, or the files). Messages name the place,
    /// never the key.
    fn read(at: &str, c: &AzureCredential) -> Result<Certificate, String> {
        let (text, place) = match (&c.client_certificate, &c.client_certificate_file) {
            (Some(inline), _) => (inline.clone(), format!("{at}.client_certificate")),
            (None, Some(path)) => (
                Secret::new(std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "{at}.client_certificate_file: cannot read `{}`: {e}",
                        path.display()
                    )
                })?),
                format!("the certificate file `{}`", path.display()),
            ),
            (None, None) => return Err(format!("{at} gives no client certificate")),
        };
        let (key_text, key_place) = match &c.client_certificate_key_file {
            Some(path) => (
                Secret::new(std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "{at}.client_certificate_key_file: cannot read `{}`: {e}",
                        path.display()
                    )
                })?),
                format!("the key file `{}`", path.display()),
            ),
            None => (text.clone(), place.clone()),
        };
        Certificate::parse(&text, &place, &key_text, &key_place)
    }

    /// The first certificate of `text` and the private key of `key_text`, both PEM.
    pub fn parse(
        text: &Secret,
        place: &str,
        key_text: &Secret,
        key_place: &str,
    ) -> Result<Certificate, String> {
        let mut der = None;
        let mut key = None;
        for (source, is_key) in [(text, false), (key_text, true)] {
            for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(source.expose().as_bytes()) {
                // A PEM error could quote the key; say only where it is.
                let (kind, body) = section.map_err(|_| {
                    format!(
                        "{} is not valid PEM",
                        if is_key { key_place } else { place }
                    )
                })?;
                match kind {
                    SectionKind::Certificate if !is_key && der.is_none() => der = Some(body),
                    SectionKind::PrivateKey | SectionKind::RsaPrivateKey if is_key => {
                        let label = if kind == SectionKind::PrivateKey {
                            "PRIVATE KEY"
                        } else {
                            "RSA PRIVATE KEY"
                        };
                        key = Some(pem(label, &body));
                    }
                    SectionKind::EcPrivateKey if is_key => {
                        return Err(format!(
                            "{key_place} holds an EC key; Entra ID client assertions are signed with RSA (RS256)"
                        ));
                    }
                    _ => {}
                }
            }
        }
        let der = der.ok_or_else(|| format!("{place} holds no `BEGIN CERTIFICATE` block"))?;
        let key = key.ok_or_else(|| format!("{key_place} holds no `BEGIN PRIVATE KEY` block"))?;
        webpki::EndEntityCert::try_from(&rustls_pki_types::CertificateDer::from(der.as_slice()))
            .map_err(|_| format!("the certificate in {place} is not a valid X.509 certificate"))?;
        let signing = EncodingKey::from_rsa_pem(key.as_bytes())
            .map_err(|_| format!("{key_place} holds no RSA private key Cordon can read"))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        Ok(Certificate {
            signing,
            x5t: b64.encode(sha1.as_ref()),
            x5t_s256: b64.encode(Sha256::digest(&der)),
            private_key: Secret::new(key),
        })
    }

    /// A client assertion for `client_id` at `audience` (the token endpoint).
    fn assertion(&self, client_id: &str, audience: &str) -> Result<Secret, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::now_v7().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .map(Secret::new)
            .map_err(|e| AuthError::permanent(format!("cannot sign the client assertion: {e}")))
    }
}

/// `body` as a PEM block labelled `label`.
fn pem(label: &str, body: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// A managed identity's token endpoint.
struct ManagedTokens {
    http: reqwest::Client,
    endpoint: Endpoint,
}

enum Endpoint {
    /// The instance metadata service: the token URL with its api-version and identity.
    Imds(Url),
    /// App Service, Container Apps, Functions: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    AppService { url: Url, header: HeaderValue },
}

impl AzureTokens {
    /// A client-secret application; `login` is the authority base URL (default
    /// https://login.microsoftonline.com; tests pass a local fake).
    pub fn new(
        http: reqwest::Client,
        login: Url,
        tenant_id: String,
        client_id: String,
        client_secret: Secret,
    ) -> AzureTokens {
        AzureTokens::with(
            http,
            login,
            tenant_id,
            client_id,
            ClientCredential::Secret(client_secret),
        )
    }

    /// An application proving itself with `credential`.
    pub fn with(
        http: reqwest::Client,
        login: Url,
        tenant_id: String,
        client_id: String,
        credential: ClientCredential,
    ) -> AzureTokens {
        let token_url = token_url(&login, &tenant_id);
        let how = match &credential {
            ClientCredential::Secret(_) => "",
            ClientCredential::Certificate(_) => " (certificate)",
            ClientCredential::Federated(_) => " (workload identity)",
        };
        AzureTokens {
            identity: format!("app {client_id} in tenant {tenant_id}{how}"),
            tenant_id: Some(tenant_id),
            source: Source::App(App {
                http,
                token_url,
                client_id,
                credential,
            }),
            cache: TokenCache::default(),
        }
    }

    /// What the audit calls this identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A token for `scope`: cached until `expires_in` - 60 s (or half its life when that is
    /// shorter; never without an expiry), or fetched, one request for concurrent callers. Errors
    /// are classed by [`Failure`] (5xx/408/429/transport: retryable; other 4xx: not) and say
    /// what Entra ID or the identity endpoint said, never a secret.
    pub async fn token(&self, scope: &str) -> Result<Secret, AuthError> {
        self.cache
            .get(scope, || async {
                match &self.source {
                    Source::App(app) => app.request(scope).await,
                    Source::Managed(managed) => managed.request(scope).await,
                }
            })
            .await
    }

    fn secrets(&self) -> Vec<Secret> {
        match &self.source {
            Source::App(App {
                credential: ClientCredential::Certificate(certificate),
                ..
            }) => {
                let pem = certificate.private_key.expose();
                let mut secrets = vec![certificate.private_key.clone()];
                secrets.extend(
                    pem.lines()
                        .map(str::trim)
                        .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
                        .map(Secret::new),
                );
                secrets
            }
            Source::Managed(ManagedTokens {
                endpoint: Endpoint::AppService { header, .. },
                ..
            }) => header
                .to_str()
                .map(|h| vec![Secret::new(h)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl App {
    /// The form of a token request for `scope` to `url`, and the proof of identity in it.
    fn form(&self, scope: &str, url: &Url) -> Result<(String, Secret), AuthError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", scope);
        // Whatever the request carries that must never be printed.
        let proof = match &self.credential {
            ClientCredential::Secret(secret) => {
                form.append_pair("client_secret", secret.expose());
                secret.clone()
            }
            ClientCredential::Certificate(certificate) => {
                let assertion = certificate.assertion(&self.client_id, url.as_str())?;
                form.append_pair("client_assertion_type", JWT_BEARER)
                    .append_pair("client_assertion", assertion.expose());
                assertion
            }
            ClientCredential::Federated(file) => {
                let token = std::fs::read_to_string(file).map_err(|e| {
                    AuthError::permanent(format!(
                        "cannot read the federated token file {}: {e}",
                        file.display()
                    ))
                })?;
                let token = Secret::new(token.trim());
                if token.expose().is_empty() {
                    return Err(AuthError::permanent(format!(
                        "the federated token file {} is empty",
                        file.display()
                    )));
                }
                form.append_pair("client_assertion_type", JWT_BEARER)
                    .append_pair("client_assertion", token.expose());
                token
            }
        };
        Ok((form.finish(), proof))
    }

    /// POST {login}/{tenant}/oauth2/v2.0/token, form grant_type=client_credentials, client_id,
    /// scope, and the client secret or a client assertion. Answer JSON {token_type, expires_in,
    /// access_token}.
    async fn request(&self, scope: &str) -> Result<(Secret, Duration), AuthError> {
        let url = self.token_url.clone()?;
        let (body, proof) = self.form(scope, &url)?;
        post_token_form(&self.http, url, body, "Entra ID", "", |message| {
            scrub(message, proof.expose())
        })
        .await
    }
}

impl ManagedTokens {
    /// GET the identity endpoint for the scope's resource. IMDS: `Metadata: true`; App Service:
    /// `X-IDENTITY-HEADER`. Answer JSON {access_token, expires_in?, expires_on, resource,
    /// token_type}, the numbers possibly as strings.
    async fn request(&self, scope: &str) -> Result<(Secret, Duration), AuthError> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let (mut url, what) = match &self.endpoint {
            Endpoint::Imds(url) => (url.clone(), "the instance metadata service"),
            Endpoint::AppService { url, .. } => (url.clone(), "the managed identity endpoint"),
        };
        url.query_pairs_mut().append_pair("resource", resource);
        let request = match &self.endpoint {
            Endpoint::Imds(_) => self.http.get(url).header("Metadata", "true"),
            Endpoint::AppService { header, .. } => self
                .http
                .get(url)
                .header("X-IDENTITY-HEADER", header.clone()),
        };
        let header = match &self.endpoint {
            Endpoint::AppService { header, .. } => header.to_str().unwrap_or_default(),
            Endpoint::Imds(_) => "",
        };
        let scrub = |message: String| scrub(message, header);
        let transport = |e: reqwest::Error| {
            let failure = Failure::from_transport(&e);
            AuthError {
                message: scrub(format!(
                    "the managed identity token request to {what} failed: {}",
                    error_chain(&e.without_url())
                )),
                failure,
            }
        };
        let response = request
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let mut failure = Failure::from_response(status.as_u16(), response.headers());
        // IMDS answers 404 and 410 while the identity is being assigned; Microsoft says to retry.
        if matches!(self.endpoint, Endpoint::Imds(_)) && matches!(status.as_u16(), 404 | 410) {
            failure = Some(Failure::Retryable);
        }
        // An answer may echo the request: the proof goes before the answer is cut short.
        let body = scrub(response.text().await.map_err(transport)?);
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(failure) = failure {
            return Err(AuthError {
                message: scrub(format!(
                    "{what} refused the managed identity token request ({status}){}",
                    aad_error(&answer, &body)
                )),
                failure,
            });
        }
        bearer_token(&answer, "the managed identity endpoint")
    }
}

/// `message` without `secret`, as sent or as a form encodes it.
fn scrub(message: String, secret: &str) -> String {
    if secret.is_empty() {
        return message;
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    message
        .replace(secret, "**redacted**")
        .replace(&encoded, "**redacted**")
}

/// `{login}/{tenant}/oauth2/v2.0/token`, the tenant encoded as one path segment.
fn token_url(login: &Url, tenant_id: &str) -> Result<Url, AuthError> {
    if tenant_id.is_empty() {
        return Err(AuthError::permanent("azure tenant_id is empty"));
    }
    let mut url = login.clone();
    url.path_segments_mut()
        .map_err(|()| {
            AuthError::permanent(format!("Entra ID login URL {login} cannot take a path"))
        })?
        .pop_if_empty()
        .extend([tenant_id, "oauth2", "v2.0", "token"]);
    Ok(url)
}
