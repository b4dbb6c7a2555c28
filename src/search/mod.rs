//! Search and pivots over what Cordon stores (docs/search.md).
//!
//! One query language ([`query`]) for the CLI (`cordon search`), the API (`GET /v1/search`) and
//! the console. Each alert and incident is one [`doc::Doc`] (its `field=value` terms, its free-text
//! words, its time and severity), built by the same code for both backends:
//!
//! - on sled, [`index::SledIndex`] keeps them in a tantivy index in a folder beside the database,
//!   fed from a change log the store writes in the same atomic batch as the records;
//! - on PostgreSQL, [`sql`] keeps them in the `search_docs` table (GIN indexes over the terms and
//!   a tsvector of the words, a trigram index for prefix terms), written in the same transaction.
//!
//! Both order hits newest first by `(time, tie)` and page with the same opaque cursor, so a query
//! answers the same hits in the same order on both (`tests/search.rs`). [`hunt`] builds the
//! "everything about this entity" pivot on top.

pub mod doc;
pub mod hunt;
pub mod index;
pub mod query;
pub mod sql;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use doc::{Doc, DocType};
pub use query::{Expr, Numeric, Op, ParseError};

use crate::store::{Store, StoreError};

/// The most hits one page holds.
pub const MAX_LIMIT: usize = 1000;
/// Hits per page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// Where a page ends: the `(time, tie)` of its last hit. Opaque to callers (base64url).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time: i64,
    pub tie: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("v1:{}:{}", self.time, self.tie))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.strip_prefix("v1:")?.split(':');
        let time = parts.next()?.parse().ok()?;
        let tie = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Cursor { time, tie })
    }
}

/// One hit as a backend answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitRef {
    pub doc_type: DocType,
    pub id: String,
    pub time: i64,
    pub tie: i64,
}

/// What a backend is asked: the documents matching `expr` after `after`, newest first, at most
/// `limit`.
#[derive(Debug, Clone)]
pub struct Request {
    pub expr: Expr,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// A search as the CLI and the API take it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Search {
    #[serde(default, alias = "query")]
    pub q: String,
    /// Only documents at or after this time (RFC 3339, a date, or `7d` ago).
    #[serde(default)]
    pub since: Option<String>,
    /// Only documents before this time.
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the page before.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Why a search was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query does not parse: the column (1-based, in characters) and what is wrong.
    #[error("query: column {column}: {message}")]
    Query { column: usize, message: String },
    /// A parameter beside the query is wrong.
    #[error("{name}: {message}")]
    Param { name: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ParseError> for SearchError {
    fn from(e: ParseError) -> SearchError {
        SearchError::Query {
            column: e.column,
            message: e.message,
        }
    }
}

/// One hit, with what a list shows of it (the full record is at `/v1/alerts/{id}` or
/// `/v1/incidents/{id}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    #[serde(rename = "type")]
    pub doc_type: DocType,
    pub id: String,
    pub time: DateTime<Utc>,
    pub title: String,
    pub severity: u8,
    /// The alert's source, or the incident's sources joined by `,`.
    pub source: String,
    /// The alert's kind (empty for an incident).
    pub kind: String,
    /// The alert's incident, or the incident itself.
    pub incident_id: String,
    /// The alert's state at its source, or the incident's status.
    pub status: String,
}

/// A page of hits and the cursor of the next page (none when this is the last).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Page {
    pub hits: Vec<Hit>,
    pub next_cursor: Option<String>,
}

/// Parses the search, bounds it by `since`/`until`, and asks `store` for one page (at `now`, which
/// relative times count back from).
pub async fn run(
    store: &dyn Store,
    search: &Search,
    now: DateTime<Utc>,
) -> Result<Page, SearchError> {
    let request = request(search, now)?;
    let limit = request.limit;
    let mut asked = request.clone();
    asked.limit = limit + 1;
    let mut refs = store.search(&asked).await?;
    let more = refs.len() > limit;
    refs.truncate(limit);
    let next_cursor = more
        .then(|| refs.last())
        .flatten()
        .map(|h| Cursor {
            time: h.time,
            tie: h.tie,
        })
        .map(Cursor::encode);
    let mut hits = Vec::with_capacity(refs.len());
    for r in refs {
        if let Some(hit) = hydrate(store, &r).await? {
            hits.push(hit);
        }
    }
    Ok(Page { hits, next_cursor })
}

/// The backend request a search asks for.
pub fn request(search: &Search, now: DateTime<Utc>) -> Result<Request, SearchError> {
    let mut expr = query::parse(&search.q, now)?;
    let mut bounds = Vec::new();
    for (name, value, op) in [
        ("since", &search.since, Op::Ge),
        ("until", &search.until, Op::Lt),
    ] {
        if let Some(text) = value.as_deref().filter(|t| !t.is_empty()) {
            let t = query::parse_time(text, now).ok_or_else(|| SearchError::Param {
                name,
                message: format!(
                    "`{text}` is not a time (2024-05-01, 2024-05-01T12:00:00Z, or 7d, 24h, 30m ago)"
                ),
            })?;
            bounds.push(Expr::Cmp {
                field: Numeric::Time,
                op,
                value: t.timestamp_millis(),
            });
        }
    }
    if !bounds.is_empty() {
        if expr != Expr::All {
            bounds.insert(0, expr);
        }
        expr = if bounds.len() == 1 {
            bounds.remove(0)
        } else {
            Expr::And(bounds)
        };
    }
    let limit = search.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(SearchError::Param {
            name: "limit",
            message: format!("must be from 1 to {MAX_LIMIT}"),
        });
    }
    let after = match search.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(Cursor::decode(text).ok_or(SearchError::Param {
            name: "cursor",
            message: "not a cursor this server gave (pass `next_cursor` as it came)".into(),
        })?),
        None => None,
    };
    Ok(Request { expr, after, limit })
}

/// The hit for a reference, read from the store (`None` when the record is gone).
pub async fn hydrate(store: &dyn Store, r: &HitRef) -> Result<Option<Hit>, StoreError> {
    let time = DateTime::from_timestamp_millis(r.time).unwrap_or_default();
    Ok(match r.doc_type {
        DocType::Alert => store.alert(&r.id).await?.map(|a| Hit {
            doc_type: DocType::Alert,
            id: a.id,
            time,
            title: a.title,
            severity: a.severity.score,
            source: a.source,
            kind: a.kind,
            incident_id: a.incident_id,
            status: a.state.name().to_owned(),
        }),
        DocType::Incident => store.incident(&r.id).await?.map(|i| Hit {
            doc_type: DocType::Incident,
            incident_id: i.id.clone(),
            id: i.id,
            time,
            title: i.title,
            severity: i.severity,
            source: i.sources.join(","),
            kind: String::new(),
            status: i.status.to_string(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        let c = Cursor {
            time: 1_714_000_000_000,
            tie: -42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("bm90IGEgY3Vyc29y"), None);
        assert_eq!(Cursor::decode("!!"), None);
    }
}
