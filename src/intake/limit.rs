//! Per-source request rate limits: a token bucket per source, shared by every sender of it.
//!
//! The bucket holds up to `burst` tokens and gains `per_second` of them each second; a request
//! takes one or is refused with how long until one is there (the `Retry-After` of the 429).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// One source's bucket.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    /// Tokens left, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            state: Mutex::new((f64::from(limit.burst.get()), Instant::now())),
        }
    }

    /// The limit this bucket keeps.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.limit.per_second.get());
        let burst = f64::from(self.limit.burst.get());
        // A panic while holding the lock leaves two numbers, both still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, counted) = *state;
        let tokens =
            (tokens + now.saturating_duration_since(counted).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn a_burst_is_taken_then_requests_wait_for_the_rate() {
        let bucket = Bucket::new(RateLimit {
            per_second: NonZeroU32::new(2).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(bucket.take(later), Ok(()));
        assert!(bucket.take(later).is_err());
        // A long quiet spell refills no more than the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later), Ok(()));
        }
        assert!(bucket.take(much_later).is_err());
    }
}
