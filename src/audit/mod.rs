//! The tamper-evident audit log: every decision a person made and everything a run did, in order,
//! each entry carrying the hash of the one before it.
//!
//! The entries, their hashing and the chain check are the model's ([`crate::model::audit`]),
//! re-exported here where callers have always named them; the store keeps the log
//! ([`crate::store::Store::append_audit`], `audit_verify`, `audit_entries`), in a sled tree or a
//! PostgreSQL table (`store::sled_audit`, `store::postgres_audit`).
//!
//! The chain shows a changed entry, but not a cut or a rewritten tail: whoever can write the store
//! can recompute every hash after what they change. [`checkpoint`] anchors the chain outside the
//! store: signed statements of its head (`cordon audit checkpoint`), pushed by [`sink`] through
//! the outbox to a file and/or an S3 object under Object Lock, against which
//! `cordon audit verify --checkpoint FILE` checks the log (docs/security.md, "Audit anchoring",
//! says what that proves).

pub mod checkpoint;
pub mod sink;

use std::path::PathBuf;

use serde::Deserialize;

pub use crate::model::audit::*;

use crate::config::{HumanDuration, Secret};

/// The `audit:` section: the key that signs checkpoints of the audit chain, and where they go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 key that signs checkpoints: base64 of its 32-byte seed, from a secret
    /// (`${CORDON_AUDIT_KEY}`; `cordon audit keygen` makes one). Keep it out of the store's reach:
    /// whoever holds it can sign a checkpoint of a rewritten log. Unset: no checkpoints.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    /// The public key checkpoints are verified with (base64, 32 bytes; `cordon audit keygen`
    /// prints it). Default: the signing key's. Set it alone where logs are verified, not signed.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Where the server pushes checkpoints, and how often.
    #[serde(default)]
    pub checkpoints: CheckpointsConfig,
}

/// `audit.checkpoints`: the sinks, and the period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsConfig {
    /// How often the server signs the chain's head and pushes it to the sinks, when the log grew
    /// since the last one (default `1h`; `0s`: only on demand, `cordon audit checkpoint`).
    #[serde(default = "default_every")]
    pub every: HumanDuration,
    /// A folder: each checkpoint is written there as `checkpoint-<seq>-<time>.json`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An S3 bucket with Object Lock: each checkpoint is an object locked until its retention
    /// ends.
    #[serde(default)]
    pub s3: Option<S3Sink>,
}

impl Default for CheckpointsConfig {
    fn default() -> Self {
        CheckpointsConfig {
            every: default_every(),
            file: None,
            s3: None,
        }
    }
}

fn default_every() -> HumanDuration {
    HumanDuration::secs(3600)
}

/// `audit.checkpoints.s3`: the bucket (created with Object Lock enabled) checkpoints go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Sink {
    /// The bucket's name.
    pub bucket: String,
    /// Its region (`eu-west-1`).
    pub region: String,
    /// The key prefix of the objects (default `cordon/audit-checkpoints/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The name of the AWS credentials under `integrations.credentials` (`access_key_id`,
    /// `secret_access_key`, `session_token`) the PUTs are signed with (SigV4); they need only
    /// `s3:PutObject` and `s3:PutObjectRetention` on the prefix.
    pub credentials: String,
    /// The S3 endpoint instead of `https://s3.<region>.amazonaws.com` (a VPC endpoint, an
    /// S3-compatible store, an emulator); objects are addressed path-style under it.
    #[serde(default)]
    pub endpoint: Option<url::Url>,
    /// Object Lock mode: `compliance` (no one, root included, can delete or shorten it) or
    /// `governance` (users with `s3:BypassGovernanceRetention` can). Default `compliance`.
    #[serde(default)]
    pub lock_mode: LockMode,
    /// How long each object is locked (default `400d`).
    #[serde(default = "default_retain")]
    pub retain: HumanDuration,
}

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    #[default]
    Compliance,
    Governance,
}

impl LockMode {
    /// The value of `x-amz-object-lock-mode`.
    pub fn header(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

fn default_prefix() -> String {
    "cordon/audit-checkpoints/".to_owned()
}

fn default_retain() -> HumanDuration {
    HumanDuration::secs(400 * 86_400)
}

impl AuditConfig {
    /// The public key checkpoints are checked with: `public_key`, else the signing key's.
    pub fn trusted_key(&self) -> Result<Option<String>, checkpoint::CheckpointError> {
        if let Some(key) = &self.public_key {
            return Ok(Some(key.trim().to_owned()));
        }
        self.signing_key
            .as_ref()
            .map(|s| checkpoint::SigningKey::from_secret(s).map(|k| k.public()))
            .transpose()
    }

    /// Every secret in the section (for the warning about local defaults).
    pub fn secrets(&self) -> Vec<&Secret> {
        self.signing_key.iter().collect()
    }
}
