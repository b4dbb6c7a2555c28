//! AWS SNS HTTPS delivery: envelope parsing, signature verification, subscription confirmation.
//!
//! Amazon SNS delivers to an HTTPS endpoint by POSTing a JSON envelope whose `Message` field carries
//! the real alert (for GuardDuty, Security Hub, … an EventBridge event as a JSON string). The intake
//! server uses this module in four steps:
//!
//! 1. [`SnsEnvelope::looks_like_sns`] decides whether a request is an SNS delivery at all;
//! 2. [`SnsEnvelope::parse`] reads the envelope;
//! 3. [`SnsVerifier::verify`] checks its signature against the certificate named by
//!    `SigningCertURL`, after checking that URL really belongs to Amazon SNS;
//! 4. a `SubscriptionConfirmation` is answered with [`SnsVerifier::confirm_subscription`] (if the
//!    caller allows the topic); a `Notification`'s `message` goes on to the source's normalizer.
//!
//! This is the one place where Cordon parses before it verifies (STYLE.md habit 7): SNS puts the
//! signature *inside* the JSON, over a string rebuilt from some of its fields, so there are no raw
//! bytes to check first. Parsing is kept to reading strings and never trusts what it reads.
//!
//! The rules follow AWS's "Verifying the signatures of Amazon SNS messages".

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature as ring_sig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use url::{Host, Url};

/// How long one certificate fetch or subscription confirmation may take, connect to last byte.
/// SNS retries deliveries, so failing fast beats holding a request open.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest signing certificate we read. AWS's are about 2 KiB; the cap only stops a misbehaving
/// endpoint from making us buffer without end.
const MAX_CERT_BYTES: usize = 64 * 1024;

/// How many signing certificates stay cached. AWS uses one per region at a time and rotates them
/// rarely, so a handful is the steady state; the bound keeps memory fixed whatever URLs arrive.
const CERT_CACHE_CAPACITY: usize = 64;

/// Longest piece of sender-supplied text quoted back in an error message.
const MAX_QUOTED: usize = 64;

/// How far ahead of this server's clock an SNS `Timestamp` may be (clocks drift a little).
pub const FUTURE_SKEW: Duration = Duration::from_secs(300);

/// The header SNS sets on every HTTPS delivery.
const MESSAGE_TYPE_HEADER: &str = "x-amz-sns-message-type";

/// Why an SNS delivery was refused. Every message is meant to be returned to the sender as is
/// (in a 400/401 JSON error), so none quotes a `Token`, a `SubscribeURL` or anything of ours.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    /// The body is not a well-formed SNS envelope: not JSON, a field missing or of the wrong type.
    #[error("malformed SNS message: {0}")]
    Malformed(String),
    /// `SigningCertURL` (or `SubscribeURL`) does not point at Amazon SNS, so nothing was fetched.
    #[error("untrusted SNS URL: {0}")]
    UntrustedCertUrl(String),
    /// The signing certificate could not be fetched or read.
    #[error("could not get the SNS signing certificate: {0}")]
    CertFetch(String),
    /// The signature does not match the message and the certificate's key.
    #[error("SNS message signature does not verify")]
    BadSignature,
    /// A `SignatureVersion` other than "1" (SHA1) or "2" (SHA256).
    #[error("unsupported SNS SignatureVersion `{0}` (expected \"1\" or \"2\")")]
    UnsupportedSignatureVersion(String),
    /// The subscription could not be confirmed.
    #[error("SNS subscription confirmation failed: {0}")]
    Confirm(String),
    /// `Timestamp` is outside the accepted window: a copy kept and sent again later, or a clock
    /// far off.
    #[error("SNS message {0}")]
    Stale(String),
}

/// The kind of SNS delivery, from the envelope's `Type` (and the `x-amz-sns-message-type` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnsMessageType {
    /// A message published to the topic: the alert.
    Notification,
    /// SNS asks the endpoint to confirm a new subscription by visiting `SubscribeURL`.
    SubscriptionConfirmation,
    /// SNS tells the endpoint it has been unsubscribed.
    UnsubscribeConfirmation,
}

impl SnsMessageType {
    /// The name as SNS writes it in `Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnsMessageType::Notification => "Notification",
            SnsMessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsMessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    fn from_wire(s: &str) -> Option<SnsMessageType> {
        match s {
            "Notification" => Some(SnsMessageType::Notification),
            "SubscriptionConfirmation" => Some(SnsMessageType::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(SnsMessageType::UnsubscribeConfirmation),
            _ => None,
        }
    }
}

impl fmt::Display for SnsMessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SNS HTTPS delivery, as SNS sent it. Nothing here is trusted until
/// [`SnsVerifier::verify`] has returned `Ok`.
///
/// `Debug` leaves out `token` and `subscribe_url`: whoever holds them can confirm the
/// subscription, so they must not reach the logs.
#[derive(Clone)]
pub struct SnsEnvelope {
    /// `Type`.
    pub kind: SnsMessageType,
    /// `MessageId`: unique per message; SNS reuses it on retries, so it serves for dedup.
    pub message_id: String,
    /// `TopicArn`: the topic that sent this; the caller decides whether it is allowed.
    pub topic_arn: String,
    /// `Subject`, only present on notifications published with one.
    pub subject: Option<String>,
    /// `Message`: the payload (for alerts, usually a JSON document in a string).
    pub message: String,
    /// `Timestamp`, as SNS wrote it (ISO 8601); signed, so kept verbatim.
    pub timestamp: String,
    /// `SignatureVersion`: "1" (RSA with SHA1) or "2" (RSA with SHA256).
    pub signature_version: String,
    /// `Signature`: base64 RSA PKCS#1 v1.5 signature over [`SnsEnvelope::string_to_sign`].
    pub signature: String,
    /// `SigningCertURL`: where the PEM certificate holding the verifying key lives.
    pub signing_cert_url: String,
    /// `SubscribeURL`: present on (un)subscribe confirmations; carries the token in its query.
    pub subscribe_url: Option<String>,
    /// `Token`: present on (un)subscribe confirmations; a secret that confirms the subscription.
    pub token: Option<String>,
    /// `UnsubscribeURL`: present on notifications; not signed.
    pub unsubscribe_url: Option<String>,
}

impl fmt::Debug for SnsEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("SnsEnvelope")
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .field("topic_arn", &self.topic_arn)
            .field("subject", &self.subject)
            .field("message", &self.message)
            .field("timestamp", &self.timestamp)
            .field("signature_version", &self.signature_version)
            .field("signature", &self.signature)
            .field("signing_cert_url", &self.signing_cert_url)
            .field("subscribe_url", &redacted(&self.subscribe_url))
            .field("token", &redacted(&self.token))
            .field("unsubscribe_url", &self.unsubscribe_url)
            .finish()
    }
}

impl SnsEnvelope {
    /// Reads an SNS envelope from a request body.
    ///
    /// Checks only shape: the fields every delivery has, plus `SubscribeURL` and `Token` on
    /// confirmations (they are signed there, so a message without them could never verify).
    /// Fields SNS may add later are ignored. Errors say which field is wrong, never echo it.
    pub fn parse(body: &[u8]) -> Result<SnsEnvelope, SnsError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| SnsError::Malformed(format!("body is not valid JSON ({e})")))?;
        let Value::Object(mut obj) = value else {
            return Err(SnsError::Malformed("body is not a JSON object".into()));
        };

        let type_str = required(&mut obj, "Type")?;
        let kind = SnsMessageType::from_wire(&type_str).ok_or_else(|| {
            SnsError::Malformed(format!(
                "unknown Type `{}` (expected Notification, SubscriptionConfirmation or \
                 UnsubscribeConfirmation)",
                quote(&type_str)
            ))
        })?;

        let env = SnsEnvelope {
            kind,
            message_id: required(&mut obj, "MessageId")?,
            topic_arn: required(&mut obj, "TopicArn")?,
            subject: optional(&mut obj, "Subject")?,
            message: required(&mut obj, "Message")?,
            timestamp: required(&mut obj, "Timestamp")?,
            signature_version: required(&mut obj, "SignatureVersion")?,
            signature: required(&mut obj, "Signature")?,
            signing_cert_url: required(&mut obj, "SigningCertURL")?,
            subscribe_url: optional(&mut obj, "SubscribeURL")?,
            token: optional(&mut obj, "Token")?,
            unsubscribe_url: optional(&mut obj, "UnsubscribeURL")?,
        };
        env.check_confirmation_fields()?;
        Ok(env)
    }

    /// Whether a request is an SNS delivery: SNS always sends the `x-amz-sns-message-type`
    /// header, but a proxy may drop it, so a JSON object body with `Type`, `TopicArn` and
    /// `SignatureVersion` counts too. Cheap (the body is scanned, not copied) and never fails.
    pub fn looks_like_sns(headers: &HeaderMap, body: &[u8]) -> bool {
        if headers.contains_key(MESSAGE_TYPE_HEADER) {
            return true;
        }
        // serde would also fill a struct from a JSON array; only an object is an envelope.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return false;
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "Type")]
            kind: Option<IgnoredAny>,
            #[serde(rename = "TopicArn")]
            topic_arn: Option<IgnoredAny>,
            #[serde(rename = "SignatureVersion")]
            signature_version: Option<IgnoredAny>,
        }
        matches!(
            serde_json::from_slice::<Probe>(body),
            Ok(Probe {
                kind: Some(_),
                topic_arn: Some(_),
                signature_version: Some(_)
            })
        )
    }

    /// The exact bytes SNS signed: `Key\nvalue\n` for each signed field, in AWS's order.
    ///
    /// Notification: `Message`, `MessageId`, `Subject` (only if present), `Timestamp`,
    /// `TopicArn`, `Type`. Confirmations: `Message`, `MessageId`, `SubscribeURL`, `Timestamp`,
    /// `Token`, `TopicArn`, `Type`.
    pub fn string_to_sign(&self) -> String {
        let mut out = String::with_capacity(self.message.len() + 512);
        push_pair(&mut out, "Message", &self.message);
        push_pair(&mut out, "MessageId", &self.message_id);
        match self.kind {
            SnsMessageType::Notification => {
                if let Some(subject) = &self.subject {
                    push_pair(&mut out, "Subject", subject);
                }
                push_pair(&mut out, "Timestamp", &self.timestamp);
            }
            SnsMessageType::SubscriptionConfirmation | SnsMessageType::UnsubscribeConfirmation => {
                // `parse` guarantees both; a hand-built envelope without them cannot verify anyway.
                push_pair(
                    &mut out,
                    "SubscribeURL",
                    self.subscribe_url.as_deref().unwrap_or(""),
                );
                push_pair(&mut out, "Timestamp", &self.timestamp);
                push_pair(&mut out, "Token", self.token.as_deref().unwrap_or(""));
            }
        }
        push_pair(&mut out, "TopicArn", &self.topic_arn);
        push_pair(&mut out, "Type", self.kind.as_str());
        out
    }

    /// What checking the signature needs, each checked without fetching anything: the algorithm of
    /// the `SignatureVersion`, the decoded `Signature`, and the trusted `.pem` `SigningCertURL`.
    pub(crate) fn signature_parts(
        &self,
    ) -> Result<(&'static dyn SignatureVerificationAlgorithm, Vec<u8>, Url), SnsError> {
        let algorithm: &'static dyn SignatureVerificationAlgorithm =
            match self.signature_version.as_str() {
                "1" => &RSA_PKCS1_SHA1,
                "2" => &RSA_PKCS1_SHA256,
                other => return Err(SnsError::UnsupportedSignatureVersion(quote(other))),
            };
        self.check_confirmation_fields()?;
        let signature = BASE64
            .decode(self.signature.as_bytes())
            .map_err(|_| SnsError::Malformed("`Signature` is not valid base64".into()))?;

        let cert_url = trusted_sns_url("SigningCertURL", &self.signing_cert_url)?;
        // Every certificate AWS serves there is a .pem; other paths on the SNS host are API
        // calls, and there is no reason to let a sender make us call them.
        if !cert_url.path().ends_with(".pem") {
            return Err(SnsError::UntrustedCertUrl(
                "SigningCertURL must point to a .pem certificate".into(),
            ));
        }
        Ok((algorithm, signature, cert_url))
    }

    /// When the message was sent (its signed `Timestamp`), refused when it is older than `window`
    /// or more than [`FUTURE_SKEW`] ahead of `now`.
    pub fn sent_within(
        &self,
        window: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>, SnsError> {
        let sent = chrono::DateTime::parse_from_rfc3339(&self.timestamp)
            .map_err(|_| SnsError::Malformed("`Timestamp` is not an ISO 8601 time".into()))?
            .to_utc();
        let age = now.signed_duration_since(sent);
        if age > chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX) {
            return Err(SnsError::Stale(format!(
                "was sent at {}, longer ago than the replay window of {} s",
                self.timestamp,
                window.as_secs()
            )));
        }
        if -age > chrono::TimeDelta::from_std(FUTURE_SKEW).unwrap_or(chrono::TimeDelta::MAX) {
            return Err(SnsError::Stale(format!(
                "claims to be sent at {}, more than {} s from now",
                self.timestamp,
                FUTURE_SKEW.as_secs()
            )));
        }
        Ok(sent)
    }

    fn check_confirmation_fields(&self) -> Result<(), SnsError> {
        if self.kind == SnsMessageType::Notification {
            return Ok(());
        }
        for (present, key) in [
            (self.subscribe_url.is_some(), "SubscribeURL"),
            (self.token.is_some(), "Token"),
        ] {
            if !present {
                return Err(SnsError::Malformed(format!(
                    "a {} needs `{key}`",
                    self.kind
                )));
            }
        }
        Ok(())
    }
}

fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('\n');
    out.push_str(value);
    out.push('\n');
}

/// Takes a string field out of the envelope (moving, so a large `Message` is not copied).
/// `null` counts as absent.
fn optional(obj: &mut Map<String, Value>, key: &'static str) -> Result<Option<String>, SnsError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SnsError::Malformed(format!("`{key}` must be a string"))),
    }
}

fn required(obj: &mut Map<String, Value>, key: &'static str) -> Result<String, SnsError> {
    optional(obj, key)?.ok_or_else(|| SnsError::Malformed(format!("missing `{key}`")))
}

/// Cuts sender-supplied text to a length fit for an error message, on a char boundary.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Checks SNS signatures and confirms subscriptions. Build one at startup and share it (in an
/// `Arc` in axum `State`): it caches the signing certificates it fetches.
///
/// Trust rests on the certificate URL: it must be `https://sns.<region>.amazonaws.com/…`
/// (or `….amazonaws.com.cn` in China), checked before anything is fetched, and the fetch goes
/// over TLS verified by the given client. Anyone can *send* an envelope naming such a URL, but
/// only AWS holds the key for the certificate found there.
pub struct SnsVerifier {
    http: reqwest::Client,
    endpoint_override: Option<Url>,
    certs: Mutex<CertCache>,
}

impl fmt::Debug for SnsVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnsVerifier")
            .field(
                "endpoint_override",
                &self.endpoint_override.as_ref().map(Url::as_str),
            )
            .field("cached_certs", &self.cache().len())
            .finish_non_exhaustive()
    }
}

impl SnsVerifier {
    /// Makes a verifier that fetches with `http` (its TLS settings, proxy and redirect policy
    /// apply; each request also gets a 5 s timeout).
    ///
    /// `endpoint_override` is for tests and air-gapped deployments that reach SNS through a
    /// proxy or mirror: when `Some(base)`, the trust check still applies to the URL *in the
    /// message* (so it must still name `sns.<region>.amazonaws.com`), but the certificate and
    /// `SubscribeURL` requests go to `base`'s scheme, host and port, keeping the original path
    /// and query. With `None`, requests go to the URL in the message.
    pub fn new(http: reqwest::Client, endpoint_override: Option<Url>) -> SnsVerifier {
        SnsVerifier {
            http,
            endpoint_override,
            certs: Mutex::new(CertCache::default()),
        }
    }

    /// Checks the envelope's signature: version, then `SigningCertURL` trust, then the
    /// certificate (from cache, or fetched once), then RSA PKCS#1 v1.5 with SHA1 (version "1")
    /// or SHA256 (version "2") over [`SnsEnvelope::string_to_sign`].
    ///
    /// Does not judge the topic or the timestamp: those are the caller's policy.
    pub async fn verify(&self, env: &SnsEnvelope) -> Result<(), SnsError> {
        let (algorithm, signature, cert_url) = env.signature_parts()?;
        let cert = self.certificate(&cert_url).await?;
        let end_entity = webpki::EndEntityCert::try_from(cert.as_ref()).map_err(|_| {
            SnsError::CertFetch("the signing certificate could not be parsed".into())
        })?;
        end_entity
            .verify_signature(algorithm, env.string_to_sign().as_bytes(), &signature)
            .map_err(|_| SnsError::BadSignature)
    }

    /// Confirms a subscription by GETting its `SubscribeURL` (after the same trust check as
    /// certificate URLs). Only a `SubscriptionConfirmation` can be confirmed.
    ///
    /// Call [`SnsVerifier::verify`] first and decide whether the topic is wanted: this method
    /// does neither.
    pub async fn confirm_subscription(&self, env: &SnsEnvelope) -> Result<(), SnsError> {
        if env.kind != SnsMessageType::SubscriptionConfirmation {
            return Err(SnsError::Confirm(format!(
                "only a SubscriptionConfirmation can be confirmed, this is a {}",
                env.kind
            )));
        }
        let raw = env.subscribe_url.as_deref().ok_or_else(|| {
            SnsError::Malformed("a SubscriptionConfirmation needs `SubscribeURL`".into())
        })?;
        let url = trusted_sns_url("SubscribeURL", raw)?;

        // The URL holds the token: log the topic only.
        tracing::debug!(topic_arn = %env.topic_arn, "confirming SNS subscription");
        let response = self
            .http
            .get(self.fetch_url(&url))
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| SnsError::Confirm(describe_request_error(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(SnsError::Confirm(format!(
                "SNS answered HTTP {}",
                status.as_u16()
            )));
        }
        Ok(())
    }

    /// The certificate at `url`, from the cache or fetched. Concurrent misses may both fetch;
    /// that costs one extra request and keeps the lock out of the `.await`.
    async fn certificate(&self, url: &Url) -> Result<Arc<CertificateDer<'static>>, SnsError> {
        if let Some(cert) = self.cache().get(url.as_str()) {
            return Ok(cert);
        }
        tracing::debug!(url = %url, "fetching SNS signing certificate");
        let pem = self.fetch_certificate_pem(url).await?;
        let der = CertificateDer::from_pem_slice(&pem).map_err(|_| {
            SnsError::CertFetch("SigningCertURL did not return a PEM certificate".into())
        })?;
        // Only a certificate we can use is cached, so a bad answer is retried next time.
        webpki::EndEntityCert::try_from(&der).map_err(|_| {
            SnsError::CertFetch("the signing certificate could not be parsed".into())
        })?;
        let cert = Arc::new(der);
        self.cache()
            .insert(url.as_str().to_owned(), Arc::clone(&cert));
        Ok(cert)
    }

    async fn fetch_certificate_pem(&self, url: &Url) -> Result<Vec<u8>, SnsError> {
        let fetch_err = |e: reqwest::Error| SnsError::CertFetch(describe_request_error(e));
        let mut response = self
            .http
            .get(self.fetch_url(url))
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(fetch_err)?;
        let status = response.status();
        if !status.is_success() {
            return Err(SnsError::CertFetch(format!(
                "SigningCertURL answered HTTP {}",
                status.as_u16()
            )));
        }
        let too_large = || {
            SnsError::CertFetch(format!(
                "the certificate is larger than {MAX_CERT_BYTES} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_CERT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_err)? {
            if body.len() + chunk.len() > MAX_CERT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Where a request for a trusted SNS URL actually goes (see [`SnsVerifier::new`]).
    fn fetch_url(&self, original: &Url) -> Url {
        match &self.endpoint_override {
            Some(base) => {
                let mut url = base.clone();
                url.set_path(original.path());
                url.set_query(original.query());
                url.set_fragment(None);
                url
            }
            None => original.clone(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, CertCache> {
        // A panic elsewhere while holding the lock leaves the map consistent (every operation
        // on it is a single insert/remove), so a poisoned lock is still safe to use.
        self.certs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A reqwest error as text for an error message: without its URL (a `SubscribeURL` carries the
/// token) but with its cause, since "error sending request" alone helps nobody.
fn describe_request_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", FETCH_TIMEOUT.as_secs());
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Parses `raw` and checks it is an Amazon SNS URL we may fetch: `https`, host
/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, no user information, no port
/// but 443. `field` names the envelope field in the error.
fn trusted_sns_url(field: &str, raw: &str) -> Result<Url, SnsError> {
    let untrusted = |why: String| SnsError::UntrustedCertUrl(format!("{field} {why}"));
    let url = Url::parse(raw).map_err(|_| untrusted("is not a valid URL".into()))?;
    if url.scheme() != "https" {
        return Err(untrusted("must use https".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(untrusted("must not contain user information".into()));
    }
    // `url` drops the scheme's default port, so an explicit :443 reads as None here.
    if url.port().is_some_and(|port| port != 443) {
        return Err(untrusted("must not name a port other than 443".into()));
    }
    match url.host() {
        Some(Host::Domain(host)) if is_sns_host(host) => Ok(url),
        Some(host) => Err(untrusted(format!(
            "host `{}` is not an Amazon SNS endpoint (sns.<region>.amazonaws.com)",
            quote(&host.to_string())
        ))),
        None => Err(untrusted("has no host".into())),
    }
}

/// Exactly `sns.<region>.amazonaws.com` (commercial and GovCloud regions, `us-gov-west-1`) or
/// `sns.<cn region>.amazonaws.com.cn` (China), a region being `<area>[-gov]-<direction>-<n>`
/// (`url` has already lowercased the host). Anything else under `amazonaws.com`, where other
/// customers' names live, is refused.
fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    if let Some(region) = rest.strip_suffix(".amazonaws.com.cn") {
        return region.starts_with("cn-") && is_region(region);
    }
    rest.strip_suffix(".amazonaws.com")
        .is_some_and(|region| !region.starts_with("cn-") && is_region(region))
}

/// An AWS region name: `us-east-1`, `ap-southeast-2`, `us-gov-west-1`, `cn-northwest-1`.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (area, middle, number) = match parts.as_slice() {
        [area, direction, number] => (area, vec![*direction], number),
        [area, "gov", direction, number] => (area, vec!["gov", *direction], number),
        _ => return false,
    };
    area.len() == 2
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && middle
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Signing certificates by URL, oldest evicted first once full.
#[derive(Debug, Default)]
struct CertCache {
    certs: HashMap<String, Arc<CertificateDer<'static>>>,
    order: VecDeque<String>,
}

impl CertCache {
    fn get(&self, url: &str) -> Option<Arc<CertificateDer<'static>>> {
        self.certs.get(url).cloned()
    }

    fn insert(&mut self, url: String, cert: Arc<CertificateDer<'static>>) {
        if self.certs.insert(url.clone(), cert).is_some() {
            return;
        }
        self.order.push_back(url);
        while self.order.len() > CERT_CACHE_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.certs.remove(&oldest);
            }
        }
    }

    fn len(&self) -> usize {
        self.certs.len()
    }
}

/// RSA PKCS#1 v1.5 verification backed by *ring*, shaped as webpki wants so it can check a
/// signature with a certificate's public key. Written here because webpki ships no SHA1
/// algorithm (SNS SignatureVersion 1 needs one), and for SHA256 it keeps us off webpki's
/// optional `ring` feature.
#[derive(Debug)]
struct RingRsaPkcs1 {
    signature_alg_id: AlgorithmIdentifier,
    verification: &'static dyn ring_sig::VerificationAlgorithm,
}

impl SignatureVerificationAlgorithm for RingRsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring_sig::UnparsedPublicKey::new(self.verification, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }
}

/// SignatureVersion "1".
static RSA_PKCS1_SHA1: RingRsaPkcs1 = RingRsaPkcs1 {
    // DER of `sha1WithRSAEncryption` (OID 1.2.840.113549.1.1.5, NULL parameters), which
    // pki-types does not define. webpki only reads it to describe errors when checking a plain
    // signature; it is not parsed.
    signature_alg_id: AlgorithmIdentifier::from_slice(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
    ]),
    verification: &ring_sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
};

/// SignatureVersion "2".
static RSA_PKCS1_SHA256: RingRsaPkcs1 = RingRsaPkcs1 {
    signature_alg_id: alg_id::RSA_PKCS1_SHA256,
    verification: &ring_sig::RSA_PKCS1_2048_8192_SHA256,
};

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::OnceLock;

    use axum::Router;
    use axum::http::{StatusCode, Uri};
    use rsa::RsaPrivateKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use serde_json::json;

    const TEST_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sns/");
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/alerts/aws_guardduty/sns_wrapped_eventbridge_ec2_sshbruteforce_sample.json"
    );
    const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:cordon-alerts";
    const TOKEN: &str = "2336412f37fb687f5d51e6e2425secret-token";

    fn load_key(file: &str) -> RsaPrivateKey {
        let pem = std::fs::read_to_string(format!("{TEST_DATA}{file}")).expect("test key");
        RsaPrivateKey::from_pkcs8_pem(&pem).expect("PKCS#8 test key")
    }

    fn signing_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| load_key("test-signing-key.pem"))
    }

    fn other_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| load_key("test-other-key.pem"))
    }

    fn sign(key: &RsaPrivateKey, version: &str, msg: &[u8]) -> String {
        let sig = match version {
            "1" => SigningKey::<sha1::Sha1>::new(key.clone())
                .sign(msg)
                .to_vec(),
            _ => SigningKey::<rsa::sha2::Sha256>::new(key.clone())
                .sign(msg)
                .to_vec(),
        };
        BASE64.encode(sig)
    }

    /// Signs a JSON envelope as SNS would (filling `Signature`), then parses it back.
    fn signed(mut body: Value, key: &RsaPrivateKey) -> SnsEnvelope {
        body["Signature"] = json!("placeholder");
        let env = SnsEnvelope::parse(body.to_string().as_bytes()).expect("test envelope parses");
        body["Signature"] = json!(sign(
            key,
            &env.signature_version,
            env.string_to_sign().as_bytes()
        ));
        SnsEnvelope::parse(body.to_string().as_bytes()).expect("signed envelope parses")
    }

    fn notification_json(version: &str, subject: Option<&str>) -> Value {
        let mut body = json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": TOPIC,
            "Message": "{\"detail-type\":\"GuardDuty Finding\",\"detail\":{\"severity\":8}}\nsecond line",
            "Timestamp": "2024-05-01T12:00:00.000Z",
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        });
        if let Some(subject) = subject {
            body["Subject"] = json!(subject);
        }
        body
    }

    fn confirmation_json(kind: &str, subscribe_url: &str) -> Value {
        json!({
            "Type": kind,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": TOKEN,
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
            "SubscribeURL": subscribe_url,
            "Timestamp": "2024-05-01T12:00:00.000Z",
            "SignatureVersion": "1",
            "SigningCertURL": CERT_URL,
        })
    }

    /// A stand-in for SNS on 127.0.0.1: serves the test certificate for any `*.pem` path
    /// (404 for `/missing.pem`), 403 for `/forbidden`, 200 otherwise, and records every request.
    struct FakeSns {
        base: Url,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl FakeSns {
        async fn start() -> FakeSns {
            let requests = Arc::new(Mutex::new(Vec::new()));
            let cert =
                std::fs::read(format!("{TEST_DATA}test-signing-cert.pem")).expect("test cert");
            let seen = Arc::clone(&requests);
            let app = Router::new().fallback(move |uri: Uri| {
                let seen = Arc::clone(&seen);
                let cert = cert.clone();
                async move {
                    seen.lock().unwrap().push(uri.to_string());
                    match uri.path() {
                        "/missing.pem" => (StatusCode::NOT_FOUND, Vec::new()),
                        "/forbidden" => (StatusCode::FORBIDDEN, b"<Error/>".to_vec()),
                        p if p.ends_with(".pem") => (StatusCode::OK, cert),
                        _ => (StatusCode::OK, b"<ConfirmSubscriptionResponse/>".to_vec()),
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, app).await });
            let base = Url::parse(&format!("http://{addr}/")).expect("base url");
            FakeSns { base, requests }
        }

        fn verifier(&self) -> SnsVerifier {
            SnsVerifier::new(reqwest::Client::new(), Some(self.base.clone()))
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn valid_v1_and_v2_signatures_verify_with_and_without_subject() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        for version in ["1", "2"] {
            for subject in [Some("GuardDuty finding"), None] {
                let env = signed(notification_json(version, subject), signing_key());
                assert_eq!(env.subject.as_deref(), subject);
                let result = verifier.verify(&env).await;
                assert!(
                    result.is_ok(),
                    "version {version}, subject {subject:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn string_to_sign_follows_aws_field_order() {
        let mut body = notification_json("1", Some("Hi"));
        body["Signature"] = json!("x");
        body["Message"] = json!("m");
        let env = SnsEnvelope::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            env.string_to_sign(),
            "Message\nm\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nHi\n\
             Timestamp\n2024-05-01T12:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:123456789012:cordon-alerts\n\
             Type\nNotification\n"
        );

        body.as_object_mut().unwrap().remove("Subject");
        let env = SnsEnvelope::parse(body.to_string().as_bytes()).unwrap();
        assert!(!env.string_to_sign().contains("Subject"));

        let mut body = confirmation_json(
            "SubscriptionConfirmation",
            "https://sns.us-east-1.amazonaws.com/?a=b",
        );
        body["Signature"] = json!("x");
        body["Message"] = json!("m");
        let env = SnsEnvelope::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            env.string_to_sign(),
            format!(
                "Message\nm\nMessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n\
                 SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?a=b\n\
                 Timestamp\n2024-05-01T12:00:00.000Z\nToken\n{TOKEN}\nTopicArn\n{TOPIC}\n\
                 Type\nSubscriptionConfirmation\n"
            )
        );
    }

    #[tokio::test]
    async fn tampered_message_fails() {
        let sns = FakeSns::start().await;
        let mut env = signed(notification_json("2", None), signing_key());
        env.message = env.message.replace("\"severity\":8", "\"severity\":0");
        assert!(matches!(
            sns.verifier().verify(&env).await,
            Err(SnsError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn dropping_the_subject_after_signing_fails() {
        let sns = FakeSns::start().await;
        let mut env = signed(notification_json("1", Some("Important")), signing_key());
        env.subject = None;
        assert!(matches!(
            sns.verifier().verify(&env).await,
            Err(SnsError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn signature_from_another_key_fails() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        for version in ["1", "2"] {
            let env = signed(notification_json(version, None), other_key());
            assert!(matches!(
                verifier.verify(&env).await,
                Err(SnsError::BadSignature)
            ));
        }
    }

    #[tokio::test]
    async fn signature_version_made_for_the_other_hash_fails() {
        // Signed with SHA256 but claiming version 1: the hash is part of what is checked.
        let sns = FakeSns::start().await;
        let mut env = signed(notification_json("2", None), signing_key());
        env.signature_version = "1".into();
        assert!(matches!(
            sns.verifier().verify(&env).await,
            Err(SnsError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn unknown_signature_version_is_rejected_before_any_fetch() {
        let sns = FakeSns::start().await;
        let env = signed(notification_json("3", None), signing_key());
        let err = sns.verifier().verify(&env).await.unwrap_err();
        assert!(
            matches!(&err, SnsError::UnsupportedSignatureVersion(v) if v == "3"),
            "{err:?}"
        );
        assert!(sns.requests().is_empty());
    }

    #[tokio::test]
    async fn untrusted_cert_urls_are_rejected_before_any_fetch() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        for url in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-test.pem",
            "https://evil.com/SimpleNotificationService-test.pem",
            "https://user:pass@sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-test.pem",
            "https://sns.evil.com.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns..amazonaws.com/SimpleNotificationService-test.pem",
            "https://sqs.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.a.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.attacker-bucket.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.us-east-1-evil.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-test.pem",
            "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://x.sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-test.pem",
            "https://127.0.0.1/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com/?Action=ListTopics",
            "not a url",
            "",
        ] {
            let mut body = notification_json("1", None);
            body["SigningCertURL"] = json!(url);
            let env = signed(body, signing_key());
            let result = verifier.verify(&env).await;
            assert!(
                matches!(result, Err(SnsError::UntrustedCertUrl(_))),
                "{url}: {result:?}"
            );
        }
        assert!(sns.requests().is_empty(), "fetched: {:?}", sns.requests());
    }

    #[test]
    fn aws_sns_hosts_are_trusted() {
        for url in [
            CERT_URL,
            "https://sns.us-gov-west-1.amazonaws.com/a.pem",
            "https://sns.us-gov-east-1.amazonaws.com/a.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/a.pem",
            "https://sns.cn-northwest-1.amazonaws.com.cn/a.pem",
            "https://sns.ap-southeast-2.amazonaws.com/a.pem",
            "https://sns.eu-west-3.amazonaws.com:443/a.pem",
            "https://SNS.AP-SOUTHEAST-2.AMAZONAWS.COM/a.pem",
        ] {
            assert!(trusted_sns_url("SigningCertURL", url).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_timestamps_inside_the_window_are_accepted() {
        let mut env = signed(notification_json("2", None), signing_key());
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let hour = Duration::from_secs(3600);
        for (timestamp, fresh) in [
            ("2026-12-01T12:00:00.000Z", true),
            ("2026-12-01T11:00:00.000Z", true),
            ("2026-12-01T10:59:59.999Z", false),
            ("2026-12-01T12:05:00.000Z", true),
            ("2026-12-01T12:05:01.000Z", false),
            ("2025-01-01T00:00:00.000Z", false),
        ] {
            env.timestamp = timestamp.to_owned();
            let result = env.sent_within(hour, now);
            assert_eq!(result.is_ok(), fresh, "{timestamp}: {result:?}");
            if let Err(e) = result {
                assert!(matches!(e, SnsError::Stale(_)), "{e}");
            }
        }
        env.timestamp = "yesterday".into();
        assert!(matches!(
            env.sent_within(hour, now),
            Err(SnsError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn certificate_is_fetched_once_for_a_burst() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        for version in ["1", "2", "1"] {
            let env = signed(notification_json(version, None), signing_key());
            verifier.verify(&env).await.unwrap();
        }
        assert_eq!(
            sns.requests(),
            vec!["/SimpleNotificationService-test.pem".to_string()]
        );
    }

    #[tokio::test]
    async fn failed_certificate_fetch_is_reported_and_not_cached() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        let mut body = notification_json("1", None);
        body["SigningCertURL"] = json!("https://sns.us-east-1.amazonaws.com/missing.pem");
        let env = signed(body, signing_key());
        for _ in 0..2 {
            let err = verifier.verify(&env).await.unwrap_err();
            assert!(
                matches!(&err, SnsError::CertFetch(m) if m.contains("404")),
                "{err:?}"
            );
        }
        assert_eq!(sns.requests().len(), 2);
    }

    #[tokio::test]
    async fn confirmation_gets_the_subscribe_url_path_and_query() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        let subscribe = format!(
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={TOKEN}"
        );
        let env = signed(
            confirmation_json("SubscriptionConfirmation", &subscribe),
            signing_key(),
        );
        verifier.verify(&env).await.unwrap();
        verifier.confirm_subscription(&env).await.unwrap();
        let requests = sns.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(
            requests[1],
            format!("/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={TOKEN}")
        );
    }

    #[tokio::test]
    async fn refused_confirmation_reports_the_status_but_not_the_token() {
        let sns = FakeSns::start().await;
        let subscribe = format!("https://sns.us-east-1.amazonaws.com/forbidden?Token={TOKEN}");
        let env = signed(
            confirmation_json("SubscriptionConfirmation", &subscribe),
            signing_key(),
        );
        let err = sns.verifier().confirm_subscription(&env).await.unwrap_err();
        assert!(matches!(err, SnsError::Confirm(_)), "{err:?}");
        assert!(err.to_string().contains("403"), "{err}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }

    #[tokio::test]
    async fn unreachable_endpoint_error_does_not_leak_the_token() {
        // Bind then drop a listener to get a port nothing answers on.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let verifier = SnsVerifier::new(reqwest::Client::new(), Some(base));
        let subscribe = format!("https://sns.us-east-1.amazonaws.com/?Token={TOKEN}");
        let env = signed(
            confirmation_json("SubscriptionConfirmation", &subscribe),
            signing_key(),
        );
        let err = verifier.confirm_subscription(&env).await.unwrap_err();
        assert!(matches!(err, SnsError::Confirm(_)), "{err:?}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }

    #[tokio::test]
    async fn only_subscription_confirmations_are_confirmed() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        let mut notification = signed(notification_json("1", None), signing_key());
        // Even a notification that somehow carries a SubscribeURL is not followed.
        notification.subscribe_url = Some("https://sns.us-east-1.amazonaws.com/?x=1".into());
        let unsubscribe = signed(
            confirmation_json(
                "UnsubscribeConfirmation",
                "https://sns.us-east-1.amazonaws.com/?x=2",
            ),
            signing_key(),
        );
        for env in [notification, unsubscribe] {
            let result = verifier.confirm_subscription(&env).await;
            assert!(matches!(result, Err(SnsError::Confirm(_))), "{result:?}");
        }
        assert!(sns.requests().is_empty());
    }

    #[tokio::test]
    async fn untrusted_subscribe_url_is_not_visited() {
        let sns = FakeSns::start().await;
        let verifier = sns.verifier();
        for url in [
            "https://evil.com/?Action=ConfirmSubscription",
            "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "https://sns.us-east-1.amazonaws.com:8443/?Action=ConfirmSubscription",
        ] {
            let env = signed(
                confirmation_json("SubscriptionConfirmation", url),
                signing_key(),
            );
            let result = verifier.confirm_subscription(&env).await;
            assert!(
                matches!(result, Err(SnsError::UntrustedCertUrl(_))),
                "{url}: {result:?}"
            );
        }
        assert!(sns.requests().is_empty());
    }

    #[tokio::test]
    async fn bad_base64_signature_is_malformed_and_fetches_nothing() {
        let sns = FakeSns::start().await;
        let mut env = signed(notification_json("1", None), signing_key());
        env.signature = "not base64!".into();
        let result = sns.verifier().verify(&env).await;
        assert!(matches!(result, Err(SnsError::Malformed(_))), "{result:?}");
        assert!(sns.requests().is_empty());
    }

    #[test]
    fn malformed_envelopes_are_rejected_with_a_clear_reason() {
        let mut missing_signature = notification_json("1", None);
        missing_signature
            .as_object_mut()
            .unwrap()
            .remove("Signature");
        let mut wrong_type = notification_json("1", None);
        wrong_type["Signature"] = json!("x");
        wrong_type["Message"] = json!({"not": "a string"});
        let mut unknown_kind = notification_json("1", None);
        unknown_kind["Signature"] = json!("x");
        unknown_kind["Type"] = json!("Surprise");
        let mut no_token = confirmation_json(
            "SubscriptionConfirmation",
            "https://sns.us-east-1.amazonaws.com/",
        );
        no_token["Signature"] = json!("x");
        no_token.as_object_mut().unwrap().remove("Token");

        let cases = [
            (missing_signature.to_string(), "missing `Signature`"),
            ("this is not json".to_string(), "not valid JSON"),
            ("[1, 2, 3]".to_string(), "not a JSON object"),
            (String::new(), "not valid JSON"),
            (wrong_type.to_string(), "`Message` must be a string"),
            (unknown_kind.to_string(), "unknown Type `Surprise`"),
            (no_token.to_string(), "needs `Token`"),
        ];
        for (body, expected) in cases {
            match SnsEnvelope::parse(body.as_bytes()) {
                Err(SnsError::Malformed(m)) => {
                    assert!(m.contains(expected), "{m:?} lacks {expected:?}")
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_never_panics_on_truncated_or_odd_input() {
        let mut body = confirmation_json(
            "SubscriptionConfirmation",
            "https://sns.us-east-1.amazonaws.com/",
        );
        body["Signature"] = json!("x");
        body["Message"] = json!("é🦀\u{0}");
        let text = body.to_string();
        for end in 0..=text.len() {
            let _ = SnsEnvelope::parse(&text.as_bytes()[..end]);
            let _ = SnsEnvelope::looks_like_sns(&HeaderMap::new(), &text.as_bytes()[..end]);
        }
        let _ = SnsEnvelope::parse(&[0xff, 0xfe, b'{']);
        assert!(quote(&"é".repeat(200)).chars().count() <= MAX_QUOTED + 1);
    }

    #[test]
    fn looks_like_sns_by_header_or_body() {
        let mut headers = HeaderMap::new();
        assert!(!SnsEnvelope::looks_like_sns(&headers, b"{\"alerts\":[]}"));
        assert!(!SnsEnvelope::looks_like_sns(
            &headers,
            b"[\"Notification\",\"arn\",\"1\"]"
        ));
        assert!(!SnsEnvelope::looks_like_sns(&headers, b"not json"));
        assert!(!SnsEnvelope::looks_like_sns(
            &headers,
            b"{\"Type\":\"x\",\"TopicArn\":\"y\"}"
        ));
        assert!(SnsEnvelope::looks_like_sns(
            &headers,
            b" {\"Type\":\"Notification\",\"TopicArn\":\"arn\",\"SignatureVersion\":\"1\",\"Message\":{}}"
        ));
        let fixture = std::fs::read(FIXTURE).expect("fixture");
        assert!(SnsEnvelope::looks_like_sns(&headers, &fixture));

        headers.insert("x-amz-sns-message-type", "Notification".parse().unwrap());
        assert!(SnsEnvelope::looks_like_sns(&headers, b""));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let subscribe = format!("https://sns.us-east-1.amazonaws.com/?Token={TOKEN}");
        let mut body = confirmation_json("SubscriptionConfirmation", &subscribe);
        body["Signature"] = json!("x");
        let env = SnsEnvelope::parse(body.to_string().as_bytes()).unwrap();
        let debug = format!("{env:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains(TOPIC));
    }

    #[test]
    fn cert_cache_stays_bounded() {
        let mut cache = CertCache::default();
        let cert = Arc::new(CertificateDer::from(vec![0u8]));
        for i in 0..CERT_CACHE_CAPACITY + 10 {
            cache.insert(
                format!("https://sns.r{i}.amazonaws.com/c.pem"),
                Arc::clone(&cert),
            );
        }
        assert_eq!(cache.len(), CERT_CACHE_CAPACITY);
        assert!(cache.get("https://sns.r0.amazonaws.com/c.pem").is_none());
        let newest = format!(
            "https://sns.r{}.amazonaws.com/c.pem",
            CERT_CACHE_CAPACITY + 9
        );
        assert!(cache.get(&newest).is_some());
    }

    #[tokio::test]
    async fn real_guardduty_fixture_parses_and_is_checked_against_its_aws_cert_url() {
        let body = std::fs::read(FIXTURE).expect("fixture");
        let raw: Value = serde_json::from_slice(&body).unwrap();
        let env = SnsEnvelope::parse(&body).unwrap();
        assert_eq!(env.kind, SnsMessageType::Notification);
        assert_eq!(
            env.topic_arn,
            "arn:aws:sns:us-east-1:785665517223:PD-GuardDuty"
        );
        assert_eq!(env.signature_version, "1");
        assert!(env.subject.is_none());
        assert!(env.message.contains("UnauthorizedAccess:EC2/SSHBruteForce"));
        assert!(env.unsubscribe_url.is_some());

        let field = |k: &str| raw[k].as_str().unwrap().to_owned();
        let expected = format!(
            "Message\n{}\nMessageId\n{}\nTimestamp\n{}\nTopicArn\n{}\nType\nNotification\n",
            field("Message"),
            field("MessageId"),
            field("Timestamp"),
            field("TopicArn"),
        );
        assert_eq!(env.string_to_sign(), expected);

        // Its SigningCertURL is AWS's own, so it passes the trust check and is fetched (from
        // the fake server, which serves our test certificate); AWS's signature then cannot
        // verify against that key.
        let sns = FakeSns::start().await;
        let result = sns.verifier().verify(&env).await;
        assert!(matches!(result, Err(SnsError::BadSignature)), "{result:?}");
        let cert_path = Url::parse(&env.signing_cert_url).unwrap().path().to_owned();
        assert_eq!(sns.requests(), vec![cert_path]);
    }
}
