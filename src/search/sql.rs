//! The query compiled to SQL over `search_docs` (migration 0005): exact terms through the GIN
//! index on `terms` (`@>`), prefix terms through the trigram index on `terms_text` (`LIKE`), words
//! through the GIN index on the `words` tsvector (`@@`), times and severities through b-trees.
//!
//! The rows hold exactly what [`Doc`] holds (the words go in as lexemes, `array_to_tsvector`, never
//! re-parsed by PostgreSQL's text search), so a query matches the same documents as on sled.

use tokio_postgres::types::ToSql;

use super::Request;
use super::doc::Doc;
use super::query::{Expr, Numeric};

/// A parameter of a compiled query.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// The statement that writes (or rewrites) one document.
pub const UPSERT: &str = "INSERT INTO search_docs
        (key, doc_type, id, alert_id, incident_id, at, tie, severity, terms, terms_text, words)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, array_to_tsvector($11::text[]))
    ON CONFLICT (key) DO UPDATE SET at = EXCLUDED.at, tie = EXCLUDED.tie,
        severity = EXCLUDED.severity, terms = EXCLUDED.terms, terms_text = EXCLUDED.terms_text,
        words = EXCLUDED.words";

/// The parameters of [`UPSERT`] for `doc`.
pub fn upsert_params(doc: &Doc) -> Vec<Param> {
    let (alert_id, incident_id) = match doc.doc_type {
        super::DocType::Alert => (Some(doc.id.clone()), None::<String>),
        super::DocType::Incident => (None, Some(doc.id.clone())),
    };
    vec![
        Box::new(doc.key.clone()),
        Box::new(doc.doc_type.name().to_owned()),
        Box::new(doc.id.clone()),
        Box::new(alert_id),
        Box::new(incident_id),
        Box::new(doc.time),
        Box::new(doc.tie),
        Box::new(doc.severity),
        Box::new(doc.terms.clone()),
        Box::new(terms_text(&doc.terms)),
        Box::new(doc.words.clone()),
    ]
}

/// The terms one per line, with a line break before the first and after the last, so that
/// `LIKE '%\nfield=value%'` finds a term starting with `field=value`.
pub fn terms_text(terms: &[String]) -> String {
    let mut text = String::from("\n");
    for term in terms {
        text.push_str(term);
        text.push('\n');
    }
    text
}

/// The `SELECT` for a request: `doc_type, id, at, tie` newest first.
pub fn select(request: &Request) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut sql = String::from("SELECT doc_type, id, at, tie FROM search_docs WHERE ");
    compile(&request.expr, &mut sql, &mut params);
    if let Some(after) = request.after {
        params.push(Box::new(after.time));
        let t = params.len();
        params.push(Box::new(after.tie));
        let tie = params.len();
        sql.push_str(&format!(" AND (at < ${t} OR (at = ${t} AND tie < ${tie}))"));
    }
    params.push(Box::new(i64::try_from(request.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY at DESC, tie DESC LIMIT ${}",
        params.len()
    ));
    (sql, params)
}

fn compile(expr: &Expr, sql: &mut String, params: &mut Vec<Param>) {
    match expr {
        Expr::All => sql.push_str("TRUE"),
        Expr::Term {
            term,
            prefix: false,
        } => {
            params.push(Box::new(vec![term.clone()]));
            sql.push_str(&format!("terms @> ${}::text[]", params.len()));
        }
        Expr::Term { term, prefix: true } => {
            params.push(Box::new(format!("%\n{}%", like_escape(term))));
            sql.push_str(&format!("terms_text LIKE ${}", params.len()));
        }
        Expr::Words(words) => {
            let query = words
                .iter()
                .map(|w| format!("'{}'", w.replace('\\', "\\\\").replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(" & ");
            params.push(Box::new(query));
            // Bound as text and cast: the driver binds a Rust string only to text types.
            sql.push_str(&format!("words @@ (${}::text)::tsquery", params.len()));
        }
        Expr::Cmp { field, op, value } => {
            params.push(Box::new(*value));
            let column = match field {
                Numeric::Severity => "severity",
                Numeric::Time => "at",
            };
            sql.push_str(&format!("{column} {} ${}", op.sql(), params.len()));
        }
        Expr::And(parts) | Expr::Or(parts) => {
            let joiner = if matches!(expr, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push('(');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    sql.push_str(joiner);
                }
                compile(part, sql, params);
            }
            sql.push(')');
        }
        Expr::Not(inner) => {
            sql.push_str("NOT (");
            compile(inner, sql, params);
            sql.push(')');
        }
    }
}

/// `text` with `LIKE`'s wildcards and its escape character escaped.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_parameterised_sql_only() {
        let now = chrono::Utc::now();
        let expr =
            super::super::query::parse("source:falco OR (NOT ip:10.0.* severity:>=7) tor", now)
                .expect("parses");
        let (sql, params) = select(&Request {
            expr,
            after: None,
            limit: 10,
        });
        assert_eq!(
            sql,
            "SELECT doc_type, id, at, tie FROM search_docs WHERE (terms @> $1::text[] OR \
             ((NOT (terms_text LIKE $2) AND severity >= $3) AND words @@ ($4::text)::tsquery)) \
             ORDER BY at DESC, tie DESC LIMIT $5"
        );
        assert_eq!(params.len(), 5);
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
