//! Google Cloud access tokens for integrations whose manifest says `auth: { kind: gcp_oauth }`.
//!
//! Two sources, as Google's own client libraries have them:
//!
//! - a **service-account key** (the JSON file the console or `gcloud iam service-accounts keys
//!   create` gives), from `service_account_key` (its content, a secret) or
//!   `service_account_key_file` (its path): Cordon signs a JWT with the key's private key (RS256;
//!   `iss` the key's `client_email`, `scope`, `aud` the key's `token_uri`, one hour of life) and
//!   exchanges it at `token_uri` for an access token (RFC 7523, the grant type
//!   `urn:ietf:params:oauth:grant-type:jwt-bearer`);
//! - the **metadata server** of the GCE VM or GKE node (workload identity) Cordon runs on, when
//!   the credentials name no key: `GET /computeMetadata/v1/instance/service-accounts/default/token`
//!   with `Metadata-Flavor: Google`, at `http://metadata.google.internal`, at `GCE_METADATA_HOST`
//!   when that is set (as Google's libraries read it), or at the credentials' `endpoints` entry
//!   for `metadata.google.internal`.
//!
//! Tokens are cached and shared as Entra ID's are ([`TokenCache`]). The private key and the signed
//! assertion never reach an error, a log or a `Debug` output: errors name the key by its
//! `client_email` and `private_key_id` only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use url::Url;

use super::auth::{
    AuthError, TOKEN_TIMEOUT, TokenCache, bearer_token, error_chain, post_token_form,
};
use crate::config::{Credentials, Secret};
use crate::engine::exec::glob;
use crate::failure::Failure;

/// The one scope Cordon asks for: what the token may do is what the service account's IAM roles
/// allow (the README's custom roles), as Google recommends.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The grant type of a signed-JWT exchange (RFC 7523 section 2.1).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Where a key without `token_uri` exchanges its assertion.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The metadata server's name on GCE and GKE.
const METADATA_HOST: &str = "metadata.google.internal";

/// The token path of the VM's (or the GKE workload's) default service account.
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// How long a signed assertion is valid: Google accepts at most one hour.
const ASSERTION_LIFETIME: u64 = 3600;

/// Google access tokens for one credentials entry, cached until shortly before they expire.
pub struct GcpTokens {
    source: Source,
    cache: TokenCache,
}

enum Source {
    Key(ServiceAccountKey),
    Metadata { url: Url, http: reqwest::Client },
}

/// What Cordon keeps of a service-account key.
struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    signing: EncodingKey,
    /// The PEM, kept only to take it out of anything that would print it.
    private_key: Secret,
    /// The `aud` of the assertion: the key's `token_uri` as written.
    audience: String,
    /// Where the assertion is sent: `token_uri`, or the endpoint the credentials route it to.
    token_url: Url,
    http: reqwest::Client,
}

impl std::fmt::Debug for GcpTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Key(key) => f
                .debug_struct("GcpTokens")
                .field("client_email", &key.client_email)
                .field("private_key_id", &key.private_key_id)
                .finish_non_exhaustive(),
            Source::Metadata { url, .. } => f
                .debug_struct("GcpTokens")
                .field("metadata", &url.as_str())
                .finish(),
        }
    }
}

impl GcpTokens {
    /// The token source credentials entry `name` describes: its service-account key (inline or
    /// a file), else the metadata server. `http` sends the key's token requests (the metadata
    /// server gets a client of its own: it is a link-local address the integrations' egress rules
    /// refuse, and must never be reached through a proxy).
    pub fn from_credentials(
        name: &str,
        c: &Credentials,
        http: &reqwest::Client,
    ) -> Result<GcpTokens, String> {
        let at = format!("integrations.credentials.{name}");
        let text = match (&c.service_account_key, &c.service_account_key_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at} gives both `service_account_key` and `service_account_key_file`; keep one"
                ));
            }
            (Some(inline), None) => Some((inline.clone(), format!("{at}.service_account_key"))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "{at}.service_account_key_file: cannot read `{}`: {e}",
                        path.display()
                    )
                })?;
                Some((
                    Secret::new(text),
                    format!("the key file `{}`", path.display()),
                ))
            }
            (None, None) => None,
        };
        let source = match text {
            Some((text, place)) => Source::Key(ServiceAccountKey::parse(
                &text,
                &place,
                &c.endpoints,
                http.clone(),
            )?),
            None => {
                let base = routed_base(&c.endpoints, METADATA_HOST)
                    .map(str::to_owned)
                    .or_else(|| {
                        std::env::var("GCE_METADATA_HOST")
                            .ok()
                            .filter(|h| !h.is_empty())
                            .map(|h| format!("http://{h}"))
                    })
                    .unwrap_or_else(|| format!("http://{METADATA_HOST}"));
                let url = Url::parse(&base)
                    .and_then(|b| b.join(METADATA_TOKEN_PATH))
                    .map_err(|e| {
                        format!("the metadata server address `{base}` is not a URL: {e}")
                    })?;
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("cannot build the metadata server's HTTP client: {e}"))?;
                Source::Metadata { url, http }
            }
        };
        Ok(GcpTokens {
            source,
            cache: TokenCache::default(),
        })
    }

    /// Everything that must never be printed: the private key, and each line of its base64 body
    /// (so a piece of it is caught too).
    pub fn secrets(&self) -> Vec<Secret> {
        let Source::Key(key) = &self.source else {
            return Vec::new();
        };
        let pem = key.private_key.expose();
        let mut secrets = vec![key.private_key.clone()];
        secrets.extend(
            pem.lines()
                .map(str::trim)
                .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
                .map(Secret::new),
        );
        secrets
    }

    /// An access token for [`SCOPE`]: cached, or fetched (one request for concurrent callers).
    pub async fn token(&self) -> Result<Secret, AuthError> {
        self.cache
            .get(SCOPE, || async {
                match &self.source {
                    Source::Key(key) => key.exchange().await,
                    Source::Metadata { url, http } => metadata_token(url, http).await,
                }
            })
            .await
    }
}

impl ServiceAccountKey {
    /// Reads the key JSON. Messages name `place` and the fields, never a value but the e-mail.
    fn parse(
        text: &Secret,
        place: &str,
        endpoints: &std::collections::BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Result<ServiceAccountKey, String> {
        // A serde error can quote the input; this one says only where the JSON broke.
        let json: Value = serde_json::from_str(text.expose()).map_err(|e| {
            format!(
                "{place} is not JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let field = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_owned);
        match field("type").as_deref() {
            None | Some("service_account") => {}
            Some(other) => {
                return Err(format!(
                    "{place} is a credential of type `{other}`; gcp_oauth takes a service-account key (type `service_account`)"
                ));
            }
        }
        let client_email = field("client_email")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format!("{place} has no `client_email`"))?;
        let private_key = field("private_key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("{place} has no `private_key`"))?;
        let signing = EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|_| {
            format!(
                "the `private_key` of {place} (for {client_email}) is not an RSA private key in PEM"
            )
        })?;
        let audience = field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        let written = Url::parse(&audience)
            .map_err(|e| format!("the `token_uri` of {place} is not a URL: {e}"))?;
        if written.scheme() != "https" {
            return Err(format!(
                "the `token_uri` of {place} is `{audience}`; the signed assertion goes only over https (route it with `endpoints` to reach a local address)"
            ));
        }
        let host = written.host_str().unwrap_or_default();
        let token_url = match routed_base(endpoints, host) {
            Some(base) => {
                let mut target = format!("{}{}", base.trim_end_matches('/'), written.path());
                if let Some(query) = written.query() {
                    target.push('?');
                    target.push_str(query);
                }
                Url::parse(&target)
                    .map_err(|e| format!("the endpoint `{base}` for `{host}` is not a URL: {e}"))?
            }
            None => written,
        };
        Ok(ServiceAccountKey {
            client_email,
            private_key_id: field("private_key_id").filter(|id| !id.is_empty()),
            signing,
            private_key: Secret::new(private_key),
            audience,
            token_url,
            http,
        })
    }

    /// The signed assertion: RS256 over `{iss, scope, aud, iat, exp}`, `kid` the key's id.
    fn assertion(&self, now: u64) -> Result<Secret, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .map(Secret::new)
            .map_err(|e| {
                AuthError::permanent(format!(
                    "cannot sign the token request of {} with its key: {e}",
                    self.client_email
                ))
            })
    }

    /// Exchanges a fresh assertion for an access token.
    async fn exchange(&self) -> Result<(Secret, Duration), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = self.assertion(now)?;
        // An answer may echo the request; the assertion is a credential for an hour. Each of its
        // parts is taken out, since a message may hold only a piece of it.
        let scrub = |message: String| {
            let mut message = message;
            for part in assertion.expose().split('.').filter(|p| p.len() >= 16) {
                message = message.replace(part, "**redacted**");
            }
            for line in self.private_key.expose().lines() {
                let line = line.trim();
                if line.len() >= 16 && !line.starts_with("-----") {
                    message = message.replace(line, "**redacted**");
                }
            }
            message
        };
        let who = match &self.private_key_id {
            Some(id) => format!("{} (key {id})", self.client_email),
            None => self.client_email.clone(),
        };
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER)
            .append_pair("assertion", assertion.expose())
            .finish();
        post_token_form(
            &self.http,
            self.token_url.clone(),
            form,
            "Google",
            &format!(" for {who}"),
            scrub,
        )
        .await
    }
}

/// A token from the metadata server.
async fn metadata_token(
    url: &Url,
    http: &reqwest::Client,
) -> Result<(Secret, Duration), AuthError> {
    let transport = |e: reqwest::Error| {
        let failure = Failure::from_transport(&e);
        AuthError {
            message: format!(
                "the metadata server at {} did not answer ({}); without `service_account_key` or `service_account_key_file` in the credentials, Cordon must run on GCE or GKE with a service account",
                url.host_str().unwrap_or_default(),
                error_chain(&e.without_url())
            ),
            failure,
        }
    };
    let response = http
        .get(url.clone())
        .header("Metadata-Flavor", "Google")
        .timeout(TOKEN_TIMEOUT)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let flavor = response
        .headers()
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failure = Failure::from_response(status.as_u16(), response.headers());
    let body = response.text().await.map_err(transport)?;
    if let Some(failure) = failure {
        let words: String = body
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect();
        return Err(AuthError {
            message: format!("the metadata server refused the token request ({status}): {words}"),
            failure,
        });
    }
    // The real server always says so; anything else at that address is not it.
    if flavor.as_deref() != Some("Google") {
        return Err(AuthError::permanent(format!(
            "{} answered without `Metadata-Flavor: Google`: it is not a GCE metadata server",
            url.host_str().unwrap_or_default()
        )));
    }
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    bearer_token(&answer, "the metadata server")
}

/// The base URL `endpoints` routes `host` to, if any.
fn routed_base<'a>(
    endpoints: &'a std::collections::BTreeMap<String, String>,
    host: &str,
) -> Option<&'a str> {
    endpoints
        .iter()
        .find(|(pattern, _)| glob(pattern, host))
        .map(|(_, base)| base.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(key: &str) -> Credentials {
        Credentials {
            service_account_key: Some(Secret::new(key)),
            ..Credentials::default()
        }
    }

    fn refusal(key: &str) -> String {
        GcpTokens::from_credentials("gcp", &credentials(key), &reqwest::Client::new())
            .expect_err("refused")
    }

    #[test]
    fn a_bad_key_is_refused_at_load_without_its_content() {
        let secret_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDsecretsecret";
        let broken = format!(
            r#"{{"type": "service_account", "client_email": "cordon@p.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----\n{secret_body}\n-----END PRIVATE KEY-----\n"}}"#
        );
        let message = refusal(&broken);
        assert!(
            message.contains("not an RSA private key") && message.contains("cordon@p."),
            "{message}"
        );
        assert!(!message.contains(secret_body), "{message}");

        let message = refusal(&format!("{{\"private_key\": \"{secret_body}\""));
        assert!(message.contains("is not JSON"), "{message}");
        assert!(!message.contains(secret_body), "{message}");

        let message = refusal(r#"{"type": "authorized_user", "refresh_token": "1//secret"}"#);
        assert!(message.contains("authorized_user"), "{message}");
        assert!(!message.contains("1//secret"), "{message}");

        let message = refusal(r#"{"type": "service_account", "private_key": "x"}"#);
        assert!(message.contains("no `client_email`"), "{message}");

        let both = Credentials {
            service_account_key_file: Some("key.json".into()),
            ..credentials("{}")
        };
        let message =
            GcpTokens::from_credentials("gcp", &both, &reqwest::Client::new()).unwrap_err();
        assert!(message.contains("keep one"), "{message}");
    }

    #[test]
    fn without_a_key_the_metadata_server_is_asked_where_the_endpoints_say() {
        let routed = Credentials {
            endpoints: [(METADATA_HOST.to_owned(), "http://127.0.0.1:9".to_owned())].into(),
            ..Credentials::default()
        };
        let tokens = GcpTokens::from_credentials("gcp", &routed, &reqwest::Client::new()).unwrap();
        let Source::Metadata { url, .. } = &tokens.source else {
            panic!("{tokens:?}")
        };
        assert_eq!(
            url.as_str(),
            format!("http://127.0.0.1:9{METADATA_TOKEN_PATH}")
        );
        assert!(tokens.secrets().is_empty());
    }
}
