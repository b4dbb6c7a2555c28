//! The Slack Web API calls Cordon makes, through slack-morphism's client.
//!
//! Bodies are sent form-encoded (`application/x-www-form-urlencoded`, with `blocks` as a JSON
//! string): that is how Slack's Web API description lists every method's parameters, and Slack
//! takes it from every app. The token travels in `Authorization: Bearer`, as Slack asks of apps
//! created since 2021 (never in a URL).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use slack_morphism::errors::SlackClientError;
use slack_morphism::hyper_tokio::{SlackClientHyperConnector, SlackHyperClient};
use slack_morphism::prelude::*;

use crate::chat::platform::PlatformError;
use crate::config::Secret;
use crate::failure::Failure;
use crate::outbox::DeliveryError;
use crate::outbox::pace::{Limit, Pacer};

/// The client for `api_url`: TLS with the system's roots, and plain HTTP too, so that a local API
/// (tests, a proxy on the host) works with the same client type.
pub(super) fn client(api_url: &str) -> Result<SlackHyperClient, PlatformError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|source| PlatformError::Tls {
            platform: "Slack",
            source,
        })?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(SlackClient::new(
        SlackClientHyperConnector::from(https).with_slack_api_url(api_url),
    ))
}

/// Why a Web API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WebError {
    /// 429: come back after the given time (Slack's `Retry-After`).
    #[error("Slack rate-limited {method} (retry after {retry_after:?})")]
    RateLimited {
        method: String,
        retry_after: Option<Duration>,
    },
    /// `ok: false` with Slack's error code.
    #[error("Slack refused {method}: `{code}`")]
    Api { method: String, code: String },
    /// An HTTP error status.
    #[error("Slack answered {method} with HTTP {status}")]
    Status { method: String, status: u16 },
    /// No answer (connection, TLS, timeout) or an unreadable one.
    #[error("Slack did not answer {method}: {reason}")]
    Transport { method: String, reason: String },
}

/// Slack error codes that no retry can fix: the request itself is wrong.
const PERMANENT_CODES: &[&str] = &[
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_arguments",
    "invalid_form_data",
    "msg_too_long",
    "no_text",
    "too_many_attachments",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "is_archived",
];

/// Slack error codes for a token that is revoked, expired or lacks a scope: an operator fixes it.
const AUTH_CODES: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
];

impl WebError {
    /// What the failure means: 429 (and the `ratelimited` code) waits for Retry-After; a
    /// malformed request is permanent; a refused token is for an operator; anything else (an
    /// outage, a channel the bot is not in yet) passes by itself. An HTTP error status is classed
    /// by the shared table.
    pub(super) fn failure(&self) -> Failure {
        match self {
            WebError::RateLimited { retry_after, .. } => Failure::RateLimited {
                retry_after: *retry_after,
            },
            WebError::Api { code, .. } if PERMANENT_CODES.contains(&code.as_str()) => {
                Failure::Permanent
            }
            WebError::Api { code, .. } if AUTH_CODES.contains(&code.as_str()) => Failure::Auth,
            WebError::Api { code, .. } if code == "ratelimited" => {
                Failure::RateLimited { retry_after: None }
            }
            WebError::Status { status, .. } => {
                Failure::from_response(*status, &HeaderMap::new()).unwrap_or(Failure::Retryable)
            }
            WebError::Api { .. } | WebError::Transport { .. } => Failure::Retryable,
        }
    }

    /// The outbox's view: a malformed request is set aside; everything else is tried again (as
    /// told, or with backoff), so no card is lost. A 401 or 403 status (Slack itself answers
    /// `ok: false` with a code instead) is set aside like any other 4xx.
    pub(super) fn delivery(&self) -> DeliveryError {
        let failure = match (self, self.failure()) {
            (WebError::Status { .. }, Failure::Auth) => Failure::Permanent,
            (_, failure) => failure,
        };
        DeliveryError::new(failure, self.to_string())
    }

    fn from_client(method: &str, error: SlackClientError) -> WebError {
        let method = method.to_owned();
        match error {
            SlackClientError::RateLimitError(e) => WebError::RateLimited {
                method,
                retry_after: e.retry_after,
            },
            SlackClientError::ApiError(e) => WebError::Api {
                method,
                code: e.code,
            },
            SlackClientError::HttpError(e) => WebError::Status {
                method,
                status: e.status_code.as_u16(),
            },
            // Transport and decoding errors name no secret (the token is never in a URL).
            other => WebError::Transport {
                method,
                reason: first_line(&other.to_string()),
            },
        }
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// The Web API, with the bot token.
#[derive(Clone)]
pub(super) struct Web {
    client: Arc<SlackHyperClient>,
    base: String,
    token: Secret,
    timeout: Duration,
    /// Slack's rate limits, as documented, and as its 429s say.
    limits: Arc<Pacer>,
}

/// What Slack documents (<https://api.slack.com/apis/rate-limits>, each method's page):
/// `chat.postMessage` takes one message per second in a channel (threads are in their channel;
/// Slack allows short bursts over that, Cordon does not lean on them); `chat.update` is Tier 3,
/// 50 calls a minute for the workspace. The outbox's calls are paced to these; interactive answers
/// (`chat.postEphemeral`, Tier 4, a person waiting) are not held back.
const POST_MESSAGE: &[Limit] = &[Limit::new(1, Duration::from_secs(1))];
const UPDATE: &[Limit] = &[Limit::new(50, Duration::from_secs(60))];

/// The pacing scope of a call: per channel for `chat.postMessage`, the workspace for the rest.
fn scope(method: &str, channel: &str) -> String {
    match method {
        "chat.postMessage" => format!("{method} {channel}"),
        _ => method.to_owned(),
    }
}

impl Web {
    pub(super) fn new(
        client: Arc<SlackHyperClient>,
        base: &str,
        token: Secret,
        timeout: Duration,
    ) -> Web {
        Web {
            client,
            base: base.to_owned(),
            token,
            timeout,
            limits: Arc::new(Pacer::new()),
        }
    }

    /// The turn of the outbox entry `ticket` to call `method` in `channel` under Slack's limits:
    /// now, or a wait that sends nothing (the entry comes back for its turn).
    pub(super) fn turn(
        &self,
        method: &str,
        channel: &str,
        ticket: &str,
    ) -> Result<(), DeliveryError> {
        let limits = match method {
            "chat.postMessage" => POST_MESSAGE,
            "chat.update" => UPDATE,
            _ => &[],
        };
        let scope = scope(method, channel);
        self.limits.turn(&scope, limits, ticket).map_err(|wait| {
            DeliveryError::wait(format!("waiting for Slack's rate limit on {scope}"), wait)
        })
    }

    /// POSTs `request` to `method` form-encoded and reads the answer.
    pub(super) async fn post<RQ, RS>(&self, method: &str, request: &RQ) -> Result<RS, WebError>
    where
        RQ: Serialize,
        RS: DeserializeOwned + Send,
    {
        let form = form_body(request).map_err(|reason| WebError::Transport {
            method: method.to_owned(),
            reason,
        })?;
        let url = url::Url::parse(&format!("{}/{method}", self.base)).map_err(|e| {
            WebError::Transport {
                method: method.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let token = SlackApiToken::new(self.token.expose().to_owned().into());
        let session = self.client.open_session(&token);
        let call = session.http_session_api.http_post_uri_binary(
            url,
            "application/x-www-form-urlencoded".to_owned(),
            form.as_bytes(),
            None,
        );
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(WebError::from_client(method, error)),
            Err(_) => Err(WebError::Transport {
                method: method.to_owned(),
                reason: format!("no answer in {:?}", self.timeout),
            }),
        };
        if let Err(error) = &answer
            && let Failure::RateLimited { retry_after } = error.failure()
        {
            // Every call of the scope waits, not only this one (Slack says one second when it
            // says nothing).
            let channel = url::form_urlencoded::parse(form.as_bytes())
                .find(|(name, _)| name == "channel")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            self.limits.hold(
                &scope(method, &channel),
                retry_after.unwrap_or(Duration::from_secs(1)),
            );
        }
        answer
    }

    /// `chat.postMessage`: the new message's channel and ts.
    pub(super) async fn post_message(
        &self,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), WebError> {
        let answer: SlackApiChatPostMessageResponse =
            self.post("chat.postMessage", request).await?;
        Ok((answer.channel.to_string(), answer.ts.to_string()))
    }

    /// `chat.update`.
    pub(super) async fn update(&self, request: &SlackApiChatUpdateRequest) -> Result<(), WebError> {
        let _: SlackApiChatUpdateResponse = self.post("chat.update", request).await?;
        Ok(())
    }

    /// `chat.postEphemeral`: a message only `user` sees.
    pub(super) async fn post_ephemeral(
        &self,
        request: &SlackApiChatPostEphemeralRequest,
    ) -> Result<(), WebError> {
        let _: SlackApiChatPostEphemeralResponse = self.post("chat.postEphemeral", request).await?;
        Ok(())
    }

    /// `usergroups.users.list`: the user ids in a user group. It is asked while a click waits,
    /// and Slack gives a click three seconds, so it gets two at most.
    pub(super) async fn user_group_members(&self, group: &str) -> Result<Vec<String>, WebError> {
        let method = "usergroups.users.list";
        let token = SlackApiToken::new(self.token.expose().to_owned().into());
        let session = self.client.open_session(&token);
        let request = SlackApiUserGroupsUsersListRequest::new(group.to_owned().into());
        let timeout = self.timeout.min(Duration::from_secs(2));
        match tokio::time::timeout(timeout, session.usergroups_users_list(&request)).await {
            Ok(Ok(answer)) => Ok(answer.users.into_iter().map(|u| u.to_string()).collect()),
            Ok(Err(error)) => Err(WebError::from_client(method, error)),
            Err(_) => Err(WebError::Transport {
                method: method.to_owned(),
                reason: format!("no answer in {timeout:?}"),
            }),
        }
    }
}

/// A request as a form: its top-level fields, strings as they are and anything else (blocks,
/// booleans) as JSON text, which is how Slack reads form parameters.
fn form_body<RQ: Serialize>(request: &RQ) -> Result<String, String> {
    let value = serde_json::to_value(request).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(fields) = value else {
        return Err("a Web API request must be an object".into());
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::String(text) => {
                form.append_pair(&name, &text);
            }
            other => {
                form.append_pair(&name, &other.to_string());
            }
        }
    }
    Ok(form.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_strings_and_encode_the_rest_as_json() {
        let request = SlackApiChatPostMessageRequest::new(
            "C1".into(),
            SlackMessageContent::new()
                .with_text("a & b".into())
                .with_blocks(vec![SlackDividerBlock::new().into()]),
        )
        .with_thread_ts("1.2".into());
        let form = form_body(&request).unwrap();
        let pairs: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(form.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(pairs["channel"], "C1");
        assert_eq!(pairs["text"], "a & b");
        assert_eq!(pairs["thread_ts"], "1.2");
        assert_eq!(pairs["blocks"], r#"[{"type":"divider"}]"#);
    }

    fn refused(code: &str) -> WebError {
        WebError::Api {
            method: "chat.postMessage".into(),
            code: code.into(),
        }
    }

    fn answered(status: u16) -> WebError {
        WebError::Status {
            method: "chat.update".into(),
            status,
        }
    }

    #[test]
    fn rate_limits_wait_and_malformed_requests_are_set_aside() {
        let limited = WebError::RateLimited {
            method: "chat.postMessage".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            limited.delivery().failure.retry_after(),
            Some(Duration::from_secs(7))
        );
        assert!(refused("invalid_blocks").delivery().is_permanent());
        assert!(!answered(503).delivery().is_permanent());
        assert!(!refused("not_in_channel").delivery().is_permanent());
        assert_eq!(refused("token_revoked").failure(), Failure::Auth);
        assert!(
            !refused("token_revoked").delivery().is_permanent(),
            "waits for a new token"
        );
        assert!(refused("ratelimited").failure().is_transient());
        assert!(answered(403).delivery().is_permanent());
    }
}
