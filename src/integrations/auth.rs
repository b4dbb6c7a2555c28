//! Auth providers applied by the host to integration requests. (Interface stub; the
//! implementation lands from the auth branch.)

use crate::config::Secret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    pub retryable: bool,
}

#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

pub fn aws_region_from_host(host: &str) -> Option<String> {
    let _ = host;
    None
}

pub struct AzureTokens;

impl AzureTokens {
    pub fn new(
        _http: reqwest::Client,
        _login: url::Url,
        _tenant_id: String,
        _client_id: String,
        _client_secret: Secret,
    ) -> AzureTokens {
        AzureTokens
    }
}

pub enum Auth {
    None,
    AwsSigV4 {
        creds: AwsCredentials,
        service: String,
    },
    AzureOAuth(std::sync::Arc<AzureTokens>),
    Bearer(Secret),
    Basic {
        username: String,
        password: Secret,
    },
    ApiKey {
        header: String,
        key: Secret,
    },
}

impl Auth {
    pub async fn apply(
        &self,
        _request: &mut reqwest::Request,
        _region: &str,
        _scope: &str,
    ) -> Result<(), AuthError> {
        Ok(())
    }
}
