//! S3 objects for `yara.scan` (`s3: s3://bucket/key`), read the way the AWS integrations reach AWS:
//! with the credentials entry `yara.s3_credentials` names under `integrations.credentials` (its
//! keys or the default chain, the role it assumes for the alert's account, its `endpoints`), a
//! SigV4-signed GET, an HTTP client that reaches public addresses and only the internal hosts an
//! endpoint names, no redirects, and the body read up to `yara.max_bytes`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::actions::ActionError;
use crate::actions::egress::{self, Egress};
use crate::integrations::auth::sign_sigv4;
use crate::integrations::aws_credentials::AwsProvider;

/// Where the hint of a refused address points.
const HINT: &str = "integrations.credentials.<name>.endpoints";

/// Reads S3 objects with one credentials entry.
pub struct S3Reader {
    provider: AwsProvider,
    /// Host pattern → base URL, as the integrations route requests.
    endpoints: BTreeMap<String, String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for S3Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Reader").finish_non_exhaustive()
    }
}

impl S3Reader {
    /// The reader for `yara.s3_credentials`, when set: an error naming the key when the entry is
    /// missing or unusable.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<S3Reader>, String> {
        let Some(name) = &config.yara.s3_credentials else {
            return Ok(None);
        };
        let credentials = config.integrations.credentials.get(name).ok_or_else(|| {
            format!(
                "yara.s3_credentials names `{name}`, which integrations.credentials does not hold"
            )
        })?;
        let mut egress = Egress::default();
        for base in credentials.endpoints.values() {
            if let Some(host) = url::Url::parse(base).ok().and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            }) {
                egress.allow_host(&host);
            }
        }
        let client = egress.client(HINT)?;
        let provider = AwsProvider::new(client.clone(), credentials, std::env::vars().collect())
            .map_err(|e| format!("integrations.credentials.{name}: {e}"))?;
        Ok(Some(S3Reader {
            provider,
            endpoints: credentials.endpoints.clone(),
            client,
        }))
    }

    /// The object at `uri` (`s3://bucket/key`) in `region`, signed for `account`'s role, at most
    /// `cap` bytes.
    pub async fn get(
        &self,
        uri: &str,
        region: &str,
        account: Option<&str>,
        cap: usize,
    ) -> Result<Vec<u8>, ActionError> {
        let (bucket, key) = uri
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
            .ok_or_else(|| {
                ActionError::permanent(format!("`{uri}` is not an S3 URI (s3://bucket/key)"))
            })?;
        let host = format!("s3.{region}.amazonaws.com");
        let base = self
            .endpoints
            .iter()
            .find(|(pattern, _)| crate::actions::glob(pattern, &host))
            .map_or_else(|| format!("https://{host}"), |(_, base)| base.clone());
        let mut url = url::Url::parse(&base).map_err(|e| {
            ActionError::permanent(format!(
                "the endpoint `{base}` for `{host}` is not a URL: {e}"
            ))
        })?;
        url.path_segments_mut()
            .map_err(|_| ActionError::permanent(format!("the endpoint `{base}` takes no path")))?
            .pop_if_empty()
            .push(bucket)
            .extend(key.split('/'));
        let signing = self.provider.signing(account).await.map_err(|e| {
            if e.retryable() {
                ActionError::retryable(e.message)
            } else {
                ActionError::permanent(e.message)
            }
        })?;
        let mut request = self
            .client
            .get(url)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ActionError::permanent(format!("bad S3 request: {e}")))?;
        sign_sigv4(
            &mut request,
            &signing.credentials,
            region,
            "s3",
            SystemTime::now(),
        )
        .map_err(|e| ActionError::permanent(e.message))?;
        let response =
            self.client
                .execute(request)
                .await
                .map_err(|e| match egress::refused(&e) {
                    Some(refused) => ActionError::permanent(refused.to_string()),
                    None => {
                        ActionError::retryable(format!("S3 is unreachable: {}", e.without_url()))
                    }
                })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ActionError::retryable(format!(
                "S3 answered {status} for {uri}"
            )));
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let code = text
                .split_once("<Code>")
                .and_then(|(_, rest)| rest.split_once("</Code>"))
                .map_or("no error code", |(code, _)| code);
            return Err(ActionError::permanent(format!(
                "S3 answered {status} ({code}) for {uri}"
            )));
        }
        egress::read_capped(response, cap, "yara.max_bytes")
            .await
            .map_err(|e| match e {
                egress::ReadError::TooLarge { .. } => {
                    ActionError::permanent(super::too_large_download(cap))
                }
                egress::ReadError::Transport(_) => ActionError::retryable(e.to_string()),
            })
    }
}
