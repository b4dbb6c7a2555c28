//! How a call to another system failed, and so what to do next. Every client Cordon has (the
//! outbox deliverers, the chat platforms' APIs, the ticket systems, integrations' `http`) reads a
//! failed HTTP call with this one table:
//!
//! | answer | [`Failure`] |
//! | --- | --- |
//! | 2xx | none: a success |
//! | 429 | `RateLimited`, for as long as `Retry-After` says (when it says) |
//! | 503 with a `Retry-After` | `RateLimited`, for that long |
//! | 408, 5xx | `Retryable` |
//! | 401, 403 | `Auth` |
//! | anything else (404, another 4xx, a 3xx left unfollowed) | `Permanent` |
//! | no answer (refused, reset, timed out) | `Retryable` |
//!
//! What a platform adds on top (Discord's rate-limit body, Slack's `ok: false` error codes, Teams
//! fetching a new token after a 401) stays in the platform's `api.rs`; what each caller does with
//! a class (the outbox waits, integrations tell the engine whether to retry) stays with it.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest wait Cordon takes from the other side; a longer one is cut to this, so that a
/// wrong or hostile `Retry-After` cannot park a delivery for days.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What a failed call means for trying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An outage or a timeout: the same call may work later, after a backoff.
    Retryable,
    /// The other side asked to slow down: the same call works after `retry_after` (when it said
    /// how long; otherwise after a backoff).
    RateLimited { retry_after: Option<Duration> },
    /// The credentials or their permissions were refused: nothing works until an operator fixes
    /// them, after which the same call may.
    Auth,
    /// The call itself is wrong or its object is gone: no retry changes the answer.
    Permanent,
}

impl Failure {
    /// The class of an HTTP answer, `None` for a success (2xx). `headers` give `Retry-After`.
    pub fn from_response(status: u16, headers: &HeaderMap) -> Option<Failure> {
        Some(match status {
            200..=299 => return None,
            429 => Failure::RateLimited {
                retry_after: retry_after(headers),
            },
            503 => match retry_after(headers) {
                Some(after) => Failure::RateLimited {
                    retry_after: Some(after),
                },
                None => Failure::Retryable,
            },
            408 | 500..=599 => Failure::Retryable,
            401 | 403 => Failure::Auth,
            _ => Failure::Permanent,
        })
    }

    /// The class of a call that got no answer. Every such failure is worth another try: the
    /// connection was refused or reset, the answer was late or cut short, or the request could not
    /// be built from what the config holds, which an operator's fix to the config cures.
    pub fn from_transport(_error: &reqwest::Error) -> Failure {
        Failure::Retryable
    }

    /// Whether the same call may work later without anyone acting (an outage, a rate limit).
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Retryable | Failure::RateLimited { .. })
    }

    /// How long the other side asked to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// The wait a response's `Retry-After` header asks for, when it has a readable one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A `Retry-After` value at `now`: seconds (`120`, and as Discord writes them, `0.35`) or an HTTP
/// date (`Wed, 21 Oct 2015 07:28:00 GMT`), which is a wait of zero once past. At most
/// [`MAX_WAIT`]; nothing for anything else.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return seconds(value.parse().ok()?);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default().min(MAX_WAIT))
}

/// `secs` as a wait of at most [`MAX_WAIT`]; nothing for a negative or not-a-number value.
pub fn seconds(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Option<Failure> {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, value.parse().unwrap());
        }
        Failure::from_response(status, &headers)
    }

    fn limited(secs: u64) -> Option<Failure> {
        Some(Failure::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        })
    }

    #[test]
    fn every_status_class_has_one_meaning() {
        assert_eq!(answer(200, None), None);
        assert_eq!(answer(204, Some("5")), None, "a success is a success");
        assert_eq!(answer(429, Some("7")), limited(7));
        assert_eq!(
            answer(429, None),
            Some(Failure::RateLimited { retry_after: None })
        );
        assert_eq!(answer(503, Some("7")), limited(7));
        assert_eq!(answer(503, None), Some(Failure::Retryable));
        for status in [408, 500, 502, 504, 599] {
            assert_eq!(answer(status, None), Some(Failure::Retryable), "{status}");
        }
        // A wait only a rate limit or an unavailable service asks for.
        assert_eq!(answer(500, Some("7")), Some(Failure::Retryable));
        assert_eq!(answer(401, None), Some(Failure::Auth));
        assert_eq!(answer(403, Some("7")), Some(Failure::Auth));
        for status in [400, 404, 409, 410, 422, 302, 304, 101] {
            assert_eq!(answer(status, None), Some(Failure::Permanent), "{status}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_never_more_than_an_hour() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |value: &str| parse_retry_after(value, now);
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse("0.35"), Some(Duration::from_millis(350)));
        // IMF-fixdate, and the obsolete RFC 850 and asctime forms HTTP still asks readers to take.
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:51:37 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:50:37 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse("Sun Nov  6 08:50:07 1994"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse("Sat, 05 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        // Huge waits are cut to an hour, in both forms.
        assert_eq!(parse("99999999999"), Some(MAX_WAIT));
        assert_eq!(parse("Fri, 01 Jan 2100 00:00:00 GMT"), Some(MAX_WAIT));
        // Garbage is no wait at all: the caller's backoff applies.
        for garbage in ["", "soon", "-5", "1.2.3", "NaN", "inf", "12 seconds", "1e3"] {
            assert_eq!(parse(garbage), None, "{garbage:?}");
        }
        assert_eq!(
            answer(429, Some("tomorrow")),
            Some(Failure::RateLimited { retry_after: None })
        );
        assert_eq!(answer(503, Some("tomorrow")), Some(Failure::Retryable));
    }

    #[test]
    fn only_outages_and_rate_limits_pass_by_themselves() {
        assert!(Failure::Retryable.is_transient());
        assert!(Failure::RateLimited { retry_after: None }.is_transient());
        assert!(!Failure::Auth.is_transient());
        assert!(!Failure::Permanent.is_transient());
        assert_eq!(
            limited(3).unwrap().retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(Failure::Retryable.retry_after(), None);
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(seconds(0.25), Some(Duration::from_millis(250)));
        assert_eq!(seconds(1e300), Some(MAX_WAIT));
        assert_eq!(seconds(-1.0), None);
        assert_eq!(seconds(f64::NAN), None);
    }
}
