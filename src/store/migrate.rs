//! `cordon migrate`: copying an embedded (sled) store into PostgreSQL, then proving the copy.
//!
//! The copy is one transaction into an empty database: everything or nothing. Every record goes
//! across, markers included (dedup keys, the incident of each entity, concurrency keys held by
//! active runs, alerts not yet matched, runs not yet finished), so the server started on the copy
//! carries on where the old one stopped: repeats still count on the same alerts, running runs
//! resume, approvals still wait. The audit log is copied byte for byte, so its hashes are the same.
//!
//! Then the copy is read back: per kind of record, the count and a digest of every record (the
//! XOR of their SHA-256, so the order each backend reads in does not matter) must equal the
//! source's, and the copied audit chain must verify and end on the source's last hash.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{PostgresStore, Record, SledStore, Store, StoreError};

/// What `cordon migrate` copied and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Records copied per kind (`alerts`, `incidents`, `runs`, `audit`, ...).
    pub copied: BTreeMap<String, u64>,
    /// Approval requests inside the copied runs, and the decisions recorded on them.
    pub approvals: u64,
    pub decisions: u64,
    /// The audit chain, verified on the copy: entries, and the last entry's number and hash
    /// (the same as the source's).
    pub audit_entries: u64,
    pub audit_last_seq: u64,
    pub audit_last_hash: String,
}

/// Why a migration stopped. Nothing is left half-copied: the copy is one transaction, and a
/// mismatch found after it is reported with the target to be dropped by hand.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source's audit chain does not verify; copying it would hide where it broke.
    #[error(
        "the source's audit chain is broken ({0} problems); run `cordon audit verify` on it first"
    )]
    SourceBroken(usize),
    #[error(
        "the target database already holds Cordon data; migrate into an empty database (or schema)"
    )]
    TargetNotEmpty,
    /// The copy read back differs from the source.
    #[error("the copy does not match the source: {0}")]
    Mismatch(String),
}

/// Count and order-independent digest of records, per kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    kinds: BTreeMap<&'static str, (u64, [u8; 32])>,
    approvals: u64,
    decisions: u64,
}

impl Tally {
    fn add(&mut self, record: &Record) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let digest = Sha256::digest(&bytes);
        let (count, xor) = self.kinds.entry(record.kind()).or_default();
        *count += 1;
        for (x, d) in xor.iter_mut().zip(digest.iter()) {
            *x ^= d;
        }
        if let Record::Run(run) = record {
            for approval in run.steps.values().filter_map(|s| s.approval.as_ref()) {
                self.approvals += 1;
                self.decisions += approval.decisions.len() as u64;
            }
        }
        Ok(())
    }
}

/// Copies everything in `from` into the empty database of `to`, then checks the copy.
pub async fn sled_to_postgres(
    from: &SledStore,
    to: &PostgresStore,
) -> Result<MigrateReport, MigrateError> {
    let source_chain = from.audit_verify().await?;
    if !source_chain.ok() {
        return Err(MigrateError::SourceBroken(source_chain.problems.len()));
    }
    if !to.is_empty().await? {
        return Err(MigrateError::TargetNotEmpty);
    }

    let mut source = Tally::default();
    let mut tally_error = None;
    let records = from.records().inspect(|record| {
        if let Ok(record) = record
            && let Err(e) = source.add(record)
        {
            tally_error.get_or_insert(e);
        }
    });
    to.import(records).await?;
    if let Some(e) = tally_error {
        return Err(e.into());
    }

    let mut copy = Tally::default();
    to.for_each_record(|record| copy.add(&record)).await?;
    for kind in source.kinds.keys().chain(copy.kinds.keys()) {
        let (want, got) = (source.kinds.get(kind), copy.kinds.get(kind));
        if want != got {
            let count = |t: Option<&(u64, [u8; 32])>| t.map(|t| t.0).unwrap_or(0);
            return Err(MigrateError::Mismatch(format!(
                "{kind}: {} in the source, {} in the copy{}",
                count(want),
                count(got),
                if count(want) == count(got) {
                    " (with different contents)"
                } else {
                    ""
                }
            )));
        }
    }

    let chain = to.audit_verify().await?;
    if !chain.ok() {
        return Err(MigrateError::Mismatch(format!(
            "the copied audit chain does not verify: {}",
            chain
                .problems
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        )));
    }
    if (chain.entries, chain.last_seq, &chain.last_hash)
        != (
            source_chain.entries,
            source_chain.last_seq,
            &source_chain.last_hash,
        )
    {
        return Err(MigrateError::Mismatch(format!(
            "the copied audit chain ends at entry {} ({}), the source's at {} ({})",
            chain.last_seq, chain.last_hash, source_chain.last_seq, source_chain.last_hash
        )));
    }

    Ok(MigrateReport {
        copied: source
            .kinds
            .iter()
            .map(|(kind, (count, _))| ((*kind).to_owned(), *count))
            .collect(),
        approvals: copy.approvals,
        decisions: copy.decisions,
        audit_entries: chain.entries,
        audit_last_seq: chain.last_seq,
        audit_last_hash: chain.last_hash,
    })
}
