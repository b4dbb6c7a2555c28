//! The API: incidents, alerts, runs and the audit log to read; decisions, triggers, cancels and
//! undo to act; people and personal tokens to manage (`api/people.rs`). Every route takes a
//! bearer credential and checks the caller's role (docs/security.md has the table); who acts is
//! the person behind the credential, never a body field. The CLI uses it when a server holds the
//! store.

pub mod people;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use chrono::Utc;

use crate::alert::IncidentStatus;
use crate::app::AppState;
use crate::http::ApiError;
use crate::intake::verify;
use crate::model::audit::NewEntry;
use crate::model::event::EventKind;
use crate::model::people::{Actor, Role};
use crate::store::{AlertQuery, IncidentQuery};
use crate::trust::{Caller, TrustError};

/// The most a list answers at once.
const MAX_LIMIT: usize = 1000;

/// A list's size: 50 unless asked, at most [`MAX_LIMIT`].
fn page(limit: Option<usize>) -> usize {
    limit.unwrap_or(50).clamp(1, MAX_LIMIT)
}

/// The caller of an API request, as its bearer credential proves (a personal token, an OIDC token
/// from the configured issuer, or the bootstrap admin token): checked before anything else of the
/// request is read. Who acts is never read from the body.
pub struct Authed(pub Caller);

impl axum::extract::FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<AppState>,
    ) -> Result<Authed, ApiError> {
        authenticate(app, &parts.headers).await.map(Authed)
    }
}

/// The caller behind the request's `Authorization: Bearer` credential.
pub async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let bearer = verify::bearer_token(headers).map_err(|e| {
        ApiError::unauthorized(
            "unauthorized",
            format!("{e}: send `Authorization: Bearer <token>` with a personal token (`cordon tokens create`), an OIDC token, or the bootstrap admin token"),
        )
    })?;
    match app.engine.people().authenticate(bearer, Utc::now()).await {
        Ok(caller) => Ok(caller),
        Err(TrustError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::unauthorized("unauthorized", e.to_string())),
    }
}

impl Authed {
    /// The person calling, when their credential carries `role` for `what`; otherwise a 403 that
    /// names the missing role, and an audit entry.
    pub async fn require(
        &self,
        app: &AppState,
        role: Role,
        what: &str,
    ) -> Result<&Actor, ApiError> {
        match &self.0 {
            Caller::Person(actor) if actor.roles.has(role) => Ok(actor),
            caller => {
                let message = match caller {
                    Caller::Bootstrap => format!(
                        "{what} needs the role `{role}`; the bootstrap admin token only manages people and tokens (create a personal token: `cordon tokens create`)"
                    ),
                    Caller::Person(actor) => format!(
                        "{what} needs the role `{role}`, which {} lacks with this credential",
                        actor.person
                    ),
                };
                refuse(app, caller, role, what, "api").await;
                Err(ApiError::missing_role(role.as_str(), message))
            }
        }
    }

    /// As [`Authed::require`], for what the bootstrap token may also do: people and tokens.
    pub async fn require_admin(&self, app: &AppState, what: &str) -> Result<String, ApiError> {
        match &self.0 {
            Caller::Bootstrap => Ok(self.0.label()),
            _ => self.require(app, Role::Admin, what).await.map(Actor::label),
        }
    }
}

/// Audits a refusal for want of a role.
pub async fn refuse(app: &AppState, caller: &Caller, role: Role, what: &str, via: &str) {
    let (actor, person) = caller.audit_actor();
    let entry = NewEntry::new(EventKind::AccessRefused)
        .actor(actor)
        .detail(json!({ "role": role, "what": what, "via": via, "person": person }));
    if let Err(e) = app.store.append_audit(vec![entry]).await {
        tracing::warn!(error = %e, "cannot audit a refused request");
    }
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
    caller: Authed,
    Query(params): Query<AlertParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&app, Role::Viewer, "reading alerts").await?;
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
    caller: Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&app, Role::Viewer, "reading alerts").await?;
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
    caller: Authed,
    Query(params): Query<IncidentParams>,
) -> Result<Json<Value>, ApiError> {
    caller
        .require(&app, Role::Viewer, "reading incidents")
        .await?;
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
    caller: Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller
        .require(&app, Role::Viewer, "reading incidents")
        .await?;
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
    caller: Authed,
    Query(params): Query<RunParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&app, Role::Viewer, "reading runs").await?;
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
    caller: Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&app, Role::Viewer, "reading runs").await?;
    let run = app.store.run(&id).await?;
    let run = run.ok_or_else(|| ApiError::not_found("not_found", format!("no run `{id}`")))?;
    let audit = app.store.audit_entries(Some(&id), 0).await?;
    Ok(Json(json!({ "run": run, "audit": audit })))
}

/// A decision. Who decides is the person behind the credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    decision: String,
    /// Optional, and only ever the caller's own identity (see [`acting_as`]).
    #[serde(default)]
    identity: Option<String>,
}

/// Refuses a body that names someone other than the caller: clients written for the old API sent
/// an `identity` the admin token vouched for; now the credential says who acts, and a body naming
/// another person is an attempt to act as them.
async fn acting_as(app: &AppState, actor: &Actor, named: Option<&str>) -> Result<(), ApiError> {
    let Some(named) = named else { return Ok(()) };
    if named == actor.identity {
        return Ok(());
    }
    let person = app.engine.people().person_of(named).await?;
    if person.is_some_and(|p| p.id == actor.person) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "impersonation",
        format!(
            "this credential is {}'s; it cannot act as `{named}` (leave `identity` out: the credential says who acts)",
            actor.person
        ),
    ))
}

/// Whether `value` of `field` is the first of its two words (`true`) or the second; a 400 names
/// both otherwise.
fn either(field: &str, value: &str, (yes, no): (&str, &str)) -> Result<bool, ApiError> {
    match value {
        v if v == yes => Ok(true),
        v if v == no => Ok(false),
        other => Err(ApiError::bad_request(
            "bad_request",
            format!("{field} must be `{yes}` or `{no}`, not `{other}`"),
        )),
    }
}

/// `POST /v1/runs/{id}/approvals/{step}` with `{"decision": "approve"|"deny"}` (approver, in the
/// step's group).
pub async fn decide_approval(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = caller
        .require(&app, Role::Approver, "deciding approvals")
        .await?;
    let body: DecisionBody = parse(&body, "expected {\"decision\": \"approve\"|\"deny\"}")?;
    acting_as(&app, actor, body.identity.as_deref()).await?;
    let approve = either("decision", &body.decision, ("approve", "deny"))?;
    let decided = app
        .engine
        .decide(&id, &step, actor, approve, "api")
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

/// The body of a request that needs nothing but who acts: empty, `{}`, or naming the caller.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorBody {
    #[serde(default)]
    identity: Option<String>,
}

/// An [`ActorBody`], where an empty body is `{}`.
fn actor_body(body: &[u8]) -> Result<ActorBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActorBody::default());
    }
    parse(body, "expected {} (the credential says who acts)")
}

/// `POST /v1/runs/{id}/cancel` (responder).
pub async fn cancel_run(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = caller
        .require(&app, Role::Responder, "cancelling runs")
        .await?;
    acting_as(&app, actor, actor_body(&body)?.identity.as_deref()).await?;
    let run = app.engine.cancel(&id, actor).await.map_err(engine_error)?;
    Ok(Json(json!({ "run": run })))
}

/// `POST /v1/incidents/{id}/resolve` and `/reopen` (responder).
pub async fn incident_status(
    State(app): State<Arc<AppState>>,
    caller: Authed,
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
    let actor = caller
        .require(&app, Role::Responder, "resolving and reopening incidents")
        .await?;
    acting_as(&app, actor, actor_body(&body)?.identity.as_deref()).await?;
    let incident = app
        .engine
        .set_incident_status(&id, status, &actor.identity, Some(&actor.person), "api")
        .await
        .map_err(engine_error)?;
    Ok(Json(json!({ "incident": incident })))
}

/// `POST /v1/runs/{id}/steps/{step}/undo` (responder): asks to reverse a finished step with its
/// action's undo. The undo is an approval of its own: 202 with the undo run, which waits for the
/// undo group (the asker may not approve it) and then runs the undo action through the guardrails.
pub async fn undo_step(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = caller
        .require(&app, Role::Responder, "undoing steps")
        .await?;
    acting_as(&app, actor, actor_body(&body)?.identity.as_deref()).await?;
    let (undo_run, created, group) = app
        .engine
        .undo(&id, &step, actor)
        .await
        .map_err(engine_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "run": id, "step": step, "undo_run": undo_run, "created": created, "approvers": group }),
        ),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `retry` or `skip`.
    action: String,
    #[serde(default)]
    identity: Option<String>,
}

/// `POST /v1/runs/{id}/steps/{step}/resolve` with `{"action": "retry"|"skip"}` (responder): a
/// person's choice for a step held as `needs_decision`.
pub async fn resolve_step(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = caller
        .require(&app, Role::Responder, "settling held steps")
        .await?;
    let body: ResolveBody = parse(&body, "expected {\"action\": \"retry\"|\"skip\"}")?;
    acting_as(&app, actor, body.identity.as_deref()).await?;
    let retry = either("action", &body.action, ("retry", "skip"))?;
    app.engine
        .resolve(&id, &step, retry, actor)
        .await
        .map_err(engine_error)?;
    Ok(Json(
        json!({ "run": id, "step": step, "action": body.action }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    inputs: Value,
    #[serde(default)]
    incident: Option<String>,
    /// Record what side-effect steps would do, without doing it.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/playbooks/{id}/runs` with `{"inputs": {...}, "incident": "...", "dry_run": false}`
/// (responder): starts a playbook by hand. 202 with the run id (or the active run holding its key).
pub async fn trigger_playbook(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = caller
        .require(&app, Role::Responder, "starting playbooks")
        .await?;
    let body: TriggerBody = parse(&body, "expected {\"inputs\": {...}}")?;
    acting_as(&app, actor, body.identity.as_deref()).await?;
    let (run, created) = app
        .engine
        .trigger(&id, body.inputs, actor, body.incident, body.dry_run)
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
    caller: Authed,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller
        .require(&app, Role::Viewer, "verifying the audit log")
        .await?;
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
    caller: Authed,
) -> Result<Json<Value>, ApiError> {
    caller
        .require(&app, Role::Admin, "signing audit checkpoints")
        .await?;
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

/// `GET /v1/incidents/{id}/report?format=markdown|html` (viewer).
pub async fn report(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<axum::response::Response, ApiError> {
    caller
        .require(&app, Role::Viewer, "reading incident reports")
        .await?;
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

/// A search's failure as an answer: a query that does not parse is a 400 naming the column
/// (`{"error": "bad_query", "message", "column"}`), a wrong parameter a 400 naming it.
fn search_error(e: crate::search::SearchError) -> axum::response::Response {
    use crate::search::SearchError;
    use axum::response::IntoResponse;
    match e {
        SearchError::Query { column, message } => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "bad_query",
                "message": format!("column {column}: {message}"),
                "column": column,
            })),
        )
            .into_response(),
        SearchError::Param { name, message } => {
            ApiError::bad_request("bad_request", format!("{name}: {message}")).into_response()
        }
        SearchError::Store(e) => ApiError::from(e).into_response(),
    }
}

/// The query string's parameters, each named at most once and only from `allowed`.
fn query_params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let mut params = std::collections::BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(ApiError::bad_request(
                "bad_request",
                format!(
                    "unknown parameter `{name}` (expected one of: {})",
                    allowed.join(", ")
                ),
            ));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("parameter `{name}` given twice"),
            ));
        }
    }
    Ok(params)
}

/// `GET /v1/search?q=&since=&until=&limit=&cursor=`: alerts and incidents matching the query,
/// newest first, a page at a time (docs/search.md).
pub async fn search(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, axum::response::Response> {
    use axum::response::IntoResponse;
    caller
        .require(&app, Role::Viewer, "searching")
        .await
        .map_err(IntoResponse::into_response)?;
    let mut p = query_params(raw.as_deref(), &["q", "since", "until", "limit", "cursor"])
        .map_err(IntoResponse::into_response)?;
    let limit = match p.remove("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request("bad_request", format!("limit: `{l}` is not a number"))
                .into_response()
        })?),
        None => None,
    };
    let search = crate::search::Search {
        q: p.remove("q").unwrap_or_default(),
        since: p.remove("since"),
        until: p.remove("until"),
        limit,
        cursor: p.remove("cursor"),
    };
    let page = crate::search::run(app.store.as_ref(), &search, Utc::now())
        .await
        .map_err(search_error)?;
    Ok(Json(json!(page)))
}

/// `GET /v1/hunt/{entity}?window=7d`: everything about one entity over the window.
pub async fn hunt(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(entity): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, axum::response::Response> {
    use axum::response::IntoResponse;
    caller
        .require(&app, Role::Viewer, "hunting")
        .await
        .map_err(IntoResponse::into_response)?;
    let p = query_params(raw.as_deref(), &["window"]).map_err(IntoResponse::into_response)?;
    let found = crate::search::hunt::hunt(
        app.store.as_ref(),
        &entity,
        p.get("window").map(String::as_str),
        Utc::now(),
    )
    .await
    .map_err(search_error)?;
    Ok(Json(json!(found)))
}
