//! The audit log of the PostgreSQL store: the `audit` table holds each entry exactly as the
//! model hashes and writes it ([`crate::model::audit`]), keyed by its sequence number, with the
//! run it names alongside for `audit_entries(run)`. A log copied from sled verifies the same, and
//! `cordon audit verify` reads what is stored.
//!
//! An append takes one advisory lock, reads the last entry and chains on it inside the
//! transaction that records the state change: entries and change commit together, and the chain
//! has one order across replicas. The lock is taken last, so it is held only for the inserts and
//! the commit.

use deadpool_postgres::{Client, Transaction};
use tokio_postgres::Row;

use super::StoreError;
use super::postgres::{Fail, PAGE};
use crate::model::audit::{AuditEntry, ChainCheck, NewEntry, VerifyReport, decode_entry};

/// The advisory lock held while an append picks its place.
pub(super) const AUDIT_LOCK: i64 = 0x636f_7264_6f6e_0002;

/// Chains `entries` onto the log inside `tx`. Takes the audit lock, held until `tx` ends: call it
/// last in a transaction.
pub(super) async fn append(tx: &Transaction<'_>, entries: &[NewEntry]) -> Result<(), Fail> {
    if entries.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await?;
    let last = tx
        .prepare_cached("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1")
        .await?;
    let last = tx.query_opt(&last, &[]).await?;
    let last = last
        .as_ref()
        .map(|row| (row.get::<_, i64>(0), row.get::<_, &str>(1)));
    let last = last.map(|(seq, entry)| (u64::try_from(seq).unwrap_or(0), entry.as_bytes()));
    let written = crate::model::audit::next_entries(entries, last)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut seqs = Vec::with_capacity(written.len());
    let mut runs = Vec::with_capacity(written.len());
    let mut stored = Vec::with_capacity(written.len());
    for entry in written {
        seqs.push(
            i64::try_from(entry.seq)
                .map_err(|_| StoreError::Backend("audit sequence numbers are exhausted".into()))?,
        );
        stored.push(serde_json::to_string(&entry).map_err(|e| StoreError::Backend(e.to_string()))?);
        runs.push(entry.run_id);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit (seq, run_id, entry)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
        )
        .await?;
    tx.execute(&insert, &[&seqs, &runs, &stored]).await?;
    Ok(())
}

/// Copies one entry exactly as stored elsewhere (`cordon migrate`), under its sequence number.
pub(super) async fn import(tx: &Transaction<'_>, seq: u64, stored: &str) -> Result<(), Fail> {
    let seq = i64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("audit sequence number {seq}")))?;
    // The run the entry names, for `audit_entries(run)`; the entry itself is copied as is.
    let run_id = serde_json::from_str::<AuditEntry>(stored)
        .ok()
        .and_then(|e| e.run_id);
    let q = tx
        .prepare_cached("INSERT INTO audit (seq, run_id, entry) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(&q, &[&seq, &run_id, &stored]).await?;
    Ok(())
}

/// Checks the whole chain as `tx` (a read-only snapshot) sees it.
pub(super) async fn verify(tx: &Transaction<'_>) -> Result<VerifyReport, Fail> {
    let portal = tx
        .bind("SELECT seq, entry FROM audit ORDER BY seq", &[])
        .await?;
    let mut check = ChainCheck::new();
    loop {
        let rows = tx.query_portal(&portal, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq: i64 = row.get(0);
            let entry: &str = row.get(1);
            match u64::try_from(seq) {
                Ok(seq) => check.entry(seq, entry.as_bytes()),
                Err(_) => check.bad_key(&seq.to_be_bytes()),
            }
        }
    }
    Ok(check.finish())
}

/// The stored rows of run `run_id`'s entries, or of the first `limit` entries (`None`: all),
/// oldest first; [`decode`] reads them.
pub(super) async fn rows(
    client: &Client,
    run_id: Option<&str>,
    limit: Option<i64>,
) -> Result<Vec<Row>, Fail> {
    Ok(match run_id {
        Some(run) => {
            let q = client
                .prepare_cached("SELECT seq, entry FROM audit WHERE run_id = $1 ORDER BY seq")
                .await?;
            client.query(&q, &[&run]).await?
        }
        None => {
            let q = client
                .prepare_cached("SELECT seq, entry FROM audit ORDER BY seq LIMIT $1")
                .await?;
            client.query(&q, &[&limit]).await?
        }
    })
}

/// The row of entry `seq`, if stored.
pub(super) async fn row(client: &Client, seq: i64) -> Result<Vec<Row>, Fail> {
    let q = client
        .prepare_cached("SELECT seq, entry FROM audit WHERE seq = $1")
        .await?;
    Ok(client.query(&q, &[&seq]).await?)
}

/// The entries of rows [`rows`] read.
pub(super) fn decode(rows: &[Row]) -> Result<Vec<AuditEntry>, StoreError> {
    rows.iter()
        .map(|row| {
            let seq = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            decode_entry(seq, row.get::<_, &str>(1).as_bytes())
                .map_err(|e| StoreError::Backend(e.to_string()))
        })
        .collect()
}
