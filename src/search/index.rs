//! The embedded store's search index: tantivy, in a folder beside the sled database.
//!
//! # Kept in step with the store
//!
//! The store thread writes, in the same atomic batch as the alerts and incidents it writes or
//! deletes, a change-log entry `s:<seq>` → their keys (`a:<id>`, `i:<id>`, a line each) in the
//! main tree, `seq` rising. Once the batch is fsynced it publishes `seq` as durable ([`Progress`]) and wakes
//! the indexer thread, which reads the log past the last sequence the index holds, re-reads each
//! changed record (deleting the document of one that is gone) and commits the index with that
//! sequence as the commit's payload; the store thread deletes the log up to it in its next batch.
//! The index therefore only ever holds durable writes, and:
//!
//! - a crash after the store's write and before the index commit loses nothing: the log entries
//!   are durable with the records, and at the next start the index, whose payload still names the
//!   older sequence, catches up from there before the first search is answered;
//! - a crash after the index commit and before the log is trimmed re-indexes a few records (a
//!   document is replaced, never doubled, since its key is deleted first);
//! - a missing, unreadable or older-schema index is rebuilt from the records (`cordon reindex`
//!   does the same on demand).
//!
//! A search first catches the index up to the durable sequence, so a search made after an ingest
//! returned sees its alerts.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tantivy::collector::TopDocs;
use tantivy::collector::sort_key::SortByStaticFastValue;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

use super::doc::{Doc, DocType};
use super::query::{Expr, Numeric, Op};
use super::{Cursor, HitRef, Request};
use crate::alert::{Alert, Incident};

/// The schema's version, in the commit payload: an index of another version is rebuilt.
const SCHEMA_VERSION: u32 = 1;
/// The index writer's memory.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;
/// At most this many log entries (group commits) are indexed per commit.
const BATCH: usize = 2_000;
/// How long the indexer thread sleeps when nobody wakes it.
const IDLE: Duration = Duration::from_secs(1);
/// How long the indexer thread lets durable writes gather before it indexes them: one tantivy
/// commit (a segment and its fsyncs) per this much intake rather than per group commit, which
/// kept the index's fsyncs off the store's disk time. A search does not wait for it: it catches
/// the index up itself.
const GATHER: Duration = Duration::from_secs(1);

/// The change log's key prefix in the main tree.
pub const LOG_PREFIX: &[u8] = b"s:";

/// A change-log key.
pub fn log_key(seq: u64) -> Vec<u8> {
    [LOG_PREFIX, &seq.to_be_bytes()].concat()
}

/// Whether a main-tree key is one whose changes are logged for the index.
pub fn is_indexed_key(key: &[u8]) -> bool {
    key.starts_with(b"a:") || key.starts_with(b"i:")
}

/// Index failures (the store reports them as backend errors).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Sled(#[from] sled::Error),
    #[error("search index: {0}")]
    Other(String),
}

/// The durable sequence, shared by the store thread (which raises it after each fsync) and the
/// index (which reads up to it), and the indexer thread's alarm clock.
#[derive(Default)]
pub struct Progress {
    durable: AtomicU64,
    /// The last log sequence the committed index holds: the store thread deletes the log up to
    /// it in its next batch.
    indexed: AtomicU64,
    wake: Mutex<bool>,
    bell: Condvar,
    stop: AtomicBool,
}

impl Progress {
    /// Records that every log entry up to `seq` is durable, and wakes the indexer.
    pub fn durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::SeqCst);
        if let Ok(mut w) = self.wake.lock() {
            *w = true;
            self.bell.notify_one();
        }
    }

    /// The last log sequence the committed index holds.
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::SeqCst)
    }

    fn wait(&self) {
        if let Ok(mut w) = self.wake.lock() {
            if !*w {
                w = match self.bell.wait_timeout(w, IDLE) {
                    Ok((w, _)) => w,
                    Err(_) => return,
                };
            }
            *w = false;
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    key: tantivy::schema::Field,
    terms: tantivy::schema::Field,
    words: tantivy::schema::Field,
    time: tantivy::schema::Field,
    tie: tantivy::schema::Field,
    severity: tantivy::schema::Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("whitespace")
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        terms: b.add_text_field("terms", STRING),
        words: b.add_text_field("words", words),
        time: b.add_i64_field("time", INDEXED | FAST),
        tie: b.add_i64_field("tie", INDEXED | FAST),
        severity: b.add_i64_field("severity", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// The folder of the index of the database at `db`: `<db>.search` beside it.
pub fn folder_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".search");
    db.with_file_name(name)
}

struct Writing {
    writer: IndexWriter<TantivyDocument>,
    /// The last log sequence the committed index holds.
    indexed: u64,
}

/// The index and its writer.
pub struct SledIndex {
    reader: IndexReader,
    writing: Mutex<Writing>,
    fields: Fields,
    tree: sled::Tree,
    progress: Arc<Progress>,
}

impl SledIndex {
    /// Opens the index in `folder` (rebuilding it when it is missing, unreadable or of another
    /// schema) over the store's main `tree`, and catches it up with the log.
    pub fn open(
        folder: &Path,
        tree: sled::Tree,
        progress: Arc<Progress>,
    ) -> Result<SledIndex, IndexError> {
        let (schema, fields) = schema();
        let opened = open_index(folder, &schema);
        let (index, indexed) = match opened {
            Ok(Some(found)) => found,
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, folder = %folder.display(), "search index unreadable; rebuilding it");
                }
                let _ = std::fs::remove_dir_all(folder);
                std::fs::create_dir_all(folder).map_err(|e| {
                    IndexError::Other(format!("cannot create {}: {e}", folder.display()))
                })?;
                let dir = tantivy::directory::MmapDirectory::open(folder)
                    .map_err(|e| IndexError::Other(e.to_string()))?;
                (Index::open_or_create(dir, schema)?, None)
            }
        };
        // Made on a thread of lowered priority, which its indexing and merging threads inherit.
        let writer = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    yield_to_intake();
                    index.writer_with_num_threads(1, WRITER_MEMORY)
                })
                .join()
        })
        .map_err(|_| IndexError::Other("the index writer could not start".into()))??;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // Everything in the log at open is durable (the store recovered it from disk).
        if let Some(last) = tree.scan_prefix(LOG_PREFIX).keys().next_back() {
            progress.durable(seq_of(&last?));
        }
        let this = SledIndex {
            reader,
            writing: Mutex::new(Writing {
                writer,
                indexed: indexed.unwrap_or(0),
            }),
            fields,
            tree,
            progress,
        };
        this.progress
            .indexed
            .fetch_max(indexed.unwrap_or(0), Ordering::SeqCst);
        if indexed.is_none() {
            this.rebuild()?;
        } else {
            this.catch_up()?;
        }
        Ok(this)
    }

    /// The durable sequence this index feeds on.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Starts the thread that catches the index up whenever the store says writes are durable.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let this = Arc::downgrade(self);
        let progress = self.progress.clone();
        std::thread::Builder::new()
            .name("cordon-index".into())
            .spawn(move || {
                yield_to_intake();
                while !progress.stop.load(Ordering::Relaxed) {
                    progress.wait();
                    std::thread::sleep(GATHER);
                    let Some(index) = this.upgrade() else { return };
                    if let Err(e) = index.catch_up() {
                        tracing::error!(error = %e, "search index update failed; retried at the next write");
                    }
                }
            })
            .map(drop)
    }

    /// Stops the indexer thread (after its current batch).
    pub fn stop(&self) {
        self.progress.stop.store(true, Ordering::Relaxed);
        self.progress.durable(0);
    }

    /// The last log sequence the index holds.
    pub fn indexed(&self) -> u64 {
        self.writing.lock().map(|w| w.indexed).unwrap_or(0)
    }

    /// Indexes the log's durable entries the index does not hold yet.
    pub fn catch_up(&self) -> Result<(), IndexError> {
        let mut w = self
            .writing
            .lock()
            .map_err(|_| IndexError::Other("the index writer panicked".into()))?;
        loop {
            let upto = self.progress.durable.load(Ordering::SeqCst);
            if upto <= w.indexed {
                return Ok(());
            }
            let mut last = w.indexed;
            let mut keys = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let range = log_key(w.indexed.saturating_add(1))..=log_key(upto);
            for row in self.tree.range(range).take(BATCH) {
                let (k, v) = row?;
                last = seq_of(&k);
                for key in v.split(|b| *b == b'\n') {
                    if seen.insert(key.to_vec()) {
                        keys.push(key.to_vec());
                    }
                }
            }
            if last == w.indexed {
                // Entries trimmed already (another index instance); nothing to read.
                w.indexed = upto;
                return Ok(());
            }
            for key in &keys {
                self.reindex_key(&w.writer, key)?;
            }
            commit(&mut w.writer, last)?;
            self.reader.reload()?;
            w.indexed = last;
            self.progress.indexed.fetch_max(last, Ordering::SeqCst);
        }
    }

    /// Drops the index's documents and indexes every alert and incident again; returns how many.
    pub fn rebuild(&self) -> Result<u64, IndexError> {
        let mut w = self
            .writing
            .lock()
            .map_err(|_| IndexError::Other("the index writer panicked".into()))?;
        // The durable head before reading: records the scan misses were logged after it, and are
        // caught up afterwards.
        let head = self.progress.durable.load(Ordering::SeqCst);
        w.writer.delete_all_documents()?;
        let mut count = 0u64;
        for prefix in [&b"a:"[..], &b"i:"[..]] {
            for row in self.tree.scan_prefix(prefix) {
                let (k, v) = row?;
                if let Some(doc) = doc_of(&k, &v) {
                    w.writer.add_document(self.tantivy_doc(&doc))?;
                    count += 1;
                }
            }
        }
        let head = head.max(w.indexed);
        commit(&mut w.writer, head)?;
        self.reader.reload()?;
        w.indexed = head;
        self.progress.indexed.fetch_max(head, Ordering::SeqCst);
        drop(w);
        self.catch_up()?;
        Ok(count)
    }

    fn reindex_key(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        key: &[u8],
    ) -> Result<(), IndexError> {
        let text = String::from_utf8_lossy(key);
        writer.delete_term(Term::from_field_text(self.fields.key, &text));
        if let Some(value) = self.tree.get(key)?
            && let Some(doc) = doc_of(key, &value)
        {
            writer.add_document(self.tantivy_doc(&doc))?;
        }
        Ok(())
    }

    fn tantivy_doc(&self, doc: &Doc) -> TantivyDocument {
        let f = self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.key, &doc.key);
        for term in &doc.terms {
            d.add_text(f.terms, term);
        }
        d.add_text(f.words, doc.words.join(" "));
        d.add_i64(f.time, doc.time);
        d.add_i64(f.tie, doc.tie);
        d.add_i64(f.severity, doc.severity);
        d
    }

    /// The documents matching the request, newest first.
    pub fn search(&self, request: &Request) -> Result<Vec<HitRef>, IndexError> {
        self.catch_up()?;
        let mut query = self.compile(&request.expr);
        if let Some(after) = request.after {
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, self.before(after)),
            ]));
        }
        let searcher = self.reader.searcher();
        let by = (
            (SortByStaticFastValue::<i64>::for_field("time"), Order::Desc),
            (SortByStaticFastValue::<i64>::for_field("tie"), Order::Desc),
        );
        let top = searcher.search(
            &*query,
            &TopDocs::with_limit(request.limit.max(1)).order_by(by),
        )?;
        let mut hits = Vec::with_capacity(top.len());
        for ((time, tie), address) in top {
            let stored: TantivyDocument = searcher.doc(address)?;
            let key = stored
                .get_first(self.fields.key)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let Some((doc_type, id)) = DocType::of_key(key) else {
                continue;
            };
            hits.push(HitRef {
                doc_type,
                id: id.to_owned(),
                time: time.unwrap_or_default(),
                tie: tie.unwrap_or_default(),
            });
        }
        Ok(hits)
    }

    /// Documents ordered after the cursor: earlier, or as early with a smaller tie.
    fn before(&self, c: Cursor) -> Box<dyn Query> {
        let f = self.fields;
        let earlier = RangeQuery::new(
            Bound::Unbounded,
            Bound::Excluded(Term::from_field_i64(f.time, c.time)),
        );
        let same = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_i64(f.time, c.time),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Excluded(Term::from_field_i64(f.tie, c.tie)),
                )),
            ),
        ]);
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, Box::new(earlier) as Box<dyn Query>),
            (Occur::Should, Box::new(same)),
        ]))
    }

    fn compile(&self, expr: &Expr) -> Box<dyn Query> {
        let f = self.fields;
        match expr {
            Expr::All => Box::new(AllQuery),
            Expr::Term {
                term,
                prefix: false,
            } => Box::new(TermQuery::new(
                Term::from_field_text(f.terms, term),
                IndexRecordOption::Basic,
            )),
            Expr::Term { term, prefix: true } => {
                // Every term starting with `term`: from it up to it followed by the last char.
                let upper = format!("{term}\u{10FFFF}\u{10FFFF}\u{10FFFF}");
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_text(f.terms, term)),
                    Bound::Included(Term::from_field_text(f.terms, &upper)),
                ))
            }
            Expr::Words(words) => Box::new(BooleanQuery::new(
                words
                    .iter()
                    .map(|w| {
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(
                                Term::from_field_text(f.words, w),
                                IndexRecordOption::Basic,
                            )) as Box<dyn Query>,
                        )
                    })
                    .collect(),
            )),
            Expr::Cmp { field, op, value } => {
                let field = match field {
                    Numeric::Severity => f.severity,
                    Numeric::Time => f.time,
                };
                let t = |v| Term::from_field_i64(field, v);
                let (lo, hi) = match op {
                    Op::Eq => {
                        return Box::new(TermQuery::new(t(*value), IndexRecordOption::Basic));
                    }
                    Op::Ge => (Bound::Included(t(*value)), Bound::Unbounded),
                    Op::Gt => (Bound::Excluded(t(*value)), Bound::Unbounded),
                    Op::Le => (Bound::Unbounded, Bound::Included(t(*value))),
                    Op::Lt => (Bound::Unbounded, Bound::Excluded(t(*value))),
                };
                Box::new(RangeQuery::new(lo, hi))
            }
            Expr::And(parts) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                let mut positive = false;
                for part in parts {
                    match part {
                        Expr::Not(inner) => clauses.push((Occur::MustNot, self.compile(inner))),
                        other => {
                            positive = true;
                            clauses.push((Occur::Must, self.compile(other)));
                        }
                    }
                }
                if !positive {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Expr::Or(parts) => Box::new(BooleanQuery::new(
                parts
                    .iter()
                    .map(|p| (Occur::Should, self.compile(p)))
                    .collect(),
            )),
            Expr::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.compile(inner)),
            ])),
        }
    }
}

/// Lowers the indexer thread's CPU priority (nice 10): when the cores are busy, intake, whose
/// answers wait on the store, goes first, and the index catches up in the gaps (a search catches
/// it up on its own thread, at normal priority, before answering).
fn yield_to_intake() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; on failure the thread keeps
    // its priority, which is only slower for intake.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Opens an existing index: `Some((index, last sequence))` when it is there and of this schema.
fn open_index(folder: &Path, schema: &Schema) -> Result<Option<(Index, Option<u64>)>, IndexError> {
    if !folder.join("meta.json").exists() {
        return Ok(None);
    }
    let index = Index::open_in_dir(folder)?;
    if index.schema() != *schema {
        return Err(IndexError::Other("the index has another schema".into()));
    }
    let metas = index.load_metas()?;
    let seq = metas
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter(|p| p["v"] == SCHEMA_VERSION)
        .and_then(|p| p["seq"].as_u64());
    match seq {
        Some(seq) => Ok(Some((index, Some(seq)))),
        None => Err(IndexError::Other(
            "the index has no sequence of this version".into(),
        )),
    }
}

fn commit(writer: &mut IndexWriter<TantivyDocument>, seq: u64) -> Result<(), IndexError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&serde_json::json!({ "v": SCHEMA_VERSION, "seq": seq }).to_string());
    prepared.commit()?;
    Ok(())
}

fn seq_of(key: &[u8]) -> u64 {
    key.get(LOG_PREFIX.len()..LOG_PREFIX.len() + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The document of a stored record (`None` for a record that does not decode).
fn doc_of(key: &[u8], value: &[u8]) -> Option<Doc> {
    if key.starts_with(b"a:") {
        serde_json::from_slice::<Alert>(value)
            .ok()
            .map(|a| Doc::from_alert(&a))
    } else if key.starts_with(b"i:") {
        serde_json::from_slice::<Incident>(value)
            .ok()
            .map(|i| Doc::from_incident(&i))
    } else {
        None
    }
}
