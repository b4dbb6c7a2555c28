//! `POST /v1/alerts/{source}`: authenticate on raw bytes, unwrap SNS, normalize, store durably,
//! answer 202 with the alert and incident ids.
//!
//! A refused request writes nothing: every check runs before the store is touched, and each refusal
//! is counted in `cordon_alerts_rejected_total{source,reason}`.
//!
//! Intake is built from its own state ([`Intake`]) and hands `app` a router ([`router`]); it knows
//! nothing of the server around it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;

use super::formats::SourceKind;
use super::sender::{SenderError, TokenCheck};
use super::sns::{SnsEnvelope, SnsMessageType, SnsVerifier};
use super::verify;
use crate::config::{AuthConfig, Config, SourceConfig};
use crate::engine::Engine;
use crate::http::ApiError;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What intake needs: the enabled sources, where alerts go, and the engine to tell.
pub struct Intake {
    pub sources: HashMap<String, Arc<IntakeSource>>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
}

/// `POST /v1/alerts/{source}`, for `app` to merge into the server's routes.
pub fn router<S: Clone + Send + Sync + 'static>(intake: Arc<Intake>) -> Router<S> {
    Router::new()
        .route("/v1/alerts/{source}", post(receive))
        .with_state(intake)
}

/// A configured source, ready to take requests.
pub struct IntakeSource {
    pub kind: SourceKind,
    pub config: SourceConfig,
    pub max_body_bytes: usize,
    /// Present when the source takes SNS deliveries.
    pub sns: Option<SnsVerifier>,
    /// Present when the source's senders send a signed token (`google_oidc`, `entra_id`).
    pub token: Option<TokenCheck>,
    /// Its request rate limit (`rate_limit`, or `server.rate_limit`).
    pub limit: super::limit::Bucket,
}

/// The enabled sources by name, built once from the config.
pub fn sources(config: &Config, http: &reqwest::Client) -> HashMap<String, Arc<IntakeSource>> {
    let mut out = HashMap::new();
    for (name, source) in &config.sources {
        // Names were checked when the config was loaded.
        let Some(kind) = SourceKind::from_name(name) else {
            continue;
        };
        if !source.enabled {
            continue;
        }
        let sns = match &source.auth {
            AuthConfig::Sns(sns) => Some(SnsVerifier::new(
                http.clone(),
                sns.endpoint_override.clone(),
            )),
            _ => None,
        };
        let token = match &source.auth {
            AuthConfig::GoogleOidc(google) => Some(TokenCheck::google(http.clone(), google)),
            AuthConfig::EntraId(entra) => match TokenCheck::entra(http.clone(), entra) {
                Ok(check) => Some(check),
                // The tenant was checked when the config was loaded; a source that cannot check
                // tokens takes none (503).
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "no key set URL for the Entra ID tenant");
                    None
                }
            },
            _ => None,
        };
        out.insert(
            name.clone(),
            Arc::new(IntakeSource {
                kind,
                config: source.clone(),
                max_body_bytes: source
                    .max_body_bytes
                    .unwrap_or(config.server.max_body_bytes),
                sns,
                token,
                limit: super::limit::Bucket::new(
                    source.rate_limit.unwrap_or(config.server.rate_limit),
                ),
            }),
        );
    }
    out
}

/// The intake handler.
pub async fn receive(
    State(app): State<Arc<Intake>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Counted before anything is read or checked: a flood costs no more than this.
    if let Some(source) = app.sources.get(&name)
        && let Err(wait) = source.limit.take(std::time::Instant::now())
    {
        app.metrics.reject(&name, "rate_limited");
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let limit = source.limit.limit();
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "source `{name}` takes {} requests per second (bursts of {}); retry in {seconds} s",
                limit.per_second, limit.burst
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return response;
    }
    match accept(&app, &name, uri.query(), &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            // Unknown names are not echoed into metric labels, which would let anyone add series.
            let label = if app.sources.contains_key(&name) || SourceKind::from_name(&name).is_some()
            {
                name.as_str()
            } else {
                "unknown"
            };
            app.metrics.reject(label, error.code);
            if error.status.is_server_error() {
                tracing::warn!(source = label, code = error.code, "intake request failed");
            } else if error.status == StatusCode::UNAUTHORIZED {
                // Senders' credentials fail here: operators see which source and why, never the
                // token (messages do not quote it).
                tracing::info!(source = label, code = error.code, message = %error.message, "intake request not authenticated");
            } else {
                tracing::debug!(source = label, code = error.code, message = %error.message, "intake request refused");
            }
            error.into_response()
        }
    }
}

async fn accept(
    app: &Intake,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let source = app
        .sources
        .get(name)
        .ok_or_else(|| match SourceKind::from_name(name) {
            Some(_) => ApiError::not_found(
                "source_disabled",
                format!("source `{name}` is not enabled in this server's config"),
            ),
            None => ApiError::not_found(
                "unknown_source",
                format!(
                    "unknown source `{name}`; known sources: {}",
                    SourceKind::ALL.map(SourceKind::name).join(", ")
                ),
            ),
        })?;
    let body = read_body(headers, body, source.max_body_bytes).await?;

    let payload: Bytes = match &source.config.auth {
        AuthConfig::Bearer(bearer) => {
            verify::bearer(headers, &bearer.token)
                .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;
            body
        }
        AuthConfig::Hmac(hmac) => {
            verify::hmac(headers, &body, hmac, Utc::now().timestamp())
                .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;
            body
        }
        AuthConfig::GoogleOidc(_) | AuthConfig::EntraId(_) => {
            let check = source.token.as_ref().ok_or_else(ApiError::unavailable)?;
            check.verify(headers).await.map_err(|e| match e {
                SenderError::KeysUnavailable => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
                }
                e => ApiError::unauthorized(e.code(), e.to_string()),
            })?;
            body
        }
        AuthConfig::QueryToken(query_token) => {
            verify::query_token(query, &query_token.param, &query_token.token)
                .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;
            body
        }
        AuthConfig::Sns(sns) => {
            let verifier = source.sns.as_ref().ok_or_else(ApiError::unavailable)?;
            let envelope = SnsEnvelope::parse(&body).map_err(|e| {
                ApiError::bad_request("bad_envelope", format!("not an SNS message: {e}"))
            })?;
            if !sns.topics.contains(&envelope.topic_arn) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "topic_not_allowed",
                    format!(
                        "SNS topic `{}` is not allowed for source `{name}`",
                        envelope.topic_arn
                    ),
                ));
            }
            verifier.verify(&envelope).await.map_err(|e| {
                ApiError::unauthorized("bad_signature", format!("SNS signature check failed: {e}"))
            })?;
            // Signed, so the sender cannot move it: a copy of a delivery taken from any other
            // subscriber of the topic is refused once the window has passed, and inside the
            // window by its remembered MessageId.
            let now = Utc::now();
            let sent = envelope
                .sent_within(sns.replay_window.0, now)
                .map_err(|e| ApiError::unauthorized("stale_timestamp", e.to_string()))?;
            let until = sent
                + chrono::TimeDelta::from_std(sns.replay_window.0)
                    .unwrap_or(chrono::TimeDelta::MAX);
            let first = app
                .store
                .remember_once(
                    "sns",
                    &format!("{}/{}", envelope.topic_arn, envelope.message_id),
                    until.max(now + chrono::TimeDelta::seconds(1)),
                    now,
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, source = name, "could not remember the SNS MessageId");
                    ApiError::unavailable()
                })?;
            if !first {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "replayed_message",
                    format!(
                        "SNS message `{}` was already received; a delivery is accepted once",
                        envelope.message_id
                    ),
                ));
            }
            match envelope.kind {
                SnsMessageType::Notification => Bytes::from(envelope.message.into_bytes()),
                SnsMessageType::SubscriptionConfirmation => {
                    if !sns.confirm_subscriptions {
                        tracing::info!(source = name, topic = %envelope.topic_arn, "SNS subscription not confirmed: confirm_subscriptions is off");
                        return Ok((
                            StatusCode::OK,
                            Json(json!({ "status": "subscription_not_confirmed" })),
                        )
                            .into_response());
                    }
                    verifier
                        .confirm_subscription(&envelope)
                        .await
                        .map_err(|e| {
                            ApiError::new(
                                StatusCode::BAD_GATEWAY,
                                "confirm_failed",
                                format!("could not confirm the subscription: {e}"),
                            )
                        })?;
                    tracing::info!(source = name, topic = %envelope.topic_arn, "SNS subscription confirmed");
                    return Ok((
                        StatusCode::OK,
                        Json(json!({ "status": "subscription_confirmed" })),
                    )
                        .into_response());
                }
                SnsMessageType::UnsubscribeConfirmation => {
                    tracing::info!(source = name, topic = %envelope.topic_arn, "SNS unsubscribe confirmation received");
                    return Ok((
                        StatusCode::OK,
                        Json(json!({ "status": "unsubscribe_noted" })),
                    )
                        .into_response());
                }
            }
        }
    };

    let alerts = source.kind.normalize(&payload).map_err(|e| {
        ApiError::bad_request("bad_payload", format!("not a valid `{name}` payload: {e}"))
    })?;
    let count = alerts.len() as u64;
    let accepted = app.store.ingest(alerts, Utc::now()).await.map_err(|e| {
        tracing::error!(error = %e, source = name, "could not store alerts");
        ApiError::unavailable()
    })?;
    if accepted.iter().any(|a| !a.duplicate) {
        app.engine.alerts_added(&accepted).await;
        app.engine.alerts_stored();
    }
    app.metrics
        .alerts_accepted
        .get_or_create(&crate::telemetry::SourceLabels {
            source: name.to_owned(),
        })
        .inc_by(count);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": accepted.len(), "alerts": accepted })),
    )
        .into_response())
}

/// Reads the body, refusing more than `limit` bytes (early, from Content-Length, when it is sent).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is larger than this source's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::bad_request(
            "unreadable_body",
            format!("could not read the request body: {e}"),
        )
    })
}
