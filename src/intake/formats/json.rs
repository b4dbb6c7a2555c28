//! Lenient JSON helpers shared by the normalizers.
//!
//! Sources disagree on field-name case (Falco's `priority` and a forwarder's `Priority`,
//! GuardDuty's camelCase wire format and boto3's PascalCase), write numbers as strings and strings
//! as numbers, and send `null` or `""` for fields they have nothing for. These helpers let each
//! normalizer name the field it wants and keep the leniency in one place:
//!
//! - a key is looked up exactly first, then ignoring ASCII case;
//! - `null` and blank strings count as absent;
//! - text is accepted from strings, numbers and booleans (as written);
//! - numbers are accepted from numbers and numeric strings.
//!
//! None of them can panic, whatever the input.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::FormatError;

/// The body as a tree. The body was already checked to be JSON, so this fails only on what the
/// tree parser refuses beyond that (none known); the error is kept rather than unwrapped.
pub(super) fn parse(raw: &RawValue) -> Result<Value, FormatError> {
    serde_json::from_str(raw.get())
        .map_err(|e| FormatError::new(format!("body is not valid JSON: {e}")))
}

/// `v` as an object, or an error saying that `what` must be one.
pub(super) fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, FormatError> {
    v.as_object().ok_or_else(|| {
        FormatError::new(format!("{what} must be a JSON object, got {}", kind_of(v)))
    })
}

/// `what`, and where it sits when that is not the top of the body (`at` is a field prefix such as
/// `detail.findings[1].`): "the finding at `detail.findings[1]`". For error messages.
pub(super) fn located(what: &str, at: &str) -> String {
    let at = at.trim_end_matches('.');
    if at.is_empty() {
        what.to_owned()
    } else {
        format!("{what} at `{at}`")
    }
}

/// "a string", "an array", ...: for error messages.
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The member `key` of the object `v`: the exact key, else the first key equal to it ignoring
/// ASCII case. `None` when `v` is not an object or the member is missing or `null`.
pub(super) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let map = v.as_object()?;
    let found = match map.get(key) {
        Some(found) => found,
        None => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)?,
    };
    (!found.is_null()).then_some(found)
}

/// The value at a dotted `path` such as `service.action.actionType`; a numeric segment indexes an
/// array (`portProbeDetails.0`). Keys that themselves hold dots (Falco's `k8s.ns.name`) are read
/// with [`get`] instead.
pub(super) fn path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let found = path
        .split('.')
        .try_fold(v, |current, segment| match current {
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => get(current, segment),
        })?;
    (!found.is_null()).then_some(found)
}

/// The text of a scalar: a string trimmed (blank is absent), a number or boolean as written.
/// Arrays and objects have no text.
pub(super) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The text at `p` (see [`path`] and [`as_text`]).
pub(super) fn text(v: &Value, p: &str) -> Option<String> {
    path(v, p).and_then(as_text)
}

/// The text at the first of `paths` that has some.
/// Copies the text at each `(label, path)` of `v` into `labels`, skipping what is absent.
pub(super) fn copy_labels(
    labels: &mut std::collections::BTreeMap<String, String>,
    v: &Value,
    paths: &[(&str, &str)],
) {
    for (label, p) in paths {
        if let Some(value) = text(v, p) {
            labels.insert((*label).to_owned(), value);
        }
    }
}

pub(super) fn first_text(v: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| text(v, p))
}

/// The text at `p`, or an error naming `shown` (the field as the sender would write it, e.g.
/// `detail.type`) as missing.
pub(super) fn required_text(v: &Value, p: &str, shown: &str) -> Result<String, FormatError> {
    text(v, p).ok_or_else(|| FormatError::missing(shown))
}

/// A finite number from a number or a numeric string.
pub(super) fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A TCP/UDP port from a number or numeric string in 0–65535.
pub(super) fn port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u16>().ok(),
        _ => None,
    }
}

/// The texts of an array of scalars (or of a lone scalar), skipping what has no text.
pub(super) fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(as_text).collect(),
        other => as_text(other).into_iter().collect(),
    }
}

/// Any value as a label value: scalars as [`as_text`] writes them, arrays and objects as compact
/// JSON; `None` for null and blank strings.
pub(super) fn label_value(v: &Value) -> Option<String> {
    match v {
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
        other => as_text(other),
    }
}

/// Every member of the object `v` as a label (see [`label_value`]).
pub(super) fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), label_value(v)?)))
        .collect()
}

/// `s` as an IP address in its canonical text form, or `None` when it is not one (a service name
/// such as `cloudtrail.amazonaws.com`, `AWS Internal`, a host name).
///
/// Brackets around an IPv6 address are dropped. A dotted quad whose parts carry leading zeros
/// (`075.050.255.67`, as some anonymized samples and hand-written payloads have) is read as
/// decimal, the way the people writing it mean it; the standard parser refuses it because C's
/// `inet_aton` would read those parts as octal.
pub(super) fn ip(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets).to_string())
}

/// The IP address at `p`, when the text there is one (see [`ip`]).
pub(super) fn ip_at(v: &Value, p: &str) -> Option<String> {
    text(v, p).as_deref().and_then(ip)
}

/// A timestamp: RFC 3339 (any number of fraction digits), or the same without an offset, which
/// Azure writes at times and which is UTC.
pub(super) fn time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// The first parseable timestamp among `paths`.
pub(super) fn first_time(v: &Value, paths: &[&str]) -> Option<DateTime<Utc>> {
    paths
        .iter()
        .find_map(|p| text(v, p).as_deref().and_then(time))
}

/// The exact text of the member `key` of the object `raw` (exact key first, then any ASCII case),
/// so that a split payload can keep each part byte for byte. `Ok(None)` when `raw` is an object
/// without the member; an error when `raw` is not an object.
pub(super) fn member(raw: &RawValue, key: &str) -> Result<Option<Box<RawValue>>, FormatError> {
    let mut map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw.get())
        .map_err(|_| FormatError::new("the payload must be a JSON object"))?;
    if let Some(found) = map.remove(key) {
        return Ok(Some(found));
    }
    let other_case = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
    Ok(other_case.and_then(|k| map.remove(&k)))
}

/// The exact text of each element of the array `raw`; `what` names the array in the error when
/// `raw` is something else.
pub(super) fn elements(raw: &RawValue, what: &str) -> Result<Vec<Box<RawValue>>, FormatError> {
    serde_json::from_str(raw.get())
        .map_err(|_| FormatError::new(format!("{what} must be a JSON array")))
}

/// Parses each element of the array `raw` and pairs it with its exact text.
pub(super) fn parsed_elements(
    raw: &RawValue,
    what: &str,
) -> Result<Vec<(Box<RawValue>, Value)>, FormatError> {
    elements(raw, what)?
        .into_iter()
        .map(|item| {
            let value = parse(&item)?;
            Ok((item, value))
        })
        .collect()
}

/// Turns every element of the JSON array `raw` into an alert with `f(element text, element value,
/// location)`, the location being `{prefix}[{i}].` so errors name the element.
pub(super) fn map_elements(
    raw: &RawValue,
    what: &str,
    prefix: &str,
    f: impl Fn(Box<RawValue>, &Value, &str) -> Result<crate::alert::Alert, FormatError>,
) -> Result<Vec<crate::alert::Alert>, FormatError> {
    parsed_elements(raw, what)?
        .into_iter()
        .enumerate()
        .map(|(i, (item, value))| f(item, &value, &format!("{prefix}[{i}].")))
        .collect()
}

/// The last segment of an id path (`/subscriptions/…/virtualMachines/vm1` → `vm1`).
pub(super) fn last_segment(id: &str) -> Option<String> {
    id.rsplit('/').find(|s| !s.is_empty()).map(str::to_owned)
}

/// The segment after `name` in a `/`-separated id (`…/subscriptions/<id>/…`), matching `name`
/// ignoring ASCII case.
pub(super) fn segment_after(id: &str, name: &str) -> Option<String> {
    let mut segments = id.split('/');
    segments.find(|s| s.eq_ignore_ascii_case(name))?;
    segments.next().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[cfg(test)]
pub(super) mod testing {
    //! Helpers for the normalizer tests: fixtures live in `../shared/fixtures/alerts/` beside the
    //! crate and are read, never copied.

    use serde_json::Value;

    use crate::alert::Alert;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/alerts/");

    /// The bytes of `alerts/<name>`.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
    }

    /// Every fixture file, as a path relative to `alerts/`.
    pub(crate) fn all_fixtures() -> Vec<String> {
        let mut names = Vec::new();
        let dirs = std::fs::read_dir(FIXTURES).expect("fixture directory");
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let dir_name = dir.file_name().to_string_lossy().into_owned();
                let file_name = file.file_name().to_string_lossy().into_owned();
                names.push(format!("{dir_name}/{file_name}"));
            }
        }
        names.sort();
        names
    }

    /// `bytes` as a JSON tree.
    pub(crate) fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("fixture is JSON")
    }

    /// Asserts that the alert's raw text appears byte for byte in `body` and reads back as
    /// `expected`.
    pub(crate) fn assert_raw(alert: &Alert, body: &[u8], expected: &Value) {
        let body = std::str::from_utf8(body).expect("UTF-8 body");
        assert!(
            body.contains(alert.raw.get()),
            "raw is not a verbatim slice of the body"
        );
        let got: Value = serde_json::from_str(alert.raw.get()).expect("raw is JSON");
        assert_eq!(&got, expected);
    }

    /// Asserts that the alert's raw text is the whole body (less surrounding whitespace).
    pub(crate) fn assert_raw_is_body(alert: &Alert, body: &[u8]) {
        let body = std::str::from_utf8(body).expect("UTF-8 body");
        assert_eq!(alert.raw.get(), body.trim());
    }

    /// The message of the error `result` holds.
    pub(crate) fn error_of(result: Result<Vec<Alert>, super::FormatError>) -> String {
        match result {
            Ok(alerts) => panic!("expected a FormatError, got {} alert(s)", alerts.len()),
            Err(e) => e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{all_fixtures, fixture, value};
    use super::*;
    use crate::intake::formats::SourceKind;

    #[test]
    fn keys_match_in_any_case_and_null_is_absent() {
        let v =
            json!({"Priority": "Error", "rule": null, "output_fields": {"k8s.ns.name": "default"}});
        assert_eq!(text(&v, "priority").as_deref(), Some("Error"));
        assert_eq!(get(&v, "rule"), None);
        let fields = get(&v, "Output_Fields").expect("fields");
        assert_eq!(get(fields, "k8s.ns.name"), Some(&json!("default")));
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"a": {"b": [{"c": 7}, {"c": " x "}]}});
        assert_eq!(text(&v, "a.b.0.c").as_deref(), Some("7"));
        assert_eq!(text(&v, "a.b.1.c").as_deref(), Some("x"));
        assert_eq!(text(&v, "a.b.9.c"), None);
        assert_eq!(text(&v, "a.b.x"), None);
        assert_eq!(text(&v, "a"), None, "objects have no text");
    }

    #[test]
    fn numbers_come_from_numbers_and_numeric_strings() {
        assert_eq!(number(&json!(5)), Some(5.0));
        assert_eq!(number(&json!(" 7.5 ")), Some(7.5));
        assert_eq!(number(&json!("NaN")), None);
        assert_eq!(number(&json!("high")), None);
        assert_eq!(port(&json!(22)), Some(22));
        assert_eq!(port(&json!(70000)), None);
        assert_eq!(port(&json!("443")), Some(443));
    }

    #[test]
    fn ip_addresses_are_recognised_and_service_names_are_not() {
        assert_eq!(ip("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("075.050.255.67").as_deref(), Some("75.50.255.67"));
        assert_eq!(ip("cloudtrail.amazonaws.com"), None);
        assert_eq!(ip("AWS Internal"), None);
        assert_eq!(ip("1.2.3"), None);
        assert_eq!(ip("1.2.3.4.5"), None);
        assert_eq!(ip("256.1.1.1"), None);
    }

    #[test]
    fn times_with_long_fractions_and_without_offset_parse() {
        let t = time("2020-02-23T13:47:58.0000000Z").expect("7 fraction digits");
        assert_eq!(t.to_rfc3339(), "2020-02-23T13:47:58+00:00");
        assert!(time("2019-03-22T13:58:24.3713213Z").is_some());
        assert!(time("2018-03-07T06:33:21.873077559-05:00").is_some());
        assert!(time("2019-01-01T13:15:30").is_some());
        assert!(time("yesterday").is_none());
    }

    #[test]
    fn members_and_elements_keep_exact_text() {
        let body = r#"{"Detail" : {"findings":[ {"a" :1} ,{"b":[2, 3]} ]}}"#;
        let raw: &RawValue = serde_json::from_str(body).expect("json");
        let detail = member(raw, "detail").expect("object").expect("member");
        let findings = member(&detail, "findings")
            .expect("object")
            .expect("member");
        let items = elements(&findings, "findings").expect("array");
        let texts: Vec<&str> = items.iter().map(|i| i.get()).collect();
        assert_eq!(texts, [r#"{"a" :1}"#, r#"{"b":[2, 3]}"#]);
        assert!(member(raw, "nope").expect("object").is_none());
        assert!(member(&items[0], "a").is_ok());
        assert!(elements(raw, "`x`").is_err());
    }

    #[test]
    fn id_segments() {
        let id = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
        assert_eq!(segment_after(id, "SUBSCRIPTIONS").as_deref(), Some("sub-1"));
        assert_eq!(last_segment(id).as_deref(), Some("vm1"));
        assert_eq!(segment_after("/subscriptions/", "subscriptions"), None);
    }

    // What every normalizer must do with input that is not its format: answer with an error,
    // never panic.

    #[test]
    fn every_source_rejects_non_json_and_empty_input() {
        for source in SourceKind::ALL {
            for body in [
                &b"not json"[..],
                b"",
                b"{\"a\":",
                b"[]",
                b"{}",
                b"null",
                b"42",
                b"\"s\"",
            ] {
                let result = source.normalize(body);
                assert!(
                    result.is_err(),
                    "{source} accepted {:?}",
                    String::from_utf8_lossy(body)
                );
            }
            let err = source.normalize(b"not json").expect_err("not JSON");
            assert!(
                err.message.contains("not valid JSON"),
                "{source}: {}",
                err.message
            );
        }
    }

    #[test]
    fn every_source_survives_deep_nesting() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let deep_object = format!("{}1{}", r#"{"detail":"#.repeat(100), "}".repeat(100));
        for source in SourceKind::ALL {
            assert!(source.normalize(deep.as_bytes()).is_err(), "{source}");
            let _ = source.normalize(deep_object.as_bytes());
        }
    }

    /// Every fixture file is read by a test of its normalizer, so a fixture added to the shared
    /// set without a test is noticed.
    #[test]
    fn every_fixture_has_a_test() {
        let normalizers = [
            include_str!("alertmanager.rs"),
            include_str!("aws_cloudtrail.rs"),
            include_str!("aws_guardduty.rs"),
            include_str!("aws_securityhub.rs"),
            include_str!("azure_defender.rs"),
            include_str!("azure_monitor.rs"),
            include_str!("azure_sentinel.rs"),
            include_str!("falco.rs"),
            include_str!("gcp_scc.rs"),
        ];
        let names = all_fixtures();
        assert!(!names.is_empty(), "no fixtures found");
        for name in names {
            let file = name.rsplit('/').next().unwrap_or(&name);
            assert!(
                normalizers.iter().any(|n| n.contains(file)),
                "no test reads {name}"
            );
        }
    }

    /// Every fixture, fed to every source: the right source reads it, the others refuse it or
    /// read it, and none panics.
    #[test]
    fn every_source_survives_every_fixture() {
        for name in all_fixtures() {
            let body = fixture(&name);
            for source in SourceKind::ALL {
                let _ = source.normalize(&body);
            }
        }
    }

    /// Each fixture with one value at a time swapped for a value of another type (a number where
    /// text is expected, null, an empty object, ...): the fixture's own source must not panic.
    #[test]
    fn odd_values_anywhere_do_not_panic() {
        let odd = [
            json!(null),
            json!(7),
            json!("x"),
            json!({}),
            json!([1]),
            json!(-1e300),
        ];
        let sources = [
            ("alertmanager/", SourceKind::Alertmanager),
            ("aws_cloudtrail/", SourceKind::AwsCloudTrail),
            ("aws_guardduty/", SourceKind::AwsGuardDuty),
            ("aws_securityhub/", SourceKind::AwsSecurityHub),
            ("azure/azure_monitor", SourceKind::AzureMonitor),
            ("azure/defender", SourceKind::AzureDefender),
            ("azure/sentinel", SourceKind::AzureSentinel),
            ("falco/", SourceKind::Falco),
            ("gcp_scc/", SourceKind::GcpScc),
        ];
        let mut runs = 0;
        for name in all_fixtures() {
            let Some((_, source)) = sources.iter().find(|(prefix, _)| name.starts_with(prefix))
            else {
                continue;
            };
            let mut tree = value(&fixture(&name));
            // The ARM examples wrap the payload in `responses.200.body`, and SNS in `Message`.
            if let Some(body) = tree.pointer("/responses/200/body") {
                tree = body.clone();
            }
            if let Some(message) = tree.get("Message").and_then(Value::as_str) {
                tree = serde_json::from_str(message).expect("SNS message is JSON");
            }
            assert!(
                source.normalize(tree.to_string().as_bytes()).is_ok(),
                "{name}"
            );
            for pointer in pointers(&tree, String::new()) {
                for replacement in &odd {
                    let mut mutated = tree.clone();
                    if let Some(slot) = mutated.pointer_mut(&pointer) {
                        *slot = replacement.clone();
                    }
                    let _ = source.normalize(mutated.to_string().as_bytes());
                    let _ = SourceKind::Generic.normalize(mutated.to_string().as_bytes());
                    runs += 1;
                }
            }
        }
        assert!(runs > 1000, "only {runs} mutations ran");
    }

    /// JSON pointers to every node below `v`.
    fn pointers(v: &Value, at: String) -> Vec<String> {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    (
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        v,
                    )
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}/{i}"), v))
                .collect(),
            _ => Vec::new(),
        };
        let mut all = Vec::new();
        for (pointer, child) in children {
            all.extend(pointers(child, pointer.clone()));
            all.push(pointer);
        }
        all
    }
}
