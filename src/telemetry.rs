//! Logs (human or JSON) and Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Starts logging to stderr. `RUST_LOG`, when set, wins over the configured level. Calling it twice
/// is harmless (the second call does nothing), which keeps tests simple.
pub fn init_logging(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    /// The `error` code of the JSON answer: `unauthorized`, `too_large`, `bad_payload`, ...
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/v1/alerts/{source}`), never the raw path, so labels stay few.
    pub route: String,
    pub status: u16,
}

/// Every metric Cordon exports, registered once and shared through `Arc`.
pub struct Metrics {
    registry: Registry,
    pub alerts_accepted: Family<SourceLabels, Counter>,
    pub alerts_rejected: Family<RejectLabels, Counter>,
    pub http_request_seconds: Family<HttpLabels, Histogram>,
    pub store_flush_seconds: Histogram,
    pub store_group_size: Histogram,
    pub runs_started: Family<PlaybookLabels, Counter>,
    pub runs_finished: Family<RunLabels, Counter>,
    /// Times a worker advanced a run.
    pub run_advances: Counter,
    /// Unfinished runs taken back at start (timer re-armed, or queued to advance).
    pub runs_resumed: Counter,
    /// Due runs this replica claimed from a shared store (taken over, timers, decisions elsewhere).
    pub runs_claimed: Counter,
    /// 1 for the store operation under way for longer than `store.stall_limit`, by operation.
    pub store_stalled: Family<StallLabels, Gauge>,
    /// How long the oldest store operation under way has been (0 when none is).
    pub store_oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `on.when` conditions that failed with an error (the playbook did not start), by playbook.
    pub when_errors: Family<PlaybookLabels, Counter>,
    /// The playbook versions (id, fingerprint) whose failing `when` has been logged.
    when_logged: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StallLabels {
    /// `write` or `fsync` (embedded store), `query` or `run batch` (PostgreSQL).
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaybookLabels {
    pub playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub playbook: String,
    pub status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cordon");
        let alerts_accepted = Family::<SourceLabels, Counter>::default();
        registry.register(
            "alerts_accepted",
            "Alerts stored, by source (repeats included)",
            alerts_accepted.clone(),
        );
        let alerts_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "alerts_rejected",
            "Intake requests refused, by source and reason",
            alerts_rejected.clone(),
        );
        let http_request_seconds = Family::<HttpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_request_seconds.clone(),
        );
        let store_flush_seconds = latency_histogram();
        registry.register(
            "store_flush_duration_seconds",
            "Time to write and fsync one group commit",
            store_flush_seconds.clone(),
        );
        let store_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_group_size",
            "Requests covered by one group commit",
            store_group_size.clone(),
        );
        let runs_started = Family::<PlaybookLabels, Counter>::default();
        registry.register(
            "runs_started",
            "Runs created, by playbook",
            runs_started.clone(),
        );
        let runs_finished = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs finished, by playbook and final status",
            runs_finished.clone(),
        );
        let run_advances = Counter::default();
        registry.register(
            "run_advances",
            "Times a worker advanced a run",
            run_advances.clone(),
        );
        let runs_resumed = Counter::default();
        registry.register(
            "runs_resumed",
            "Unfinished runs taken back at start",
            runs_resumed.clone(),
        );
        let runs_claimed = Counter::default();
        registry.register(
            "runs_claimed",
            "Due runs this replica claimed from a shared store",
            runs_claimed.clone(),
        );
        let store_stalled = Family::<StallLabels, Gauge>::default();
        registry.register(
            "store_stalled",
            "1 while a store operation has been under way longer than store.stall_limit, by operation",
            store_stalled.clone(),
        );
        let store_oldest_pending_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "store_oldest_pending_seconds",
            "How long the oldest store operation under way has been",
            store_oldest_pending_seconds.clone(),
        );
        let when_errors = Family::<PlaybookLabels, Counter>::default();
        registry.register(
            "playbook_when_errors",
            "Alerts whose playbook trigger condition (on.when) failed with an error, by playbook",
            when_errors.clone(),
        );
        Metrics {
            registry,
            alerts_accepted,
            alerts_rejected,
            http_request_seconds,
            store_flush_seconds,
            store_group_size,
            runs_started,
            runs_finished,
            run_advances,
            runs_resumed,
            runs_claimed,
            store_stalled,
            store_oldest_pending_seconds,
            when_errors,
            when_logged: Default::default(),
        }
    }

    /// Counts a failed `on.when` of `playbook` at `version` ([`crate::playbook::Compiled::version`]);
    /// true the first time for that version, when the caller logs it. An alert storm would
    /// otherwise log the same error once per alert; a reload that changes the playbook logs again.
    pub fn when_failed(&self, playbook: &str, version: u64) -> bool {
        self.when_errors
            .get_or_create(&PlaybookLabels {
                playbook: playbook.to_owned(),
            })
            .inc();
        let mut logged = self.when_logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.insert((playbook.to_owned(), version))
    }

    /// Records what the store has under way; the stalled operation, if any, once it has been
    /// under way longer than `limit`.
    pub fn observe_store(
        &self,
        oldest: Option<&crate::store::stall::Oldest>,
        limit: std::time::Duration,
    ) -> Option<&'static str> {
        self.store_oldest_pending_seconds
            .set(oldest.map_or(0.0, |o| o.age.as_secs_f64()));
        let stalled = oldest.filter(|o| o.age > limit).map(|o| o.operation);
        for operation in crate::store::stall::Operation::ALL {
            self.store_stalled
                .get_or_create(&StallLabels {
                    operation: operation.name().to_owned(),
                })
                .set(i64::from(stalled == Some(operation)));
        }
        stalled.map(|o| o.name())
    }

    /// Counts a refused intake request.
    pub fn reject(&self, source: &str, reason: &str) {
        self.alerts_rejected
            .get_or_create(&RejectLabels {
                source: source.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// 100 µs to about 3 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_when_is_counted_every_time_and_logged_once_per_version() {
        let metrics = Metrics::new();
        assert!(metrics.when_failed("triage", 1));
        assert!(!metrics.when_failed("triage", 1));
        assert!(metrics.when_failed("triage", 2));
        assert!(metrics.when_failed("other", 1));
        let text = metrics.render();
        assert!(
            text.contains("cordon_playbook_when_errors_total{playbook=\"triage\"} 3"),
            "{text}"
        );
    }
}
