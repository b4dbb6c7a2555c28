//! The admin API: read alerts and incidents (`/v1/alerts`, `/v1/incidents`), behind the bearer
//! token in `server.admin_token`. The CLI uses it when a server holds the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alert::IncidentStatus;
use crate::app::AppState;
use crate::http::ApiError;
use crate::intake::verify;
use crate::store::{AlertQuery, IncidentQuery};

/// The most a list answers at once.
const MAX_LIMIT: usize = 1000;

fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = app.config.server.admin_token.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_api_off",
            "the admin API is off: set server.admin_token",
        )
    })?;
    verify::bearer(headers, token)
        .map_err(|e| ApiError::unauthorized("unauthorized", e.to_string()))
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "admin API read failed");
    ApiError::unavailable()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    source: Option<String>,
    incident: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/alerts?source=&incident=&limit=`: newest first.
pub async fn list_alerts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<AlertParams>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let query = AlertQuery {
        source: params.source,
        incident_id: params.incident,
        limit: params.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
    };
    let alerts = app.store.alerts(&query).await.map_err(store_error)?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /v1/alerts/{id}`.
pub async fn show_alert(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let alert = app.store.alert(&id).await.map_err(store_error)?;
    let alert =
        alert.ok_or_else(|| ApiError::not_found("not_found", format!("no alert `{id}`")))?;
    Ok(Json(json!({ "alert": alert })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentParams {
    status: Option<IncidentStatus>,
    limit: Option<usize>,
}

/// `GET /v1/incidents?status=&limit=`: newest first.
pub async fn list_incidents(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<IncidentParams>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let query = IncidentQuery {
        status: params.status,
        limit: params.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
    };
    let incidents = app.store.incidents(&query).await.map_err(store_error)?;
    Ok(Json(json!({ "incidents": incidents })))
}

/// `GET /v1/incidents/{id}`: the incident and its alerts.
pub async fn show_incident(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let incident = app.store.incident(&id).await.map_err(store_error)?;
    let incident =
        incident.ok_or_else(|| ApiError::not_found("not_found", format!("no incident `{id}`")))?;
    let alerts = app
        .store
        .alerts(&AlertQuery {
            incident_id: Some(id),
            limit: MAX_LIMIT,
            ..AlertQuery::default()
        })
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "incident": incident, "alerts": alerts })))
}
