//! Alerts in from NATS JetStream (`intake.jetstream`): a durable pull consumer on a stream,
//! shared by every replica that names it, so each message goes to one replica at a time.
//!
//! A message's subject names its source (`cordon.alerts.falco`) and its body is what that source
//! sends to `POST /v1/alerts/{source}`, read by the same normalizer. A worker fetches a batch,
//! stores its alerts in one [`Store::ingest`] (deduplicated and grouped as over HTTP), tells the
//! engine, and only then acknowledges the messages. A crash before the acknowledgement has
//! JetStream hand the messages out again after `ack_wait`, and deduplication absorbs the alerts
//! already stored (their dedup keys repeat inside the window). A message that can never be stored
//! (an unknown source, a payload its source's format refuses) is terminated, logged and counted in
//! `cordon_alerts_rejected_total`, so it does not come back forever.
//!
//! Back-pressure: a worker fetches its next batch only once the last one is stored, and the
//! consumer hands out at most `max_ack_pending` unacknowledged messages over all replicas; the
//! stream keeps the rest until the store catches up. A store that fails has the batch handed back
//! (`nak`) and the worker waiting a moment.
//!
//! Publishers authenticate to NATS, not to Cordon: an account's publish permission on
//! `cordon.alerts.falco` is what lets it send falco alerts (docs/streams.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use chrono::Utc;
use futures_util::StreamExt;

use super::config::JetstreamIntake;
use crate::engine::Engine;
use crate::intake::formats::SourceKind;
use crate::store::Store;
use crate::telemetry::Metrics;

/// How long a fetch waits for messages before the worker looks again.
const IDLE: Duration = Duration::from_millis(100);
/// The wait after a failure (no server, a store error) before the next try.
const BACKOFF: Duration = Duration::from_secs(1);

/// What the consumer needs.
pub struct Consumer {
    pub config: JetstreamIntake,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
}

impl Consumer {
    /// Starts connecting (again and again until the server answers) and then the workers. They
    /// stop once the store no longer takes writes (the server is shutting down).
    pub fn start(self) {
        tokio::spawn(async move {
            let this = Arc::new(self);
            let consumer = loop {
                if !this.store.is_ready() {
                    return;
                }
                match this.consumer().await {
                    Ok(consumer) => break consumer,
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %this.config.stream, "JetStream intake is not consuming yet; trying again");
                        tokio::time::sleep(BACKOFF * 5).await;
                    }
                }
            };
            tracing::info!(stream = %this.config.stream, consumer = %this.config.consumer, workers = this.config.workers, "consuming alerts from JetStream");
            for _ in 0..this.config.workers.max(1) {
                tokio::spawn(this.clone().work(consumer.clone()));
            }
        });
    }

    /// The durable consumer, created when missing.
    async fn consumer(&self) -> Result<PullConsumer, String> {
        let client = super::nats::connect(&self.config.server(), "cordon-intake").await?;
        let context = async_nats::jetstream::new(client);
        let stream = context
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| format!("stream `{}`: {e}", self.config.stream))?;
        stream
            .get_or_create_consumer(
                &self.config.consumer,
                pull::Config {
                    durable_name: Some(self.config.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait.0,
                    max_ack_pending: self.config.max_ack_pending,
                    max_deliver: -1,
                    filter_subject: format!("{}.>", self.config.subject),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer `{}`: {e}", self.config.consumer))
    }

    async fn work(self: Arc<Consumer>, consumer: PullConsumer) {
        while self.store.is_ready() {
            let fetched = consumer
                .fetch()
                .max_messages(self.config.batch.max(1))
                .messages()
                .await;
            let mut batch = match fetched {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "JetStream fetch failed; trying again");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            let mut messages = Vec::new();
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => {
                        tracing::debug!(error = %e, "JetStream fetch ended early");
                        break;
                    }
                }
            }
            if messages.is_empty() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            self.take(messages).await;
        }
    }

    /// The source a subject names, if this consumer takes it.
    fn source_of<'a>(&self, subject: &'a str) -> Option<(&'a str, SourceKind)> {
        let name = subject
            .strip_prefix(self.config.subject.as_str())?
            .strip_prefix('.')?;
        let kind = SourceKind::from_name(name)?;
        (self.config.sources.is_empty() || self.config.sources.iter().any(|s| s == name))
            .then_some((name, kind))
    }

    /// Stores a batch's alerts, then acknowledges their messages.
    async fn take(&self, messages: Vec<async_nats::jetstream::Message>) {
        let mut alerts = Vec::new();
        let mut taken = Vec::new();
        let mut counts: HashMap<String, u64> = HashMap::new();
        for message in messages {
            let subject = message.subject.to_string();
            let Some((name, kind)) = self.source_of(&subject) else {
                self.metrics.reject("unknown", "unknown_source");
                tracing::warn!(subject = %subject, "a JetStream message names no source this consumer takes; terminated");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            match kind.normalize(&message.payload) {
                Ok(found) => {
                    *counts.entry(name.to_owned()).or_default() += found.len() as u64;
                    alerts.extend(found);
                    taken.push(message);
                }
                Err(e) => {
                    self.metrics.reject(name, "bad_payload");
                    tracing::warn!(source = name, error = %e, "a JetStream message is not a valid payload of its source; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if taken.is_empty() {
            return;
        }
        match self.store.ingest(alerts, Utc::now()).await {
            Ok(accepted) => {
                if accepted.iter().any(|a| !a.duplicate) {
                    self.engine.alerts_added(&accepted).await;
                    self.engine.alerts_stored();
                }
                for (source, count) in counts {
                    self.metrics
                        .alerts_accepted
                        .get_or_create(&crate::telemetry::SourceLabels { source })
                        .inc_by(count);
                }
                for message in taken {
                    if let Err(e) = message.ack().await {
                        // Handed out again after ack_wait; deduplication absorbs it.
                        tracing::warn!(error = %e, "a stored alert's message could not be acknowledged");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, messages = taken.len(), "alerts from JetStream could not be stored; handed back");
                for message in taken {
                    let _ = message.ack_with(AckKind::Nak(Some(BACKOFF))).await;
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}
