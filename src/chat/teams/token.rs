//! The OAuth 2.0 client-credentials token Cordon presents to the Connector API (and to Microsoft
//! Graph), fetched from the Microsoft identity platform and cached until shortly before it
//! expires.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::failure;
use crate::outbox::DeliveryError;

/// A token is renewed this long before its stated expiry.
const MARGIN: Duration = Duration::from_secs(300);

/// One client's token for one scope.
pub struct TokenSource {
    http: reqwest::Client,
    url: url::Url,
    client_id: String,
    client_secret: Secret,
    scope: String,
    cached: Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenRefusal {
    #[serde(default)]
    error: Option<String>,
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        url: url::Url,
        client_id: &str,
        client_secret: Secret,
        scope: &str,
    ) -> TokenSource {
        TokenSource {
            http,
            url,
            client_id: client_id.to_owned(),
            client_secret,
            scope: scope.to_owned(),
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one. Every failure is retryable (a wrong secret is
    /// fixed in the config, and the deliveries waiting for it must survive until then).
    pub async fn get(&self) -> Result<Secret, DeliveryError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let response = self
            .http
            .post(self.url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                DeliveryError::retry(format!(
                    "token endpoint {} unreachable: {}",
                    self.url,
                    e.without_url()
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = failure::retry_after(response.headers());
            // The identity platform names what is wrong (`invalid_client`, `unauthorized_client`).
            let code = response
                .json::<TokenRefusal>()
                .await
                .ok()
                .and_then(|r| r.error)
                .unwrap_or_default();
            let message = format!(
                "token endpoint {} answered {} {code} (check the app id, password and tenant)",
                self.url,
                status.as_u16()
            );
            // Whatever the refusal, the delivery waits: wrong credentials are fixed by an
            // operator, and then the cards must still go out.
            return Err(match retry_after {
                Some(after) => DeliveryError::retry_after(message, after),
                None => DeliveryError::retry(message),
            });
        }
        let answer: TokenAnswer = response.json().await.map_err(|e| {
            DeliveryError::retry(format!(
                "token endpoint {} answered something that is not a token: {}",
                self.url,
                e.without_url()
            ))
        })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let token = Secret::new(answer.access_token);
        let fresh_for = if lifetime > MARGIN * 2 {
            lifetime - MARGIN
        } else {
            lifetime / 2
        };
        *cached = Some((token.clone(), Instant::now() + fresh_for));
        Ok(token)
    }

    /// Drops the cached token (the API refused it), so the next call fetches a new one.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}
