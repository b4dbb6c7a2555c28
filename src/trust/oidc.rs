//! OIDC bearer tokens from the configured issuer (`oidc:` in the config).
//!
//! The issuer's discovery document (`<issuer>/.well-known/openid-configuration`) names its key
//! set (`jwks_uri`). A token is accepted when it is a JWT signed with an asymmetric algorithm by a
//! key in that set, its `iss` is the configured issuer exactly, its `aud` names the configured
//! audience, and it is inside its lifetime with the configured clock skew. Keys are kept for
//! `jwks_refresh`; a token naming a key not yet known makes Cordon read the set again at once
//! (the issuer rotated its keys), at most every 5 s, so made-up key ids cannot make Cordon
//! hammer the issuer.
//!
//! The person is found by `oidc:<sub>`, then by `oidc:<email>` when the token says the email is
//! verified (`email_verified: true`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::OidcConfig;

/// The least time between two key-set reads prompted by an unknown key id.
const MIN_REFETCH: Duration = Duration::from_secs(5);

/// The claims Cordon reads from a verified token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
}

impl Claims {
    /// The email, when the issuer says it is verified.
    pub fn verified_email(&self) -> Option<&str> {
        match (self.email.as_deref(), self.email_verified) {
            (Some(email), Some(true)) => Some(email),
            _ => None,
        }
    }

    /// The identities the token proves, most specific first.
    pub fn identities(&self) -> Vec<String> {
        let mut ids = vec![format!("oidc:{}", self.sub)];
        if let Some(email) = self.verified_email() {
            ids.push(format!("oidc:{email}"));
        }
        ids
    }
}

struct Keys {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    read_at: Option<Instant>,
}

/// Verifies tokens from one issuer.
pub struct Verifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

impl Verifier {
    pub fn new(config: OidcConfig) -> Verifier {
        Verifier {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            keys: Mutex::new(Keys {
                keys: HashMap::new(),
                read_at: None,
            }),
        }
    }

    /// The claims of `token` once every check holds; otherwise what failed.
    pub async fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let kid = header
            .kid
            .ok_or_else(|| "the token names no signing key (`kid`)".to_owned())?;
        let (key, algorithm) = self.key(&kid).await?;
        if header.alg != algorithm {
            return Err(format!(
                "the token says {:?} but its key is for {algorithm:?}",
                header.alg
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.audience.as_str()]);
        validation.leeway = self.config.clock_skew.0.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                    ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
                    ErrorKind::InvalidAudience => format!(
                        "the token is not for this server (`aud` does not name `{}`)",
                        self.config.audience
                    ),
                    ErrorKind::InvalidIssuer => {
                        format!("the token's issuer is not {}", self.config.issuer)
                    }
                    ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
                    ErrorKind::MissingRequiredClaim(c) => format!("the token lacks `{c}`"),
                    _ => format!("the token is not valid: {e}"),
                }
            })
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), String> {
        let mut keys = self.keys.lock().await;
        let stale = keys
            .read_at
            .is_none_or(|t| t.elapsed() >= self.config.jwks_refresh.0);
        let unknown = !keys.keys.contains_key(kid);
        let may_refetch = keys.read_at.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        if stale || (unknown && may_refetch) {
            match self.read_keys().await {
                Ok(read) => {
                    keys.keys = read;
                    keys.read_at = Some(Instant::now());
                }
                Err(e) if keys.keys.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the OIDC issuer's keys again; using the ones held")
                }
            }
        }
        keys.keys
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("the signing key `{kid}` is not in the issuer's key set"))
    }

    async fn read_keys(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != self.config.issuer {
            return Err(format!(
                "the discovery document names issuer {}, not the configured {}",
                discovery.issuer, self.config.issuer
            ));
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), Some(a)) => {
                    Algorithm::from_str_lossy(&a.to_string())
                }
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), None) => Some(Algorithm::RS256),
                (jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec), _) => match ec.curve {
                    jsonwebtoken::jwk::EllipticCurve::P256 => Some(Algorithm::ES256),
                    jsonwebtoken::jwk::EllipticCurve::P384 => Some(Algorithm::ES384),
                    _ => None,
                },
                (jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_), _) => {
                    Some(Algorithm::EdDSA)
                }
                // Symmetric keys are never accepted: anyone who knows them could mint tokens.
                _ => None,
            };
            if let Some(algorithm) = algorithm {
                keys.insert(kid, (key, algorithm));
            }
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{url} is not the JSON expected: {e}"))
    }
}

trait FromStrLossy: Sized {
    fn from_str_lossy(name: &str) -> Option<Self>;
}

impl FromStrLossy for Algorithm {
    /// The asymmetric algorithm `name` names; `None` for HMAC (and anything unknown).
    fn from_str_lossy(name: &str) -> Option<Algorithm> {
        match name.parse::<Algorithm>().ok()? {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
            other => Some(other),
        }
    }
}
