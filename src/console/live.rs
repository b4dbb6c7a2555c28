//! Live pages: the engine tells its watchers every incident event after it is stored (an alert
//! joined, a step finished, an approval asked or decided, evidence collected, a status changed);
//! the console's watcher passes each on to the browsers watching, through server-sent events.
//! A page subscribes to one incident (`/events?incident=<id>`), one run (`?run=<id>`), or all
//! (the lists); on each event the page's script reads the page again and replaces its live parts.
//!
//! Events are told on the replica that stored them; with several replicas on one database a
//! browser hears the events of the replica it is connected to (and sees the rest on reload).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::engine::watch::{IncidentEvent, Watcher};

/// One change, as a browser hears it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub incident: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub kind: String,
}

/// The changes, to every subscriber.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Change>,
    /// Set at shutdown: every stream ends, so open pages do not hold the server's connections
    /// through its shutdown grace (their script reconnects to whichever server is up).
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    pub fn new() -> Live {
        let (sender, _) = broadcast::channel(1024);
        let (closing, _) = tokio::sync::watch::channel(false);
        Live { sender, closing }
    }

    /// Ends every stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The watcher to add to the engine.
    pub fn watcher(&self) -> Arc<dyn Watcher> {
        Arc::new(LiveWatcher(self.sender.clone()))
    }

    /// A stream of the changes that `wanted` keeps, as server-sent events; a subscriber that falls
    /// behind is told to read the page again.
    pub fn stream(
        &self,
        wanted: impl Fn(&Change) -> bool + Send + Sync + 'static,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let receiver = self.sender.subscribe();
        let closing = self.closing.subscribe();
        let first = Some(Event::default().event("ready").data("{}"));
        let stream = futures_util::stream::unfold(
            (receiver, wanted, first, closing),
            |(mut receiver, wanted, mut first, mut closing)| async move {
                if *closing.borrow() {
                    return None;
                }
                if let Some(event) = first.take() {
                    return Some((Ok(event), (receiver, wanted, first, closing)));
                }
                loop {
                    let next = tokio::select! {
                        next = receiver.recv() => next,
                        _ = closing.wait_for(|c| *c) => return None,
                    };
                    match next {
                        Ok(change) if wanted(&change) => {
                            let data = serde_json::to_string(&change).unwrap_or_default();
                            let event = Event::default().event("change").data(data);
                            return Some((
                                Ok::<_, Infallible>(event),
                                (receiver, wanted, first, closing),
                            ));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let event = Event::default().event("change").data("{}");
                            return Some((Ok(event), (receiver, wanted, first, closing)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response()
    }
}

struct LiveWatcher(broadcast::Sender<Change>);

#[async_trait]
impl Watcher for LiveWatcher {
    async fn incident_events(&self, events: &[IncidentEvent]) {
        for event in events {
            // No subscriber is no error.
            let _ = self.0.send(Change {
                incident: event.incident_id.clone(),
                run: event.run_id.clone(),
                kind: event.kind.as_str().to_owned(),
            });
        }
    }
}
