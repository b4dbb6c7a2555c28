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

use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::trust::jwks::{KeyError, KeySet, KeySource};

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

/// The inbound token validator: the key set (cached) and what tokens must say.
pub struct Validator {
    keys: KeySet,
    issuer: String,
    audience: String,
}

impl Validator {
    pub fn new(
        http: reqwest::Client,
        metadata_url: url::Url,
        issuer: &str,
        audience: &str,
    ) -> Validator {
        Validator {
            keys: KeySet::new(
                http,
                KeySource::OpenIdMetadata(metadata_url),
                KEYS_TTL,
                MIN_REFETCH,
            ),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
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
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyError::Unknown(kid) => TokenError::UnknownKey(kid),
            KeyError::Unavailable(e) => TokenError::KeysUnavailable(e),
        })?;
        if key.algorithm != Algorithm::RS256 {
            return Err(TokenError::UnknownKey(kid));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer(self.issuer.clone()),
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
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
            endorsements: key.endorsements.clone(),
        })
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
