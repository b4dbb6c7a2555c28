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

/// A list's size: 50 unless asked, at most [`MAX_LIMIT`].
fn page(limit: Option<usize>) -> usize {
    limit.unwrap_or(50).clamp(1, MAX_LIMIT)
}

/// A request that carried the admin token: a handler taking `Admin` runs only for its holder, and
/// the check runs before anything else of the request is read.
pub struct Admin;

impl axum::extract::FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<AppState>,
    ) -> Result<Admin, ApiError> {
        authorize(app, &parts.headers).map(|()| Admin)
    }
}

/// A store failure, as every admin route answers it: logged, and a 503 that names no detail.
/// Checks the admin token.
pub fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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
    _admin: Admin,
    Query(params): Query<AlertParams>,
) -> Result<Json<Value>, ApiError> {
    let query = AlertQuery {
        source: params.source,
        incident_id: params.incident,
        limit: page(params.limit),
    };
    let alerts = app.store.alerts(&query).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /v1/alerts/{id}`.
pub async fn show_alert(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let alert = app.store.alert(&id).await?;
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
    _admin: Admin,
    Query(params): Query<IncidentParams>,
) -> Result<Json<Value>, ApiError> {
    let query = IncidentQuery {
        status: params.status,
        limit: page(params.limit),
    };
    let incidents = app.store.incidents(&query).await?;
    Ok(Json(json!({ "incidents": incidents })))
}

/// `GET /v1/incidents/{id}`: the incident and its alerts.
pub async fn show_incident(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let incident = app.store.incident(&id).await?;
    let incident =
        incident.ok_or_else(|| ApiError::not_found("not_found", format!("no incident `{id}`")))?;
    let alerts = app
        .store
        .alerts(&AlertQuery {
            incident_id: Some(id),
            limit: MAX_LIMIT,
            ..AlertQuery::default()
        })
        .await?;
    Ok(Json(json!({ "incident": incident, "alerts": alerts })))
}

/// Parses a JSON request body; a 400 says what was expected (`shape`) and what is wrong.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_request", format!("{shape}: {e}")))
}

fn engine_error(e: crate::engine::EngineError) -> ApiError {
    use crate::engine::EngineError;
    match &e {
        EngineError::NoRun(_) | EngineError::NoPlaybook(_) | EngineError::NoIncident(_) => {
            ApiError::not_found("not_found", e.to_string())
        }
        EngineError::Decision(d) => {
            let status = match d.code() {
                "not_found" => StatusCode::NOT_FOUND,
                "forbidden" => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(status, d.code(), e.to_string())
        }
        EngineError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        EngineError::Store(_) => {
            tracing::error!(error = %e, "engine request failed");
            ApiError::unavailable()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    status: Option<crate::engine::run::RunStatus>,
    playbook: Option<String>,
    incident: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/runs?status=&playbook=&incident=&limit=`: newest first.
pub async fn list_runs(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Query(params): Query<RunParams>,
) -> Result<Json<Value>, ApiError> {
    let query = crate::store::RunQuery {
        status: params.status,
        playbook: params.playbook,
        incident_id: params.incident,
        limit: page(params.limit),
    };
    let runs = app.store.runs(&query).await?;
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /v1/runs/{id}`: the run and its audit trail.
pub async fn show_run(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = app.store.run(&id).await?;
    let run = run.ok_or_else(|| ApiError::not_found("not_found", format!("no run `{id}`")))?;
    let audit = app.store.audit_entries(Some(&id), 0).await?;
    Ok(Json(json!({ "run": run, "audit": audit })))
}

/// Who a request acts for: the `identity` field of its body (the admin token vouches for it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    decision: String,
    /// `cli:alice`, `slack:U123`, ...
    identity: String,
}

/// `POST /v1/runs/{id}/approvals/{step}` with `{"decision": "approve"|"deny", "identity": "..."}`.
pub async fn decide_approval(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: DecisionBody = parse(
        &body,
        "expected {\"decision\": \"approve\"|\"deny\", \"identity\": \"...\"}",
    )?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("decision must be `approve` or `deny`, not `{other}`"),
            ));
        }
    };
    if body.identity.trim().is_empty() || !body.identity.contains(':') {
        return Err(ApiError::bad_request(
            "bad_request",
            "identity must be `<platform>:<id>`, e.g. `cli:alice`",
        ));
    }
    let decided = app
        .engine
        .decide(&id, &step, &body.identity, approve, "api")
        .await
        .map_err(engine_error)?;
    Ok(Json(json!({
        "run": id,
        "step": step,
        "outcome": decided.outcome.map(|o| if o { "approved" } else { "denied" }),
        "approvals": decided.approvals,
        "quorum": decided.quorum,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorBody {
    identity: String,
}

/// `POST /v1/runs/{id}/cancel` with `{"identity": "..."}`.
pub async fn cancel_run(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ActorBody = parse(&body, "expected {\"identity\": \"...\"}")?;
    let run = app
        .engine
        .cancel(&id, &body.identity)
        .await
        .map_err(engine_error)?;
    Ok(Json(json!({ "run": run })))
}

/// `POST /v1/incidents/{id}/resolve` and `/reopen` with `{"identity": "..."}`.
pub async fn incident_status(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path((id, change)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let status = match change.as_str() {
        "resolve" => crate::alert::IncidentStatus::Resolved,
        "reopen" => crate::alert::IncidentStatus::Open,
        other => {
            return Err(ApiError::not_found(
                "not_found",
                format!("an incident can be `resolve`d or `reopen`ed, not `{other}`"),
            ));
        }
    };
    set_status(&app, &id, &body, status).await
}

async fn set_status(
    app: &AppState,
    id: &str,
    body: &[u8],
    status: crate::alert::IncidentStatus,
) -> Result<Json<Value>, ApiError> {
    let body: ActorBody = parse(body, "expected {\"identity\": \"...\"}")?;
    let incident = app
        .engine
        .set_incident_status(id, status, &body.identity, "api")
        .await
        .map_err(engine_error)?;
    Ok(Json(json!({ "incident": incident })))
}

/// `POST /v1/runs/{id}/steps/{step}/undo` with `{"identity": "..."}`: reverses a finished step with
/// its action's undo.
pub async fn undo_step(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ActorBody = parse(&body, "expected {\"identity\": \"...\"}")?;
    let (action, output) = app
        .engine
        .undo(&id, &step, &body.identity)
        .await
        .map_err(engine_error)?;
    Ok(Json(
        json!({ "run": id, "step": step, "action": action, "output": output }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `retry` or `skip`.
    action: String,
    identity: String,
}

/// `POST /v1/runs/{id}/steps/{step}/resolve` with `{"action": "retry"|"skip", "identity": "..."}`:
/// a person's choice for a step held as `needs_decision`.
pub async fn resolve_step(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ResolveBody = parse(
        &body,
        "expected {\"action\": \"retry\"|\"skip\", \"identity\": \"...\"}",
    )?;
    let retry = match body.action.as_str() {
        "retry" => true,
        "skip" => false,
        other => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("action must be `retry` or `skip`, not `{other}`"),
            ));
        }
    };
    app.engine
        .resolve(&id, &step, retry, &body.identity)
        .await
        .map_err(engine_error)?;
    Ok(Json(
        json!({ "run": id, "step": step, "action": body.action }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    identity: String,
    #[serde(default)]
    inputs: Value,
    #[serde(default)]
    incident: Option<String>,
    /// Record what side-effect steps would do, without doing it.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/playbooks/{id}/runs` with `{"identity": "...", "inputs": {...}, "incident": "...",
/// "dry_run": false}`:
/// starts a playbook by hand. 202 with the run id (or the active run holding its key).
pub async fn trigger_playbook(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: TriggerBody = parse(&body, "expected {\"identity\": \"...\", \"inputs\": {...}}")?;
    let (run, created) = app
        .engine
        .trigger(
            &id,
            body.inputs,
            &body.identity,
            body.incident,
            body.dry_run,
        )
        .await
        .map_err(engine_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run, "created": created })),
    ))
}

/// `GET /v1/audit/verify[?seq=N]`: checks the audit chain; with `seq`, also names the entry
/// stored there (`at_seq`: its `seq` and `hash`, `null` when there is none), which
/// `cordon audit verify --checkpoint` compares with a signed checkpoint.
pub async fn verify_audit(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let seq =
        match query.as_deref().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "seq")
                .map(|(_, v)| v.into_owned())
        }) {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request("bad_request", "`seq` must be a whole number")
            })?),
        };
    let report = app.store.audit_verify().await?;
    let mut summary = report.summary();
    if let Some(seq) = seq {
        let entry = app.store.audit_entry(seq).await?;
        summary["at_seq"] = entry.map_or(Value::Null, |e| json!({ "seq": e.seq, "hash": e.hash }));
    }
    Ok(Json(summary))
}

/// `POST /v1/audit/checkpoints`: signs the audit chain's head with `audit.signing_key`, queues it
/// for the configured sinks, and answers it (`checkpoint`) with the sinks (`queued`).
pub async fn audit_checkpoint(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    use crate::audit::sink::{AnchorError, checkpoint_now};
    match checkpoint_now(&app.config.audit, &*app.store, Some(&app.outbox)).await {
        Ok((checkpoint, queued)) => Ok(Json(json!({ "checkpoint": checkpoint, "queued": queued }))),
        Err(AnchorError::Store(e)) => Err(e.into()),
        Err(e @ (AnchorError::NoKey | AnchorError::Key(_))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_signing_key",
            e.to_string(),
        )),
        Err(e @ AnchorError::Broken(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "audit_chain_broken",
            e.to_string(),
        )),
    }
}

/// `GET /v1/incidents/{id}/report?format=markdown|html` (admin token).
pub async fn report(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let format = query
        .as_deref()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "format")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "markdown".to_owned());
    let format = crate::tickets::report::Format::parse(&format).ok_or_else(|| {
        ApiError::bad_request(
            "bad_request",
            format!("format must be `markdown` or `html`, not `{format}`"),
        )
    })?;
    let report = crate::tickets::report::Report::gather(&*app.store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", format!("no incident `{id}`")))?;
    let content_type = match format {
        crate::tickets::report::Format::Markdown => "text/markdown; charset=utf-8",
        crate::tickets::report::Format::Html => "text/html; charset=utf-8",
    };
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        crate::tickets::report::render(&report, format),
    )
        .into_response())
}
