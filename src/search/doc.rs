//! What is searchable about an alert or an incident: one [`Doc`] per record, built here once for
//! both backends, so the tantivy index and PostgreSQL's `search_docs` rows hold the same terms and
//! the same words and a query means the same on both.

use sha2::{Digest, Sha256};

use crate::alert::{Alert, Incident};

/// The most distinct words kept per document (the title's first, then the payload's).
pub const MAX_WORDS: usize = 2000;
/// Words longer than this (in characters) are not indexed: hashes and blobs, not words.
pub const MAX_WORD_CHARS: usize = 64;
/// A term's longest stored length in bytes (longer values are cut at a character boundary).
pub const MAX_TERM_BYTES: usize = 512;

/// One searchable record.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// `a:<id>` or `i:<id>`: the record's key (unique across both kinds).
    pub key: String,
    pub doc_type: DocType,
    pub id: String,
    /// When: an alert's `observed_at`, an incident's `created_at` (Unix ms).
    pub time: i64,
    /// Orders documents with the same time: the first 8 bytes of SHA-256 of the key (for an
    /// incident about an entity, of `incident:<entity>`: incidents opened by one intake batch
    /// share their time, and an entity has one incident at a time, so the order does not depend
    /// on the ids a store gave them).
    pub tie: i64,
    pub severity: i64,
    /// `field=value`, lowercased, sorted, without repeats.
    pub terms: Vec<String>,
    /// Free-text tokens, lowercased, without repeats, at most [`MAX_WORDS`].
    pub words: Vec<String>,
}

/// The two kinds of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocType {
    Alert,
    Incident,
}

impl DocType {
    pub fn name(self) -> &'static str {
        match self {
            DocType::Alert => "alert",
            DocType::Incident => "incident",
        }
    }

    /// The kind of a record key (`a:` or `i:`) and the id after it.
    pub fn of_key(key: &str) -> Option<(DocType, &str)> {
        if let Some(id) = key.strip_prefix("a:") {
            Some((DocType::Alert, id))
        } else {
            key.strip_prefix("i:").map(|id| (DocType::Incident, id))
        }
    }
}

/// The key's tie-breaker (see [`Doc::tie`]).
pub fn tie(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// `field=value` as stored and as queried: lowercased, newlines made spaces (the PostgreSQL
/// prefix match separates terms by newlines), at most [`MAX_TERM_BYTES`].
pub fn normalize_term(field: &str, value: &str) -> String {
    let mut term = format!("{field}={value}")
        .to_lowercase()
        .replace(['\n', '\r'], " ");
    if term.len() > MAX_TERM_BYTES {
        let mut cut = MAX_TERM_BYTES;
        while !term.is_char_boundary(cut) {
            cut -= 1;
        }
        term.truncate(cut);
    }
    term
}

/// Free-text tokens: runs of letters and digits, lowercased, at most [`MAX_WORD_CHARS`] long,
/// each once, in order of first appearance.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    push_tokens(text, &mut out, &mut seen, usize::MAX);
    out
}

fn push_tokens(
    text: &str,
    out: &mut Vec<String>,
    seen: &mut std::collections::HashSet<String>,
    max: usize,
) {
    for token in text.split(|c: char| !c.is_alphanumeric()) {
        if out.len() >= max {
            return;
        }
        if token.is_empty() || token.chars().count() > MAX_WORD_CHARS {
            continue;
        }
        let token = token.to_lowercase();
        if seen.insert(token.clone()) {
            out.push(token);
        }
    }
}

/// Builds a document's terms and words.
struct Builder {
    terms: Vec<String>,
    words: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            terms: Vec::new(),
            words: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    fn term(&mut self, field: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            self.terms.push(normalize_term(field, value));
        }
    }

    fn text(&mut self, text: &str) {
        push_tokens(text, &mut self.words, &mut self.seen, MAX_WORDS);
    }

    /// The string and number values of a JSON document, in document order.
    fn json(&mut self, value: &serde_json::Value) {
        if self.words.len() >= MAX_WORDS {
            return;
        }
        match value {
            serde_json::Value::String(s) => self.text(s),
            serde_json::Value::Number(n) => self.text(&n.to_string()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.json(v)),
            serde_json::Value::Object(map) => map.values().for_each(|v| self.json(v)),
            _ => {}
        }
    }

    fn finish(
        mut self,
        doc_type: DocType,
        id: &str,
        time: i64,
        severity: i64,
        tie_key: Option<String>,
    ) -> Doc {
        self.terms.sort();
        self.terms.dedup();
        let key = format!("{}:{id}", &doc_type.name()[..1]);
        Doc {
            tie: tie(tie_key.as_deref().unwrap_or(&key)),
            key,
            doc_type,
            id: id.to_owned(),
            time,
            severity,
            terms: self.terms,
            words: self.words,
        }
    }
}

/// The value an incident's entity key names: `actor:<key>` → key, `resource:<kind>:<id>` → id.
pub fn entity_value(entity: &str) -> Option<&str> {
    if let Some(key) = entity.strip_prefix("actor:") {
        return Some(key);
    }
    let rest = entity.strip_prefix("resource:")?;
    rest.split_once(':').map(|(_, id)| id)
}

impl Doc {
    pub fn from_alert(alert: &Alert) -> Doc {
        let mut b = Builder::new();
        b.term("type", Some("alert"));
        b.term("id", Some(&alert.id));
        b.term("source", Some(&alert.source));
        b.term("kind", Some(&alert.kind));
        b.term("state", Some(alert.state.name()));
        b.term("incident", Some(&alert.incident_id));
        b.term("dedup", Some(&alert.dedup_key));
        let r = &alert.resource;
        b.term("resource", r.id.as_deref());
        b.term("resource.kind", r.kind.as_deref());
        b.term("resource.name", r.name.as_deref());
        b.term("account", r.account.as_deref());
        b.term("region", r.region.as_deref());
        let mut entities = vec![r.id.as_deref(), r.name.as_deref()];
        if let Some(a) = &alert.actor {
            b.term("actor", a.id.as_deref());
            b.term("actor.key", a.key.as_deref());
            b.term("actor.name", a.name.as_deref());
            b.term("actor.kind", a.kind.as_deref());
            entities.extend([a.id.as_deref(), a.key.as_deref(), a.name.as_deref()]);
        }
        let n = &alert.network;
        b.term("ip", n.remote_ip.as_deref());
        b.term("ip", n.local_ip.as_deref());
        b.term("domain", n.domain.as_deref());
        b.term("port", n.remote_port.map(|p| p.to_string()).as_deref());
        entities.extend([
            n.remote_ip.as_deref(),
            n.local_ip.as_deref(),
            n.domain.as_deref(),
        ]);
        for entity in entities {
            b.term("entity", entity);
        }
        for (k, v) in &alert.labels {
            b.term(&format!("label.{k}"), Some(v));
        }
        b.text(&alert.title);
        if let Some(d) = &alert.description {
            b.text(d);
        }
        match serde_json::from_str::<serde_json::Value>(alert.raw.get()) {
            Ok(raw) => b.json(&raw),
            Err(_) => b.text(alert.raw.get()),
        }
        b.finish(
            DocType::Alert,
            &alert.id,
            alert.observed_at.timestamp_millis(),
            i64::from(alert.severity.score),
            None,
        )
    }

    pub fn from_incident(incident: &Incident) -> Doc {
        let mut b = Builder::new();
        b.term("type", Some("incident"));
        b.term("id", Some(&incident.id));
        b.term("incident", Some(&incident.id));
        b.term("status", Some(&incident.status.to_string()));
        for source in &incident.sources {
            b.term("source", Some(source));
        }
        if let Some(entity) = incident.entity.as_deref() {
            b.term("entity", entity_value(entity));
        }
        b.text(&incident.title);
        for record in &incident.evidence {
            if let Some(map) = record.as_object() {
                for (k, v) in map {
                    let value = match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(x) => Some(x.to_string()),
                        _ => None,
                    };
                    b.term(&format!("evidence.{k}"), value.as_deref());
                }
            }
            b.json(record);
        }
        b.finish(
            DocType::Incident,
            &incident.id,
            incident.created_at.timestamp_millis(),
            i64::from(incident.severity),
            incident.entity.as_ref().map(|e| format!("incident:{e}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_letters_and_digits_lowercased_once() {
        assert_eq!(
            tokens("Tor relay: 10.0.0.1, TOR"),
            vec!["tor", "relay", "10", "0", "1"]
        );
        assert_eq!(normalize_term("label.Env", "Prod\nX"), "label.env=prod x");
        assert_eq!(entity_value("resource:aws.ec2.instance:i-1"), Some("i-1"));
        assert_eq!(entity_value("actor:aws:1:user/bob"), Some("aws:1:user/bob"));
    }
}
