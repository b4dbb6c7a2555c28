//! Socket Mode: Cordon opens WebSockets to Slack (`apps.connections.open` with the app-level
//! token) and receives clicks and `/cordon` commands there, for a bot with no public URL. Slack
//! authenticates the connection, so there is no request signature; the handlers are the HTTP
//! endpoint's. slack-morphism acknowledges each envelope once its handler returns and reconnects
//! on its own when a connection drops.

use std::sync::{Arc, Weak};

use slack_morphism::hyper_tokio::{SlackClientHyperHttpsConnector, SlackHyperClient};
use slack_morphism::prelude::*;

use super::Slack;
use super::inbound::CommandCall;
use crate::config::Secret;

type Listener = SlackClientSocketModeListener<SlackClientHyperHttpsConnector>;

/// The running Socket Mode connections.
pub(super) struct SocketMode {
    listener: Arc<Listener>,
}

impl SocketMode {
    /// Connects with `app_token` and feeds what arrives to `slack` (held weakly, so the
    /// connections end when the server lets go of it).
    pub(super) async fn start(
        client: Arc<SlackHyperClient>,
        slack: Weak<Slack>,
        app_token: &Secret,
    ) -> SocketMode {
        let mut callbacks = SlackSocketModeListenerCallbacks::new();
        let on_click = slack.clone();
        callbacks.interaction_callback = Box::new(
            move |event: SlackInteractionEvent, _client: Arc<SlackHyperClient>, _state| {
                let slack = on_click.upgrade();
                async move {
                    if let Some(slack) = slack {
                        slack.interaction(event).await;
                    }
                    Ok(SlackInteractionResponse::Empty)
                }
            },
        );
        let on_command = slack;
        callbacks.command_callback = Box::new(
            move |event: SlackCommandEvent, _client: Arc<SlackHyperClient>, _state| {
                let slack = on_command.upgrade();
                async move {
                    let call = CommandCall {
                        user_id: event.user_id.to_string(),
                        user_name: None,
                        text: event.text.unwrap_or_default(),
                    };
                    let reply = match slack {
                        Some(slack) => slack.command(&call).await,
                        None => return Err("Cordon is shutting down".into()),
                    };
                    Ok(SlackCommandEventResponse::new(
                        SlackMessageContent::new().with_text(reply.text),
                    )
                    .with_response_type(if reply.public {
                        SlackMessageResponseType::InChannel
                    } else {
                        SlackMessageResponseType::Ephemeral
                    }))
                }
            },
        );
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(client).with_error_handler(|error, _, _| {
                tracing::warn!(%error, "Slack Socket Mode error");
                axum::http::StatusCode::OK
            }),
        );
        let listener = Arc::new(SlackClientSocketModeListener::new(
            &SlackClientSocketModeConfig::new(),
            environment,
            callbacks,
        ));
        let token = SlackApiToken::new(app_token.expose().to_owned().into());
        if let Err(error) = listener.listen_for(&token).await {
            tracing::warn!(%error, "Slack Socket Mode could not register the app token");
        }
        listener.start().await;
        SocketMode { listener }
    }

    /// Closes the connections (in the background: dropping happens outside async code).
    pub(super) fn stop(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let listener = self.listener;
            runtime.spawn(async move { listener.shutdown().await });
        }
    }
}
