//! The audit log of the sled store: entries live in the sled tree `audit`, keyed by their sequence
//! number (8 bytes, big-endian, so key order is append order), each value the JSON of an
//! [`AuditEntry`], chained and checked by the model's rules ([`crate::model::audit`]). The
//! PostgreSQL store keeps the same JSON (`super::postgres_audit`).
//!
//! # Durability
//!
//! Appends are written to the tree but not flushed. sled keeps one log for all trees of a
//! database and recovers a prefix of it after a crash, so an entry appended before a state change
//! in the same database is durable whenever that change is: the caller's flush (the store's) makes
//! both durable together, with one fsync.

use std::sync::{Mutex, PoisonError};

use crate::model::audit::{
    AuditEntry, AuditError, ChainCheck, GENESIS_HASH, NewEntry, VerifyReport, chain, check_depth,
    decode_entry,
};

/// The name of the sled tree the log lives in.
const TREE: &str = "audit";

/// How often an append re-reads the end of the log after finding its place taken by another
/// writer before it gives up.
const MAX_ATTEMPTS: usize = 8;

/// Where the next entry goes.
enum Tail {
    Next {
        seq: u64,
        prev_hash: String,
    },
    /// The last stored entry cannot be read, so its hash is unknown.
    Broken {
        seq: u64,
        reason: String,
    },
}

impl Tail {
    /// The place after entry `seq`, whose hash is `hash`.
    fn after(seq: u64, hash: String) -> Tail {
        match seq.checked_add(1) {
            Some(next) => Tail::Next {
                seq: next,
                prev_hash: hash,
            },
            None => Tail::Broken {
                seq,
                reason: "sequence numbers are exhausted".into(),
            },
        }
    }
}

/// The audit log in the `audit` tree of a sled database.
///
/// Open it once per database and share it (it is `Send + Sync`): appends from any thread chain in
/// order. A second instance on the same database cannot fork the chain — an append never
/// overwrites an entry, and one that finds its place taken re-reads the end of the log — but it
/// does make the two wait on each other.
pub struct AuditLog {
    tree: sled::Tree,
    tail: Mutex<Tail>,
}

impl AuditLog {
    /// Opens the log in `db`, creating it if needed, and reads its last entry to continue the
    /// chain. An unreadable last entry does not stop it opening (so it can still be verified), but
    /// stops appends with [`AuditError::Broken`].
    pub fn open(db: &sled::Db) -> Result<AuditLog, AuditError> {
        let tree = db.open_tree(TREE).map_err(backend)?;
        let tail = read_tail(&tree)?;
        Ok(AuditLog {
            tree,
            tail: Mutex::new(tail),
        })
    }

    /// Appends one entry and returns it as stored (the store appends batches; the tests, one at a
    /// time).
    #[cfg(test)]
    pub fn append(&self, entry: NewEntry) -> Result<AuditEntry, AuditError> {
        let mut written = self.append_batch(vec![entry])?;
        written
            .pop()
            .ok_or_else(|| AuditError::Encode("the append wrote nothing".into()))
    }

    /// Appends `entries` in order, atomically: either all are written, chained one to the next,
    /// or none is. Not flushed: the caller's flush of the database makes them durable, together
    /// with the state change they record.
    pub fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<AuditEntry>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        check_depth(&entries)?;
        // The tail is only replaced after a write succeeded, and a stale tail is caught by the
        // write refusing to overwrite, so a panic elsewhere cannot leave it wrong.
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..MAX_ATTEMPTS {
            let (first, prev_hash) = match &*tail {
                Tail::Next { seq, prev_hash } => (*seq, prev_hash.clone()),
                Tail::Broken { seq, reason } => {
                    return Err(AuditError::Broken {
                        seq: *seq,
                        reason: reason.clone(),
                    });
                }
            };
            let written = chain(&entries, first, prev_hash)?;
            let mut keys = Vec::with_capacity(written.len());
            let mut batch = sled::Batch::default();
            for entry in &written {
                let value =
                    serde_json::to_vec(entry).map_err(|e| AuditError::Encode(e.to_string()))?;
                keys.push(key(entry.seq));
                batch.insert(&key(entry.seq), value);
            }
            let outcome = self.tree.transaction(|tx| {
                for key in &keys {
                    if tx.get(key)?.is_some() {
                        return sled::transaction::abort(());
                    }
                }
                tx.apply_batch(&batch)?;
                Ok(())
            });
            match outcome {
                Ok(()) => {
                    if let Some(last) = written.last() {
                        *tail = Tail::after(last.seq, last.hash.clone());
                    }
                    return Ok(written);
                }
                // Another writer took these sequence numbers: continue after its entries.
                Err(sled::transaction::TransactionError::Abort(())) => {
                    *tail = read_tail(&self.tree)?
                }
                Err(sled::transaction::TransactionError::Storage(e)) => return Err(backend(e)),
            }
        }
        Err(AuditError::Contended)
    }

    /// Up to `limit` entries (0: all) after sequence number `after_seq` (`None`: from the
    /// first), oldest first. An unreadable entry is an [`AuditError::Corrupt`].
    pub fn list(
        &self,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let rows = match after_seq {
            None => self.tree.iter(),
            Some(after) => match after.checked_add(1) {
                Some(start) => self.tree.range(key(start)..),
                None => return Ok(Vec::new()),
            },
        };
        rows.take(limit)
            .map(|row| {
                let (k, v) = row.map_err(backend)?;
                decode(&k, &v)
            })
            .collect()
    }

    /// The entry stored under `seq`, if any.
    pub fn entry(&self, seq: u64) -> Result<Option<AuditEntry>, AuditError> {
        match self.tree.get(key(seq)).map_err(backend)? {
            Some(v) => decode(&key(seq), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every stored entry as its sequence number and stored bytes, in order: for copying the log
    /// to another store byte for byte. A key that is not a sequence number is an
    /// [`AuditError::Corrupt`] with `seq` 0.
    pub fn stored(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), AuditError>> + '_ {
        self.tree.iter().map(|row| {
            let (k, v) = row.map_err(backend)?;
            let seq = key_seq(&k).ok_or_else(|| AuditError::Corrupt {
                seq: 0,
                reason: "its key is not a sequence number".into(),
            })?;
            Ok((seq, v.to_vec()))
        })
    }

    /// Every entry about run `run_id`, oldest first. Reads the whole log.
    pub fn for_run(&self, run_id: &str) -> Result<Vec<AuditEntry>, AuditError> {
        let mut out = Vec::new();
        for row in self.tree.iter() {
            let (k, v) = row.map_err(backend)?;
            let entry = decode(&k, &v)?;
            if entry.run_id.as_deref() == Some(run_id) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Reads the whole log and reports everything wrong with the chain: entries whose content no
    /// longer matches their hash, missing sequence numbers, entries stored under another entry's
    /// number, links that do not match the entry before, and unreadable entries. A truncated
    /// tail is not among them (see the module documentation); compare
    /// [`VerifyReport::last_hash`] with an anchor kept elsewhere for that.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut check = ChainCheck::new();
        for row in self.tree.iter() {
            let (k, v) = row.map_err(backend)?;
            match key_seq(&k) {
                Some(seq) => check.entry(seq, &v),
                None => check.bad_key(&k),
            }
        }
        Ok(check.finish())
    }
}

/// Where the next append goes, from the last stored entry.
fn read_tail(tree: &sled::Tree) -> Result<Tail, AuditError> {
    let Some((k, v)) = tree.last().map_err(backend)? else {
        return Ok(Tail::Next {
            seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
        });
    };
    let entry = match decode(&k, &v) {
        Ok(entry) => entry,
        Err(AuditError::Corrupt { seq, reason }) => return Ok(Tail::Broken { seq, reason }),
        Err(e) => return Err(e),
    };
    // `decode` accepted the key, so it is a sequence number; the next goes after it.
    Ok(Tail::after(key_seq(&k).unwrap_or(entry.seq), entry.hash))
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn decode(k: &[u8], v: &[u8]) -> Result<AuditEntry, AuditError> {
    let Some(seq) = key_seq(k) else {
        return Err(AuditError::Corrupt {
            seq: 0,
            reason: "its key is not a sequence number".into(),
        });
    };
    decode_entry(seq, v)
}

fn backend(e: sled::Error) -> AuditError {
    AuditError::Backend(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::model::audit::{MAX_DETAIL_DEPTH, kind};

    fn temp_db() -> sled::Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled db")
    }

    /// A log holding `n` entries of run `run-1`, each with `{"n": i}` as detail.
    fn log_with(n: u64) -> (sled::Db, AuditLog) {
        let db = temp_db();
        let log = AuditLog::open(&db).expect("open");
        for i in 1..=n {
            log.append(
                NewEntry::new(kind::STEP_STARTED)
                    .run("run-1")
                    .step(format!("step-{i}"))
                    .actor("system")
                    .detail(json!({ "n": i })),
            )
            .expect("append");
        }
        (db, log)
    }

    fn raw(db: &sled::Db, seq: u64) -> Vec<u8> {
        let tree = db.open_tree(TREE).expect("tree");
        tree.get(key(seq)).expect("get").expect("entry").to_vec()
    }

    fn put_raw(db: &sled::Db, seq: u64, value: &[u8]) {
        let tree = db.open_tree(TREE).expect("tree");
        tree.insert(key(seq), value).expect("insert");
    }

    fn problem_seqs(report: &VerifyReport) -> Vec<u64> {
        let mut seqs: Vec<u64> = report.problems.iter().map(|p| p.seq).collect();
        seqs.dedup();
        seqs
    }

    #[test]
    fn appended_entries_verify_with_their_count() {
        let (_db, log) = log_with(5);
        let report = log.verify().expect("verify");
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.entries, 5);
        assert_eq!(report.last_seq, 5);
        let entries = log.list(None, 0).expect("list");
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
        assert_eq!(report.last_hash, entries[4].hash);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
    }

    #[test]
    fn the_chain_continues_after_the_database_is_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).expect("open db");
            let log = AuditLog::open(&db).expect("open");
            for _ in 0..3 {
                log.append(NewEntry::new(kind::RUN_STATE).run("run-1"))
                    .expect("append");
            }
            db.flush().expect("flush");
        }
        // sled's background thread lets go of the file lock a moment after the last handle drops.
        let db = (0..200)
            .find_map(|_| {
                sled::open(&path).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                })
            })
            .expect("reopen db");
        let log = AuditLog::open(&db).expect("reopen");
        let fourth = log
            .append(NewEntry::new(kind::RUN_STATE).run("run-1"))
            .expect("append");
        log.append(NewEntry::new(kind::RUN_STATE).run("run-1"))
            .expect("append");
        let entries = log.list(None, 0).expect("list");
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(fourth.prev_hash, entries[2].hash);
        let report = log.verify().expect("verify");
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.entries, 5);
    }

    #[test]
    fn one_changed_byte_in_detail_is_reported_at_that_entry() {
        let (db, log) = log_with(5);
        let stored = String::from_utf8(raw(&db, 3)).expect("utf8");
        assert!(stored.contains(r#""n":3"#));
        put_raw(&db, 3, stored.replace(r#""n":3"#, r#""n":4"#).as_bytes());

        let report = log.verify().expect("verify");
        assert!(!report.ok());
        assert_eq!(problem_seqs(&report), [3], "{:?}", report.problems);
        assert!(report.problems[0].what.contains("changed"));
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let (db, log) = log_with(5);
        let mut entry: AuditEntry = serde_json::from_slice(&raw(&db, 3)).expect("entry");
        entry.actor = Some("cli:mallory".into());
        entry.hash = entry.computed_hash().expect("hash");
        put_raw(&db, 3, &serde_json::to_vec(&entry).expect("json"));

        let report = log.verify().expect("verify");
        assert_eq!(problem_seqs(&report), [4], "{:?}", report.problems);
    }

    #[test]
    fn a_removed_entry_is_reported() {
        let (db, log) = log_with(5);
        db.open_tree(TREE)
            .expect("tree")
            .remove(key(3))
            .expect("remove");

        let report = log.verify().expect("verify");
        assert_eq!(report.entries, 4);
        // The gap where entry 3 was, and entry 4 no longer following entry 2.
        assert_eq!(problem_seqs(&report), [3, 4], "{:?}", report.problems);
        assert!(report.problems[0].what.contains("missing"));
    }

    #[test]
    fn removing_the_first_entry_is_reported() {
        let (db, log) = log_with(3);
        db.open_tree(TREE)
            .expect("tree")
            .remove(key(1))
            .expect("remove");

        let report = log.verify().expect("verify");
        assert_eq!(problem_seqs(&report), [1, 2], "{:?}", report.problems);
    }

    #[test]
    fn swapped_entries_are_reported() {
        let (db, log) = log_with(5);
        let (second, third) = (raw(&db, 2), raw(&db, 3));
        put_raw(&db, 2, &third);
        put_raw(&db, 3, &second);

        let report = log.verify().expect("verify");
        let seqs = problem_seqs(&report);
        assert!(
            seqs.contains(&2) && seqs.contains(&3),
            "{:?}",
            report.problems
        );
        assert!(
            !seqs.contains(&1) && !seqs.contains(&5),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn an_inserted_entry_is_reported_even_with_a_valid_hash() {
        let (db, log) = log_with(4);
        // Shift entries 3 and 4 up one and forge a well-formed entry 3 chained to entry 2.
        let (third, fourth) = (raw(&db, 3), raw(&db, 4));
        put_raw(&db, 5, &fourth);
        put_raw(&db, 4, &third);
        let second: AuditEntry = serde_json::from_slice(&raw(&db, 2)).expect("entry");
        let mut forged = second.clone();
        forged.seq = 3;
        forged.actor = Some("cli:mallory".into());
        forged.prev_hash = second.hash.clone();
        forged.hash = forged.computed_hash().expect("hash");
        put_raw(&db, 3, &serde_json::to_vec(&forged).expect("json"));

        let report = log.verify().expect("verify");
        assert!(!report.ok());
        assert!(problem_seqs(&report).contains(&4), "{:?}", report.problems);
    }

    #[test]
    fn corrupt_bytes_are_reported_not_fatal() {
        let (db, log) = log_with(5);
        put_raw(&db, 2, b"{\"seq\": 2, not json\xff");
        db.open_tree(TREE)
            .expect("tree")
            .insert(b"junk", b"x".as_slice())
            .expect("insert");

        let report = log.verify().expect("verify");
        assert_eq!(report.entries, 6);
        assert_eq!(problem_seqs(&report), [2, 0], "{:?}", report.problems);
        assert!(report.problems[0].what.contains("unreadable"));
        assert!(matches!(
            log.list(None, 0),
            Err(AuditError::Corrupt { seq: 2, .. })
        ));
    }

    #[test]
    fn an_unreadable_last_entry_stops_appends_but_not_verify() {
        let (db, log) = log_with(3);
        put_raw(&db, 3, b"garbage");
        drop(log);

        let log = AuditLog::open(&db).expect("opens despite the damage");
        let err = log
            .append(NewEntry::new(kind::RUN_STATE))
            .expect_err("refused");
        assert!(matches!(err, AuditError::Broken { seq: 3, .. }), "{err}");
        let report = log.verify().expect("verify");
        assert_eq!(problem_seqs(&report), [3]);
        assert_eq!(report.last_seq, 2);
    }

    #[test]
    fn a_truncated_tail_passes_the_chain_but_not_the_anchor() {
        // The documented limitation: only an anchor kept elsewhere shows truncation.
        let (db, log) = log_with(5);
        let anchor = log.verify().expect("verify");
        db.open_tree(TREE)
            .expect("tree")
            .remove(key(5))
            .expect("remove");

        let report = log.verify().expect("verify");
        assert!(report.ok());
        assert_ne!(
            (report.last_seq, &report.last_hash),
            (anchor.last_seq, &anchor.last_hash)
        );
    }

    #[test]
    fn concurrent_appends_chain_without_gaps() {
        let db = temp_db();
        let log = Arc::new(AuditLog::open(&db).expect("open"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        log.append(
                            NewEntry::new(kind::STEP_FINISHED)
                                .run(format!("run-{t}"))
                                .detail(json!({ "i": i })),
                        )
                        .expect("append");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }

        let report = log.verify().expect("verify");
        assert!(
            report.ok(),
            "{:?}",
            &report.problems[..report.problems.len().min(5)]
        );
        assert_eq!(report.entries, 4000);
        let seqs: Vec<u64> = log
            .list(None, 0)
            .expect("list")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=4000).collect::<Vec<_>>());
        let run_two = log.for_run("run-2").expect("for_run");
        assert_eq!(run_two.len(), 1000);
        let order: Vec<Option<u64>> = run_two.iter().map(|e| e.detail["i"].as_u64()).collect();
        assert_eq!(order, (0..1000).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_chained_and_all_or_nothing() {
        let (_db, log) = log_with(1);
        let written = log
            .append_batch(vec![
                NewEntry::new(kind::APPROVAL_REQUESTED)
                    .run("run-1")
                    .step("isolate"),
                NewEntry::new(kind::APPROVAL_DECIDED)
                    .run("run-1")
                    .step("isolate")
                    .actor("slack:U123")
                    .detail(json!({ "decision": "approved" })),
                NewEntry::new(kind::RUN_STATE).run("run-1"),
            ])
            .expect("batch");
        assert_eq!(written.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(written[1].prev_hash, written[0].hash);
        assert_eq!(written[2].prev_hash, written[1].hash);
        assert_eq!(log.list(None, 0).expect("list")[1..], written[..]);

        let mut deep = json!(0);
        for _ in 0..=MAX_DETAIL_DEPTH {
            deep = json!([deep]);
        }
        let refused = log.append_batch(vec![
            NewEntry::new(kind::STEP_STARTED),
            NewEntry::new(kind::STEP_FINISHED).detail(deep),
        ]);
        assert!(matches!(refused, Err(AuditError::TooDeep)));
        assert_eq!(log.list(None, 0).expect("list").len(), 4);
        let next = log
            .append(NewEntry::new(kind::STEP_STARTED))
            .expect("append");
        assert_eq!(next.seq, 5);
        assert!(log.verify().expect("verify").ok());
    }

    #[test]
    fn a_second_log_on_the_same_database_does_not_fork_the_chain() {
        let db = temp_db();
        let first = AuditLog::open(&db).expect("open");
        let second = AuditLog::open(&db).expect("open");
        first
            .append(NewEntry::new(kind::RUN_STATE))
            .expect("append");
        let later = second
            .append(NewEntry::new(kind::RUN_STATE))
            .expect("append");
        assert_eq!(later.seq, 2);
        let report = first.verify().expect("verify");
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.entries, 2);
    }

    #[test]
    fn list_pages_after_a_seq() {
        let (_db, log) = log_with(5);
        let page = log.list(Some(2), 2).expect("list");
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(log.list(Some(5), 10).expect("list").is_empty());
        assert!(log.list(Some(u64::MAX), 10).expect("list").is_empty());
        assert!(log.for_run("no-such-run").expect("for_run").is_empty());
    }
}
