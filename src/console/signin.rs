//! Signing in to the console: the OIDC authorization code flow with PKCE against the configured
//! issuer (`oidc:`), or a personal token pasted once.
//!
//! The code flow: `/login/oidc` makes a `state`, a `nonce` and a PKCE verifier, keeps them in the
//! store (namespace `console_logins`, under the SHA-256 of the state, for ten minutes, used once),
//! binds the attempt to the browser with a `cordon_login` cookie holding the state, and sends the
//! browser to the issuer's `authorization_endpoint` with the S256 challenge. `/login/callback`
//! takes the code only when the state it comes with is the browser's own attempt, redeems it at
//! the `token_endpoint` with the verifier, verifies the ID token with the key set the API trusts
//! (issuer, audience = the console's client id, lifetime, signature), checks its `nonce`, and
//! finds the person exactly as the API does (`oidc:<sub>`, then `oidc:<verified email>`).
//!
//! After sign-in the browser goes to the page it asked for: a path on this console only
//! ([`local_path`]); anything else (another host, `//host`, `/\host`, a scheme) goes to `/`.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::app::AppState;
use crate::config::OidcConfig;
use crate::trust::oidc::Verifier;

use super::session::{key_of, random_token};

pub(crate) const LOGINS: &str = "console_logins";
/// The cookie binding a sign-in attempt to the browser that started it.
pub const LOGIN_COOKIE: &str = "cordon_login";
/// How long a sign-in attempt may take at the issuer.
const ATTEMPT_TTL: TimeDelta = TimeDelta::minutes(10);
/// How long the issuer's endpoints are kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// A sign-in attempt as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    pub redirect_uri: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The console's OIDC client.
pub struct OidcSignIn {
    pub client_id: String,
    issuer: String,
    verifier: Verifier,
    http: reqwest::Client,
    endpoints: Mutex<Option<(Endpoints, Instant)>>,
}

/// Why a sign-in did not complete: what the person is told (no secret in it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignInError(pub String);

impl OidcSignIn {
    pub fn new(oidc: &OidcConfig, client_id: Option<&str>) -> OidcSignIn {
        let client_id = client_id
            .map(str::to_owned)
            .or_else(|| oidc.client_id.clone())
            .unwrap_or_else(|| oidc.audience.clone());
        // ID tokens name the client in `aud`; everything else is checked as for API tokens.
        let mut config = oidc.clone();
        config.audience = client_id.clone();
        OidcSignIn {
            client_id,
            issuer: oidc.issuer.clone(),
            verifier: Verifier::new(config),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            endpoints: Mutex::new(None),
        }
    }

    async fn endpoints(&self) -> Result<Endpoints, SignInError> {
        let mut held = self.endpoints.lock().await;
        if let Some((endpoints, at)) = held.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(endpoints.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let unreadable =
            |e: String| SignInError(format!("the sign-in service cannot be reached: {e}"));
        let answer = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        if !answer.status().is_success() {
            return Err(unreadable(format!("{url} answered {}", answer.status())));
        }
        let endpoints: Endpoints = answer
            .json()
            .await
            .map_err(|e| unreadable(format!("{url}: {e}")))?;
        if endpoints.issuer != self.issuer {
            return Err(unreadable(format!(
                "its discovery document names issuer {}, not {}",
                endpoints.issuer, self.issuer
            )));
        }
        *held = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }

    /// Starts an attempt: the state (the cookie's value) and where to send the browser.
    pub async fn start(
        &self,
        app: &AppState,
        redirect_uri: String,
        next: String,
    ) -> Result<(String, String), SignInError> {
        let endpoints = self.endpoints().await?;
        let state = random_token(32);
        let attempt = Attempt {
            nonce: random_token(32),
            verifier: random_token(32),
            next,
            redirect_uri,
            created_at: Utc::now(),
        };
        let challenge = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            Sha256::digest(attempt.verifier.as_bytes()),
        );
        let mut url = url::Url::parse(&endpoints.authorization_endpoint).map_err(|e| {
            SignInError(format!(
                "the issuer's authorization endpoint is not a URL: {e}"
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &attempt.redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", &state)
            .append_pair("nonce", &attempt.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        app.store
            .meta_put(
                LOGINS,
                &key_of(&state),
                serde_json::to_value(&attempt).unwrap_or_default(),
            )
            .await
            .map_err(|e| SignInError(format!("cannot start signing in: {e}")))?;
        Ok((state, url.into()))
    }

    /// Completes an attempt: the identities the ID token proves, and where to go next. The
    /// attempt is used up whatever the outcome.
    pub async fn finish(
        &self,
        app: &AppState,
        state: &str,
        browser_state: Option<&str>,
        code: &str,
    ) -> Result<(Vec<String>, String), SignInError> {
        let refused = |why: &str| SignInError(format!("sign-in refused: {why}; start again"));
        // The state must be the one this browser started with (its cookie): a code and state
        // made in another browser (login CSRF, a stolen callback URL) do not sign this one in.
        if !browser_state.is_some_and(|b| super::session::same(b, state)) {
            return Err(refused(
                "this sign-in was not started in this browser (state mismatch)",
            ));
        }
        let key = key_of(state);
        let stored = app
            .store
            .meta_get(LOGINS, &key)
            .await
            .map_err(|e| SignInError(format!("cannot complete signing in: {e}")))?;
        let Some(attempt) = stored.and_then(|v| serde_json::from_value::<Attempt>(v).ok()) else {
            return Err(refused("unknown or already used state"));
        };
        let _ = app.store.meta_delete(LOGINS, &key).await;
        if Utc::now() - attempt.created_at > ATTEMPT_TTL {
            return Err(refused("the attempt is older than ten minutes"));
        }
        let endpoints = self.endpoints().await?;
        let answer = self
            .http
            .post(&endpoints.token_endpoint)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &attempt.redirect_uri),
                ("client_id", &self.client_id),
                ("code_verifier", &attempt.verifier),
            ])
            .send()
            .await
            .map_err(|e| SignInError(format!("the sign-in service cannot be reached: {e}")))?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            // The issuer's error code only: its description may echo what was sent.
            let code = body["error"].as_str().unwrap_or("unknown");
            return Err(refused(&format!(
                "the issuer did not accept the authorization code ({status}, `{}`)",
                code.chars().take(64).collect::<String>()
            )));
        }
        let Some(id_token) = body["id_token"].as_str() else {
            return Err(refused("the issuer answered no ID token"));
        };
        let claims = self
            .verifier
            .verify(id_token)
            .await
            .map_err(|e| refused(&format!("the ID token was not accepted: {e}")))?;
        // The signature is verified: its payload's `nonce` is the issuer's word.
        let nonce = payload(id_token)
            .and_then(|p| p["nonce"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if !super::session::same(&nonce, &attempt.nonce) {
            return Err(refused("the ID token's nonce is not this attempt's"));
        }
        Ok((claims.identities(), attempt.next))
    }
}

/// The payload of a JWT, as JSON.
fn payload(jwt: &str) -> Option<Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `next` when it is a path on this console; `/` otherwise. Refuses what a browser would take to
/// another host: `//host`, `/\host`, a scheme, control characters.
pub fn local_path(next: Option<&str>) -> String {
    let Some(next) = next else {
        return "/".to_owned();
    };
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok { next.to_owned() } else { "/".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_paths_of_this_console_are_followed_after_sign_in() {
        for (given, kept) in [
            (Some("/incidents/abc?x=1"), "/incidents/abc?x=1"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example/"), "/"),
            (Some("/ok\\..\\x"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/\nLocation: x"), "/"),
            (Some(""), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(given), kept, "{given:?}");
        }
    }
}
