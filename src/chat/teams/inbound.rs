//! `POST /v1/chat/teams/messages`: the bot's messaging endpoint, where the Bot Connector sends
//! every activity.
//!
//! Every request's token is validated on the raw request before the body is read as an activity
//! ([`super::jwt`]); a refused one gets a 401 with a JSON error and changes nothing. Then:
//!
//! - `invoke` `adaptiveCard/action` (an `Action.Execute` click): decided with
//!   [`crate::chat::click`] and answered in place: the decided card when the click completed the
//!   decision, otherwise a message only the clicker sees ("Not allowed…", "Already decided by…",
//!   "Your approval is recorded (1 of 2 needed)").
//! - `message` carrying a Cordon button's data (an `Action.Submit` click from an older client):
//!   decided the same way; the answer is posted as a reply in the card's thread through the outbox,
//!   since Teams has no private answer for these.
//! - `conversationUpdate` adding the bot, or `installationUpdate` `add`, in a team channel of the
//!   bot's tenant: the conversation is remembered as where cards go ([`super::Install`]); removing
//!   the bot forgets it. An install in a personal chat or a group chat, or from another tenant,
//!   never moves the cards: anyone can add a bot to their own chat, and a multi-tenant bot can be
//!   installed by any organization. The bot's tenant is `chat.teams.tenant_id`, or, without it,
//!   the tenant of the first team install (kept under `install:tenant`).
//! - anything else is acknowledged and ignored.

use std::sync::{Arc, Weak};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::graph::Groups;
use super::jwt::{self, TokenError, Validator};
use super::render::{self as card, ButtonData, TeamsMarkdown};
use super::{Install, META, REPLY, TeamsConfig};
use crate::chat::commands::{Command, Commands};
use crate::chat::{Card, ChatDeps, ChatUser, click};
use crate::engine::Engine;
use crate::http::ApiError;
use crate::outbox::{Outbox, OutboxEntry};
use crate::store::Store;

/// The endpoint's path (the messaging endpoint of the bot's Azure Bot resource).
pub const PATH: &str = "/v1/chat/teams/messages";

/// What the endpoint keeps between requests: the key cache and the group lookup, and what a
/// click or a command needs.
pub struct Inbound {
    config: Arc<TeamsConfig>,
    validator: Validator,
    groups: Groups,
    store: Arc<dyn Store>,
    outbox: Arc<Outbox>,
    /// Held weakly: the engine holds the outbox, which holds the platform.
    engine: Weak<Engine>,
    commands: Arc<Commands>,
    max_body_bytes: usize,
}

impl Inbound {
    pub fn new(config: Arc<TeamsConfig>, deps: &ChatDeps) -> Inbound {
        let validator = Validator::new(
            deps.http.clone(),
            config.openid_metadata_url.clone(),
            &config.issuer,
            &config.app_id,
        );
        let groups = Groups::new(
            &config,
            deps.http.clone(),
            deps.approvers.0.values().flatten(),
        );
        Inbound {
            config,
            validator,
            groups,
            store: deps.store.clone(),
            outbox: deps.outbox.clone(),
            engine: deps.engine.clone(),
            commands: deps.commands.clone(),
            max_body_bytes: deps.max_body_bytes,
        }
    }
}

/// The Teams route: the bot's messaging endpoint.
pub fn routes(inbound: Arc<Inbound>) -> Router {
    Router::new()
        .route(PATH, post(messages))
        .with_state(inbound)
}

async fn messages(State(inbound): State<Arc<Inbound>>, headers: HeaderMap, body: Body) -> Response {
    receive(&inbound, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    aad_object_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    conversation_type: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// The parts of a Bot Framework activity Cordon reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    service_url: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    from: Account,
    #[serde(default)]
    recipient: Account,
    #[serde(default)]
    conversation: Conversation,
    #[serde(default)]
    channel_data: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    reply_to_id: Option<String>,
    /// A message's text (with `<at>Cordon</at>` where the bot is mentioned).
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    members_added: Vec<Account>,
    #[serde(default)]
    members_removed: Vec<Account>,
}

impl Activity {
    /// The activity in a request body (read once the token has been validated).
    fn read(body: &[u8]) -> Result<Activity, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "bad_activity",
                format!("the body is not a Bot Framework activity: {e}"),
            )
        })
    }

    fn tenant(&self) -> Option<&str> {
        self.channel_data["tenant"]["id"]
            .as_str()
            .or(self.conversation.tenant_id.as_deref())
    }

    /// The person who clicked, as approver rules see them.
    async fn user(&self, groups: &Groups) -> Option<ChatUser> {
        let aad = self
            .from
            .aad_object_id
            .as_deref()
            .filter(|a| !a.is_empty())?;
        Some(ChatUser {
            identity: format!("teams:{aad}"),
            groups: groups.of(aad).await,
            name: self
                .from
                .name
                .clone()
                .unwrap_or_else(|| format!("teams:{aad}")),
        })
    }
}

fn refused(error: TokenError) -> ApiError {
    let status = match error {
        TokenError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    tracing::warn!(code = error.code(), reason = %error, "Teams activity refused");
    ApiError::new(status, error.code(), error.to_string())
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the activity is unreadable or larger than {limit} bytes"),
        )
    })
}

fn acknowledged() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

async fn receive(inbound: &Inbound, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    // The token first: nothing of the body is looked at for a request that is not Teams'.
    let token = jwt::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(refused)?;
    let verified = inbound.validator.validate(token).await.map_err(refused)?;
    let body = read_body(body, inbound.max_body_bytes).await?;
    let activity = Activity::read(&body)?;
    verified
        .check_activity(
            activity.channel_id.as_deref(),
            activity.service_url.as_deref(),
        )
        .map_err(refused)?;
    if let Some(tenant) = &inbound.config.tenant_id
        && activity.tenant() != Some(tenant.as_str())
    {
        tracing::warn!(tenant = ?activity.tenant(), "Teams activity from another tenant refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_tenant",
            "the activity comes from a tenant this bot does not serve",
        ));
    }
    match activity.kind.as_str() {
        "invoke" if activity.name.as_deref() == Some("adaptiveCard/action") => {
            execute(inbound, &activity).await
        }
        "message" => message(inbound, &activity).await,
        "conversationUpdate" | "installationUpdate" => {
            install(
                &*inbound.store,
                inbound.config.tenant_id.as_deref(),
                &activity,
            )
            .await
        }
        _ => Ok(acknowledged()),
    }
}

/// An `Action.Execute` click.
async fn execute(inbound: &Inbound, activity: &Activity) -> Result<Response, ApiError> {
    let (run_id, step, approve) = ButtonData::from_value(&activity.value["action"]["data"])
        .map_err(|e| ApiError::bad_request("bad_button", e))?
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_button",
                "the card action is not one of Cordon's buttons",
            )
        })?;
    let Some(user) = activity.user(&inbound.groups).await else {
        return Ok(Json(card::invoke_message(
            "Cordon cannot tell who you are: Teams sent no Entra object id.",
        ))
        .into_response());
    };
    let Some(engine) = inbound.engine.upgrade() else {
        return Ok(
            Json(card::invoke_message(crate::chat::commands::SHUTTING_DOWN)).into_response(),
        );
    };
    let reply = click(&engine, "teams", &user, &run_id, &step, approve).await;
    if reply.accepted
        && let Some(card) = decided_card(&*inbound.store, &run_id, &step).await
    {
        return Ok(Json(card::invoke_card(&card)).into_response());
    }
    Ok(Json(card::invoke_message(&reply.text)).into_response())
}

/// The card of approval `step` of `run_id` once decided.
async fn decided_card(store: &dyn Store, run_id: &str, step: &str) -> Option<Card> {
    let run = store.run(run_id).await.ok()??;
    let (request, outcome) = crate::engine::channel::decided(&run, step)?;
    Some(Card::build(store, &request).await.decided(&outcome))
}

/// A message: an `Action.Submit` click when it carries Cordon's button data, else a command to
/// the bot (`status`, `runs`, `approve RUN STEP`, ..., after its @mention in a channel). Either
/// is answered in the message's thread.
async fn message(inbound: &Inbound, activity: &Activity) -> Result<Response, ApiError> {
    let button = ButtonData::from_value(&activity.value)
        .map_err(|e| ApiError::bad_request("bad_button", e))?;
    let text = match (button, command_text(activity)) {
        (Some((run_id, step, approve)), _) => match activity.user(&inbound.groups).await {
            Some(user) => match inbound.engine.upgrade() {
                Some(engine) => {
                    let reply = click(&engine, "teams", &user, &run_id, &step, approve).await;
                    format!("{}: {}", user.name, reply.text)
                }
                None => crate::chat::commands::SHUTTING_DOWN.to_owned(),
            },
            None => "Cordon cannot tell who clicked: Teams sent no Entra object id.".to_owned(),
        },
        (None, Some(text)) => match Command::from_words(&text, &TeamsMarkdown) {
            Err(usage) => usage,
            Ok(command) => match activity.user(&inbound.groups).await {
                Some(user) => {
                    let answer = inbound
                        .commands
                        .answer("teams", &user, command, &TeamsMarkdown)
                        .await;
                    // Teams has no messages only one person sees: a started run is announced in
                    // the thread, anything else answered there.
                    answer.announce.unwrap_or(answer.text)
                }
                None => "Cordon cannot tell who you are: Teams sent no Entra object id.".to_owned(),
            },
        },
        (None, None) => return Ok(acknowledged()),
    };
    // The answer goes to the thread of the clicked card (`replyToId` names it) or of the message.
    let reply_to = activity.reply_to_id.as_ref().or(activity.id.as_ref());
    if let (Some(service_url), Some(conversation), Some(id)) =
        (&activity.service_url, &activity.conversation.id, reply_to)
    {
        let entry = OutboxEntry::new(
            "teams",
            &format!("reply:{id}"),
            REPLY,
            json!({ "service_url": service_url, "conversation_id": conversation, "reply_to": id, "text": text }),
        );
        if let Err(e) = inbound.outbox.push(vec![entry]).await {
            tracing::error!(error = %e, "could not record an answer in Teams");
        }
    }
    Ok(acknowledged())
}

/// The words of a message to the bot: its text without `<at>…</at>` mentions, if any is left.
fn command_text(activity: &Activity) -> Option<String> {
    let mut text = activity.text.clone()?;
    while let Some(start) = text.find("<at>") {
        let end = text[start..]
            .find("</at>")
            .map_or(text.len(), |e| start + e + "</at>".len());
        text.replace_range(start..end, " ");
    }
    let text = text.replace("&nbsp;", " ");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A channel conversation id without the `;messageid=` of the message it was sent from.
fn base_conversation(conversation: &str) -> &str {
    conversation
        .split(";messageid=")
        .next()
        .unwrap_or(conversation)
}

/// The bot added to or removed from a conversation.
async fn install(
    store: &dyn Store,
    configured_tenant: Option<&str>,
    activity: &Activity,
) -> Result<Response, ApiError> {
    let bot = activity.recipient.id.as_deref();
    let is_bot = |a: &Account| bot.is_some() && a.id.as_deref() == bot;
    let added = match activity.kind.as_str() {
        "installationUpdate" => match activity.action.as_deref() {
            Some("add") => Some(true),
            Some("remove") => Some(false),
            _ => None,
        },
        _ if activity.members_added.iter().any(is_bot) => Some(true),
        _ if activity.members_removed.iter().any(is_bot) => Some(false),
        _ => None,
    };
    let (Some(added), Some(service_url), Some(conversation)) = (
        added,
        activity.service_url.as_deref(),
        activity.conversation.id.as_deref(),
    ) else {
        return Ok(acknowledged());
    };
    let conversation = base_conversation(conversation);
    let store_error = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "could not record where the Teams bot is installed");
        ApiError::unavailable()
    };
    let key = format!("install:{conversation}");
    if added {
        let team_channel = match activity.conversation.conversation_type.as_deref() {
            Some(kind) => kind == "channel",
            None => activity.channel_data["team"]["id"].is_string(),
        };
        if !team_channel {
            tracing::info!(conversation = %conversation, kind = ?activity.conversation.conversation_type, "Teams bot added outside a team channel; cards still go to the team channel");
            return Ok(acknowledged());
        }
        let tenant = activity.tenant().map(str::to_owned);
        // With `tenant_id` configured, other tenants were refused before this point.
        if configured_tenant.is_none() {
            let pinned = store
                .meta_get(META, "install:tenant")
                .await
                .map_err(store_error)?;
            match (pinned.as_ref().and_then(Value::as_str), tenant.as_deref()) {
                (Some(pinned), Some(tenant)) if pinned == tenant => {}
                (None, Some(tenant)) => {
                    store
                        .meta_put(META, "install:tenant", Value::from(tenant))
                        .await
                        .map_err(store_error)?;
                    tracing::info!(
                        tenant,
                        "Teams bot installed in its first team; cards stay in this tenant (set chat.teams.tenant_id to choose)"
                    );
                }
                (pinned, tenant) => {
                    tracing::warn!(?pinned, ?tenant, conversation = %conversation, "Teams bot installed by another tenant; cards still go to the bot's own tenant");
                    return Ok(acknowledged());
                }
            }
        }
        let install = Install {
            service_url: service_url.to_owned(),
            conversation_id: conversation.to_owned(),
            conversation_type: activity.conversation.conversation_type.clone(),
            tenant_id: tenant,
            team_id: activity.channel_data["team"]["id"]
                .as_str()
                .map(str::to_owned),
            bot_id: bot.map(str::to_owned),
            installed_at: chrono::Utc::now(),
        };
        let value = serde_json::to_value(&install).unwrap_or(Value::Null);
        store
            .meta_put(META, &key, value.clone())
            .await
            .map_err(store_error)?;
        store
            .meta_put(META, "install:latest", value)
            .await
            .map_err(store_error)?;
        tracing::info!(conversation = %conversation, "Teams bot installed; cards go here unless chat.teams.channel_id says otherwise");
    } else {
        store
            .meta_put(META, &key, Value::Null)
            .await
            .map_err(store_error)?;
        let latest = store
            .meta_get(META, "install:latest")
            .await
            .map_err(store_error)?;
        if latest.as_ref().and_then(|l| l["conversation_id"].as_str()) == Some(conversation) {
            store
                .meta_put(META, "install:latest", Value::Null)
                .await
                .map_err(store_error)?;
        }
        tracing::info!(conversation = %conversation, "Teams bot removed from a conversation");
    }
    Ok(acknowledged())
}

/// Reads a request body the way the endpoint does once the token is valid, without state: the
/// activity, its tenant, the Cordon button an `Action.Execute` or `Action.Submit` click carries,
/// and the conversation an install names. The fuzz targets' way in ([`crate::fuzzing`]).
pub(crate) fn read_offline(body: &[u8]) -> Result<Option<(String, String, bool)>, ApiError> {
    let activity = Activity::read(body)?;
    let _ = activity.tenant();
    if let Some(conversation) = activity.conversation.id.as_deref() {
        let _ = base_conversation(conversation);
    }
    if let Some(text) = command_text(&activity) {
        let _ = Command::from_words(&text, &TeamsMarkdown);
    }
    let button = match activity.kind.as_str() {
        "invoke" => ButtonData::from_value(&activity.value["action"]["data"]),
        "message" => ButtonData::from_value(&activity.value),
        _ => Ok(None),
    };
    button.map_err(|e| ApiError::bad_request("bad_button", e))
}
