//! The query language: `field:value` terms, free words, `AND`/`OR`/`NOT`, parentheses, and
//! comparisons on `severity` and `time` (docs/search.md is the reference).
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*          two terms side by side are ANDed
//! unary   := ("NOT" | "-") unary | "(" or ")" | term
//! term    := field ":" value | field ":" op value | word | "quoted words"
//! op      := ">=" | ">" | "<=" | "<"        (severity and time only)
//! ```
//!
//! Every error carries the character position (1-based column) of what is wrong, so the CLI and
//! the API can point at it.

use chrono::{DateTime, NaiveDate, Utc};

use super::doc::{normalize_term, tokens};

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every document.
    All,
    /// A `field=value` term a document carries (both lowercased), or one starting with it (`*`).
    Term {
        term: String,
        prefix: bool,
    },
    /// Free words: every token must be among the document's words.
    Words(Vec<String>),
    /// A numeric comparison on `severity` or `time` (milliseconds since the epoch).
    Cmp {
        field: Numeric,
        op: Op,
        value: i64,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    /// Whether one document matches, evaluated in memory: what the index and PostgreSQL answer
    /// for it, for lists that filter records they already read (the console's incident list).
    pub fn matches(&self, doc: &super::Doc) -> bool {
        match self {
            Expr::All => true,
            Expr::Term { term, prefix: true } => doc.terms.iter().any(|t| t.starts_with(term)),
            Expr::Term { term, .. } => doc.terms.iter().any(|t| t == term),
            Expr::Words(words) => words.iter().all(|w| doc.words.contains(w)),
            Expr::Cmp { field, op, value } => {
                let have = match field {
                    Numeric::Severity => doc.severity,
                    Numeric::Time => doc.time,
                };
                match op {
                    Op::Eq => have == *value,
                    Op::Ge => have >= *value,
                    Op::Gt => have > *value,
                    Op::Le => have <= *value,
                    Op::Lt => have < *value,
                }
            }
            Expr::And(all) => all.iter().all(|e| e.matches(doc)),
            Expr::Or(any) => any.iter().any(|e| e.matches(doc)),
            Expr::Not(e) => !e.matches(doc),
        }
    }

    /// Whether the query names a field (`field:value`, a range): more than free words.
    pub fn has_fields(&self) -> bool {
        match self {
            Expr::All | Expr::Words(_) => false,
            Expr::Term { .. } | Expr::Cmp { .. } => true,
            Expr::And(all) | Expr::Or(all) => all.iter().any(Expr::has_fields),
            Expr::Not(e) => e.has_fields(),
        }
    }
}

/// The numeric fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numeric {
    Severity,
    Time,
}

impl Numeric {
    pub fn column(self) -> &'static str {
        match self {
            Numeric::Severity => "severity",
            Numeric::Time => "time",
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// A query that could not be parsed: what is wrong, and at which column (1-based, in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

/// The fields a term may name (besides `label.<key>` and `evidence.<key>`).
pub const FIELDS: &[&str] = &[
    "type",
    "id",
    "source",
    "kind",
    "state",
    "status",
    "resource",
    "resource.kind",
    "resource.name",
    "account",
    "region",
    "actor",
    "actor.key",
    "actor.name",
    "actor.kind",
    "ip",
    "domain",
    "port",
    "incident",
    "entity",
    "dedup",
];

/// The longest query accepted, in bytes.
pub const MAX_QUERY: usize = 4096;
/// The most terms and words in one query.
const MAX_NODES: usize = 64;
/// How deep parentheses and `NOT`s may nest.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
}

/// Parses `text` at `now` (relative times such as `time:>=7d` are measured back from it).
pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Expr, ParseError> {
    if text.len() > MAX_QUERY {
        return Err(ParseError {
            column: 1,
            message: format!("the query is longer than {MAX_QUERY} bytes"),
        });
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        at: 0,
        now,
        nodes: 0,
        end: text.chars().count() + 1,
    };
    if p.toks.is_empty() {
        return Ok(Expr::All);
    }
    let expr = p.or(0)?;
    if let Some((tok, column)) = p.toks.get(p.at) {
        let what = match tok {
            Tok::RParen => "a `)` without its `(`".to_owned(),
            other => format!("unexpected {}", describe(other)),
        };
        return Err(ParseError {
            column: *column,
            message: what,
        });
    }
    Ok(expr)
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Quoted(w) => format!("\"{w}\""),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
    }
}

/// Splits the query into words, quoted strings and parentheses, with their columns. A quoted
/// string may follow a `field:` (`title:"tor relay"` is one word `title:tor relay`).
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push((Tok::LParen, i + 1));
            i += 1;
        } else if c == ')' {
            out.push((Tok::RParen, i + 1));
            i += 1;
        } else {
            let start = i;
            let mut word = String::new();
            let mut quoted = false;
            while i < chars.len() {
                let c = chars[i];
                if c == '"' {
                    let open = i;
                    i += 1;
                    quoted = true;
                    let mut closed = false;
                    while i < chars.len() {
                        match chars[i] {
                            '"' => {
                                closed = true;
                                i += 1;
                                break;
                            }
                            '\\' if i + 1 < chars.len() => {
                                word.push(chars[i + 1]);
                                i += 2;
                            }
                            c => {
                                word.push(c);
                                i += 1;
                            }
                        }
                    }
                    if !closed {
                        return Err(ParseError {
                            column: open + 1,
                            message: "a `\"` that is never closed".into(),
                        });
                    }
                } else if c.is_whitespace() || c == '(' || c == ')' {
                    break;
                } else {
                    word.push(c);
                    i += 1;
                }
            }
            let whole_quoted = quoted && chars[start] == '"';
            out.push((
                if whole_quoted {
                    Tok::Quoted(word)
                } else {
                    Tok::Word(word)
                },
                start + 1,
            ));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    now: DateTime<Utc>,
    nodes: usize,
    /// The column just past the end, for "expected ..." at the end.
    end: usize,
}

impl Parser {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.at) {
            Some((Tok::Word(w), _)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn column(&self) -> usize {
        self.toks.get(self.at).map(|t| t.1).unwrap_or(self.end)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and(depth)?];
        while self.peek_word() == Some("OR") {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary(depth)?];
        loop {
            match self.toks.get(self.at) {
                None | Some((Tok::RParen, _)) => break,
                Some((Tok::Word(w), _)) if w == "OR" => break,
                Some((Tok::Word(w), _)) if w == "AND" => {
                    self.at += 1;
                    parts.push(self.unary(depth)?);
                }
                Some(_) => parts.push(self.unary(depth)?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError {
                column: self.column(),
                message: format!("nested deeper than {MAX_DEPTH}"),
            });
        }
        let column = self.column();
        let Some((tok, _)) = self.toks.get(self.at).cloned() else {
            return Err(ParseError {
                column,
                message: "expected a term at the end of the query".into(),
            });
        };
        match tok {
            Tok::LParen => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                match self.toks.get(self.at) {
                    Some((Tok::RParen, _)) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err(ParseError {
                        column,
                        message: "a `(` that is never closed".into(),
                    }),
                }
            }
            Tok::RParen => Err(ParseError {
                column,
                message: "expected a term before `)`".into(),
            }),
            Tok::Word(w) if w == "NOT" => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::Word(w) if w == "AND" || w == "OR" => Err(ParseError {
                column,
                message: format!("expected a term before `{w}`"),
            }),
            Tok::Word(w) if w.len() > 1 && w.starts_with('-') => {
                // `-field:value`: the `-` is its own NOT.
                self.toks[self.at].0 = Tok::Word(w[1..].to_owned());
                self.toks[self.at].1 += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::Quoted(text) => {
                self.at += 1;
                self.count(column)?;
                words(&text, column)
            }
            Tok::Word(w) => {
                self.at += 1;
                self.count(column)?;
                self.term(&w, column)
            }
        }
    }

    fn count(&mut self, column: usize) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ParseError {
                column,
                message: format!("more than {MAX_NODES} terms"),
            });
        }
        Ok(())
    }

    fn term(&self, word: &str, column: usize) -> Result<Expr, ParseError> {
        let Some((field, value)) = word.split_once(':') else {
            return words(word, column);
        };
        let value_column = column + field.chars().count() + 1;
        let field = field.to_ascii_lowercase();
        if field == "severity" || field == "time" {
            let numeric = if field == "severity" {
                Numeric::Severity
            } else {
                Numeric::Time
            };
            let (op, rest) = if let Some(r) = value.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = value.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = value.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = value.strip_prefix('<') {
                (Op::Lt, r)
            } else {
                (Op::Eq, value)
            };
            let at = value_column + (value.len() - rest.len());
            let value = match numeric {
                Numeric::Severity => rest.parse::<u8>().ok().filter(|s| *s <= 10).map(i64::from),
                Numeric::Time => parse_time(rest, self.now).map(|t| t.timestamp_millis()),
            };
            let Some(value) = value else {
                let expected = match numeric {
                    Numeric::Severity => "a severity from 0 to 10",
                    Numeric::Time => {
                        "a time (2024-05-01, 2024-05-01T12:00:00Z, or 7d, 24h, 30m ago)"
                    }
                };
                return Err(ParseError {
                    column: at,
                    message: format!("expected {expected} after `{field}:`, found `{rest}`"),
                });
            };
            return Ok(Expr::Cmp {
                field: numeric,
                op,
                value,
            });
        }
        let known = FIELDS.contains(&field.as_str())
            || field.strip_prefix("label.").is_some_and(|k| !k.is_empty())
            || field
                .strip_prefix("evidence.")
                .is_some_and(|k| !k.is_empty());
        if !known {
            let near = FIELDS
                .iter()
                .chain(["severity", "time", "label.<key>", "evidence.<key>"].iter())
                .min_by_key(|f| strsim::levenshtein(f, &field))
                .filter(|f| strsim::levenshtein(f, &field) <= 2)
                .map(|f| format!(" (did you mean `{f}`?)"))
                .unwrap_or_default();
            return Err(ParseError {
                column,
                message: format!("unknown field `{field}`{near}"),
            });
        }
        if value.is_empty() {
            return Err(ParseError {
                column: value_column,
                message: format!("expected a value after `{field}:`"),
            });
        }
        let (value, prefix) = match value.strip_suffix('*') {
            Some(v) if !v.is_empty() => (v, true),
            Some(_) => {
                return Err(ParseError {
                    column: value_column,
                    message: format!("`{field}:*` matches anything; leave it out"),
                });
            }
            None => (value, false),
        };
        Ok(Expr::Term {
            term: normalize_term(&field, value),
            prefix,
        })
    }
}

fn words(text: &str, column: usize) -> Result<Expr, ParseError> {
    let toks = tokens(text);
    if toks.is_empty() {
        return Err(ParseError {
            column,
            message: format!("nothing to search for in `{text}` (words are letters and digits)"),
        });
    }
    Ok(Expr::Words(toks))
}

/// A time: RFC 3339, a date (midnight UTC), or a duration back from `now` (`7d`, `24h`, `30m`).
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let ago = parse_duration(text)?;
    now.checked_sub_signed(ago)
}

/// `30s`, `15m`, `24h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    chrono::Duration::try_seconds(n.checked_mul(secs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2024-05-08T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn terms_words_and_operators_parse_into_one_tree() {
        let q = parse(
            "source:Falco severity:>=7 (ip:10.0.0.1 OR NOT actor.key:aws*) tor",
            now(),
        )
        .expect("parses");
        assert_eq!(
            q,
            Expr::And(vec![
                Expr::Term {
                    term: "source=falco".into(),
                    prefix: false
                },
                Expr::Cmp {
                    field: Numeric::Severity,
                    op: Op::Ge,
                    value: 7
                },
                Expr::Or(vec![
                    Expr::Term {
                        term: "ip=10.0.0.1".into(),
                        prefix: false
                    },
                    Expr::Not(Box::new(Expr::Term {
                        term: "actor.key=aws".into(),
                        prefix: true
                    })),
                ]),
                Expr::Words(vec!["tor".into()]),
            ])
        );
        assert_eq!(parse("", now()), Ok(Expr::All));
        let week = parse("time:>=7d", now()).expect("parses");
        assert_eq!(
            week,
            Expr::Cmp {
                field: Numeric::Time,
                op: Op::Ge,
                value: "2024-05-01T00:00:00Z"
                    .parse::<DateTime<Utc>>()
                    .expect("t")
                    .timestamp_millis()
            }
        );
    }

    #[test]
    fn errors_say_where() {
        let e = parse("source:falco sevrity:7", now()).expect_err("unknown field");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("did you mean `severity`"), "{e}");
        assert_eq!(
            parse("severity:>=eleven", now()).expect_err("bad").column,
            12
        );
        assert_eq!(parse("(source:falco", now()).expect_err("open").column, 1);
        assert_eq!(
            parse("source:falco )", now()).expect_err("close").column,
            14
        );
        assert_eq!(parse("a OR", now()).expect_err("end").column, 5);
        assert_eq!(parse("x \"abc", now()).expect_err("quote").column, 3);
        assert_eq!(parse("x ...", now()).expect_err("nothing").column, 3);
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep, now()).is_err());
    }
}
