//! `POST /v1/tickets/servicenow/webhook`: the business rule's call (payload in
//! integrations/servicenow/README.md; the rules every ticket webhook follows:
//! [`crate::tickets::webhook`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::alert::IncidentStatus;
use crate::http::ApiError;
use crate::tickets::webhook::{
    Inbound, authenticate, command, ignored, not_configured, profile_of, read_call,
    record_assignee, set_status,
};

/// `POST /v1/tickets/servicenow/webhook`: the business rule's call (payload in
/// integrations/servicenow/README.md).
pub(super) async fn webhook(
    State(app): State<Arc<Inbound>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.servicenow.as_ref();
    let Some((sn, auth)) = config.and_then(|s| s.webhook.as_ref().map(|w| (s, w))) else {
        return Err(not_configured("servicenow"));
    };
    authenticate(
        auth,
        &headers,
        query.as_deref(),
        &body,
        "x-cordon-signature",
    )?;
    let payload = read_call(&body)?;
    let text = |k: &str| payload[k].as_str().map(str::trim).filter(|s| !s.is_empty());
    let Some(correlation) = text("correlation_id") else {
        return Err(ApiError::bad_request(
            "bad_payload",
            "the body has no `correlation_id` (the Cordon incident id)",
        ));
    };
    let number = text("number").or(text("sys_id")).unwrap_or("?").to_owned();
    if app.store.incident(correlation).await?.is_none() {
        return Ok(ignored(format!("{number} is not a Cordon incident")));
    }
    let incident = correlation.to_owned();
    let user = text("updated_by").unwrap_or("unknown");
    let actor = sn
        .users
        .get(user)
        .cloned()
        .unwrap_or(format!("servicenow:{user}"));
    let profile = profile_of(&app, &incident).await?;
    let resolved_state = profile
        .as_ref()
        .and_then(|p| p.servicenow.as_ref())
        .map(|s| s.resolved_state.clone())
        .unwrap_or_else(|| "6".to_owned());
    let resolved_like = |s: &str| s == resolved_state || s == "6" || s == "7";
    let mut applied = Vec::new();
    if let Some(state) = text("state") {
        let previous = text("previous_state");
        if resolved_like(state) {
            applied.extend(
                set_status(
                    &app,
                    &incident,
                    IncidentStatus::Resolved,
                    &actor,
                    "servicenow",
                )
                .await?,
            );
        } else if previous.is_some_and(|p| p != state) {
            applied.extend(
                set_status(&app, &incident, IncidentStatus::Open, &actor, "servicenow").await?,
            );
        }
    }
    if let Some(to) = text("assigned_to")
        && text("previous_assigned_to") != Some(to)
    {
        record_assignee(
            &app,
            &incident,
            "servicenow",
            &number,
            &actor,
            text("previous_assigned_to"),
            to,
            None,
        )
        .await?;
        applied.push(format!("assignee recorded: {to}"));
    }
    let note = text("work_notes").or(text("comments"));
    if let Some(note) = note {
        let seen = format!(
            "servicenow:{}:{}",
            text("sys_id").unwrap_or(&number),
            text("sys_mod_count").unwrap_or("0")
        );
        if let Some(outcome) =
            command(&app, &super::ServiceNow, &incident, note, &actor, &seen).await?
        {
            applied.push(outcome);
        }
    }
    Ok(Json(json!({ "incident": incident, "applied": applied })))
}
