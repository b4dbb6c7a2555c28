//! Local indicator feeds (CSV, STIX 2.1), matched in memory.
//!
//! The `ioc` integration's `lookup` action calls the script function `ioc_lookup(value)`, which
//! asks the [`IocIndex`] built from the config's `integrations.ioc_feeds` at start. Every lookup is
//! a few hash-map probes: an address is looked up as itself and then against the (short) list of
//! listed networks, a domain as itself and as each of its parent domains, a URL and a hash as
//! themselves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// One indicator of a feed that matched a looked-up value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IocMatch {
    /// The indicator as the feed lists it (normalized: lower-case domains and hashes, networks
    /// with their host bits cleared).
    pub indicator: String,
    /// `ipv4`, `ipv6`, `cidr`, `domain`, `url`, `md5`, `sha1` or `sha256`.
    pub kind: String,
    /// The file name of the feed that lists it.
    pub feed: String,
    /// What the feed says about it (a STIX indicator's name and description).
    pub description: Option<String>,
    /// The feed's labels (a STIX indicator's `labels` and `indicator_types`).
    pub labels: Vec<String>,
    /// The feed's confidence, 0 to 100.
    pub confidence: Option<u8>,
    /// The STIX id of the indicator object, for STIX feeds.
    pub id: Option<String>,
}

/// Every indicator of the loaded feeds, indexed for lookups.
#[derive(Debug, Default)]
pub struct IocIndex {
    entries: Vec<IocMatch>,
    ips: HashMap<IpAddr, Vec<usize>>,
    networks: Vec<(Network, usize)>,
    domains: HashMap<String, Vec<usize>>,
    urls: HashMap<String, Vec<usize>>,
    hashes: HashMap<String, Vec<usize>>,
    skipped: usize,
}

impl IocIndex {
    /// Loads CSV feeds (`.csv`) and STIX 2.1 bundles (`.json`). An error names the file (and the
    /// line, for CSV). STIX indicators that are revoked, expired or whose pattern is not one this
    /// index understands are left out; [`IocIndex::skipped`] counts the last kind.
    pub fn load(paths: &[PathBuf]) -> Result<IocIndex, String> {
        IocIndex::load_at(paths, Utc::now())
    }

    /// [`IocIndex::load`] as of `now` (the instant `valid_until` is compared with).
    fn load_at(paths: &[PathBuf], now: DateTime<Utc>) -> Result<IocIndex, String> {
        let mut index = IocIndex::default();
        for path in paths {
            let feed = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("ioc feed {}: {e}", path.display()))?;
            let extension = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            match extension.as_deref() {
                Some("csv") => index.load_csv(path, &feed, &text)?,
                Some("json") => index.load_stix(path, &feed, &text, now)?,
                _ => {
                    return Err(format!(
                        "ioc feed {}: unknown format; a feed is a .csv file or a STIX 2.1 bundle (.json)",
                        path.display()
                    ));
                }
            }
        }
        Ok(index)
    }

    /// The indicators of every feed that match `value`: an IPv4 or IPv6 address (listed, or
    /// inside a listed network), a domain (listed, or a subdomain of a listed one; case and a
    /// trailing dot do not matter), a URL (exactly), or an MD5, SHA-1 or SHA-256 hash (case does
    /// not matter). Nothing matches an empty or unrecognized value.
    pub fn lookup(&self, value: &str) -> Vec<IocMatch> {
        let value = value.trim();
        if value.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<usize> = Vec::new();
        if let Some(ip) = parse_ip(value) {
            found.extend(self.ips.get(&ip).into_iter().flatten());
            found.extend(
                self.networks
                    .iter()
                    .filter(|(net, _)| net.contains(ip))
                    .map(|(_, i)| *i),
            );
        } else if let Some(net) = Network::parse(value) {
            found.extend(
                self.networks
                    .iter()
                    .filter(|(listed, _)| *listed == net)
                    .map(|(_, i)| *i),
            );
        } else if value.contains("://") {
            found.extend(self.urls.get(value).into_iter().flatten());
        } else if hash_kind(value).is_some() {
            found.extend(
                self.hashes
                    .get(&value.to_ascii_lowercase())
                    .into_iter()
                    .flatten(),
            );
        } else if let Some(domain) = normalize_domain(value) {
            // The domain itself, then each parent: `a.b.example.com`, `b.example.com`, ...
            let mut rest = domain.as_str();
            loop {
                found.extend(self.domains.get(rest).into_iter().flatten());
                match rest.split_once('.') {
                    Some((_, parent)) => rest = parent,
                    None => break,
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| self.entries[i].clone()).collect()
    }

    /// How many indicators the feeds hold.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the feeds hold no indicator.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many STIX indicators were left out because their pattern is not a plain comparison of
    /// an address, domain, URL or file hash this index can match.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn add(&mut self, indicator: Indicator, entry: IocMatch) {
        let i = self.entries.len();
        self.entries.push(entry);
        match indicator {
            Indicator::Ip(ip) => self.ips.entry(ip).or_default().push(i),
            Indicator::Network(net) => self.networks.push((net, i)),
            Indicator::Domain(d) => self.domains.entry(d).or_default().push(i),
            Indicator::Url(u) => self.urls.entry(u).or_default().push(i),
            Indicator::Hash(_, h) => self.hashes.entry(h).or_default().push(i),
        }
    }

    fn load_csv(&mut self, path: &Path, feed: &str, text: &str) -> Result<(), String> {
        let at =
            |line: u64, message: &str| format!("ioc feed {}:{line}: {message}", path.display());
        // Comment lines are blanked rather than left to the reader's own comment support, which
        // does not count them in record positions (errors would name the wrong line).
        let uncommented: String = text
            .split_inclusive('\n')
            .map(|line| {
                let content = line.trim();
                if content.is_empty() || content.starts_with('#') {
                    if line.ends_with('\n') { "\n" } else { "" }
                } else {
                    line
                }
            })
            .collect();
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(uncommented.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| csv_error(path, &uncommented, &e))?
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect::<Vec<_>>();
        let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
        let Some(value_col) = column(&["indicator", "value"]) else {
            return Err(format!(
                "ioc feed {}: the header row has no `indicator` (or `value`) column",
                path.display()
            ));
        };
        let type_col = column(&["type"]);
        let description_col = column(&["description"]);
        let labels_col = column(&["labels"]);
        let confidence_col = column(&["confidence"]);

        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &uncommented, &e))?;
            let line = record
                .position()
                .map_or(0, |p| record_line(&uncommented, p.byte()));
            let cell = |col: Option<usize>| {
                col.and_then(|c| record.get(c))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let Some(value) = cell(Some(value_col)) else {
                return Err(at(line, "the indicator is empty"));
            };
            let indicator = match cell(type_col) {
                Some(kind) => Indicator::parse_as(kind, value).map_err(|e| at(line, &e))?,
                None => Indicator::infer(value).ok_or_else(|| {
                    at(
                        line,
                        &format!(
                            "cannot tell what kind of indicator `{value}` is; give it a `type` \
                             (ipv4, ipv6, cidr, domain, url, md5, sha1, sha256)"
                        ),
                    )
                })?,
            };
            let confidence = match cell(confidence_col) {
                None => None,
                Some(c) => Some(parse_confidence(c).ok_or_else(|| {
                    at(
                        line,
                        &format!("confidence `{c}` is not a whole number from 0 to 100"),
                    )
                })?),
            };
            let labels = cell(labels_col)
                .map(|l| {
                    l.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let entry = IocMatch {
                indicator: indicator.text(),
                kind: indicator.kind().to_owned(),
                feed: feed.to_owned(),
                description: cell(description_col).map(str::to_owned),
                labels,
                confidence,
                id: None,
            };
            self.add(indicator, entry);
        }
        Ok(())
    }

    fn load_stix(
        &mut self,
        path: &Path,
        feed: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let bundle: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("ioc feed {}: not JSON: {e}", path.display()))?;
        let objects = match (
            bundle.get("type").and_then(|t| t.as_str()),
            bundle.get("objects"),
        ) {
            (Some("bundle"), Some(serde_json::Value::Array(objects))) => objects,
            (Some("bundle"), None) => return Ok(()),
            _ => {
                return Err(format!(
                    "ioc feed {}: not a STIX 2.1 bundle (an object with \"type\": \"bundle\" and \
                     an \"objects\" array)",
                    path.display()
                ));
            }
        };
        for object in objects {
            if object.get("type").and_then(|t| t.as_str()) != Some("indicator") {
                continue;
            }
            if object.get("revoked").and_then(|r| r.as_bool()) == Some(true) {
                continue;
            }
            let expired = object
                .get("valid_until")
                .and_then(|v| v.as_str())
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .is_some_and(|until| until <= now);
            if expired {
                continue;
            }
            let str_field = |name: &str| {
                object
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let pattern_type = str_field("pattern_type").unwrap_or("stix");
            let parsed = match (pattern_type, str_field("pattern")) {
                ("stix", Some(pattern)) => stix_pattern(pattern),
                _ => None,
            };
            let Some(indicators) = parsed else {
                self.skipped += 1;
                continue;
            };
            let description = match (str_field("name"), str_field("description")) {
                (Some(name), Some(text)) => Some(format!("{name}: {text}")),
                (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
                (None, None) => None,
            };
            let mut labels: Vec<String> = Vec::new();
            for field in ["labels", "indicator_types"] {
                for label in object
                    .get(field)
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str())
                {
                    if !labels.iter().any(|l| l == label) {
                        labels.push(label.to_owned());
                    }
                }
            }
            let confidence = object
                .get("confidence")
                .and_then(|c| c.as_u64())
                .filter(|c| *c <= 100)
                .map(|c| c as u8);
            let id = str_field("id").map(str::to_owned);
            for indicator in indicators {
                let entry = IocMatch {
                    indicator: indicator.text(),
                    kind: indicator.kind().to_owned(),
                    feed: feed.to_owned(),
                    description: description.clone(),
                    labels: labels.clone(),
                    confidence,
                    id: id.clone(),
                };
                self.add(indicator, entry);
            }
        }
        Ok(())
    }
}

fn csv_error(path: &Path, text: &str, error: &csv::Error) -> String {
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the row has {len} fields where the header has {expected_len}"),
        _ => error.to_string(),
    };
    match error.position() {
        Some(pos) => format!(
            "ioc feed {}:{}: {message}",
            path.display(),
            record_line(text, pos.byte())
        ),
        None => format!("ioc feed {}: {message}", path.display()),
    }
}

/// The 1-based line of the record the CSV reader began reading at byte `offset`: the reader
/// reports where it started, before the blank lines it skips, so those are skipped here too.
fn record_line(text: &str, offset: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
        start += 1;
    }
    bytes[..start].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn parse_confidence(text: &str) -> Option<u8> {
    text.parse::<u8>().ok().filter(|c| *c <= 100)
}

/// An address, with IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) taken as the IPv4 address.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The hash kind a hex string's length says, if it is one.
fn hash_kind(text: &str) -> Option<&'static str> {
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match text.len() {
        32 => Some("md5"),
        40 => Some("sha1"),
        64 => Some("sha256"),
        _ => None,
    }
}

/// A domain name lower-cased, without a trailing dot or a leading `*.`, if `text` is one: labels
/// of letters, digits, `-` and `_`, at least two of them, and not all digits (an address).
fn normalize_domain(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('.');
    let text = text.strip_prefix("*.").unwrap_or(text);
    let domain = text.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let well_formed = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then_some(domain)
}

/// An IP network: the address with its host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.trim().parse().ok()?;
        let prefix: u8 = prefix.trim().parse().ok()?;
        let base = match addr {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            _ => return None,
        };
        Some(Network { base, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(base)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(base)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// One parsed indicator, in the form its index map keys it by.
#[derive(Debug, Clone, PartialEq)]
enum Indicator {
    Ip(IpAddr),
    Network(Network),
    Domain(String),
    Url(String),
    Hash(&'static str, String),
}

impl Indicator {
    fn kind(&self) -> &'static str {
        match self {
            Indicator::Ip(IpAddr::V4(_)) => "ipv4",
            Indicator::Ip(IpAddr::V6(_)) => "ipv6",
            Indicator::Network(_) => "cidr",
            Indicator::Domain(_) => "domain",
            Indicator::Url(_) => "url",
            Indicator::Hash(kind, _) => kind,
        }
    }

    fn text(&self) -> String {
        match self {
            Indicator::Ip(ip) => ip.to_string(),
            Indicator::Network(net) => net.to_string(),
            Indicator::Domain(s) | Indicator::Url(s) | Indicator::Hash(_, s) => s.clone(),
        }
    }

    /// The kind of indicator `value` is, by its shape.
    fn infer(value: &str) -> Option<Indicator> {
        if let Some(ip) = parse_ip(value) {
            Some(Indicator::Ip(ip))
        } else if let Some(net) = Network::parse(value) {
            Some(Indicator::Network(net))
        } else if value.contains("://") {
            Some(Indicator::Url(value.to_owned()))
        } else if let Some(kind) = hash_kind(value) {
            Some(Indicator::Hash(kind, value.to_ascii_lowercase()))
        } else {
            normalize_domain(value).map(Indicator::Domain)
        }
    }

    /// `value` read as the declared `kind` (a feed's `type` column); an error says why it is not.
    fn parse_as(kind: &str, value: &str) -> Result<Indicator, String> {
        let kind = kind.to_ascii_lowercase();
        let wanted: &[&str] = match kind.as_str() {
            "ipv4" | "ipv4-addr" | "ip-src" | "ip-dst" => &["ipv4", "cidr"],
            "ipv6" | "ipv6-addr" => &["ipv6", "cidr"],
            "ip" => &["ipv4", "ipv6", "cidr"],
            "cidr" | "network" | "netblock" => &["cidr"],
            "domain" | "domain-name" | "hostname" | "fqdn" => &["domain"],
            "url" | "uri" => &["url"],
            "md5" => &["md5"],
            "sha1" | "sha-1" => &["sha1"],
            "sha256" | "sha-256" => &["sha256"],
            "hash" => &["md5", "sha1", "sha256"],
            other => {
                return Err(format!(
                    "unknown indicator type `{other}` (expected ipv4, ipv6, cidr, domain, url, \
                     md5, sha1 or sha256)"
                ));
            }
        };
        let parsed = match wanted[0] {
            "domain" => normalize_domain(value).map(Indicator::Domain),
            "url" => Some(Indicator::Url(value.to_owned())),
            _ => Indicator::infer(value),
        };
        match parsed {
            Some(indicator) if wanted.contains(&indicator.kind()) => Ok(indicator),
            _ => Err(format!("`{value}` is not a valid {kind} indicator")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// STIX patterns
//
// The subset an indicator feed needs: observation expressions (`[ ... ]`) joined by OR, each
// holding comparisons joined by OR, each comparison `<object path> = '<value>'` on an address,
// domain, URL or file hash (`ISSUBSET` is taken for a network too). AND is accepted only between
// hashes of one file (`[file:hashes.MD5 = '…' AND file:hashes.'SHA-256' = '…']`), where any of
// them identifies it. Qualifiers (`WITHIN`, `REPEATS`, `START … STOP`) are ignored. Anything
// else — NOT, other operators, other objects, FOLLOWEDBY — makes the whole pattern unusable.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    LParen,
    RParen,
    Str(String),
    Word(String),
    Op(String),
}

fn tokenize(pattern: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // A quoted string from `chars[start]` (a `'`); returns the text and the index after it.
    let quoted = |start: usize| -> Option<(String, usize)> {
        let mut text = String::new();
        let mut j = start + 1;
        while j < chars.len() {
            match chars[j] {
                '\\' => {
                    text.push(*chars.get(j + 1)?);
                    j += 2;
                }
                '\'' => return Some((text, j + 1)),
                c => {
                    text.push(c);
                    j += 1;
                }
            }
        }
        None
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '[' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ']' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            '\'' => {
                let (text, next) = quoted(i)?;
                tokens.push(Token::Str(text));
                i = next;
            }
            '=' | '!' | '<' | '>' => {
                let mut op = String::from(c);
                if chars.get(i + 1) == Some(&'=') {
                    op.push('=');
                    i += 1;
                }
                tokens.push(Token::Op(op));
                i += 1;
            }
            _ => {
                // A word: a keyword, a number, a timestamp (t'...', b'...', h'...') or an object
                // path, whose components may be quoted (file:hashes.'SHA-256').
                let mut word = String::new();
                while i < chars.len() {
                    let c = chars[i];
                    if c == '\'' && (word.ends_with('.') || word.len() == 1) {
                        let (text, next) = quoted(i)?;
                        word.push('\'');
                        word.push_str(&text);
                        word.push('\'');
                        i = next;
                    } else if c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '*') {
                        word.push(c);
                        i += 1;
                    } else {
                        break;
                    }
                }
                if word.is_empty() {
                    return None;
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Some(tokens)
}

/// The indicators a STIX pattern lists, or `None` when it is not of the subset described above.
fn stix_pattern(pattern: &str) -> Option<Vec<Indicator>> {
    let tokens = tokenize(pattern)?;
    let mut indicators = Vec::new();
    let mut i = 0;
    let mut saw_observation = false;
    let mut expect_observation = true;
    while i < tokens.len() {
        match &tokens[i] {
            Token::LParen | Token::RParen => i += 1,
            Token::Open if expect_observation => {
                let close = tokens[i..].iter().position(|t| *t == Token::Close)? + i;
                indicators.extend(observation(&tokens[i + 1..close])?);
                saw_observation = true;
                expect_observation = false;
                i = close + 1;
            }
            Token::Word(w) if !expect_observation && w.eq_ignore_ascii_case("OR") => {
                expect_observation = true;
                i += 1;
            }
            Token::Word(w) if !expect_observation => {
                // Qualifiers restrict when observations count; a lookup has no time, so they are
                // read past.
                let skip = match w.to_ascii_uppercase().as_str() {
                    "WITHIN" | "REPEATS" => 3,
                    "START" | "STOP" => 2,
                    _ => return None,
                };
                i += skip;
            }
            _ => return None,
        }
    }
    (saw_observation && !expect_observation && !indicators.is_empty()).then_some(indicators)
}

/// The comparisons of one observation expression (between `[` and `]`).
fn observation(tokens: &[Token]) -> Option<Vec<Indicator>> {
    let mut found: Vec<(bool, Indicator)> = Vec::new();
    let mut and = false;
    let mut i = 0;
    let mut expect_comparison = true;
    while i < tokens.len() {
        match &tokens[i] {
            Token::LParen | Token::RParen => i += 1,
            Token::Word(w) if !expect_comparison => {
                match w.to_ascii_uppercase().as_str() {
                    "OR" => {}
                    "AND" => and = true,
                    _ => return None,
                }
                expect_comparison = true;
                i += 1;
            }
            Token::Word(path) if expect_comparison => {
                let (Some(Token::Op(op) | Token::Word(op)), Some(Token::Str(value))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                else {
                    return None;
                };
                found.push(comparison(path, op, value)?);
                expect_comparison = false;
                i += 3;
            }
            _ => return None,
        }
    }
    if expect_comparison || found.is_empty() {
        return None;
    }
    // Under AND every comparison must describe the same file by one of its hashes.
    if and && !found.iter().all(|(is_hash, _)| *is_hash) {
        return None;
    }
    Some(found.into_iter().map(|(_, indicator)| indicator).collect())
}

/// One comparison; the flag says whether it is a file hash.
fn comparison(path: &str, op: &str, value: &str) -> Option<(bool, Indicator)> {
    let op = op.to_ascii_uppercase();
    let (object, property) = path.split_once(':')?;
    let indicator = match (object, property) {
        ("ipv4-addr" | "ipv6-addr", "value") => {
            let want_v6 = object == "ipv6-addr";
            let indicator = match op.as_str() {
                "=" => Indicator::infer(value)?,
                "ISSUBSET" => Indicator::Network(Network::parse(value)?),
                _ => return None,
            };
            let family_ok = match &indicator {
                Indicator::Ip(ip) => ip.is_ipv6() == want_v6,
                Indicator::Network(net) => net.base.is_ipv6() == want_v6,
                _ => false,
            };
            return family_ok.then_some((false, indicator));
        }
        _ if op != "=" => return None,
        ("domain-name", "value") => Indicator::Domain(normalize_domain(value)?),
        ("url", "value") => Indicator::Url(value.trim().to_owned()),
        ("file", hashes) => {
            let algorithm = hashes.strip_prefix("hashes.")?.trim_matches('\'');
            let kind = match algorithm.to_ascii_uppercase().as_str() {
                "MD5" => "md5",
                "SHA-1" | "SHA1" => "sha1",
                "SHA-256" | "SHA256" => "sha256",
                _ => return None,
            };
            if hash_kind(value) != Some(kind) {
                return None;
            }
            return Some((true, Indicator::Hash(kind, value.to_ascii_lowercase())));
        }
        _ => return None,
    };
    Some((false, indicator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/ioc/fixtures")
    }

    fn sample() -> IocIndex {
        // The fixture bundle's expired indicator ran out in 2024; its others are valid well past
        // this instant.
        let now = DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        IocIndex::load_at(
            &[
                fixtures().join("bad-indicators.csv"),
                fixtures().join("threat-report.stix.json"),
            ],
            now,
        )
        .expect("sample feeds load")
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn indicators(matches: &[IocMatch]) -> Vec<(&str, &str)> {
        matches
            .iter()
            .map(|m| (m.indicator.as_str(), m.kind.as_str()))
            .collect()
    }

    #[test]
    fn csv_rows_carry_their_description_labels_and_confidence() {
        let index = sample();
        let found = index.lookup("203.0.113.77");
        assert_eq!(
            found,
            vec![IocMatch {
                indicator: "203.0.113.77".into(),
                kind: "ipv4".into(),
                feed: "bad-indicators.csv".into(),
                description: Some("SSH brute force source".into()),
                labels: vec!["bruteforce".into(), "ssh".into()],
                confidence: Some(80),
                id: None,
            }]
        );
    }

    #[test]
    fn addresses_match_exactly_and_inside_listed_networks() {
        let index = sample();
        assert_eq!(
            indicators(&index.lookup("198.51.100.23")),
            vec![("198.51.100.0/24", "cidr")]
        );
        assert!(index.lookup("198.51.101.1").is_empty());
        // Listed itself and inside a listed network: both say so.
        assert_eq!(
            indicators(&index.lookup("2001:db8:bad::1")),
            vec![("2001:db8:bad::1", "ipv6"), ("2001:db8:bad::/48", "cidr")]
        );
        assert_eq!(
            indicators(&index.lookup("198.19.255.1")),
            vec![("198.18.0.0/15", "cidr")]
        );
        assert_eq!(
            indicators(&index.lookup("2001:db8:bad:42::9")),
            vec![("2001:db8:bad::/48", "cidr")]
        );
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(
            indicators(&index.lookup("::ffff:203.0.113.77")),
            vec![("203.0.113.77", "ipv4")]
        );
        assert!(index.lookup("192.0.2.200").is_empty());
        // A listed network looked up as itself.
        assert_eq!(
            indicators(&index.lookup("198.51.100.0/24")),
            vec![("198.51.100.0/24", "cidr")]
        );
    }

    #[test]
    fn domains_match_themselves_and_their_subdomains_in_any_case() {
        let index = sample();
        for value in [
            "evil-updates.example",
            "EVIL-UPDATES.example.",
            "cdn.evil-updates.example",
            "a.b.Evil-Updates.Example",
        ] {
            let found = index.lookup(value);
            assert_eq!(
                indicators(&found),
                vec![("evil-updates.example", "domain")],
                "{value}"
            );
        }
        // A parent of a listed domain, or a look-alike, is not a match.
        assert!(index.lookup("example").is_empty());
        assert!(index.lookup("notevil-updates.example").is_empty());
        assert!(index.lookup("evil-updates.example.org").is_empty());
    }

    #[test]
    fn urls_match_exactly() {
        let index = sample();
        let url = "http://198.51.100.23/payloads/stage2.sh";
        assert_eq!(indicators(&index.lookup(url)), vec![(url, "url")]);
        assert!(index.lookup(&format!("{url}?x=1")).is_empty());
    }

    #[test]
    fn hashes_match_by_length_in_any_case() {
        let index = sample();
        let md5 = index.lookup("44D88612FEA8A8F36DE82E1278ABB02F");
        assert_eq!(
            indicators(&md5),
            vec![("44d88612fea8a8f36de82e1278abb02f", "md5")]
        );
        let sha256 =
            index.lookup("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f");
        assert_eq!(sha256.len(), 1);
        assert_eq!(sha256[0].kind, "sha256");
        let sha1 = index.lookup("3395856ce81f2b7382dee72602f798b642f14140");
        assert_eq!(sha1.len(), 1);
        assert_eq!(sha1[0].kind, "sha1");
        assert!(index.lookup("0000000000000000000000000000000f").is_empty());
    }

    #[test]
    fn stix_indicators_keep_name_description_labels_confidence_and_id() {
        let index = sample();
        let found = index.lookup("c2.badcdn.example");
        assert_eq!(found.len(), 1, "{found:?}");
        let m = &found[0];
        assert_eq!(m.feed, "threat-report.stix.json");
        assert_eq!(
            m.id.as_deref(),
            Some("indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f")
        );
        assert_eq!(
            m.description.as_deref(),
            Some(
                "Cobalt Strike C2 domain: Domain used as command and control by the beacon \
                 dropped in the campaign."
            )
        );
        assert_eq!(m.labels, vec!["malicious-activity".to_owned()]);
        assert_eq!(m.confidence, Some(85));
    }

    #[test]
    fn stix_patterns_with_several_comparisons_or_observations_give_each_indicator() {
        let index = sample();
        // `[ipv4-addr:value = 'a' OR ipv4-addr:value = 'b']`
        for ip in ["192.0.2.10", "192.0.2.11"] {
            let found = index.lookup(ip);
            assert_eq!(
                found.first().and_then(|m| m.id.as_deref()),
                Some("indicator--26ffb872-1dd9-446e-b6f5-d58527e5b5d2"),
                "{ip}"
            );
        }
        // `[domain-name:value = ...] OR [url:value = ...]`
        assert_eq!(index.lookup("staging.badcdn.example").len(), 1);
        assert_eq!(
            index.lookup("https://staging.badcdn.example/update.bin")[0].kind,
            "url"
        );
        // One file by three hashes joined with AND: each identifies it.
        let by_md5 = index.lookup("600FFFD171FFF17A456F99F08A620AEE");
        let by_sha256 =
            index.lookup("48fb96ebc33cd4ed291958f82f75e5c6000bb1080fa4418e12bc16c4a0d3e965");
        assert_eq!(by_md5.len(), 1);
        assert_eq!(by_md5[0].indicator, "600fffd171fff17a456f99f08a620aee");
        assert_eq!(by_md5[0].id, by_sha256[0].id);
        assert_eq!(by_sha256[0].confidence, Some(95));
    }

    #[test]
    fn revoked_expired_and_unusable_stix_indicators_are_left_out_and_counted() {
        let index = sample();
        // Revoked, and expired on 2024-01-01.
        assert!(index.lookup("192.0.2.66").is_empty());
        assert!(index.lookup("old-c2.example").is_empty());
        // A `MATCHES` regex, an AND across objects, and a pcre pattern.
        assert_eq!(index.skipped(), 3);
        assert!(index.lookup("192.0.2.99").is_empty());
    }

    #[test]
    fn len_counts_every_indicator_of_every_feed() {
        let index = sample();
        assert_eq!(index.len(), 11 + 10);
        assert!(!index.is_empty());
        let empty = IocIndex::load(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(empty.lookup("192.0.2.10").is_empty());
    }

    #[test]
    fn a_malformed_csv_row_is_an_error_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "feed.csv",
            "# a comment\nindicator,type,confidence\n192.0.2.1,ipv4,50\n\n# a comment\n  \n192.0.2.2,ipv4,fifty\n",
        );
        let err = IocIndex::load(std::slice::from_ref(&path)).unwrap_err();
        assert!(err.contains("feed.csv:7:"), "{err}");
        assert!(err.contains("confidence `fifty`"), "{err}");

        let path = write(
            &dir,
            "short.csv",
            "indicator,type,description\r\n192.0.2.1,ipv4,x\r\n\r\n192.0.2.2,ipv4\r\n",
        );
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("short.csv:4:"), "{err}");
        assert!(err.contains("2 fields"), "{err}");

        let path = write(&dir, "typed.csv", "value,type\nevil.example,ipv4\n");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("typed.csv:2:"), "{err}");
        assert!(err.contains("not a valid ipv4"), "{err}");

        // A quoted description over two lines still leaves the next row's line right.
        let path = write(
            &dir,
            "quoted.csv",
            "indicator,description\n192.0.2.1,\"two\nlines\"\n192.0.2.2,fine,extra\n",
        );
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("quoted.csv:4:"), "{err}");

        let path = write(&dir, "odd.csv", "indicator\nnot an indicator\n");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("odd.csv:2:"), "{err}");
        assert!(err.contains("give it a `type`"), "{err}");

        let path = write(&dir, "kind.csv", "indicator,type\nx.example,email\n");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("kind.csv:2:"), "{err}");
        assert!(err.contains("unknown indicator type `email`"), "{err}");
    }

    #[test]
    fn a_csv_without_an_indicator_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "nohead.csv", "ip,notes\n192.0.2.1,x\n");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(err.contains("nohead.csv"), "{err}");
        assert!(err.contains("`indicator`"), "{err}");
    }

    #[test]
    fn a_csv_with_a_value_column_and_no_types_infers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "plain.csv",
            "Value,Notes\n192.0.2.1,\n2001:db8::/32,\nBad.Example.,\nhttps://bad.example/x,\n\
             DA39A3EE5E6B4B0D3255BFEF95601890AFD80709,\n",
        );
        let index = IocIndex::load(&[path]).unwrap();
        assert_eq!(index.len(), 5);
        assert_eq!(index.lookup("192.0.2.1")[0].kind, "ipv4");
        assert_eq!(index.lookup("2001:db8:1::1")[0].indicator, "2001:db8::/32");
        assert_eq!(index.lookup("www.bad.example")[0].indicator, "bad.example");
        assert_eq!(index.lookup("https://bad.example/x")[0].kind, "url");
        assert_eq!(
            index.lookup("da39a3ee5e6b4b0d3255bfef95601890afd80709")[0].kind,
            "sha1"
        );
        assert!(index.lookup("192.0.2.1")[0].labels.is_empty());
    }

    #[test]
    fn feed_files_that_cannot_be_read_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        let err = IocIndex::load(&[missing]).unwrap_err();
        assert!(err.contains("missing.csv"), "{err}");

        let path = write(&dir, "feed.txt", "192.0.2.1\n");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(
            err.contains("feed.txt") && err.contains("unknown format"),
            "{err}"
        );

        let path = write(&dir, "broken.json", "{\"type\": \"bundle\", ");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(
            err.contains("broken.json") && err.contains("not JSON"),
            "{err}"
        );

        let path = write(&dir, "notbundle.json", "{\"type\": \"indicator\"}");
        let err = IocIndex::load(&[path]).unwrap_err();
        assert!(
            err.contains("notbundle.json") && err.contains("bundle"),
            "{err}"
        );
    }

    #[test]
    fn stix_pattern_subset() {
        let one =
            |p: &str| stix_pattern(p).map(|v| v.iter().map(Indicator::text).collect::<Vec<_>>());
        assert_eq!(
            one("[ipv4-addr:value = '198.51.100.1']"),
            Some(vec!["198.51.100.1".into()])
        );
        assert_eq!(
            one("[ipv4-addr:value ISSUBSET '198.51.100.0/24']"),
            Some(vec!["198.51.100.0/24".into()])
        );
        assert_eq!(
            one("[ipv6-addr:value = '2001:db8::1'] OR ([domain-name:value = 'x.example'])"),
            Some(vec!["2001:db8::1".into(), "x.example".into()])
        );
        assert_eq!(
            one(
                "[file:hashes.'SHA-256' = 'AEC070645FE53EE3B3763059376134F058CC337247C978ADD178B6CCDFB0019F'] WITHIN 300 SECONDS"
            ),
            Some(vec![
                "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f".into()
            ])
        );
        assert_eq!(
            one("[url:value = 'http://x.example/it\\'s']"),
            Some(vec!["http://x.example/it's".into()])
        );
        assert_eq!(
            one(
                "[domain-name:value = 'x.example'] START t'2016-06-01T00:00:00Z' STOP t'2016-07-01T00:00:00Z'"
            ),
            Some(vec!["x.example".into()])
        );
        // Not usable: the wrong family, a hash of the wrong length, NOT, other operators and
        // objects, AND across objects, FOLLOWEDBY, unbalanced or empty input.
        for pattern in [
            "[ipv4-addr:value = '2001:db8::1']",
            "[file:hashes.MD5 = 'abcd']",
            "[ipv4-addr:value NOT = '192.0.2.1']",
            "[ipv4-addr:value != '192.0.2.1']",
            "[domain-name:value MATCHES '^x']",
            "[email-addr:value = 'a@x.example']",
            "[ipv4-addr:value = '192.0.2.1' AND domain-name:value = 'x.example']",
            "[ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'x.example']",
            "[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [domain-name:value = 'x.example']",
            "[ipv4-addr:value = '192.0.2.1'",
            "[ipv4-addr:value = '192.0.2.1]",
            "[]",
            "",
            "[ipv4-addr:value = '192.0.2.1'] OR",
        ] {
            assert_eq!(one(pattern), None, "{pattern}");
        }
    }

    #[test]
    fn odd_lookups_match_nothing_and_never_panic() {
        let index = sample();
        for value in [
            "",
            " ",
            ".",
            "..",
            "*.",
            "/",
            "1.2.3.4/99",
            "::",
            "http://",
            "[",
            "é.example",
            "\u{0}",
            "a..b",
            "com",
        ] {
            assert!(index.lookup(value).is_empty(), "{value:?}");
        }
    }
}
