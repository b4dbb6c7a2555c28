//! The outbox deliverer: one card per incident in the configured channel, a thread on it for
//! everything that follows, and the card edited in place once decided.
//!
//! What was posted is remembered in the store (namespace `chat.discord`):
//! - `card:<incident>`: the incident's card message and its thread;
//! - `approval:<run>:<step>`: where that approval's buttons are (the card itself, or, for a later
//!   approval in the same incident, a message in the card's thread), which the update edits;
//! - `button:<key>`: run and step of buttons whose ids would exceed Discord's 100 characters.
//!
//! Deliveries are idempotent: a message is created with a nonce Discord enforces (a retry after a
//! lost answer returns the first message instead of a second), a thread that exists already is
//! taken as made, and a request already posted is not posted again. Thread notes for an incident
//! that has no card (no approval was asked) are dropped: the card, when it comes, lists the
//! evidence and enrichment gathered before it.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serenity::all::{AutoArchiveDuration, CreateThread, MessageReference, Nonce};
use sha2::{Digest, Sha256};

use super::api::{Api, Auth, CallError, clip, codes};
use super::render;
use crate::chat::{Card, ChatOp, Note};
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};
use crate::store::Store;

/// The store namespace of Discord's references.
pub const NAMESPACE: &str = "chat.discord";

/// An incident's card: its message and the thread started on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardRef {
    pub channel_id: String,
    pub message_id: String,
    /// The card's thread (its id is the card message's).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Discord refused the thread for good (a missing permission): notes go to the channel as
    /// replies to the card instead.
    #[serde(default)]
    pub no_thread: bool,
}

/// Where an approval's buttons are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel_id: String,
    pub message_id: String,
}

/// Run and step behind a stored button id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredButton {
    pub run_id: String,
    pub step: String,
}

/// Delivers `discord` outbox entries.
pub struct DiscordDelivery {
    api: Arc<Api>,
    store: Arc<dyn Store>,
    channel_id: String,
}

impl DiscordDelivery {
    pub fn new(api: Arc<Api>, store: Arc<dyn Store>, channel_id: &str) -> DiscordDelivery {
        DiscordDelivery {
            api,
            store,
            channel_id: channel_id.to_owned(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DeliveryError> {
        let value = self
            .store
            .meta_get(NAMESPACE, key)
            .await
            .map_err(|e| DeliveryError::retry(format!("reading {key}: {e}")))?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), DeliveryError> {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.store
            .meta_put(NAMESPACE, key, value)
            .await
            .map_err(|e| DeliveryError::retry(format!("recording {key}: {e}")))
    }

    /// Posts `message` in `channel_id`; answers the new message's id.
    async fn create_message(
        &self,
        channel_id: &str,
        message: serenity::all::CreateMessage,
        nonce: String,
        what: &str,
    ) -> Result<String, DeliveryError> {
        let message = message.nonce(Nonce::String(nonce)).enforce_nonce(true);
        let answer = self
            .api
            .send(
                Method::POST,
                &format!("POST /channels/{channel_id}/messages"),
                &format!("/channels/{channel_id}/messages"),
                &message,
                Auth::Bot,
                what,
            )
            .await
            .map_err(CallError::into_delivery)?;
        message_id(&answer).ok_or_else(|| {
            DeliveryError::retry(format!("{what}: Discord's answer has no message id"))
        })
    }

    /// The buttons' ids for `card`, storing run and step when they do not fit in an id.
    async fn button_ids(&self, card: &Card) -> Result<(String, String), DeliveryError> {
        let approve = render::button_id(true, &card.run_id, &card.step);
        let deny = render::button_id(false, &card.run_id, &card.step);
        if approve.len() <= render::MAX_CUSTOM_ID && deny.len() <= render::MAX_CUSTOM_ID {
            return Ok((approve, deny));
        }
        let key = digest(&format!("{}\n{}", card.run_id, card.step), 20);
        self.put(
            &format!("button:{key}"),
            &StoredButton {
                run_id: card.run_id.clone(),
                step: card.step.clone(),
            },
        )
        .await?;
        Ok((
            render::stored_button_id(true, &key),
            render::stored_button_id(false, &key),
        ))
    }

    /// Starts the card's thread unless it has one (or cannot have one).
    async fn ensure_thread(
        &self,
        key: &str,
        card: &mut CardRef,
        title: &str,
    ) -> Result<(), DeliveryError> {
        if card.thread_id.is_some() || card.no_thread {
            return Ok(());
        }
        let name = clip(title.trim(), 100);
        let name = if name.is_empty() {
            "Incident".to_owned()
        } else {
            name
        };
        let body = CreateThread::new(name).auto_archive_duration(AutoArchiveDuration::OneWeek);
        let (channel, message) = (&card.channel_id, &card.message_id);
        let result = self
            .api
            .send(
                Method::POST,
                &format!("POST /channels/{channel}/messages/:id/threads"),
                &format!("/channels/{channel}/messages/{message}/threads"),
                &body,
                Auth::Bot,
                "starting the card's thread",
            )
            .await;
        match result {
            Ok(answer) => {
                card.thread_id = Some(message_id(&answer).unwrap_or_else(|| message.clone()));
            }
            // Made by an earlier attempt whose answer was lost: a message's thread has its id.
            Err(e) if e.code == Some(codes::THREAD_EXISTS) => {
                card.thread_id = Some(message.clone());
            }
            Err(e) if matches!(e.status, Some(400..=499)) && !e.retryable() => {
                tracing::warn!(error = %e.message, "Discord refused the card's thread; notes go to the channel as replies to the card");
                card.no_thread = true;
            }
            Err(e) => return Err(e.into_delivery()),
        }
        self.put(&format!("card:{key}"), card).await
    }

    async fn post_card(&self, entry: &OutboxEntry, card: &Card) -> Result<(), DeliveryError> {
        let approval_key = format!("approval:{}:{}", card.run_id, card.step);
        let card_key = format!("card:{}", card.key());
        let mut card_ref: Option<CardRef> = self.get(&card_key).await?;
        let ids = if card.outcome.is_none() {
            Some(self.button_ids(card).await?)
        } else {
            None
        };
        if card_ref.is_none() {
            let channel = self.channel_id.clone();
            let message_id = self
                .create_message(
                    &channel,
                    render::message(card, ids.clone()),
                    digest(&format!("{}:card", entry.id), 25),
                    "posting the incident card",
                )
                .await?;
            let new = CardRef {
                channel_id: channel.clone(),
                message_id: message_id.clone(),
                thread_id: None,
                no_thread: false,
            };
            // The approval first: should the process stop between the two, the retry finds no
            // card, and the nonce brings back this same message rather than a second one.
            self.put(
                &approval_key,
                &MessageRef {
                    channel_id: channel,
                    message_id,
                },
            )
            .await?;
            self.put(&card_key, &new).await?;
            card_ref = Some(new);
        }
        let Some(mut card_ref) = card_ref else {
            return Ok(());
        };
        self.ensure_thread(&card.key(), &mut card_ref, &card.title)
            .await?;
        if self.get::<MessageRef>(&approval_key).await?.is_some() {
            return Ok(());
        }
        // A later approval of an incident that has its card: asked in the card's thread.
        let (channel, reply) = self.note_place(&card_ref);
        let mut message = render::message(card, ids);
        if let Some(reference) = reply {
            message = message.reference_message(reference);
        }
        let message_id = self
            .create_message(
                &channel,
                message,
                digest(&format!("{}:request", entry.id), 25),
                "posting the approval request in the card's thread",
            )
            .await?;
        self.put(
            &approval_key,
            &MessageRef {
                channel_id: channel,
                message_id,
            },
        )
        .await
    }

    /// Where notes of a card go: its thread, or the channel as a reply to the card.
    fn note_place(&self, card: &CardRef) -> (String, Option<MessageReference>) {
        match &card.thread_id {
            Some(thread) => (thread.clone(), None),
            None => {
                let channel = serenity::all::ChannelId::new(parse_id(&card.channel_id));
                let message = serenity::all::MessageId::new(parse_id(&card.message_id));
                (
                    card.channel_id.clone(),
                    Some(MessageReference::from((channel, message))),
                )
            }
        }
    }

    async fn update_card(&self, entry: &OutboxEntry, card: &Card) -> Result<(), DeliveryError> {
        let approval_key = format!("approval:{}:{}", card.run_id, card.step);
        let Some(place) = self.get::<MessageRef>(&approval_key).await? else {
            // Decided before its card went out (or the post was set aside): post it decided.
            return self.post_card(entry, card).await;
        };
        let (channel, message) = (&place.channel_id, &place.message_id);
        let result = self
            .api
            .send(
                Method::PATCH,
                &format!("PATCH /channels/{channel}/messages/:id"),
                &format!("/channels/{channel}/messages/{message}"),
                &render::edit(card),
                Auth::Bot,
                "updating the incident card",
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code == Some(codes::UNKNOWN_MESSAGE) => {
                tracing::warn!(run = %card.run_id, step = %card.step, "the card was deleted in Discord; its update is dropped");
                Ok(())
            }
            Err(e) => Err(e.into_delivery()),
        }
    }

    async fn thread_note(&self, entry: &OutboxEntry, note: &Note) -> Result<(), DeliveryError> {
        let (incident, text) = (note.incident_id.as_str(), note.text.as_str());
        if text.trim().is_empty() {
            return Ok(());
        }
        let Some(mut card) = self.get::<CardRef>(&format!("card:{incident}")).await? else {
            if note.standalone {
                // `chat.notify` before any card: a message of its own in the channel.
                let channel = self.channel_id.clone();
                return self
                    .create_message(
                        &channel,
                        render::note(text),
                        digest(&format!("{}:note", entry.id), 25),
                        "posting a notification",
                    )
                    .await
                    .map(|_| ());
            }
            tracing::debug!(
                incident,
                "no Discord card for this incident yet; the note is dropped"
            );
            return Ok(());
        };
        self.ensure_thread(incident, &mut card, "Incident").await?;
        let (channel, reply) = self.note_place(&card);
        let mut message = render::note(text);
        if let Some(reference) = reply {
            message = message.reference_message(reference);
        }
        self.create_message(
            &channel,
            message,
            digest(&format!("{}:note", entry.id), 25),
            "posting in the card's thread",
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Deliver for DiscordDelivery {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        match ChatOp::read(entry)? {
            Some(ChatOp::PostCard(card)) => self.post_card(entry, &card).await,
            Some(ChatOp::UpdateCard(card)) => self.update_card(entry, &card).await,
            Some(ChatOp::ThreadNote(note)) => self.thread_note(entry, &note).await,
            None => Err(DeliveryError::permanent(format!(
                "Discord does not deliver `{}` entries",
                entry.kind
            ))),
        }
    }
}

/// A message's id in Discord's answer.
fn message_id(answer: &Value) -> Option<String> {
    let id = match &answer["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    super::config::Snowflake::valid(&id).then_some(id)
}

fn parse_id(id: &str) -> u64 {
    // Ids were checked when stored; 1 keeps serenity's non-zero ids from panicking on nonsense.
    id.parse::<u64>().ok().filter(|n| *n != 0).unwrap_or(1)
}

/// The first `len` hex digits of SHA-256 of `text` (nonces, stored button keys).
pub fn digest(text: &str, len: usize) -> String {
    let hex = hex::encode(Sha256::digest(text.as_bytes()));
    hex[..len.min(hex.len())].to_owned()
}

/// The JSON of a stored button (for the interactions endpoint).
pub fn stored_button(value: Value) -> Option<StoredButton> {
    serde_json::from_value(value).ok()
}
