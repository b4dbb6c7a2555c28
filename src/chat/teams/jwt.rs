//! Validating the Bot Framework token on inbound activities.
//!
//! The Bot Connector signs a JWT (RS256) for every activity it sends the bot. The signing keys are
//! the JSON Web Key Set named by the Bot Framework OpenID metadata (`jwks_uri`); each key lists
//! the channels it is endorsed for. A token is accepted when its key is in the set and endorses
//! the activity's channel, its signature holds, its issuer is the Bot Framework's, its audience is
//! the bot's app id, it is inside its lifetime (5 minutes of clock skew allowed), and its
//! `serviceurl` claim, when present, is the activity's `serviceUrl`.
//!
//! Keys are cached for a day. A token naming a key not in the cache makes Cordon fetch the set
//! again (Microsoft rolls keys), at most once a second, so tokens with made-up key ids cannot make
//! Cordon hammer the metadata endpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// How long fetched keys are trusted without a refetch.
const KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The least time between two fetches prompted by unknown keys.
const MIN_REFETCH: Duration = Duration::from_secs(1);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 300;

/// Why an inbound token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no `Authorization: Bearer <token>` header")]
    Missing,
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}; Bot Framework tokens are RS256")]
    Algorithm(String),
    #[error("the token names no signing key (`kid`)")]
    NoKeyId,
    #[error("the token's signing key `{0}` is not in the Bot Framework key set")]
    UnknownKey(String),
    #[error("the token's signing key is not endorsed for channel `{0}`")]
    NotEndorsed(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's issuer is not {0}")]
    WrongIssuer(String),
    #[error("the token is not for this bot (audience is not its app id)")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("the token was issued for service URL {claim}, not the activity's {activity}")]
    ServiceUrl { claim: String, activity: String },
    #[error("the Bot Framework signing keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    /// The JSON error code of the 401 (503 for [`TokenError::KeysUnavailable`]).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::Malformed(_) | TokenError::Algorithm(_) | TokenError::NoKeyId => {
                "bad_token"
            }
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::NotEndorsed(_) => "key_not_endorsed",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer(_) => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::MissingClaim(_) => "bad_token",
            TokenError::ServiceUrl { .. } => "wrong_service_url",
            TokenError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// A validated token's claims that matter after the signature.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `serviceurl` claim, when the token has one.
    pub service_url: Option<String>,
    /// Channels the signing key is endorsed for (empty: the key set gave none).
    pub endorsements: Vec<String>,
}

impl Verified {
    /// Checks the claims tied to the activity: the key endorses its channel and the token was
    /// issued for its service URL.
    pub fn check_activity(
        &self,
        channel_id: Option<&str>,
        service_url: Option<&str>,
    ) -> Result<(), TokenError> {
        if !self.endorsements.is_empty() {
            let channel = channel_id.unwrap_or_default();
            if !self.endorsements.iter().any(|e| e == channel) {
                return Err(TokenError::NotEndorsed(channel.to_owned()));
            }
        }
        if let Some(claim) = &self.service_url {
            let activity = service_url.unwrap_or_default();
            if super::api::trim_service_url(claim) != super::api::trim_service_url(activity) {
                return Err(TokenError::ServiceUrl {
                    claim: claim.clone(),
                    activity: activity.to_owned(),
                });
            }
        }
        Ok(())
    }
}

struct Key {
    decoding: DecodingKey,
    endorsements: Vec<String>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Key>,
    fetched_at: Option<Instant>,
}

/// The inbound token validator: the key set (cached) and what tokens must say.
pub struct Validator {
    http: reqwest::Client,
    metadata_url: url::Url,
    issuer: String,
    audience: String,
    cache: Mutex<Cache>,
}

#[derive(Deserialize)]
struct Metadata {
    jwks_uri: url::Url,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    endorsements: Vec<String>,
}

impl Validator {
    pub fn new(
        http: reqwest::Client,
        metadata_url: url::Url,
        issuer: &str,
        audience: &str,
    ) -> Validator {
        Validator {
            http,
            metadata_url,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Validates `token` (the part after `Bearer `).
    pub async fn validate(&self, token: &str) -> Result<Verified, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let (decoding, endorsements) = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &decoding, &validation)
                .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer(self.issuer.clone()),
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::MissingClaim(claim.clone())
                    }
                    ErrorKind::InvalidAlgorithm => {
                        TokenError::Algorithm(format!("{:?}", header.alg))
                    }
                    _ => TokenError::Malformed(e.to_string()),
                }
            })?;
        let service_url = data
            .claims
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("serviceurl"))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned);
        Ok(Verified {
            service_url,
            endorsements,
        })
    }

    /// The key `kid`, from the cache or a fresh fetch of the key set.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Vec<String>), TokenError> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched_at.map(|at| at.elapsed());
        let fresh = age.is_some_and(|a| a < KEYS_TTL);
        if fresh && let Some(key) = cache.keys.get(kid) {
            return Ok((key.decoding.clone(), key.endorsements.clone()));
        }
        let may_fetch = age.is_none_or(|a| a >= MIN_REFETCH);
        if may_fetch {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "Bot Framework signing keys fetched");
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                // Stale keys beat none while the metadata endpoint is down.
                Err(e) if cache.keys.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Bot Framework signing keys could not be refreshed; using the cached ones")
                }
            }
        }
        cache
            .keys
            .get(kid)
            .map(|key| (key.decoding.clone(), key.endorsements.clone()))
            .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, TokenError> {
        let unavailable =
            |what: &str, e: String| TokenError::KeysUnavailable(format!("{what}: {e}"));
        let metadata: Metadata = self
            .get_json(self.metadata_url.clone())
            .await
            .map_err(|e| unavailable("OpenID metadata", e))?;
        let set: KeySet = self
            .get_json(metadata.jwks_uri)
            .await
            .map_err(|e| unavailable("key set", e))?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            if jwk.kty.as_deref().is_some_and(|k| k != "RSA") {
                continue;
            }
            match DecodingKey::from_rsa_components(&n, &e) {
                Ok(decoding) => {
                    keys.insert(
                        kid,
                        Key {
                            decoding,
                            endorsements: jwk.endorsements,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(kid = %kid, error = %error, "unusable key in the Bot Framework key set")
                }
            }
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: url::Url) -> Result<T, String> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status().as_u16()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: Option<&str>) -> Result<&str, TokenError> {
    let value = value.ok_or(TokenError::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(TokenError::Missing)?;
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_claims() {
        let verified = Verified {
            service_url: Some("https://smba.example/amer/".into()),
            endorsements: vec!["msteams".into()],
        };
        assert_eq!(
            verified.check_activity(Some("msteams"), Some("https://smba.example/amer")),
            Ok(())
        );
        assert_eq!(
            verified.check_activity(Some("skype"), Some("https://smba.example/amer/")),
            Err(TokenError::NotEndorsed("skype".into()))
        );
        assert!(matches!(
            verified.check_activity(Some("msteams"), Some("https://evil.example/")),
            Err(TokenError::ServiceUrl { .. })
        ));
        let open = Verified {
            service_url: None,
            endorsements: vec![],
        };
        assert_eq!(open.check_activity(None, None), Ok(()));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("Basic abc")), Err(TokenError::Missing));
        assert_eq!(bearer(Some("Bearer ")), Err(TokenError::Missing));
        assert_eq!(bearer(None), Err(TokenError::Missing));
    }

    #[tokio::test]
    async fn garbage_is_refused_before_any_fetch() {
        let validator = Validator::new(
            reqwest::Client::new(),
            url::Url::parse("http://127.0.0.1:9/none").unwrap(),
            "https://api.botframework.com",
            "app",
        );
        assert!(matches!(
            validator.validate("not a jwt").await,
            Err(TokenError::Malformed(_))
        ));
        // An HS256 token is refused on its header, whatever its signature.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({ "aud": "app" }),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(matches!(
            validator.validate(&hs).await,
            Err(TokenError::Algorithm(_))
        ));
    }
}
