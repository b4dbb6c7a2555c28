//! What Slack sends Cordon: button clicks (`block_actions`) and `/cordon` commands, over HTTP or
//! Socket Mode, handled the same way.
//!
//! Over HTTP every request is verified before anything is read: the `v0` HMAC-SHA256 of
//! `v0:<timestamp>:<raw body>` with the signing secret, a timestamp within five minutes, and no
//! request taken twice (the same signature inside the window is a replay). A bad request gets a
//! JSON error and changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};

use super::Slack;
use super::render::{Mrkdwn, cut, escape, parse_button};
use crate::chat::commands::{self, Command};
use crate::chat::{ChatUser, click};

/// How long a signature is accepted, and so remembered against replays.
const WINDOW_SECS: i64 = 300;
/// Remembered signatures at most; past it, the oldest are forgotten first.
const MAX_SEEN: usize = 100_000;

/// A refused request.
#[derive(Debug)]
pub(crate) struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reject {
        Reject {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Slack {
    /// Checks a request's signature, age and novelty; gives back the body as text.
    fn verify<'b>(&self, headers: &HeaderMap, body: &'b [u8]) -> Result<&'b str, Reject> {
        let Some(verifier) = &self.verifier else {
            return Err(Reject::new(
                StatusCode::NOT_FOUND,
                "not_enabled",
                "Slack requests over HTTP are off: chat.slack has no signing_secret",
            ));
        };
        let (Some(signature), Some(timestamp)) = (
            header(
                headers,
                SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER,
            ),
            header(headers, SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP),
        ) else {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "missing_signature",
                "X-Slack-Signature and X-Slack-Request-Timestamp are required",
            ));
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the signature does not match the body",
            ));
        };
        match verifier.verify(signature, text, timestamp) {
            Ok(()) => {}
            Err(SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_)) => {
                return Err(Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "stale_timestamp",
                    "X-Slack-Request-Timestamp is not within five minutes of now",
                ));
            }
            Err(_) => {
                return Err(Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    "the signature does not match the body",
                ));
            }
        }
        let timestamp: i64 = timestamp.parse().unwrap_or_default();
        let now = chrono::Utc::now().timestamp();
        let Ok(mut seen) = self.seen.lock() else {
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again",
            ));
        };
        seen.retain(|_, at| (now - *at).abs() <= WINDOW_SECS);
        if seen.contains_key(signature) {
            return Err(Reject::new(
                StatusCode::CONFLICT,
                "replayed",
                "this request was received already",
            ));
        }
        if seen.len() >= MAX_SEEN
            && let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(signature.to_owned(), timestamp);
        Ok(text)
    }

    /// A click (or any interaction): Approve / Deny buttons are decided with the shared rules and
    /// the person is told the result in a message only they see. Anything else is ignored.
    pub(super) async fn interaction(&self, event: SlackInteractionEvent) {
        let SlackInteractionEvent::BlockActions(event) = event else {
            return;
        };
        let Some(person) = event.user else { return };
        let channel = event
            .channel
            .as_ref()
            .map(|c| c.id.to_string())
            .or_else(|| match &event.container {
                SlackInteractionActionContainer::Message(m) => {
                    m.channel_id.as_ref().map(|c| c.to_string())
                }
                _ => None,
            });
        let thread = event
            .message
            .as_ref()
            .and_then(|m| m.origin.thread_ts.as_ref().map(|t| t.to_string()));
        for action in event.actions.iter().flatten() {
            let Some((button, approve)) =
                parse_button(action.action_id.as_ref(), action.value.as_deref())
            else {
                continue;
            };
            let name = person.name.as_deref().or(person.username.as_deref());
            let Some(engine) = self.engine() else { return };
            let user = self.chat_user(person.id.as_ref(), name).await;
            let reply = click(&engine, "slack", &user, &button.run, &button.step, approve).await;
            tracing::info!(run = %button.run, step = %button.step, user = %user.identity, approve, accepted = reply.accepted, "Slack click");
            if let Some(channel) = &channel {
                self.tell(channel, person.id.as_ref(), thread.as_deref(), &reply.text);
            }
        }
    }

    /// Sends `text` to `user` alone in `channel` (chat.postEphemeral), without waiting for it.
    fn tell(&self, channel: &str, user: &str, thread: Option<&str>, text: &str) {
        let mut request = SlackApiChatPostEphemeralRequest::new(
            channel.to_owned().into(),
            user.to_owned().into(),
            SlackMessageContent::new().with_text(cut(&escape(text), 3000)),
        );
        if let Some(thread) = thread {
            request = request.with_thread_ts(thread.to_owned().into());
        }
        let web = self.web.clone();
        tokio::spawn(async move {
            if let Err(error) = web.post_ephemeral(&request).await {
                tracing::warn!(%error, "could not tell a Slack user the result of their click");
            }
        });
    }
}

fn form_field(body: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A slash command as Slack sent it (over HTTP or Socket Mode).
#[derive(Debug, Clone)]
pub(super) struct CommandCall {
    pub user_id: String,
    pub user_name: Option<String>,
    pub text: String,
}

/// The answer to a slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommandReply {
    pub text: String,
    /// Shown to the channel rather than only to the caller.
    pub public: bool,
}

impl Slack {
    /// The person behind a Slack user id, with the Slack user groups approver groups list.
    pub(super) async fn chat_user(&self, user_id: &str, name: Option<&str>) -> ChatUser {
        ChatUser {
            identity: format!("slack:{user_id}"),
            groups: self.groups_of(user_id).await,
            name: name.unwrap_or(user_id).to_owned(),
        }
    }

    /// Answers a `/cordon` command ([`crate::chat::commands`]): to the caller alone, except a
    /// started run, which the channel sees.
    pub(super) async fn command(&self, call: &CommandCall) -> CommandReply {
        let private = |text| CommandReply {
            text,
            public: false,
        };
        let command = match Command::from_words(&call.text, &Mrkdwn) {
            Ok(command) => command,
            Err(usage) => return private(usage),
        };
        let user = self
            .chat_user(&call.user_id, call.user_name.as_deref())
            .await;
        let answer = self.commands.answer("slack", &user, command, &Mrkdwn).await;
        match answer.announce {
            Some(text) => CommandReply { text, public: true },
            None => private(answer.text),
        }
    }
}

/// The Slack routes: clicks and `/cordon`, verified with the signing secret.
pub(super) fn routes(slack: Arc<Slack>) -> Router {
    Router::new()
        .route("/v1/chat/slack/interactions", post(interactions))
        .route("/v1/chat/slack/commands", post(slash_commands))
        .with_state(slack)
}

/// `POST /v1/chat/slack/interactions`: Slack's interactivity request URL.
async fn interactions(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Reject> {
    let event = read_interaction(slack.verify(&headers, &body)?)?;
    slack.interaction(event).await;
    Ok(StatusCode::OK)
}

/// `POST /v1/chat/slack/commands`: the `/cordon` slash command's request URL.
async fn slash_commands(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, Reject> {
    let call = read_command(slack.verify(&headers, &body)?)?;
    Ok(reply_json(&slack.command(&call).await))
}

/// The interaction in a verified interactivity request's form body (its `payload` field).
pub(crate) fn read_interaction(text: &str) -> Result<SlackInteractionEvent, Reject> {
    let Some(payload) = form_field(text, "payload") else {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected a form with a `payload` field",
        ));
    };
    serde_json::from_str(&payload).map_err(|e| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("the interaction payload is not one Slack sends: {e}"),
        )
    })
}

/// The slash command in a verified command request's form body.
pub(crate) fn read_command(text: &str) -> Result<CommandCall, Reject> {
    let Some(user_id) = form_field(text, "user_id").filter(|u| !u.is_empty()) else {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected a slash command form with `user_id`",
        ));
    };
    Ok(CommandCall {
        user_id,
        user_name: form_field(text, "user_name"),
        text: form_field(text, "text").unwrap_or_default(),
    })
}

fn reply_json(reply: &CommandReply) -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "response_type": if reply.public { "in_channel" } else { "ephemeral" },
        "text": reply.text,
    }))
}

/// Reads a verified request body the way the handlers do, without a Slack client or an engine: the
/// interaction and the Cordon buttons its actions stand for, or the slash command and its words.
/// The fuzz targets' way in ([`crate::fuzzing`]); `interaction` picks the endpoint.
pub(crate) fn read_offline(interaction: bool, text: &str) -> Result<usize, Reject> {
    if !interaction {
        let call = read_command(text)?;
        return Ok(commands::words(&call.text).len());
    }
    let SlackInteractionEvent::BlockActions(event) = read_interaction(text)? else {
        return Ok(0);
    };
    Ok(event
        .actions
        .iter()
        .flatten()
        .filter_map(|action| parse_button(action.action_id.as_ref(), action.value.as_deref()))
        .count())
}
