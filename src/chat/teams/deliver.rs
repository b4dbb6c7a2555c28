//! The Teams outbox deliverer: cards, their updates and thread replies through the Bot Framework
//! Connector API (`{serviceUrl}/v3/conversations/...`).
//!
//! - `post_card`: the incident's first request becomes the incident's card, posted to the
//!   configured channel (or where the bot was installed); a later request of the same incident is
//!   posted as a card in that card's thread, so an incident keeps one card.
//! - `update_card`: the message that showed the request is replaced by the decided card (who, when,
//!   no buttons).
//! - `thread_note`: a reply in the incident card's thread. A note for an incident that has no
//!   card in Teams (notes of incidents no approval was asked for) is dropped: the card, when it
//!   comes, shows what the incident holds.
//! - `reply`: the answer to an `Action.Submit` click, in the clicked card's thread.
//!
//! Each delivery looks before it acts (a request already posted is not posted again), so an entry
//! repeated after a crash does not post twice, except for a crash between the Connector's answer
//! and the store write.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::api::Connector;
use super::render;
use super::token::TokenSource;
use super::{Install, META, MessageRef, REPLY, TeamsConfig, is_channel};
use crate::chat::{Card, ChatOp, Note};
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};
use crate::store::Store;

/// Delivers `teams` outbox entries.
pub struct Deliverer {
    config: Arc<TeamsConfig>,
    store: Arc<dyn Store>,
    api: Connector,
}

#[derive(Deserialize)]
struct Reply {
    service_url: String,
    conversation_id: String,
    reply_to: String,
    text: String,
}

impl Deliverer {
    pub fn new(config: Arc<TeamsConfig>, store: Arc<dyn Store>, http: reqwest::Client) -> Self {
        let token = TokenSource::new(
            http.clone(),
            config.token_url(),
            &config.app_id,
            config.app_password.clone(),
            &config.token_scope,
        );
        Deliverer {
            config,
            store,
            api: Connector::new(http, token),
        }
    }

    async fn meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DeliveryError> {
        let value = self
            .store
            .meta_get(META, key)
            .await
            .map_err(|e| DeliveryError::retry(format!("store: {e}")))?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn remember(&self, key: &str, value: &MessageRef) -> Result<(), DeliveryError> {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.store
            .meta_put(META, key, value)
            .await
            .map_err(|e| DeliveryError::retry(format!("store: {e}")))
    }

    /// Where a new card goes: the configured channel (at the service URL Teams gave for it, or the
    /// configured one, or that of any install in the tenant), else the last install.
    async fn destination(&self) -> Result<(String, String, bool), DeliveryError> {
        let latest: Option<Install> = self.meta("install:latest").await?;
        if let Some(channel) = &self.config.channel_id {
            let known: Option<Install> = self.meta(&format!("install:{channel}")).await?;
            let service = known
                .map(|i| i.service_url)
                .or_else(|| self.config.service_url.as_ref().map(|u| u.to_string()))
                .or_else(|| latest.map(|i| i.service_url))
                .ok_or_else(|| {
                    DeliveryError::retry(
                        "Teams: no service URL for the configured channel yet; install the bot in \
                         the team or set chat.teams.service_url",
                    )
                })?;
            return Ok((service, channel.clone(), is_channel(channel, None)));
        }
        let install = latest.ok_or_else(|| {
            DeliveryError::retry(
                "Teams: no conversation to post to yet; install the bot in a team or set \
                 chat.teams.channel_id",
            )
        })?;
        let channel = is_channel(
            &install.conversation_id,
            install.conversation_type.as_deref(),
        );
        Ok((install.service_url, install.conversation_id, channel))
    }

    /// Replies in the thread of the message `to`.
    async fn reply_in_thread(
        &self,
        to: &MessageRef,
        activity: &Value,
        ticket: &str,
    ) -> Result<MessageRef, DeliveryError> {
        let thread = to.thread();
        let id = self
            .api
            .reply(&to.service_url, &thread, &to.activity_id, activity, ticket)
            .await?;
        Ok(MessageRef {
            service_url: to.service_url.clone(),
            conversation_id: thread,
            activity_id: id,
            channel: false,
        })
    }

    async fn post_card(&self, card: &Card, ticket: &str) -> Result<(), DeliveryError> {
        let request_key = format!("request:{}:{}", card.run_id, card.step);
        if self.meta::<MessageRef>(&request_key).await?.is_some() {
            return Ok(());
        }
        let card_key = format!("card:{}", card.key());
        let activity = render::activity(card);
        let posted = match self.meta::<MessageRef>(&card_key).await? {
            // A later request of an incident that has its card: in the card's thread.
            Some(root) => self.reply_in_thread(&root, &activity, ticket).await?,
            None => {
                let (service_url, conversation, channel) = self.destination().await?;
                let id = self
                    .api
                    .send(&service_url, &conversation, &activity, ticket)
                    .await?;
                let root = MessageRef {
                    service_url,
                    conversation_id: conversation,
                    activity_id: id,
                    channel,
                };
                self.remember(&card_key, &root).await?;
                root
            }
        };
        tracing::info!(run = %card.run_id, step = %card.step, activity = %posted.activity_id, "Teams card posted");
        self.remember(&request_key, &posted).await
    }

    async fn update_card(&self, card: &Card, ticket: &str) -> Result<(), DeliveryError> {
        let request_key = format!("request:{}:{}", card.run_id, card.step);
        let Some(message) = self.meta::<MessageRef>(&request_key).await? else {
            // The request never reached Teams (its post was given up on): post the outcome as
            // the card, so the channel still learns it.
            return self.post_card(card, ticket).await;
        };
        match self
            .api
            .update(
                &message.service_url,
                &message.conversation_id,
                &message.activity_id,
                &render::activity(card),
                ticket,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(run = %card.run_id, step = %card.step, "Teams card updated");
                Ok(())
            }
            Err(e) if e.is_permanent() => {
                // The message is gone (deleted in Teams): say the outcome in a new card instead.
                tracing::warn!(run = %card.run_id, error = %e, "Teams card could not be updated; posting the outcome");
                let root: Option<MessageRef> = self.meta(&format!("card:{}", card.key())).await?;
                match root {
                    Some(root) if root != message => {
                        self.reply_in_thread(&root, &render::activity(card), ticket)
                            .await?;
                        Ok(())
                    }
                    _ => {
                        let (service_url, conversation, _) = self.destination().await?;
                        self.api
                            .send(&service_url, &conversation, &render::activity(card), ticket)
                            .await?;
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn thread_note(&self, note: &Note, ticket: &str) -> Result<(), DeliveryError> {
        let Some(root) = self
            .meta::<MessageRef>(&format!("card:{}", note.incident_id))
            .await?
        else {
            if note.standalone {
                let (service_url, conversation, _) = self.destination().await?;
                self.api
                    .send(
                        &service_url,
                        &conversation,
                        &render::text_activity(&note.text),
                        ticket,
                    )
                    .await?;
                return Ok(());
            }
            tracing::debug!(incident = %note.incident_id, "no Teams card for this incident; thread note dropped");
            return Ok(());
        };
        self.reply_in_thread(&root, &render::text_activity(&note.text), ticket)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Deliver for Deliverer {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let bad = |e: serde_json::Error| {
            DeliveryError::permanent(format!("a `{}` entry Teams cannot read: {e}", entry.kind))
        };
        match ChatOp::read(entry)? {
            Some(ChatOp::PostCard(card)) => return self.post_card(&card, &entry.id).await,
            Some(ChatOp::UpdateCard(card)) => return self.update_card(&card, &entry.id).await,
            Some(ChatOp::ThreadNote(note)) => return self.thread_note(&note, &entry.id).await,
            None => {}
        }
        match entry.kind.as_str() {
            REPLY => {
                let reply: Reply = serde_json::from_value(entry.payload.clone()).map_err(bad)?;
                self.api
                    .reply(
                        &reply.service_url,
                        &reply.conversation_id,
                        &reply.reply_to,
                        &render::text_activity(&reply.text),
                        &entry.id,
                    )
                    .await?;
                Ok(())
            }
            other => Err(DeliveryError::permanent(format!(
                "Teams delivers no `{other}` entries"
            ))),
        }
    }
}
