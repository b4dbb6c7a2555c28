//! Auth providers the host applies to integration requests after the script has built them:
//! AWS SigV4, Microsoft Entra ID tokens ([`super::azure_credentials`]), Google OAuth tokens
//! ([`super::gcp`]), bearer, basic and API-key headers.
//! No secret reaches an error or a `Debug` output, and every header that carries one is marked
//! sensitive so the HTTP stack never prints it either.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::time::Instant;
use url::Url;

pub use super::azure_credentials::{AzureProvider, AzureTokens};
use crate::config::Secret;
use crate::failure::Failure;

/// Why auth could not be applied. The message never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    /// What it means for trying again: the token service may be down or throttling.
    pub failure: Failure,
}

impl AuthError {
    pub(crate) fn permanent(message: impl Into<String>) -> AuthError {
        AuthError {
            message: message.into(),
            failure: Failure::Permanent,
        }
    }

    /// True when trying again later may succeed by itself.
    pub fn retryable(&self) -> bool {
        self.failure.is_transient()
    }
}

/// Static AWS credentials from the config.
#[derive(Clone, Debug)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Signs `request` (final URL, headers and body already set) with AWS SigV4 at `time`:
/// sets x-amz-date, authorization, x-amz-security-token (when a session token), and for service "s3"
/// x-amz-content-sha256 (S3 requires the payload hash header; S3 also must not double-encode the path).
pub fn sign_sigv4(
    request: &mut reqwest::Request,
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), AuthError> {
    if region.is_empty() || service.is_empty() {
        return Err(AuthError::permanent(
            "SigV4 needs a signing region and service",
        ));
    }
    let url = request.url();
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(AuthError::permanent(
            "SigV4 signs only URLs with a host and without a user name or password",
        ));
    }
    let s3 = service == "s3";
    if s3 {
        // S3 signs the path as sent, so send it in the one encoding S3 computes (`$` as `%24`).
        let path = s3_path(request.url().path());
        request.url_mut().set_path(&path);
    }
    // A retried request is signed afresh, not over its previous signature.
    for stale in ["authorization", "x-amz-date", "x-amz-security-token"] {
        request.headers_mut().remove(stale);
    }

    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.expose(),
        creds.secret_access_key.expose(),
        creds
            .session_token
            .as_ref()
            .map(|token| token.expose().to_owned()),
        None,
        "cordon",
    )
    .into();
    let mut settings = SigningSettings::default();
    if s3 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| AuthError::permanent(format!("SigV4 parameters: {e}")))?
        .into();

    let instructions = {
        let mut headers = Vec::with_capacity(request.headers().len());
        for (name, value) in request.headers() {
            let value = value.to_str().map_err(|_| {
                AuthError::permanent(format!(
                    "header `{name}` is not printable ASCII; SigV4 cannot sign it"
                ))
            })?;
            headers.push((name.as_str(), value));
        }
        let body = match request.body() {
            None => &[][..],
            Some(body) => body
                .as_bytes()
                .ok_or_else(|| AuthError::permanent("SigV4 cannot sign a streamed body"))?,
        };
        let mut url = request.url().clone();
        url.set_fragment(None);
        let method = request.method().as_str();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| AuthError::permanent(format!("SigV4 cannot sign this request: {e}")))?;
        let signed = sign(signable, &params)
            .map_err(|e| AuthError::permanent(format!("SigV4 signing failed: {e}")))?;
        signed.into_parts().0
    };
    for header in instructions.into_parts().0 {
        let invalid =
            || AuthError::permanent(format!("SigV4 made an invalid `{}` header", header.name()));
        let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(header.value()).map_err(|_| invalid())?;
        value.set_sensitive(
            header.sensitive() || name == AUTHORIZATION || name == "x-amz-security-token",
        );
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// The path with every byte outside the unreserved set and `/` percent-encoded once; an escape
/// already there (`%24`) stays as it is.
fn s3_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        match (b, escape) {
            (b'%', Some(hex)) => {
                out.push('%');
                out.extend(hex.iter().map(|h| h.to_ascii_uppercase() as char));
                i += 3;
                continue;
            }
            _ if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        i += 1;
    }
    out
}

/// The region in an AWS host name: `ec2.eu-west-1.amazonaws.com` → eu-west-1, `s3.us-east-2.amazonaws.com`,
/// `bucket.s3.us-west-2.amazonaws.com`, `sts.ap-south-1.amazonaws.com`; global hosts (`iam.amazonaws.com`,
/// `s3.amazonaws.com`) and non-AWS hosts → None.
pub fn aws_region_from_host(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let rest = [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"]
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))?;
    let last = rest.rsplit('.').next()?;
    // The region is the label before the domain, or the tail of a dash-style label
    // (`s3-us-west-2`, `s3-website-eu-west-1`); a bucket label further left is never read.
    std::iter::once(last)
        .chain(last.match_indices('-').map(|(at, _)| &last[at + 1..]))
        .find(|candidate| is_region(candidate))
        .map(str::to_owned)
}

/// `us-east-1`, `ap-southeast-4`, `us-gov-west-1`, `us-isob-east-1`, `cn-north-1`.
fn is_region(label: &str) -> bool {
    const DIRECTIONS: &str =
        "north south east west central northeast northwest southeast southwest";
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let parts: Vec<&str> = label.split('-').collect();
    match parts.as_slice() {
        [area, rest @ .., direction, number] if rest.len() <= 1 => {
            area.len() == 2
                && letters(area)
                && rest.iter().all(|part| letters(part))
                && DIRECTIONS.split(' ').any(|d| d == *direction)
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// How long a token request may take before it counts as a transport failure.
pub(crate) const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Access tokens cached per key (an OAuth scope) until shortly before they expire, shared by the
/// token providers (Entra ID in [`super::azure_credentials`], Google in [`super::gcp`]): concurrent callers for the same key
/// share one request, and callers that waited through a failed request take its error rather
/// than asking again at once.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<String, Arc<ScopeSlot>>>,
}

/// One scope's token. Callers queue on `state`, so only one request is in flight per scope.
#[derive(Default)]
struct ScopeSlot {
    /// Finished requests; a caller that waited through a failed one takes its error.
    requests: AtomicU64,
    state: tokio::sync::Mutex<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    token: Option<(Secret, Instant)>,
    last_error: Option<AuthError>,
}

impl TokenCache {
    /// The cached token for `key`, or a new one from `fetch` (the token and how long to reuse
    /// it, see [`cache_for`]).
    pub(crate) async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Secret, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), AuthError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let seen = slot.requests.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if let Some((token, until)) = &state.token
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        if slot.requests.load(Ordering::Acquire) != seen
            && let Some(error) = &state.last_error
        {
            return Err(error.clone());
        }
        let result = fetch().await;
        slot.requests.fetch_add(1, Ordering::Release);
        state.token = result
            .as_ref()
            .ok()
            .map(|(token, lifetime)| (token.clone(), Instant::now() + *lifetime));
        state.last_error = result.as_ref().err().cloned();
        result.map(|(token, _)| token)
    }
}

/// How long to reuse a token that expires in `expires_in` seconds: a minute less, but never
/// less than half its life, so a short-lived token is neither reused after it expires nor
/// thrown away at once.
pub(crate) fn cache_for(expires_in: u64) -> Duration {
    let secs = expires_in.min(24 * 3600);
    Duration::from_secs(secs.saturating_sub(60).max(secs / 2))
}

/// POSTs the token request `form` to `url` and reads the bearer token of the answer. `service`
/// names the token service in errors (`Entra ID`, `Google`) and `about` what the request was for
/// (` for ci@p.iam.gserviceaccount.com`, or nothing); `scrub` takes the request's credential out
/// of every message, and out of the answer before it is cut short, since an answer may echo the
/// request. Errors are classed by [`Failure`] (5xx/408/429/transport: retryable; other 4xx: not).
pub(crate) async fn post_token_form(
    http: &reqwest::Client,
    url: Url,
    form: String,
    service: &str,
    about: &str,
    scrub: impl Fn(String) -> String,
) -> Result<(Secret, Duration), AuthError> {
    let transport = |e: reqwest::Error| {
        let failure = Failure::from_transport(&e);
        AuthError {
            message: scrub(format!(
                "{service} token request{about} failed: {}",
                error_chain(&e.without_url())
            )),
            failure,
        }
    };
    let response = http
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .timeout(TOKEN_TIMEOUT)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let failure = Failure::from_response(status.as_u16(), response.headers());
    let body = scrub(response.text().await.map_err(transport)?);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if let Some(failure) = failure {
        return Err(AuthError {
            message: scrub(format!(
                "{service} refused the token request{about} ({status}){}",
                aad_error(&answer, &body)
            )),
            failure,
        });
    }
    bearer_token(&answer, service).map_err(|mut e| {
        e.message = scrub(e.message);
        e
    })
}

/// The bearer token of a token answer and how long to reuse it: `expires_in` (seconds), else
/// `expires_on` (epoch seconds); each a number or a string, as Azure's endpoints send them.
pub(crate) fn bearer_token(
    answer: &serde_json::Value,
    who: &str,
) -> Result<(Secret, Duration), AuthError> {
    let token = answer["access_token"]
        .as_str()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| AuthError::permanent(format!("{who} answered without an access_token")))?;
    if let Some(kind) = answer["token_type"].as_str()
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(AuthError::permanent(format!(
            "{who} issued a `{kind}` token, not a bearer token"
        )));
    }
    let number = |value: &serde_json::Value| match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expires_in = number(&answer["expires_in"])
        .or_else(|| number(&answer["expires_on"]).map(|on| on.saturating_sub(now)));
    Ok((Secret::new(token), cache_for(expires_in.unwrap_or(0))))
}

/// `: <error>: <error_description>` from an AAD error answer, else a short piece of the body.
pub(crate) fn aad_error(answer: &serde_json::Value, body: &str) -> String {
    let fields: Vec<&str> = ["error", "error_description"]
        .iter()
        .filter_map(|f| answer[f].as_str())
        .collect();
    let text = if fields.is_empty() {
        body.to_owned()
    } else {
        fields.join(": ")
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let text: String = words.join(" ").chars().take(600).collect();
    if text.is_empty() {
        text
    } else {
        format!(": {text}")
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The auth an integration's manifest names, with its credentials from the config.
pub enum Auth {
    None,
    AwsSigV4 {
        provider: Arc<super::aws_credentials::AwsProvider>,
        service: String,
    },
    /// Microsoft Entra ID tokens (an application or a managed identity), per tenant.
    AzureOAuth(Arc<AzureProvider>),
    /// Google OAuth 2.0 access tokens (a service-account key or the metadata server).
    GcpOAuth(Arc<super::gcp::GcpTokens>),
    Bearer(Secret),
    Basic {
        username: String,
        password: Secret,
    },
    ApiKey {
        header: String,
        key: Secret,
    },
    /// Kubernetes clusters, reached through `kube()` only.
    Kubernetes(Arc<crate::integrations::kubernetes::Clusters>),
}

impl Auth {
    /// Applies the auth to a request already at its final URL. `region`: the SigV4 signing region;
    /// `scope`: the OAuth scope for AzureOAuth (e.g. "https://management.azure.com/.default");
    /// `account`: the account of the resource, which picks the AWS role to assume or the Azure
    /// credential (an Azure subscription or tenant). Gives the identity that acted, when one was
    /// picked: the AWS role assumed, the Azure tenant entry used.
    pub async fn apply(
        &self,
        request: &mut reqwest::Request,
        region: &str,
        scope: &str,
        account: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        let (name, value) = match self {
            Auth::None => return Ok(None),
            Auth::Kubernetes(_) => {
                return Err(AuthError::permanent(
                    "auth `kubernetes` applies to kube() requests only",
                ));
            }
            Auth::AwsSigV4 { provider, service } => {
                let signing = provider.signing(account).await?;
                sign_sigv4(
                    request,
                    &signing.credentials,
                    region,
                    service,
                    SystemTime::now(),
                )?;
                return Ok(signing.role);
            }
            Auth::AzureOAuth(provider) => {
                if scope.is_empty() {
                    return Err(AuthError::permanent("azure_oauth needs an OAuth scope"));
                }
                let (token, acted_as) = provider.token(request.url(), account, scope).await?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        AuthError::permanent("Entra ID issued a token that is not a header value")
                    })?;
                value.set_sensitive(true);
                request.headers_mut().insert(AUTHORIZATION, value);
                return Ok(acted_as);
            }
            Auth::GcpOAuth(tokens) => (
                AUTHORIZATION,
                format!("Bearer {}", tokens.token().await?.expose()),
            ),
            Auth::Bearer(token) => (AUTHORIZATION, format!("Bearer {}", token.expose())),
            Auth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                (
                    AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                )
            }
            Auth::ApiKey { header, key } => {
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    AuthError::permanent(format!(
                        "`{header}` is not a valid header name for an API key"
                    ))
                })?;
                (name, key.expose().to_owned())
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            AuthError::permanent(format!(
                "the credential for the `{name}` header is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
        Ok(None)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::AwsSigV4 { .. } => "Auth::AwsSigV4",
            Auth::AzureOAuth(_) => "Auth::AzureOAuth",
            Auth::GcpOAuth(_) => "Auth::GcpOAuth",
            Auth::Bearer(_) => "Auth::Bearer",
            Auth::Basic { .. } => "Auth::Basic",
            Auth::ApiKey { .. } => "Auth::ApiKey",
            Auth::Kubernetes(_) => "Auth::Kubernetes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::{HeaderMap, Uri};
    use sha2::{Digest, Sha256};
    use url::Url;

    /// 2015-08-30T12:36:00Z, the time of every aws-signing-test-suite vector and the IAM example.
    const SUITE_TIME: u64 = 1_440_938_160;
    /// 2013-05-24T00:00:00Z, the time of the S3 API Reference examples.
    const S3_DOCS_TIME: u64 = 1_369_353_600;

    /// name, creds, service, method, headers, body, signed headers, signature, url
    type SuiteCase<'a> = (
        &'a str,
        &'a AwsCredentials,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    /// method, url, headers, body, signed headers, signature
    type S3Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
    );
    /// Each request's path, content type and form.
    type Seen = Arc<Mutex<Vec<(String, String, HashMap<String, String>)>>>;
    /// The fake token endpoint's answer (status, body) to its request number n.
    type Reply = fn(usize) -> (u16, String);

    fn creds(id: &str, secret: &str, token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }
    }

    fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Request {
        let mut builder = reqwest::Client::new().request(method.parse().unwrap(), url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if !body.is_empty() {
            builder = builder.body(body.to_owned());
        }
        builder.build().expect("request")
    }

    fn header<'a>(request: &'a reqwest::Request, name: &str) -> &'a str {
        request
            .headers()
            .get(name)
            .map_or("", |v| v.to_str().unwrap())
    }

    #[test]
    fn sigv4_matches_the_aws_signing_test_suite_and_the_iam_example() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let (suite, with_token) = (
            creds("AKIDEXAMPLE", secret, None),
            creds("AKIDEXAMPLE", secret, Some(token)),
        );
        let form_sha = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
        let form_headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "13"),
            ("x-amz-content-sha256", form_sha),
        ];
        let iam_headers = [(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        #[rustfmt::skip]
        let cases: [SuiteCase; 6] = [
            // aws-signing-test-suite v4/get-vanilla (the same expected header is asserted by
            // awslabs/aws-crt-php's SigningTest::testSigv4HeaderSigning).
            ("get-vanilla", &suite, "service", "GET", &[], "",
             "host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
             "https://example.amazonaws.com/"),
            // The rest from awslabs/aws-c-auth tests/aws-signing-test-suite/v4/<name>/header-signed-request.txt.
            ("get-vanilla-query-order-key-case", &suite, "service", "GET", &[], "",
             "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
             "https://example.amazonaws.com/?Param2=value2&Param1=value1"),
            ("post-vanilla", &suite, "service", "POST", &[], "",
             "host;x-amz-date", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
             "https://example.amazonaws.com/"),
            ("post-x-www-form-urlencoded", &suite, "service", "POST", &form_headers, "Param1=value1",
             "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
             "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
             "https://example.amazonaws.com/"),
            ("get-vanilla-with-session-token", &with_token, "service", "GET", &[], "",
             "host;x-amz-date;x-amz-security-token",
             "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
             "https://example.amazonaws.com/"),
            // AWS General Reference, "Create a signed AWS API request" (sigv4-calculate-signature):
            // IAM ListUsers; canonical request hash f536975d….
            ("iam ListUsers", &suite, "iam", "GET", &iam_headers, "",
             "content-type;host;x-amz-date", "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
             "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08"),
        ];
        for (name, creds, service, method, headers, body, signed, signature, url) in cases {
            let mut req = request(method, url, headers, body);
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(SUITE_TIME);
            sign_sigv4(&mut req, creds, "us-east-1", service, at).expect(name);
            let expected = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, \
                 SignedHeaders={signed}, Signature={signature}"
            );
            assert_eq!(header(&req, "authorization"), expected, "{name}");
            assert_eq!(header(&req, "x-amz-date"), "20150830T123600Z", "{name}");
            assert!(req.headers()["authorization"].is_sensitive(), "{name}");
        }
    }

    #[test]
    fn sigv4_for_s3_matches_the_s3_api_reference_examples() {
        // Amazon S3 API Reference, "Signature Calculations for the Authorization Header:
        // Transferring Payload in a Single Chunk" (sig-v4-header-based-auth): GET Object,
        // PUT Object, GET Bucket Lifecycle, GET Bucket (List Objects). The page prints the header
        // without spaces after the commas; the signatures are the ones asserted here.
        let docs = creds(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        );
        let put = [
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ];
        #[rustfmt::skip]
        let cases: [S3Case; 4] = [
            ("GET", "https://examplebucket.s3.amazonaws.com/test.txt", &[("Range", "bytes=0-9")], "",
             "host;range;x-amz-content-sha256;x-amz-date",
             "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
            // The key `test$file.text` is sent and signed as /test%24file.text, encoded once.
            ("PUT", "https://examplebucket.s3.amazonaws.com/test$file.text", &put, "Welcome to Amazon S3.",
             "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
             "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
            ("GET", "https://examplebucket.s3.amazonaws.com/?lifecycle", &[], "",
             "host;x-amz-content-sha256;x-amz-date",
             "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
            ("GET", "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", &[], "",
             "host;x-amz-content-sha256;x-amz-date",
             "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ];
        for (method, url, headers, body, signed, signature) in cases {
            let mut req = request(method, url, headers, body);
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(S3_DOCS_TIME);
            sign_sigv4(&mut req, &docs, "us-east-1", "s3", at).expect(url);
            let expected = format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders={signed}, Signature={signature}"
            );
            assert_eq!(header(&req, "authorization"), expected, "{url}");
            let body_sha = hex::encode(Sha256::digest(body.as_bytes()));
            assert_eq!(header(&req, "x-amz-content-sha256"), body_sha, "{url}");
        }
        // The PUT went out with the path it was signed with.
        let mut req = request(
            "PUT",
            "https://examplebucket.s3.amazonaws.com/test$file.text",
            &put,
            "x",
        );
        sign_sigv4(&mut req, &docs, "us-east-1", "s3", SystemTime::now()).unwrap();
        assert_eq!(req.url().path(), "/test%24file.text");
        assert_eq!(s3_path("/a b/%2fk+ey/é"), "/a%20b/%2Fk%2Bey/%C3%A9");
    }

    #[test]
    fn sigv4_sets_the_session_token_and_signs_again_on_a_retry() {
        let temporary = creds(
            "ASIAEXAMPLE",
            "secret-key-value",
            Some("session-token-value"),
        );
        let mut req = request(
            "PUT",
            "https://bucket.s3.eu-west-1.amazonaws.com/evidence/a.json",
            &[],
            "hello",
        );
        sign_sigv4(&mut req, &temporary, "eu-west-1", "s3", SystemTime::now()).unwrap();
        assert_eq!(header(&req, "x-amz-security-token"), "session-token-value");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        assert!(header(&req, "authorization").contains("x-amz-security-token"));
        assert_eq!(
            header(&req, "x-amz-content-sha256"),
            hex::encode(Sha256::digest(b"hello"))
        );

        // Signing the same request later (a retry) gives what signing it fresh would.
        let later = SystemTime::now() + Duration::from_secs(3600);
        sign_sigv4(&mut req, &temporary, "eu-west-1", "s3", later).unwrap();
        let mut fresh = request(
            "PUT",
            "https://bucket.s3.eu-west-1.amazonaws.com/evidence/a.json",
            &[],
            "hello",
        );
        sign_sigv4(&mut fresh, &temporary, "eu-west-1", "s3", later).unwrap();
        assert_eq!(req.headers(), fresh.headers());
        assert_eq!(req.headers().get_all("authorization").iter().count(), 1);

        // What cannot be signed is refused without a panic and without the secret.
        let mut latin = request("GET", "https://ec2.eu-west-1.amazonaws.com/", &[], "");
        latin
            .headers_mut()
            .insert("x-note", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        let error = sign_sigv4(
            &mut latin,
            &temporary,
            "eu-west-1",
            "ec2",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            error.message.contains("x-note") && !error.retryable(),
            "{error}"
        );
        let error = sign_sigv4(&mut fresh, &temporary, "", "ec2", SystemTime::now()).unwrap_err();
        assert!(!format!("{error:?}").contains("secret-key-value"));
    }

    #[test]
    fn region_comes_from_regional_aws_hosts_only() {
        for (host, region) in [
            ("ec2.eu-west-1.amazonaws.com", Some("eu-west-1")),
            ("s3.us-east-2.amazonaws.com", Some("us-east-2")),
            ("bucket.s3.us-west-2.amazonaws.com", Some("us-west-2")),
            ("my-bucket-1.s3.us-west-2.amazonaws.com", Some("us-west-2")),
            ("sts.ap-south-1.amazonaws.com", Some("ap-south-1")),
            (
                "ec2-fips.us-gov-west-1.amazonaws.com",
                Some("us-gov-west-1"),
            ),
            (
                "s3.dualstack.ap-southeast-4.amazonaws.com",
                Some("ap-southeast-4"),
            ),
            (
                "bucket.s3-website-eu-west-1.amazonaws.com",
                Some("eu-west-1"),
            ),
            ("s3-us-west-2.amazonaws.com", Some("us-west-2")),
            ("ec2.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("EC2.EU-CENTRAL-1.AMAZONAWS.COM.", Some("eu-central-1")),
            ("iam.amazonaws.com", None),
            ("s3.amazonaws.com", None),
            ("my-bucket-1.s3.amazonaws.com", None),
            ("amazonaws.com", None),
            ("ec2.eu-west-1.amazonaws.com.example.org", None),
            ("us-east-1.example.com", None),
            ("127.0.0.1", None),
            ("", None),
        ] {
            assert_eq!(aws_region_from_host(host).as_deref(), region, "{host}");
        }
    }

    const CLIENT_SECRET: &str = "client~secret+with/odd=chars";
    const SCOPE: &str = "https://management.azure.com/.default";

    /// A stand-in for the Entra ID token endpoint on 127.0.0.1: answers request n (from 0) with
    /// `reply(n)` after `delay`, and records each request's path, content type and form.
    struct FakeLogin {
        base: Url,
        seen: Seen,
    }

    impl FakeLogin {
        async fn start(reply: Reply, delay: Duration) -> FakeLogin {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = Arc::clone(&seen);
            let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
                let record = Arc::clone(&record);
                async move {
                    let content_type = headers
                        .get("content-type")
                        .map_or("", |v| v.to_str().unwrap())
                        .to_owned();
                    let form = url::form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                    let n = {
                        let mut seen = record.lock().unwrap();
                        seen.push((uri.path().to_owned(), content_type, form));
                        seen.len() - 1
                    };
                    tokio::time::sleep(delay).await;
                    let (status, body) = reply(n);
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            FakeLogin {
                base: Url::parse(&format!("http://{addr}/")).unwrap(),
                seen,
            }
        }

        fn tokens(&self) -> AzureTokens {
            let secret = Secret::new(CLIENT_SECRET);
            AzureTokens::new(
                reqwest::Client::new(),
                self.base.clone(),
                "tenant-1".into(),
                "client-1".into(),
                secret,
            )
        }

        fn count(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    fn token_answer(n: usize, expires_in: u64) -> (u16, String) {
        let answer = serde_json::json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": format!("tok-{n}")});
        (200, answer.to_string())
    }

    #[tokio::test]
    async fn azure_token_is_requested_with_the_client_credentials_and_cached_per_scope() {
        let login = FakeLogin::start(|n| token_answer(n, 3599), Duration::ZERO).await;
        let tokens = login.tokens();
        assert_eq!(tokens.token(SCOPE).await.unwrap().expose(), "tok-0");
        assert_eq!(tokens.token(SCOPE).await.unwrap().expose(), "tok-0");
        assert_eq!(
            login.count(),
            1,
            "the second call within expiry must come from the cache"
        );
        {
            let seen = login.seen.lock().unwrap();
            let (path, content_type, form) = &seen[0];
            assert_eq!(path, "/tenant-1/oauth2/v2.0/token");
            assert_eq!(content_type, "application/x-www-form-urlencoded");
            let expected = [
                ("grant_type", "client_credentials"),
                ("client_id", "client-1"),
                ("client_secret", CLIENT_SECRET),
                ("scope", SCOPE),
            ];
            let expected: HashMap<String, String> = expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(form, &expected);
        }
        let graph = tokens
            .token("https://graph.microsoft.com/.default")
            .await
            .unwrap();
        assert_eq!((graph.expose(), login.count()), ("tok-1", 2));

        // Applied as the Authorization header, marked sensitive.
        let mut req = request("GET", "https://management.azure.com/subscriptions", &[], "");
        Auth::AzureOAuth(Arc::new(tokens.into()))
            .apply(&mut req, "", SCOPE, None)
            .await
            .unwrap();
        assert_eq!(header(&req, "authorization"), "Bearer tok-0");
        assert!(req.headers()["authorization"].is_sensitive());
    }

    #[tokio::test]
    async fn azure_token_is_fetched_again_once_expired_and_once_for_concurrent_callers() {
        let login = FakeLogin::start(|n| token_answer(n, 1), Duration::ZERO).await;
        let tokens = login.tokens();
        assert_eq!(tokens.token(SCOPE).await.unwrap().expose(), "tok-0");
        assert_eq!(tokens.token(SCOPE).await.unwrap().expose(), "tok-1");
        assert_eq!(login.count(), 2);
        assert_eq!(cache_for(3599), Duration::from_secs(3539));
        assert_eq!(cache_for(90), Duration::from_secs(45));

        let slow = FakeLogin::start(|n| token_answer(n, 3599), Duration::from_millis(200)).await;
        let tokens = slow.tokens();
        let results = tokio::join!(
            tokens.token(SCOPE),
            tokens.token(SCOPE),
            tokens.token(SCOPE),
            tokens.token(SCOPE)
        );
        let results = [results.0, results.1, results.2, results.3];
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap().expose() == "tok-0"),
            "{results:?}"
        );
        assert_eq!(slow.count(), 1, "concurrent callers share one request");

        // ... and its failure: a token service that is down is not asked once per waiting caller.
        let down = FakeLogin::start(|_| (503, "down".into()), Duration::from_millis(200)).await;
        let tokens = down.tokens();
        let results = tokio::join!(
            tokens.token(SCOPE),
            tokens.token(SCOPE),
            tokens.token(SCOPE)
        );
        for result in [results.0, results.1, results.2] {
            assert!(result.unwrap_err().retryable());
        }
        assert_eq!(down.count(), 1);
        assert!(tokens.token(SCOPE).await.is_err());
        assert_eq!(down.count(), 2, "a later call asks again");
    }

    #[tokio::test]
    async fn azure_errors_say_what_aad_said_and_whether_to_retry_but_never_the_secret() {
        // An answer that echoes the secret back: it must not reach the message.
        let refused = FakeLogin::start(
            |_| {
                let description = format!("AADSTS7000215: Invalid client secret provided: {CLIENT_SECRET}.\r\nTrace ID: t-1");
                (400, serde_json::json!({"error": "invalid_client", "error_description": description}).to_string())
            },
            Duration::ZERO,
        )
        .await;
        let error = refused.tokens().token(SCOPE).await.unwrap_err();
        assert!(!error.retryable(), "{error}");
        assert!(
            error
                .message
                .contains("invalid_client: AADSTS7000215: Invalid client secret provided"),
            "{error}"
        );
        assert!(error.message.contains("Trace ID: t-1"), "{error}");
        assert!(!error.message.contains(CLIENT_SECRET), "{error}");

        let busy: [(u16, Reply); 2] = [
            (503, |_| (503, "Service Unavailable".into())),
            (429, |_| {
                (429, r#"{"error":"temporarily_unavailable"}"#.into())
            }),
        ];
        for (status, reply) in busy {
            let login = FakeLogin::start(reply, Duration::ZERO).await;
            let error = login.tokens().token(SCOPE).await.unwrap_err();
            assert!(
                error.retryable() && error.message.contains(&status.to_string()),
                "{error}"
            );
        }

        // Nothing listening: a transport error, retryable.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let tokens = AzureTokens::new(
            reqwest::Client::new(),
            base,
            "t".into(),
            "c".into(),
            Secret::new(CLIENT_SECRET),
        );
        let error = tokens.token(SCOPE).await.unwrap_err();
        assert!(
            error.retryable() && !error.message.contains(CLIENT_SECRET),
            "{error}"
        );
    }

    #[tokio::test]
    async fn static_credentials_set_their_header_and_never_print() {
        let cases = [
            (
                Auth::Bearer(Secret::new("bearer-value")),
                "authorization",
                "Bearer bearer-value".to_owned(),
            ),
            (
                Auth::Basic {
                    username: "svc".into(),
                    password: Secret::new("pass-value"),
                },
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("svc:pass-value")
                ),
            ),
            (
                Auth::ApiKey {
                    header: "Key".into(),
                    key: Secret::new("key-value"),
                },
                "key",
                "key-value".to_owned(),
            ),
        ];
        for (auth, name, expected) in cases {
            let mut req = request("GET", "https://api.example.com/v2/check", &[], "");
            auth.apply(&mut req, "", "", None).await.unwrap();
            assert_eq!(header(&req, name), expected, "{auth:?}");
            assert!(req.headers()[name].is_sensitive(), "{auth:?}");
            let printed = format!("{auth:?} {req:?}");
            for secret in ["bearer-value", "pass-value", "key-value"] {
                assert!(!printed.contains(secret), "{printed}");
            }
        }
        let keys: crate::config::Credentials = serde_yaml::from_str(
            "{ access_key_id: AKIDPRINT, secret_access_key: aws-secret-value, session_token: tok-value }",
        )
        .unwrap();
        let aws = Auth::AwsSigV4 {
            provider: Arc::new(
                super::super::aws_credentials::AwsProvider::new(
                    reqwest::Client::new(),
                    &keys,
                    Default::default(),
                )
                .unwrap(),
            ),
            service: "ec2".into(),
        };
        let mut req = request(
            "POST",
            "https://ec2.eu-west-1.amazonaws.com/",
            &[],
            "Action=DescribeInstances",
        );
        aws.apply(&mut req, "eu-west-1", "", None).await.unwrap();
        assert!(header(&req, "authorization").contains("/eu-west-1/ec2/aws4_request"));
        let printed = format!("{aws:?} {req:?}");
        assert!(
            !printed.contains("aws-secret-value") && !printed.contains("tok-value"),
            "{printed}"
        );

        let bad = Auth::ApiKey {
            header: "bad header".into(),
            key: Secret::new("key-value"),
        };
        let error = bad.apply(&mut req, "", "", None).await.unwrap_err();
        assert!(error.message.contains("bad header") && !error.message.contains("key-value"));
        let newline = Auth::Bearer(Secret::new("line\nbreak-value"));
        let error = newline.apply(&mut req, "", "", None).await.unwrap_err();
        assert!(!error.message.contains("break-value"), "{error}");
        let mut none = request("GET", "https://api.example.com/", &[], "");
        Auth::None.apply(&mut none, "", "", None).await.unwrap();
        assert!(none.headers().is_empty());
    }
}
