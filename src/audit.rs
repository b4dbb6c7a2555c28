//! The tamper-evident audit log: every decision a person made and everything a run did, in order,
//! each entry carrying the hash of the one before it.
//!
//! Entries live in the sled tree `audit`, keyed by their sequence number (8 bytes, big-endian, so
//! key order is append order), each value the JSON of an [`AuditEntry`]. Sequence numbers start at
//! 1 and have no gaps; the first entry's `prev_hash` is [`GENESIS_HASH`]. The PostgreSQL store keeps
//! the same JSON in its `audit` table and chains with [`next_entries`] and checks with
//! [`ChainCheck`], so a chain verifies the same on both and copies between them unchanged.
//!
//! # What [`AuditLog::verify`] catches, and what it cannot
//!
//! Because every entry names the hash of the one before, editing the stored log shows up as long
//! as the editor does not also rewrite everything after the edit: a changed entry no longer matches
//! its hash, a removed one leaves a gap and a broken link, and an inserted or reordered one sits
//! under the wrong sequence number and breaks the link after it.
//!
//! A chain alone cannot notice the newest entries being cut off, nor the tail being rewritten
//! with freshly computed hashes (there is no secret in the hash; anyone who can write the store
//! can recompute it). What makes those visible is an anchor kept outside the store: record the
//! [`VerifyReport::last_seq`] and [`VerifyReport::last_hash`] somewhere the store's writers cannot
//! change (a ticket, a chat message, a WORM bucket); a later log that does not contain that entry
//! with that hash has been truncated or rewritten.
//!
//! # Durability
//!
//! Appends are written to the tree but not flushed. sled keeps one log for all trees of a
//! database and recovers a prefix of it after a crash, so an entry appended before a state change
//! in the same database is durable whenever that change is: the caller's flush (the store's) makes
//! both durable together, with one fsync.
//!
//! # Secrets
//!
//! Callers must never put a secret in an entry: not in `detail`, not in `actor`, nowhere. The log
//! is meant to be read, copied and handed to auditors, and an entry can never be removed without
//! breaking the chain.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, SubsecRound, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The name of the sled tree the log lives in.
const TREE: &str = "audit";

/// The deepest nesting of arrays and objects accepted in `detail`. The JSON reader refuses
/// anything much deeper, so a deeper entry could be written but never read back or verified.
pub const MAX_DETAIL_DEPTH: usize = 64;

/// How often an append re-reads the end of the log after finding its place taken by another
/// writer before it gives up.
const MAX_ATTEMPTS: usize = 8;

/// The kinds of entry Cordon writes, so callers do not misspell them.
pub mod kind {
    /// A run changed state (`detail` says from what to what).
    pub const RUN_STATE: &str = "run.state";
    /// A step of a run started.
    pub const STEP_STARTED: &str = "step.started";
    /// A step of a run finished, successfully or not.
    pub const STEP_FINISHED: &str = "step.finished";
    /// A run asked a person to approve a step.
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    /// A person approved or rejected a step.
    pub const APPROVAL_DECIDED: &str = "approval.decided";
    /// A decision was turned away, for example because its author may not approve.
    pub const APPROVAL_REFUSED: &str = "approval.refused";
}

/// One audit entry, as stored.
///
/// # The hash
///
/// `hash` is the lowercase hex SHA-256 of the entry's canonical bytes: the entry as compact JSON
/// (no whitespace) **without** the `hash` field, with the keys of every object — the entry itself
/// and every object inside `detail` — sorted by their UTF-8 bytes. That is, in this order:
/// `actor, at, detail, kind, prev_hash, run_id, seq, step`. Absent options are `null`; `at` is
/// RFC 3339 in UTC with exactly six fractional digits and a `Z` (`2024-05-01T12:00:00.123456Z`),
/// which is also how it is stored; strings are UTF-8 with only `"`, `\` and control characters
/// escaped (`\b \f \n \r \t`, the others as `\u00xx`). Outside Rust, this reproduces it for any
/// entry whose `detail` holds no floating-point numbers (number formatting differs between
/// languages; keep floats out of `detail` or write them as strings):
///
/// ```text
/// import hashlib, json
/// def entry_hash(entry):  # entry: one stored value, parsed with json.loads
///     body = {k: v for k, v in entry.items() if k != "hash"}
///     text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
///     return hashlib.sha256(text.encode("utf-8")).hexdigest()
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When the entry was appended, to the microsecond.
    #[serde(with = "micros")]
    pub at: DateTime<Utc>,
    /// What happened: one of the [`kind`] constants.
    pub kind: String,
    pub run_id: Option<String>,
    pub step: Option<String>,
    /// Who: `cli:alice`, `slack:U123`, `system`.
    pub actor: Option<String>,
    /// The facts of the event (state from/to, outcome, reason). Never a secret.
    pub detail: Value,
    /// The `hash` of the entry before this one; [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// This entry's hash; see the type's documentation for what it covers.
    pub hash: String,
}

impl AuditEntry {
    /// The bytes [`AuditEntry::hash`] is the SHA-256 of (the type's documentation defines them).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        // Field order is the sorted order of the keys; `detail` is sorted by `Sorted`.
        #[derive(Serialize)]
        struct Canonical<'a> {
            actor: &'a Option<String>,
            at: String,
            detail: Sorted<'a>,
            kind: &'a str,
            prev_hash: &'a str,
            run_id: &'a Option<String>,
            seq: u64,
            step: &'a Option<String>,
        }
        serde_json::to_vec(&Canonical {
            actor: &self.actor,
            at: micros::format(&self.at),
            detail: Sorted(&self.detail),
            kind: &self.kind,
            prev_hash: &self.prev_hash,
            run_id: &self.run_id,
            seq: self.seq,
            step: &self.step,
        })
        .map_err(|e| AuditError::Encode(e.to_string()))
    }

    /// The hash this entry's content calls for, to compare with the stored [`AuditEntry::hash`].
    pub fn computed_hash(&self) -> Result<String, AuditError> {
        Ok(hex::encode(Sha256::digest(self.canonical_bytes()?)))
    }
}

/// A JSON value written with the keys of every object sorted, whatever order the map keeps them
/// in (serde_json keeps insertion order when any crate in the build enables `preserve_order`).
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// `at` as stored and hashed: RFC 3339, UTC, six fractional digits, `Z`. Reading accepts any
/// RFC 3339 time.
mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(deserializer)
    }
}

/// What a caller records; the log adds the sequence number, time and hashes.
///
/// Never put a secret in any field: the log is read by auditors and cannot forget.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// One of the [`kind`] constants.
    pub kind: String,
    pub run_id: Option<String>,
    pub step: Option<String>,
    /// Who: `cli:alice`, `slack:U123`, `system`.
    pub actor: Option<String>,
    /// The facts of the event; `null` when there are none. Keep floats out (see [`AuditEntry`]).
    pub detail: Value,
}

impl NewEntry {
    /// An entry of `kind` with no run, step or actor and `null` detail.
    pub fn new(kind: impl Into<String>) -> NewEntry {
        NewEntry {
            kind: kind.into(),
            run_id: None,
            step: None,
            actor: None,
            detail: Value::Null,
        }
    }

    /// Sets the run the entry is about.
    pub fn run(mut self, run_id: impl Into<String>) -> NewEntry {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sets the step the entry is about.
    pub fn step(mut self, step: impl Into<String>) -> NewEntry {
        self.step = Some(step.into());
        self
    }

    /// Sets who acted.
    pub fn actor(mut self, actor: impl Into<String>) -> NewEntry {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the facts of the event.
    pub fn detail(mut self, detail: Value) -> NewEntry {
        self.detail = detail;
        self
    }
}

/// Audit log failures. None carries entry content.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O failed: {0}")]
    Backend(String),
    /// A stored entry cannot be read; [`AuditLog::verify`] lists every such entry.
    #[error("audit entry {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// The end of the log cannot be read, so nothing can be chained onto it. Appending stops
    /// rather than start a second chain that would hide the damage.
    #[error(
        "cannot append to the audit log: its last entry ({seq}) is unreadable ({reason}); \
         run `cordon audit verify`"
    )]
    Broken { seq: u64, reason: String },
    /// `detail` is nested deeper than [`MAX_DETAIL_DEPTH`]; nothing of the append was written.
    #[error("audit entry detail is nested deeper than {MAX_DETAIL_DEPTH} levels")]
    TooDeep,
    /// Another [`AuditLog`] on the same database kept taking the next sequence number.
    #[error("another writer keeps appending to the audit log; open it once and share it")]
    Contended,
    #[error("cannot encode an audit entry: {0}")]
    Encode(String),
}

/// One thing wrong in the stored log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number (the key) where it was found; 0 for a key that is not one.
    pub seq: u64,
    /// What is wrong, for a person.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.what)
    }
}

/// The result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many entries are stored, readable or not.
    pub entries: u64,
    /// The sequence number of the last readable entry (0 when there is none).
    pub last_seq: u64,
    /// The hash of that entry ([`GENESIS_HASH`] when there is none). Record it with `last_seq`
    /// outside the store: it is what shows a later truncation or rewrite of the tail, which the
    /// chain alone cannot.
    pub last_hash: String,
    /// Everything wrong, in log order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as the API and the CLI show it.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok(),
            "entries": self.entries,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "problems": self.problems,
        })
    }
}

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

    /// Appends one entry and returns it as stored. Not flushed: the caller's flush of the
    /// database makes it durable, together with the state change it records.
    pub fn append(&self, entry: NewEntry) -> Result<AuditEntry, AuditError> {
        let mut written = self.append_batch(vec![entry])?;
        written
            .pop()
            .ok_or_else(|| AuditError::Encode("the append wrote nothing".into()))
    }

    /// Appends `entries` in order, atomically: either all are written, chained one to the next,
    /// or none is. Not flushed, as [`AuditLog::append`].
    pub fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<AuditEntry>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if entries.iter().any(|e| too_deep(&e.detail)) {
            return Err(AuditError::TooDeep);
        }
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
            let (written, next) = chain(&entries, first, prev_hash)?;
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
                    *tail = next;
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

/// Checks a stored log's chain one stored entry at a time, in key order, for any backend: the
/// sled tree here, and the PostgreSQL store's `audit` table, so both report the same problems.
pub struct ChainCheck {
    report: VerifyReport,
    expected_seq: u64,
    /// The hash the next entry must name; `None` right after an unreadable entry, whose hash is
    /// unknown (that entry is reported already).
    prev_hash: Option<String>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck::new()
    }
}

impl ChainCheck {
    /// A check at the start of the log.
    pub fn new() -> ChainCheck {
        ChainCheck {
            report: VerifyReport {
                entries: 0,
                last_seq: 0,
                last_hash: GENESIS_HASH.to_string(),
                problems: Vec::new(),
            },
            expected_seq: 1,
            prev_hash: Some(GENESIS_HASH.to_string()),
        }
    }

    /// A stored key that is not a sequence number.
    pub fn bad_key(&mut self, key: &[u8]) {
        self.report.entries += 1;
        self.report.problems.push(Problem {
            seq: 0,
            what: format!(
                "a key that is not a sequence number: {}",
                hex::encode(&key[..key.len().min(32)])
            ),
        });
        self.prev_hash = None;
    }

    /// The entry stored under sequence number `seq`, as its stored bytes.
    pub fn entry(&mut self, seq: u64, stored: &[u8]) {
        let report = &mut self.report;
        report.entries += 1;
        if seq > self.expected_seq {
            let what = if seq - self.expected_seq == 1 {
                "missing (removed)".to_string()
            } else {
                format!("missing, with every entry up to {} (removed)", seq - 1)
            };
            report.problems.push(Problem {
                seq: self.expected_seq,
                what,
            });
        }
        self.expected_seq = seq.saturating_add(1);
        let entry: AuditEntry = match serde_json::from_slice(stored) {
            Ok(entry) => entry,
            Err(e) => {
                report.problems.push(Problem {
                    seq,
                    what: format!("unreadable: {e}"),
                });
                self.prev_hash = None;
                return;
            }
        };
        if entry.seq != seq {
            report.problems.push(Problem {
                seq,
                what: format!("holds entry {}: inserted, moved or reordered", entry.seq),
            });
        }
        if let Some(prev) = &self.prev_hash
            && entry.prev_hash != *prev
        {
            report.problems.push(Problem {
                seq,
                what: format!(
                    "does not follow the entry before it: prev_hash is {}, the entry before has hash {prev}",
                    entry.prev_hash
                ),
            });
        }
        match entry.computed_hash() {
            Ok(computed) if computed == entry.hash => {}
            Ok(computed) => report.problems.push(Problem {
                seq,
                what: format!(
                    "changed after it was written: its content hashes to {computed}, its stored hash is {}",
                    entry.hash
                ),
            }),
            Err(e) => report.problems.push(Problem {
                seq,
                what: e.to_string(),
            }),
        }
        self.prev_hash = Some(entry.hash.clone());
        report.last_seq = seq;
        report.last_hash = entry.hash;
    }

    /// The report on everything seen.
    pub fn finish(self) -> VerifyReport {
        self.report
    }
}

/// The entries to store after the log's last stored entry (`last`: its sequence number and stored
/// bytes; `None` for an empty log), chained on from it, for a backend that keeps the log itself.
/// Refuses, as [`AuditLog::append_batch`] does, a `detail` nested too deep and a log whose last
/// entry is unreadable.
pub fn next_entries(
    entries: &[NewEntry],
    last: Option<(u64, &[u8])>,
) -> Result<Vec<AuditEntry>, AuditError> {
    if entries.iter().any(|e| too_deep(&e.detail)) {
        return Err(AuditError::TooDeep);
    }
    let (first, prev_hash) = match last {
        None => (1, GENESIS_HASH.to_string()),
        Some((seq, stored)) => {
            let entry = decode_entry(seq, stored).map_err(|e| match e {
                AuditError::Corrupt { seq, reason } => AuditError::Broken { seq, reason },
                other => other,
            })?;
            let next = seq.checked_add(1).ok_or_else(|| AuditError::Broken {
                seq,
                reason: "sequence numbers are exhausted".into(),
            })?;
            (next, entry.hash)
        }
    };
    Ok(chain(entries, first, prev_hash)?.0)
}

/// Reads the entry stored under `seq`; unreadable bytes are an [`AuditError::Corrupt`].
pub fn decode_entry(seq: u64, stored: &[u8]) -> Result<AuditEntry, AuditError> {
    serde_json::from_slice(stored).map_err(|e| AuditError::Corrupt {
        seq,
        reason: e.to_string(),
    })
}

/// Builds `entries` as the log's entries `first`, `first + 1`, … chained from `prev_hash`, and
/// the tail after them.
fn chain(
    entries: &[NewEntry],
    first: u64,
    mut prev_hash: String,
) -> Result<(Vec<AuditEntry>, Tail), AuditError> {
    let exhausted = |seq| AuditError::Broken {
        seq,
        reason: "sequence numbers are exhausted".into(),
    };
    let at = Utc::now().trunc_subsecs(6);
    let mut written = Vec::with_capacity(entries.len());
    let mut seq = first;
    for (i, new) in entries.iter().enumerate() {
        if i > 0 {
            seq = seq.checked_add(1).ok_or_else(|| exhausted(seq))?;
        }
        let mut entry = AuditEntry {
            seq,
            at,
            kind: new.kind.clone(),
            run_id: new.run_id.clone(),
            step: new.step.clone(),
            actor: new.actor.clone(),
            detail: new.detail.clone(),
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.computed_hash()?;
        prev_hash = entry.hash.clone();
        written.push(entry);
    }
    let tail = match seq.checked_add(1) {
        Some(next) => Tail::Next {
            seq: next,
            prev_hash,
        },
        None => Tail::Broken {
            seq,
            reason: "sequence numbers are exhausted".into(),
        },
    };
    Ok((written, tail))
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
    let seq = key_seq(&k).unwrap_or(entry.seq);
    Ok(match seq.checked_add(1) {
        Some(next) => Tail::Next {
            seq: next,
            prev_hash: entry.hash,
        },
        None => Tail::Broken {
            seq,
            reason: "sequence numbers are exhausted".into(),
        },
    })
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

/// Whether `value` nests arrays and objects deeper than [`MAX_DETAIL_DEPTH`]. Iterative, so no
/// value can exhaust the stack.
fn too_deep(value: &Value) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if depth >= MAX_DETAIL_DEPTH => return true,
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

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
    fn the_hash_is_the_documented_canonical_json() {
        // Pinned against the Python recipe in `AuditEntry`'s documentation; if this changes,
        // every existing log stops verifying.
        let entry = AuditEntry {
            seq: 7,
            at: "2024-05-01T12:00:00.123456Z".parse().expect("time"),
            kind: kind::APPROVAL_DECIDED.into(),
            run_id: Some("run-1".into()),
            step: Some("isolate".into()),
            actor: Some("slack:U123".into()),
            detail: json!({ "z": 1, "a": { "y": "é\n\u{1}", "b": [true, null] } }),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let canonical = String::from_utf8(entry.canonical_bytes().expect("bytes")).expect("utf8");
        assert_eq!(
            canonical,
            r#"{"actor":"slack:U123","at":"2024-05-01T12:00:00.123456Z","detail":{"a":{"b":[true,null],"y":"é\n\u0001"},"z":1},"kind":"approval.decided","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","run_id":"run-1","seq":7,"step":"isolate"}"#
        );
        assert_eq!(
            entry.computed_hash().expect("hash"),
            "b2300a5ab360006d4b1b597a6194b293a5e332137ea5af150c5c40420a1762f7"
        );
        // Stored `at` is written the way it is hashed, so outside tools can copy it as is.
        let stored: Value = serde_json::to_value(&entry).expect("json");
        assert_eq!(stored["at"], "2024-05-01T12:00:00.123456Z");
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
