//! Senders that prove who they are with a signed token of their cloud's identity platform, checked
//! on the raw request before its body is read:
//!
//! - **Google Cloud Pub/Sub push** (`auth.google_oidc`): Pub/Sub signs an OIDC token (RS256) for the
//!   push subscription's service account. Accepted when its key is in Google's key set, `iss` is
//!   `accounts.google.com` or `https://accounts.google.com`, `aud` is the configured audience,
//!   `email` is the configured service account and `email_verified` is true, and it is inside its
//!   lifetime (<https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>).
//! - **Azure Monitor secure webhook** (`auth.entra_id`): Azure Monitor sends an Entra ID access
//!   token (RS256) for the configured app registration. Accepted when its key is in the tenant's
//!   key set, `iss` is the tenant's v1 (`https://sts.windows.net/<tenant>/`) or v2
//!   (`https://login.microsoftonline.com/<tenant>/v2.0`) issuer, `aud` is one of the configured
//!   audiences, the calling app (`appid` in v1 tokens, `azp` in v2) is the configured caller
//!   (Azure Monitor's), and it is inside its lifetime
//!   (<https://learn.microsoft.com/azure/azure-monitor/alerts/action-groups#secure-webhook>).
//!
//! Both take RS256 only, whatever the token's header says, so a token "signed" with `none` or
//! with HS256 using the public key as a secret is refused before any key is looked up. Keys come
//! from [`crate::trust::jwks`], which rate-limits the reads a made-up key id causes.
//!
//! Errors name what was wrong (a JSON code and a sentence) and never quote the token.

use std::time::Duration;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::config::{EntraIdAuth, GoogleOidcAuth};
use crate::trust::jwks::{KeyError, KeySet, KeySource};

/// How long signing keys are kept without reading the set again.
const KEYS_TTL: Duration = Duration::from_secs(6 * 3600);
/// The least time between two reads of the key set prompted by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(5);
/// The issuers Google writes in its OIDC tokens.
const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];

/// Why a sender's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    #[error("missing Authorization header (expected `Bearer <token>`)")]
    Missing,
    #[error("the bearer token is not a JWT ({0})")]
    Malformed(String),
    #[error("the token is signed with {0}; only RS256 is accepted")]
    Algorithm(String),
    #[error("the token names no signing key (`kid`)")]
    NoKeyId,
    #[error("the token's signing key `{0}` is not in the key set of {1}")]
    UnknownKey(String, String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's issuer (`iss`) is not {0}")]
    WrongIssuer(String),
    #[error("the token's audience (`aud`) is not {0}")]
    WrongAudience(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("{0}")]
    WrongSender(String),
    #[error("the signing keys cannot be read, so no token can be checked now")]
    KeysUnavailable,
}

impl SenderError {
    /// The JSON error code and metric reason.
    pub fn code(&self) -> &'static str {
        match self {
            SenderError::Missing => "missing_token",
            SenderError::Malformed(_) | SenderError::NoKeyId | SenderError::MissingClaim(_) => {
                "bad_token"
            }
            SenderError::Algorithm(_) => "wrong_algorithm",
            SenderError::UnknownKey(..) => "unknown_key",
            SenderError::BadSignature => "bad_signature",
            SenderError::WrongIssuer(_) => "wrong_issuer",
            SenderError::WrongAudience(_) => "wrong_audience",
            SenderError::Expired => "token_expired",
            SenderError::NotYetValid => "token_not_yet_valid",
            SenderError::WrongSender(_) => "wrong_sender",
            SenderError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// What a token must say besides its signature and lifetime.
enum Rule {
    Google {
        audience: String,
        service_account: String,
    },
    Entra {
        issuers: [String; 2],
        audiences: Vec<String>,
        caller: String,
    },
}

/// Checks one source's sender tokens.
pub struct TokenCheck {
    keys: KeySet,
    rule: Rule,
    leeway: u64,
}

impl TokenCheck {
    /// Pub/Sub push tokens, as `auth` says.
    pub fn google(http: reqwest::Client, auth: &GoogleOidcAuth) -> TokenCheck {
        TokenCheck {
            keys: KeySet::new(
                http,
                KeySource::Jwks(auth.jwks_url.clone()),
                KEYS_TTL,
                MIN_REFETCH,
            ),
            rule: Rule::Google {
                audience: auth.audience.clone(),
                service_account: auth.service_account.clone(),
            },
            leeway: auth.clock_skew.0.as_secs(),
        }
    }

    /// Azure Monitor secure webhook tokens, as `auth` says.
    pub fn entra(http: reqwest::Client, auth: &EntraIdAuth) -> Result<TokenCheck, url::ParseError> {
        let tenant = &auth.tenant;
        Ok(TokenCheck {
            keys: KeySet::new(
                http,
                KeySource::Jwks(auth.keys_url()?),
                KEYS_TTL,
                MIN_REFETCH,
            ),
            rule: Rule::Entra {
                issuers: [
                    format!("https://sts.windows.net/{tenant}/"),
                    format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                ],
                audiences: auth.audience.clone(),
                caller: auth.caller_app_id.clone(),
            },
            leeway: auth.clock_skew.0.as_secs(),
        })
    }

    /// The key set, for tests and logs.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Checks the `Authorization: Bearer` token of a request.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<(), SenderError> {
        let token = super::verify::bearer_token(headers).map_err(|_| SenderError::Missing)?;
        if token.is_empty() {
            return Err(SenderError::Missing);
        }
        self.verify_token(token).await
    }

    /// Checks a token (the part after `Bearer `).
    pub async fn verify_token(&self, token: &str) -> Result<(), SenderError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // `alg: none` is not an algorithm jsonwebtoken knows, so it fails here.
            SenderError::Malformed(e.to_string())
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(SenderError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(SenderError::NoKeyId)?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyError::Unknown(kid) => SenderError::UnknownKey(kid, self.keys.url().to_string()),
            KeyError::Unavailable(_) => SenderError::KeysUnavailable,
        })?;
        if key.algorithm != Algorithm::RS256 {
            return Err(SenderError::UnknownKey(kid, self.keys.url().to_string()));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let (issuers, audiences): (Vec<&str>, Vec<&str>) = match &self.rule {
            Rule::Google { audience, .. } => (GOOGLE_ISSUERS.to_vec(), vec![audience.as_str()]),
            Rule::Entra {
                issuers, audiences, ..
            } => (
                issuers.iter().map(String::as_str).collect(),
                audiences.iter().map(String::as_str).collect(),
            ),
        };
        validation.set_issuer(&issuers);
        validation.set_audience(&audiences);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => SenderError::BadSignature,
                    ErrorKind::ExpiredSignature => SenderError::Expired,
                    ErrorKind::ImmatureSignature => SenderError::NotYetValid,
                    ErrorKind::InvalidIssuer => SenderError::WrongIssuer(either(&issuers)),
                    ErrorKind::InvalidAudience => SenderError::WrongAudience(either(&audiences)),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        SenderError::MissingClaim(claim.clone())
                    }
                    ErrorKind::InvalidAlgorithm => SenderError::Algorithm("RS256".into()),
                    _ => SenderError::Malformed(e.to_string()),
                }
            })?;
        let claims = data.claims;
        match &self.rule {
            Rule::Google {
                service_account, ..
            } => {
                let email = claims
                    .get("email")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SenderError::MissingClaim("email".into()))?;
                if !email.eq_ignore_ascii_case(service_account) {
                    return Err(SenderError::WrongSender(format!(
                        "the token is for service account {email}, not the push subscription's {service_account}"
                    )));
                }
                let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
                    || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true");
                if !verified {
                    return Err(SenderError::WrongSender(
                        "the token's email is not verified (`email_verified` is not true)".into(),
                    ));
                }
            }
            Rule::Entra { caller, .. } => {
                // v1 tokens name the calling app in `appid`, v2 tokens in `azp`.
                let app = claims
                    .get("appid")
                    .or_else(|| claims.get("azp"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| SenderError::MissingClaim("appid".into()))?;
                if !app.eq_ignore_ascii_case(caller) {
                    return Err(SenderError::WrongSender(format!(
                        "the token was issued to app {app}, not the configured caller {caller}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `a`, or `a or b`, quoted.
fn either(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn google() -> TokenCheck {
        TokenCheck::google(
            reqwest::Client::new(),
            &GoogleOidcAuth {
                audience: "https://cordon.example/v1/alerts/gcp.scc".into(),
                service_account: "push@p.iam.gserviceaccount.com".into(),
                jwks_url: url::Url::parse("http://127.0.0.1:9/certs").unwrap(),
                clock_skew: HumanDuration::secs(60),
            },
        )
    }

    #[tokio::test]
    async fn tokens_not_rs256_are_refused_before_any_key_is_read() {
        let check = google();
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({ "aud": "x" }),
            &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert!(matches!(
            check.verify_token(&hs).await,
            Err(SenderError::Algorithm(_))
        ));
        // `{"alg":"none"}`.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdWQiOiJ4In0.";
        assert!(matches!(
            check.verify_token(none).await,
            Err(SenderError::Malformed(_))
        ));
        assert_eq!(check.keys().reads(), 0);
        assert_eq!(
            check.verify(&HeaderMap::new()).await,
            Err(SenderError::Missing)
        );
    }
}
