//! A fake of three threat-intelligence APIs on one 127.0.0.1:0 listener, answering with the
//! integrations' own fixtures (`integrations/<name>/fixtures/`):
//!
//! - AbuseIPDB API v2 (<https://docs.abuseipdb.com/#check-endpoint>): `GET /api/v2/check` with
//!   `ipAddress` and `maxAgeInDays` (1–365) in the query and the key in the `Key` header; errors
//!   are `{"errors": [{"detail", "status"}]}` (401 for a wrong key, 422 for bad parameters, 429
//!   over the daily quota, with `Retry-After`).
//! - VirusTotal API v3 (<https://docs.virustotal.com/reference/overview>): `GET
//!   /api/v3/ip_addresses/{ip}`, `/api/v3/domains/{domain}`, `/api/v3/files/{hash}` with the key in
//!   `x-apikey`; errors are `{"error": {"code", "message"}}` (401 `AuthenticationRequiredError` /
//!   `WrongCredentialsError`, 404 `NotFoundError`, 429 `QuotaExceededError`).
//! - GreyNoise Community API v3 (<https://docs.greynoise.io/reference/getcommunityip>): `GET
//!   /v3/community/{ip}` with an optional `key` header; 404 with `noise`/`riot` false for an address
//!   it has not seen, 400 for one that is not routable IPv4, 429 over the daily limit.
//!
//! Besides, `GET /v1/reputation/{ip}` stands for a vendor no integration ships for (the test of a
//! folder added at run time): bearer auth, `{"ip", "verdict", "score"}`.
//!
//! Addresses with a fixed behaviour: [`QUOTA_IP`] answers 429 everywhere, [`BROKEN_IP`] 500,
//! [`ECHO_IP`] a 422 (AbuseIPDB) or 400 (VirusTotal) whose message repeats the request's headers,
//! key included, as a careless API might; on AbuseIPDB, [`REDIRECT_IP`] a 302 to [`ELSEWHERE`].
//! Every request is recorded, headers and all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fake::{self, FakeServer};

/// Answers 429 (quota used up) on every API.
pub const QUOTA_IP: &str = "198.51.100.29";
/// Answers 500 on every API.
pub const BROKEN_IP: &str = "198.51.100.50";
/// Answers an error that repeats the request's headers (the key among them).
pub const ECHO_IP: &str = "198.51.100.66";
/// AbuseIPDB answers a redirect to [`ELSEWHERE`], which a client must not follow with the key.
pub const REDIRECT_IP: &str = "198.51.100.77";
/// Where [`REDIRECT_IP`] points.
pub const ELSEWHERE: &str = "/elsewhere/collect";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `abuseipdb`, `virustotal`, `greynoise` or `custom`.
    pub vendor: &'static str,
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// Header names lower-case.
    pub headers: BTreeMap<String, String>,
}

impl Seen {
    fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Seen {
        let path = uri.path().to_owned();
        let vendor = if path.starts_with("/api/v2/") {
            "abuseipdb"
        } else if path.starts_with("/api/v3/") {
            "virustotal"
        } else if path.starts_with("/v3/community/") {
            "greynoise"
        } else {
            "custom"
        };
        Seen {
            vendor,
            method: method.to_string(),
            path,
            query: uri.query().unwrap_or_default().to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The keys each API accepts.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub abuseipdb: String,
    pub virustotal: String,
    pub greynoise: String,
    /// The bearer token of `/v1/reputation/{ip}`.
    pub custom: String,
}

/// The running fake.
pub struct FakeIntel {
    /// `http://127.0.0.1:PORT`: the base URL every vendor host is pointed at.
    pub base: String,
    server: FakeServer,
}

impl FakeIntel {
    pub async fn start(keys: Keys) -> FakeIntel {
        let keys = Arc::new(keys);
        let server = fake::serve(axum::Router::new().fallback(move |request: Request| {
            let keys = keys.clone();
            async move { answer(&keys, request) }
        }))
        .await;
        FakeIntel {
            base: server.base.clone(),
            server,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.server
            .requests()
            .iter()
            .map(|r| Seen::of(&r.method, &r.uri, &r.headers))
            .collect()
    }

    /// The requests to one vendor.
    pub fn requests_to(&self, vendor: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.vendor == vendor)
            .collect()
    }

    /// The `endpoints:` line of a credentials entry pointing `host` here.
    pub fn endpoints(&self, host: &str) -> String {
        format!("endpoints: {{ \"{host}\": \"{}\" }}", self.base)
    }
}

/// The repository's `integrations/` folder.
pub fn integrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations")
}

/// An integration's fixture, parsed.
pub fn fixture(integration: &str, name: &str) -> Value {
    let path = integrations_dir()
        .join(integration)
        .join("fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn answer(keys: &Keys, request: Request) -> Response {
    let record = Seen::of(request.method(), request.uri(), request.headers());
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": "GET only" }),
        );
    }
    let headers = request.headers();
    match record.vendor {
        "abuseipdb" => abuseipdb(keys, &record, headers),
        "virustotal" => virustotal(keys, &record, headers),
        "greynoise" => greynoise(keys, &record, headers),
        _ => custom(keys, &record, headers),
    }
}

/// Every header as `name: value`, the way a careless error page repeats a request.
fn echo(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn abuseipdb(keys: &Keys, seen: &Seen, headers: &HeaderMap) -> Response {
    let error = |status: StatusCode, detail: String| {
        json_response(
            status,
            json!({ "errors": [{ "detail": detail, "status": status.as_u16() }] }),
        )
    };
    if seen.path != "/api/v2/check" {
        return error(StatusCode::NOT_FOUND, "Not Found".into());
    }
    if seen.header("key") != Some(keys.abuseipdb.as_str()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            fixture("abuseipdb", "error-401.json"),
        );
    }
    let Some(ip) = seen
        .param("ipAddress")
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            fixture("abuseipdb", "error-422.json"),
        );
    };
    match seen.param("maxAgeInDays").map(|d| d.parse::<u32>()) {
        None => {}
        Some(Ok(1..=365)) => {}
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The max age in days must be between 1 and 365.".into(),
            );
        }
    }
    match ip.as_str() {
        QUOTA_IP => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                fixture("abuseipdb", "error-429.json"),
            );
            response
                .headers_mut()
                .insert("retry-after", "29".parse().unwrap());
            response
                .headers_mut()
                .insert("x-ratelimit-remaining", "0".parse().unwrap());
            response
        }
        BROKEN_IP => error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error".into()),
        ECHO_IP => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Rejected request with headers {}", echo(headers)),
        ),
        REDIRECT_IP => {
            let mut response = StatusCode::FOUND.into_response();
            response
                .headers_mut()
                .insert("location", ELSEWHERE.parse().unwrap());
            response
        }
        "8.8.8.8" => json_response(
            StatusCode::OK,
            fixture("abuseipdb", "check-never-reported.json"),
        ),
        _ => {
            let mut body = fixture("abuseipdb", "check.json");
            body["data"]["ipAddress"] = json!(ip);
            body["data"]["ipVersion"] = json!(if ip.contains(':') { 6 } else { 4 });
            json_response(StatusCode::OK, body)
        }
    }
}

fn virustotal(keys: &Keys, seen: &Seen, headers: &HeaderMap) -> Response {
    let error = |status: StatusCode, code: &str, message: String| {
        json_response(
            status,
            json!({ "error": { "code": code, "message": message } }),
        )
    };
    match seen.header("x-apikey") {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationRequiredError",
                "X-Apikey header is missing".into(),
            );
        }
        Some(key) if key != keys.virustotal => {
            return json_response(
                StatusCode::UNAUTHORIZED,
                fixture("virustotal", "error-401.json"),
            );
        }
        Some(_) => {}
    }
    let Some((collection, id)) = seen
        .path
        .strip_prefix("/api/v3/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(StatusCode::NOT_FOUND, "NotFoundError", "Not found".into());
    };
    let id = url::form_urlencoded::parse(format!("x={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match id.as_str() {
        QUOTA_IP => {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                fixture("virustotal", "error-429.json"),
            );
        }
        BROKEN_IP => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TransientError",
                "Transient error, retry later".into(),
            );
        }
        ECHO_IP => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidArgumentError",
                format!("Rejected request with headers {}", echo(headers)),
            );
        }
        _ => {}
    }
    let (fixture_name, known, kind) = match collection {
        "ip_addresses" => ("ip-address.json", id == "203.0.113.77", "IP address"),
        "domains" => ("domain.json", id == "evil-updates.example", "Domain"),
        "files" => {
            let file = fixture("virustotal", "file.json");
            let a = &file["data"]["attributes"];
            let known = ["md5", "sha1", "sha256"]
                .iter()
                .any(|h| a[h].as_str() == Some(id.to_ascii_lowercase().as_str()));
            ("file.json", known, "File")
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                format!("Unknown collection {collection}"),
            );
        }
    };
    if known {
        json_response(StatusCode::OK, fixture("virustotal", fixture_name))
    } else {
        error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("{kind} \"{id}\" not found"),
        )
    }
}

fn greynoise(keys: &Keys, seen: &Seen, _headers: &HeaderMap) -> Response {
    // The key is optional on the Community API; a key that is sent must be right.
    if let Some(key) = seen.header("key")
        && key != keys.greynoise
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Unauthorized: invalid API key" }),
        );
    }
    let ip = seen.path.trim_start_matches("/v3/community/");
    let routable = match ip.parse::<std::net::Ipv4Addr>() {
        Ok(v4) => {
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified())
        }
        Err(_) => false,
    };
    if !routable {
        return json_response(
            StatusCode::BAD_REQUEST,
            fixture("greynoise", "community-400.json"),
        );
    }
    match ip {
        QUOTA_IP => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            fixture("greynoise", "community-429.json"),
        ),
        BROKEN_IP => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "message": "Encountered error while performing request" }),
        ),
        "203.0.113.77" => {
            json_response(StatusCode::OK, fixture("greynoise", "community-noise.json"))
        }
        "8.8.8.8" => json_response(StatusCode::OK, fixture("greynoise", "community-riot.json")),
        _ => {
            let mut body = fixture("greynoise", "community-not-found.json");
            body["ip"] = json!(ip);
            json_response(StatusCode::NOT_FOUND, body)
        }
    }
}

fn custom(keys: &Keys, seen: &Seen, _headers: &HeaderMap) -> Response {
    let expected = format!("Bearer {}", keys.custom);
    if seen.header("authorization") != Some(expected.as_str()) {
        return json_response(StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" }));
    }
    match seen.path.strip_prefix("/v1/reputation/") {
        Some(ip) => json_response(
            StatusCode::OK,
            json!({ "ip": ip, "verdict": "malicious", "score": 87 }),
        ),
        None => json_response(StatusCode::NOT_FOUND, json!({ "error": "no such path" })),
    }
}
