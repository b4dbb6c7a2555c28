//! Retention: how long each kind of record is kept, and the pass that forgets what is older.
//!
//! A pass ([`Pruner::run_once`]) walks each kind in key order in short batches
//! ([`crate::store::Store::prune`]), each batch atomic and small, so intake, runs and the outbox go
//! on between batches: on sled a batch is one job of the store thread among the others, on
//! PostgreSQL one transaction that skips the rows being written. A pass looks only at records
//! that existed when it began (ids are time-ordered; the pass's bound is an id taken at its start),
//! so alerts arriving during a pass are never examined by it, whatever the clock says.
//!
//! The server runs a pass every `retention.every` in the background; `cordon store prune` runs
//! one by hand. Time comes from a [`Clock`], so tests age the data by moving the clock rather than
//! by waiting.
//!
//! The audit log is never pruned: every pass appends one `store.pruned` entry saying what it
//! removed and with which cutoffs, and the chain stays whole (docs/retention.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::config::HumanDuration;
use crate::model::audit::{EventKind, NewEntry};
use crate::store::{PruneBatch, PruneKind, PruneRequest, Store, StoreError};

/// `retention:` in the config: how long each kind is kept (`forever` keeps it), and how often the
/// server prunes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the server runs a pass (default `1h`; `0s`: never in the background, only
    /// `cordon store prune`).
    #[serde(default = "default_every")]
    pub every: HumanDuration,
    /// Records looked at per batch (default 500): smaller batches interleave more finely with
    /// intake, larger ones finish a pass sooner.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The source's raw payload kept on each alert, after the alert's last activity (default
    /// `90d`); the normalized alert stays.
    #[serde(default = "days::<90>")]
    pub raw_payloads: Keep,
    /// Alerts whose incident is resolved, after their last activity (default `365d`). An open
    /// incident keeps all its alerts.
    #[serde(default = "days::<365>")]
    pub alerts: Keep,
    /// Resolved incidents, with their alerts, after their last change (default `365d`).
    #[serde(default = "days::<365>")]
    pub incidents: Keep,
    /// Finished runs, after they finished (default `365d`). Unfinished runs are never pruned.
    #[serde(default = "days::<365>")]
    pub runs: Keep,
    /// Evidence records on incidents, after they were collected (default `forever`: as long as
    /// their incident).
    #[serde(default)]
    pub evidence: Keep,
    /// Outbox entries given up on (dead), after they were queued (default `30d`). Delivered
    /// entries are forgotten at delivery; entries still to deliver are never pruned.
    #[serde(default = "days::<30>")]
    pub outbox: Keep,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            every: default_every(),
            batch: default_batch(),
            raw_payloads: days::<90>(),
            alerts: days::<365>(),
            incidents: days::<365>(),
            runs: days::<365>(),
            evidence: Keep::default(),
            outbox: days::<30>(),
        }
    }
}

impl RetentionConfig {
    /// How long `kind` is kept.
    pub fn keep(&self, kind: PruneKind) -> Keep {
        match kind {
            PruneKind::RawPayloads => self.raw_payloads,
            PruneKind::Alerts => self.alerts,
            PruneKind::Incidents => self.incidents,
            PruneKind::Runs => self.runs,
            PruneKind::Evidence => self.evidence,
            PruneKind::Outbox => self.outbox,
        }
    }
}

fn default_every() -> HumanDuration {
    HumanDuration::secs(3600)
}

fn default_batch() -> usize {
    500
}

fn days<const N: u64>() -> Keep {
    Keep(Some(Duration::from_secs(N * 86_400)))
}

/// How long a kind is kept: a duration (`30d`), or `forever` (the default of `Keep` itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep(pub Option<Duration>);

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Keep, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "forever" {
            return Ok(Keep(None));
        }
        let duration: HumanDuration = text
            .parse()
            .map_err(|e: String| serde::de::Error::custom(format!("{e}, or `forever`")))?;
        if duration.0.is_zero() {
            return Err(serde::de::Error::custom(
                "a retention of 0 would forget records as they arrive; write `forever` to keep them, or a duration",
            ));
        }
        Ok(Keep(Some(duration.0)))
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}", HumanDuration(d)),
            None => f.write_str("forever"),
        }
    }
}

/// Where a pass reads the time: the system clock in the server, a movable one in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// What one pass did, per kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// When the pass began, by its clock.
    pub at: DateTime<Utc>,
    pub kinds: Vec<KindReport>,
}

/// What a pass did to one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    /// Records last active before this were pruned.
    pub cutoff: DateTime<Utc>,
    pub examined: u64,
    pub pruned: u64,
    /// Batches it took.
    pub batches: u64,
}

impl PassReport {
    /// How many records of `kind` were pruned (0 when the kind is kept forever).
    pub fn pruned(&self, kind: PruneKind) -> u64 {
        self.kinds
            .iter()
            .find(|k| k.kind == kind.name())
            .map_or(0, |k| k.pruned)
    }
}

/// Runs passes over one store.
pub struct Pruner {
    store: Arc<dyn Store>,
    config: RetentionConfig,
    clock: Clock,
}

impl Pruner {
    pub fn new(store: Arc<dyn Store>, config: RetentionConfig, clock: Clock) -> Pruner {
        Pruner {
            store,
            config,
            clock,
        }
    }

    /// One pass over every kind that has an age, oldest records first, in batches; then one audit
    /// entry saying what it pruned (when it pruned anything).
    pub async fn run_once(&self) -> Result<PassReport, StoreError> {
        let now = (self.clock)();
        // Records created after this id are not looked at by this pass.
        let bound = uuid::Uuid::now_v7().to_string();
        let mut report = PassReport {
            at: now,
            kinds: Vec::new(),
        };
        for kind in PruneKind::ALL {
            let Keep(Some(age)) = self.config.keep(kind) else {
                continue;
            };
            let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let mut done = KindReport {
                kind: kind.name(),
                cutoff,
                examined: 0,
                pruned: 0,
                batches: 0,
            };
            let mut after = None;
            loop {
                let PruneBatch {
                    examined,
                    pruned,
                    next,
                } = self
                    .store
                    .prune(&PruneRequest {
                        kind,
                        cutoff,
                        bound: bound.clone(),
                        after: after.take(),
                        limit: self.config.batch.max(1),
                    })
                    .await?;
                done.examined += examined;
                done.pruned += pruned;
                done.batches += 1;
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
                // Lets the other work of this runtime in between batches.
                tokio::task::yield_now().await;
            }
            report.kinds.push(done);
        }
        let pruned: u64 = report.kinds.iter().map(|k| k.pruned).sum();
        if pruned > 0 {
            let detail: serde_json::Map<String, serde_json::Value> = report
                .kinds
                .iter()
                .map(|k| {
                    (
                        k.kind.to_owned(),
                        json!({ "pruned": k.pruned, "cutoff": crate::model::audit::format_time(&k.cutoff) }),
                    )
                })
                .collect();
            self.store
                .append_audit(vec![
                    NewEntry::new(EventKind::Other("store.pruned".into()))
                        .actor("system:retention")
                        .detail(serde_json::Value::Object(detail)),
                ])
                .await?;
        }
        Ok(report)
    }

    /// Runs a pass every `retention.every` until the store closes (a failed pass is logged and
    /// tried again at the next period).
    pub fn start(self) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.config.every.0;
        if every.is_zero() {
            return None;
        }
        // Between passes the task holds the store only weakly: a server that stops lets its store
        // go (and the embedded store its lock) without waiting up to a period for this task.
        let Pruner {
            store,
            config,
            clock,
        } = self;
        let store = Arc::downgrade(&store);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once; the first pass waits one period after the start.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let pruner = Pruner {
                    store,
                    config: config.clone(),
                    clock: clock.clone(),
                };
                // On a shared store one replica prunes at a time.
                match pruner.store.lease("retention").await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(StoreError::Closed) => return,
                    Err(_) => continue,
                }
                match pruner.run_once().await {
                    Ok(report) => {
                        let pruned: u64 = report.kinds.iter().map(|k| k.pruned).sum();
                        tracing::info!(pruned, "retention pass done");
                    }
                    Err(StoreError::Closed) => return,
                    Err(error) => {
                        tracing::warn!(%error, "retention pass failed; tried again next period")
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_durations_or_forever_and_zero_is_refused() {
        let config: RetentionConfig =
            serde_yaml::from_str("alerts: 30d\nevidence: forever\n").expect("config");
        assert_eq!(config.alerts, Keep(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(config.evidence, Keep(None));
        assert_eq!(config.runs.to_string(), "365d");
        let error = serde_yaml::from_str::<RetentionConfig>("runs: 0s\n").unwrap_err();
        assert!(error.to_string().contains("forever"), "{error}");
        assert!(serde_yaml::from_str::<RetentionConfig>("runs: soon\n").is_err());
    }
}
