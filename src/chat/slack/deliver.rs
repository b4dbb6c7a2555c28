//! The outbox deliverer: cards posted once per incident, later requests of the incident and its
//! notes in the card's thread, decided cards updated in place.
//!
//! Message references live in the store (`chat.slack` metadata): `card:<incident>` is the
//! incident's card, the root of its thread; `approval:<run>:<step>` is the message carrying that
//! approval's buttons (the card itself, or a reply in its thread for a later request of the same
//! incident). A thread note for an incident with no card yet is dropped: the card, when it comes,
//! shows the evidence so far.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slack_morphism::prelude::*;

use super::Slack;
use super::render;
use crate::chat::{Card, ChatOp, Note};
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MessageRef {
    pub channel: String,
    pub ts: String,
}

fn store_error(e: crate::store::StoreError) -> DeliveryError {
    DeliveryError::retry(format!("store: {e}"))
}

fn content(card: &Card) -> SlackMessageContent {
    SlackMessageContent::new()
        .with_text(render::card_text(card))
        .with_blocks(render::card_blocks(card))
}

impl Slack {
    async fn reference(&self, key: &str) -> Result<Option<MessageRef>, DeliveryError> {
        let value = self
            .store
            .meta_get(super::META, key)
            .await
            .map_err(store_error)?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn remember(&self, key: &str, reference: &MessageRef) -> Result<(), DeliveryError> {
        let value = serde_json::to_value(reference).unwrap_or(Value::Null);
        self.store
            .meta_put(super::META, key, value)
            .await
            .map_err(store_error)
    }

    /// Posts `card`: as the incident's card, or in its thread when the incident has one.
    async fn post(&self, card: &Card, ticket: &str) -> Result<(), DeliveryError> {
        let root_key = format!("card:{}", card.key());
        let root = self.reference(&root_key).await?;
        let mut request =
            SlackApiChatPostMessageRequest::new(self.config.channel.clone().into(), content(card))
                .with_unfurl_links(false)
                .with_unfurl_media(false);
        if let Some(root) = &root {
            request = request
                .with_channel(root.channel.clone().into())
                .with_thread_ts(root.ts.clone().into());
        }
        self.web
            .turn("chat.postMessage", request.channel.as_ref(), ticket)?;
        let (channel, ts) = self
            .web
            .post_message(&request)
            .await
            .map_err(|e| e.delivery())?;
        let posted = MessageRef { channel, ts };
        if root.is_none() {
            self.remember(&root_key, &posted).await?;
        }
        self.remember(&approval_key(card), &posted).await?;
        tracing::info!(run = %card.run_id, step = %card.step, ts = %posted.ts, threaded = root.is_some(), "Slack card posted");
        Ok(())
    }

    async fn post_card(&self, card: &Card, ticket: &str) -> Result<(), DeliveryError> {
        // Delivered already (a repeat after a crash, or the engine asking again on resume).
        if self.reference(&approval_key(card)).await?.is_some() {
            return Ok(());
        }
        self.post(card, ticket).await
    }

    async fn update_card(&self, card: &Card, ticket: &str) -> Result<(), DeliveryError> {
        let Some(message) = self.reference(&approval_key(card)).await? else {
            // The request's card never made it (set aside): post the outcome instead.
            return self.post(card, ticket).await;
        };
        let request = SlackApiChatUpdateRequest::new(
            message.channel.clone().into(),
            content(card),
            message.ts.clone().into(),
        );
        self.web.turn("chat.update", &message.channel, ticket)?;
        self.web.update(&request).await.map_err(|e| e.delivery())?;
        tracing::info!(run = %card.run_id, step = %card.step, ts = %message.ts, "Slack card updated");
        Ok(())
    }

    async fn thread_note(&self, note: &Note, ticket: &str) -> Result<(), DeliveryError> {
        let (incident, text) = (note.incident_id.as_str(), note.text.as_str());
        let Some(root) = self.reference(&format!("card:{incident}")).await? else {
            if note.standalone {
                // `chat.notify` before any card: a message of its own in the channel.
                let request = SlackApiChatPostMessageRequest::new(
                    self.config.channel.clone().into(),
                    SlackMessageContent::new().with_text(render::cut(&render::escape(text), 3000)),
                )
                .with_unfurl_links(false)
                .with_unfurl_media(false);
                self.web
                    .turn("chat.postMessage", &self.config.channel, ticket)?;
                self.web
                    .post_message(&request)
                    .await
                    .map_err(|e| e.delivery())?;
                return Ok(());
            }
            tracing::debug!(
                incident,
                "no Slack card for the incident yet; thread note dropped"
            );
            return Ok(());
        };
        self.web.turn("chat.postMessage", &root.channel, ticket)?;
        let request = SlackApiChatPostMessageRequest::new(
            root.channel.clone().into(),
            SlackMessageContent::new().with_text(render::cut(&render::escape(text), 3000)),
        )
        .with_thread_ts(root.ts.into())
        .with_unfurl_links(false)
        .with_unfurl_media(false);
        self.web
            .post_message(&request)
            .await
            .map_err(|e| e.delivery())?;
        Ok(())
    }
}

fn approval_key(card: &Card) -> String {
    format!("approval:{}:{}", card.run_id, card.step)
}

#[async_trait]
impl Deliver for Slack {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        match ChatOp::read(entry)? {
            Some(ChatOp::PostCard(card)) => self.post_card(&card, &entry.id).await,
            Some(ChatOp::UpdateCard(card)) => self.update_card(&card, &entry.id).await,
            Some(ChatOp::ThreadNote(note)) => self.thread_note(&note, &entry.id).await,
            None => Err(DeliveryError::permanent(format!(
                "Slack does not deliver `{}`",
                entry.kind
            ))),
        }
    }
}
