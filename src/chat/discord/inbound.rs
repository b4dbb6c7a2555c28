//! `POST /v1/chat/discord/interactions`: Discord's HTTP interactions (set as the application's
//! Interactions Endpoint URL).
//!
//! Every request is checked on its raw bytes before anything is parsed: the Ed25519 signature of
//! `X-Signature-Timestamp` + body with the application's public key, then the timestamp (at most
//! five minutes from now, either way), then the interaction id, which is recorded so the same
//! signed request cannot be played twice. A refused request gets a 4xx with a JSON error and
//! changes nothing.
//!
//! Interaction ids are remembered with the store's `remember_once` only as long as their signed
//! timestamp could still pass the window, then pruned; the check and the record are one step on
//! every backend, so two replicas cannot both take the same replayed request.
//!
//! Discord wants an answer within three seconds, so nothing slow happens before it:
//! - PING → PONG;
//! - a button click → `DEFERRED_UPDATE_MESSAGE` (type 6) at once; the decision then goes through
//!   [`crate::chat::click`] (the same approver rules as every platform) and its result is sent to
//!   the person alone as an ephemeral follow-up; the card itself is updated through the outbox;
//! - `/cordon ...` → `DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE` (type 5, ephemeral) at once; the answer
//!   then replaces the "thinking" message.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use serenity::all::{
    CommandOptionType, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, EditInteractionResponse, InteractionType, RoleId, UserId,
};

use super::api::{Api, Auth, clip};
use super::config::DiscordConfig;
use super::deliver::{self, NAMESPACE};
use super::render::{self, ButtonTarget, HELP, Markdown};
use crate::chat::commands::{self, Command, Commands};
use crate::chat::{ChatUser, click};
use crate::engine::Engine;
use crate::http::ApiError;
use crate::store::Store;

/// How far an interaction's timestamp may be from now.
const WINDOW_SECS: u64 = 300;

/// Where seen interaction ids are remembered.
const SEEN_NAMESPACE: &str = "chat.discord.seen";

/// What the endpoint keeps between requests.
pub struct Inbound {
    config: DiscordConfig,
    api: Arc<Api>,
    store: Arc<dyn Store>,
    /// Held weakly: the engine holds the outbox, which holds the platform.
    engine: Weak<Engine>,
    commands: Arc<Commands>,
}

impl Inbound {
    pub fn new(config: DiscordConfig, api: Arc<Api>, deps: &crate::chat::ChatDeps) -> Inbound {
        Inbound {
            config,
            api,
            store: deps.store.clone(),
            engine: deps.engine.clone(),
            commands: deps.commands.clone(),
        }
    }
}

/// The interactions route.
pub fn routes(inbound: Arc<Inbound>) -> Router {
    Router::new()
        .route("/v1/chat/discord/interactions", post(interactions))
        .with_state(inbound)
}

async fn interactions(
    State(inbound): State<Arc<Inbound>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    match inbound.receive(&headers, &body).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => {
            tracing::warn!(status = error.status.as_u16(), code = error.code, reason = %error.message, "Discord interaction refused");
            error.into_response()
        }
    }
}

/// The parts of an interaction Cordon reads; everything else Discord sends is ignored, so a field
/// Discord adds or leaves out never stops an approval.
#[derive(Debug, Deserialize)]
struct Interaction {
    id: String,
    application_id: String,
    #[serde(rename = "type")]
    kind: InteractionType,
    #[serde(default)]
    token: String,
    #[serde(default)]
    data: Value,
    /// The clicking member, in a server (with their roles).
    #[serde(default)]
    member: Option<Member>,
    /// The clicking user, in a direct message.
    #[serde(default)]
    user: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Member {
    user: User,
    #[serde(default)]
    roles: Vec<RoleId>,
    #[serde(default)]
    nick: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: UserId,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    global_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ComponentData {
    custom_id: String,
}

/// A slash command's name and options.
#[derive(Debug, Deserialize)]
struct CommandData {
    pub name: String,
    #[serde(default)]
    pub options: Vec<CommandOption>,
}

/// One option of a command; a sub-command holds options of its own.
#[derive(Debug, Deserialize)]
struct CommandOption {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: CommandOptionType,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub options: Vec<CommandOption>,
}

impl Interaction {
    /// The interaction in a request body (read once the signature and timestamp are checked).
    fn read(body: &[u8]) -> Result<Interaction, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("bad_payload", format!("not a Discord interaction: {e}"))
        })
    }

    /// A button click's data.
    fn component_data(&self) -> Result<ComponentData, ApiError> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            ApiError::bad_request(
                "bad_payload",
                format!("a component interaction needs data.custom_id: {e}"),
            )
        })
    }

    /// A slash command's data.
    fn command_data(&self) -> Result<CommandData, ApiError> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            ApiError::bad_request(
                "bad_payload",
                format!("a command interaction needs data.name: {e}"),
            )
        })
    }

    /// Who acted: `discord:<user id>`, with their roles as `discord-role:<id>` groups.
    fn chat_user(&self) -> Option<ChatUser> {
        let (user, roles, nick) = match &self.member {
            Some(m) => (&m.user, m.roles.as_slice(), m.nick.as_deref()),
            None => (self.user.as_ref()?, &[][..], None),
        };
        let name = nick
            .or(user.global_name.as_deref())
            .or(user.username.as_deref())
            .map(str::to_owned)
            .unwrap_or_else(|| user.id.to_string());
        Some(ChatUser {
            identity: format!("discord:{}", user.id),
            groups: roles.iter().map(|r| format!("discord-role:{r}")).collect(),
            name,
        })
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::unauthorized("unauthorized", message)
}

/// An answer only the person sees, right away.
fn tell(text: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .content(clip(text, 2000))
            .ephemeral(true)
            .allowed_mentions(render::no_mentions()),
    )
}

impl Inbound {
    async fn receive(
        self: Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CreateInteractionResponse, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (
            header("x-signature-ed25519"),
            header("x-signature-timestamp"),
        ) else {
            return Err(unauthorized(
                "missing X-Signature-Ed25519 or X-Signature-Timestamp",
            ));
        };
        if self
            .config
            .public_key
            .verifier()
            .verify(signature, timestamp, body)
            .is_err()
        {
            return Err(unauthorized(
                "the signature does not match the application's public key",
            ));
        }
        let sent: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| unauthorized("X-Signature-Timestamp is not a Unix time"))?;
        let now = chrono::Utc::now().timestamp();
        if now.abs_diff(sent) > WINDOW_SECS {
            return Err(unauthorized(format!(
                "the request is stale: signed {}s away from now, more than {WINDOW_SECS}s allowed",
                now.abs_diff(sent)
            )));
        }
        let interaction = Interaction::read(body)?;
        if interaction.application_id != self.config.application_id.as_str() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_application",
                "the interaction is for another application",
            ));
        }
        if interaction.kind == InteractionType::Ping {
            return Ok(CreateInteractionResponse::Pong);
        }
        self.first_time(&interaction.id, sent).await?;
        match interaction.kind {
            InteractionType::Component => self.component(interaction).await,
            InteractionType::Command => self.command(interaction),
            other => Err(ApiError::bad_request(
                "unsupported",
                format!(
                    "Cordon does not take interactions of type {}",
                    u8::from(other)
                ),
            )),
        }
    }

    /// Records the interaction id, signed at `sent` (Unix seconds); refuses one seen before (a
    /// replayed request). It is remembered while the window could still admit its timestamp.
    async fn first_time(&self, id: &str, sent: i64) -> Result<(), ApiError> {
        let until = chrono::DateTime::from_timestamp(sent, 0).unwrap_or_default()
            + chrono::TimeDelta::seconds(WINDOW_SECS as i64 + 60);
        let first = self
            .store
            .remember_once(SEEN_NAMESPACE, id, until, chrono::Utc::now())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot record a Discord interaction");
                ApiError::unavailable()
            })?;
        if first {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed",
                "this interaction was received before",
            ))
        }
    }

    /// A button click: acknowledged at once, decided in the background.
    async fn component(
        self: Arc<Self>,
        interaction: Interaction,
    ) -> Result<CreateInteractionResponse, ApiError> {
        let data = interaction.component_data()?;
        let user = interaction
            .chat_user()
            .ok_or_else(|| ApiError::bad_request("bad_payload", "the interaction names no user"))?;
        let (approve, run_id, step) = match render::parse_button(&data.custom_id) {
            Some(ButtonTarget::Direct {
                approve,
                run_id,
                step,
            }) => (approve, run_id, step),
            Some(ButtonTarget::Stored { approve, key }) => {
                let stored = self
                    .store
                    .meta_get(NAMESPACE, &format!("button:{key}"))
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot read a Discord button");
                        ApiError::unavailable()
                    })?
                    .and_then(deliver::stored_button);
                match stored {
                    Some(b) => (approve, b.run_id, b.step),
                    None => return Ok(tell("This button no longer leads anywhere.")),
                }
            }
            None => return Ok(tell("This button is not one of Cordon's.")),
        };
        let Some(engine) = self.engine.upgrade() else {
            return Ok(tell(commands::SHUTTING_DOWN));
        };
        let token = interaction.token;
        tokio::spawn(async move {
            let reply = click(&engine, "discord", &user, &run_id, &step, approve).await;
            tracing::info!(run = %run_id, step = %step, identity = %user.identity, accepted = reply.accepted, "Discord click");
            let followup = CreateInteractionResponseFollowup::new()
                .content(clip(&reply.text, 2000))
                .ephemeral(true)
                .allowed_mentions(render::no_mentions());
            self.answer(Method::POST, &token, "", &followup, "answering the click")
                .await;
        });
        Ok(CreateInteractionResponse::Acknowledge)
    }

    /// `/cordon ...`: deferred at once, answered in the background.
    fn command(
        self: Arc<Self>,
        interaction: Interaction,
    ) -> Result<CreateInteractionResponse, ApiError> {
        let data = interaction.command_data()?;
        if data.name != "cordon" {
            return Ok(tell(&format!("Cordon has no command `/{}`.", data.name)));
        }
        let user = interaction
            .chat_user()
            .ok_or_else(|| ApiError::bad_request("bad_payload", "the interaction names no user"))?;
        let token = interaction.token;
        tokio::spawn(async move {
            let answer = match read_command(&data) {
                Ok(command) => {
                    self.commands
                        .answer("discord", &user, command, &Markdown)
                        .await
                }
                Err(usage) => usage.into(),
            };
            let edit = EditInteractionResponse::new()
                .content(clip(&answer.text, 2000))
                .allowed_mentions(render::no_mentions());
            self.answer(
                Method::PATCH,
                &token,
                "/messages/@original",
                &edit,
                "answering /cordon",
            )
            .await;
            if let Some(text) = answer.announce {
                let public = CreateInteractionResponseFollowup::new()
                    .content(clip(&text, 2000))
                    .allowed_mentions(render::no_mentions());
                self.answer(Method::POST, &token, "", &public, "announcing /cordon run")
                    .await;
            }
        });
        Ok(CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        ))
    }

    /// Sends an interaction's answer, retrying a few times (rate limits, Discord's hiccups)
    /// within the 15 minutes its token lasts.
    async fn answer<T: serde::Serialize>(
        &self,
        method: Method,
        token: &str,
        suffix: &str,
        body: &T,
        what: &str,
    ) {
        let app_id = self.config.application_id.as_str();
        let path = format!("/webhooks/{app_id}/{token}{suffix}");
        // The bucket is per interaction; its name holds no token.
        let route = format!("{method} webhook {}", deliver::digest(token, 16));
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=4 {
            match self
                .api
                .send(method.clone(), &route, &path, body, Auth::Interaction, what)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    let wait = e.failure.retry_after().unwrap_or(backoff);
                    if !e.retryable() || attempt == 4 || wait > Duration::from_secs(60) {
                        tracing::warn!(error = %e.message, "could not answer a Discord interaction");
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                }
            }
        }
    }
}

impl CommandData {
    /// The sub-command (`status`, `runs`, `approve`, ...) and its options.
    fn sub(&self) -> Option<(&str, &[CommandOption])> {
        let sub = self
            .options
            .iter()
            .find(|o| o.kind == CommandOptionType::SubCommand)?;
        Some((sub.name.as_str(), sub.options.as_slice()))
    }
}

/// The command `/cordon <sub-command> <options>` stands for, or what to tell the person.
fn read_command(data: &CommandData) -> Result<Command, String> {
    let Some((sub, options)) = data.sub() else {
        return Err(HELP.to_owned());
    };
    match sub {
        "status" => Ok(Command::Status),
        "runs" => Ok(Command::Runs),
        "approve" | "deny" => match (option(options, "run"), option(options, "step")) {
            (Some(run), Some(step)) => Ok(Command::Decide {
                run: run.to_owned(),
                step: step.to_owned(),
                approve: sub == "approve",
            }),
            _ => Err(format!(
                "Usage: `/cordon {sub} run:<run id> step:<step id>`."
            )),
        },
        "run" => {
            let Some(playbook) = option(options, "playbook") else {
                return Err("Usage: `/cordon run playbook:<id> inputs:key=value ...`.".to_owned());
            };
            let inputs =
                commands::parse_inputs(option(options, "inputs").unwrap_or("").split_whitespace())
                    .map_err(|e| {
                        format!("{e}; inputs are `key=value` pairs separated by spaces.")
                    })?;
            Ok(Command::Run {
                playbook: playbook.to_owned(),
                inputs,
            })
        }
        other => Err(format!("Cordon has no `/cordon {other}`. {HELP}")),
    }
}

/// The option `name` of a sub-command, as trimmed text (none when empty).
fn option<'a>(options: &'a [CommandOption], name: &str) -> Option<&'a str> {
    options
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.value.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Reads a request body the way the endpoint does once the signature is checked, without state:
/// the interaction, who acted, and the button a click names or the sub-command and options of
/// `/cordon`. The fuzz targets' way in ([`crate::fuzzing`]).
pub(crate) fn read_offline(body: &[u8]) -> Result<(), ApiError> {
    let interaction = Interaction::read(body)?;
    let _ = interaction.chat_user();
    match interaction.kind {
        InteractionType::Component => {
            let data = interaction.component_data()?;
            let _ = render::parse_button(&data.custom_id);
        }
        InteractionType::Command => {
            let data = interaction.command_data()?;
            let _ = read_command(&data);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every recorded button click reads, including one without the member fields (`deaf`,
    /// `mute`) serenity's `Member` model requires, which Discord left out.
    #[test]
    fn recorded_clicks_read_with_their_clicker() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/callbacks/discord/"
        );
        let read = |file: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}{file}")).unwrap()).unwrap()
        };
        let replay = read("vercel_chat_replay_discord.json");
        let channel = read("vercel_chat_replay_channel_discord.json");
        let clicks = [
            (
                &replay["buttonClickHello"],
                "discord:1033044521375764530",
                "Test User",
            ),
            (
                &replay["dmButtonClick"],
                "discord:1033044521375764530",
                "Test User",
            ),
            (
                &replay["differentUser"],
                "discord:9876543210987654321",
                "Different Nick",
            ),
            (
                &channel["channel_post_action"],
                "discord:1033044521375764530",
                "Test User",
            ),
        ];
        for (payload, identity, name) in clicks {
            let interaction: Interaction = serde_json::from_value(payload.clone()).unwrap();
            assert_eq!(interaction.kind, InteractionType::Component);
            let user = interaction.chat_user().unwrap();
            assert_eq!(
                (user.identity.as_str(), user.name.as_str()),
                (identity, name)
            );
        }
        let mut with_role = replay["buttonClickHello"].clone();
        with_role["member"]["roles"] = serde_json::json!(["1457473602180878604"]);
        let interaction: Interaction = serde_json::from_value(with_role).unwrap();
        assert_eq!(
            interaction.chat_user().unwrap().groups,
            vec!["discord-role:1457473602180878604".to_owned()]
        );
    }
}
