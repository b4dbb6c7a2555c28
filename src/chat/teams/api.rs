//! The Bot Framework Connector API (`{serviceUrl}/v3/conversations/...`): the calls the
//! deliverer makes, with the bot's client-credentials token ([`super::token`]), paced to the
//! limits Teams documents for bots.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::token::TokenSource;
use crate::failure::Failure;
use crate::outbox::DeliveryError;
use crate::outbox::pace::{Limit, Pacer};

/// What Teams allows one bot in one conversation thread ("Rate limiting for bots",
/// learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit): 7 operations a second,
/// 8 in two seconds, 60 in thirty seconds and 1800 an hour. A reply chain is a conversation of
/// its own (`<channel>;messageid=<card>`). Beyond them Teams answers 429, whose `Retry-After`
/// holds the conversation.
const PER_THREAD: &[Limit] = &[
    Limit::new(7, Duration::from_secs(1)),
    Limit::new(8, Duration::from_secs(2)),
    Limit::new(60, Duration::from_secs(30)),
    Limit::new(1800, Duration::from_secs(3600)),
];

/// The wait after a 429 that does not say how long: Teams asks for backoff, not a time.
const UNSAID_WAIT: Duration = Duration::from_secs(2);

/// The Connector API client.
pub struct Connector {
    http: reqwest::Client,
    token: TokenSource,
    limits: Pacer,
}

impl Connector {
    pub fn new(http: reqwest::Client, token: TokenSource) -> Connector {
        Connector {
            http,
            token,
            limits: Pacer::new(),
        }
    }

    /// One Connector API call in `conversation` for the outbox entry `ticket`; the answer's JSON
    /// (or `null`). A call the conversation's limits have no room for is not made: the error says
    /// how long to wait.
    async fn call(
        &self,
        method: Method,
        service_url: &str,
        conversation: &str,
        path: &str,
        body: &Value,
        ticket: &str,
    ) -> Result<Value, DeliveryError> {
        let url = format!("{}{path}", trim_service_url(service_url));
        let token = self.token.get().await?;
        // Paced as late as can be, so that the call leaves when its turn says.
        self.limits
            .turn(conversation, PER_THREAD, ticket)
            .map_err(|wait| {
                DeliveryError::wait(
                    format!("waiting for Teams' rate limit in conversation {conversation}"),
                    wait,
                )
            })?;
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| {
                DeliveryError::new(
                    Failure::from_transport(&e),
                    format!(
                        "Teams Connector at {service_url} unreachable: {}",
                        e.without_url()
                    ),
                )
            })?;
        let status = response.status().as_u16();
        match Failure::from_response(status, response.headers()) {
            None => {}
            Some(Failure::Auth) => {
                // An expired or revoked token: fetch a new one next time.
                self.token.forget().await;
                return Err(DeliveryError::new(
                    Failure::Auth,
                    format!(
                        "Teams Connector refused the bot's token ({status}) for {method} {path}"
                    ),
                ));
            }
            Some(failure) => {
                if let Failure::RateLimited { retry_after } = failure {
                    self.limits
                        .hold(conversation, retry_after.unwrap_or(UNSAID_WAIT));
                }
                return Err(DeliveryError::new(
                    failure,
                    format!("Teams Connector ({method} {path}) answered {status}"),
                ));
            }
        }
        let text = response.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends `activity` to a conversation; the new message's id.
    pub async fn send(
        &self,
        service_url: &str,
        conversation: &str,
        activity: &Value,
        ticket: &str,
    ) -> Result<String, DeliveryError> {
        let path = format!(
            "/v3/conversations/{}/activities",
            path_segment(conversation)
        );
        let answer = self
            .call(
                Method::POST,
                service_url,
                conversation,
                &path,
                activity,
                ticket,
            )
            .await?;
        message_id(&answer)
    }

    /// Replies to message `reply_to` of `conversation`; the reply's id.
    pub async fn reply(
        &self,
        service_url: &str,
        conversation: &str,
        reply_to: &str,
        activity: &Value,
        ticket: &str,
    ) -> Result<String, DeliveryError> {
        let mut activity = activity.clone();
        activity["replyToId"] = json!(reply_to);
        let path = format!(
            "/v3/conversations/{}/activities/{}",
            path_segment(conversation),
            path_segment(reply_to)
        );
        let answer = self
            .call(
                Method::POST,
                service_url,
                conversation,
                &path,
                &activity,
                ticket,
            )
            .await?;
        message_id(&answer)
    }

    /// Replaces message `activity_id` of `conversation` with `activity`.
    pub async fn update(
        &self,
        service_url: &str,
        conversation: &str,
        activity_id: &str,
        activity: &Value,
        ticket: &str,
    ) -> Result<(), DeliveryError> {
        let mut activity = activity.clone();
        activity["id"] = json!(activity_id);
        let path = format!(
            "/v3/conversations/{}/activities/{}",
            path_segment(conversation),
            path_segment(activity_id)
        );
        self.call(
            Method::PUT,
            service_url,
            conversation,
            &path,
            &activity,
            ticket,
        )
        .await
        .map(drop)
    }
}

/// The `id` of a Connector `ResourceResponse`.
fn message_id(answer: &Value) -> Result<String, DeliveryError> {
    answer["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| DeliveryError::retry("Teams Connector answered without a message id"))
}

/// A service URL without its trailing slash, for joining paths and comparing.
pub fn trim_service_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Percent-encodes one path segment the way the Bot Framework SDKs do (`encodeURIComponent`):
/// conversation ids carry `:`, `@`, `;` and `=`.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_encoded_as_one_segment() {
        assert_eq!(
            path_segment("19:abc@thread.tacv2;messageid=17"),
            "19%3Aabc%40thread.tacv2%3Bmessageid%3D17"
        );
        assert_eq!(path_segment("a-b_c.d~e"), "a-b_c.d~e");
    }
}
