//! Where checkpoints go: signed from the store's chain head ([`sign_head`]), queued in the durable
//! outbox, one entry per configured sink ([`entries`]), and delivered by [`SinkDeliverer`] to a
//! folder and/or an S3 object under Object Lock (`PUT /{bucket}/{key}` signed with SigV4 by the
//! integrations' signer, with `x-amz-object-lock-mode`, `x-amz-object-lock-retain-until-date` and
//! the `Content-MD5` S3 requires with them). The server signs one every `audit.checkpoints.every`
//! when the log grew ([`start`]), and on demand (`POST /v1/audit/checkpoints`,
//! `cordon audit checkpoint`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::Value;

use super::checkpoint::{Checkpoint, SigningKey};
use super::{AuditConfig, S3Sink};
use crate::integrations::auth::{AwsCredentials, sign_sigv4};
use crate::model::outbox::OutboxEntry;
use crate::outbox::{Deliver, DeliveryError, Outbox};
use crate::store::{Store, StoreError};

/// The outbox target of checkpoint entries.
pub const TARGET: &str = "audit";
/// Their outbox key: checkpoints go out one at a time, in the order they were signed.
const KEY: &str = "audit-checkpoints";
/// The meta namespace and key holding the sequence number of the last pushed checkpoint.
const NS_CHECKPOINT: &str = "audit.checkpoint";
const LAST: &str = "last_seq";

/// Why no checkpoint could be made.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("no `audit.signing_key` is configured, so no checkpoint can be signed")]
    NoKey,
    #[error(transparent)]
    Key(#[from] super::checkpoint::CheckpointError),
    #[error(
        "the audit chain is broken ({0}); run `cordon audit verify` (a checkpoint of it would vouch for the damage)"
    )]
    Broken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The configured signing key.
pub fn signing_key(config: &AuditConfig) -> Result<SigningKey, AnchorError> {
    let secret = config.signing_key.as_ref().ok_or(AnchorError::NoKey)?;
    Ok(SigningKey::from_secret(secret)?)
}

/// Signs the store's chain head, after checking the chain: a broken chain is refused.
pub async fn sign_head(store: &dyn Store, key: &SigningKey) -> Result<Checkpoint, AnchorError> {
    let report = store.audit_verify().await?;
    if let Some(first) = report.problems.first() {
        return Err(AnchorError::Broken(first.to_string()));
    }
    Ok(Checkpoint::sign(key, report.last_seq, &report.last_hash))
}

/// The outbox entries that push `checkpoint` to each configured sink.
pub fn entries(config: &AuditConfig, checkpoint: &Checkpoint) -> Vec<OutboxEntry> {
    let payload = serde_json::to_value(checkpoint).unwrap_or(Value::Null);
    let sinks = &config.checkpoints;
    [("file", sinks.file.is_some()), ("s3", sinks.s3.is_some())]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(kind, _)| OutboxEntry::new(TARGET, KEY, kind, payload.clone()))
        .collect()
}

/// Signs the head now and queues it for the sinks; the checkpoint and the sinks it was queued for.
pub async fn checkpoint_now(
    config: &AuditConfig,
    store: &dyn Store,
    outbox: Option<&Outbox>,
) -> Result<(Checkpoint, Vec<String>), AnchorError> {
    let key = signing_key(config)?;
    let checkpoint = sign_head(store, &key).await?;
    let queued = entries(config, &checkpoint);
    let kinds = queued.iter().map(|e| e.kind.clone()).collect();
    if !queued.is_empty() {
        match outbox {
            Some(outbox) => outbox.push(queued).await?,
            None => store.outbox_push(queued).await?,
        }
        store
            .meta_put(NS_CHECKPOINT, LAST, Value::from(checkpoint.seq))
            .await?;
    }
    Ok((checkpoint, kinds))
}

/// Registers the sinks' deliverer with the outbox and, with `every` above zero and a signing key,
/// signs a checkpoint every period in which the log grew. Problems are logged: the server runs
/// without anchoring rather than not at all.
pub fn start(
    config: &crate::config::Config,
    store: Arc<dyn Store>,
    outbox: Arc<Outbox>,
    http: reqwest::Client,
) {
    let audit = config.audit.clone();
    let sinks = &audit.checkpoints;
    if sinks.file.is_none() && sinks.s3.is_none() {
        return;
    }
    match SinkDeliverer::new(config, http) {
        Ok(deliverer) => outbox.register(TARGET, Arc::new(deliverer)),
        Err(e) => {
            tracing::error!(error = %e, "audit checkpoints cannot be delivered");
            return;
        }
    }
    let every = sinks.every.0;
    if every.is_zero() || audit.signing_key.is_none() {
        return;
    }
    if let Err(e) = signing_key(&audit) {
        tracing::error!(error = %e, "audit checkpoints cannot be signed");
        return;
    }
    let weak = Arc::downgrade(&outbox);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The server is gone once its outbox is.
            let Some(outbox) = weak.upgrade() else { return };
            if let Err(e) = periodic(&audit, &*store, &outbox).await {
                tracing::warn!(error = %e, "cannot make the periodic audit checkpoint");
            }
        }
    });
}

/// One period: a checkpoint when the log grew since the last pushed one.
async fn periodic(
    config: &AuditConfig,
    store: &dyn Store,
    outbox: &Outbox,
) -> Result<(), AnchorError> {
    let last = store
        .meta_get(NS_CHECKPOINT, LAST)
        .await?
        .and_then(|v| v.as_u64());
    let head = store.audit_verify().await?;
    if last == Some(head.last_seq) {
        return Ok(());
    }
    let (checkpoint, _) = checkpoint_now(config, store, Some(outbox)).await?;
    tracing::info!(seq = checkpoint.seq, "audit checkpoint signed and queued");
    Ok(())
}

/// Delivers checkpoint entries to the folder or the bucket.
pub struct SinkDeliverer {
    folder: Option<PathBuf>,
    s3: Option<(S3Sink, AwsCredentials)>,
    http: reqwest::Client,
}

impl SinkDeliverer {
    /// The deliverer of `config.audit.checkpoints`; an error when the S3 sink names no usable
    /// credentials.
    pub fn new(
        config: &crate::config::Config,
        http: reqwest::Client,
    ) -> Result<SinkDeliverer, String> {
        let sinks = &config.audit.checkpoints;
        let s3 = match &sinks.s3 {
            None => None,
            Some(s3) => {
                let c = config.integrations.credentials.get(&s3.credentials).ok_or_else(|| {
                    format!(
                        "audit.checkpoints.s3.credentials names `{}`, which integrations.credentials does not hold",
                        s3.credentials
                    )
                })?;
                let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) else {
                    return Err(format!(
                        "integrations.credentials.{} needs `access_key_id` and `secret_access_key` for the audit checkpoints' S3 sink",
                        s3.credentials
                    ));
                };
                let creds = AwsCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: c.session_token.clone(),
                };
                Some((s3.clone(), creds))
            }
        };
        Ok(SinkDeliverer {
            folder: sinks.file.clone(),
            s3,
            http,
        })
    }

    /// The file (or object) name of a checkpoint: sorted by sequence number, then time.
    fn name(checkpoint: &Checkpoint) -> String {
        format!(
            "checkpoint-{:020}-{}.json",
            checkpoint.seq,
            checkpoint.at.format("%Y%m%dT%H%M%S%.6fZ")
        )
    }

    async fn to_folder(&self, checkpoint: &Checkpoint, body: Vec<u8>) -> Result<(), DeliveryError> {
        let Some(folder) = self.folder.clone() else {
            return Err(DeliveryError::permanent(
                "no audit.checkpoints.file is configured",
            ));
        };
        let name = SinkDeliverer::name(checkpoint);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&folder)?;
            // Written whole, then renamed: a reader never sees half a checkpoint.
            let partial = folder.join(format!(".{name}.partial"));
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&partial, folder.join(&name))?;
            std::fs::File::open(&folder)?.sync_all()
        })
        .await
        .map_err(|e| DeliveryError::retry(format!("the checkpoint write stopped: {e}")))?
        .map_err(|e| DeliveryError::retry(format!("cannot write the audit checkpoint file: {e}")))
    }

    async fn to_s3(&self, checkpoint: &Checkpoint, body: Vec<u8>) -> Result<(), DeliveryError> {
        let Some((s3, creds)) = &self.s3 else {
            return Err(DeliveryError::permanent(
                "no audit.checkpoints.s3 is configured",
            ));
        };
        let base = match &s3.endpoint {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("https://s3.{}.amazonaws.com", s3.region),
        };
        let key = format!("{}{}", s3.prefix, SinkDeliverer::name(checkpoint));
        let url = format!("{base}/{}/{key}", s3.bucket);
        let until = chrono::Utc::now()
            + chrono::Duration::from_std(s3.retain.0).unwrap_or(chrono::Duration::days(400));
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let mut request = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .header("content-md5", md5)
            .header("x-amz-object-lock-mode", s3.lock_mode.header())
            .header(
                "x-amz-object-lock-retain-until-date",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .body(body)
            .build()
            .map_err(|e| {
                DeliveryError::permanent(format!("bad S3 request for the checkpoint: {e}"))
            })?;
        sign_sigv4(&mut request, creds, &s3.region, "s3", SystemTime::now())
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| DeliveryError::retry(format!("S3 is unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map_or("no error code", |(code, _)| code);
        let what = format!("S3 PUT of the audit checkpoint ({code})");
        Err(
            DeliveryError::from_response(status.as_u16(), &headers, &what)
                .unwrap_or_else(|| DeliveryError::permanent(format!("{what} answered {status}"))),
        )
    }
}

#[async_trait]
impl Deliver for SinkDeliverer {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let checkpoint: Checkpoint = serde_json::from_value(entry.payload.clone())
            .map_err(|e| DeliveryError::permanent(format!("not a checkpoint: {e}")))?;
        let body = serde_json::to_vec_pretty(&checkpoint)
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        match entry.kind.as_str() {
            "file" => self.to_folder(&checkpoint, body).await,
            "s3" => self.to_s3(&checkpoint, body).await,
            other => Err(DeliveryError::permanent(format!(
                "unknown audit checkpoint sink `{other}`"
            ))),
        }
    }
}
