//! A JSON Web Key Set read from a URL and cached: the signing keys behind every JWT Cordon
//! verifies from another system (Bot Framework activities, Pub/Sub push and Azure Monitor secure
//! webhook senders).
//!
//! The set is read on first use and kept for `ttl`. A token naming a key id not in the set makes
//! Cordon read the set again (issuers roll their keys), but at most once per `min_refetch`: the key
//! id is the sender's to choose, so tokens with made-up ids must not make Cordon hammer the
//! issuer. One read runs at a time; a request arriving during it waits for it and uses its keys.
//! While the URL cannot be read, the keys already held keep being used.
//!
//! Only asymmetric keys are kept: a symmetric key in a public set would let anyone mint tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// How long one read of the metadata or key set may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the keys are published.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The key set itself (`https://www.googleapis.com/oauth2/v3/certs`).
    Jwks(url::Url),
    /// OpenID metadata whose `jwks_uri` names the key set (the Bot Framework's).
    OpenIdMetadata(url::Url),
}

impl KeySource {
    fn url(&self) -> &url::Url {
        match self {
            KeySource::Jwks(url) | KeySource::OpenIdMetadata(url) => url,
        }
    }
}

/// One verifying key of the set.
pub struct Key {
    pub decoding: DecodingKey,
    /// The algorithm the key is for: the key's `alg`, else RS256 for RSA keys, ES256/ES384 by
    /// curve, EdDSA for OKP keys.
    pub algorithm: Algorithm,
    /// The Bot Framework's channel endorsements (`endorsements`); empty elsewhere.
    pub endorsements: Vec<String>,
}

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The set (read now, or less than `min_refetch` ago) has no key with this id.
    #[error("the signing key `{0}` is not in the key set")]
    Unknown(String),
    /// The set could not be read and no keys are held.
    #[error("the signing keys cannot be read: {0}")]
    Unavailable(String),
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Key>>,
    /// When the keys held were read.
    read_at: Option<Instant>,
    /// When the set was last asked for, whatever the answer: the rate limit counts from here, so a
    /// URL that is down is not asked again on every request either.
    tried_at: Option<Instant>,
    /// Why the last read failed, while no read since has succeeded.
    error: Option<String>,
}

/// A key set read from its [`KeySource`], cached.
pub struct KeySet {
    http: reqwest::Client,
    source: KeySource,
    ttl: Duration,
    min_refetch: Duration,
    cache: Mutex<Cache>,
    reads: AtomicU64,
}

impl KeySet {
    /// Keys from `source`, kept for `ttl`, read again for an unknown key id at most once per
    /// `min_refetch`.
    pub fn new(
        http: reqwest::Client,
        source: KeySource,
        ttl: Duration,
        min_refetch: Duration,
    ) -> KeySet {
        KeySet {
            http,
            source,
            ttl,
            min_refetch,
            cache: Mutex::new(Cache::default()),
            reads: AtomicU64::new(0),
        }
    }

    /// Where the keys come from (for logs).
    pub fn url(&self) -> &url::Url {
        self.source.url()
    }

    /// How many times the set has been read (successfully or not) since start.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The key `kid`: from the cache while it is fresh, else after reading the set again.
    pub async fn key(&self, kid: &str) -> Result<Arc<Key>, KeyError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.read_at.is_some_and(|at| at.elapsed() < self.ttl);
        if fresh && let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        if cache
            .tried_at
            .is_none_or(|at| at.elapsed() >= self.min_refetch)
        {
            self.reads.fetch_add(1, Ordering::Relaxed);
            cache.tried_at = Some(Instant::now());
            match self.read().await {
                Ok(keys) => {
                    tracing::info!(url = %self.source.url(), keys = keys.len(), "signing keys read");
                    cache.keys = keys;
                    cache.read_at = cache.tried_at;
                    cache.error = None;
                }
                Err(e) => {
                    // Stale keys beat none while the URL is down.
                    tracing::warn!(url = %self.source.url(), error = %e, held = cache.keys.len(), "signing keys could not be read");
                    cache.error = Some(e);
                }
            }
        }
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        match (&cache.error, cache.keys.is_empty()) {
            (Some(e), true) => Err(KeyError::Unavailable(e.clone())),
            _ => Err(KeyError::Unknown(kid.to_owned())),
        }
    }

    async fn read(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let set_url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::OpenIdMetadata(url) => {
                #[derive(Deserialize)]
                struct Metadata {
                    jwks_uri: url::Url,
                }
                let metadata: Metadata = self
                    .get_json(url)
                    .await
                    .map_err(|e| format!("OpenID metadata: {e}"))?;
                metadata.jwks_uri
            }
        };
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = self
            .get_json(&set_url)
            .await
            .map_err(|e| format!("key set: {e}"))?;
        let mut keys = HashMap::new();
        for value in set.keys {
            let endorsements = value
                .get("endorsements")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let Some(algorithm) = algorithm_of(&jwk) else {
                continue;
            };
            match DecodingKey::from_jwk(&jwk) {
                Ok(decoding) => {
                    keys.insert(
                        kid,
                        Arc::new(Key {
                            decoding,
                            algorithm,
                            endorsements,
                        }),
                    );
                }
                Err(error) => {
                    tracing::warn!(kid = %kid, error = %error, "unusable key in a key set")
                }
            }
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &url::Url) -> Result<T, String> {
        let response = self
            .http
            .get(url.clone())
            .timeout(FETCH_TIMEOUT)
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

/// The asymmetric algorithm a key is for; `None` for symmetric keys and unknown algorithms.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let named = jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
    let algorithm = match (&jwk.algorithm, named) {
        (AlgorithmParameters::RSA(_), Some(a)) => a,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), _) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (AlgorithmParameters::OctetKeyPair(_), _) => Algorithm::EdDSA,
        (AlgorithmParameters::OctetKey(_), _) => return None,
    };
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_keys_are_never_kept() {
        let oct: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "k", "k": "c2VjcmV0", "alg": "HS256"
        }))
        .unwrap();
        assert_eq!(algorithm_of(&oct), None);
        // An RSA key claiming HS256 is refused too: the key decides, not a label.
        let rsa: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB", "alg": "HS256"
        }))
        .unwrap();
        assert_eq!(algorithm_of(&rsa), None);
        let plain: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"
        }))
        .unwrap();
        assert_eq!(algorithm_of(&plain), Some(Algorithm::RS256));
    }

    #[tokio::test]
    async fn an_unreadable_set_is_unavailable_and_asked_once_per_interval() {
        let keys = KeySet::new(
            reqwest::Client::new(),
            KeySource::Jwks(url::Url::parse("http://127.0.0.1:9/keys").unwrap()),
            Duration::from_secs(3600),
            Duration::from_secs(60),
        );
        for kid in ["a", "b", "c"] {
            assert!(matches!(keys.key(kid).await, Err(KeyError::Unavailable(_))));
        }
        assert_eq!(keys.reads(), 1, "a down URL is asked once per interval");
    }
}
