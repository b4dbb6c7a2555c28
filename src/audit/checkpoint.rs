//! Signed checkpoints of the audit chain's head: what shows, later, that the log was cut or its
//! tail rewritten, which the hash chain alone cannot (whoever can write the store can recompute
//! every hash after the entry they change).
//!
//! A checkpoint names the head (`seq`, `hash`) at a time (`at`) and is signed with an Ed25519
//! key kept outside the store (`audit.signing_key`). The signed message is the text
//!
//! ```text
//! cordon audit checkpoint v1
//! seq=<seq>
//! hash=<hash>
//! at=<at, RFC 3339 UTC>
//! ```
//!
//! each line ending in `\n`, so any Ed25519 tool can check a checkpoint file without Cordon. A
//! checkpoint checks a stored log when its signature verifies with the trusted public key, the
//! log still holds entry `seq` with that `hash`, and the chain up to there is intact: then no entry
//! up to `seq` was removed, changed or inserted since the checkpoint was signed.

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::model::audit::{GENESIS_HASH, VerifyReport};

/// The format's version, in every checkpoint file.
pub const VERSION: u32 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A signed statement of the audit chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The format's version ([`VERSION`]).
    pub cordon_audit_checkpoint: u32,
    /// The sequence number of the last entry (0 for an empty log).
    pub seq: u64,
    /// That entry's hash ([`GENESIS_HASH`] for an empty log).
    pub hash: String,
    /// When it was signed.
    pub at: DateTime<Utc>,
    /// The public key it was signed with (base64, 32 bytes): which key to ask for; never the one
    /// it is checked with, which comes from the verifier's own config.
    pub key: String,
    /// The Ed25519 signature of [`Checkpoint::message`] (base64, 64 bytes).
    pub signature: String,
}

/// What is wrong with a key or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Key(String),
    #[error("the checkpoint's signature does not verify with the trusted public key {0}")]
    BadSignature(String),
    #[error("the checkpoint is not readable: {0}")]
    Unreadable(String),
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn message(seq: u64, hash: &str, at: &DateTime<Utc>) -> String {
        format!(
            "cordon audit checkpoint v{VERSION}\nseq={seq}\nhash={hash}\nat={}\n",
            crate::model::audit::format_time(at)
        )
    }

    /// Signs the head `seq` / `hash` now.
    pub fn sign(key: &SigningKey, seq: u64, hash: &str) -> Checkpoint {
        let at = Utc::now().trunc_subsecs(6);
        let signature = key
            .pair
            .sign(Checkpoint::message(seq, hash, &at).as_bytes());
        Checkpoint {
            cordon_audit_checkpoint: VERSION,
            seq,
            hash: hash.to_owned(),
            at,
            key: key.public(),
            signature: B64.encode(signature.as_ref()),
        }
    }

    /// Reads a checkpoint file's text.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let checkpoint: Checkpoint =
            serde_json::from_str(text).map_err(|e| CheckpointError::Unreadable(e.to_string()))?;
        if checkpoint.cordon_audit_checkpoint != VERSION {
            return Err(CheckpointError::Unreadable(format!(
                "version {} (this Cordon reads version {VERSION})",
                checkpoint.cordon_audit_checkpoint
            )));
        }
        Ok(checkpoint)
    }

    /// Checks the signature with `trusted` (base64 of the 32-byte public key). The key the
    /// checkpoint names is not used: a forger names their own.
    pub fn verify_signature(&self, trusted: &str) -> Result<(), CheckpointError> {
        let public = decode_key(trusted, "the public key")?;
        let signature = B64
            .decode(self.signature.trim())
            .map_err(|_| CheckpointError::BadSignature(trusted.to_owned()))?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(
                Checkpoint::message(self.seq, &self.hash, &self.at).as_bytes(),
                &signature,
            )
            .map_err(|_| CheckpointError::BadSignature(trusted.to_owned()))
    }

    /// What the stored log (its chain `report`, and the hash of the entry stored under
    /// `self.seq`) shows against this checkpoint: nothing when the log still holds what was signed.
    pub fn problems(&self, report: &VerifyReport, hash_at_seq: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        let signed = crate::model::audit::format_time(&self.at);
        if self.seq == 0 {
            if self.hash != GENESIS_HASH {
                out.push("the checkpoint names entry 0 with a hash other than the genesis".into());
            }
            return out;
        }
        match hash_at_seq {
            _ if report.last_seq < self.seq => out.push(format!(
                "the log ends at entry {}, but the checkpoint signed at {signed} covers entries up to {}: entries were removed from the end (cut)",
                report.last_seq, self.seq
            )),
            None => out.push(format!(
                "entry {} of the checkpoint signed at {signed} is missing",
                self.seq
            )),
            Some(hash) if hash != self.hash => out.push(format!(
                "entry {} has hash {hash}, but the checkpoint signed at {signed} says {}: the log was rewritten up to there",
                self.seq, self.hash
            )),
            Some(_) => {}
        }
        out
    }
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// The key from `audit.signing_key`: base64 of a 32-byte Ed25519 seed.
    pub fn from_secret(secret: &Secret) -> Result<SigningKey, CheckpointError> {
        let seed = decode_key(secret.expose(), "audit.signing_key")?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| CheckpointError::Key("audit.signing_key is not an Ed25519 seed".into()))?;
        Ok(SigningKey { pair })
    }

    /// A new random key, as base64 of its seed (for `cordon audit keygen`).
    pub fn generate() -> String {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .expect("the system's random source works");
        B64.encode(seed)
    }

    /// The public key, base64.
    pub fn public(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }
}

/// 32 bytes from base64; a message naming `what` (never the value) otherwise.
fn decode_key(text: &str, what: &str) -> Result<[u8; 32], CheckpointError> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| CheckpointError::Key(format!("{what} is not base64")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        CheckpointError::Key(format!(
            "{what} must be 32 bytes (base64), not {}",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::{AuditEntry, NewEntry, kind, next_entries};

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_secret(&Secret::new(B64.encode([byte; 32]))).unwrap()
    }

    fn log(n: usize) -> Vec<AuditEntry> {
        let new: Vec<NewEntry> = (0..n).map(|_| NewEntry::new(kind::RUN_STATE)).collect();
        next_entries(&new, None).unwrap()
    }

    fn report(entries: &[AuditEntry]) -> VerifyReport {
        let mut check = crate::model::audit::ChainCheck::new();
        for e in entries {
            check.entry(e.seq, &serde_json::to_vec(e).unwrap());
        }
        check.finish()
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_round_trips() {
        let signer = key(7);
        let checkpoint = Checkpoint::sign(&signer, 3, "ab");
        let text = serde_json::to_string_pretty(&checkpoint).unwrap();
        let read = Checkpoint::parse(&text).unwrap();
        assert_eq!(read, checkpoint);
        read.verify_signature(&signer.public()).unwrap();
        assert!(matches!(
            read.verify_signature(&key(8).public()),
            Err(CheckpointError::BadSignature(_))
        ));
        let mut moved = read.clone();
        moved.seq = 2;
        assert!(moved.verify_signature(&signer.public()).is_err());
        assert!(Checkpoint::parse("{}").is_err());
    }

    #[test]
    fn the_signed_message_is_the_documented_text() {
        let at = "2026-05-01T12:00:00.123456Z".parse().unwrap();
        assert_eq!(
            Checkpoint::message(7, "abc", &at),
            "cordon audit checkpoint v1\nseq=7\nhash=abc\nat=2026-05-01T12:00:00.123456Z\n"
        );
    }

    #[test]
    fn a_cut_or_rewritten_log_shows_against_the_checkpoint() {
        let entries = log(5);
        let checkpoint = Checkpoint::sign(&key(1), 4, &entries[3].hash);
        assert!(
            checkpoint
                .problems(&report(&entries), Some(&entries[3].hash))
                .is_empty()
        );
        let cut = &entries[..3];
        let problems = checkpoint.problems(&report(cut), None);
        assert!(problems[0].contains("cut"), "{problems:?}");
        let rewritten = log(5);
        let problems = checkpoint.problems(&report(&rewritten), Some(&rewritten[3].hash));
        assert!(problems[0].contains("rewritten"), "{problems:?}");
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        let e = SigningKey::from_secret(&Secret::new("c2hvcnQ=")).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        let e = SigningKey::from_secret(&Secret::new("not base64!")).unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        assert_eq!(B64.decode(SigningKey::generate()).unwrap().len(), 32);
    }
}
