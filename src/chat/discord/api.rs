//! Discord's HTTP API through Cordon's own HTTP client: the configured base URL, the bot token, and
//! the rate limits Discord announces (discord.com/developers/docs/topics/rate-limits). Discord
//! publishes no fixed numbers; each answer's `X-RateLimit-Limit`, `-Remaining` and `-Reset-After`
//! describe the route's bucket, and Cordon keeps count of it: calls go while the bucket has room
//! (counting the calls still under way), and the rest wait for `Reset-After` without calling. A
//! route not called yet is called once before any other call on it, so its bucket is known before
//! several go at once. A 429 says when to come back (`retry_after` in its body, `Retry-After` in
//! its headers) for the route or, when `global`, for every route. Callers get that wait in
//! [`CallError::failure`], which the outbox honours; any other answer is classed by the shared
//! table ([`Failure::from_response`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use crate::config::Secret;
use crate::failure::{self, Failure};
use crate::outbox::DeliveryError;

/// Discord's error codes Cordon acts on.
pub mod codes {
    /// The message is gone (deleted by someone).
    pub const UNKNOWN_MESSAGE: u64 = 10008;
    /// A thread already exists for this message.
    pub const THREAD_EXISTS: u64 = 160004;
}

/// The REST client.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Secret,
    limits: Mutex<Limits>,
}

/// Until when routes (and all of them, for the global limit) must not be called, and what Cordon
/// knows of each route's bucket.
#[derive(Default)]
struct Limits {
    routes: HashMap<String, Instant>,
    global: Option<Instant>,
    buckets: HashMap<String, Bucket>,
}

/// A route's bucket as its last answer described it, counted down by the calls made since.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: u32,
    remaining: u32,
    reset_at: Instant,
    /// How long a spent bucket took to refill, last time it said.
    window: Duration,
    /// Calls on the route still waiting for their answer.
    in_flight: u32,
}

/// How long the calls of a route wait while its first call finds out its bucket.
const PROBE: Duration = Duration::from_millis(250);

/// How long after its reset a bucket nobody calls is kept.
const FORGET_BUCKET: Duration = Duration::from_secs(60);

/// Added to a bucket's reset: Discord counts a call when it arrives, a little after Cordon sends
/// it, so its window starts and ends a little later than Cordon sees.
const RESET_MARGIN: Duration = Duration::from_millis(100);

/// Who a call authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bot <token>` (channel and message routes).
    Bot,
    /// Nothing: interaction webhooks are authorized by the interaction token in their path.
    Interaction,
}

/// A failed call. Its message never holds the token or an interaction token.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    /// The HTTP status, when Discord answered.
    pub status: Option<u16>,
    /// Discord's JSON error code (`10008` unknown message, `160004` thread exists, ...).
    pub code: Option<u64>,
    pub message: String,
    /// What it means for calling again; a rate limit carries how long to wait.
    pub failure: Failure,
}

impl CallError {
    /// Whether calling again later may work by itself: no answer, 408, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        self.failure.is_transient()
    }

    /// The outbox's view: rate limits wait as told, what is [`CallError::retryable`] is retried,
    /// and anything else is set aside. That includes a 401 or 403: Discord answers 403 for a
    /// permission the bot lacks in one channel (`code` 50013), which holding back the incident's
    /// other entries would not fix.
    pub fn into_delivery(self) -> DeliveryError {
        let failure = match self.failure {
            // Not called: the bucket had no room (an attempt only when Discord answered).
            Failure::RateLimited {
                retry_after: Some(wait),
            } if self.status.is_none() => return DeliveryError::wait(self.message, wait),
            Failure::Auth => Failure::Permanent,
            other => other,
        };
        DeliveryError::new(failure, self.message)
    }
}

impl Api {
    /// A client for the API at `base` (`https://discord.com/api/v10`).
    pub fn new(http: reqwest::Client, base: &url::Url, token: Secret) -> Api {
        Api {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            token,
            limits: Mutex::new(Limits::default()),
        }
    }

    /// Sends `body` as JSON to `path` (below the base URL). `route` names the rate-limit bucket
    /// (the route with its major parameter, e.g. `POST /channels/123/messages`); `what` names the
    /// call in errors. Answers the response's JSON (`null` when empty).
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: &T,
        auth: Auth,
        what: &str,
    ) -> Result<Value, CallError> {
        if let Some(wait) = self.take_turn(route) {
            return Err(CallError {
                status: None,
                code: None,
                message: format!("{what}: waiting for Discord's rate limit"),
                failure: Failure::RateLimited {
                    retry_after: Some(wait),
                },
            });
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        if auth == Auth::Bot {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("Bot {}", self.token.expose()),
            );
        }
        let response = request.send().await.map_err(|e| {
            self.answered(route);
            CallError {
                status: None,
                code: None,
                failure: Failure::from_transport(&e),
                // Without the URL: an interaction webhook's path holds its token.
                message: format!("{what}: {}", e.without_url()),
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        self.note_limits(route, status, &headers, &json);
        let Some(failure) = Failure::from_response(status, &headers) else {
            return Ok(json);
        };
        let code = json["code"].as_u64();
        let detail = json["message"].as_str().unwrap_or("").trim();
        let mut message = format!("{what}: Discord answered {status}");
        if !detail.is_empty() {
            message.push_str(&format!(": {}", clip(detail, 200)));
        }
        if let Some(code) = code {
            message.push_str(&format!(" (code {code})"));
        }
        // A 429 always waits: as long as its body says, which its headers may not.
        let failure = if status == 429 {
            Failure::RateLimited {
                retry_after: Some(rate_limit_wait(&headers, &json)),
            }
        } else {
            failure
        };
        Err(CallError {
            status: Some(status),
            code,
            message,
            failure,
        })
    }

    /// How long `route` must still wait, if at all.
    #[cfg(test)]
    fn wait_for(&self, route: &str) -> Option<Duration> {
        let limits = self.limits.lock().ok()?;
        let now = Instant::now();
        let until = [limits.routes.get(route).copied(), limits.global]
            .into_iter()
            .flatten()
            .max()?;
        (until > now).then(|| until - now)
    }

    /// Takes a call on `route` from its bucket, or says how long to wait: while a 429 holds the
    /// route (or every route), while its bucket is spent, and while its first call is finding the
    /// bucket out.
    fn take_turn(&self, route: &str) -> Option<Duration> {
        let mut limits = self.limits.lock().ok()?;
        let now = Instant::now();
        let held = [limits.routes.get(route).copied(), limits.global]
            .into_iter()
            .flatten()
            .max()
            .filter(|until| *until > now);
        if let Some(until) = held {
            return Some(until - now);
        }
        let bucket = limits.buckets.entry(route.to_owned()).or_insert(Bucket {
            // Unknown: one call finds it out while the others wait a little.
            limit: 1,
            remaining: 1,
            reset_at: now + PROBE,
            window: PROBE,
            in_flight: 0,
        });
        if now >= bucket.reset_at {
            bucket.remaining = bucket.limit;
            bucket.reset_at = now + bucket.window + RESET_MARGIN;
        }
        if bucket.remaining == 0 {
            return Some(
                bucket
                    .reset_at
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(10)),
            );
        }
        bucket.remaining -= 1;
        bucket.in_flight += 1;
        None
    }

    /// A call on `route` has its answer (or none will come).
    fn answered(&self, route: &str) {
        if let Ok(mut limits) = self.limits.lock()
            && let Some(bucket) = limits.buckets.get_mut(route)
        {
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
        }
    }

    /// Records what a response says of the route's bucket and of the global limit.
    fn note_limits(&self, route: &str, status: u16, headers: &HeaderMap, json: &Value) {
        self.answered(route);
        let Ok(mut limits) = self.limits.lock() else {
            return;
        };
        let now = Instant::now();
        limits.routes.retain(|_, until| *until > now);
        // Interaction webhooks are a route per interaction: forget buckets long refilled.
        limits
            .buckets
            .retain(|_, b| b.in_flight > 0 || b.reset_at + FORGET_BUCKET > now);
        let described = (
            header(headers, "x-ratelimit-limit").and_then(|v| v.trim().parse::<u32>().ok()),
            header(headers, "x-ratelimit-remaining").and_then(|v| v.trim().parse::<u32>().ok()),
            header(headers, "x-ratelimit-reset-after").and_then(seconds),
        );
        match described {
            (Some(limit), Some(remaining), Some(after)) => {
                let bucket = limits.buckets.entry(route.to_owned()).or_insert(Bucket {
                    limit,
                    remaining,
                    reset_at: now + after,
                    window: after,
                    in_flight: 0,
                });
                bucket.limit = limit.max(1);
                // Calls still under way were made after this one was counted.
                bucket.remaining = remaining.saturating_sub(bucket.in_flight);
                bucket.reset_at = now + after + RESET_MARGIN;
                if remaining == 0 || after > bucket.window {
                    bucket.window = after;
                }
            }
            // A route Discord says nothing about is not counted.
            _ if status != 429 => {
                limits.buckets.remove(route);
            }
            _ => {}
        }
        if status == 429 {
            let until = now + rate_limit_wait(headers, json);
            let global = json["global"].as_bool().unwrap_or(false)
                || header(headers, "x-ratelimit-global").is_some_and(|v| v == "true")
                || header(headers, "x-ratelimit-scope").is_some_and(|v| v == "global");
            if global {
                limits.global = Some(until);
            }
            limits.routes.insert(route.to_owned(), until);
            return;
        }
        if header(headers, "x-ratelimit-remaining").is_some_and(|v| v.trim() == "0")
            && let Some(after) = header(headers, "x-ratelimit-reset-after").and_then(seconds)
        {
            limits.routes.insert(route.to_owned(), now + after);
        }
    }
}

/// The wait a 429 asks for: the body's `retry_after` (seconds, fractional), else the
/// `Retry-After` header, else the bucket's reset; one second when none says.
fn rate_limit_wait(headers: &HeaderMap, json: &Value) -> Duration {
    json["retry_after"]
        .as_f64()
        .and_then(failure::seconds)
        .or_else(|| failure::retry_after(headers))
        .or_else(|| header(headers, "x-ratelimit-reset-after").and_then(seconds))
        .unwrap_or(Duration::from_secs(1))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Seconds as Discord writes them (`"1"`, `"0.35"`), never negative or endless.
fn seconds(text: &str) -> Option<Duration> {
    failure::seconds(text.trim().parse().ok()?)
}

/// At most `max` characters of `text`, with `…` when cut.
pub use crate::chat::cut as clip;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::MAX_WAIT;

    #[test]
    fn waits_come_from_the_body_then_the_headers_and_stay_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let body = serde_json::json!({ "retry_after": 0.25, "global": false });
        assert_eq!(rate_limit_wait(&headers, &body), Duration::from_millis(250));
        assert_eq!(
            rate_limit_wait(&headers, &Value::Null),
            Duration::from_secs(3)
        );
        let absurd = serde_json::json!({ "retry_after": -5.0 });
        assert_eq!(rate_limit_wait(&headers, &absurd), Duration::from_secs(3));
        let huge = serde_json::json!({ "retry_after": 1e300 });
        assert_eq!(rate_limit_wait(&HeaderMap::new(), &huge), MAX_WAIT);
        assert_eq!(seconds("NaN"), None);
    }

    #[test]
    fn a_spent_bucket_holds_its_route_and_a_global_limit_holds_all() {
        let api = Api::new(
            reqwest::Client::new(),
            &url::Url::parse("http://127.0.0.1:9/api/v10").unwrap(),
            Secret::new("t"),
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset-after", "2.5".parse().unwrap());
        api.note_limits("POST /channels/1/messages", 200, &headers, &Value::Null);
        let wait = api.wait_for("POST /channels/1/messages").unwrap();
        assert!(wait > Duration::from_secs(2) && wait <= Duration::from_millis(2500));
        assert_eq!(api.wait_for("POST /channels/2/messages"), None);

        let global = serde_json::json!({ "retry_after": 1.0, "global": true });
        api.note_limits(
            "PATCH /channels/1/messages/:id",
            429,
            &HeaderMap::new(),
            &global,
        );
        assert!(api.wait_for("POST /channels/2/messages").is_some());
    }

    fn bucket(limit: u32, remaining: u32, reset_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", limit.into());
        headers.insert("x-ratelimit-remaining", remaining.into());
        headers.insert("x-ratelimit-reset-after", reset_after.parse().unwrap());
        headers
    }

    #[test]
    fn calls_beyond_a_bucket_wait_uncalled_and_a_new_route_is_called_once_first() {
        let api = Api::new(
            reqwest::Client::new(),
            &url::Url::parse("http://127.0.0.1:9/api/v10").unwrap(),
            Secret::new("t"),
        );
        let route = "POST /channels/1/messages";
        assert_eq!(
            api.take_turn(route),
            None,
            "the first call finds the bucket out"
        );
        assert!(
            api.take_turn(route).is_some(),
            "the others wait for its answer"
        );
        // Discord: 5 per 5 s, 4 left after that call.
        api.note_limits(route, 200, &bucket(5, 4, "5"), &Value::Null);
        for _ in 0..2 {
            assert_eq!(api.take_turn(route), None);
        }
        // An answer to one of them says 3 left; the other is still under way, so 2 are.
        api.note_limits(route, 200, &bucket(5, 3, "4.9"), &Value::Null);
        for _ in 0..2 {
            assert_eq!(api.take_turn(route), None);
        }
        let wait = api.take_turn(route).expect("the bucket is spent");
        assert!(
            wait > Duration::from_secs(4) && wait <= Duration::from_millis(4900) + RESET_MARGIN,
            "{wait:?}"
        );
        // Another channel is another bucket.
        assert_eq!(api.take_turn("POST /channels/2/messages"), None);
    }

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 6), "héllo…");
        assert_eq!(clip("", 0), "");
    }
}
