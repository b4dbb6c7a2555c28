//! Pacing calls to another system under the rate limits it documents, so that deliveries wait
//! their turn in Cordon instead of being refused over there.
//!
//! A [`Limit`] is a number of calls per window (Slack's one message per second in a channel,
//! Teams' seven per second and sixty per thirty seconds in a conversation); a scope is what the
//! limits count (a channel, a conversation, a method). A caller asks for its turn with a ticket
//! (the outbox entry it delivers) and gets it now or a time to come back; that time is kept for
//! the ticket, so callers go in the order they first asked and none is passed over. A 429 from the
//! other side holds the scope for its `Retry-After`, whatever the limits say: the other side
//! knows of calls Cordon cannot see (another replica, another app on the same token).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `calls` calls in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub calls: u32,
    pub per: Duration,
}

impl Limit {
    pub const fn new(calls: u32, per: Duration) -> Limit {
        Limit { calls, per }
    }
}

/// Added to every window: calls leave Cordon paced, but reach the other side with a little
/// jitter, and one that arrives early must not count in the window before.
const MARGIN: Duration = Duration::from_millis(100);

/// How long a turn is kept for a ticket that does not come back for it (its entry went out with
/// others, or was set aside): then it is forgotten, its slot still counted until it ages out.
const FORGET_TURN: Duration = Duration::from_secs(120);

/// The turns of every scope (see the module notes).
#[derive(Default)]
pub struct Pacer {
    scopes: Mutex<HashMap<String, Scope>>,
}

#[derive(Default)]
struct Scope {
    /// Calls made and turns given, in time order.
    slots: VecDeque<Instant>,
    /// Turns given for later, by ticket.
    turns: HashMap<String, Instant>,
    /// No call before this (the other side's `Retry-After`).
    held_until: Option<Instant>,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer::default()
    }

    /// Whether the call `ticket` wants to make in `scope` may go now under `limits` (it then
    /// counts as made), or how long until its turn.
    pub fn turn(&self, scope: &str, limits: &[Limit], ticket: &str) -> Result<(), Duration> {
        self.turn_at(scope, limits, ticket, Instant::now())
    }

    fn turn_at(
        &self,
        scope: &str,
        limits: &[Limit],
        ticket: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut scopes) = self.scopes.lock() else {
            return Ok(());
        };
        let longest = limits.iter().map(|l| l.per + MARGIN).max();
        let s = scopes.entry(scope.to_owned()).or_default();
        let held = s.held_until.filter(|h| *h > now);
        if let Some(at) = s.turns.get(ticket).copied() {
            match held {
                // A hold came after the turn was given: queue again behind it.
                Some(until) if until > at => {
                    s.turns.remove(ticket);
                }
                _ if at <= now => {
                    s.turns.remove(ticket);
                    return Ok(());
                }
                _ => return Err(at - now),
            }
        }
        if let Some(longest) = longest {
            while s.slots.front().is_some_and(|t| *t + longest <= now) {
                s.slots.pop_front();
            }
        }
        s.turns.retain(|_, at| *at + FORGET_TURN > now);
        let mut at = held.unwrap_or(now).max(now);
        if let Some(last) = s.slots.back() {
            at = at.max(*last);
        }
        for limit in limits {
            let n = limit.calls.max(1) as usize;
            if s.slots.len() >= n {
                at = at.max(s.slots[s.slots.len() - n] + limit.per + MARGIN);
            }
        }
        s.slots.push_back(at);
        if at <= now {
            return Ok(());
        }
        s.turns.insert(ticket.to_owned(), at);
        Err(at - now)
    }

    /// The other side said to wait `after` before calling again in `scope`.
    pub fn hold(&self, scope: &str, after: Duration) {
        self.hold_at(scope, after, Instant::now());
    }

    fn hold_at(&self, scope: &str, after: Duration, now: Instant) {
        if let Ok(mut scopes) = self.scopes.lock() {
            let s = scopes.entry(scope.to_owned()).or_default();
            let until = now + after;
            s.held_until = Some(s.held_until.map_or(until, |h| h.max(until)));
        }
    }

    /// How long `scope` is still held by the other side, if it is.
    pub fn held(&self, scope: &str) -> Option<Duration> {
        let now = Instant::now();
        let scopes = self.scopes.lock().ok()?;
        let until = scopes.get(scope)?.held_until?;
        (until > now).then(|| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_per_second_spaces_calls_and_keeps_the_order_they_asked_in() {
        let pacer = Pacer::new();
        let limits = [Limit::new(1, SECOND)];
        let t0 = Instant::now();
        assert_eq!(pacer.turn_at("C1", &limits, "a", t0), Ok(()));
        let b = pacer.turn_at("C1", &limits, "b", t0).unwrap_err();
        let c = pacer.turn_at("C1", &limits, "c", t0).unwrap_err();
        assert_eq!(b, SECOND + MARGIN);
        assert_eq!(c, 2 * (SECOND + MARGIN));
        // Another channel is another scope.
        assert_eq!(pacer.turn_at("C2", &limits, "d", t0), Ok(()));
        // `c` coming back early still waits for its own turn; `b` at its turn goes.
        assert!(pacer.turn_at("C1", &limits, "c", t0 + b).is_err());
        assert_eq!(pacer.turn_at("C1", &limits, "b", t0 + b), Ok(()));
        assert_eq!(pacer.turn_at("C1", &limits, "c", t0 + c), Ok(()));
        // A newcomer queues behind every turn given.
        let e = pacer.turn_at("C1", &limits, "e", t0 + c).unwrap_err();
        assert_eq!(e, SECOND + MARGIN);
    }

    #[test]
    fn several_windows_each_hold() {
        // Teams: 7 per second, 8 per two seconds.
        let pacer = Pacer::new();
        let limits = [Limit::new(7, SECOND), Limit::new(8, 2 * SECOND)];
        let t0 = Instant::now();
        for i in 0..7 {
            assert_eq!(pacer.turn_at("conv", &limits, &format!("m{i}"), t0), Ok(()));
        }
        // The 8th waits a second (7 per second), the 9th two (8 per two seconds).
        let eighth = pacer.turn_at("conv", &limits, "m7", t0).unwrap_err();
        assert_eq!(eighth, SECOND + MARGIN);
        let ninth = pacer.turn_at("conv", &limits, "m8", t0).unwrap_err();
        assert_eq!(ninth, 2 * SECOND + MARGIN);
    }

    #[test]
    fn a_hold_from_the_other_side_delays_every_turn_after_it() {
        let pacer = Pacer::new();
        let limits = [Limit::new(5, SECOND)];
        let t0 = Instant::now();
        assert_eq!(pacer.turn_at("jira", &limits, "a", t0), Ok(()));
        pacer.hold_at("jira", 3 * SECOND, t0);
        assert_eq!(
            pacer.turn_at("jira", &limits, "b", t0),
            Err(3 * SECOND),
            "no call while held"
        );
        assert_eq!(pacer.turn_at("jira", &limits, "b", t0 + 3 * SECOND), Ok(()));
        // With no limits of its own, a scope only honours holds.
        assert_eq!(pacer.turn_at("sn", &[], "x", t0), Ok(()));
        pacer.hold_at("sn", SECOND, t0);
        assert!(pacer.turn_at("sn", &[], "y", t0).is_err());
        assert_eq!(pacer.turn_at("sn", &[], "y", t0 + SECOND), Ok(()));
    }
}
