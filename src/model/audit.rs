//! Audit entries: what the tamper-evident audit log holds, how an entry is hashed and chained to
//! the one before it, and how a stored chain is checked. Pure: the store keeps the entries (the
//! sled tree in `store::sled_audit`, the PostgreSQL table in `store::postgres_audit`), and both
//! chain with [`next_entries`] (or [`chain`]) and verify with [`ChainCheck`], so a chain verifies
//! the same on both and copies between them unchanged. `crate::audit` re-exports all of it.
//!
//! Sequence numbers start at 1 and have no gaps; the first entry's `prev_hash` is
//! [`GENESIS_HASH`]; an entry is stored as its JSON.
//!
//! # What verifying catches, and what it cannot
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
//! # Secrets
//!
//! Callers must never put a secret in an entry: not in `detail`, not in `actor`, nowhere. The log
//! is meant to be read, copied and handed to auditors, and an entry can never be removed without
//! breaking the chain.

use chrono::{DateTime, SubsecRound, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::Detail;
pub use super::event::EventKind;

/// The `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The deepest nesting of arrays and objects accepted in `detail`. The JSON reader refuses
/// anything much deeper, so a deeper entry could be written but never read back or verified.
pub const MAX_DETAIL_DEPTH: usize = 64;

/// A few kinds by the names callers used before [`EventKind`] had them all.
pub mod kind {
    use super::EventKind;

    pub const RUN_STATE: EventKind = EventKind::RunState;
    pub const STEP_STARTED: EventKind = EventKind::StepStarted;
    pub const STEP_FINISHED: EventKind = EventKind::StepFinished;
    pub const APPROVAL_REQUESTED: EventKind = EventKind::ApprovalRequested;
    pub const APPROVAL_DECIDED: EventKind = EventKind::ApprovalDecided;
    pub const APPROVAL_REFUSED: EventKind = EventKind::ApprovalRefused;
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
    /// What happened: an [`EventKind`]'s name, kept as the string it was stored as (any kind,
    /// also one this version does not know, reads, hashes and copies unchanged);
    /// [`AuditEntry::event_kind`] reads it.
    pub kind: String,
    pub run_id: Option<String>,
    pub step: Option<String>,
    /// Who: `cli:alice`, `slack:U123`, `system`.
    pub actor: Option<String>,
    /// The facts of the event (state from/to, outcome, reason), shaped by the kind
    /// ([`AuditEntry::typed_detail`]). Never a secret.
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

    /// What happened.
    pub fn event_kind(&self) -> EventKind {
        EventKind::parse(&self.kind)
    }

    /// The kind with the detail read into its shape.
    pub fn typed_detail(&self) -> Detail {
        Detail::parse(&self.event_kind(), &self.detail)
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

/// A time as the log writes it (`at` of entries, and of signed checkpoints): RFC 3339, UTC, six
/// fractional digits, `Z`.
pub fn format_time(at: &DateTime<Utc>) -> String {
    micros::format(at)
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
    pub kind: EventKind,
    pub run_id: Option<String>,
    pub step: Option<String>,
    /// Who: `cli:alice`, `slack:U123`, `system`.
    pub actor: Option<String>,
    /// The facts of the event; `null` when there are none. Keep floats out (see [`AuditEntry`]).
    pub detail: Value,
}

impl NewEntry {
    /// An entry of `kind` with no run, step or actor and `null` detail.
    pub fn new(kind: impl Into<EventKind>) -> NewEntry {
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
    /// A stored entry cannot be read; verifying lists every such entry.
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
    /// Another writer of the same log kept taking the next sequence number.
    #[error("another writer keeps appending to the audit log; open it once and share it")]
    Contended,
    #[error("cannot encode an audit entry: {0}")]
    Encode(String),
}

/// One thing wrong in the stored log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The result of verifying a stored log ([`ChainCheck`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Checks a stored log's chain one stored entry at a time, in key order, for any backend (the
/// sled tree, the PostgreSQL store's `audit` table), so all report the same problems.
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
/// bytes; `None` for an empty log), chained on from it. Refuses a `detail` nested too deep and a
/// log whose last entry is unreadable ([`AuditError::Broken`]).
pub fn next_entries(
    entries: &[NewEntry],
    last: Option<(u64, &[u8])>,
) -> Result<Vec<AuditEntry>, AuditError> {
    check_depth(entries)?;
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
    chain(entries, first, prev_hash)
}

/// Reads the entry stored under `seq`; unreadable bytes are an [`AuditError::Corrupt`].
pub fn decode_entry(seq: u64, stored: &[u8]) -> Result<AuditEntry, AuditError> {
    serde_json::from_slice(stored).map_err(|e| AuditError::Corrupt {
        seq,
        reason: e.to_string(),
    })
}
/// Builds `entries` as the log's entries `first`, `first + 1`, … chained from `prev_hash`, the
/// hash of entry `first - 1` ([`GENESIS_HASH`] before the first), all appended now. Does not check
/// their depth ([`check_depth`] does).
pub fn chain(
    entries: &[NewEntry],
    first: u64,
    mut prev_hash: String,
) -> Result<Vec<AuditEntry>, AuditError> {
    let at = Utc::now().trunc_subsecs(6);
    let mut written = Vec::with_capacity(entries.len());
    let mut seq = first;
    for (i, new) in entries.iter().enumerate() {
        if i > 0 {
            seq = seq.checked_add(1).ok_or_else(|| AuditError::Broken {
                seq,
                reason: "sequence numbers are exhausted".into(),
            })?;
        }
        let mut entry = AuditEntry {
            seq,
            at,
            kind: new.kind.as_str().to_owned(),
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
    Ok(written)
}

/// Refuses, with [`AuditError::TooDeep`], entries whose `detail` is nested deeper than
/// [`MAX_DETAIL_DEPTH`]: such an entry could be written but never read back.
pub fn check_depth(entries: &[NewEntry]) -> Result<(), AuditError> {
    if entries.iter().any(|e| too_deep(&e.detail)) {
        return Err(AuditError::TooDeep);
    }
    Ok(())
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
    use serde_json::json;

    use super::*;

    #[test]
    fn the_hash_is_the_documented_canonical_json() {
        // Pinned against the Python recipe in `AuditEntry`'s documentation; if this changes,
        // every existing log stops verifying.
        let entry = AuditEntry {
            seq: 7,
            at: "2024-05-01T12:00:00.123456Z".parse().expect("time"),
            kind: "approval.decided".into(),
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
    fn entries_chain_from_the_genesis_and_on_from_the_last_stored_one() {
        let first = next_entries(
            &[
                NewEntry::new(kind::RUN_STATE).run("run-1"),
                NewEntry::new(kind::STEP_STARTED)
                    .run("run-1")
                    .step("isolate"),
            ],
            None,
        )
        .expect("chain");
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(first[0].prev_hash, GENESIS_HASH);
        assert_eq!(first[1].prev_hash, first[0].hash);
        let stored = serde_json::to_vec(&first[1]).expect("json");
        let next =
            next_entries(&[NewEntry::new(kind::STEP_FINISHED)], Some((2, &stored))).expect("chain");
        assert_eq!((next[0].seq, &next[0].prev_hash), (3, &first[1].hash));

        let mut check = ChainCheck::new();
        for entry in first.iter().chain(&next) {
            check.entry(entry.seq, &serde_json::to_vec(entry).expect("json"));
        }
        let report = check.finish();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.entries, report.last_seq), (3, 3));
        assert_eq!(report.last_hash, next[0].hash);
    }

    #[test]
    fn entries_are_refused_too_deep_or_after_an_unreadable_last_entry() {
        let mut deep = json!(0);
        for _ in 0..=MAX_DETAIL_DEPTH {
            deep = json!([deep]);
        }
        let refused = next_entries(&[NewEntry::new(kind::STEP_STARTED).detail(deep)], None);
        assert!(matches!(refused, Err(AuditError::TooDeep)));
        let broken = next_entries(&[NewEntry::new(kind::RUN_STATE)], Some((4, b"garbage")));
        assert!(matches!(broken, Err(AuditError::Broken { seq: 4, .. })));
    }
}
