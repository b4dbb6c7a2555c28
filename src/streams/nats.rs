//! NATS: connecting with the configured credentials ([`connect`]), and publishing events to
//! JetStream subjects ([`Publisher`]).
//!
//! Each event is published to `{subject}.{type}` with its id as `Nats-Msg-Id`, and the batch is
//! delivered once JetStream has acknowledged every message (stored them in the stream). A batch
//! that is not acknowledged in full is tried again whole; the stream's duplicate window (two
//! minutes by default) drops the messages it already holds, by their id.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::config::{JetstreamTarget, NatsServer};
use super::events_of;
use crate::model::outbox::OutboxEntry;
use crate::outbox::{Deliver, DeliveryError};

/// How long a connection, or an acknowledgement, may take.
const WAIT: Duration = Duration::from_secs(10);

/// Connects to `server` with its credentials. The client reconnects by itself after an outage.
pub async fn connect(server: &NatsServer, name: &str) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(WAIT)
        .request_timeout(Some(WAIT));
    if let Some(file) = &server.credentials_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| format!("cannot read the credentials file {}: {e}", file.display()))?;
    }
    if let (Some(user), Some(password)) = (&server.user, &server.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &server.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(ca) = &server.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    options
        .connect(server.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", shown(&server.url)))
}

/// A server URL as logs and errors show it: any `user:password@` left out.
pub fn shown(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &one[..scheme + 3], &one[at + 1..])
            }
            (None, Some(at)) => one[at + 1..].to_owned(),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Publishes events to JetStream subjects.
pub struct Publisher {
    target: JetstreamTarget,
    /// Made at the first delivery and kept: the client reconnects on its own.
    context: Mutex<Option<(async_nats::Client, async_nats::jetstream::Context)>>,
}

impl Publisher {
    pub fn new(target: JetstreamTarget) -> Publisher {
        Publisher {
            target,
            context: Mutex::new(None),
        }
    }

    async fn context(&self) -> Result<async_nats::jetstream::Context, DeliveryError> {
        let mut held = self.context.lock().await;
        if let Some((client, context)) = &*held {
            // While the client reconnects, publishing would only queue messages in memory and
            // wait out the acknowledgement's timeout: the batch waits in the outbox instead.
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err(DeliveryError::retry(format!(
                    "NATS at {} is not connected (reconnecting)",
                    shown(&self.target.url)
                )));
            }
            return Ok(context.clone());
        }
        let client = connect(&self.target.server(), "cordon-streams")
            .await
            .map_err(DeliveryError::retry)?;
        let mut context = async_nats::jetstream::new(client.clone());
        context.set_timeout(WAIT);
        *held = Some((client, context.clone()));
        Ok(context)
    }
}

#[async_trait]
impl Deliver for Publisher {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let events = events_of(entry)?;
        let context = self.context().await?;
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let payload =
                serde_json::to_vec(event).map_err(|e| DeliveryError::permanent(e.to_string()))?;
            let subject = format!("{}.{}", self.target.subject, event.kind.as_str());
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(&event.id);
            let ack = context
                .send_publish(subject, publish)
                .await
                .map_err(|e| DeliveryError::retry(format!("JetStream publish: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                DeliveryError::retry(format!("JetStream did not store an event: {e}"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_a_server_url_are_never_shown() {
        assert_eq!(
            super::shown("nats://cordon:s3cret@nats-1:4222,tls://tok@nats-2:4222"),
            "nats://nats-1:4222,tls://nats-2:4222"
        );
        assert_eq!(
            super::shown("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
