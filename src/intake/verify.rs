//! Request authentication on raw bytes, before anything is parsed: bearer tokens and HMAC
//! signatures, compared in constant time.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{HmacAuth, Secret};

/// Why a request was refused. The messages tell the sender what to fix and never echo a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0}")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
    #[error("timestamp is outside the {0} replay window")]
    Stale(String),
}

impl AuthError {
    /// The reason code for metrics and the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Stale(_) => "stale_timestamp",
            _ => "unauthorized",
        }
    }
}

/// Checks `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap, token: &Secret) -> Result<(), AuthError> {
    let presented = bearer_token(headers)?;
    if equal_secret(presented.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Invalid("bearer token is not valid".into()))
    }
}

/// Checks a token in the query string (`?<param>=<token>`). Only the parameter's name appears in
/// errors.
pub fn query_token(query: Option<&str>, param: &str, token: &Secret) -> Result<(), AuthError> {
    let presented = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(name, _)| name == param)
        .map(|(_, value)| value)
        .ok_or_else(|| AuthError::Missing(format!("`{param}` query parameter")))?;
    if equal_secret(presented.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "the `{param}` query parameter is not valid"
        )))
    }
}

/// The token of `Authorization: Bearer <token>`, not yet checked.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            AuthError::Missing("Authorization header (expected `Bearer <token>`)".into())
        })?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| AuthError::Invalid("Authorization header is not `Bearer <token>`".into()))?;
    Ok(presented.trim())
}

/// Checks an HMAC-SHA256 signature over `timestamp.body` and that the timestamp is within the
/// replay window of `now` (Unix seconds).
pub fn hmac(headers: &HeaderMap, body: &[u8], auth: &HmacAuth, now: i64) -> Result<(), AuthError> {
    let header = |name: &str| -> Result<String, AuthError> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| AuthError::Missing(format!("{name} header")))
    };
    let timestamp = header(&auth.timestamp_header)?;
    let signature = header(&auth.signature_header)?;
    let sent: i64 = timestamp.parse().map_err(|_| {
        AuthError::Invalid(format!("{} is not Unix seconds", auth.timestamp_header))
    })?;
    let window = auth.replay_window.0.as_secs() as i64;
    if now.abs_diff(sent) > window as u64 {
        return Err(AuthError::Stale(auth.replay_window.to_string()));
    }
    let hex_sig = signature.strip_prefix("sha256=").unwrap_or(&signature);
    let presented = hex::decode(hex_sig).map_err(|_| {
        AuthError::Invalid(format!(
            "{} is not a hex HMAC-SHA256",
            auth.signature_header
        ))
    })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(auth.secret.expose().as_bytes())
        .map_err(|_| AuthError::Invalid("HMAC key is unusable".into()))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&presented)
        .map_err(|_| AuthError::Invalid("signature does not match the body".into()))
}

/// The signature a sender computes: hex HMAC-SHA256 of `timestamp.body`. For senders' tests and docs.
pub fn hmac_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two secrets in time that depends on neither's content nor length (both are hashed
/// first).
fn equal_secret(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn auth() -> HmacAuth {
        HmacAuth {
            secret: Secret::new("s3cret"),
            signature_header: "x-sig".into(),
            timestamp_header: "x-ts".into(),
            replay_window: HumanDuration::secs(300),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_accepts_only_the_token() {
        let token = Secret::new("tok-123");
        assert_eq!(
            bearer(
                &headers(&[("authorization", "Bearer tok-123".into())]),
                &token
            ),
            Ok(())
        );
        assert!(matches!(
            bearer(
                &headers(&[("authorization", "Bearer tok-124".into())]),
                &token
            ),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            bearer(&headers(&[("authorization", "Basic abc".into())]), &token),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            bearer(&HeaderMap::new(), &token),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn query_token_accepts_only_the_token_in_its_parameter() {
        let token = Secret::new("q-tok/+=");
        assert_eq!(
            query_token(Some("a=1&token=q-tok%2F%2B%3D"), "token", &token),
            Ok(())
        );
        let wrong = query_token(Some("token=q-tok"), "token", &token).unwrap_err();
        assert!(matches!(wrong, AuthError::Invalid(_)));
        assert!(!wrong.to_string().contains("q-tok"), "{wrong}");
        assert!(matches!(
            query_token(Some("key=q-tok%2F%2B%3D"), "token", &token),
            Err(AuthError::Missing(_))
        ));
        assert!(matches!(
            query_token(None, "token", &token),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn hmac_checks_signature_and_window() {
        let body = br#"{"title":"x"}"#;
        let now = 1_700_000_000;
        let good = headers(&[
            ("x-ts", now.to_string()),
            (
                "x-sig",
                format!("sha256={}", hmac_signature("s3cret", now, body)),
            ),
        ]);
        assert_eq!(hmac(&good, body, &auth(), now + 10), Ok(()));
        assert!(matches!(
            hmac(&good, b"{}", &auth(), now),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            hmac(&good, body, &auth(), now + 301),
            Err(AuthError::Stale("5m".into()))
        );
        assert_eq!(
            hmac(&good, body, &auth(), now - 301).unwrap_err().code(),
            "stale_timestamp"
        );
        let wrong_key = headers(&[
            ("x-ts", now.to_string()),
            ("x-sig", hmac_signature("other", now, body)),
        ]);
        assert!(matches!(
            hmac(&wrong_key, body, &auth(), now),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            hmac(&headers(&[("x-ts", now.to_string())]), body, &auth(), now),
            Err(AuthError::Missing(_))
        ));
    }
}
